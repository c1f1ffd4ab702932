#!/usr/bin/env bash
# push --while -- <command>: the directory is pushed while the command
# writes it, as a checkpointer (criu dump -D, runsc checkpoint, a
# Firecracker snapshot) would.
# Usage: follow.sh <snapstream>
#
# Proves:
#  - a writer that creates 48 files (in subdirectories, some growing in
#    pieces, some with zero pages) over about 1.5 s, and 300 small ones in
#    bursts of 30 (so rescans grow the push's file table past several of
#    its capacities), while a 40 MiB memory image grows beside them (so
#    that segments are chunked while new files keep appearing) gives a
#    snapshot that pulls back byte-exact, modes included;
#  - a command that exits 3 fails the push (exit 1) naming status 3, and
#    leaves no snapshot; one killed by a signal names the signal;
#  - SIGTERM sent to snapstream reaches the command, which is reaped: no
#    snapshot, exit 1, no process left;
#  - a push that cannot succeed (the snapshot exists) fails before the
#    command runs; a command that cannot run is exit 1 naming it;
#  - --while without a command, or with 'push -', is a usage error (2).
set -uo pipefail
S="$(realpath "$1")"
. "$(dirname "$(realpath "$0")")/asserts.sh"
work="$(mktemp -d "${TMPDIR:-/tmp}/ss-follow.XXXXXX")"
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
cd "$work"
export SNAPSTREAM_NO_FSYNC=1

# The writer: 48 files in three directories, written one after another
# over about 1.5 s. Every third file grows in four appends with pauses
# between them; every fifth carries a run of zero pages; two are 1 MiB.
# Meanwhile pages.img grows by 1 MiB (half of it zero pages) every 40 ms to
# 40 MiB. It comes first, so that the push reads and chunks its whole
# segments while it still finds new files (a followed file is read one
# whole segment at a time, in order of discovery). Beside the 48, 300
# small files appear in bursts of 30 every 50 ms.
cat >writer.sh <<'EOF'
#!/usr/bin/env bash
set -eu
d="$1"
mkdir -p "$d/sub/deeper"
(
	for i in $(seq 40); do
		{ head -c 524288 /dev/urandom; head -c 524288 /dev/zero; } >>"$d/pages.img"
		sleep 0.04
	done
) &
big=$!
while [ "$(stat -c %s "$d/pages.img" 2>/dev/null || echo 0)" -lt $((5 << 20)) ]; do sleep 0.01; done
mkdir -p "$d/many"
(
	for b in $(seq 10); do
		for j in $(seq 30); do
			printf 'burst %d file %d\n' "$b" "$j" >"$d/many/b$b-$j"
		done
		sleep 0.05
	done
) &
many=$!
for i in $(seq 0 47); do
	case $((i % 3)) in
	0) f="$d/f$i.img" ;;
	1) f="$d/sub/f$i.img" ;;
	*) f="$d/sub/deeper/f$i.img" ;;
	esac
	kib=$(((i * 37) % 160 + 8))
	[ $i -eq 10 ] || [ $i -eq 30 ] && kib=1024
	if [ $((i % 3)) -eq 0 ]; then
		for piece in 1 2 3 4; do
			head -c $((kib * 256)) /dev/urandom >>"$f"
			sleep 0.02
		done
	else
		head -c $((kib * 1024)) /dev/urandom >"$f"
	fi
	[ $((i % 5)) -eq 0 ] && head -c 65536 /dev/zero >>"$f" && head -c 777 /dev/urandom >>"$f"
	[ $((i % 7)) -eq 0 ] && chmod 600 "$f"
	sleep 0.015
done
wait $big $many
EOF
chmod +x writer.sh

# ---------------------------------------------------------------- dozens of files
mkdir src
expect_rc 0 "push --while a writer creates 349 files" \
	timeout 120 "$S" push src snaps/w --json --while -- ./writer.sh src
check "the writer wrote 349 files" [ "$(find src -type f | wc -l)" = 349 ]
check "pages.img is 40 MiB" [ "$(stat -c %s src/pages.img)" = $((40 << 20)) ]
expect_rc 0 "info of the followed snapshot" "$S" info snaps/w --json
check "all 349 files in the snapshot" \
	[ "$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["files"])' out)" = 349 ]
expect_rc 0 "pull the followed snapshot" "$S" pull snaps/w restored --quiet
check "pulled byte-exact" diff -r src restored
check "modes kept" [ "$(cd src && find . -type f -printf '%p %m\n' | sort)" = \
	"$(cd restored && find . -type f -printf '%p %m\n' | sort)" ]

# ---------------------------------------------------------------- failing command
mkdir src3
expect_rc 1 "a command that exits 3" "$S" push src3 snaps/fail --while -- \
	bash -c 'head -c 300000 /dev/urandom >"$0/a"; sleep 0.2; exit 3' src3
grep -q "status 3" err && ok || bad "status 3 not named: $(cat err)"
grep -q "bash" err && ok || bad "command not named: $(cat err)"
check "no snapshot after a failed command" [ ! -e snaps/fail/manifest ]
expect_rc 3 "info of the failed push" "$S" info snaps/fail
expect_rc 1 "a command killed by a signal" "$S" push src3 snaps/fail --json --while -- \
	bash -c 'kill -KILL $$'
grep -q "signal 9" out && ok || bad "signal not named: $(cat out)"
check "no snapshot after a killed command" [ ! -e snaps/fail/manifest ]

# ---------------------------------------------------------------- signals
# SIGTERM sent to snapstream (by a supervisor, not the terminal) is passed
# on; the command ends, is reaped, and the push fails.
mkdir src4
# The marker matches the command's own command line, not snapstream's.
marker="^sleep 37\\.$$\$"
"$S" push src4 snaps/term --while -- bash -c "exec sleep 37.$$" >out 2>err &
pid=$!
for _ in $(seq 100); do pgrep -f "$marker" >/dev/null && break; sleep 0.1; done
pgrep -f "$marker" >/dev/null && ok || bad "the command did not start"
kill -TERM $pid
t0=$SECONDS
wait $pid
rc=$?
check "SIGTERM: exit 1 (got $rc)" [ "$rc" = 1 ]
check "SIGTERM: ended at once" [ $((SECONDS - t0)) -lt 10 ]
grep -q "signal 15" err && ok || bad "SIGTERM not named: $(cat err)"
check "SIGTERM: the command is gone" bash -c "! pgrep -f '$marker' >/dev/null"
check "SIGTERM: no snapshot" [ ! -e snaps/term/manifest ]

# ---------------------------------------------------------------- before the command
expect_rc 1 "onto an existing snapshot" "$S" push src snaps/w --while -- touch ran
check "the command did not run" [ ! -e ran ]
grep -q "already exists" err && ok || bad "existing snapshot: $(cat err)"
expect_rc 1 "a command that cannot run" "$S" push src3 snaps/nocmd --while -- ./no-such-command
grep -q "no-such-command" err && ok || bad "missing command not named: $(cat err)"
check "no snapshot without a command" [ ! -e snaps/nocmd/manifest ]
expect_rc 2 "--while without a command" "$S" push src snaps/x --while
grep -q -- "--while" err && ok || bad "usage names --while: $(cat err)"
expect_rc 2 "--while with stdin" "$S" push - snaps/x --while -- true </dev/null
expect_rc 2 "--while is for push" "$S" pull snaps/w x --while -- true

asserts_summary follow
