#!/usr/bin/env bash
# `snapstream check [--repair] [--deep]` against real stores: a local
# directory and s3rver (the s3 part skips when s3rver is not installed,
# and fails instead under SNAPSTREAM_TEST_STRICT: tests/parts.sh).
# Usage: check.sh <snapstream> <ss-genimage>
#
# Each scenario damages a fresh store the way disks, people and crashes do
# (tests/check_obj.py edits objects in either kind of store) and asserts
# what a user relies on:
#   clean       a fresh store checks clean, also --deep (exit 0, no problem)
#   trunc       a truncated pack is a damaged pack naming the snapshot it
#               breaks (exit 4); --repair leaves it byte for byte
#   gone        a deleted pack is missing, the snapshot's chunks counted, the
#               index listing it stale; --repair fixes the index only
#   index       a corrupted index object: --repair rebuilds it, a second
#               check is clean, pull and push work
#   orphan      packs no snapshot references are notes, not problems, and
#               repair keeps them; a damaged one is moved to damaged/
#   deep        a flipped data byte passes the index check, fails --deep
#               naming the snapshot; --repair --deep keeps the pack
#   killed      (local) a push killed with SIGKILL leaves a store that checks
#               clean: orphans only
#   ref         (local) a snapshot beside the store without its ref:
#               --repair writes it back
#   records     (local) a damaged gc/state stops gc; --repair drops it, gc
#               runs again; gc/lock: repair refuses, --break-lock takes it
#   keyed       (local) a sealed keyed store: check needs the key (exit 5),
#               refuses another (6); a forged pack index, frame or index
#               object is found, and --repair writes a sealed index object
#   concurrent  (local) check and check --repair while pushes run: no
#               problem is reported or repaired, every snapshot verifies
# Exit 0 pass, 1 fail.
set -uo pipefail
part=main
if [ "${1:-}" = "--part" ]; then part="$2"; shift 2; fi
SELF="$(realpath "$0")"
S="$(realpath "$1")"
GEN="$(realpath "$2")"
HERE="$(dirname "$(realpath "$0")")"
PY=/usr/bin/python3
OBJ="$HERE/check_obj.py"
. "$HERE/parts.sh"
. "$HERE/asserts.sh"

# Where scenario $1 keeps its snapshots and store.
snap() { if [ "$part" = s3 ]; then echo "s3://$SS_S3_BUCKET/$1/$2"; else echo "$work/$part/$1/$2"; fi; }
store() { if [ "$part" = s3 ]; then echo "s3://$SS_S3_BUCKET/$1/.snapstream"; else echo "$work/$part/$1/.snapstream"; fi; }
O() { local sc="$1"; shift; $PY "$OBJ" "$(store "$sc")" "$@"; }
push() { "$S" push "$2" "$(snap "$1" "$3")" --store "$(store "$1")" --quiet --no-fsync 2>"$work/perr"; }
# chk <scenario> [flags]: check --json into $work/out; sets rc.
chk() {
	local sc="$1"
	shift
	"$S" check --store "$(store "$sc")" "$@" --json --no-fsync >"$work/out" 2>"$work/err"
	rc=$?
}
# J <python expression>: over the last check's JSON `j`; F(kind) lists its
# findings of that kind.
J() {
	$PY - "$work/out" "$1" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
F = lambda kind: [f for f in j.get("findings", []) if f["kind"] == kind]
print(eval(sys.argv[2]))
PY
}
want() { # want <rc> <what>: the last check exited rc
	if [ "$rc" -eq "$1" ]; then ok; else bad "$2: check exit $rc, want $1: $(head -c 600 "$work/out") $(head -c 300 "$work/err")"; fi
}
is_true() { # is_true <what> <python expression>
	local v
	v=$(J "$2" 2>&1)
	if [ "$v" = True ]; then ok; else bad "$1: $2 is $v; $(head -c 800 "$work/out")"; fi
}
packs_of() { O "$1" ls packs/ | sort; }

scenario_clean() {
	push clean img a && push clean img2 b || { bad "clean: push: $(cat "$work/perr")"; return; }
	chk clean
	want 0 "clean store"
	is_true "clean: counts" 'j["problems"] == 0 and j["snapshots"] == 2 and j["packs"] >= 2 and j["chunks"] > 0 and j["ok"]'
	chk clean --deep
	want 0 "clean store, deep"
	is_true "clean: deep verified every chunk" 'j["chunks_verified"] > 0 and j["chunks_damaged"] == 0 and j["problems"] == 0'
	"$S" check --store "$(store clean)" >"$work/human" 2>&1 && grep -q "^clean: no problems" "$work/human" &&
		ok || bad "clean: human summary: $(cat "$work/human")"
}

scenario_trunc() {
	push trunc img a || { bad "trunc: push a"; return; }
	local pa pkey sha
	pa=$(packs_of trunc)
	push trunc img2 b || { bad "trunc: push b"; return; }
	pkey=$(echo "$pa" | head -1)
	O trunc cut "$pkey" 100
	sha=$(O trunc sha "$pkey")
	chk trunc
	want 4 "truncated pack"
	is_true "trunc: damaged pack named" "any(f['object'] == '$pkey' and f['problem'] and not f['repairable'] for f in F('damaged-pack'))"
	is_true "trunc: its snapshot named" "any(f['snapshot'].endswith('/trunc/a') and f['chunks'] > 0 for f in F('incomplete-snapshot'))"
	is_true "trunc: the pack's finding names the snapshot" "'/trunc/a' in F('damaged-pack')[0]['message']"
	"$S" check --store "$(store trunc)" >"$work/human" 2>"$work/herr"
	[ $? -eq 4 ] && grep -q "^PROBLEM  damaged-pack $pkey: .*/trunc/a" "$work/human" &&
		grep -q "^PROBLEM  incomplete-snapshot .*/trunc/a: " "$work/human" && ok ||
		bad "trunc: human lines: $(cat "$work/human" "$work/herr")"
	chk trunc --repair
	want 4 "trunc: repair cannot fix a referenced damaged pack"
	[ "$(O trunc sha "$pkey")" = "$sha" ] && ok || bad "trunc: --repair changed or removed the referenced pack $pkey"
	chk trunc
	want 4 "trunc: check after repair still reports it"
}

scenario_gone() {
	push gone img a || { bad "gone: push a"; return; }
	local pa pkey
	pa=$(packs_of gone)
	push gone img2 b || { bad "gone: push b"; return; }
	pkey=$(packs_of gone | grep -vxF "$pa" | head -1)
	[ -n "$pkey" ] || { bad "gone: push b stored no pack of its own"; return; }
	O gone rm "$pkey"
	chk gone
	want 4 "deleted pack"
	is_true "gone: missing pack named" "any(f['object'] == '$pkey' and '/gone/b' in f['message'] for f in F('missing-pack'))"
	is_true "gone: snapshot b's chunks counted" "any(f['snapshot'].endswith('/gone/b') and f['chunks'] > 0 for f in F('incomplete-snapshot')) and j['chunks_missing'] > 0"
	is_true "gone: a is intact" "not any(f['snapshot'].endswith('/gone/a') for f in F('incomplete-snapshot'))"
	is_true "gone: the index listing it is stale, repairable" "any(f['repairable'] for f in F('stale-index'))"
	chk gone --repair
	want 4 "gone: repair cannot bring a pack back"
	chk gone
	want 4 "gone: after repair"
	is_true "gone: index fixed, pack still missing" "not F('stale-index') and len(F('missing-pack')) == 1"
	"$S" pull "$(snap gone a)" "$work/$part.gone.out" --store "$(store gone)" --quiet --no-fsync 2>"$work/perr" && cmp -s img "$work/$part.gone.out" &&
		ok || bad "gone: pull of the intact snapshot: $(cat "$work/perr")"
}

scenario_index() {
	push index img a && push index img2 b || { bad "index: push"; return; }
	local ikey
	ikey=$(O index ls index/ | head -1)
	O index flip "$ikey" 40
	chk index
	want 4 "damaged index object"
	is_true "index: damaged, repairable" "any(f['object'] == '$ikey' and f['repairable'] for f in F('damaged-index'))"
	chk index --repair
	want 0 "index: --repair"
	is_true "index: rebuilt" "j['index_written'] >= 1 and j['index_deleted'] >= 1 and j['repaired'] == j['problems']"
	O index ls index/ | grep -qxF "$ikey" && bad "index: the damaged object is still there" || ok
	chk index
	want 0 "index: second check"
	is_true "index: clean" "j['problems'] == 0 and j['index_damaged'] == 0"
	"$S" pull "$(snap index a)" "$work/$part.index.out" --store "$(store index)" --quiet --no-fsync 2>"$work/perr" && cmp -s img "$work/$part.index.out" &&
		ok || bad "index: pull after repair: $(cat "$work/perr")"
	push index img3 c && ok || bad "index: push after repair: $(cat "$work/perr")"
	chk index
	want 0 "index: check after a push"
	# A push ignores a damaged index object: the packs it listed describe
	# themselves, so the same image again stores nothing new.
	O index flip "$(O index ls index/ | head -1)" 40
	"$S" push img "$(snap index a2)" --store "$(store index)" --json --no-fsync >"$work/pj" 2>"$work/perr" &&
		[ "$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["new_raw_bytes"])' "$work/pj")" = 0 ] &&
		ok || bad "index: push past a damaged index object: $(cat "$work/perr" "$work/pj")"
}

scenario_orphan() {
	push orphan img a || { bad "orphan: push"; return; }
	# Packs another push left and no snapshot references (copied from the
	# clean scenario's store, so their ids are new here).
	local k n=0
	for k in $(packs_of clean); do
		O clean get "$k" "$work/p.bin" && O orphan put "$work/p.bin" "$k" && n=$((n + 1))
	done
	chk orphan
	want 0 "orphan packs"
	is_true "orphan: notes, not problems" "j['packs_orphaned'] == $n and len(F('orphan-pack')) == $n and not any(f['problem'] for f in F('orphan-pack'))"
	chk orphan --repair
	want 0 "orphan: --repair"
	[ "$(packs_of orphan | grep -cxF "$(packs_of clean)")" -eq "$n" ] && ok || bad "orphan: repair removed an orphan pack"
	k=$(packs_of clean | head -1)
	O orphan cut "$k" 50
	chk orphan
	want 4 "orphan: a damaged orphan"
	is_true "orphan: damaged, repairable" "any(f['object'] == '$k' and f['repairable'] for f in F('damaged-pack'))"
	chk orphan --repair
	want 0 "orphan: --repair sets it aside"
	is_true "orphan: quarantined" "j['packs_quarantined'] == 1"
	local hex=${k##*/}
	O orphan ls packs/ | grep -qxF "$k" && bad "orphan: the damaged pack is still under packs/" || ok
	O orphan ls damaged/ | grep -qxF "damaged/$hex" && ok || bad "orphan: not under damaged/: $(O orphan ls)"
	chk orphan
	want 0 "orphan: check after repair"
}

scenario_deep() {
	push deep img a || { bad "deep: push"; return; }
	local pkey sha
	pkey=$(packs_of deep | head -1)
	O deep flip "$pkey" 1000
	sha=$(O deep sha "$pkey")
	chk deep
	want 0 "deep: a flipped data byte passes the index check"
	chk deep --deep
	want 4 "deep: --deep finds it"
	is_true "deep: damaged chunks" "any(f['object'] == '$pkey' and f['chunks'] >= 1 for f in F('damaged-pack')) and j['chunks_damaged'] >= 1"
	is_true "deep: snapshot named" "any(f['snapshot'].endswith('/deep/a') for f in F('incomplete-snapshot'))"
	chk deep --deep --repair
	want 4 "deep: repair keeps a referenced pack"
	[ "$(O deep sha "$pkey")" = "$sha" ] && ok || bad "deep: --repair changed the referenced pack"
}

scenario_killed() {
	# A stream push whose input never ends: it stores full packs as it
	# goes, and is killed once one is stored, before it could commit.
	"$GEN" --size 72M --seed 41 --mix random=100 --out "$work/big" --quiet || { bad "killed: genimage"; return; }
	local st i pid
	st="$(store killed)"
	mkdir -p "$work/$part/killed"
	mkfifo "$work/fifo"
	"$S" push - "$(snap killed a)" --name big --quiet --no-fsync <"$work/fifo" 2>/dev/null &
	pid=$!
	exec 3>"$work/fifo"
	cat "$work/big" >&3
	for i in $(seq 1 1000); do
		[ -n "$(find "$st/packs" -type f ! -name '*.tmp-*' 2>/dev/null | head -1)" ] && break
		sleep 0.01
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	exec 3>&-
	rm -f "$work/fifo" "$work/big"
	[ ! -e "$(snap killed a)/manifest" ] && ok || bad "killed: a manifest without end of input"
	chk killed
	want 0 "killed push: the store checks clean"
	is_true "killed: its packs are orphans" "j['packs_orphaned'] == j['packs'] and j['packs'] >= 1 and j['problems'] == 0"
}

scenario_ref() {
	push ref img a || { bad "ref: push"; return; }
	local rkey
	rkey=$(O ref ls refs/ | head -1)
	O ref rm "$rkey"
	chk ref
	want 4 "missing ref"
	is_true "ref: named" "any(f['snapshot'].endswith('/ref/a') and f['object'] == '$rkey' for f in F('missing-ref'))"
	chk ref --repair
	want 0 "ref: --repair"
	[ "$(cat "$(store ref)/$rkey")" = "file://$work/$part/ref/a" ] && ok || bad "ref: not rewritten: $(O ref ls refs/)"
	chk ref
	want 0 "ref: second check"
}

scenario_records() {
	push records img a && push records img2 b || { bad "records: push"; return; }
	"$S" rm "$(snap records a)" --store "$(store records)" --quiet || bad "records: rm"
	echo garbage >"$work/garbage"
	O records put "$work/garbage" gc/state
	"$S" gc --store "$(store records)" --quiet 2>/dev/null && bad "records: gc ran with a damaged gc/state" || ok
	chk records
	want 4 "damaged gc/state"
	is_true "records: named, repairable" "any(f['object'] == 'gc/state' and f['repairable'] for f in F('damaged-record'))"
	printf "snapstream-gc-lock 1\nhost h\npid 77\nsince 1\n" >"$work/lock"
	O records put "$work/lock" gc/lock
	chk records
	is_true "records: a held lock is a note" "len(F('gc-running')) == 1"
	chk records --repair
	want 1 "records: repair refuses while gc/lock is held"
	grep -q "another gc" "$work/err" && ok || bad "records: lock message: $(cat "$work/err")"
	chk records --repair --break-lock
	want 0 "records: --repair --break-lock"
	O records ls gc/ | grep -qx gc/lock && bad "records: repair left gc/lock behind" || ok
	"$S" gc --store "$(store records)" --quiet 2>"$work/gerr" && ok || bad "records: gc after repair: $(cat "$work/gerr")"
	chk records
	want 0 "records: second check"
}

scenario_keyed() {
	head -c 32 /dev/urandom >"$work/key" && head -c 32 /dev/urandom >"$work/key2" &&
		chmod 600 "$work/key" "$work/key2"
	mkdir -p "$work/$part/keyed"
	local K=(--key-file "$work/key")
	"$S" init --store "$(store keyed)" "${K[@]}" --quiet || { bad "keyed: init"; return; }
	"$S" push img "$(snap keyed a)" "${K[@]}" --quiet --no-fsync || { bad "keyed: push"; return; }
	"$S" push img2 "$(snap keyed b)" "${K[@]}" --quiet --no-fsync || { bad "keyed: push b"; return; }
	# A sealed store's pack indexes and index objects open with its key only.
	chk keyed
	want 5 "keyed: check of a sealed store without the key"
	grep -q "key-file" "$work/err" && ok || bad "keyed: message: $(cat "$work/err")"
	chk keyed --deep
	want 5 "keyed: --deep without the key"
	chk keyed "${K[@]}"
	want 0 "keyed: check with the key"
	chk keyed --deep "${K[@]}"
	want 0 "keyed: --deep with the key"
	is_true "keyed: verified with keyed ids" "j['chunks_verified'] > 0 and j['chunks_damaged'] == 0"
	chk keyed --key-file "$work/key2"
	want 6 "keyed: another key"
	# A byte of a pack's sealed index: the pack is damaged; a byte of a
	# sealed frame: --deep finds the chunks; a sealed index object: damaged,
	# and --repair writes a sealed one.
	local pkey ikey
	pkey=$(packs_of keyed | head -1)
	O keyed flip "$pkey" -40
	chk keyed "${K[@]}"
	want 4 "keyed: forged pack index"
	is_true "keyed: the pack is damaged" "any(f['object'] == '$pkey' for f in F('damaged-pack'))"
	O keyed flip "$pkey" -40
	O keyed flip "$pkey" 200
	chk keyed --deep "${K[@]}"
	want 4 "keyed: forged frame"
	is_true "keyed: --deep names it" "j['chunks_damaged'] >= 1 and any(f['object'] == '$pkey' for f in F('damaged-pack'))"
	O keyed flip "$pkey" 200
	ikey=$(O keyed ls index/ | head -1)
	O keyed flip "$ikey" 60
	chk keyed "${K[@]}"
	want 4 "keyed: forged index object"
	is_true "keyed: damaged index" "any(f['object'] == '$ikey' and f['repairable'] for f in F('damaged-index'))"
	chk keyed --repair "${K[@]}"
	want 0 "keyed: --repair"
	local nkey
	nkey=$(O keyed ls index/ | head -1)
	[ -n "$nkey" ] && O keyed get "$nkey" "$work/idx" && [ "$(head -c 8 "$work/idx")" = SSINDX02 ] && ok ||
		bad "keyed: the rebuilt index object is not sealed ($nkey)"
	chk keyed --deep "${K[@]}"
	want 0 "keyed: clean after repair"
	"$S" pull "$(snap keyed a)" "$work/$part.keyed.out" "${K[@]}" --quiet --no-fsync 2>"$work/perr" &&
		cmp -s img "$work/$part.keyed.out" && ok || bad "keyed: pull after repair: $(cat "$work/perr")"
}

scenario_concurrent() {
	push concurrent img a || { bad "concurrent: push"; return; }
	local i pids="" n=0
	(for i in 1 2 3 4; do
		push concurrent img2 "p$i" && push concurrent img3 "q$i" || exit 1
	done) &
	local pusher=$!
	while kill -0 "$pusher" 2>/dev/null; do
		n=$((n + 1))
		chk concurrent
		[ "$(J "j['problems']")" = 0 ] && ok || bad "concurrent: check during pushes: $(head -c 800 "$work/out")"
		chk concurrent --repair
		[ "$(J "j['problems']")" = 0 ] && ok || bad "concurrent: repair during pushes: $(head -c 800 "$work/out")"
	done
	wait "$pusher" && ok || bad "concurrent: a push failed: $(cat "$work/perr")"
	chk concurrent
	want 0 "concurrent: after the pushes"
	is_true "concurrent: every snapshot checked" "j['snapshots'] == 9 and j['packs_orphaned'] == 0"
	for i in a p1 q1 p4 q4; do
		"$S" verify "$(snap concurrent $i)" --store "$(store concurrent)" --quiet 2>"$work/verr" && ok || bad "concurrent: verify $i: $(cat "$work/verr")"
	done
	echo "concurrent: $n checks and repairs ran during the pushes"
}

run_part() {
	scenario_clean
	scenario_trunc
	scenario_gone
	scenario_index
	scenario_orphan
	scenario_deep
	if [ "$part" = local ]; then
		scenario_killed
		scenario_ref
		scenario_records
		scenario_keyed
		scenario_concurrent
	fi
	echo "pass=$pass fails=$fails" >"$work/counts.$part"
}

if [ "$part" = s3 ]; then
	cd "$work" && run_part
	exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/ss-check.XXXXXX")"
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
export work
cd "$work"
"$GEN" --size 12M --seed 51 --out img --quiet &&
	"$GEN" --dirty 0.3 --base img --seed 52 --out img2 --quiet &&
	"$GEN" --dirty 0.3 --base img --seed 53 --out img3 --quiet || { echo "genimage failed"; exit 1; }

# Usage and a store that is not there.
"$S" check --bogus >/dev/null 2>&1; [ $? -eq 2 ] && ok || bad "usage error: want 2"
"$S" check --store "$work/none" >/dev/null 2>&1; [ $? -eq 3 ] && ok || bad "no store: want 3"

part=local
run_part

s3_part "$SELF" "$S" "$GEN"
P=$(total pass) F=$(total fails)
echo "check: $P passed, $F failed$s3note"
[ "$F" -eq 0 ]
