#!/usr/bin/env bash
# Crash consistency (issue 6, requirement 1): SIGKILL `snapstream push` and
# `snapstream pull` at random moments, on the local store and on s3rver.
# Usage: crash.sh <snapstream> <ss-genimage>
#
# Image: 128 MiB generated, ~65 MiB stored in 3 packs. Each part first
# times two cold pushes (pulls) and kills later runs after a random delay
# in [0, that time]. After every push kill:
#  (a) no partial snapshot: `info` exits 3 unless the push had finished
#      (exit 0), or was killed after its manifest landed; then it verifies;
#  (b) every object under a final pack name has a valid trailer
#      (tests/crash_packs.py), and any snapshot that exists verifies;
#  (b') `snapstream check` of the run's store finds no problem: a killed
#      push leaves orphan packs (notes) and nothing else -- "the store
#      checks clean";
# s3rver writes a PUT's body straight to the object's final path, so a
# push killed mid-upload leaves a truncated object under a pack name there
# (S3 and GCS commit a PUT whole or not at all). On s3rver those -- packs
# no snapshot references, with a bad trailer, and likewise truncated index
# objects and refs -- are counted as s3rver_partial_puts instead of failing (b) and
# (b'); every other problem still fails, and (c) counts whole packs only. The same holds for a push
# killed while it uploads its manifest: s3rver keeps an empty or truncated
# manifest under the final name, which `info` refuses as corrupt (exit 4)
# and `check` reports as the one unreadable snapshot; those are counted as
# s3rver_torn_manifests, and (c) re-runs that push with --force.
#  (c) the same push again succeeds, verifies, and stores less than the
#      cold push whenever the killed run had stored a pack -- in fact at most
#      cold - (bytes in the leftover packs) + 3 % of cold.
# After every pull kill: the destination does not exist under its final
# name unless the pull completed, and then equals the image byte for byte;
# the only other files allowed are *.ss-tmp-* temporaries (counted).
#
# The local store is run again sealed (init --key-file, every command with
# the key): the same checks, CRASH_KEYED_RUNS push and pull kills (default
# 10).
#
# Environment: CRASH_RUNS (push kills per store, default 20),
# CRASH_PULL_RUNS (pull kills per store, default 20), CRASH_SEED (random
# seed, default: time; printed so a failure can be replayed). 20 rather
# than more keeps the whole suite, where this is the longest test under
# ASan, within the CI budget; each run draws new kill moments from its
# seed, so coverage grows across runs.
# Exit 0 pass, 1 fail. Without s3rver the s3 part is skipped with a note,
# or is a failure under SNAPSTREAM_TEST_STRICT (tests/parts.sh).
set -uo pipefail
part=main
if [ "${1:-}" = "--part" ]; then part="$2"; shift 2; fi
S="$(realpath "$1")"
GEN="$(realpath "$2")"
HERE="$(dirname "$(realpath "$0")")"
. "$HERE/parts.sh"
. "$HERE/asserts.sh"
PY=/usr/bin/python3
CHK="$HERE/crash_packs.py"
RUNS="${CRASH_RUNS:-20}"
PULL_RUNS="${CRASH_PULL_RUNS:-20}"

kills=0 done_before_kill=0 killed_committed=0 pack_kills=0 less=0
pull_kills=0 pull_done=0 pull_tmp_left=0 tmp_left=0 checks=0 orphans=0 partial=0 torn=0
# The key of the keyed part (empty otherwise): given to every command.
K=()
# Commands that must finish: a hang (exit 124) is a failure, not a stuck test.
ss() { timeout -k 5 60 "$S" "$@" "${K[@]}"; }
now_ms() { date +%s%3N; }
jnum() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" "$2"; }
secs() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
rand_ms() { echo $(((RANDOM * 32768 + RANDOM) % ($1 + 1))); }

# Locations for run $1 of the current store kind. Each run has a store of
# its own (in a bucket the default store is the bucket's, shared by all).
snap_of() { if [ "$kind" = s3 ]; then echo "s3://$SS_S3_BUCKET/$1/snap"; else echo "$work/runs/$1/snap"; fi; }
store_of() { if [ "$kind" = s3 ]; then echo "s3://$SS_S3_BUCKET/$1/.snapstream"; else echo "$work/runs/$1/.snapstream"; fi; }
packs_check() { # <run> -> prints "packs=N bytes=B tmp=T bad=K" (+ bad lines)
	if [ "$kind" = s3 ]; then $PY "$CHK" s3 "$SS_S3_BUCKET" "$1/.snapstream"
	else $PY "$CHK" local "$work/runs/$1/.snapstream"; fi
}
cleanup_run() {
	if [ "$kind" = s3 ]; then $PY "$CHK" s3-purge "$SS_S3_BUCKET" "$1" || true
	else rm -rf "$work/runs/$1"; fi
	# The keyed part's stores are made sealed before anything is pushed.
	if [ ${#K[@]} -gt 0 ]; then
		mkdir -p "$work/runs/$1"
		"$S" init --store "$(store_of "$1")" "${K[@]}" --quiet || bad "init of a keyed store failed"
	fi
}

# Of a check's findings (JSON in $1): what s3rver leaves of a killed
# upload: damaged packs no snapshot references whose trailer is gone,
# damaged index objects (which pushes skip; the packs describe themselves)
# and refs that are no ref (a truncated refs/ object).
s3rver_partials() {
	$PY - "$1" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
print(sum(1 for f in j.get("findings", []) if f["problem"] and (
    (f["kind"] == "damaged-pack" and "no snapshot references it" in f["message"]
     and "trailer" in f["message"]) or f["kind"] in ("damaged-index", "bad-ref"))))
PY
}

push_part() {
	local cold=0 T=0 i r t0 dt
	# Reference: two cold pushes into empty stores, timed.
	for r in ref1 ref2; do
		cleanup_run "$r"
		t0=$(now_ms)
		"$S" push "$work/img" "$(snap_of $r)" --store "$(store_of $r)" "${K[@]}" --json --quiet >"$work/out" 2>"$work/err" ||
			{ bad "cold reference push: $(cat "$work/err")"; return; }
		dt=$(($(now_ms) - t0))
		[ "$dt" -gt "$T" ] && T=$dt
		cold=$(jnum new_stored_bytes "$work/out")
	done
	[ "$r" = ref2 ] && cleanup_run ref2
	echo "[$part] cold push: $cold bytes stored, $(jnum packs "$work/out") packs, ${T} ms; kills in [0, $T] ms"
	for i in $(seq 1 "$RUNS"); do
		local run="r$i" snap d rc irc n nbytes tmp line torn_m=0 force=
		snap="$(snap_of $run)"
		cleanup_run "$run"
		d=$(rand_ms "$T")
		"$S" push "$work/img" "$snap" --store "$(store_of $run)" "${K[@]}" --json --quiet >"$work/kout" 2>"$work/kerr" &
		local pid=$!
		sleep "$(secs "$d")"
		kill -KILL "$pid" 2>/dev/null
		wait "$pid"
		rc=$?
		ss info "$snap" --store "$(store_of $run)" >/dev/null 2>"$work/ierr"
		irc=$?
		if [ "$rc" -eq 0 ]; then
			done_before_kill=$((done_before_kill + 1))
			[ "$irc" -eq 0 ] || bad "run $i: push finished but info exits $irc"
		elif [ "$rc" -eq 137 ]; then
			kills=$((kills + 1))
			if [ "$irc" -eq 0 ]; then
				# Killed after the manifest was written: complete, must verify.
				killed_committed=$((killed_committed + 1))
			elif [ "$kind" = s3 ] && [ "$irc" -eq 4 ] &&
				grep -q "manifest is empty\|truncated" "$work/ierr"; then
				# s3rver kept the killed manifest upload (see the top).
				torn_m=1 force=--force
				torn=$((torn + 1))
			elif [ "$irc" -ne 3 ]; then
				bad "run $i (killed at ${d} ms): info exits $irc, want 3: $(head -c 300 "$work/ierr")"
			fi
		else
			bad "run $i: push exited $rc before the kill: $(head -c 300 "$work/kerr")"
		fi
		# (b) every pack under a final name is whole; a snapshot that exists verifies.
		if ! line=$(packs_check "$run"); then
			# Only a killed upload to s3rver may leave one (see the top).
			[ "$kind" = s3 ] || bad "run $i (killed at ${d} ms): partial pack: $line"
		fi
		n=$(echo "$line" | sed -n 's/.*packs=\([0-9]*\).*/\1/p')
		nbytes=$(echo "$line" | sed -n 's/.*bytes=\([0-9]*\).*/\1/p')
		tmp=$(echo "$line" | sed -n 's/.*tmp=\([0-9]*\).*/\1/p')
		tmp_left=$((tmp_left + ${tmp:-0}))
		if [ "$irc" -eq 0 ]; then
			ss verify "$snap" --store "$(store_of $run)" --quiet >/dev/null 2>"$work/verr" ||
				bad "run $i: snapshot visible after kill does not verify: $(head -c 300 "$work/verr")"
		fi
		# (b') the store checks clean: orphans allowed, no problem.
		# (A local store a push killed early never created is no store.)
		if [ "$kind" = s3 ] || [ -d "$(store_of $run)" ]; then
			local o
			checks=$((checks + 1))
			ss check --store "$(store_of $run)" --json >"$work/cout" 2>"$work/cerr"
			local crc=$? p=0
			[ "$kind" = s3 ] && p=$(s3rver_partials "$work/cout")
			partial=$((partial + ${p:-0}))
			if [ "$torn_m" = 1 ] && [ "$(jnum snapshots_unreadable "$work/cout")" != 1 ]; then
				bad "run $i: check does not report s3rver's torn manifest: $(head -c 600 "$work/cout")"
			fi
			if [ "$crc" -ne 0 ] && [ "$(jnum problems "$work/cout")" != "$((${p:-0} + torn_m))" ]; then
				bad "run $i (killed at ${d} ms): check finds problems: $(head -c 600 "$work/cout") $(head -c 300 "$work/cerr")"
			fi
			o=$(jnum packs_orphaned "$work/cout")
			orphans=$((orphans + ${o:-0}))
		fi
		# (c) the same push again: succeeds, uploads only what is missing.
		if [ "$rc" -ne 0 ] && [ "$irc" -ne 0 ]; then
			if ss push "$work/img" "$snap" --store "$(store_of $run)" $force --json --quiet >"$work/rout" 2>"$work/rerr"; then
				local new
				new=$(jnum new_stored_bytes "$work/rout")
				if [ "${n:-0}" -ge 1 ]; then
					pack_kills=$((pack_kills + 1))
					if [ "$new" -lt "$cold" ]; then less=$((less + 1)); else
						bad "run $i (killed at ${d} ms, $n packs left): re-run stored $new bytes, cold push $cold"
					fi
					[ "$new" -le $((cold - nbytes + cold * 3 / 100)) ] ||
						bad "run $i: re-run stored $new bytes with $nbytes bytes of packs already there (cold $cold)"
				fi
				ss verify "$snap" --store "$(store_of $run)" --quiet >/dev/null 2>"$work/verr" ||
					bad "run $i: re-run snapshot does not verify: $(head -c 300 "$work/verr")"
				line=$(packs_check "$run") || [ "$kind" = s3 ] || bad "run $i: after re-run: $line"
			else
				bad "run $i (killed at ${d} ms): re-run failed: $(head -c 300 "$work/rerr")"
			fi
		fi
		cleanup_run "$run"
	done
}

pull_part() {
	local snap T=0 r t0 dt i d rc f
	snap="$(snap_of ref1)"   # the cold reference push, still there
	for r in 1 2; do
		rm -rf "$work/pull"; mkdir "$work/pull"
		t0=$(now_ms)
		"$S" pull "$snap" "$work/pull/out.img" --store "$(store_of ref1)" "${K[@]}" --quiet 2>"$work/err" ||
			{ bad "reference pull: $(cat "$work/err")"; return; }
		dt=$(($(now_ms) - t0))
		[ "$dt" -gt "$T" ] && T=$dt
	done
	cmp -s "$work/img" "$work/pull/out.img" || { bad "reference pull differs"; return; }
	echo "[$part] pull: ${T} ms; kills in [0, $T] ms"
	for i in $(seq 1 "$PULL_RUNS"); do
		rm -rf "$work/pull"; mkdir "$work/pull"
		d=$(rand_ms "$T")
		"$S" pull "$snap" "$work/pull/out.img" --store "$(store_of ref1)" "${K[@]}" --quiet 2>"$work/perr" &
		local pid=$!
		sleep "$(secs "$d")"
		kill -KILL "$pid" 2>/dev/null
		wait "$pid"
		rc=$?
		if [ "$rc" -eq 137 ]; then pull_kills=$((pull_kills + 1))
		elif [ "$rc" -eq 0 ]; then pull_done=$((pull_done + 1))
		else bad "pull run $i: exited $rc before the kill: $(head -c 300 "$work/perr")"; fi
		if [ -e "$work/pull/out.img" ]; then
			# Only a completed pull renames into place: then it is whole.
			cmp -s "$work/img" "$work/pull/out.img" ||
				bad "pull run $i (rc $rc, killed at ${d} ms): partial file under the final name"
		elif [ "$rc" -eq 0 ]; then
			bad "pull run $i: succeeded but out.img is missing"
		fi
		for f in "$work/pull"/* "$work/pull"/.[!.]*; do
			[ -e "$f" ] || continue
			case "$(basename "$f")" in
			out.img) ;;
			out.img.ss-tmp-*) pull_tmp_left=$((pull_tmp_left + 1)) ;;
			*) bad "pull run $i: unexpected leftover $(basename "$f")" ;;
			esac
		done
	done
	rm -rf "$work/pull"
}

save_counts() {
	echo "kills=$kills done_before_kill=$done_before_kill killed_committed=$killed_committed" \
		"pack_kills=$pack_kills less=$less tmp_left=$tmp_left pull_kills=$pull_kills" \
		"pull_done=$pull_done pull_tmp_left=$pull_tmp_left checks=$checks orphans=$orphans" \
		"s3rver_partial_puts=$partial s3rver_torn_manifests=$torn" \
		"fails=$fails" >"$work/counts.$part"
}

if [ "$part" = s3 ]; then
	# Inside tests/s3/harness.py: AWS_* and SS_S3_BUCKET point at s3rver.
	RANDOM=$((CRASH_SEED + 1))
	kind=s3
	push_part
	pull_part
	save_counts
	exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/ss-crash.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export work
export CRASH_SEED="${CRASH_SEED:-$(($(date +%s) % 30000))}"
RANDOM=$CRASH_SEED
echo "crash: seed $CRASH_SEED (CRASH_SEED=$CRASH_SEED replays), $RUNS push kills and $PULL_RUNS pull kills per store"
start=$(date +%s)
"$GEN" --size 128M --seed 5 --mix zero=10,dup=5,clone=5,text=20,struct=20,random=40 \
	--out "$work/img" --quiet || { echo "genimage failed"; exit 1; }

part=local kind=local
push_part
pull_part
save_counts

# The local store again, sealed: every pack, index object and manifest a
# killed push leaves is checked with the key.
kills=0 done_before_kill=0 killed_committed=0 pack_kills=0 less=0
pull_kills=0 pull_done=0 pull_tmp_left=0 tmp_left=0 checks=0 orphans=0 partial=0 torn=0 fails=0
head -c 32 /dev/urandom >"$work/key" && chmod 600 "$work/key"
K=(--key-file "$work/key")
RUNS="${CRASH_KEYED_RUNS:-10}" PULL_RUNS="${CRASH_KEYED_RUNS:-10}"
part=keyed kind=local
push_part
pull_part
save_counts
K=()

s3_part "$0" "$S" "$GEN"

# Summary over every part.
for p in local keyed s3; do [ -f "$work/counts.$p" ] && echo "[$p] $(cat "$work/counts.$p")"; done
F=$(total fails)
echo "crash summary: kills=$(total kills) kills_after_pack_stored=$(total pack_kills)" \
	"reruns_uploading_less_than_cold=$(total less) pull_kills=$(total pull_kills)" \
	"stores_checked_clean=$(total checks) (orphan packs seen $(total orphans)," \
	"truncated packs and index objects s3rver kept from killed uploads $(total s3rver_partial_puts)," \
	"truncated manifests $(total s3rver_torn_manifests))" \
	"failures=$F (also: push finished before the kill $(total done_before_kill)," \
	"killed after commit $(total killed_committed), store .tmp- files left $(total tmp_left)," \
	"pull finished before the kill $(total pull_done), pull *.ss-tmp-* left $(total pull_tmp_left))" \
	"in $(($(date +%s) - start)) s$s3note"
[ "$F" -eq 0 ] && exit 0 || exit 1
