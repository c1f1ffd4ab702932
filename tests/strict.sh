# Sourced by the test scripts: what a test does when a part of it cannot
# run here (no root, no s3rver, no clang...). A developer running one test
# by hand gets a skip (exit 77, or a SKIP note for one half of a test).
# scripts/test.sh installs everything every part needs, runs as root and
# exports SNAPSTREAM_TEST_STRICT=1: there the same condition is a failure,
# so no part of the suite can report OK without having run.

# strict: true when every part must run (SNAPSTREAM_TEST_STRICT set, not 0).
strict() { [ "${SNAPSTREAM_TEST_STRICT:-0}" != 0 ]; }

# cannot_run <test> <reason>: the whole test cannot run. Exits 77 (skip),
# or 1 under SNAPSTREAM_TEST_STRICT.
cannot_run() {
	if strict; then
		echo "FAIL: $1 cannot run: $2 (SNAPSTREAM_TEST_STRICT: every part must run)" >&2
		exit 1
	fi
	echo "SKIP: $1: $2" >&2
	exit 77
}
