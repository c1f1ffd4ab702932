# Sourced by the shell tests: assertions that count, so that every script
# reports the same way. A failure is one line on stderr, "FAIL: <what>",
# or "FAIL[<part>]: <what>" while $part is set (the tests that run once per
# kind of store), naming what was checked and what was seen instead.
#
#   ok [what]             one check passed; with words, says "ok: what"
#   bad <what>            one check failed
#   check <what> <command...>
#                         passes when the command does
#   expect_rc <rc> <what> <command...>
#                         passes when the command exits rc; its stdout and
#                         stderr are left in ./out and ./err for the checks
#                         that follow
#   asserts_summary <test>
#                         "<test>: N checks passed, M failed"; returns 1
#                         when any failed or when none ran
pass=0
fails=0

ok() {
	pass=$((pass + 1))
	[ $# -eq 0 ] || echo "ok: $*"
}

bad() {
	echo "FAIL${part:+[$part]}: $*" >&2
	fails=$((fails + 1))
}

check() {
	local what="$1" cmd
	shift
	if "$@"; then ok; else
		cmd="$*"
		bad "$what (failed: ${cmd:0:300})"
	fi
}

expect_rc() {
	local want="$1" what="$2" rc
	shift 2
	"$@" >out 2>err
	rc=$?
	if [ "$rc" -eq "$want" ]; then ok; else
		bad "$what: exit $rc, want $want; stderr: $(head -c 2000 err)"
	fi
}

asserts_summary() {
	echo "$1: $pass checks passed, $fails failed"
	if [ $((pass + fails)) -eq 0 ]; then
		echo "FAIL: $1: no check ran" >&2
		return 1
	fi
	[ "$fails" -eq 0 ]
}
