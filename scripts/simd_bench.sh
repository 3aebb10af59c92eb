#!/usr/bin/env bash
# flex with and without the AVX-512 kernels of its matrix-product crate (#9: "flex with its
# SIMD options"). burn-flex's `x86-v4` feature compiles `gemm`'s AVX-512 microkernels in;
# `gemm` picks them at run time when the CPU has avx512f, so such a binary still runs on any
# x86-64. Builds `bench` both ways (the second build only re-compiles gemm, burn-flex and
# this crate), then times the two binaries in alternating rounds, since this machine's speed
# drifts, and writes the figures to assets/bench_flex_simd.txt. About 15 minutes on 2 cores
# when the second build is not cached.
#
#   bash scripts/simd_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/groupface-target}"
bins="$(mktemp -d)"
trap 'rm -rf "$bins"' EXIT
cargo build --release --quiet --bin bench --features burn-flex/x86-v4
cp "$CARGO_TARGET_DIR/release/bench" "$bins/x86-v4"
# The default build last, so the default binary is the one left in the target directory.
cargo build --release --quiet --bin bench
cp "$CARGO_TARGET_DIR/release/bench" "$bins/default"
out=assets/bench_flex_simd.txt
commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo '+changes')"
rounds=3
{
    echo "# commit $commit, $(date -u +%Y-%m-%d), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    echo "# CPU flags: $(grep -m1 -o -w 'avx512f' /proc/cpuinfo || echo 'no avx512f') $(grep -m1 -o -w 'avx512_bf16' /proc/cpuinfo || true)"
    echo "\$ cargo build --release --bin bench                                # default"
    echo "\$ cargo build --release --bin bench --features burn-flex/x86-v4    # x86-v4"
    echo "# images/s of each binary in $rounds alternating rounds (peak RSS in MiB in brackets)"
    for args in \
        "backbone=tiny groups=32 batch=32 steps=30 warmup=2" \
        "backbone=r18 groups=0 batch=32 steps=2 warmup=1"; do
        echo "\$ bench $args"
        declare -A row=()
        for _ in $(seq "$rounds"); do
            for build in default x86-v4; do
                # shellcheck disable=SC2086
                figure="$("$bins/$build" $args 2>/dev/null | python3 -c '
import json, sys
d = json.loads(sys.stdin.readline())
print("%.2f (%d)" % (d["images_per_second"], d["peak_memory_bytes"] >> 20))')"
                row[$build]="${row[$build]:-}  $figure"
            done
        done
        for build in default x86-v4; do
            printf '%-8s%s\n' "$build" "${row[$build]}"
        done
        unset row
    done
} >"$out"
cat "$out"
