#!/usr/bin/env bash
# Load (issue 6, requirement 5): 8 concurrent pushes and 8 concurrent pulls
# of different images against one store, on the local store and on s3rver.
# Usage: load.sh <snapstream> <ss-genimage>
#
# Images: base (96 MiB), d1..d5 (base with 3-12 % of its pages rewritten,
# independently), u1, u2 (64 MiB, unrelated): 8 images that share most of
# their content, so dedup across them is measurable. Per store kind:
#
#  seq    the 8 pushed one after the other into an empty store: the
#         reference for what dedup across them stores (local only; the s3
#         part reuses the figure, which does not depend on the backend).
#  cold   the 8 pushed at once into one empty store: all succeed; the store
#         must hold at most seq + 5 % (+ 1 MiB): pushes running at the same
#         time agree on who stores each shared chunk (engine/push/claims.h).
#  mixed  at the same time, 8 pulls of the cold snapshots to 8 destinations
#         and 8 pushes of the same images under new names: every pull equals
#         its image byte for byte (cmp), every push stores 0 new bytes.
#         Then every one of the 16 snapshots verifies, and `gc --dry-run`
#         finds every pack referenced, none pending, no dangling ref, and
#         `snapstream check` passes.
#  warm   base pushed alone, then the other 7 at once: they must store at
#         most what they stored in seq + 2 % (+ 1 MiB).
#  same   8 pushes of base at once under 8 names into an empty store: the
#         store must hold about one copy (<= 1.10 x base's cold push); all
#         8 verify and pull byte-exact (one pull each).
#  killed (local) a push of a 512 MiB random image is stopped once its first
#         pack has landed, so it holds claims it has not landed (chunking
#         runs ahead of packing); a second push of the image starts and
#         waits for those claims (it must take over a second, the time
#         until the first is killed): it then stores the chunks itself and
#         succeeds, pulls byte-exact, the store checks clean and holds one
#         copy (<= 1.10 x the image).
#
# LOAD_DIVISOR=N (1-8) divides every image size by N (default 1): the
# ThreadSanitizer run of scripts/test.sh uses a smaller load, as TSan runs
# the engine about ten times slower and the threads, not the bytes, are
# what it checks.
#
# Prints every figure (bytes stored, ratios, wall times) on "[kind]" lines.
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
IMGS="base d1 d2 d3 d4 d5 u1 u2"

fig() { echo "[$part] $*"; }
# Commands that must finish: a hang (exit 124) is a failure, not a stuck test.
ss() { timeout -k 5 300 "$S" "$@"; }
now_ms() { date +%s%3N; }
jnum() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" "$2"; }
secs() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b ? a / b : 0 }'; }

snap_of() { # <phase> <name>
	if [ "$kind" = s3 ]; then echo "s3://$SS_S3_BUCKET/$1/$2"; else echo "$work/L/$1/$2"; fi
}
store_of() {
	if [ "$kind" = s3 ]; then echo "s3://$SS_S3_BUCKET/$1/.snapstream"; else echo "$work/L/$1/.snapstream"; fi
}
drop_phase() { # keeps the disk (and s3rver's) footprint to one phase
	if [ "$kind" = s3 ]; then $PY "$HERE/crash_packs.py" s3-purge "$SS_S3_BUCKET" "$1" >/dev/null || true
	else rm -rf "$work/L/$1"; fi
}

# push_conc <phase> <tag> <img>:<name>... : all at once; every one must
# succeed. Leaves the JSON results in $out/<phase>.<name>.json and the
# sum of new_stored_bytes in $sum; prints the wall time.
push_conc() {
	local phase="$1" tag="$2" t0 spec img name pids=() names=()
	shift 2
	t0=$(now_ms)
	for spec in "$@"; do
		img="${spec%%:*}" name="${spec#*:}"
		ss push "$work/img/$img" "$(snap_of "$phase" "$name")" --store "$(store_of "$phase")" \
			--json --quiet >"$out/$phase.$name.json" 2>"$out/$phase.$name.err" &
		pids+=($!) names+=("$name")
	done
	local i rc n
	sum=0
	for i in "${!pids[@]}"; do
		wait "${pids[$i]}"
		rc=$?
		name="${names[$i]}"
		if [ "$rc" -ne 0 ]; then
			bad "$tag: push $name exited $rc: $(head -c 400 "$out/$phase.$name.err")"
			continue
		fi
		n=$(jnum new_stored_bytes "$out/$phase.$name.json")
		sum=$((sum + ${n:-0}))
	done
	fig "$tag: $# pushes at once in $(secs $(($(now_ms) - t0))) s, new_stored_bytes sum $sum"
}

# gc_ok <phase> <expected snapshots>: the store is consistent.
gc_ok() {
	local phase="$1" want="$2" f="$out/gc.$1.json" packs ref pend dang snaps pbytes
	if ! ss gc --store "$(store_of "$phase")" --dry-run --json >"$f" 2>"$out/gc.err"; then
		bad "$phase: gc --dry-run failed: $(head -c 400 "$out/gc.err") $(head -c 400 "$f")"
		return
	fi
	packs=$(jnum packs "$f") ref=$(jnum packs_referenced "$f") pend=$(jnum packs_pending "$f")
	dang=$(jnum refs_dangling "$f") snaps=$(jnum snapshots "$f") pbytes=$(jnum pack_bytes "$f")
	fig "$phase: gc --dry-run: $snaps snapshots, $ref of $packs packs referenced, $pbytes pack bytes, $pend pending, $dang dangling refs"
	grep -q '"ok":true' "$f" || bad "$phase: gc --dry-run not ok: $(cat "$f")"
	[ "${packs:-x}" = "${ref:-y}" ] || bad "$phase: gc finds $packs packs but $ref referenced"
	[ "${pend:-1}" = 0 ] || bad "$phase: gc would hide $pend packs"
	[ "${dang:-1}" = 0 ] || bad "$phase: gc finds $dang dangling refs"
	[ "${snaps:-0}" = "$want" ] || bad "$phase: gc sees $snaps snapshots, want $want"
	[ "${pbytes:-0}" -gt 0 ] || bad "$phase: gc reports no pack bytes"
	# The store-wide check, once it exists (another change adds it).
	if "$S" check --help >/dev/null 2>&1; then
		ss check --store "$(store_of "$phase")" >"$out/check.out" 2>&1 ||
			bad "$phase: snapstream check: $(head -c 600 "$out/check.out")"
		fig "$phase: snapstream check: $(tail -n 1 "$out/check.out")"
	fi
}

# verify_all <phase> <name>...: every snapshot verifies (4 at a time).
verify_all() {
	local phase="$1" name pids=() names=() i rc
	shift
	for name in "$@"; do
		ss verify "$(snap_of "$phase" "$name")" --store "$(store_of "$phase")" --quiet >"$out/v.$name.out" 2>&1 &
		pids+=($!) names+=("$name")
		if [ "${#pids[@]}" -ge 4 ]; then
			for i in "${!pids[@]}"; do
				wait "${pids[$i]}" || bad "$phase: verify ${names[$i]}: $(head -c 400 "$out/v.${names[$i]}.out")"
			done
			pids=() names=()
		fi
	done
	for i in "${!pids[@]}"; do
		wait "${pids[$i]}" || bad "$phase: verify ${names[$i]}: $(head -c 400 "$out/v.${names[$i]}.out")"
	done
}

run_part() {
	local t_part img specs spec n sum seq_sum seq_base cold_sum lim warm_lim pid
	t_part=$(now_ms)
	out="$work/out.$kind"
	mkdir -p "$out" "$work/pull"

	# seq: the reference. Computed on the local store; the s3 part reads it.
	if [ "$kind" = local ]; then
		local t0 total=0
		t0=$(now_ms)
		for img in $IMGS; do
			ss push "$work/img/$img" "$(snap_of seq "$img")" --store "$(store_of seq)" \
				--json --quiet >"$out/seq.$img.json" 2>"$out/seq.$img.err" ||
				{ bad "seq push $img: $(head -c 400 "$out/seq.$img.err")"; return; }
			n=$(jnum new_stored_bytes "$out/seq.$img.json")
			total=$((total + n))
			echo "$img $n" >>"$work/seq.figures"
		done
		fig "seq: 8 pushes one after the other in $(secs $(($(now_ms) - t0))) s, new_stored_bytes: $(tr '\n' ' ' <"$work/seq.figures")= $total"
		drop_phase seq
	fi
	seq_sum=$(awk '{s += $2} END {print s + 0}' "$work/seq.figures")
	seq_base=$(awk '$1 == "base" {print $2}' "$work/seq.figures")
	[ "$seq_sum" -gt 0 ] || { bad "no sequential reference"; return; }

	# cold: 8 different images at once into one empty store.
	specs=()
	for img in $IMGS; do specs+=("$img:$img"); done
	push_conc cold cold "${specs[@]}"
	cold_sum=$sum
	lim=$((seq_sum + seq_sum / 20 + 1048576))
	fig "cold: stored $cold_sum bytes concurrently vs $seq_sum sequentially (ratio $(pct "$cold_sum" "$seq_sum"); bound $lim)"
	[ "$cold_sum" -le "$lim" ] ||
		bad "cold: 8 concurrent pushes stored $cold_sum bytes, sequential pushes $seq_sum (ratio $(pct "$cold_sum" "$seq_sum"), bound 1.05)"

	# mixed: 8 pulls of the cold snapshots while the same 8 images are
	# pushed again under new names.
	local t0 pids=() names=() i rc
	t0=$(now_ms)
	for img in $IMGS; do
		rm -f "$work/pull/$img"
		ss pull "$(snap_of cold "$img")" "$work/pull/$img" --store "$(store_of cold)" --quiet >"$out/pull.$img.out" 2>&1 &
		pids+=($!) names+=("$img")
	done
	specs=()
	for img in $IMGS; do specs+=("$img:again-$img"); done
	push_conc cold mixed "${specs[@]}"
	for i in "${!pids[@]}"; do
		wait "${pids[$i]}"
		rc=$?
		img="${names[$i]}"
		if [ "$rc" -ne 0 ]; then
			bad "mixed: pull $img exited $rc: $(head -c 400 "$out/pull.$img.out")"
		elif ! cmp -s "$work/img/$img" "$work/pull/$img"; then
			bad "mixed: pull of $img differs from the image"
		fi
		rm -f "$work/pull/$img"
	done
	fig "mixed: 8 pulls and 8 pushes at once in $(secs $(($(now_ms) - t0))) s; every pull compared with cmp; re-pushes stored $sum bytes"
	[ "$sum" -eq 0 ] || bad "mixed: pushing the 8 images again stored $sum bytes, want 0"
	for img in $IMGS; do
		[ -e "$work/pull/$img" ] && bad "mixed: $img left in the pull directory"
	done
	n=$(find "$work/pull" -mindepth 1 | wc -l)
	[ "$n" -eq 0 ] || bad "mixed: $n leftovers in the pull directory: $(ls -A "$work/pull" | head -5)"
	t0=$(now_ms)
	local all=()
	for img in $IMGS; do all+=("$img" "again-$img"); done
	verify_all cold "${all[@]}"
	fig "cold: 16 snapshots verified in $(secs $(($(now_ms) - t0))) s"
	gc_ok cold 16
	drop_phase cold

	# warm: base alone, then the other 7 at once.
	push_conc warm warm-base base:base
	specs=()
	for img in $IMGS; do [ "$img" = base ] || specs+=("$img:$img"); done
	push_conc warm warm "${specs[@]}"
	warm_lim=$((seq_sum - seq_base))
	fig "warm: 7 pushes at once onto base stored $sum bytes vs $warm_lim sequentially (ratio $(pct "$sum" "$warm_lim"))"
	[ "$sum" -le $((warm_lim + warm_lim / 50 + 1048576)) ] ||
		bad "warm: 7 concurrent pushes onto a store holding base stored $sum bytes, sequential $warm_lim (bound 1.02)"
	[ "$sum" -gt 0 ] || bad "warm: the 7 pushes stored nothing (the images are not different?)"
	verify_all warm $IMGS
	gc_ok warm 8
	drop_phase warm

	# same: one image, 8 names, at once.
	specs=()
	for i in 1 2 3 4 5 6 7 8; do specs+=("base:s$i"); done
	push_conc same same "${specs[@]}"
	fig "same: 8 concurrent pushes of base stored $sum bytes; one cold push stores $seq_base (copies $(pct "$sum" "$seq_base"))"
	[ "$sum" -le $((seq_base + seq_base / 10)) ] ||
		bad "same: 8 concurrent pushes of one image stored $sum bytes = $(pct "$sum" "$seq_base") copies, want <= 1.10"
	verify_all same s1 s2 s3 s4 s5 s6 s7 s8
	gc_ok same 8
	pids=()
	for i in 1 2 3 4 5 6 7 8; do
		ss pull "$(snap_of same s$i)" "$work/pull/s$i" --store "$(store_of same)" --quiet >"$out/pull.s$i.out" 2>&1 &
		pids+=($!)
	done
	for i in 1 2 3 4 5 6 7 8; do
		wait "${pids[$((i - 1))]}" || bad "same: pull s$i: $(head -c 400 "$out/pull.s$i.out")"
		cmp -s "$work/img/base" "$work/pull/s$i" || bad "same: pull s$i differs from base"
		rm -f "$work/pull/s$i"
	done
	drop_phase same
	[ "$kind" = local ] && killed_phase
	fig "done in $(secs $(($(now_ms) - t_part))) s: fails=$fails"
}

# killed: see the header. The claims do not depend on the backend, so the
# local store, where a landed pack can be watched for, is enough.
killed_phase() {
	local st img="$work/img/rand" pa pb i n size pbytes secs_b f="$out/gc.killed.json"
	st="$(store_of killed)"
	size=$(stat -c %s "$img")
	# Not through ss: the signals must reach snapstream, not timeout(1).
	"$S" push "$img" "$(snap_of killed a)" --store "$st" --threads 1 --quiet \
		>"$out/killed.a.out" 2>&1 &
	pa=$!
	for i in $(seq 1 2000); do
		n=$(find "$st/packs" -type f -regextype egrep -regex '.*/[0-9a-f]{32}' 2>/dev/null | wc -l)
		[ "$n" -gt 0 ] && break
		kill -0 "$pa" 2>/dev/null || break
		sleep 0.01
	done
	if [ "${n:-0}" -eq 0 ] || ! kill -STOP "$pa" 2>/dev/null; then
		bad "killed: the first push ended before its first pack could be seen ($(head -c 300 "$out/killed.a.out"))"
		wait "$pa"
		return
	fi
	ss push "$img" "$(snap_of killed b)" --store "$st" --json --quiet \
		>"$out/killed.b.json" 2>"$out/killed.b.err" &
	pb=$!
	sleep 1
	kill -KILL "$pa"
	wait "$pa" 2>/dev/null
	if ! wait "$pb"; then
		bad "killed: the second push failed: $(head -c 400 "$out/killed.b.err")"
		return
	fi
	[ -e "$(snap_of killed a)/manifest" ] && bad "killed: the killed push left a snapshot"
	secs_b=$(sed -n 's/.*"seconds":\([0-9.]*\).*/\1/p' "$out/killed.b.json")
	awk -v s="${secs_b:-0}" 'BEGIN { exit !(s >= 0.9) }' ||
		bad "killed: the second push took ${secs_b:-?} s: it did not wait for the stopped push's claims"
	ss pull "$(snap_of killed b)" "$work/pull/rand" --store "$st" --quiet >"$out/pull.killed.out" 2>&1 ||
		bad "killed: pull: $(head -c 400 "$out/pull.killed.out")"
	cmp -s "$img" "$work/pull/rand" || bad "killed: the pull differs from the image"
	rm -f "$work/pull/rand"
	gc_ok killed 1
	pbytes=$(jnum pack_bytes "$f")
	fig "killed: the second push waited $secs_b s for the stopped push's claims, then stored $(jnum new_stored_bytes "$out/killed.b.json") bytes; the store holds $pbytes pack bytes for a $size-byte image (copies $(pct "$pbytes" "$size"))"
	[ "${pbytes:-0}" -le $((size + size / 10)) ] ||
		bad "killed: the store holds $pbytes bytes for one $size-byte image"
	drop_phase killed
}

save_counts() { echo "fails=$fails" >"$work/counts.$part"; }

if [ "$part" = s3 ]; then
	# Inside tests/s3/harness.py: AWS_* and SS_S3_BUCKET point at s3rver.
	kind=s3
	run_part
	save_counts
	exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/ss-load.XXXXXX")"
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
export work
start=$(now_ms)
mkdir -p "$work/img"
div="${LOAD_DIVISOR:-1}"
# At most 8: the killed phase needs an image of several 32 MiB packs.
[[ "$div" =~ ^[1-8]$ ]] || { echo "FAIL: LOAD_DIVISOR=$div: want 1 to 8" >&2; exit 1; }
{
	"$GEN" --size $((96 / div))M --seed 61 --out "$work/img/base" --quiet &&
	"$GEN" --dirty 0.03 --base "$work/img/base" --seed 62 --out "$work/img/d1" --quiet &&
	"$GEN" --dirty 0.05 --base "$work/img/base" --seed 63 --out "$work/img/d2" --quiet &&
	"$GEN" --dirty 0.08 --base "$work/img/base" --seed 64 --out "$work/img/d3" --quiet &&
	"$GEN" --dirty 0.10 --base "$work/img/base" --seed 65 --out "$work/img/d4" --quiet &&
	"$GEN" --dirty 0.12 --base "$work/img/base" --seed 66 --out "$work/img/d5" --quiet &&
	"$GEN" --size $((64 / div))M --seed 67 --out "$work/img/u1" --quiet &&
	"$GEN" --size $((64 / div))M --seed 68 --out "$work/img/u2" --quiet
	head -c $((512 / div))M /dev/urandom >"$work/img/rand"
} || { echo "genimage failed" >&2; exit 1; }
# The images must really differ from one another.
n=$(for img in $IMGS; do cksum <"$work/img/$img"; done | sort -u | wc -l)
[ "$n" -eq 8 ] || { echo "FAIL: only $n distinct images" >&2; exit 1; }

part=local kind=local
run_part
save_counts

s3_part "$0" "$S" "$GEN"

F=$(total fails)
echo "load summary: failures=$F in $(secs $(($(now_ms) - start))) s$s3note"
[ "$F" -eq 0 ] && exit 0 || exit 1
