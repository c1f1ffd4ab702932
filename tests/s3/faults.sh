#!/usr/bin/env bash
# Retries under injected faults (tests/faultproxy.py between the backend and
# s3rver). With 10% of requests failing (resets, 429/500/503, stalled
# responses), puts and gets of 160 objects, multipart ones included, complete
# byte-exact; with every request failing, each call stops within the
# configured bound with an error naming bucket, key and the retries.
# Usage: faults.sh <test_s3>
set -uo pipefail
T="$1"
H="$(dirname "$0")/harness.py"
fails=0

# 10%: must succeed, and faults must really have been injected.
/usr/bin/python3 "$H" --proxy "--rate 0.1 --stall 3 --seed 7" -- bash -c '
	SNAPSTREAM_STALL_SECONDS=1 SNAPSTREAM_RETRY_MAX=12 SNAPSTREAM_RETRY_SECONDS=120 \
		"$0" faults || exit 1
	n=$(wc -l <"$SS_PROXY_LOG")
	kinds=$(cut -d" " -f1 "$SS_PROXY_LOG" | sort | uniq -c | tr -s " " | tr "\n" ";")
	echo "faults injected: $n ($kinds)" >&2
	[ "$n" -ge 20 ] || { echo "FAIL: only $n faults injected" >&2; exit 1; }
' "$T" || { echo "FAIL: 10% faults" >&2; fails=$((fails + 1)); }

# 100%: must fail, within SNAPSTREAM_RETRY_SECONDS (+ one stalled attempt).
/usr/bin/python3 "$H" --proxy "--rate 1.0 --stall 3 --seed 8" -- \
	env SNAPSTREAM_STALL_SECONDS=1 SNAPSTREAM_RETRY_MAX=50 SNAPSTREAM_RETRY_SECONDS=4 \
	"$T" failall || { echo "FAIL: 100% faults" >&2; fails=$((fails + 1)); }

# 100% with few attempts: the attempt bound stops it first, and the error
# carries the status and the server's code.
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
/usr/bin/python3 "$H" --proxy "--rate 1.0 --faults 503 --seed 9" -- \
	env SNAPSTREAM_RETRY_MAX=3 SNAPSTREAM_RETRY_SECONDS=100 SS_TEST_VERBOSE=1 \
	"$T" failall >"$out" 2>&1
cat "$out" >&2
grep -q "HTTP 503 ServiceUnavailable.*after 3 attempts" "$out" ||
	{ echo "FAIL: 503 with 3 attempts" >&2; fails=$((fails + 1)); }

# Every CompleteMultipartUpload (and conditional PUT) acted on but its
# answer lost: the put succeeds (the object carries this upload's tag). Every Complete refused
# while an object of that key and size exists: the put fails.
for mode in lostcomplete:reset-after refusedcomplete:503; do
	/usr/bin/python3 "$H" --proxy "--rate 1.0 --faults ${mode#*:} --match ^POST.*[?&]uploadId=|^PUT.*/lost/cond --seed 10" -- \
		env SNAPSTREAM_RETRY_MAX=3 SNAPSTREAM_RETRY_SECONDS=30 "$T" "${mode%%:*}" ||
		{ echo "FAIL: ${mode%%:*}" >&2; fails=$((fails + 1)); }
done

[ "$fails" -eq 0 ] && echo "faults: ok" >&2
exit $((fails > 0))
