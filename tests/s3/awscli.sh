#!/usr/bin/env bash
# Objects the S3 backend writes are readable by the aws CLI (Debian's
# awscli): a single-PUT object and a multipart one are listed by
# `aws s3 ls` with their sizes and copied back by `aws s3 cp`, byte-exact.
# Usage: awscli.sh <test_s3>   (run inside tests/s3/harness.py)
set -uo pipefail
T="$1"
AWS=/usr/bin/aws
[ -x "$AWS" ] || AWS=aws
d="$(mktemp -d)"
trap 'rm -rf "$d"' EXIT
"$T" basic --export "$d" || exit 1
B="s3://$SS_S3_BUCKET/t/aws-check"
fails=0
"$AWS" --endpoint-url "$AWS_ENDPOINT_URL" s3 ls "$B/" >"$d/ls" || fails=$((fails + 1))
cat "$d/ls"
for f in small.bin multi.bin; do
	size=$(stat -c %s "$d/$f")
	grep -Eq " $size $f\$" "$d/ls" || { echo "FAIL: aws s3 ls does not show $f with $size bytes"; fails=$((fails + 1)); }
	"$AWS" --endpoint-url "$AWS_ENDPOINT_URL" s3 cp --quiet "$B/$f" "$d/aws-$f" &&
		cmp "$d/$f" "$d/aws-$f" || { echo "FAIL: aws s3 cp of $f differs"; fails=$((fails + 1)); }
done
[ "$fails" -eq 0 ] && echo "awscli: ok"
exit $((fails > 0))
