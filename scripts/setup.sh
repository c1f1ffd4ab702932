#!/usr/bin/env bash
# Install what snapstream needs from Debian's archive (idempotent) and build
# it. Usage: scripts/setup.sh [build-dir] [extra meson options...]
set -euo pipefail
cd "$(dirname "$0")/.."

# Build and runtime dependencies, and the peers the benchmark compares with.
PKGS=(meson ninja-build pkg-config gcc liburing-dev libzstd-dev libxxhash-dev
      libprotobuf-c-dev protobuf-c-compiler xxhash zstd restic casync python3
      # gVisor state files are inflated on push and framed again on pull.
      libdeflate-dev
      # Object stores: libcurl's multi interface and SigV4, expat for S3's
      # XML, json-c and OpenSSL for GCS tokens; awscli and botocore for the
      # tests that check our objects and signatures against AWS's own tools.
      libcurl4-openssl-dev libexpat1-dev libjson-c-dev libssl-dev openssl ca-certificates
      awscli python3-botocore
      # tests/fdigest.py: a file's digest made without snapstream.
      python3-xxhash
      # The object-store benchmark's second peer (bench/run, s3rver rows).
      rclone
      # The benchmark report's charts (bench/run writes them with gnuplot).
      gnuplot-nox
      # ateom: gRPC core and protoc for its server; gVisor's runsc, a static
      # busybox for the test sandbox, grpcio and protobuf for the test client.
      libgrpc-dev protobuf-compiler python3-grpcio python3-protobuf runsc busybox-static
      # ateom restores while pulling through a FUSE file (libfuse3; fuse3 for
      # /dev/fuse's group and fusermount3, which tests use to check mounts).
      libfuse3-dev fuse3
      # The libFuzzer targets (tests/fuzz/run.sh): clang and compiler-rt,
      # which carries libFuzzer and the sanitizers on Debian 12.
      clang libclang-rt-14-dev)

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

# s3rver (a real S3 server for the tests), pinned by tests/s3/package-lock.json.
# Node may come from elsewhere than Debian; install Debian's only if absent.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -f tests/s3/node_modules/.package-lock.json ] ||
	[ tests/s3/package-lock.json -nt tests/s3/node_modules/.package-lock.json ]; then
	echo "setup: npm ci in tests/s3" >&2
	(cd tests/s3 && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

dir="${1:-build}"
shift || true
if [ ! -f "$dir/build.ninja" ]; then
	meson setup "$dir" -Dbuildtype=release "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log" >&2; exit 1; }
fi
ninja -C "$dir" | grep -E "warning|error" || true; test ${PIPESTATUS[0]} -eq 0
echo "setup: built $dir/cli/snapstream" >&2
