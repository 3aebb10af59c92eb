#!/usr/bin/env bash
# Burn against PyTorch eager on this machine's CPU, side by side in each invocation (#9), and
# writes what `bench` printed to assets/bench_cpu.txt, which the book's performance chapter
# and the README include: each command, then its table row. About 5 minutes on 2 cores; needs
# python3 with torch (`pip install torch`; the CPU is used whatever the wheel's CUDA).
#
#   bash scripts/cpu_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/groupface-target}"
cargo build --release --quiet --bin bench
bin="$CARGO_TARGET_DIR/release/bench"
out=assets/bench_cpu.txt
commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo '+changes')"
{
    echo "# commit $commit, $(date -u +%Y-%m-%d)"
    first=1
    for args in \
        "backbone=tiny groups=32 batch=32 steps=10 torch=true" \
        "backbone=tiny groups=0 batch=32 steps=10 torch=true" \
        "backbone=tiny groups=32 batch=32 steps=5 warmup=1 backend=ndarray torch=true" \
        "backbone=r18 groups=0 batch=32 steps=5 warmup=1 torch=true" \
        "backbone=r18 groups=32 batch=32 steps=5 warmup=1 torch=true"; do
        echo "\$ cargo run --release --bin bench -- $args"
        # The table goes to stderr: its header once, then one row per command.
        # shellcheck disable=SC2086
        "$bin" $args 2>&1 >/dev/null | awk -v first="$first" 'first || !/^\|( backend |---)/'
        first=0
    done
} >"$out"
cat "$out"
