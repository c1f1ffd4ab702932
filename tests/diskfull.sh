#!/usr/bin/env bash
# Disk full (issue 6, requirement 3, the local part): a push to a local
# store and a pull to a local destination on a small tmpfs.
# Usage: diskfull.sh <snapstream> <ss-genimage>
# Needs root (mount -t tmpfs); skips (77) without it or when mount fails,
# and fails instead under SNAPSTREAM_TEST_STRICT (tests/strict.sh).
#
#  (a) push of a 128 MiB image (~65 MiB stored) to a store on a 48 MiB
#      tmpfs: exit 1, "No space left on device" naming the pack it was
#      writing (errno 28 in --json); no snapshot (info exits 3, nothing in
#      the snapshot directory); every object under a final pack name has a
#      valid trailer (tests/crash_packs.py) and no temporary is left in the
#      store. After the tmpfs is grown the same push succeeds, stores at
#      most cold - (bytes of the packs the failed push left) + 3 %, leaves
#      every pack referenced (gc --dry-run), verifies and pulls byte-exact.
#  (b) pull of that snapshot (from a store on disk) into a 48 MiB tmpfs:
#      to a file, to a directory (runsc layout) and to stdout: exit 1 with
#      "No space left on device" naming the destination (errno 28); nothing
#      under the final name, no *.ss-tmp-* temporary left, the tmpfs empty
#      again, the store unchanged (names, sizes, mtimes). After the tmpfs is
#      grown the pulls succeed byte-exact.
#  (c) the commit: a filler file leaves room for the packs but not for the
#      index object (then: not for the manifest). The push fails naming
#      index/ (manifest), leaves no snapshot and no temporary, and after the
#      filler is deleted the same push stores 0 new bytes and verifies.
# Exit 0 pass, 1 fail, 77 skip.
set -uo pipefail
S="$(realpath "$1")"
GEN="$(realpath "$2")"
HERE="$(dirname "$(realpath "$0")")"
PY=/usr/bin/python3
CHK="$HERE/crash_packs.py"
. "$HERE/strict.sh"
. "$HERE/asserts.sh"

[ "$(id -u)" -eq 0 ] || cannot_run diskfull "needs root to mount a tmpfs"
work="$(mktemp -d "${TMPDIR:-/tmp}/ss-diskfull.XXXXXX")"
A="$work/a" B="$work/b"
cleanup() {
	local m
	for m in "$A" "$B"; do
		mountpoint -q "$m" && { umount "$m" 2>/dev/null || umount -l "$m"; }
	done
	[ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$A" "$B"
if ! mount -t tmpfs -o size=48m,mode=0755 ss-diskfull "$A" 2>"$work/merr" ||
	! mount -t tmpfs -o size=48m,mode=0755 ss-diskfull "$B" 2>>"$work/merr"; then
	cannot_run diskfull "cannot mount a tmpfs ($(head -c 200 "$work/merr"))"
fi

fig() { echo "  $*"; }
ss() { timeout -k 5 300 "$S" "$@"; }
jnum() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" "$2"; }
pages() { du -B4096 -s "$1" | cut -f1; }
avail() { df -B4096 --output=avail "$1" | tail -n 1 | tr -d ' '; }
used() { df -B4096 --output=used "$1" | tail -n 1 | tr -d ' '; }
grow() { mount -o remount,size="$2" "$1" || bad "cannot remount $1 with size=$2"; }
# A failed command's result: exit 1, ENOSPC in the JSON and on stderr,
# and the message names what was being written.
enospc() { # <what> <rc> <json> <stderr> <name that must appear>
	[ "$2" -eq 1 ] || bad "$1: exit $2, want 1: $(head -c 400 "$4")"
	grep -q '"ok":false' "$3" && grep -q '"errno":28' "$3" ||
		bad "$1: JSON is not an ENOSPC error: $(head -c 400 "$3")"
	grep -q "No space left on device" "$4" || bad "$1: stderr does not say 'No space left on device': $(head -c 400 "$4")"
	grep -qF -- "$5" "$4" || bad "$1: the message does not name $5: $(head -c 400 "$4")"
	echo "  $1: $(head -c 300 "$4")"
}
tmp_in() { find "$1" \( -name '*.tmp-*' -o -name '*.ss-tmp-*' \) | wc -l; }

start=$(date +%s)
"$GEN" --size 128M --seed 5 --mix zero=10,dup=5,clone=5,text=20,struct=20,random=40 \
	--out "$work/img" --quiet &&
	"$GEN" --dir-layout runsc --size 96M --seed 12 --out "$work/ckpt" --quiet &&
	"$GEN" --size 64M --seed 7 --mix zero=10,text=30,struct=30,random=30 --out "$work/img_c" --quiet ||
	{ echo "genimage failed" >&2; exit 1; }

# Reference: the image in a store on disk (what (b) pulls from).
ss push "$work/img" "$work/ref/snap" --json --quiet >"$work/ref.json" 2>"$work/err" ||
	{ echo "FAIL: reference push: $(cat "$work/err")" >&2; exit 1; }
ss push "$work/ckpt" "$work/ref/dir" --json --quiet >/dev/null 2>"$work/err" ||
	{ echo "FAIL: reference directory push: $(cat "$work/err")" >&2; exit 1; }
cold=$(jnum new_stored_bytes "$work/ref.json")
echo "reference: 128 MiB image, cold push stores $cold bytes in $(jnum packs "$work/ref.json") packs"

echo "(a) push to a local store on a 48 MiB tmpfs"
ss push "$work/img" "$A/snap" --json >"$work/a.json" 2>"$work/a.err"
enospc "push" $? "$work/a.json" "$work/a.err" "$A/.snapstream/packs/"
ss info "$A/snap" >/dev/null 2>&1
rc=$?
[ "$rc" -eq 3 ] && ok "no snapshot after the failed push (info exits 3)" || bad "info after a failed push exits $rc, want 3"
n=$(find "$A/snap" -mindepth 1 2>/dev/null | wc -l)
[ "$n" -eq 0 ] || bad "the failed push left $n entries in the snapshot directory: $(ls -A "$A/snap")"
line=$($PY "$CHK" local "$A/.snapstream") || bad "partially written pack under a final name: $line"
left_bytes=$(echo "$line" | sed -n 's/.*bytes=\([0-9]*\).*/\1/p')
left_packs=$(echo "$line" | sed -n 's/.*packs=\([0-9]*\).*/\1/p')
fig "left behind: $line; tmpfs $(used "$A") of $((48 * 256)) pages used"
[ "$(tmp_in "$A")" -eq 0 ] || bad "temporaries left in the store: $(find "$A" -name '*tmp-*' | head -3)"
[ "${left_packs:-0}" -ge 1 ] || bad "the failed push stored no whole pack (the tmpfs should hold one)"
grow "$A" 256m
if ss push "$work/img" "$A/snap" --json --quiet >"$work/a2.json" 2>"$work/a2.err"; then
	new=$(jnum new_stored_bytes "$work/a2.json")
	fig "the same push after growing the tmpfs stored $new bytes (cold $cold, $left_bytes in the packs left)"
	[ "$new" -lt "$cold" ] && [ "$new" -le $((cold - left_bytes + cold * 3 / 100)) ] &&
		ok "the re-run reuses the packs the failed push stored" ||
		bad "re-run stored $new bytes with $left_bytes bytes of packs already there (cold $cold)"
	ss verify "$A/snap" --quiet >/dev/null 2>"$work/err" && ok "the re-run verifies" ||
		bad "re-run does not verify: $(head -c 400 "$work/err")"
	ss pull "$A/snap" "$work/a.out" --quiet 2>"$work/err" && cmp -s "$work/img" "$work/a.out" &&
		ok "the re-run pulls byte-exact" || bad "pull after the re-run: $(head -c 400 "$work/err")"
	rm -f "$work/a.out"
	ss gc --store "$A/.snapstream" --dry-run --json >"$work/gc.json" 2>"$work/err"
	p=$(jnum packs "$work/gc.json") r=$(jnum packs_referenced "$work/gc.json")
	fig "gc --dry-run: $r of $p packs referenced, $(jnum packs_pending "$work/gc.json") pending"
	[ -n "$p" ] && [ "$p" = "$r" ] || bad "after the re-run gc finds $p packs, $r referenced: $(cat "$work/gc.json" "$work/err")"
	$PY "$CHK" local "$A/.snapstream" >/dev/null || bad "a bad pack after the re-run"
	# The store-wide check, once it exists (another change adds it).
	if "$S" check --help >/dev/null 2>&1; then
		ss check --store "$A/.snapstream" >"$work/check.out" 2>&1 &&
			ok "snapstream check: $(tail -n 1 "$work/check.out")" ||
			bad "snapstream check after the re-run: $(head -c 600 "$work/check.out")"
	fi
else
	bad "the same push after freeing space failed: $(head -c 400 "$work/a2.err")"
fi

echo "(b) pull into a 48 MiB tmpfs"
state() { find "$work/ref" -type f -printf '%P %s %T@\n' | sort | md5sum; }
before=$(state)
ss pull "$work/ref/snap" "$B/out.img" --json >"$work/b.json" 2>"$work/b.err"
enospc "pull to a file" $? "$work/b.json" "$work/b.err" "$B/out.img"
ss pull "$work/ref/dir" "$B/ckpt" --json >"$work/b2.json" 2>"$work/b2.err"
enospc "pull to a directory" $? "$work/b2.json" "$work/b2.err" "$B/ckpt"
n=$(find "$B" -mindepth 1 | wc -l)
[ "$n" -eq 0 ] && ok "nothing under the final names and no temporaries" ||
	bad "the failed pulls left $n entries: $(ls -A "$B" | head -5)"
u=$(used "$B")
[ "$u" -eq 0 ] && ok "the tmpfs is empty again" || bad "the failed pulls still use $u pages"
# stdout: the shell made the file; snapstream says what failed.
ss pull "$work/ref/snap" - --json 2>"$work/b3.err" >"$B/stdout.img"
rc=$?
[ "$rc" -eq 1 ] && grep -q "No space left on device" "$work/b3.err" &&
	ok "pull to stdout: exit 1, $(grep -o 'cannot write[^"]*' "$work/b3.err" | head -n 1)" ||
	bad "pull to a full stdout: exit $rc: $(head -c 400 "$work/b3.err")"
rm -f "$B/stdout.img"
[ "$(state)" = "$before" ] && ok "the store is unchanged" || bad "the failed pulls changed the store"
grow "$B" 512m
ss pull "$work/ref/snap" "$B/out.img" --quiet 2>"$work/err" && cmp -s "$work/img" "$B/out.img" &&
	ok "after growing the tmpfs the pull is byte-exact" || bad "pull after freeing space: $(head -c 400 "$work/err")"
rm -f "$B/out.img"
ss pull "$work/ref/dir" "$B/ckpt" --quiet 2>"$work/err" && diff -r "$work/ckpt" "$B/ckpt" >/dev/null &&
	ok "after growing the tmpfs the directory pull is exact" || bad "directory pull after freeing space: $(head -c 400 "$work/err")"
rm -rf "$B/ckpt"

echo "(c) full at the commit: index object, manifest"
# Sizes in tmpfs pages, measured by a push that fits. 8 KiB chunks make
# the index object and the manifest large next to the variation of the
# packs' page rounding, and an image without repeated pages stores the
# same bytes whatever the workers' timing.
rm -rf "${A:?}"/* "$A"/.snapstream
grow "$A" 256m
copt=(--store "$A/st" --chunk-avg 8K)
if ss push "$work/img_c" "$A/c/snap" "${copt[@]}" --json --quiet >"$work/c0.json" 2>"$work/err"; then
	Pp=$(pages "$A/st/packs") Pi=$(pages "$A/st/index") Pr=$(pages "$A/st/refs") Pm=$(pages "$A/c")
	fig "a push that fits: packs $Pp pages, index $Pi, ref $Pr, manifest $Pm ($(jnum manifest_bytes "$work/c0.json") bytes)"
	[ "$Pi" -ge 16 ] && [ "$Pm" -ge 16 ] || bad "index ($Pi pages) or manifest ($Pm pages) too small to aim at"
	for stage in index manifest; do
		rm -rf "$A/st" "$A/c"
		if [ "$stage" = index ]; then room=$((Pp + Pi / 2)) name="$A/st/index/"
		else room=$((Pp + Pi + Pr + Pm / 2)) name="$A/c/snap/manifest"; fi
		dd if=/dev/zero of="$A/filler" bs=4096 count=$(($(avail "$A") - room)) status=none
		ss push "$work/img_c" "$A/c/snap" "${copt[@]}" --json >"$work/c.json" 2>"$work/c.err"
		enospc "full at the $stage" $? "$work/c.json" "$work/c.err" "$name"
		ss info "$A/c/snap" >/dev/null 2>&1
		rc=$?
		[ "$rc" -eq 3 ] && ok "$stage: no snapshot (info exits 3)" || bad "$stage: info exits $rc, want 3"
		[ "$(tmp_in "$A")" -eq 0 ] || bad "$stage: temporaries left: $(find "$A" -name '*tmp-*' | head -3)"
		line=$($PY "$CHK" local "$A/st") || bad "$stage: bad pack: $line"
		rm -f "$A/filler"
		if ss push "$work/img_c" "$A/c/snap" "${copt[@]}" --json --quiet >"$work/c2.json" 2>"$work/err"; then
			new=$(jnum new_stored_bytes "$work/c2.json")
			[ "$new" -eq 0 ] && ok "$stage: after deleting the filler the push stores 0 new bytes" ||
				bad "$stage: the re-run stored $new bytes, want 0 (the packs were all there: $line)"
			ss verify "$A/c/snap" "${copt[@]:0:2}" --quiet >/dev/null 2>"$work/err" ||
				bad "$stage: the re-run does not verify: $(head -c 400 "$work/err")"
		else
			bad "$stage: the push after deleting the filler failed: $(head -c 400 "$work/err")"
		fi
	done
else
	bad "(c): the measuring push failed: $(head -c 400 "$work/err")"
fi

echo "diskfull: failures=$fails in $(($(date +%s) - start)) s"
[ "$fails" -eq 0 ]
