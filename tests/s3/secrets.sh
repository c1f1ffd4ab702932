#!/usr/bin/env bash
# No credential, token or signature in the output of failing and verbose
# runs of the S3 backend: distinctive credentials and a session token, a
# server that refuses the key, and a proxy that fails every request, with
# the backend's log lines on (SS_TEST_VERBOSE=1).
# Usage: secrets.sh <test_s3>
set -uo pipefail
T="$1"
H="$(dirname "$0")/harness.py"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
AK=AKIASECRETSTESTKEYID9
SK="sEcReT/KeY+vAlUe0123456789abcdefGHIJ"
ST="SeSsIoNtOkEn//+==abcdefghijklmnopqrstuvwxyz0123456789"
creds=(AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK AWS_SESSION_TOKEN=$ST SS_TEST_VERBOSE=1)
# s3rver refuses the unknown key (403 InvalidAccessKeyId): basic fails.
/usr/bin/python3 "$H" -- env "${creds[@]}" "$T" basic >>"$out" 2>&1
# Every request fails with resets, 500s and stalls: retries are logged.
/usr/bin/python3 "$H" --proxy "--rate 1.0 --faults reset,500,stall --stall 2 --seed 3" -- \
	env "${creds[@]}" SNAPSTREAM_RETRY_MAX=4 SNAPSTREAM_RETRY_SECONDS=3 SNAPSTREAM_STALL_SECONDS=1 \
	"$T" failall >>"$out" 2>&1
cat "$out"
fails=0
grep -q "log: .*retrying" "$out" || { echo "FAIL: the verbose run logged no retry"; fails=1; }
grep -q "InvalidAccessKeyId" "$out" || { echo "FAIL: the refusal was not reported"; fails=1; }
for s in "$AK" "$SK" "$ST" "Signature=" "Credential=" "x-amz-security-token"; do
	if grep -qF -- "$s" "$out"; then echo "FAIL: '$s' appeared in the output"; fails=1; fi
done
[ "$fails" -eq 0 ] && echo "secrets: ok"
exit $fails
