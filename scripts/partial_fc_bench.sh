#!/usr/bin/env bash
# Partial FC (`sample_rate=`) against the full margin softmax as the number of identities
# grows: step time and peak memory of the tiny ArcFace baseline's training step (the Learner's
# step: forward, backward, SGD with momentum and weight decay over the model and every class
# centre) at 10^4, 10^5 and 10^6 identities, sample_rate 1 and 0.1, on this machine's default
# CPU backend. One configuration per process (the peak RSS is the process's), ROUNDS rounds
# (default 1) alternating the configurations. Writes what `bench` printed to
# assets/partial_fc.txt; scripts/partial_fc_torch.sh measures PyTorch's at the same setting.
#
#   bash scripts/partial_fc_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/groupface-target}"
cargo build --release --quiet --bin bench
bin="$CARGO_TARGET_DIR/release/bench"
out=assets/partial_fc.txt
rounds="${ROUNDS:-1}"
commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo '+changes')"
{
    echo "# commit $commit, $(date -u +%Y-%m-%d), $(nproc) CPUs, command: bash scripts/partial_fc_bench.sh"
    for round in $(seq "$rounds"); do
        for classes in 10000 100000 1000000; do
            for rate in 1 0.1; do
                args="backbone=tiny groups=0 batch=64 steps=5 warmup=2 classes=$classes sample_rate=$rate"
                echo "\$ cargo run --release --bin bench -- $args   # round $round"
                # shellcheck disable=SC2086
                "$bin" $args 2>/dev/null || echo "(exit $?)"
            done
        done
    done
} >"$out"
cat "$out"
