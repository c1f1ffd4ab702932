#!/usr/bin/env bash
# Install, build and run the whole test suite, twice:
#   1. every test in a build with AddressSanitizer and UndefinedBehavior-
#      Sanitizer (build-asan);
#   2. the tests whose processes run threads (meson suite 'tsan', see
#      tests/meson.build) in a build with ThreadSanitizer (build-tsan),
#      which must report nothing.
# scripts/setup.sh installs everything the tests need (s3rver, runsc,
# clang...) and the README runs this as root, so here every part of every
# test must run: SNAPSTREAM_TEST_STRICT=1 turns each test's skip into a
# failure (tests/strict.sh), and a test that skips anyway fails the run.
# Prints "N passed, N failed, N skipped" last; exits non-zero unless all
# passed and none skipped.
#
# Usage: scripts/test.sh [meson test options and test names...]
#   Options and names select the tests of both runs (the TSan run takes
#   those of the selection that are in its suite); with none, all run.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
export SNAPSTREAM_TEST_STRICT=1

# The concurrent tests the TSan run must hold: the issue names them, so
# dropping one from the 'tsan' suite fails the run instead of shrinking it.
TSAN_REQUIRED=(engine admin keyed claims gc-stress load follow loop pull api cache)

scripts/setup.sh build-asan -Dbuildtype=debugoptimized -Db_sanitize=address,undefined \
	-Db_lundef=false
scripts/setup.sh build-tsan -Dbuildtype=debugoptimized -Db_sanitize=thread \
	-Db_lundef=false

# summarize <label> <testlog.json>: sets $summary to one line of counts
# and the names of the tests that did not pass; adds to the totals.
passed=0 failed=0 skipped=0 summary=""
summarize() {
	local p f s rest
	read -r p f s rest < <(/usr/bin/python3 - "$2" <<'PY'
import json, sys
ok, bad, skip = 0, [], []
for line in open(sys.argv[1]):
    r = json.loads(line)
    name = r["name"].split(" / ")[-1]
    if r["result"] in ("OK", "EXPECTEDFAIL"):
        ok += 1
    elif r["result"] == "SKIP":
        skip.append(name)
    else:
        bad.append(f"{name} ({r['result']})")
print(ok, len(bad), len(skip),
      (f"; failed: {', '.join(bad)}" if bad else "") +
      (f"; skipped: {', '.join(skip)}" if skip else ""))
PY
)
	summary="$1: $p passed, $f failed, $s skipped${rest:+$rest}"
	passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
}

# ---- 1. ASan and UBSan: every test.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
rc=0
t0=$SECONDS
meson test -C build-asan --print-errorlogs --num-processes 2 "$@" || rc=$?
summarize "ASan/UBSan" build-asan/meson-logs/testlog.json
asan_line=$summary
asan_secs=$((SECONDS - t0))

# ---- 2. ThreadSanitizer: the 'tsan' suite (of the selection, if any).
t0=$SECONDS
names() { meson test -C build-tsan --list "$@" 2>/dev/null | sed -n 's|^[^ ]*:[^ ]* / ||p' | sort; }
in_suite=$(names --suite tsan)
for t in "${TSAN_REQUIRED[@]}"; do
	grep -qx -- "$t" <<<"$in_suite" || {
		echo "test: '$t' is not in the meson suite 'tsan' (tests/meson.build)" >&2
		rc=1
	}
done
if (($#)); then
	sel=$(comm -12 <(names "$@") <(echo "$in_suite"))
else
	sel=$in_suite
fi

# TSan wants a narrower address-space layout than some kernels' ASLR
# gives (vm.mmap_rnd_bits above 28 on x86-64); it then dies at start with
# "unexpected memory mapping". Running without address randomization
# (setarch -R, inherited by every process a test starts) avoids that.
wrapper=()
# shellcheck disable=SC2069 # stderr is what is looked at; stdout goes.
probe() { "$@" build-tsan/cli/snapstream --version 2>&1 >/dev/null || true; }
if [[ "$(probe)" == *"unexpected memory mapping"* ]]; then
	wrapper=(setarch "$(uname -m)" -R)
	if [[ "$(probe "${wrapper[@]}")" == *"unexpected memory mapping"* ]]; then
		echo "test: ThreadSanitizer cannot start on this kernel, not even under setarch -R;" \
			"try: sysctl vm.mmap_rnd_bits=28" >&2
		exit 1
	fi
	echo "test: running the TSan build under '${wrapper[*]}' (the kernel's ASLR is too wide for TSan)" >&2
fi

# Every TSan report goes to its own file under build-tsan/tsan-reports, so
# no test can lose one: a test that ignores an exit status (a killed
# process's, say) still leaves the file, and any file fails the run.
reports="$PWD/build-tsan/tsan-reports"
rm -rf "$reports"
mkdir -p "$reports"
tsan_opts="halt_on_error=0:exitcode=66:second_deadlock_stack=1:log_path=$reports/tsan"
# Suppressions, each justified in the file, for what TSan cannot see
# (kept out when there are none).
[ ! -s tests/tsan.supp ] || tsan_opts="$tsan_opts:suppressions=$PWD/tests/tsan.supp"
tsan_line="TSan: nothing selected"
if [ -n "$sel" ]; then
	# LOAD_DIVISOR: tests/load.sh with quarter-size images; TSan runs
	# the engine about ten times slower, and it is the threads, not the
	# bytes, it checks.
	mapfile -t tests <<<"$sel"
	wrap=()
	[ ${#wrapper[@]} -eq 0 ] || wrap=(--wrapper "${wrapper[*]}")
	TSAN_OPTIONS="$tsan_opts:${TSAN_OPTIONS:-}" LOAD_DIVISOR=4 \
		meson test -C build-tsan --print-errorlogs --num-processes 2 \
		--timeout-multiplier 2 "${wrap[@]}" "${tests[@]}" || rc=$?
	summarize "TSan" build-tsan/meson-logs/testlog.json
	tsan_line=$summary
	n=$(find "$reports" -type f | wc -l)
	if [ "$n" -gt 0 ]; then
		for f in "$reports"/*; do
			echo "==== $f" >&2
			head -n 60 "$f" >&2
		done
		tsan_line="$tsan_line; $n ThreadSanitizer report file(s) in $reports"
		failed=$((failed + 1))
		rc=1
	fi
fi
tsan_secs=$((SECONDS - t0))

echo "$asan_line (${asan_secs} s)"
echo "$tsan_line (${tsan_secs} s)"
echo "wall time $((SECONDS - start)) s, builds included"
# A skip here is a part that did not run: the run fails.
if ((skipped || failed)) && [ "$rc" -eq 0 ]; then rc=1; fi
echo "$passed passed, $failed failed, $skipped skipped"
exit $rc
