#!/usr/bin/env bash
# The CLI people reach for: every subcommand and every exit code against a
# local store, with --json parsed, the environment, help and man page.
# Usage: cli_admin.sh <snapstream> <ss-genimage> <docs/snapstream.1> <version>
#
# Proves:
#  - push - (a real pipe and a redirected file) stores the same chunks as a
#    file push (nothing new), and pull -, cat and pull restore it byte-exact;
#    pull - into a regular file leaves holes;
#  - cat of one file of a directory snapshot, and its errors (no such file:
#    3; several files and no name: 2);
#  - ls finds snapshots through refs and by scanning, with sizes and times;
#    info reports files, digests, labels, parents, format, savings;
#  - verify passes on good data and fails with 4 naming snapshot, file and
#    offset on a flipped byte, a missing pack (also --quick) and a
#    truncated manifest; cat stops with 4 on the flipped byte;
#  - rm deletes manifest and ref, is 3 the second time, and drops the ref of
#    a snapshot deleted by hand;
#  - gc: 3 without a store; --dry-run changes nothing; the default grace
#    hides and deletes nothing; a short grace deletes on the next run, and
#    afterwards every snapshot verifies and no index lists a missing pack; a
#    hidden pack is never offered to a new push; a hidden pack referenced
#    again is rescued; a held lock is exit 1 naming the holder, and
#    --break-lock clears it; an unreadable snapshot or ref (4) or a vanished
#    snapshot directory (1) makes gc delete nothing; --grace 0 deletes at
#    once;
#  - flags beat SNAPSTREAM_* which beat defaults; bad values are usage
#    errors naming the variable; --quiet and non-TTY output carry no
#    progress; a TTY (script(1)) shows it;
#  - usage errors are one line plus the --help hint (exit 2); every exit
#    code has a --json error object; --help everywhere, with examples; the
#    man page is what 'snapstream help --man' generates;
#  - every command that reads a snapshot takes --store (info refuses a
#    snapshot of another store, naming both); errors name the option as
#    typed, never its value; -q, -f, -j, -n and -h work.
set -uo pipefail
S="$(realpath "$1")"
GEN="$(realpath "$2")"
MAN="$(realpath "$3")"
VERSION="$4"   # meson's project version, the one place it is written
PY=/usr/bin/python3
HERE="$(dirname "$(realpath "$0")")"
FDIGEST="$HERE/fdigest.py"
. "$HERE/strict.sh"
. "$HERE/asserts.sh"
work="$(mktemp -d "${TMPDIR:-/tmp}/ss-admin.XXXXXX")"
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
cd "$work"
# jq-like: jget <file> <python expression over j>
jget() { $PY -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$@"; }
export SNAPSTREAM_NO_FSYNC=1

# No repeated pages in img: a file push makes them chunks of their own, a
# stream push cannot (docs/DESIGN.md, "Repeated pages"), and the checks
# below compare the two.
"$GEN" --size 16M --mix zero=28,text=30,struct=21,random=21 --seed 7 --out img --quiet || { echo "genimage failed"; exit 1; }
"$GEN" --dirty 0.2 --base img --seed 8 --out img2 --quiet || exit 1
"$GEN" --dir-layout runsc --size 8M --seed 9 --out ckpt --quiet || exit 1

# ---------------------------------------------------------------- push -
expect_rc 0 "push file" "$S" push img snaps/f --json
expect_rc 0 "push - from a pipe" bash -c "cat img | '$S' push - snaps/s --name pages.img --json"
cp out s.json
check "push - json" [ "$(jget s.json 'j["ok"] and j["logical_bytes"]')" = "$((16 << 20))" ]
check "stream push stores nothing a file push stored (same cut points)" \
	[ "$(jget s.json 'j["new_stored_bytes"]')" = 0 ]
expect_rc 0 "push - from a redirected file" "$S" push - snaps/r --quiet --parent snaps/s < img2
expect_rc 1 "push - onto an existing snapshot" bash -c "'$S' push - snaps/s < img"
grep -q "already exists" err && ok || bad "existing snapshot: $(cat err)"
expect_rc 2 "--name without -" "$S" push img snaps/x --name foo

expect_rc 0 "pull a stream snapshot" "$S" pull snaps/s s.img --quiet
check "stream snapshot restores byte-exact" cmp -s img s.img
expect_rc 0 "pull -" bash -c "'$S' pull snaps/r - | cat > r.img"
check "pull - through a pipe is byte-exact" cmp -s img2 r.img
"$S" pull snaps/f - >sparse.img 2>err && ok || bad "pull - to a file: $(cat err)"
check "pull - to a file is byte-exact" cmp -s img sparse.img
zb=$(jget s.json 'j["zero_bytes"]')
alloc=$(du -k sparse.img | cut -f1)
check "pull - into a regular file leaves holes ($alloc KiB)" [ "$alloc" -lt $(((16 << 10) - zb / 1024 + 1024)) ]
expect_rc 0 "cat a one-file snapshot without a name" bash -c "'$S' cat snaps/s | cmp -s - img"
"$S" pull snaps/f - --json >/dev/null 2>pj.json && ok || bad "pull - --json"
check "pull - --json goes to stderr" [ "$(jget pj.json 'j["op"]')" = pull ]

# ---------------------------------------------------------------- cat
expect_rc 0 "push dir" "$S" push ckpt snaps/dir --label runsc=test --label job=7 --parent snaps/f --json
expect_rc 0 "cat one file of a directory snapshot" bash -c "'$S' cat snaps/dir pages.img | cmp -s - ckpt/pages.img"
expect_rc 0 "cat another" bash -c "'$S' cat snaps/dir checkpoint.img > c.img && cmp -s c.img ckpt/checkpoint.img"
expect_rc 3 "cat a missing file" "$S" cat snaps/dir nope.img
grep -q "nope.img" err && ok || bad "missing file not named: $(cat err)"
expect_rc 2 "cat of a directory snapshot without a file" "$S" cat snaps/dir
expect_rc 2 "pull - of a directory snapshot" "$S" pull snaps/dir -
expect_rc 3 "cat a missing snapshot" "$S" cat snaps/none img

# ---------------------------------------------------------------- ls
expect_rc 0 "ls --json" "$S" ls snaps --json
cp out ls.json
check "ls lists 4 snapshots" [ "$(jget ls.json 'len(j["snapshots"])')" = 4 ]
check "ls logical size" [ "$(jget ls.json '[s["logical_bytes"] for s in j["snapshots"] if s["snapshot"].endswith("/snaps/f")][0]')" = "$((16 << 20))" ]
check "ls stored size" [ "$(jget ls.json 'all(0 < s["stored_bytes"] < s["logical_bytes"] for s in j["snapshots"])')" = True ]
check "ls creation time" [ "$(jget ls.json 'all(s["created"].endswith("Z") and s["created_unix_ns"] > 0 for s in j["snapshots"])')" = True ]
expect_rc 0 "ls (table)" "$S" ls snaps
check "ls table has a header and 4 rows" [ "$(wc -l <out)" = 5 ]
grep -q "^CREATED" out && ok || bad "ls header"
expect_rc 0 "ls a name prefix" "$S" ls snaps/d --json
check "name prefix lists only dir" [ "$(jget out '[s["snapshot"].rsplit("/",1)[1] for s in j["snapshots"]]')" = "['dir']" ]
mkdir elsewhere && expect_rc 0 "ls of an empty directory" "$S" ls elsewhere --json
check "empty ls" [ "$(jget out 'len(j["snapshots"])')" = 0 ]
# A snapshot whose store lives elsewhere is found by scanning.
expect_rc 0 "push with another store" "$S" push img snaps/other --store other-store --quiet
expect_rc 0 "ls finds it by scanning" "$S" ls snaps --json
check "scan found snaps/other" [ "$(jget out 'any(s["snapshot"].endswith("/snaps/other") for s in j["snapshots"])')" = True ]

# ---------------------------------------------------------------- info
expect_rc 0 "info --json" "$S" info snaps/dir --json
cp out info.json
check "info files" [ "$(jget info.json 'j["files"]')" = 3 ]
check "info file list" [ "$(jget info.json 'sorted(f["name"] for f in j["file_list"])')" = "['checkpoint.img', 'pages.img', 'pages_meta.img']" ]
# The digest by its definition, computed without snapstream (tests/fdigest.py).
check "info digest is the file's" [ "$(jget info.json '[f["xxh128"] for f in j["file_list"] if f["name"]=="pages.img"][0]')" = "$($PY "$FDIGEST" ckpt/pages.img)" ]
check "info labels" [ "$(jget info.json 'j["labels"]')" = "{'runsc': 'test', 'job': '7'}" ]
check "info parents" [ "$(jget info.json 'j["parents"][0].endswith("/snaps/f")')" = True ]
check "info format" [ "$(jget info.json '(j["format_major"], j["format_minor"])')" = "(5, 0)" ]
check "info counts" [ "$(jget info.json 'j["chunks"] > 0 and j["packs"] > 0 and j["extents"] >= j["chunks"]')" = True ]
check "info byte accounting" [ "$(jget info.json 'j["zero_bytes"] + j["chunk_bytes"] == j["logical_bytes"] and j["dedup_bytes"] + j["new_raw_bytes"] == j["chunk_bytes"]')" = True ]
expect_rc 0 "info of the warm stream push" "$S" info snaps/s --json
check "info savings of a fully deduplicated push" [ "$(jget out 'j["new_stored_bytes"] == 0 and j["dedup_bytes"] == j["chunk_bytes"] > 0')" = True ]
expect_rc 0 "info (text)" "$S" info snaps/dir
grep -q "^label *runsc=test" out && grep -q "^format *5.0" out && grep -q "pages.img" out && ok || bad "info text: $(cat out)"
expect_rc 3 "info of a missing snapshot" "$S" info snaps/none
grep -q "snaps/none" err && ok || bad "not found should name the URI: $(cat err)"
check "a read-only command creates nothing" [ ! -e nodir ]
expect_rc 3 "info under a missing directory" "$S" info nodir/x
check "info created no directory" [ ! -e nodir ]

# ---------------------------------------------------------------- hostile names
# --json stays valid JSON in strict UTF-8 whatever bytes a name holds:
# ill-formed UTF-8 (a stray byte, an encoded surrogate, a code point past
# U+10FFFF, an overlong form, a cut-off sequence) becomes U+FFFD exactly as
# Python's decode(errors="replace") does; quotes and backslashes survive.
# jstrict <file> <expr over j>: strict UTF-8 and strict JSON, or it fails.
jstrict() { $PY -c 'import json,sys; j=json.loads(open(sys.argv[1],"rb").read().decode("utf-8"), strict=True); print(eval(sys.argv[2]))' "$@"; }
mkdir hostile-src
names=(
	$'stray\xff byte' $'surrogate\xed\xa0\x80' $'past\xf4\x90\x80\x80max' $'overlong\xc0\xaf\xe0\x80\xaf'
	$'cut\xf0\x9f\x98' 'quo"te and back\slash' $'caf\xc3\xa9 \xf0\x9f\x98\x80'
)
for n in "${names[@]}"; do printf '%s' "$n" >"hostile-src/$n"; done
expect_rc 0 "push names that are not UTF-8" "$S" push hostile-src hostile/h --label $'k\xfe=v\xed\xbf\xbf' --json
check "push --json of hostile names is strict JSON" [ "$(jstrict out 'j["files"]')" = "${#names[@]}" ]
expect_rc 0 "info --json of hostile names" "$S" info hostile/h --json
cp out hostile.json
want=$($PY -c 'import os,sys; print(sorted(os.fsencode(n).decode("utf-8","replace") for n in os.listdir(sys.argv[1])))' hostile-src)
check "info names: each ill-formed sequence is one U+FFFD" [ "$(jstrict hostile.json 'sorted(f["name"] for f in j["file_list"])')" = "$want" ]
check "info labels made UTF-8" [ "$(jstrict hostile.json 'ascii(j["labels"])')" = "{'k\\ufffd': 'v\\ufffd\\ufffd\\ufffd'}" ]
check "no byte passed off as a Latin-1 escape" [ "$(grep -c '\\u00ff\|\\u00ed' hostile.json)" = 0 ]
expect_rc 0 "ls --json of hostile names" "$S" ls hostile --json
check "ls --json is strict JSON" [ "$(jstrict out 'len(j["snapshots"])')" = 1 ]
# A name push refuses (a control character) is quoted in the error object.
mkdir hostile-ctl && printf x >"hostile-ctl/$(printf 'c\x01t\xed\xa0\x80l\n"\\')"
expect_rc 2 "push of a control-character name" "$S" push hostile-ctl hostile/c --json
check "error --json with control characters is strict JSON" [ "$(jstrict out '(j["ok"], j["exit"], "c\x01t\ufffd\ufffd\ufffdl\n\"\\" in j["error"])')" = "(False, 2, True)" ]

# ---------------------------------------------------------------- verify
expect_rc 0 "verify" "$S" verify snaps/dir
expect_rc 0 "verify --json" "$S" verify snaps/f --json
check "verify checked chunks" [ "$(jget out 'j["ok"] and j["chunks_checked"] > 0 and j["transferred_bytes"] > 0')" = True ]
expect_rc 0 "verify --quick" "$S" verify snaps/dir --quick --json
check "verify --quick read no chunks" [ "$(jget out 'j["quick"] and j["transferred_bytes"] == 0')" = True ]
expect_rc 3 "verify a missing snapshot" "$S" verify snaps/none

# Integrity errors, on their own store so the rest stays intact.
expect_rc 0 "push to a store to corrupt" "$S" push img bad/a --quiet
pack=$(find bad/.snapstream/packs -type f -size +1M | head -1)
$PY "$HERE/check_obj.py" bad/.snapstream flip "${pack#bad/.snapstream/}" $((1 << 20))
expect_rc 4 "verify a flipped byte" "$S" verify bad/a
grep -q "bad/a" err && grep -q "file 'img'" err && grep -q "offset [0-9]" err && ok ||
	bad "integrity error should name snapshot, file and offset: $(cat err)"
expect_rc 4 "verify --json on a flipped byte" "$S" verify bad/a --json
check "integrity json" [ "$(jget out '(j["ok"], j["exit"])')" = "(False, 4)" ]
expect_rc 0 "verify --quick does not read chunks" "$S" verify bad/a --quick
"$S" cat bad/a img >cat-bad.img 2>err
rc=$?
check "cat of corrupt data exits 4 (got $rc)" [ "$rc" -eq 4 ]
check "cat wrote less than the file" [ "$(stat -c %s cat-bad.img)" -lt $((16 << 20)) ]
mv "$pack" pack.bak
expect_rc 4 "verify --quick with a missing pack" "$S" verify bad/a --quick
grep -q "missing" err && grep -q "bad/a" err && ok || bad "missing pack message: $(cat err)"
expect_rc 4 "verify with a missing pack" "$S" verify bad/a
mkdir -p bad/trunc && head -c 100 bad/a/manifest >bad/trunc/manifest
expect_rc 4 "verify a truncated manifest" "$S" verify bad/trunc
expect_rc 4 "info of a truncated manifest" "$S" info bad/trunc

# ---------------------------------------------------------------- rm
nrefs() { find snaps/.snapstream/refs -type f | wc -l; }
before=$(nrefs)
expect_rc 0 "rm" "$S" rm snaps/r --json
check "rm json" [ "$(jget out 'j["ok"]')" = True ]
check "rm removed the manifest" [ ! -e snaps/r/manifest ]
check "rm removed the ref" [ "$(nrefs)" -eq $((before - 1)) ]
expect_rc 3 "info after rm" "$S" info snaps/r
expect_rc 3 "rm again" "$S" rm snaps/r
expect_rc 0 "ls after rm" "$S" ls snaps --json
check "ls no longer lists it" [ "$(jget out 'any(s["snapshot"].endswith("/snaps/r") for s in j["snapshots"])')" = False ]
expect_rc 0 "push a snapshot to delete by hand" "$S" push img2 snaps/h --quiet
rm -rf snaps/h
expect_rc 0 "gc reports the dangling ref" "$S" gc --store snaps/.snapstream --json
check "dangling ref counted" [ "$(jget out 'j["refs_dangling"]')" = 1 ]
expect_rc 0 "rm of a snapshot deleted by hand drops its ref" "$S" rm snaps/h
expect_rc 0 "gc after" "$S" gc --store snaps/.snapstream --json
check "no dangling ref" [ "$(jget out 'j["refs_dangling"]')" = 0 ]

# ---------------------------------------------------------------- gc
expect_rc 3 "gc without a store" "$S" gc --store nowhere
check "gc created no store" [ ! -e nowhere ]
expect_rc 3 "gc without a store (default ./.snapstream)" "$S" gc
# index objects may only list packs that exist
# Every index object well-formed, every pack it lists in the store.
index_ok() { $PY "$HERE/check_obj.py" "$1" index-ok; }
npacks() { find "$1/packs" -type f | wc -l; }
expect_rc 0 "rm before gc" "$S" rm snaps/f
p0=$(npacks snaps/.snapstream)
state0=$(cat snaps/.snapstream/gc/state)
expect_rc 0 "gc --dry-run" "$S" gc --store snaps/.snapstream --dry-run --json
check "dry run reports" [ "$(jget out 'j["dry_run"] and j["packs"] > 0')" = True ]
check "dry run changed no state" [ "$(cat snaps/.snapstream/gc/state)" = "$state0" ]
check "dry run deleted nothing" [ "$(npacks snaps/.snapstream)" -eq "$p0" ]
expect_rc 0 "gc with the default grace" "$S" gc --store snaps/.snapstream --json
cp out gc1.json
check "default grace deletes nothing" [ "$(jget gc1.json 'j["packs_deleted"]')" = 0 ]
check "default grace: still counted for the removed snapshot" [ "$(jget gc1.json 'j["removed_in_grace"]')" -ge 1 ]
check "gc kept every pack" [ "$(npacks snaps/.snapstream)" -eq "$p0" ]
expect_rc 0 "gc text" "$S" gc --store snaps/.snapstream
grep -q "snapshot(s) reference" out && ok || bad "gc text output: $(cat out)"
# A short grace: the removed snapshot's record expires, its packs are
# hidden by one run and deleted by the next.
sleep 2
expect_rc 0 "gc hides" "$S" gc --store snaps/.snapstream --grace 1s --json
cp out gc2.json
check "gc hid packs" [ "$(jget gc2.json 'j["packs_pending"]')" -ge 1 ]
grep -q "^hidden " snaps/.snapstream/gc/state && ok || bad "gc/state lists hidden packs"
sleep 1.2
expect_rc 0 "gc deletes" "$S" gc --store snaps/.snapstream --grace 1s --json
cp out gc3.json
check "gc deleted packs" [ "$(jget gc3.json 'j["packs_deleted"]')" -ge 1 ]
check "gc deleted what it hid" [ "$(jget gc3.json 'j["packs_deleted"]')" = "$(jget gc2.json 'j["packs_pending"]')" ]
check "fewer packs" [ "$(npacks snaps/.snapstream)" -lt "$p0" ]
check "no index lists a deleted pack" index_ok snaps/.snapstream
for s in s dir; do
	expect_rc 0 "verify $s after gc" "$S" verify snaps/$s
done
check "state is empty again" [ "$(grep -c '^hidden ' snaps/.snapstream/gc/state)" = 0 ]

# Hidden packs are never offered to a new push; referenced again, they
# are rescued.
expect_rc 0 "push p1" "$S" push img2 g/p1 --quiet
cp -r g/p1 p1.saved
cp -r g/.snapstream/refs refs.saved
expect_rc 0 "rm p1" "$S" rm g/p1
rm -f g/.snapstream/gc/removed/*    # as if removed long ago
expect_rc 0 "gc hides p1's packs" "$S" gc --store g/.snapstream --json
check "p1's packs hidden" [ "$(jget out 'j["packs_pending"]')" -ge 1 ]
expect_rc 0 "push the same image again" "$S" push img2 g/p2 --json
check "a hidden pack is not reused (bytes stored again)" [ "$(jget out 'j["new_stored_bytes"]')" -gt 0 ]
cp -r p1.saved g/p1 && cp refs.saved/* g/.snapstream/refs/   # a push that committed late
expect_rc 0 "gc rescues" "$S" gc --store g/.snapstream --grace 1s --json
check "rescued" [ "$(jget out 'j["packs_rescued"] >= 1 and j["packs_deleted"] == 0')" = True ]
expect_rc 0 "the late snapshot verifies" "$S" verify g/p1
sleep 1.1
expect_rc 0 "gc again" "$S" gc --store g/.snapstream --grace 1s --json
check "nothing referenced was deleted" [ "$(jget out 'j["packs_deleted"]')" = 0 ]
expect_rc 0 "p1 still verifies" "$S" verify g/p1
expect_rc 0 "p2 verifies" "$S" verify g/p2
check "gc index check" index_ok g/.snapstream

# The lock: one gc at a time.
printf 'snapstream-gc-lock 1\nhost otherhost\npid 4242\nsince 1\n' >g/.snapstream/gc/lock
expect_rc 1 "gc with the lock held" "$S" gc --store g/.snapstream
grep -q "another gc" err && grep -q "4242" err && grep -q -- "--break-lock" err && ok ||
	bad "lock message: $(cat err)"
expect_rc 0 "gc --break-lock" "$S" gc --store g/.snapstream --break-lock
check "lock released" [ ! -e g/.snapstream/gc/lock ]

# A damaged snapshot stops gc from deleting anything.
expect_rc 0 "push q" "$S" push img g/q --quiet
head -c 50 g/q/manifest >g/q/m && mv g/q/m g/q/manifest
expect_rc 4 "gc with an unreadable snapshot" "$S" gc --store g/.snapstream --grace 0
grep -q "g/q" err && grep -q "deletes nothing" err && ok || bad "gc damaged message: $(cat err)"
expect_rc 0 "rm of an unreadable snapshot" "$S" rm g/q
: >g/.snapstream/refs/00000000000000000000000000000000
expect_rc 4 "gc with a ref it cannot read" "$S" gc --store g/.snapstream --grace 0
grep -q "deletes nothing" err && ok || bad "unreadable ref message: $(cat err)"
rm g/.snapstream/refs/00000000000000000000000000000000
# A ref whose directory vanished (moved?) stops it too.
expect_rc 0 "push m" "$S" push img2 moved/m --store g/.snapstream --quiet
mv moved moved2
expect_rc 1 "gc when a snapshot directory vanished" "$S" gc --store g/.snapstream --grace 0
grep -q "moved" err && ok || bad "moved message: $(cat err)"
expect_rc 0 "rm the moved snapshot's ref" "$S" rm "$work/moved/m" --store g/.snapstream
expect_rc 0 "gc --grace 0" "$S" gc --store g/.snapstream --grace 0 --json
check "grace 0 deletes at once" [ "$(jget out 'j["packs_pending"]')" = 0 ]
expect_rc 0 "p2 verifies after everything" "$S" verify g/p2

# ---------------------------------------------------------------- config
expect_rc 0 "SNAPSTREAM_STORE" env SNAPSTREAM_STORE=envstore "$S" push img e/a --quiet
check "env store used" [ -d envstore/packs ]
expect_rc 0 "env store recorded absolute" "$S" info e/a --store envstore --json
check "recorded store is absolute" [ "$(jget out 'j["store"]')" = "$work/envstore" ]
expect_rc 0 "flag beats env" env SNAPSTREAM_STORE=envstore "$S" push img e/b --store flagstore --quiet
check "flag store used" [ -d flagstore/packs ]
expect_rc 0 "verify with the env store" env SNAPSTREAM_STORE=envstore "$S" verify e/a
expect_rc 2 "bad SNAPSTREAM_THREADS" env SNAPSTREAM_THREADS=0 "$S" verify e/a
grep -q "SNAPSTREAM_THREADS" err && ok || bad "env error names the variable: $(cat err)"
expect_rc 0 "flag beats a bad env" env SNAPSTREAM_ZSTD_LEVEL=99 "$S" info e/a --store envstore
expect_rc 2 "bad SNAPSTREAM_ZSTD_LEVEL for push" env SNAPSTREAM_ZSTD_LEVEL=99 "$S" push img e/c
expect_rc 2 "bad SNAPSTREAM_GC_GRACE" env SNAPSTREAM_GC_GRACE=soon "$S" gc --store envstore
expect_rc 0 "SNAPSTREAM_GC_GRACE" env SNAPSTREAM_GC_GRACE=1h "$S" gc --store envstore --json
expect_rc 0 "SNAPSTREAM_QUIET" env SNAPSTREAM_QUIET=1 "$S" push img e/q
check "quiet: nothing on stderr" [ ! -s err ]
expect_rc 0 "summary without progress on a non-TTY" "$S" push img e/n
check "one summary line, no progress" [ "$(wc -l <err)" = 1 ] && ! grep -q $'\r' err && ok || bad "non-TTY stderr: $(cat -A err)"
if command -v script >/dev/null; then
	script -qec "'$S' push '$work/img' '$work/e/tty' --threads 1" /dev/null >tty.out 2>&1
	grep -q $'\r' tty.out && grep -q "push\|index" tty.out && ok || bad "progress on a TTY: $(cat -A tty.out | head -5)"
	script -qec "'$S' push '$work/img' '$work/e/tty2' --quiet" /dev/null >tty.out 2>&1
	check "--quiet on a TTY prints nothing" [ ! -s tty.out ]
	script -qec "'$S' pull '$work/snaps/s' -; echo rc=\$?" /dev/null >tty.out 2>&1
	grep -q "rc=2" tty.out && grep -q "terminal" tty.out && ok || bad "pull - to a terminal: $(cat tty.out)"
	script -qec "'$S' push - '$work/e/tty3'; echo rc=\$?" /dev/null >tty.out 2>&1 </dev/null
	grep -q "rc=2" tty.out && grep -q "terminal" tty.out && ok || bad "push - from a terminal: $(cat tty.out)"
elif strict; then
	bad "script(1) (util-linux) is missing: the terminal checks cannot run (SNAPSTREAM_TEST_STRICT)"
else
	echo "SKIP: script(1) (util-linux) is missing: no terminal checks" >&2
fi

# ---------------------------------------------------------------- keyed
# A keyed store (init --key-file) is sealed: the key comes from a file or
# SNAPSTREAM_KEY_FILE, must not be readable by others, and every command
# that reads or writes chunks needs it: without it exit 5, another key 6,
# another store's sealed snapshot (this key's) 7; nothing is written.
head -c 32 /dev/urandom >k1 && head -c 32 /dev/urandom >k2 && head -c 8 /dev/urandom >kshort
chmod 600 k1 k2 kshort
expect_rc 0 "init keyed" "$S" init --store keyed/.snapstream --key-file k1 --json
check "init json" [ "$(jget out '(j["ok"], j["chunk_ids"], j["sealed"])')" = "(True, 'keyed', True)" ]
check "config names the key, not the key" grep -q "^chunk-ids xxh3-128-keyed [0-9a-f]\{32\}$" keyed/.snapstream/config
check "config is sealed (version 2)" grep -q "^seal \(aes-256-gcm\|chacha20-poly1305\) [0-9a-f]\{32\}$" keyed/.snapstream/config
check "the key is not stored" bash -c '! grep -rqF "$(od -An -tx1 k1 | tr -d " \n")" keyed/.snapstream'
expect_rc 1 "init twice" "$S" init --store keyed/.snapstream --key-file k1
grep -q "already exists, with keyed" err && ok || bad "init twice message: $(cat err)"
expect_rc 1 "keyed init of a store with packs" "$S" init --key-file k1 --store snaps/.snapstream
grep -q "holds .* packs" err && ok || bad "store with packs message: $(cat err)"
expect_rc 2 "a cipher without a key" "$S" init --store keyed3/.snapstream --cipher aes-256-gcm
expect_rc 2 "an unknown cipher" "$S" init --store keyed3/.snapstream --key-file k1 --cipher rot13
expect_rc 5 "push without key" "$S" push img keyed/a --quiet
grep -q "is keyed" err && grep -q "key-file" err && [ "$(wc -l <err)" = 1 ] && ok || bad "no-key message: $(cat err)"
expect_rc 6 "push, other key" "$S" push img keyed/a --key-file k2 --quiet
grep -q "another key" err && [ "$(wc -l <err)" = 1 ] && ok || bad "other-key message: $(cat err)"
check "nothing pushed without the key" [ ! -e keyed/a ]
chmod 644 k1
expect_rc 2 "world-readable key file" "$S" push img keyed/a --key-file k1
grep -q "chmod 600" err && ok || bad "key file mode message: $(cat err)"
chmod 600 k1
expect_rc 2 "short key" "$S" push img keyed/a --key-file kshort
expect_rc 2 "missing key file" "$S" push img keyed/a --key-file nokey
expect_rc 0 "keyed push" "$S" push img keyed/a --key-file k1 --json --label runsc.sha256=00ff
check "keyed push stored" [ "$(jget out 'j["new_raw_bytes"] > 0')" = "True" ]
SNAPSTREAM_KEY_FILE=k1 expect_rc 0 "keyed push from the environment" "$S" push img keyed/b --json
check "keyed dedup" [ "$(jget out 'j["new_raw_bytes"]')" = "0" ]
expect_rc 0 "keyed info" "$S" info keyed/a --json --key-file k1
check "info says keyed and sealed" [ "$(jget out '(j["chunking"]["chunk_ids"], j["sealed"], j["labels"]["runsc.sha256"])')" = "('xxh3-128-keyed', True, '00ff')" ]
expect_rc 0 "keyed info without the key" "$S" info keyed/a --json
check "info without the key: the clear header only" [ "$(jget out '(j["sealed"], j["opened"], j["packs"] >= 1, "labels" in j, "files" in j)')" = "(True, False, True, False, False)" ]
expect_rc 0 "keyed info without the key (text)" "$S" info keyed/a
grep -q "sealed" out && grep -q "key-file" out && ok || bad "info without key: $(cat out)"
expect_rc 0 "ls without the key" "$S" ls keyed
grep -q "(sealed).*keyed/a" out && ok || bad "ls without key: $(cat out)"
expect_rc 5 "pull without key" "$S" pull keyed/a kout --quiet
check "nothing pulled without the key" [ ! -e kout ]
expect_rc 5 "pull without key (json)" "$S" pull keyed/a kout --quiet --json
check "json error: errno ENOKEY, exit 5" [ "$(jget out '(j["exit"], j["errno"])')" = "(5, 126)" ]
expect_rc 6 "verify, other key" "$S" verify keyed/a --key-file k2 --quiet
expect_rc 6 "cat, other key" "$S" cat keyed/a --key-file k2 --quiet
expect_rc 5 "cat without key" "$S" cat keyed/a --quiet
expect_rc 0 "keyed pull" "$S" pull keyed/a kout --key-file k1 --quiet
check "keyed pull byte-exact" cmp -s img kout
SNAPSTREAM_KEY_FILE=k1 expect_rc 0 "keyed verify" "$S" verify keyed/b --quiet
"$S" cat keyed/b --key-file k1 --quiet | cmp -s - img && ok || bad "keyed cat"
expect_rc 6 "key for a plain store" "$S" push img snaps/keyed --key-file k1 --quiet
grep -q "plain chunk ids" err && ok || bad "plain store message: $(cat err)"
# Another sealed store made from the same key file: a snapshot of the
# first read through it is another store's (exit 7), and one whose key
# is not this one's is moved, not authentic (exit 4).
expect_rc 0 "init a second keyed store, same key" "$S" init --store keyed2/.snapstream --key-file k1
expect_rc 7 "another store's snapshot" "$S" pull keyed/a kout2 --store keyed2/.snapstream --key-file k1 --quiet
grep -q "sealed in another store" err && grep -q -- "--store" err && ok || bad "other store message: $(cat err)"
check "nothing pulled from another store" [ ! -e kout2 ]
expect_rc 0 "init a third keyed store, other key" "$S" init --store keyed4/.snapstream --key-file k2
expect_rc 4 "a snapshot moved from another store and key" "$S" pull keyed/a kout2 --store keyed4/.snapstream --key-file k2 --quiet
check "nothing pulled from a moved snapshot" [ ! -e kout2 ]
"$S" pull --help | grep -q "5 missing key, 6 wrong key, 7 another" && ok || bad "pull --help names exits 5-7"
"$S" --help | grep -q "^  7  another store" && ok || bad "--help names exit 7"

# ---------------------------------------------------------------- usage
expect_rc 2 "no command" "$S"
expect_rc 2 "unknown command" "$S" frobnicate
expect_rc 2 "unknown option" "$S" ls --bogus
check "usage error: one line and the hint" [ "$(wc -l <err)" = 2 ]
grep -q "Try 'snapstream ls --help'" err && ok || bad "hint: $(cat err)"
expect_rc 2 "option not for this command" "$S" info snaps/s --force
expect_rc 2 "missing argument" "$S" verify
expect_rc 2 "too many arguments" "$S" rm a b
expect_rc 2 "gc takes no arguments" "$S" gc extra
expect_rc 2 "bad --grace" "$S" gc --grace soon
expect_rc 2 "usage error with --json" "$S" info --json
check "usage json object" [ "$(jget out '(j["ok"], j["exit"])')" = "(False, 2)" ]
expect_rc 3 "not found with --json" "$S" info snaps/none --json
check "not found json object" [ "$(jget out '(j["ok"], j["exit"], "snaps/none" in j["error"])')" = "(False, 3, True)" ]
expect_rc 1 "failure with --json" "$S" push img snaps/s --json
check "failure json object" [ "$(jget out '(j["ok"], j["exit"])')" = "(False, 1)" ]
expect_rc 0 "--help" "$S" --help
grep -q "Exit codes" out && grep -q "SNAPSTREAM_STORE" out && ok || bad "main help"
for cmd in push pull cat ls info verify rm gc init; do
	expect_rc 0 "$cmd --help" "$S" "$cmd" --help
	grep -q "^Examples:" out && grep -q "^Usage: snapstream $cmd" out && ok || bad "$cmd help"
	expect_rc 0 "help $cmd" "$S" help "$cmd"
done
expect_rc 0 "man page" "$S" help --man
# The committed page leaves the version to meson (@VERSION@).
sed '2s/"snapstream [^"]*"/"snapstream @VERSION@"/' out >out.man
cmp -s out.man "$MAN" && ok || bad "docs/snapstream.1 is stale: run scripts/manpage.sh"
grep -q "^\.TH SNAPSTREAM 1 \"\" \"snapstream $("$S" --version | cut -d' ' -f2)\"" out && ok ||
	bad "help --man does not carry the version --version prints"
expect_rc 0 "version" "$S" --version
[ "$(cat out)" = "snapstream $VERSION" ] && ok || bad "--version says '$(cat out)', not meson's $VERSION"

# ---------------------------------------------------------------- options
# Every command that reads a snapshot takes --store, as restic's -r and
# the aws CLI's --endpoint are taken everywhere.
st="snaps/.snapstream"
expect_rc 0 "info --store" "$S" info snaps/s --store "$st"
expect_rc 0 "info --store=, spelled file://, with a slash" "$S" info snaps/s --store="file://$work/$st/"
expect_rc 0 "info with SNAPSTREAM_STORE" env SNAPSTREAM_STORE="$st" "$S" info snaps/s
expect_rc 1 "info --store of another store" "$S" info snaps/s --store other-store
grep -q "$work/$st" err && grep -q "other-store" err && ok || bad "info store mismatch names both: $(cat err)"
expect_rc 0 "info --store of a snapshot in another store" "$S" info snaps/other --store other-store
# A manifest does not choose the store (docs/SECURITY.md): snaps/other's
# names other-store, so without --store (the default beside it is
# snaps/.snapstream) every command that reads it refuses, naming both.
for cmd in info verify cat; do
	expect_rc 1 "$cmd of a snapshot whose manifest names another store" "$S" $cmd snaps/other
	grep -q "$work/other-store" err && grep -q "$work/$st" err && ok ||
		bad "$cmd names both stores: $(cat err)"
done
expect_rc 1 "pull of a snapshot whose manifest names another store" "$S" pull snaps/other other.img
grep -q "$work/other-store" err && grep -q "$work/$st" err && ok || bad "pull names both stores: $(cat err)"
check "a refused pull writes nothing" [ ! -e other.img ]
expect_rc 1 "pull --json of it" "$S" pull snaps/other other.img --json
[ "$(jget out 'j["exit"]')" = 1 ] && [ "$(jget out 'j["errno"]')" = 1 ] && ok || bad "pull --json: $(cat out)"
expect_rc 1 "pull with SNAPSTREAM_STORE of another store" env SNAPSTREAM_STORE="$st" "$S" pull snaps/other other.img
expect_rc 0 "pull --store of its store" "$S" pull snaps/other other.img --store other-store --quiet
check "pulled from its store" cmp -s img other.img
expect_rc 0 "verify --store of its store, spelled file://" "$S" verify snaps/other --store "file://$work/other-store/" --quiet
"$S" cat snaps/other --store other-store | cmp -s - img && ok || bad "cat --store of its store"
# The CLI takes the whole descriptor limit at startup (the library leaves
# it alone): a pull of more files than the soft limit allows still works.
mkdir -p many && for i in $(seq 1 150); do echo "$i" >"many/f$i"; done
expect_rc 0 "push 150 files" "$S" push many snaps/many --quiet
expect_rc 0 "pull 150 files under a soft limit of 64 descriptors" \
	sh -c 'ulimit -Sn 64 && exec "$0" pull snaps/many many-out --quiet' "$S"
check "pulled 150 files" [ "$(ls many-out | wc -l)" -eq 150 ]
expect_rc 0 "pull --store" "$S" pull snaps/s opt-pull.img --store "$st" --quiet
check "pull --store byte-exact" cmp -s img opt-pull.img
"$S" cat snaps/s --store "$st" | cmp -s - img && ok || bad "cat --store"
expect_rc 0 "verify --store" "$S" verify snaps/s --store "$st" --quiet
expect_rc 0 "ls --store" "$S" ls snaps --store "$st"
grep -q "snaps/s" out && ok || bad "ls --store lists: $(cat out)"
# Errors name the option as typed, never its value.
expect_rc 2 "an option not for the command, with a value" "$S" ls snaps --parent snaps/s
grep -q "option '--parent' is not for ls" err && ! grep -q "'snaps/s'" err && ok ||
	bad "misplaced option named: $(cat err)"
expect_rc 2 "an option not for the command, --opt=value" "$S" gc --store="$st" --label=a=b
grep -q "option '--label' is not for gc" err && ok || bad "--opt=value named: $(cat err)"
expect_rc 2 "a short option not for the command" "$S" info snaps/s -q
grep -q "option '-q' is not for info" err && ok || bad "short option named: $(cat err)"
expect_rc 2 "an unknown option with a value" "$S" info snaps/s --bogus=7
grep -q "unknown option '--bogus'" err && ok || bad "unknown option named: $(cat err)"
expect_rc 2 "an unknown short option" "$S" info snaps/s -Z
grep -q "unknown option '-Z'" err && ok || bad "unknown short option named: $(cat err)"
expect_rc 2 "an option that needs a value, at the end" "$S" info snaps/s --store
grep -q "option '--store' needs a value" err && ok || bad "missing value named: $(cat err)"
expect_rc 2 "a flag given a value" "$S" verify snaps/s --quick=yes
grep -q "option '--quick' takes no value" err && ok || bad "flag with value named: $(cat err)"
expect_rc 2 "an option before the command" "$S" --store "$st" info snaps/s
grep -q "option '--store' before the command" err && ok || bad "option before command: $(cat err)"
# Short forms: -q --quiet, -f --force, -j --threads, -n --dry-run, -h --help.
expect_rc 0 "push -q" "$S" push img opt/a -q
check "-q: nothing on stderr" [ ! -s err ]
expect_rc 1 "push onto it again" "$S" push img opt/a -q
expect_rc 0 "push -f (and -fq together)" "$S" push img2 opt/a -fq -j 2
check "-fq: nothing on stderr" [ ! -s err ]
expect_rc 0 "pull -f -j3" "$S" pull opt/a opt-pull.img -f -j3 -q
check "pull -f replaced the file" cmp -s img2 opt-pull.img
expect_rc 2 "-j 0" "$S" verify opt/a -j 0
grep -q -- "-j takes 1..256" err && ok || bad "-j range: $(cat err)"
expect_rc 0 "gc -n" "$S" gc --store "$st" -n --json
check "gc -n is a dry run" [ "$(jget out 'j["dry_run"]')" = True ]
expect_rc 0 "info -h" "$S" info -h
grep -q "^Usage: snapstream info" out && ok || bad "-h: $(head -2 out)"
expect_rc 0 "push --help lists the short forms" "$S" push --help
grep -q -- "-q, --quiet" out && grep -q -- "-f, --force" out && grep -q -- "-j, --threads" out &&
	grep -q -- "--while -- <command>" out && ok || bad "push help short forms: $(cat out)"
# A plain "--" ends the options: what follows is arguments.
expect_rc 0 "pull -- <snapshot> <dest>" "$S" pull -q -- opt/a opt-dd.img
check "pull after --" cmp -s img2 opt-dd.img

asserts_summary cli_admin
