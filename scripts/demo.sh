#!/usr/bin/env bash
# The main job, end to end: build, generate a memory-like checkpoint image,
# push it into the embedded local store, pull it back, check it byte for
# byte, and print the figures.
# Usage: scripts/demo.sh [size, default 512M]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
size="${1:-512M}"
S=build/cli/snapstream
work="$(mktemp -d "${TMPDIR:-/tmp}/snapstream-demo.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "== generating a $size memory-like image (zero, repeated, text-like and random pages)"
build/bench/ss-genimage --size "$size" --seed 1 --out "$work/pages.img"
echo "== push (store: $work/snaps/.snapstream)"
$S push "$work/pages.img" "$work/snaps/demo-1"
echo "== push the same image again: nothing new is stored"
$S push "$work/pages.img" "$work/snaps/demo-2"
echo "== pull"
$S pull "$work/snaps/demo-1" "$work/restored.img"
cmp "$work/pages.img" "$work/restored.img"
echo "== restored image is byte-identical"
echo "   image: $(du -h --apparent-size "$work/pages.img" | cut -f1) logical," \
	"$(du -h "$work/restored.img" | cut -f1) on disk after pull (zero pages are holes)"
echo "   store: $(du -sh "$work/snaps/.snapstream" | cut -f1) for both snapshots"
