#!/usr/bin/env bash
# Reproduces every ablation under experiments/ at the tiny preset: synthetic faces, CPU, three
# seeds. The runs go to one folder (runs/experiments, not committed) so that ablations share
# their common runs (the baseline and the default K = 32 GroupFace); each ablation writes its
# summary.md, runs.csv and plots into experiments/<name>/.
#
#   bash experiments/run_all.sh            # every ablation
#   bash experiments/run_all.sh groups     # one of them
#   ABLATION=/path/to/ablation bash experiments/run_all.sh   # a binary built earlier
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/experiments}
SEEDS=${SEEDS:-3}

ablation() {
    local name=$1
    shift
    # shellcheck disable=SC2086
    ${ABLATION:-cargo run --release --bin ablation --} preset=tiny seeds="$SEEDS" runs="$RUNS" \
        out="experiments/$name" "$@"
}

want() { [ -z "$SELECTED" ] || [[ " $SELECTED " == *" $1 "* ]]; }
SELECTED="$*"

want groups && ablation groups groups=4..32
want labels && ablation labels labels=none,naive,self-distributed
want ensemble && ablation ensemble mode=soft,hard
want combination && ablation combination combine=sum,concat
want similarity && ablation similarity similarity=plain,group-aware
# Depths at the tiny preset's widths and 32x32 input: one block per stage, r34's and r100's.
want backbone && ablation backbone backbone=tiny,r34,r100
