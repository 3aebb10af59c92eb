#!/usr/bin/env python3
"""The re-read table of experiments/README.md: for each ablation, the paper's direction, ours,
and whether our difference exceeds two seed spreads.

Reads experiments/<name>/runs.csv (written by `bash experiments/run_all.sh`) and prints one
Markdown row per comparison. A difference "exceeds two seed spreads" when the two arms' means
differ by more than twice the larger of their population standard deviations over seeds (the
spread each summary.md prints after its ±).

    python3 scripts/ablation_directions.py
"""
import csv
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "experiments"

# (ablation, label of the comparison, arm A filter, arm B filter, paper's A and B on IJB-B
# TAR@FAR=1e-6 (SPEC section 6), metric column). The paper's direction is "B above A" when its
# B is larger.
DEFAULT = {"groups": "32", "mode": "soft", "combine": "sum", "labels": "self-distributed",
           "similarity": "plain", "backbone": "tiny"}
BASELINE = {"groups": "0", "similarity": "plain", "backbone": "tiny"}


def arm(**changes):
    return {**DEFAULT, **changes}


COMPARISONS = [
    ("groups", "ArcFace → GroupFace K = 4", BASELINE, arm(groups="4"), 0.3828, 0.4395),
    ("groups", "ArcFace → GroupFace K = 16", BASELINE, arm(groups="16"), 0.3828, 0.4435),
    ("groups", "ArcFace → GroupFace K = 32", BASELINE, arm(), 0.3828, 0.4678),
    ("groups", "K = 4 → K = 32", arm(groups="4"), arm(), 0.4395, 0.4678),
    ("similarity", "plain → group-aware (K = 32)", arm(), arm(similarity="group-aware"),
     0.4678, 0.5212),
    ("labels", "none → naive", arm(labels="none"), arm(labels="naive"), 0.4468, 0.4535),
    ("labels", "naive → self-distributed", arm(labels="naive"), arm(), 0.4535, 0.4678),
    ("ensemble", "hard → soft", arm(mode="hard"), arm(), 0.4439, 0.4678),
    ("combination", "sum → concat", arm(), arm(combine="concat"), 0.4678, 0.4745),
    ("combination", "ArcFace → GroupFace concat", BASELINE, arm(combine="concat"), 0.3828,
     0.4745),
    ("backbone", "ArcFace r34 → GroupFace r34", {**BASELINE, "backbone": "r34"},
     arm(backbone="r34"), None, None),
    ("backbone", "ArcFace r100 → GroupFace r100", {**BASELINE, "backbone": "r100"},
     arm(backbone="r100"), None, None),
    ("backbone", "ArcFace r100 → GroupFace r34", {**BASELINE, "backbone": "r100"},
     arm(backbone="r34"), None, None),
]

METRICS = [("accuracy", "verification acc.", 100.0), ("tar_at_far_1e-03", "TAR@FAR=1e-3", 1.0)]


def rows(name):
    path = ROOT / name / "runs.csv"
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError as e:
        sys.exit(f"{path}: {e}; run `bash experiments/run_all.sh {name}` first")


def select(runs, want, path):
    # The baseline has no mode/combine/labels: only the keys it sets are compared.
    keys = want.keys() if want.get("groups") != "0" else BASELINE.keys()
    picked = [r for r in runs if all(r.get(k) == want[k] for k in keys)]
    if not picked:
        sys.exit(f"{path}: no run with {dict((k, want[k]) for k in keys)}")
    return picked


def stats(runs, column, scale):
    values = [float(r[column]) * scale for r in runs]
    return statistics.fmean(values), statistics.pstdev(values), len(values)


def main():
    print("| ablation | comparison (A → B) | paper: B − A (IJB-B TAR@1e-6) | metric | ours: B − A "
          "| 2 spreads | exceeds | same direction as the paper |")
    print("|---|---|---|---|---|---|---|---|")
    for name, label, a_want, b_want, paper_a, paper_b in COMPARISONS:
        runs = rows(name)
        path = ROOT / name / "runs.csv"
        a, b = select(runs, a_want, path), select(runs, b_want, path)
        paper = "-" if paper_a is None else f"{paper_b - paper_a:+.4f}"
        for column, metric, scale in METRICS:
            (ma, sa, na), (mb, sb, nb) = stats(a, column, scale), stats(b, column, scale)
            diff, bound = mb - ma, 2 * max(sa, sb)
            exceeds = "yes" if abs(diff) > bound else "no"
            if paper_a is None:
                same = "-"
            elif abs(diff) <= bound:
                same = "not resolved"
            else:
                same = "yes" if (diff > 0) == (paper_b > paper_a) else "no (opposite)"
            digits = 2 if scale == 100.0 else 3
            print(f"| {name} | {label} ({na}+{nb} seeds) | {paper} | {metric} | "
                  f"{diff:+.{digits}f} | {bound:.{digits}f} | {exceeds} | {same} |")


if __name__ == "__main__":
    main()
