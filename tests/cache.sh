#!/usr/bin/env bash
# The node cache (docs/DESIGN.md, "The node cache") against a real S3
# server (s3rver on loopback, with tests/faultproxy.py in front for the
# part that needs a fetch to hang). Skips (77) without s3rver; the full
# disk part needs root (a tmpfs) and is skipped alone without it. Under
# SNAPSTREAM_TEST_STRICT both fail instead (tests/strict.sh).
# Usage: cache.sh <snapstream> <ss-genimage>
#
#  - a pull through an empty cache, then again: byte-exact both times, the
#    second fetches no pack byte from the store (--json), cat and verify
#    too; SNAPSTREAM_CACHE is the flag's default and --no-cache wins
#  - write-through: a push with the cache, then a pull with it fetches no
#    pack byte
#  - a pull starts from the manifest the cache kept: a name pushed again
#    pulls what the store holds now, a removed snapshot is not pulled, and
#    with the manifest GET held by the proxy every byte is written but
#    nothing is published, and the pull fails with the error of the store
#  - restored here, checkpointed here (a push with the cache whose image
#    holds chunks only other sandboxes' packs have), restored here again:
#    pull and cat fetch no pack byte
#  - 8 concurrent pulls of related snapshots through one empty cache:
#    byte-exact, every block fetched from the store once (misses ==
#    blocks held), at most 1.15x the packs' bytes fetched
#  - SIGKILL of a pull while its fetches hang (the proxy stalls them):
#    the next pull neither waits for the dead one's blocks nor finds a
#    half-written one, and is byte-exact
#  - corrupted blocks (a flipped byte, a truncated file): pull, cat and
#    verify succeed byte-exact, fetching those ranges again, and the
#    blocks are whole again afterwards
#  - eviction under pressure: 4 concurrent pulls through a 16 MiB cache
#    holding less than any one of them needs: byte-exact, the cache within
#    its bound, blocks evicted
#  - a full disk under the cache directory (a 6 MiB tmpfs; root): pulls
#    succeed from the store, the cache stays within the tmpfs, and a cache
#    that cannot even be created on a full disk is no error either
#  - in front of a local store: a pull makes the requests it makes without
#    the cache, and a push packs as into that store
#  - usage: bad --cache-size values (exit 2), a directory others may
#    write (refused), `cache` reporting and --prune, a directory that is no
#    cache (exit 3)
set -uo pipefail
S="$(realpath "$1")"
GEN="$(realpath "$2")"
HERE="$(dirname "$(realpath "$0")")"
S3RVER="$HERE/s3/node_modules/s3rver/bin/s3rver.js"
. "$HERE/strict.sh"
if ! command -v node >/dev/null || [ ! -f "$S3RVER" ]; then
	cannot_run cache "s3rver is not installed (scripts/setup.sh installs it)"
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/ss-cache.XXXXXX")"
cleanup() {
	mountpoint -q "$work/full" 2>/dev/null && { umount "$work/full" 2>/dev/null || umount -l "$work/full"; }
	[ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
"$GEN" --size 48M --seed 61 --out golden --quiet || exit 1
for i in 0 1 2 3 4 5 6 7 8; do
	"$GEN" --dirty 0.03 --base golden --seed $((70 + i)) --out "a$i" --quiet || exit 1
done
"$GEN" --size 24M --seed 62 --out fresh --quiet || exit 1
"$GEN" --size 48M --seed 64 --out other --quiet || exit 1
# a8n: the next checkpoint of a8 holding stretches that a1 and a2 (other
# sandboxes of the same golden image) dirtied the same way, so some of its
# chunks are in their packs only, and pages of its own.
/usr/bin/python3 - <<'PY' || exit 1
import random
P = 4096
g = open("golden", "rb").read()
a8 = bytearray(open("a8", "rb").read())
n, copied = len(g) // P, 0
for src in (open("a1", "rb").read(), open("a2", "rb").read()):
    p = 16
    while p < n - 16 and copied < 12:
        if src[p * P:(p + 1) * P] != g[p * P:(p + 1) * P]:
            q = p
            while q < n and src[q * P:(q + 1) * P] != g[q * P:(q + 1) * P]:
                q += 1
            lo, hi = (p - 16) * P, (q + 16) * P
            if hi <= len(g) and a8[lo:hi] == g[lo:hi] and src[lo:p * P] == g[lo:p * P] \
                    and src[q * P:hi] == g[q * P:hi]:
                a8[lo:hi] = src[lo:hi]
                copied += 1
            p = q + 16
        p += 1
assert copied >= 4, copied
r = random.Random(5)
for _ in range(64):
    p = r.randrange(n)
    a8[p * P:(p + 1) * P] = r.randbytes(P)
open("a8n", "wb").write(a8)
PY
export S HERE GEN work
ROOT=0
[ "$(id -u)" -eq 0 ] && ROOT=1
export ROOT

/usr/bin/python3 "$HERE/s3/harness.py" \
	--proxy "--faults stall --rate 0.5 --stall 25 --match ^GET\\s.*/packs/" -- bash -c '
	. "$HERE/asserts.sh"
	. "$HERE/strict.sh"
	PROXY="$AWS_ENDPOINT_URL"
	export AWS_ENDPOINT_URL="$SS_S3_DIRECT_ENDPOINT"
	B="s3://$SS_S3_BUCKET"
	jget() { /usr/bin/python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }
	ss() { timeout -k 5 120 "$S" "$@"; }
	pack_bytes() {
		/usr/bin/aws --endpoint-url "$AWS_ENDPOINT_URL" s3 ls --recursive "$B/.snapstream/packs/" |
			awk "{n += \$3} END {print n + 0}"
	}

	ss push golden "$B/golden" --quiet || { bad "push golden"; exit 1; }
	for i in 0 1 2 3 4 5 6 7; do
		ss push "a$i" "$B/a$i" --parent "$B/golden" --quiet || bad "push a$i"
	done

	# --- a pull, and the same pull again
	C="$work/c1"
	expect_rc 0 "pull through an empty cache" ss pull "$B/a0" out0 --cache "$C" --json
	cmp -s a0 out0 && ok || bad "pull through an empty cache is not byte-exact"
	# A block two ranges share, fetched for the first, may serve the
	# second from the cache once it landed (slow builds issue ranges later).
	[ "$(jget out "j[\"transferred_bytes\"] > 0 and j[\"cache_bytes\"] * 8 < j[\"transferred_bytes\"]")" = True ] && ok ||
		bad "the first pull should fetch everything: $(cat out)"
	expect_rc 0 "pull again" ss pull "$B/a0" out0b --cache "$C" --json
	cmp -s a0 out0b && ok || bad "the cached pull is not byte-exact"
	[ "$(jget out "j[\"transferred_bytes\"] == 0 and j[\"cache_bytes\"] > 0")" = True ] &&
		ok "a pull again fetches no pack byte" || bad "pull again: $(cat out)"
	# Nor a manifest byte: the store is asked with the ETag the cache kept
	# beside the manifest and answers 304. Seen through a proxy that only
	# logs what it passes on (to the cache, another endpoint is another
	# store: the first pull through it fetches everything).
	/usr/bin/python3 "$HERE/faultproxy.py" --upstream "${AWS_ENDPOINT_URL#http://}" --rate 0 \
		--log-all --log "$work/lp.log" >"$work/lp.out" 2>&1 &
	lp=$!
	for _ in $(seq 50); do grep -q listening "$work/lp.out" && break; sleep 0.1; done
	LP="http://$(grep -o "127.0.0.1:[0-9]*" "$work/lp.out")"
	for k in 1 2; do
		AWS_ENDPOINT_URL="$LP" expect_rc 0 "pull $k through a logging proxy" \
			ss pull "$B/a0" out0p --cache "$C" --force
		cmp -s a0 out0p && ok || bad "pull $k through a logging proxy is not byte-exact"
	done
	kill "$lp"
	wait "$lp" 2>/dev/null
	n=$(grep -Ec "^forward [0-9]+ GET /[^ ]*/a0/manifest " "$work/lp.log")
	grep -Eq "^forward 304 GET /[^ ]*/a0/manifest 0$" "$work/lp.log" && [ "$n" = 2 ] &&
		ok "a pull again asks for the manifest with its ETag: 304, no byte" ||
		bad "manifest GETs: $(grep manifest "$work/lp.log" | tail -3)"
	rm -f out0p
	expect_rc 0 "cat through the cache" ss cat "$B/a0" --cache "$C" --json
	cmp -s a0 out && ok || bad "cat through the cache is not byte-exact"
	[ "$(jget err "j[\"transferred_bytes\"]")" = 0 ] && ok || bad "cat fetched: $(cat err)"
	expect_rc 0 "verify through the cache" ss verify "$B/a0" --cache "$C" --json
	[ "$(jget out "j[\"transferred_bytes\"]")" = 0 ] && ok || bad "verify fetched: $(cat out)"
	SNAPSTREAM_CACHE="$C" ss pull "$B/a0" out0c --json >out 2>err
	[ "$(jget out "j[\"cache_bytes\"] > 0")" = True ] && ok "SNAPSTREAM_CACHE" || bad "env: $(cat out err)"
	SNAPSTREAM_CACHE="$C" ss pull "$B/a0" out0d --json --no-cache >out 2>err
	[ "$(jget out "j[\"cache_bytes\"] == 0 and j[\"transferred_bytes\"] > 0")" = True ] &&
		ok "--no-cache" || bad "--no-cache: $(cat out err)"
	rm -f out0 out0b out0c out0d

	# --- write-through: what a push stores, a pull here finds
	W="$work/cw"
	expect_rc 0 "push with the cache" ss push fresh "$B/fresh" --cache "$W"
	expect_rc 0 "pull what was pushed" ss pull "$B/fresh" outf --cache "$W" --json
	cmp -s fresh outf && ok || bad "pull of the pushed snapshot is not byte-exact"
	[ "$(jget out "j[\"transferred_bytes\"]")" = 0 ] && ok "a pushed snapshot pulls from the cache" ||
		bad "write-through: $(cat out)"
	rm -f outf

	# --- a pull starts from the manifest the cache kept for the name and
	# publishes only what the manifest of the store says: a name pushed again,
	# a snapshot removed, a manifest that does not come
	G="$work/cg"
	ss push other "$B/g" --quiet || bad "push g"
	expect_rc 0 "pull g through an empty cache" ss pull "$B/g" og --cache "$G"
	ss push fresh "$B/g" --force --quiet || bad "push g again"
	expect_rc 0 "pull g after it was pushed again" ss pull "$B/g" og2 --cache "$G"
	cmp -s fresh og2 && ok "a name pushed again pulls what the store holds now" ||
		bad "a name pushed again pulled what the cache kept"
	expect_rc 0 "pull g again" ss pull "$B/g" og3 --cache "$G" --json
	cmp -s fresh og3 && [ "$(jget out "j[\"transferred_bytes\"]")" = 0 ] && ok ||
		bad "pull g again: $(cat out)"
	ls og.ss-tmp-* og2.ss-tmp-* og3.ss-tmp-* >/dev/null 2>&1 && bad "a pull left a temporary file" || ok
	expect_rc 0 "rm g" ss rm "$B/g"
	ss pull "$B/g" og4 --cache "$G" >out 2>err
	[ $? -ne 0 ] && grep -q "no snapshot" err && ok "a removed snapshot is not pulled from the cache" ||
		bad "pull of a removed snapshot: $(cat err)"
	ls og4* >/dev/null 2>&1 && bad "the pull of a removed snapshot left $(ls og4*)" || ok
	rm -f og og2 og3
	# Through a proxy that answers the first GET of the manifest and holds
	# every later one: the pull writes every byte from the kept manifest
	# while the store has not answered, then fails with the error of the store
	# and leaves nothing.
	ss push fresh "$B/h" --quiet || bad "push h"
	/usr/bin/python3 "$HERE/faultproxy.py" --upstream "${AWS_ENDPOINT_URL#http://}" --rate 1 \
		--skip 1 --faults stall --stall 40 --match "^GET\s.*/h/manifest" --log "$work/hp.log" \
		>"$work/hp.out" 2>&1 &
	hp=$!
	for _ in $(seq 50); do grep -q listening "$work/hp.out" && break; sleep 0.1; done
	HP="http://$(grep -o "127.0.0.1:[0-9]*" "$work/hp.out")"
	AWS_ENDPOINT_URL="$HP" ss pull "$B/h" oh --cache "$G" --quiet || bad "pull h through the proxy"
	rm -f oh
	AWS_ENDPOINT_URL="$HP" SNAPSTREAM_STALL_SECONDS=20 SNAPSTREAM_RETRY_MAX=1 \
		"$S" pull "$B/h" oh --cache "$G" --quiet 2>err &
	victim=$!
	seen=0
	for _ in $(seq 150); do
		for f in oh.ss-tmp-*; do
			[ -f "$f" ] && cmp -s fresh "$f" && seen=1
		done
		[ "$seen" = 1 ] && break
		sleep 0.1
	done
	[ "$seen" = 1 ] && ok "every byte was written before the store sent its manifest" ||
		bad "no complete temporary file while the manifest was held"
	grep -q "stall.*h/manifest" "$work/hp.log" && ok || bad "the proxy held no manifest GET"
	[ -e oh ] && bad "the pull published before the store sent its manifest" || ok
	wait "$victim" && bad "the pull succeeded without the manifest of the store" ||
		{ grep -q "manifest" err && ok "it fails with the error of the store" || bad "error: $(cat err)"; }
	ls oh* >/dev/null 2>&1 && bad "the failed pull left $(ls oh*)" || ok
	kill "$hp" 2>/dev/null
	wait "$hp" 2>/dev/null
	# A kept manifest damaged on disk is never started from: a byte of
	# every block but the names (64-byte files) flipped.
	expect_rc 0 "pull h" ss pull "$B/h" oh --cache "$G"
	rm -f oh
	n=0
	for f in $(find "$G/blocks" -type f -size +1k); do
		printf "\xff" | dd of="$f" bs=1 seek=100 conv=notrunc status=none
		n=$((n + 1))
	done
	expect_rc 0 "pull h through its damaged blocks" ss pull "$B/h" oh --cache "$G" --json
	cmp -s fresh oh && ok "a damaged kept manifest and $n damaged blocks are never served" ||
		bad "pull through a damaged kept manifest differs"
	expect_rc 0 "pull h again" ss pull "$B/h" oh2 --cache "$G" --json
	cmp -s fresh oh2 && [ "$(jget out "j[\"transferred_bytes\"]")" = 0 ] && ok ||
		bad "after the damaged manifest: $(cat out)"
	rm -f oh oh2

	# --- restored here, checkpointed here, restored here again: its
	# chunks found in packs other nodes wrote (a1, a2) are brought into the
	# cache by the push, and no gap between frames is read from the store
	R="$work/cr"
	ss push a8 "$B/a8" --parent "$B/golden" --quiet || bad "push a8"
	expect_rc 0 "restore a8 through an empty cache" ss pull "$B/a8" out8 --cache "$R"
	expect_rc 0 "push its next checkpoint with the cache" \
		ss push a8n "$B/a8n" --parent "$B/a8" --cache "$R"
	expect_rc 0 "cat the next checkpoint here" ss cat "$B/a8n" --cache "$R" --json
	cmp -s a8n out && ok || bad "cat of the next checkpoint is not byte-exact"
	[ "$(jget err "j[\"transferred_bytes\"]")" = 0 ] && ok ||
		bad "cat of a checkpoint pushed here fetched pack bytes: $(cat err)"
	expect_rc 0 "restore the next checkpoint here" ss pull "$B/a8n" out8n --cache "$R" --json
	cmp -s a8n out8n && ok || bad "restore of the next checkpoint is not byte-exact"
	[ "$(jget out "j[\"transferred_bytes\"]")" = 0 ] &&
		ok "a checkpoint pushed here restores from the cache alone" ||
		bad "restore of a checkpoint pushed here fetched pack bytes: $(cat out)"
	rm -f out8 out8n

	# --- 8 pulls at once through one empty cache
	P="$work/cp"
	pids=()
	for i in 0 1 2 3 4 5 6 7; do
		ss pull "$B/a$i" "o$i" --cache "$P" --quiet 2>"e$i" & pids+=($!)
	done
	n=0
	for i in 0 1 2 3 4 5 6 7; do
		wait "${pids[$i]}" || bad "concurrent pull a$i: $(cat "e$i")"
		cmp -s "a$i" "o$i" && n=$((n + 1))
	done
	[ "$n" = 8 ] && ok "8 concurrent cached pulls byte-exact" || bad "only $n of 8 concurrent pulls byte-exact"
	rm -f o?
	expect_rc 0 "cache --json" ss cache "$P" --json
	packs=$(pack_bytes)
	# Entries are the blocks of packs and, per snapshot, the manifest kept
	# for it (its bytes in blocks, and its name).
	blk=$(jget out "j[\"block_bytes\"]")
	[ "$blk" = 262112 ] && ok "a new cache has 256 KiB blocks" || bad "blocks of a new cache: $blk bytes"
	mblocks=0
	for i in 0 1 2 3 4 5 6 7; do
		ss info "$B/a$i" --json >info.json 2>/dev/null || bad "info a$i"
		mblocks=$((mblocks + $(jget info.json "(j[\"manifest_bytes\"] + $blk - 1) // $blk + 1")))
	done
	rm -f info.json
	[ "$(jget out "j[\"misses\"] + $mblocks == j[\"entries\"] and j[\"evicted\"] == 0")" = True ] &&
		ok "every block fetched once" || bad "blocks fetched more than once: $(cat out), $mblocks manifest blocks"
	[ "$(jget out "j[\"fetched_bytes\"] <= 1.15 * $packs and j[\"hits\"] > 0")" = True ] &&
		ok "8 pulls fetched $(jget out "round(j[\"fetched_bytes\"] / $packs, 3)")x the packs" ||
		bad "8 concurrent pulls fetched too much: $(cat out), packs $packs"

	# --- SIGKILL while fetches hang: locks die with the process
	K="$work/ck"
	AWS_ENDPOINT_URL="$PROXY" "$S" pull "$B/a1" ok1 --cache "$K" --quiet 2>/dev/null &
	victim=$!
	sleep 2
	if kill -0 "$victim" 2>/dev/null; then
		kill -9 "$victim"
		wait "$victim" 2>/dev/null
		ok "a pull killed while its fetches hang"
	else
		bad "the pull through the stalling proxy was not running after 2 s"
	fi
	grep -q stall "$SS_PROXY_LOG" && ok || bad "the proxy stalled nothing"
	t0=$(date +%s)
	expect_rc 0 "pull after the kill" ss pull "$B/a1" ok1 --cache "$K" --json
	t1=$(date +%s)
	cmp -s a1 ok1 && ok || bad "the pull after the kill is not byte-exact"
	[ $((t1 - t0)) -lt 20 ] && ok "it did not wait for the dead pull ($((t1 - t0)) s)" ||
		bad "the pull after the kill took $((t1 - t0)) s"
	expect_rc 0 "pull once more" ss pull "$B/a1" ok1b --cache "$K" --json
	cmp -s a1 ok1b && [ "$(jget out "j[\"transferred_bytes\"]")" = 0 ] && ok ||
		bad "after the kill the cache is not whole: $(cat out)"
	rm -f ok1 ok1b

	# --- corrupted blocks are dropped and fetched again, never served
	n=0
	for f in $(find "$C/blocks" -type f | sort | head -n 6); do
		printf "\xff\x00\xff\x00" | dd of="$f" bs=1 seek=4096 conv=notrunc status=none
		n=$((n + 1))
	done
	f=$(find "$C/blocks" -type f | sort | tail -n 1)
	truncate -s 100 "$f"
	[ "$n" = 6 ] && ok || bad "found $n blocks to damage"
	expect_rc 0 "pull through damaged blocks" ss pull "$B/a0" outd --cache "$C" --json
	cmp -s a0 outd && ok "damaged blocks are never served" || bad "pull through damaged blocks differs"
	[ "$(jget out "j[\"transferred_bytes\"] > 0")" = True ] && ok || bad "nothing fetched again: $(cat out)"
	expect_rc 0 "pull once the blocks were replaced" ss pull "$B/a0" oute --cache "$C" --json
	cmp -s a0 oute && [ "$(jget out "j[\"transferred_bytes\"]")" = 0 ] && ok "damaged blocks were replaced" ||
		bad "after the refetch: $(cat out)"
	for f in $(find "$C/blocks" -type f | sort | head -n 3); do
		printf "\xff\x00\xff\x00" | dd of="$f" bs=1 seek=8192 conv=notrunc status=none
	done
	expect_rc 0 "verify through damaged blocks" ss verify "$B/a0" --cache "$C"
	ss cat "$B/a0" --cache "$C" >outc 2>err && cmp -s a0 outc && ok "cat through damaged blocks" ||
		bad "cat through damaged blocks: $(cat err)"
	rm -f outd oute outc

	# --- eviction while pulls run
	E="$work/ce"
	pids=()
	for i in 2 3 4 5; do
		ss pull "$B/a$i" "o$i" --cache "$E" --cache-size 16M --quiet 2>"e$i" & pids+=($!)
	done
	n=0
	for k in 0 1 2 3; do
		i=$((k + 2))
		wait "${pids[$k]}" || bad "pull a$i under pressure: $(cat "e$i")"
		cmp -s "a$i" "o$i" && n=$((n + 1))
	done
	[ "$n" = 4 ] && ok "4 pulls through a 16 MiB cache byte-exact" || bad "only $n of 4 pulls byte-exact under pressure"
	rm -f o?
	used=$(du -sb "$E/blocks" | cut -f1)
	[ "$used" -le $(( (16 + 4) << 20 )) ] && ok "the cache holds $((used >> 20)) MiB of its 16" ||
		bad "the cache grew to $used bytes past its 16 MiB bound"
	expect_rc 0 "cache --json after pressure" ss cache "$E" --json
	[ "$(jget out "j[\"evicted\"] > 0 and j[\"bytes\"] <= 16 << 20")" = True ] && ok ||
		bad "no eviction reported: $(cat out)"

	# --- a full disk under the cache
	if [ "$ROOT" = 1 ] && mkdir -p "$work/full" && mount -t tmpfs -o size=6m ss-cache "$work/full" 2>/dev/null; then
		expect_rc 0 "pull with the cache on a 6 MiB tmpfs" ss pull "$B/a6" o6 --cache "$work/full/c" --json
		cmp -s a6 o6 && ok "a full cache disk does not fail the pull" || bad "pull onto a full cache disk differs"
		held=$(find "$work/full/c/blocks" -type f -printf "%s\n" | awk "{n += \$1} END {print n + 0}")
		[ "$held" -gt 0 ] && [ "$held" -le $((6 << 20)) ] && ok "the cache filled the 6 MiB disk ($held bytes)" ||
			bad "the cache on a 6 MiB disk holds $held bytes"
		expect_rc 0 "again" ss pull "$B/a6" o6b --cache "$work/full/c"
		cmp -s a6 o6b && ok || bad "the second pull onto a full cache disk differs"
		dd if=/dev/zero of="$work/full/filler" bs=1M count=16 status=none 2>/dev/null
		expect_rc 0 "pull with a cache that cannot be created" ss pull "$B/a7" o7 --cache "$work/full/new/c"
		cmp -s a7 o7 && ok "a cache that cannot be created is no error" || bad "pull without room for a cache differs"
		rm -f o6 o6b o7
	elif strict; then
		bad "the full disk part needs root and a tmpfs (SNAPSTREAM_TEST_STRICT)"
	else
		echo "SKIP: the full disk part needs root and a tmpfs"
	fi

	# --- usage
	# "1 ": a space is no suffix (it once read as 1 PiB).
	for v in 0 1K abc -5 15M 99999999T "1 " "1 G"; do
		expect_rc 2 "--cache-size $v" ss pull "$B/a0" o --cache "$C" --cache-size "$v"
		grep -q -- "--cache-size" err && ok || bad "--cache-size $v: $(cat err)"
	done
	SNAPSTREAM_CACHE_SIZE=abc ss pull "$B/a0" o --cache "$C" >out 2>err
	[ $? = 2 ] && grep -q SNAPSTREAM_CACHE_SIZE err && ok || bad "SNAPSTREAM_CACHE_SIZE=abc: $(cat err)"
	mkdir -p "$work/open" && chmod 0777 "$work/open"
	expect_rc 1 "a cache others may write" ss pull "$B/a0" o --cache "$work/open"
	grep -q "may be written by others" err && ok || bad "world-writable cache: $(cat err)"
	mkdir -p "$work/empty"
	expect_rc 3 "cache of a directory that is no cache" ss cache "$work/empty"
	expect_rc 0 "cache --prune 0" ss cache "$C" --prune 0 --json
	[ "$(jget out "j[\"pruned\"] > 0 and j[\"entries\"] == 0 and j[\"bytes\"] == 0")" = True ] && ok ||
		bad "prune: $(cat out)"
	expect_rc 0 "cache (text)" ss cache --cache "$C"
	grep -q "0 block(s)" out && ok || bad "cache text: $(cat out)"

	# --- in front of a local store, a pull reads as it does from the
	# store itself (request sizes for a local store, not an object
	# store), and a push packs as into that store
	L="$work/local"
	ss push a1 "$L/a1" --quiet || bad "push to a local store"
	expect_rc 0 "pull from the local store" ss pull "$L/a1" ol1 --json
	plain=$(jget out "j[\"requests\"]")
	expect_rc 0 "pull through an empty cache" ss pull "$L/a1" ol2 --cache "$work/lc" --json
	expect_rc 0 "pull through the filled cache" ss pull "$L/a1" ol3 --cache "$work/lc" --json
	[ "$(jget out "j[\"requests\"]")" = "$plain" ] && [ "$(jget out "j[\"transferred_bytes\"]")" = 0 ] &&
		ok "a cache in front of a local store reads in the same ranges" ||
		bad "local store: $plain requests without the cache, with it: $(cat out)"
	cmp -s a1 ol3 && ok || bad "pull through a cache in front of a local store differs"
	expect_rc 0 "push into the local store with the cache" \
		ss push other "$L/other" --cache "$work/lc" --json
	[ "$(jget out "j[\"packs\"] > 1")" = True ] && ok "packs of a local store size" ||
		bad "push through the cache into a local store: $(cat out)"
	rm -f ol1 ol2 ol3
	asserts_summary cache
'
