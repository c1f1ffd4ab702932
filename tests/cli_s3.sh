#!/usr/bin/env bash
# The admin subcommands on s3:// URIs against a real S3 server (s3rver on
# loopback, started by tests/s3/harness.py). Skips (77) when s3rver is not
# installed (scripts/setup.sh installs it); fails instead under
# SNAPSTREAM_TEST_STRICT (tests/strict.sh).
# Usage: cli_s3.sh <snapstream> <ss-genimage>
#
# Proves, through the same backend API as the local store: push - and
# pull -/cat round trips; ls of a bucket prefix; info; verify and --quick;
# rm (manifest and ref gone, 3 the second time); gc hides with the default
# grace, deletes with --grace 0 and leaves every remaining snapshot
# verifying, no index object listing a deleted pack; the gc lock; a flipped
# byte in a pack (rewritten with the aws CLI) is exit 4 naming snapshot,
# file and offset; a deleted pack fails --quick with 4; exit codes 2 and 3;
# a manifest in the bucket naming a local store is refused (exit 1).
set -uo pipefail
S="$(realpath "$1")"
GEN="$(realpath "$2")"
HERE="$(dirname "$(realpath "$0")")"
H="$HERE/s3/harness.py"
S3RVER="$HERE/s3/node_modules/s3rver/bin/s3rver.js"
. "$HERE/strict.sh"
if ! command -v node >/dev/null || [ ! -f "$S3RVER" ]; then
	cannot_run cli-s3 "s3rver is not installed (scripts/setup.sh installs it)"
fi
AWS=/usr/bin/aws
[ -x "$AWS" ] || AWS=aws
work="$(mktemp -d "${TMPDIR:-/tmp}/ss-clis3.XXXXXX")"
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
cd "$work"
# No repeated pages in img: a file push makes them chunks of their own, a
# stream push cannot (docs/DESIGN.md, "Repeated pages"), and the checks
# below compare the two.
"$GEN" --size 16M --mix zero=28,text=30,struct=21,random=21 --seed 31 --out img --quiet || exit 1
"$GEN" --dirty 0.3 --base img --seed 32 --out img2 --quiet || exit 1
"$GEN" --dir-layout runsc --size 8M --seed 33 --out ckpt --quiet || exit 1
export S AWS HERE

/usr/bin/python3 "$H" -- bash -c '
	B="s3://$SS_S3_BUCKET"
	aws() { "$AWS" --endpoint-url "$AWS_ENDPOINT_URL" "$@"; }
	. "$HERE/asserts.sh"
	rc() { "$@" >out 2>err; echo $?; }
	jget() { /usr/bin/python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

	cat img | "$S" push - "$B/snaps/s" --name pages.img --json >out 2>err &&
		[ "$(jget out "j[\"new_stored_bytes\"] > 0")" = True ] && ok "push - to s3" || bad "push -: $(cat err)"
	"$S" push img "$B/snaps/f" --json >out 2>err && [ "$(jget out "j[\"new_stored_bytes\"]")" = 0 ] &&
		ok "file push after the stream stores nothing" || bad "push f: $(cat out err)"
	"$S" push ckpt "$B/snaps/dir" --label k=v --quiet 2>err && ok "push dir" || bad "push dir: $(cat err)"
	"$S" pull "$B/snaps/s" - 2>err | cmp -s - img && ok "pull - from s3" || bad "pull -: $(cat err)"
	"$S" cat "$B/snaps/dir" pages.img 2>err | cmp -s - ckpt/pages.img && ok "cat from s3" || bad "cat: $(cat err)"

	[ "$(rc "$S" ls "$B/snaps/" --json)" = 0 ] && [ "$(jget out "len(j[\"snapshots\"])")" = 3 ] &&
		ok "ls a bucket prefix" || bad "ls: $(cat out err)"
	[ "$(rc "$S" ls "$B" --json)" = 0 ] && [ "$(jget out "sorted(s[\"snapshot\"] for s in j[\"snapshots\"])[0]")" = "$B/snaps/dir" ] &&
		ok "ls a bucket" || bad "ls bucket: $(cat out err)"
	[ "$(rc "$S" info "$B/snaps/dir" --json)" = 0 ] && [ "$(jget out "(j[\"files\"], j[\"labels\"])")" = "(3, {'"'"'k'"'"': '"'"'v'"'"'})" ] &&
		ok "info" || bad "info: $(cat out err)"
	[ "$(rc "$S" verify "$B/snaps/dir")" = 0 ] && ok "verify" || bad "verify: $(cat err)"
	[ "$(rc "$S" verify "$B/snaps/s" --quick)" = 0 ] && ok "verify --quick" || bad "verify --quick: $(cat err)"
	[ "$(rc "$S" info "$B/snaps/none")" = 3 ] && grep -q "snaps/none" err && ok "missing snapshot: 3" || bad "missing: $(cat err)"
	[ "$(rc "$S" verify "$B/snaps/s" --bogus)" = 2 ] && ok "usage: 2" || bad "usage: $(cat err)"

	# rm and gc
	"$S" push img2 "$B/snaps/g" --quiet 2>err || bad "push g: $(cat err)"
	npacks() { aws s3 ls "$B/.snapstream/packs/" --recursive | wc -l; }
	p0=$(npacks)
	[ "$(rc "$S" rm "$B/snaps/g")" = 0 ] && ok "rm" || bad "rm: $(cat err)"
	aws s3 ls "$B/snaps/g/manifest" >/dev/null 2>&1 && bad "manifest still there" || ok "rm deleted the manifest"
	[ "$(rc "$S" rm "$B/snaps/g")" = 3 ] && ok "rm again: 3" || bad "rm again: $(cat err)"
	[ "$(rc "$S" gc --store "$B/.snapstream" --json)" = 0 ] && [ "$(jget out "j[\"packs_deleted\"]")" = 0 ] &&
		ok "gc with the default grace deletes nothing" || bad "gc default: $(cat out err)"
	[ "$(rc "$S" gc --store "$B/.snapstream" --grace 0 --json)" = 0 ] && [ "$(jget out "j[\"packs_deleted\"] >= 1")" = True ] &&
		ok "gc --grace 0 deletes the removed snapshot'"'"'s packs" || bad "gc: $(cat out err)"
	[ "$(npacks)" -lt "$p0" ] && ok "fewer packs in the bucket" || bad "packs: $p0 -> $(npacks)"
	for s in s f dir; do
		[ "$(rc "$S" verify "$B/snaps/$s")" = 0 ] && ok "verify $s after gc" || bad "verify $s: $(cat err)"
	done
	idx=$(/usr/bin/python3 "$HERE/check_obj.py" "$B/.snapstream" index-ok 2>&1) &&
		ok "no index lists a deleted pack" || bad "index objects: $idx"
	printf "snapstream-gc-lock 1\nhost h\npid 77\nsince 1\n" | aws s3 cp - "$B/.snapstream/gc/lock" --quiet
	[ "$(rc "$S" gc --store "$B/.snapstream")" = 1 ] && grep -q "another gc" err && ok "gc lock held: 1" || bad "lock: $(cat err)"
	[ "$(rc "$S" gc --store "$B/.snapstream" --break-lock)" = 0 ] && ok "--break-lock" || bad "break-lock: $(cat err)"

	# A manifest does not choose the store: one in the bucket naming a
	# local directory (or another store in the bucket) is refused unless
	# that store is the one given.
	"$S" push img "$B/foreign/h" --store "$PWD/localstore" --quiet 2>err || bad "push foreign: $(cat err)"
	for cmd in info verify; do
		[ "$(rc "$S" $cmd "$B/foreign/h")" = 1 ] && grep -q "$PWD/localstore" err && grep -q "$B/.snapstream" err &&
			ok "$cmd of a bucket manifest naming a local store: 1 naming both" || bad "$cmd foreign: $(cat err)"
	done
	[ "$(rc "$S" pull "$B/foreign/h" h.img)" = 1 ] && [ ! -e h.img ] && grep -q "$PWD/localstore" err &&
		ok "pull of it: 1, nothing written" || bad "pull foreign: $(cat err)"
	[ "$(rc "$S" pull "$B/foreign/h" h.img --store "file://$PWD/localstore/")" = 0 ] && cmp -s h.img img &&
		ok "pull of it with its store named" || bad "pull foreign --store: $(cat err)"

	# Integrity: a flipped byte, then a missing pack.
	"$S" push img2 "$B/bad/a" --store "$B/badstore" --quiet 2>err || bad "push bad: $(cat err)"
	key=$(aws s3 ls "$B/badstore/packs/" --recursive | sort -k3 -n | tail -1 | awk "{print \$4}")
	aws s3 cp --quiet "s3://$SS_S3_BUCKET/$key" pack.bin
	/usr/bin/python3 -c "
import sys
b = bytearray(open(\"pack.bin\", \"rb\").read()); b[1 << 20] ^= 0xff; open(\"pack.bin\", \"wb\").write(b)"
	aws s3 cp --quiet pack.bin "s3://$SS_S3_BUCKET/$key"
	[ "$(rc "$S" verify "$B/bad/a" --store "$B/badstore")" = 4 ] && grep -q "bad/a" err && grep -q "file .img2." err && grep -q "offset" err &&
		ok "flipped byte: 4 naming snapshot, file and offset" || bad "flipped: $(cat err)"
	aws s3 rm --quiet "s3://$SS_S3_BUCKET/$key"
	[ "$(rc "$S" verify "$B/bad/a" --quick --store "$B/badstore")" = 4 ] && grep -q missing err && ok "missing pack: --quick 4" || bad "missing pack: $(cat err)"
' 2>&1 | tee log
pass=$(grep -c "^ok: " log)
fail=$(grep -c "^FAIL" log)
echo "cli s3: $pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -ge 30 ]
