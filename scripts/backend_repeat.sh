#!/usr/bin/env bash
# Does a seeded run repeat on each CPU backend? Two runs of the same small `train` command per
# backend (ndarray also with one rayon thread), then a hash of each trained model.safetensors
# and its held-out verification. Writes assets/backend_repeat.txt (about 3 minutes on 2 cores).
#
#   bash scripts/backend_repeat.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/groupface-target}"
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet --bin train
bin="${TRAIN_BIN:-$CARGO_TARGET_DIR/release/train}"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
args="backbone=tiny epochs=1 seed=3 identities=30 images_per_identity=10 eval_identities=10 eval_images=4"
commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo '+changes')"
{
    echo "# bash scripts/backend_repeat.sh at $commit: train $args backend=B, twice each"
    echo "# run                       sha256(model.safetensors)  held-out verification"
    for arm in flex ndarray ndarray-1thread; do
        for run in a b; do
            backend=${arm%-1thread}
            threads=""
            [[ $arm == *-1thread ]] && threads=1
            # shellcheck disable=SC2086
            RAYON_NUM_THREADS=${threads:-${RAYON_NUM_THREADS:-}} "$bin" $args backend="$backend" \
                out="$root/$arm-$run" >"$root/$arm-$run.log" 2>&1
            printf "%-27s %s  %s\n" "$arm $run" \
                "$(sha256sum <"$root/$arm-$run/model.safetensors" | cut -c1-16)" \
                "$(grep '^held-out verification' "$root/$arm-$run.log" | cut -d' ' -f3-5)"
        done
    done
} | tee assets/backend_repeat.txt
