#!/usr/bin/env bash
# The collapse diagnosis of the book's group-labels chapter: small controlled training runs
# (tiny preset, K = 32, synthetic faces, 3 epochs) that each change one thing, and per epoch
# what the self-grouping loss teaches the GDN (largest label share, label entropy), how
# saturated p is (group confidence: the mean largest probability), the GDN's own group usage
# and L2; at the end the held-out verification and largest group share. Every arm names all
# its keys that differ from today's defaults (label_space=zlog, lr 0.0125 at batch 64), so
# the figures do not move when a default does. Two runs at a time. Writes assets/collapse.txt.
#
#   bash scripts/collapse_runs.sh                 # every arm, about 12 minutes on 2 cores
#   bash scripts/collapse_runs.sh paper zlog      # some arms (names below)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/groupface-target}"
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet --bin train
bin="${TRAIN_BIN:-$CARGO_TARGET_DIR/release/train}"
root=runs/collapse
out=assets/collapse.txt
all="paper naive none prob-hard prob-window1 prob-lambda0.01 log-lr0.1 zlog-lr0.1 baseline-lr0.1
prob log zlog-hard zlog-window8 baseline zlog zlog-seed1 zlog-seed2 zlog-window8-seed1
zlog-window8-seed2 pretrained"
arms="${*:-$all}"
commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo '+changes')"
common="backbone=tiny epochs=3"
old="label_space=prob lr=0.1"

# The keys of each arm, on top of $common: groups, seed and whatever differs from the defaults.
# Every arm but the window ones ran before the E[p] window's default became 8 (it was 32), and
# names the window it ran with.
keys() {
    local k
    k=$(arm_keys "$1") || return
    if [[ $k == *label_window=* ]]; then echo "$k"; else echo "$k label_window=32"; fi
}

arm_keys() {
    case $1 in
        # The defaults before this diagnosis: the paper's formula, lr 0.1 at batch 64.
        paper) echo "groups=32 seed=0 $old" ;;
        naive) echo "groups=32 seed=0 lr=0.1 labels=naive" ;;
        none) echo "groups=32 seed=0 lr=0.1 labels=none" ;;
        prob-hard) echo "groups=32 seed=0 $old mode=hard" ;;
        prob-window1) echo "groups=32 seed=0 $old label_window=1" ;;
        prob-lambda0.01) echo "groups=32 seed=0 $old lambda=0.01" ;;
        log-lr0.1) echo "groups=32 seed=0 lr=0.1 label_space=log" ;;
        zlog-lr0.1) echo "groups=32 seed=0 lr=0.1" ;;
        baseline-lr0.1) echo "groups=0 seed=0 lr=0.1" ;;
        # At arcface_torch's rate per image (the default lr).
        prob) echo "groups=32 seed=0 label_space=prob" ;;
        log) echo "groups=32 seed=0 label_space=log" ;;
        zlog-hard) echo "groups=32 seed=0 mode=hard" ;;
        zlog-window8) echo "groups=32 seed=0 label_window=8" ;;
        zlog-window8-seed1) echo "groups=32 seed=1 label_window=8" ;;
        zlog-window8-seed2) echo "groups=32 seed=2 label_window=8" ;;
        baseline) echo "groups=0 seed=0" ;;
        zlog) echo "groups=32 seed=0" ;;
        zlog-seed1) echo "groups=32 seed=1" ;;
        zlog-seed2) echo "groups=32 seed=2" ;;
        # The paper's recipe: the baseline arm's network, then lr 0.005 scaled to batch 64.
        pretrained) echo "groups=32 seed=0 init=$root/baseline lr=0.0003125" ;;
        *) echo "unknown arm $1" >&2; exit 2 ;;
    esac
}

# Trains one arm into $root/ARM, its output in $root/ARM.log.
train_arm() {
    local arm=$1
    rm -rf "${root:?}/$arm"
    local start
    start=$(date +%s)
    # shellcheck disable=SC2046
    "$bin" $common $(keys "$arm") out="$root/$arm" >"$root/$arm.log" 2>&1 \
        || { echo "$arm failed: see $root/$arm.log" >&2; return 1; }
    echo $(( $(date +%s) - start )) >"$root/$arm.seconds"
}

# One row per training epoch from metrics.csv, named columns.
epochs_of() {
    awk -F, -v arm="$2" '
        NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
        $2 == "train" {
            printf "%-19s %5s %7.3f %7.3f %7.3f %7.3f %7.3f %7.4f\n", arm, $1,
                $col["largest_label_share"], $col["label_entropy_bits_"],
                $col["group_confidence"], $col["largest_group_share"],
                $col["group_entropy_bits_"], $col["l2_self-grouping_"]
        }' "$1/metrics.csv"
}

mkdir -p "$root"
export -f train_arm keys arm_keys
export bin root common old
# The pretrained arm starts from the baseline arm's network: train that first.
first=""; rest=""
for arm in $arms; do
    if [[ $arm == baseline ]]; then first="$arm"; else rest="$rest $arm"; fi
done
if [[ " $arms " == *" pretrained "* && ! -f $root/baseline/model.mpk && -z $first ]]; then
    first=baseline
fi
[ -z "$first" ] || train_arm "$first"
# shellcheck disable=SC2086
printf '%s\n' $rest | xargs -P 2 -I{} bash -c 'train_arm {}'

{
    echo "# bash scripts/collapse_runs.sh at $commit: train $common plus each arm's keys"
    echo "# per training epoch: share and entropy (bits) of the labels G*, mean largest p,"
    echo "# share and entropy of the GDN's argmax, L2; then held-out verification and the"
    echo "# held-out largest group share"
    for arm in $first $rest; do
        echo "## $arm: $(keys "$arm") ($(cat "$root/$arm.seconds") s)"
        if [[ $arm != baseline* ]]; then
            printf "%-19s %5s %7s %7s %7s %7s %7s %7s\n" arm epoch lab_shr lab_ent conf \
                grp_shr grp_ent L2
            epochs_of "$root/$arm" "$arm"
        fi
        grep -E "^held-out" "$root/$arm.log"
        python3 -c 'import json, sys; g = json.load(open(sys.argv[1])).get("groups")
print("held-out largest group share: %.3f" % g["largest_share"] if g else "", end="")' \
            "$root/$arm/report.json"
        echo
    done
} | grep -v '^$' | tee "$out"
