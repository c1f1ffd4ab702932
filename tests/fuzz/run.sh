#!/usr/bin/env bash
# Build the libFuzzer targets in tests/fuzz/ with clang (ASan + UBSan) and
# run each for a bounded time from its seed corpus.
#
# Usage: tests/fuzz/run.sh [target...]      (default: every fuzz_*.c)
# Environment:
#   FUZZ_SECONDS  seconds of fuzzing per target (default 15; 0: replay only)
#   FUZZ_KEEP     keep the work directory (built targets, grown corpora,
#                 crashing inputs) instead of deleting it
#   CC            the clang to use (default clang)
#
# First replays tests/fuzz/regress/<target>/* (inputs that once crashed),
# then fuzzes with tests/fuzz/corpus/<target>/ as seeds; the seed corpus
# in the repository is only read. Exit 0 when nothing was found, 1 on any
# crash, leak, timeout (-timeout=10) or out-of-memory (-rss_limit_mb=2048),
# 77 when clang or libFuzzer is missing (1 under SNAPSTREAM_TEST_STRICT,
# as scripts/test.sh runs it: tests/strict.sh). A crashing input is left in the
# work directory and named in the output: copy it to regress/<target>/.
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
seconds="${FUZZ_SECONDS:-15}"
CC="${CC:-clang}"

. "$here/../strict.sh"
skip() { cannot_run fuzz "$*"; }

command -v "$CC" >/dev/null 2>&1 || skip "$CC not found (apt-get install clang libclang-rt-14-dev)"
command -v protoc-c >/dev/null 2>&1 || skip "protoc-c not found"

work="$(mktemp -d "${TMPDIR:-/tmp}/ss-fuzz.XXXXXX")"
cleanup() { [ -n "${FUZZ_KEEP:-}" ] && echo "fuzz: work directory $work" >&2 || rm -rf "$work"; }
trap cleanup EXIT

# libFuzzer ships in compiler-rt; make sure this clang can link with it.
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n)\n{ (void)d; (void)n; return 0; }\n' >"$work/probe.c"
"$CC" -fsanitize=fuzzer,address,undefined "$work/probe.c" -o "$work/probe" >"$work/probe.log" 2>&1 ||
	skip "$CC cannot link -fsanitize=fuzzer,address,undefined (libFuzzer missing?): $(head -c 300 "$work/probe.log")"

pc() { pkg-config "$@" || { echo "fuzz: pkg-config $* failed" >&2; exit 1; }; }

# Generated protobuf-c code for the manifest, into the work directory.
protoc-c --proto_path="$root/proto" --c_out="$work" "$root/proto/snapshot.proto" ||
	{ echo "fuzz: protoc-c failed" >&2; exit 1; }

san="-fsanitize=address,undefined -fno-sanitize-recover=all"
common=(-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -Wall -Wextra
	-Wno-missing-field-initializers -I"$root" -I"$work" -I"$root/util" -I"$root/proto"
	-I"$root/backends" -I"$root/loop" -I"$root/engine" -I"$root/engine/core")

# Sources and libraries each target links; the project's own sources are
# compiled here, instrumented, rather than taken from meson's gcc build.
declare -A SRCS LIBS MAXLEN
SRCS[fuzz_manifest]="util/util.c proto/manifest.c proto/pack.c"
LIBS[fuzz_manifest]="libprotobuf-c libzstd libxxhash"
MAXLEN[fuzz_manifest]=16384
SRCS[fuzz_pack]="util/util.c proto/pack.c"
LIBS[fuzz_pack]="libxxhash"
MAXLEN[fuzz_pack]=65536
SRCS[fuzz_frame]="engine/core/frame.c"
LIBS[fuzz_frame]="libzstd libxxhash"
MAXLEN[fuzz_frame]=16384
# ss_location_parse consults the backend registry, so every backend links.
SRCS[fuzz_uri]="util/util.c loop/loop.c backends/backend.c backends/mem.c backends/local.c
	backends/http.c backends/curlfn.c backends/s3.c backends/s3xml.c backends/gauth.c
	util/cryptofn.c"
LIBS[fuzz_uri]="liburing libcurl expat json-c libcrypto"
MAXLEN[fuzz_uri]=4096
SRCS[fuzz_storecfg]="util/util.c util/cryptofn.c engine/core/chunkid.c engine/core/crypt.c"
LIBS[fuzz_storecfg]="libxxhash libcrypto"
MAXLEN[fuzz_storecfg]=8192
SRCS[fuzz_crypt]="util/util.c util/cryptofn.c engine/core/crypt.c"
LIBS[fuzz_crypt]="libcrypto"
MAXLEN[fuzz_crypt]=8192
# What a sealed store's readers parse once its objects authenticate.
SRCS[fuzz_sealed]="util/util.c util/cryptofn.c engine/core/chunkid.c engine/core/crypt.c
	engine/core/sealed.c proto/pack.c proto/manifest.c"
LIBS[fuzz_sealed]="libcrypto libxxhash libprotobuf-c libzstd"
MAXLEN[fuzz_sealed]=16384
SRCS[fuzz_gvstate]="util/util.c util/cryptofn.c engine/core/gvstate.c"
LIBS[fuzz_gvstate]="libdeflate libcrypto"
MAXLEN[fuzz_gvstate]=65536
SRCS[fuzz_s3xml]="backends/s3xml.c"
LIBS[fuzz_s3xml]="expat"
MAXLEN[fuzz_s3xml]=16384

if (($#)); then
	targets=("$@")
else
	targets=()
	for f in "$here"/fuzz_*.c; do targets+=("$(basename "$f" .c)"); done
fi

build() {
	local t="$1" objs=() s o
	mkdir -p "$work/obj/$t"
	for s in ${SRCS[$t]}; do
		o="$work/obj/$t/$(basename "$s" .c).o"
		"$CC" "${common[@]}" $san -fsanitize=fuzzer-no-link $(pc --cflags ${LIBS[$t]}) \
			-c "$root/$s" -o "$o" || return 1
		objs+=("$o")
	done
	if [ "$t" = fuzz_manifest ] || [ "$t" = fuzz_sealed ]; then
		"$CC" "${common[@]}" $san -fsanitize=fuzzer-no-link $(pc --cflags libprotobuf-c) \
			-Wno-unused-parameter -c "$work/snapshot.pb-c.c" -o "$work/obj/$t/pb.o" || return 1
		objs+=("$work/obj/$t/pb.o")
	fi
	"$CC" "${common[@]}" $san -fsanitize=fuzzer $(pc --cflags ${LIBS[$t]}) \
		"$here/$t.c" "${objs[@]}" $(pc --libs ${LIBS[$t]}) -lpthread -ldl -o "$work/$t"
}

echo "fuzz: building ${targets[*]} with $("$CC" --version | head -1)" >&2
pids=()
for t in "${targets[@]}"; do
	[ -n "${SRCS[$t]+x}" ] || { echo "fuzz: unknown target $t" >&2; exit 1; }
	(build "$t" >"$work/build-$t.log" 2>&1) &
	pids+=($!)
done
i=0
for t in "${targets[@]}"; do
	if ! wait "${pids[$i]}"; then
		cat "$work/build-$t.log" >&2
		echo "fuzz: building $t failed" >&2
		exit 1
	fi
	i=$((i + 1))
done

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:allocator_may_return_null=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
lim=(-timeout=10 -rss_limit_mb=2048)

fail=0
summary=()
for t in "${targets[@]}"; do
	bin="$work/$t"
	mkdir -p "$work/art/$t" "$work/corpus/$t"
	# 1. Regression inputs: each must now run clean.
	reg=("$here/regress/$t"/*)
	if [ -e "${reg[0]}" ]; then
		if ! "$bin" "${lim[@]}" "${reg[@]}" >"$work/regress-$t.log" 2>&1; then
			tail -n 60 "$work/regress-$t.log" >&2
			echo "fuzz: $t: a regression input fails again" >&2
			fail=1
			summary+=("$t: REGRESSION")
			continue
		fi
		echo "fuzz: $t: ${#reg[@]} regression input(s) clean" >&2
	fi
	((seconds > 0)) || { summary+=("$t: replay only"); continue; }
	# 2. Fuzz. New inputs go to the work copy (first directory); the
	#    repository's seeds are read only.
	"$bin" "${lim[@]}" -max_len="${MAXLEN[$t]}" -max_total_time="$seconds" \
		-print_final_stats=1 -artifact_prefix="$work/art/$t/" \
		"$work/corpus/$t" "$here/corpus/$t" >"$work/fuzz-$t.log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/fuzz-$t.log" | tail -1)
	cov=$(grep -o 'cov: [0-9]*' "$work/fuzz-$t.log" | tail -1)
	if [ "$rc" -ne 0 ]; then
		tail -n 60 "$work/fuzz-$t.log" >&2
		FUZZ_KEEP=1
		echo "fuzz: $t FAILED (exit $rc); inputs: $(ls "$work/art/$t" | sed "s|^|$work/art/$t/|" | tr '\n' ' ')" >&2
		echo "fuzz: keep each as tests/fuzz/regress/$t/<name> once fixed" >&2
		fail=1
		summary+=("$t: FAILED")
	else
		summary+=("$t: ${execs:-?} executions in ${seconds}s, ${cov:-cov: ?}, corpus $(ls "$work/corpus/$t" | wc -l) new")
	fi
done
printf 'fuzz: %s\n' "${summary[@]}"
exit "$fail"
