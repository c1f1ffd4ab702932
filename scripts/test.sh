#!/usr/bin/env bash
# Install, build with AddressSanitizer and UndefinedBehaviorSanitizer, and
# run the whole test suite. Prints "N passed, N failed" last.
# Usage: scripts/test.sh [meson test options...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build-asan -Dbuildtype=debugoptimized -Db_sanitize=address,undefined \
	-Db_lundef=false
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
rc=0
meson test -C build-asan --print-errorlogs --num-processes 2 "$@" || rc=$?
/usr/bin/python3 - build-asan/meson-logs/testlog.json <<'PY'
import json, sys
ok = bad = skip = 0
for line in open(sys.argv[1]):
    r = json.loads(line)["result"]
    if r in ("OK", "EXPECTEDFAIL"):
        ok += 1
    elif r == "SKIP":
        skip += 1
    else:
        bad += 1
print(f"{ok} passed, {bad} failed, {skip} skipped")
PY
exit $rc
