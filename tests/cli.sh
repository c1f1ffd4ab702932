#!/usr/bin/env bash
# CLI integration test: the real snapstream binary on real files.
# Usage: cli.sh <snapstream> <ss-genimage>
set -uo pipefail
S="$1"
GEN="$2"
PY=/usr/bin/python3
HERE="$(dirname "$(realpath "$0")")"
. "$HERE/asserts.sh"
work="$(mktemp -d "${TMPDIR:-/tmp}/ss-cli.XXXXXX")"
trap 'rm -rf "$work"' EXIT
json_field() { $PY -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }

cd "$work"
"$GEN" --size 48M --seed 7 --out img --quiet || { echo "genimage failed"; exit 1; }

# Round trip of one file, with JSON output parsed. A local store never
# loads libcurl (it costs every start ~30 ms) nor, unkeyed, libcrypto
# (~4 ms): the loader's log says so.
LD_DEBUG=libs expect_rc 0 "push" "$S" push img snaps/a --json --no-fsync
grep -q "libcurl" err && bad "a push to a local store loaded libcurl" || ok
grep -q "libcrypto" err && bad "a push to an unkeyed local store loaded libcrypto" || ok
grep -q "libzstd" err && ok || bad "the loader's log names no library (LD_DEBUG=libs unsupported?)"
cp out push.json
[ "$(json_field push.json ok)" = "True" ] && ok || bad "push json ok"
[ "$(json_field push.json logical_bytes)" = "$((48 << 20))" ] && ok || bad "logical_bytes"
zb=$(json_field push.json zero_bytes)
[ "$zb" -gt 0 ] && ok || bad "no zero pages found in a memory-like image"
LD_DEBUG=libs expect_rc 0 "pull" "$S" pull snaps/a restored.img --json --no-fsync
grep -q "libcrypto" err && bad "a pull from an unkeyed local store loaded libcrypto" || ok
grep -q "libzstd" err && ok || bad "the loader's log names no library (pull)"
cmp -s img restored.img && ok || bad "pulled bytes differ"
alloc=$(du -k restored.img | cut -f1)
[ "$alloc" -lt $(((48 << 10) - zb / 1024 + 1024)) ] && ok || bad "restored file is not sparse ($alloc KiB)"

# Same image again: nothing new stored.
expect_rc 0 "warm push" "$S" push img snaps/b --json
[ "$(json_field out new_stored_bytes)" = "0" ] && ok || bad "warm push stored bytes"

# The snapshot exists: refused without --force (exit 1), with a reason.
expect_rc 1 "push onto existing snapshot" "$S" push img snaps/a
grep -q "already exists" err && ok || bad "no reason for refusing: $(cat err)"
expect_rc 0 "forced push" "$S" push img snaps/a --force --quiet

# Pull into an existing directory puts the file inside it.
mkdir into
expect_rc 0 "pull into dir" "$S" pull snaps/a into --quiet
cmp -s img into/img && ok || bad "pull into directory"
expect_rc 1 "pull onto existing file" "$S" pull snaps/a restored.img
expect_rc 0 "pull --force" "$S" pull snaps/a restored.img --force --quiet

# A runsc-style image directory with edge-case files.
mkdir -p ckpt/sub
cp img ckpt/pages.img
head -c 5000 /dev/urandom >ckpt/checkpoint.img
: >ckpt/empty
printf x >ckpt/one
head -c 4095 /dev/zero >ckpt/zeros
head -c 100000 /dev/urandom >ckpt/sub/random
chmod 600 ckpt/pages.img
chmod 755 ckpt/sub/random
expect_rc 0 "push dir" "$S" push ckpt snaps/dir --parent snaps/a --label runsc=test --quiet
expect_rc 0 "pull dir" "$S" pull snaps/dir ckpt-out --quiet
diff -r ckpt ckpt-out >/dev/null && ok || bad "directory round trip differs"
[ "$(stat -c %a ckpt-out/pages.img)" = 600 ] && ok || bad "mode of pages.img"
[ "$(stat -c %a ckpt-out/sub/random)" = 755 ] && ok || bad "mode of sub/random"

# Exit codes: usage 2, not found 3, integrity 4.
expect_rc 2 "no command" "$S"
expect_rc 2 "unknown command" "$S" frobnicate
expect_rc 2 "missing argument" "$S" push img
expect_rc 2 "unknown option" "$S" push img snaps/x --bogus
grep -q -- "--help" err && ok || bad "usage error should point to --help"
expect_rc 2 "bad threads" "$S" push img snaps/x --threads 0
# Sizes out of the chunker's range are usage errors naming the option and
# its range, at once: --chunk-max 3000M once hung (the segment size
# doubled past 2^31 and wrapped), 17592186044417M once wrapped to 1 MiB.
expect_rc 2 "--chunk-max 3000M" timeout 10 "$S" push img snaps/x --chunk-max 3000M
grep -q -- "--chunk-max takes 257 to 1G" err && ok || bad "range not named: $(cat err)"
expect_rc 2 "--chunk-max that wraps when shifted" timeout 10 "$S" push img snaps/x \
	--chunk-max 17592186044417M
grep -q -- "--chunk-max" err && ok || bad "option not named: $(cat err)"
[ ! -e snaps/x ] && ok || bad "a snapshot was pushed with a wrapped --chunk-max"
expect_rc 2 "--chunk-avg past 32 bits" timeout 10 "$S" push img snaps/x --chunk-avg 4294967296
expect_rc 2 "--chunk-avg not a power of two" timeout 10 "$S" push img snaps/x --chunk-avg 100000
grep -q -- "--chunk-avg takes a power of two from 256 to 4M" err && ok || bad "avg range: $(cat err)"
expect_rc 2 "--chunk-min 0" timeout 10 "$S" push img snaps/x --chunk-min 0
expect_rc 2 "--chunk-min -1" timeout 10 "$S" push img snaps/x --chunk-min -1
expect_rc 2 "--chunk-max 2G" timeout 10 "$S" push img snaps/x --chunk-max 2G
expect_rc 2 "--chunk-min above --chunk-avg (the engine's check)" timeout 10 "$S" push img snaps/x \
	--chunk-min 1M --chunk-avg 64K
expect_rc 2 "--threads past long" "$S" push img snaps/x --threads 99999999999999999999
grep -q -- "--threads takes 1..256" err && ok || bad "threads range: $(cat err)"
expect_rc 2 "--zstd-level 20" "$S" push img snaps/x --zstd-level 20
# (In a store of its own: the packs of snaps/ are corrupted below.)
expect_rc 0 "in-range sizes with suffixes" "$S" push img snaps/sz --store sz-store \
	--chunk-avg 256K --chunk-min 64k --chunk-max 1M --quiet --no-fsync
expect_rc 0 "info of the sized push" "$S" info snaps/sz --store sz-store --json
[ "$(json_field out chunking | tr -d ' ')" = "{'min':65536,'avg':262144,'max':1048576,'segment':4194304,'frame_max':1048576,'chunk_ids':'xxh3-128'}" ] &&
	ok || bad "chunk sizes recorded: $(json_field out chunking)"
# A source holding what a snapshot cannot hold is a failure (1) naming the
# path, not a usage error: the command was right, the data is not.
mkdir -p odd/link odd/fifo
printf x >odd/link/a && ln -s a odd/link/l
printf x >odd/fifo/a && mkfifo odd/fifo/p
expect_rc 1 "a symlink in the source" "$S" push odd/link snaps/odd
grep -q "odd/link/l" err && ok || bad "symlink path not named: $(cat err)"
expect_rc 1 "a FIFO in the source" "$S" push odd/fifo snaps/odd
grep -q "odd/fifo/p" err && ok || bad "FIFO path not named: $(cat err)"
expect_rc 1 "a FIFO as the source" "$S" push odd/fifo/p snaps/odd
expect_rc 1 "a device as the source" "$S" push /dev/null snaps/odd --json
[ "$(json_field out exit)" = 1 ] && grep -q "/dev/null" out && ok || bad "device json: $(cat out)"
if mknod odd/dev c 1 3 2>/dev/null; then
	mkdir odd/devdir && mv odd/dev odd/devdir/null && printf x >odd/devdir/a
	expect_rc 1 "a device in the source" "$S" push odd/devdir snaps/odd
	grep -q "odd/devdir/null" err && ok || bad "device path not named: $(cat err)"
fi
[ ! -e snaps/odd ] && ok || bad "a refused source left a snapshot"
expect_rc 0 "help" "$S" --help
grep -q "Exit codes" out && ok || bad "help lists exit codes"
expect_rc 0 "push help" "$S" push --help
grep -q "Examples" out && ok || bad "push help has examples"
expect_rc 3 "missing snapshot" "$S" pull snaps/nope x.img
grep -q "snaps/nope" err && ok || bad "not-found names the snapshot"
expect_rc 3 "missing source" "$S" push /nonexistent snaps/y
expect_rc 3 "json error" "$S" pull snaps/nope x.img --json
[ "$(json_field out ok)" = "False" ] && [ "$(json_field out exit)" = "3" ] && ok ||
	bad "json error object"

# Corrupt a pack: pull fails with exit 4 naming file and offset, and
# leaves nothing under the destination's name.
pack=$(find snaps/.snapstream/packs -type f -size +1M | head -1)
$PY "$HERE/check_obj.py" snaps/.snapstream flip "${pack#snaps/.snapstream/}" $((1 << 20))
expect_rc 4 "corrupted pack" "$S" pull snaps/a corrupt.img
grep -q "offset" err && grep -q "'img'" err && ok || bad "integrity error should name file and offset: $(cat err)"
[ ! -e corrupt.img ] && ! ls | grep -q ss-tmp && ok || bad "partial output left behind"

# A truncated manifest is an integrity error, not a crash.
mkdir -p snaps/trunc && head -c 100 snaps/a/manifest >snaps/trunc/manifest
expect_rc 4 "truncated manifest" "$S" pull snaps/trunc t.img

# Runs of zero pages can fill every read-ahead unit with work that needs
# no I/O: verify and cat must still finish (they once waited forever on
# this image with two workers).
"$GEN" --size 128M --seed 9 --out zr.img --quiet
expect_rc 0 "push a 128M memory-like image" "$S" push zr.img snaps/zr --quiet --no-fsync
expect_rc 0 "verify with two workers" timeout 60 "$S" verify snaps/zr --threads 2 --quiet
expect_rc 0 "cat with two workers" timeout 60 "$S" cat snaps/zr zr.img --threads 2
cmp -s out zr.img && ok || bad "cat with two workers: bytes differ"

asserts_summary cli
