#!/usr/bin/env bash
# Install what snapstream needs from Debian's archive (idempotent) and build
# it. Usage: scripts/setup.sh [build-dir] [extra meson options...]
set -euo pipefail
cd "$(dirname "$0")/.."

# Build and runtime dependencies, and the peers the benchmark compares with.
PKGS=(meson ninja-build pkg-config gcc liburing-dev libzstd-dev libxxhash-dev
      libprotobuf-c-dev protobuf-c-compiler xxhash zstd restic casync python3)

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "setup: installing ${missing[*]}" >&2
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

dir="${1:-build}"
shift || true
if [ ! -f "$dir/build.ninja" ]; then
	meson setup "$dir" -Dbuildtype=release "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log" >&2; exit 1; }
fi
ninja -C "$dir" | grep -E "warning|error" || true; test ${PIPESTATUS[0]} -eq 0
echo "setup: built $dir/cli/snapstream" >&2
