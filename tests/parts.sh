# Sourced by tests that run once on the local store and once more inside
# tests/s3/harness.py (a fresh s3rver), each part saving its counters as
# "name=N ..." in $work/counts.<part> (check.sh, crash.sh, load.sh).

# s3_part <script> <args...>: runs "bash <script> --part s3 <args...>" in
# the harness; a part that did not save its counts is one failure. Without
# s3rver it says SKIP on stderr and sets $s3note for the summary line, or,
# under SNAPSTREAM_TEST_STRICT (tests/strict.sh), counts one failure.
. "$(dirname "$(realpath "${BASH_SOURCE[0]}")")/strict.sh"
s3_part() {
	local here hrc script="$1"
	shift
	here="$(dirname "$(realpath "${BASH_SOURCE[0]}")")"
	s3note=""
	if command -v node >/dev/null && [ -f "$here/s3/node_modules/s3rver/bin/s3rver.js" ]; then
		/usr/bin/python3 "$here/s3/harness.py" -- bash "$script" --part s3 "$@"
		hrc=$?
		if [ ! -f "$work/counts.s3" ]; then
			echo "FAIL[s3]: the s3 part did not finish (harness exit $hrc)" >&2
			echo "fails=1" >"$work/counts.s3"
		fi
	elif strict; then
		echo "FAIL[s3]: s3rver is not installed (tests/s3/node_modules): the s3 part cannot run (SNAPSTREAM_TEST_STRICT)" >&2
		echo "fails=1" >"$work/counts.s3"
	else
		s3note=" (s3 part SKIPPED: s3rver is not installed; run scripts/setup.sh, which runs npm ci in tests/s3)"
		echo "SKIP[s3]: s3rver is not installed (tests/s3/node_modules); only the local store was tested" >&2
	fi
}

# total <name>: the sum of name=N over every part's counts.
total() { cat "$work"/counts.* | tr ' ' '\n' | sed -n "s/^$1=//p" | awk '{s += $1} END {print s + 0}'; }
