#!/usr/bin/env bash
# TLS is verified by default: against s3rver serving a self-signed
# certificate the backend refuses to talk (at once, without retrying), and
# trusting that certificate through SNAPSTREAM_CA_BUNDLE makes it work.
# Usage: tls.sh <test_s3>   (run inside tests/s3/harness.py --tls)
set -uo pipefail
T="$1"
fails=0
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
start=$(date +%s)
if "$T" roundtrip >"$out" 2>&1; then
	echo "FAIL: an unverifiable certificate was accepted"; fails=1
fi
cat "$out"
grep -qi "certificate" "$out" || { echo "FAIL: the error does not mention the certificate"; fails=1; }
[ $(($(date +%s) - start)) -lt 10 ] || { echo "FAIL: a certificate failure was retried"; fails=1; }
SNAPSTREAM_CA_BUNDLE="$SS_TLS_CERT" "$T" roundtrip || { echo "FAIL: the trusted certificate was refused"; fails=1; }
[ "$fails" -eq 0 ] && echo "tls: ok"
exit $fails
