#!/usr/bin/env bash
# gc under load: `snapstream gc` runs in a loop, with a short grace period,
# while worker processes push (files and stdin, with their own and each
# other's snapshots as --parent), pull, cat, verify and remove snapshots of
# one store. Half the images are identical across workers, so pushes
# deduplicate against packs that other workers' removals are making
# unreferenced -- the race gc's two phases exist for.
#
# Proves: no push, pull, cat or verify of a snapshot that exists ever fails
# with an integrity error or a missing pack; gc never fails; gc did delete
# packs during the run; afterwards every remaining snapshot verifies and
# restores byte-exact, two more gc runs leave no unreferenced pack, and no
# index object lists a pack that is gone. (With GRACE=0 -- a gc that
# deletes whatever is unreferenced at once -- this test reports missing
# packs within a few rounds: it does catch the race.)
# Usage: gc_stress.sh <snapstream> <ss-genimage> [workers] [min rounds]
set -uo pipefail
S="$(realpath "$1")"
GEN="$(realpath "$2")"
N="${3:-3}"
ITER="${4:-6}"
GRACE=3      # seconds; every push, pull and verify here takes well under 1 s
# Long enough for removals to expire, be hidden and deleted while the load
# goes on; on a slow machine (or under TSan) the load goes on until a gc
# run has deleted something, for at most a minute more.
DEADLINE=$(($(date +%s) + 4 * GRACE + 2))
HARD_DEADLINE=$((DEADLINE + 60))
PY=/usr/bin/python3
HERE="$(dirname "$(realpath "$0")")"
work="$(mktemp -d "${TMPDIR:-/tmp}/ss-gcstress.XXXXXX")"
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
cd "$work"
export SNAPSTREAM_NO_FSYNC=1 SNAPSTREAM_THREADS=2 SNAPSTREAM_QUIET=1
STORE=snaps/.snapstream
fail() { echo "$*" >>failures; }

"$GEN" --size 6M --seed 1 --out base --quiet || { echo "genimage failed"; exit 1; }

worker() {
	local w=$1 k=0 seed img name other prev rc
	while ((k < ITER || $(date +%s) < DEADLINE)) ||
		{ [ ! -e deleted ] && (($(date +%s) < HARD_DEADLINE)); }; do
		k=$((k + 1))
		# Even rounds: the same image in every worker (shared chunks).
		if ((k % 2 == 0)); then seed=$k; else seed=$((w * 100 + k)); fi
		img=img-$w-$k
		"$GEN" --dirty 0.15 --base base --seed "$seed" --out "$img" --quiet || fail "genimage $img"
		name=snaps/w$w-$k
		other=snaps/w$((w % N + 1))-$((k - 1))
		prev=()
		((k > 1)) && prev=(--parent "snaps/w$w-$((k - 1))")
		if ((k % 3 == 0)); then
			prev+=(--parent "$other")   # may be removed under our feet
		fi
		if ((k % 2)); then
			"$S" push - "$name" "${prev[@]}" --name pages.img <"$img" 2>"err-$w"
		else
			"$S" push "$img" "$name" "${prev[@]}" 2>"err-$w"
		fi
		rc=$?
		if [ "$rc" -eq 3 ]; then
			# A parent was removed first (by the other worker): push without.
			"$S" push "$img" "$name" 2>"err-$w"
			rc=$?
		fi
		[ "$rc" -eq 0 ] || { fail "push $name: exit $rc: $(cat "err-$w")"; continue; }
		"$S" pull "$name" "out-$w" --force 2>"err-$w" || fail "pull $name: $(cat "err-$w")"
		cmp -s "$img" "out-$w" || fail "pull $name: bytes differ"
		if ((k % 3 == 1)); then
			"$S" cat "$name" | cmp -s - "$img" || fail "cat $name differs or failed"
		fi
		# Another worker's snapshot: gone (3) is fine, damaged (4) is not.
		"$S" verify "$other" 2>"err-$w"
		rc=$?
		[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || fail "verify $other: exit $rc: $(cat "err-$w")"
		if ((k > 2)); then
			"$S" rm "snaps/w$w-$((k - 2))" 2>"err-$w" || fail "rm w$w-$((k - 2)): $(cat "err-$w")"
			rm -f "img-$w-$((k - 2))"
		fi
	done
}

gc_loop() {
	local i=0
	while [ ! -e done ]; do
		"$S" gc --store "$STORE" --grace "${GRACE}s" --json >"gc-$i.json" 2>"gc-err" ||
			fail "gc run $i: $(cat gc-err)"
		grep -Eq '"packs_deleted": *[1-9]' "gc-$i.json" && touch deleted
		i=$((i + 1))
		sleep 0.2
	done
}

mkdir -p "$STORE"   # an empty store: gc has something to look at from the start
gc_loop &
gcpid=$!
pids=()
for w in $(seq 1 "$N"); do
	worker "$w" &
	pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
touch done
wait "$gcpid"
runs=$(ls gc-*.json | wc -l)

# Everything removed is now unreferenced: its records expire after the
# grace period, one gc hides its packs, the next one after another period
# deletes them.
sleep $((GRACE + 1))
"$S" gc --store "$STORE" --grace "${GRACE}s" --json >gc-final1.json || fail "final gc 1"
sleep $((GRACE + 1))
"$S" gc --store "$STORE" --grace "${GRACE}s" --json >gc-final2.json || fail "final gc 2"
"$S" gc --store "$STORE" --grace "${GRACE}s" --json >gc-final3.json || fail "final gc 3"

$PY - "$N" "$runs" <<'PY' || fail "gc accounting"
import glob, json, sys
n, runs = int(sys.argv[1]), int(sys.argv[2])
deleted = 0
for f in glob.glob("gc-*.json"):
    j = json.load(open(f))
    assert j["ok"], f
    deleted += j["packs_deleted"]
during = sum(json.load(open(f))["packs_deleted"] for f in glob.glob("gc-[0-9]*.json"))
rescued = sum(json.load(open(f))["packs_rescued"] for f in glob.glob("gc-*.json"))
last = json.load(open("gc-final3.json"))
print(f"gc: {runs} runs under load deleted {during} packs, {deleted} in all; "
      f"rescued {rescued}; left {last['packs']} packs, {last['packs_referenced']} referenced")
assert during > 0, "gc deleted nothing while the workers ran"
assert last["packs"] == last["packs_referenced"], "unreferenced packs left"
assert last["packs_pending"] == 0 and last["snapshots"] == 2 * n, last
PY

# Every snapshot left verifies and restores what was pushed.
"$S" ls snaps --json >ls.json || fail "ls"
left=$($PY -c 'import json; print(" ".join(s["snapshot"] for s in json.load(open("ls.json"))["snapshots"]))')
count=0
for uri in $left; do
	count=$((count + 1))
	"$S" verify "$uri" 2>err || fail "verify $uri after the run: $(cat err)"
	n=${uri##*/}      # w<w>-<k>
	"$S" pull "$uri" check.img --force 2>err && cmp -s check.img "img-${n#w}" ||
		fail "pull $uri after the run: $(cat err)"
done
[ "$count" -eq $((2 * N)) ] || fail "expected $((2 * N)) snapshots, found $count"

idx=$($PY "$HERE/check_obj.py" "$STORE" index-ok 2>&1) || fail "index objects: $idx"

if [ -s failures ]; then
	echo "gc_stress: FAILED" >&2
	cat failures >&2
	exit 1
fi
echo "gc_stress: $N workers, $runs gc runs under load; every snapshot verifies"
