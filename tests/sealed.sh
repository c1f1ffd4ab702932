#!/usr/bin/env bash
# Sealed keyed stores through the CLI (docs/SECURITY.md, "Encryption at
# rest in keyed stores"), on a local store and on s3rver (the s3 part skips
# when s3rver is not installed, and fails instead under
# SNAPSTREAM_TEST_STRICT: tests/parts.sh).
# Usage: sealed.sh <snapstream> <ss-genimage>
#
#   markers   an image with a 32-byte marker in every page, in a directory
#             whose file names are secrets: a plain store's objects show
#             markers and names (so the scan can fail), a sealed store's
#             show no marker, no name, and no 17-byte sequence of the image
#   round     push (directory and stdin), pull, pull -, cat, verify, dedup
#             between snapshots, with the key
#   cache     through the node cache: sealed bytes stay sealed there (no
#             marker or 17-byte sequence; a plain store's cache shows them),
#             and blocks changed in the cache are fetched again, never used
#   tamper    each way a bucket writer can mix up what a pull reads, through
#             pull, cat and verify: exit 4 and nothing under the final name
#             (manifests swapped between names, replayed under another
#             name, cut short, a byte flipped; a frame flipped; a pack of
#             another store in its place; a manifest of another store); the
#             runsc digest ateom records (label runsc.sha256) cannot be
#             swapped; a forged pack index or index object is found by check
#             and ignored by pushes
set -uo pipefail
part=main
if [ "${1:-}" = "--part" ]; then part="$2"; shift 2; fi
SELF="$(realpath "$0")"
S="$(realpath "$1")"
GEN="$(realpath "$2")"
HERE="$(dirname "$(realpath "$0")")"
PY=/usr/bin/python3
SCAN="$HERE/sealed_scan.py"
OBJ="$HERE/check_obj.py"
. "$HERE/parts.sh"
. "$HERE/asserts.sh"

# Where a store and its snapshots live, and the manifests' "store" for
# check_obj.py (the directory or bucket prefix holding <name>/manifest).
base() { if [ "$part" = s3 ]; then echo "s3://$SS_S3_BUCKET/$1"; else echo "$work/$part/$1"; fi; }
snap() { echo "$(base "$1")/$2"; }
store() { echo "$(base "$1")/.snapstream"; }
O() { $PY "$OBJ" "$@"; }
# expect <rc> <what> <cmd...>: exit status, and with a destination given
# as DEST=<path> in the environment, nothing there afterwards.
expect() {
	local want="$1" what="$2" rc
	shift 2
	"$@" >"$work/out" 2>"$work/err"
	rc=$?
	if [ "$rc" -ne "$want" ]; then
		bad "$part: $what: exit $rc, want $want: $(head -c 600 "$work/err")"
	elif [ -n "${DEST:-}" ] && [ -e "$DEST" ]; then
		bad "$part: $what: $DEST exists"
	else
		ok
	fi
}

run_part() {
	local K=(--key-file "$work/k1") dir="$work/tenant-dir"
	# ------------------------------------------------------------ markers
	"$S" push "$dir" "$(snap plain a)" --store "$(store plain)" --quiet 2>"$work/err" || bad "$part: plain push: $(cat "$work/err")"
	"$S" init --store "$(store sealed)" "${K[@]}" --quiet 2>"$work/err" || bad "$part: init: $(cat "$work/err")"
	"$S" push "$dir" "$(snap sealed a)" --store "$(store sealed)" "${K[@]}" --label runsc.sha256=aaaa --quiet 2>"$work/err" ||
		bad "$part: sealed push: $(cat "$work/err")"
	local n
	n=$($PY "$SCAN" markers MRK "$(store plain):*" "$(base plain):a/manifest")
	[ "$n" -gt 20 ] && ok || bad "$part: a plain store shows only $n markers: the scan cannot fail"
	n=$($PY "$SCAN" substrings --stop=10 "$dir/memory-of-tenant-7.img" "$(store plain):*")
	[ "$n" -ge 10 ] && ok || bad "$part: a plain store shows $n 17-byte sequences of the image"
	O "$(base plain)" get a/manifest "$work/m" && grep -q "memory-of-tenant-7" "$work/m" && ok ||
		bad "$part: a plain manifest shows no file name: the scan cannot fail"
	n=$($PY "$SCAN" markers MRK "$(store sealed):*" "$(base sealed):a/manifest")
	[ "$n" = 0 ] && ok || bad "$part: a sealed store shows $n markers"
	for f in memory-of-tenant-7.img pages_meta.img checkpoint.img; do
		n=$($PY "$SCAN" substrings "$dir/$f" "$(store sealed):*" "$(base sealed):a/manifest")
		[ "$n" = 0 ] && ok || bad "$part: a sealed store shows $n 17-byte sequences of $f"
	done
	O "$(base sealed)" get a/manifest "$work/m"
	for s in memory-of-tenant-7 pages_meta tenant-dir runsc.sha256; do
		grep -qF "$s" "$work/m" && bad "$part: the sealed manifest shows '$s'" || ok
	done
	for k in $(O "$(store sealed)" ls); do
		O "$(store sealed)" get "$k" "$work/o"
		grep -qF "memory-of-tenant-7" "$work/o" && bad "$part: $k shows a file name" || ok
	done

	# ------------------------------------------------------------ round
	expect 0 "pull" "$S" pull "$(snap sealed a)" --store "$(store sealed)" "$work/$part.r1" "${K[@]}" --quiet
	diff -r "$dir" "$work/$part.r1" >/dev/null && ok || bad "$part: pulled directory differs"
	expect 0 "verify" "$S" verify "$(snap sealed a)" --store "$(store sealed)" "${K[@]}" --quiet
	"$S" cat "$(snap sealed a)" --store "$(store sealed)" memory-of-tenant-7.img "${K[@]}" --quiet 2>"$work/err" |
		cmp -s - "$dir/memory-of-tenant-7.img" && ok || bad "$part: cat: $(cat "$work/err")"
	"$S" push - "$(snap sealed s)" --store "$(store sealed)" --name img "${K[@]}" --json <"$dir/memory-of-tenant-7.img" >"$work/out" 2>"$work/err" &&
		[ "$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["new_raw_bytes"])' "$work/out")" = 0 ] &&
		ok || bad "$part: a stream push of the same image stored new bytes: $(cat "$work/out" "$work/err")"
	"$S" pull "$(snap sealed s)" --store "$(store sealed)" - "${K[@]}" --quiet 2>"$work/err" | cmp -s - "$dir/memory-of-tenant-7.img" &&
		ok || bad "$part: pull -: $(cat "$work/err")"
	"$S" push "$work/dir2" "$(snap sealed b)" --store "$(store sealed)" "${K[@]}" --label runsc.sha256=bbbb --parent "$(snap sealed a)" \
		--json >"$work/out" 2>"$work/err" && ok || bad "$part: push b: $(cat "$work/err")"
	expect 0 "info b" "$S" info "$(snap sealed b)" --store "$(store sealed)" "${K[@]}" --json
	[ "$($PY -c 'import json,sys; j=json.load(open(sys.argv[1])); print(j["labels"]["runsc.sha256"], j["dedup_bytes"] > 0)' "$work/out")" = "bbbb True" ] &&
		ok || bad "$part: info b: $(cat "$work/out")"

	# ------------------------------------------------------------ cache
	# The node cache holds pack bytes as the store does: a sealed store's
	# stay sealed there (a plain store's show the markers), and a block
	# changed in the cache fails its tag and is fetched again, never used.
	local C="$work/$part.cache" CP="$work/$part.cache-plain" f
	mkdir -m 700 "$C" "$CP"
	expect 0 "pull through the cache" "$S" pull "$(snap sealed a)" --store "$(store sealed)" "$work/$part.c1" "${K[@]}" --cache "$C" --quiet
	diff -r "$dir" "$work/$part.c1" >/dev/null && ok || bad "$part: pulled through the cache differs"
	expect 0 "plain pull through a cache" "$S" pull "$(snap plain a)" --store "$(store plain)" "$work/$part.c2" --cache "$CP" --quiet
	n=$($PY "$SCAN" markers MRK "$CP:*")
	[ "$n" -gt 20 ] && ok || bad "$part: a plain store's cache shows only $n markers: the scan cannot fail"
	n=$($PY "$SCAN" markers MRK "$C:*")
	[ "$n" = 0 ] && ok || bad "$part: a sealed store's cache shows $n markers"
	# (Its blocks: the cache's own bookkeeping, a few words of offsets and
	# sizes, matches any image's zero-heavy pages by chance.)
	n=$($PY "$SCAN" substrings "$dir/memory-of-tenant-7.img" "$C/blocks:*")
	[ "$n" = 0 ] && ok || bad "$part: a sealed store's cache blocks show $n 17-byte sequences of the image"
	n=0
	for f in $(find "$C/blocks" -type f -size +8k | sort | head -n 6); do
		printf "\xff\x00\xff\x00" | dd of="$f" bs=1 seek=4096 conv=notrunc status=none
		n=$((n + 1))
	done
	[ "$n" -ge 1 ] && ok || bad "$part: no cache block to damage"
	expect 0 "pull through damaged cache blocks" "$S" pull "$(snap sealed a)" --store "$(store sealed)" "$work/$part.c3" "${K[@]}" --cache "$C" --quiet
	diff -r "$dir" "$work/$part.c3" >/dev/null && ok || bad "$part: pulled through damaged blocks differs"
	for f in $(find "$C/blocks" -type f -size +8k | sort | head -n 3); do
		printf "\xff\x00\xff\x00" | dd of="$f" bs=1 seek=6000 conv=notrunc status=none
	done
	expect 0 "verify through damaged cache blocks" "$S" verify "$(snap sealed a)" --store "$(store sealed)" "${K[@]}" --cache "$C" --quiet
	"$S" cat "$(snap sealed a)" --store "$(store sealed)" memory-of-tenant-7.img "${K[@]}" --cache "$C" --quiet 2>"$work/err" |
		cmp -s - "$dir/memory-of-tenant-7.img" && ok || bad "$part: cat through damaged blocks: $(cat "$work/err")"
	rm -rf "$C" "$CP" "$work/$part.c1" "$work/$part.c2" "$work/$part.c3"

	# ------------------------------------------------------------ tamper
	local pk
	O "$(base sealed)" get a/manifest "$work/ma"
	O "$(base sealed)" get b/manifest "$work/mb"
	# Swapped between names: a's name now holds b's manifest (with b's
	# runsc digest, the record ateom would fetch runsc by), and back.
	O "$(base sealed)" put "$work/mb" a/manifest
	O "$(base sealed)" put "$work/ma" b/manifest
	DEST="$work/$part.t" expect 4 "manifests swapped: pull" "$S" pull "$(snap sealed a)" --store "$(store sealed)" "$work/$part.t" "${K[@]}" --quiet
	grep -q "authenticate" "$work/err" && ok || bad "$part: swap message: $(cat "$work/err")"
	DEST="$work/$part.t" expect 4 "manifests swapped: pull b" "$S" pull "$(snap sealed b)" --store "$(store sealed)" "$work/$part.t" "${K[@]}" --quiet
	expect 4 "manifests swapped: verify" "$S" verify "$(snap sealed a)" --store "$(store sealed)" "${K[@]}" --quiet
	expect 4 "manifests swapped: cat" "$S" cat "$(snap sealed a)" --store "$(store sealed)" memory-of-tenant-7.img "${K[@]}" --quiet
	expect 4 "manifests swapped: info (the runsc digest)" "$S" info "$(snap sealed a)" --store "$(store sealed)" "${K[@]}" --json
	O "$(base sealed)" put "$work/ma" a/manifest
	O "$(base sealed)" put "$work/mb" b/manifest
	# Replayed under another name.
	O "$(base sealed)" put "$work/ma" x/manifest
	DEST="$work/$part.t" expect 4 "replayed under another name" "$S" pull "$(snap sealed x)" --store "$(store sealed)" "$work/$part.t" "${K[@]}" --quiet
	# Cut short, at the end and inside its header.
	head -c "$(($(stat -c %s "$work/ma") - 1))" "$work/ma" >"$work/mcut"
	O "$(base sealed)" put "$work/mcut" x/manifest
	DEST="$work/$part.t" expect 4 "manifest cut by one byte" "$S" pull "$(snap sealed x)" --store "$(store sealed)" "$work/$part.t" "${K[@]}" --quiet
	head -c 40 "$work/ma" >"$work/mcut"
	O "$(base sealed)" put "$work/mcut" a/manifest
	DEST="$work/$part.t" expect 4 "manifest cut to 40 bytes" "$S" pull "$(snap sealed a)" --store "$(store sealed)" "$work/$part.t" "${K[@]}" --quiet
	# A byte flipped: in the clear pack list, and in the sealed body.
	for off in 100 -20; do
		O "$(base sealed)" put "$work/ma" a/manifest
		O "$(base sealed)" flip a/manifest "$off"
		DEST="$work/$part.t" expect 4 "manifest byte $off flipped" "$S" pull "$(snap sealed a)" --store "$(store sealed)" "$work/$part.t" "${K[@]}" --quiet
		expect 4 "manifest byte $off flipped: verify" "$S" verify "$(snap sealed a)" --store "$(store sealed)" "${K[@]}" --quiet
	done
	O "$(base sealed)" put "$work/ma" a/manifest
	# A byte of a frame, in the middle of every pack (so that cat's file
	# meets one).
	local p i=0
	for p in $(O "$(store sealed)" ls packs/); do
		O "$(store sealed)" get "$p" "$work/pk.$i" &&
			O "$(store sealed)" flip "$p" $(($(stat -c %s "$work/pk.$i") / 2))
		i=$((i + 1))
	done
	DEST="$work/$part.t" expect 4 "frame byte flipped: pull" "$S" pull "$(snap sealed a)" --store "$(store sealed)" "$work/$part.t" "${K[@]}" --quiet
	grep -q "does not authenticate" "$work/err" && ok || bad "$part: frame message: $(cat "$work/err")"
	expect 4 "frame byte flipped: verify" "$S" verify "$(snap sealed a)" --store "$(store sealed)" "${K[@]}" --quiet
	expect 4 "frame byte flipped: cat" "$S" cat "$(snap sealed a)" --store "$(store sealed)" memory-of-tenant-7.img "${K[@]}" --quiet
	i=0
	for p in $(O "$(store sealed)" ls packs/); do
		O "$(store sealed)" put "$work/pk.$i" "$p"
		i=$((i + 1))
	done
	pk=$(O "$(store sealed)" ls packs/ | head -1)
	O "$(store sealed)" get "$pk" "$work/pk"
	# A byte of a pack's sealed index: pulls never read it; check finds it,
	# and a push does not reuse the pack's chunks through it.
	O "$(store sealed)" flip "$pk" -30
	expect 4 "pack index flipped: check" "$S" check --store "$(store sealed)" "${K[@]}" --quiet
	O "$(store sealed)" put "$work/pk" "$pk"
	# A byte of an index object: check finds it; a push skips it and reads
	# the packs it listed themselves (dedup still holds).
	local ik
	ik=$(O "$(store sealed)" ls index/ | head -1)
	O "$(store sealed)" get "$ik" "$work/ik"
	O "$(store sealed)" flip "$ik" 70
	expect 4 "index object flipped: check" "$S" check --store "$(store sealed)" "${K[@]}" --quiet
	"$S" push "$dir" "$(snap sealed c)" --store "$(store sealed)" "${K[@]}" --json >"$work/out" 2>"$work/err" &&
		[ "$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["new_raw_bytes"])' "$work/out")" = 0 ] &&
		ok || bad "$part: push past a forged index object: $(cat "$work/out" "$work/err")"
	O "$(store sealed)" put "$work/ik" "$ik"
	# Another store (the same key file, its own id): its pack under one of
	# this store's names, and its manifest under one of its names.
	"$S" init --store "$(store other)" "${K[@]}" --quiet
	"$S" push "$dir" "$(snap other a)" --store "$(store other)" "${K[@]}" --quiet 2>"$work/err" || bad "$part: push other: $(cat "$work/err")"
	local opk
	opk=$(O "$(store other)" ls packs/ | head -1)
	O "$(store other)" get "$opk" "$work/opk"
	# Each planted pack is the other store's pack repeated to the length of
	# the one it replaces, so every range a pull reads lies inside it and
	# what stops the pull is authentication, not a short object.
	i=0
	for p in $(O "$(store sealed)" ls packs/); do
		O "$(store sealed)" get "$p" "$work/pk.$i" || bad "$part: get $p"
		$PY -c 'import sys; o = open(sys.argv[1], "rb").read(); n = int(sys.argv[2]); open(sys.argv[3], "wb").write((o * (n // len(o) + 1))[:n])' \
			"$work/opk" "$(stat -c %s "$work/pk.$i")" "$work/opk.$i"
		O "$(store sealed)" put "$work/opk.$i" "$p"
		i=$((i + 1))
	done
	DEST="$work/$part.t" expect 4 "another store's pack" "$S" pull "$(snap sealed a)" --store "$(store sealed)" "$work/$part.t" "${K[@]}" --quiet
	grep -q "does not authenticate" "$work/err" && ok || bad "$part: another store's pack: $(cat "$work/err")"
	i=0
	for p in $(O "$(store sealed)" ls packs/); do
		O "$(store sealed)" put "$work/pk.$i" "$p"
		i=$((i + 1))
	done
	O "$(base other)" get a/manifest "$work/mo"
	O "$(base sealed)" put "$work/mo" y/manifest
	DEST="$work/$part.t" expect 7 "another store's manifest, this key" "$S" pull "$(snap sealed y)" --store "$(store sealed)" "$work/$part.t" "${K[@]}" --quiet
	"$S" init --store "$(store third)" --key-file "$work/k2" --quiet
	"$S" push "$dir" "$(snap third a)" --store "$(store third)" --key-file "$work/k2" --quiet 2>"$work/err" || bad "$part: push third: $(cat "$work/err")"
	O "$(base third)" get a/manifest "$work/m3"
	O "$(base sealed)" put "$work/m3" y/manifest
	DEST="$work/$part.t" expect 4 "another store's manifest, another key" "$S" pull "$(snap sealed y)" --store "$(store sealed)" "$work/$part.t" "${K[@]}" --quiet
	# And the store is intact after all of it (the planted manifests gone).
	O "$(base sealed)" rm x/manifest
	O "$(base sealed)" rm y/manifest
	expect 0 "intact after the tampering" "$S" check --store "$(store sealed)" --deep "${K[@]}" --quiet
	expect 0 "pull a after the tampering" "$S" pull "$(snap sealed a)" --store "$(store sealed)" "$work/$part.r2" "${K[@]}" --quiet
	diff -r "$dir" "$work/$part.r2" >/dev/null && ok || bad "$part: a differs after the tampering"
	echo "pass=$pass fails=$fails" >"$work/counts.$part"
}

if [ "$part" = s3 ]; then
	cd "$work" && run_part
	exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/ss-sealed.XXXXXX")"
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
export work
cd "$work"
head -c 32 /dev/urandom >k1 && head -c 32 /dev/urandom >k2 && chmod 600 k1 k2
# A runsc-like directory whose file names are secrets, and a marker in
# every page of its image.
"$GEN" --dir-layout runsc --size 6M --seed 71 --out gen --quiet || { echo "genimage failed"; exit 1; }
mkdir tenant-dir
cp gen/pages.img tenant-dir/memory-of-tenant-7.img && cp gen/pages_meta.img tenant-dir/ &&
	cp gen/checkpoint.img tenant-dir/ || exit 1
$PY "$SCAN" plant tenant-dir/memory-of-tenant-7.img MRK
"$GEN" --dirty 0.2 --base tenant-dir/memory-of-tenant-7.img --seed 72 --out dir2-img --quiet &&
	mkdir dir2 && cp dir2-img dir2/memory-of-tenant-7.img && cp tenant-dir/pages_meta.img dir2/ || exit 1
mkdir -p local/plain local/sealed local/other local/third

part=local
run_part

s3_part "$SELF" "$S" "$GEN"
P=$(total pass) F=$(total fails)
echo "sealed: $P passed, $F failed$s3note"
[ "$F" -eq 0 ]
