#!/usr/bin/env python3
"""Reference values for groupface's evaluation code (src/eval), computed with numpy, scipy and
scikit-learn the way insightface computes them.

Regenerate:   python3 scripts/eval_reference.py      (writes tests/fixtures/eval_reference.json)
Requires:     pip install --user numpy scipy scikit-learn
Generated with Python 3.11.7, numpy 2.4.6, scipy 1.17.1, scikit-learn 1.9.1 on x86_64.

This is an independent computation following the algorithm that SPEC.md section 5 describes
(insightface's `eval/verification.py::evaluate` and the ROC step of `eval_ijbc.py`); it does not
import insightface. What it computes, and why each step is written the way it is:

* Verification. `embeddings` are float32 rows, pairs interleaved (pair i = rows 2i and 2i+1), as
  insightface's `test()` holds them before normalising: float64 copies normalised with
  `sklearn.preprocessing.normalize`, squared L2 distances with `np.sum(np.square(diff), 1)`,
  thresholds `np.arange(0, 4, 0.01)`, `KFold(10, shuffle=False)`, the first training threshold
  reaching the best training accuracy (`np.argmax`), "same" when `dist < threshold`, then
  `np.mean` / `np.std` of the fold accuracies and the fold-mean TPR / FPR curves. 603 pairs, so
  the first three folds hold 61 pairs and the others 60.
* VAL@FAR=1e-3 uses thresholds `np.arange(0, 4, 0.001)` and `interp1d(far, thresholds,
  kind='slinear')`. Since scipy 1.9 that call raises "Expect x to not have duplicates" (the FAR
  of neighbouring thresholds is nearly always equal; insightface issues #2152 and #2290, whose
  advice is to pin scipy 1.8.1). Up to scipy 1.8, interp1d's 'slinear' was a degree-1 B-spline
  with knots r_[x[0], x, x[-1]] and coefficients y, built without a duplicate check; `slinear`
  below builds exactly that spline with `BSpline.construct_fast`, so the values are those of the
  scipy that insightface's users run.
* ROC. `sklearn.metrics.roc_curve` with its defaults (drop_intermediate=True, leading (0, 0)
  point with an infinite threshold), then TAR@FAR exactly as `eval_ijbc.py` picks it: flip the
  curve and take `min(zip(abs(fpr - target), range(len(fpr))))`. Case `roc_ties` has 5000 scores
  that are multiples of 1/256 (many ties, stored as the integer numerators); case `roc_runs` has
  2000 distinct float32 scores whose labels come in runs, so drop_intermediate removes many points.

Floats that must round-trip bit for bit are stored as strings (Python's shortest repr, which
Rust's `str::parse` reads back exactly) or as hexadecimal bit patterns (`f32_hex`: 8 hex digits
per value, `f64_hex`: 16), because JSON number parsers are not all correctly rounded.
"""
import json
import os
import sys

import numpy as np
import scipy
import sklearn
from scipy import interpolate
from scipy.interpolate import BSpline
from sklearn.metrics import auc, roc_auc_score, roc_curve
from sklearn.model_selection import KFold
from sklearn.preprocessing import normalize

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                   "eval_reference.json")
FARS = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]


def f32_hex(values):
    return "".join("%08x" % v for v in np.asarray(values, dtype="<f4").view("<u4"))


def f64_hex(values):
    return "".join("%016x" % v for v in np.asarray(values, dtype="<f8").view("<u8"))


def reprs(values):
    return [repr(float(v)) for v in values]


def slinear(x, y, at):
    """interp1d(x, y, kind='slinear')(at) as scipy <= 1.8 evaluated it (duplicates allowed)."""
    if len(np.unique(x)) == len(x):
        # Without duplicates the current scipy still works and must agree.
        new = float(interpolate.interp1d(x, y, kind="slinear")(at))
        old = float(BSpline.construct_fast(np.r_[x[0], x, x[-1]], y, 1)(at))
        assert new == old, (new, old)
    return float(BSpline.construct_fast(np.r_[x[0], x, x[-1]], np.asarray(y), 1)(at))


def confusion(threshold, dist, same):
    """(tp, fp, tn, fn) when pairs closer than `threshold` are called the same."""
    called = dist < threshold
    tp = int(np.sum(called & same))
    fp = int(np.sum(called & ~same))
    tn = int(np.sum(~called & ~same))
    fn = int(np.sum(~called & same))
    return tp, fp, tn, fn


def rates(threshold, dist, same):
    tp, fp, tn, fn = confusion(threshold, dist, same)
    tpr = 0 if tp + fn == 0 else float(tp) / float(tp + fn)
    fpr = 0 if fp + tn == 0 else float(fp) / float(fp + tn)
    return tpr, fpr, float(tp + tn) / dist.size


def verification(emb32, issame, folds=10):
    emb = normalize(emb32.astype(np.float64))
    a, b = emb[0::2], emb[1::2]
    dist = np.sum(np.square(np.subtract(a, b)), 1)
    same = np.asarray(issame)
    thresholds = np.arange(0, 4, 0.01)
    splits = list(KFold(n_splits=folds, shuffle=False).split(np.arange(len(same))))
    tprs = np.zeros((folds, len(thresholds)))
    fprs = np.zeros((folds, len(thresholds)))
    acc = np.zeros(folds)
    best = []
    for k, (train, test) in enumerate(splits):
        train_acc = np.zeros(len(thresholds))
        for j, t in enumerate(thresholds):
            train_acc[j] = rates(t, dist[train], same[train])[2]
        j_best = int(np.argmax(train_acc))
        best.append(thresholds[j_best])
        for j, t in enumerate(thresholds):
            tprs[k, j], fprs[k, j], _ = rates(t, dist[test], same[test])
        acc[k] = rates(thresholds[j_best], dist[test], same[test])[2]

    # VAL @ FAR = 1e-3 on the finer grid, with scipy's piecewise-linear interpolation.
    fine = np.arange(0, 4, 0.001)
    val = np.zeros(folds)
    far = np.zeros(folds)
    val_thresholds = []
    for k, (train, test) in enumerate(splits):
        n_diff = np.sum(~same[train])
        far_train = np.array([confusion(t, dist[train], same[train])[1] / float(n_diff)
                              for t in fine])
        if np.max(far_train) >= 1e-3:
            threshold = slinear(far_train, fine, 1e-3)
        else:
            threshold = 0.0
        val_thresholds.append(threshold)
        tp, fp, _, _ = confusion(threshold, dist[test], same[test])
        val[k] = float(tp) / float(np.sum(same[test]))
        far[k] = float(fp) / float(np.sum(~same[test]))

    return {
        "pairs": len(same),
        "embeddings_rows": emb32.shape[0],
        "embeddings_cols": emb32.shape[1],
        "embeddings_f32_hex": f32_hex(emb32.ravel()),
        "issame": "".join("1" if s else "0" for s in same),
        "distances_f64_hex": f64_hex(dist),
        "fold_sizes": [len(test) for _, test in splits],
        "fold_accuracies": reprs(acc),
        "best_thresholds": reprs(best),
        "accuracy": repr(float(np.mean(acc))),
        "std": repr(float(np.std(acc))),
        "tpr": reprs(np.mean(tprs, 0)),
        "fpr": reprs(np.mean(fprs, 0)),
        "val_thresholds": reprs(val_thresholds),
        "val": repr(float(np.mean(val))),
        "val_std": repr(float(np.std(val))),
        "far": repr(float(np.mean(far))),
    }


def roc_case(labels, scores):
    fpr, tpr, thr = roc_curve(labels, scores)
    flipped_fpr, flipped_tpr, flipped_thr = np.flipud(fpr), np.flipud(tpr), np.flipud(thr)
    tar = {}
    for target in FARS:
        _, i = min(zip(abs(flipped_fpr - target), range(len(flipped_fpr))))
        tar["%.0e" % target] = {
            "tar": repr(float(flipped_tpr[i])),
            "far": repr(float(flipped_fpr[i])),
            "threshold": repr(float(flipped_thr[i])),
        }
    area = auc(fpr, tpr)
    assert area == roc_auc_score(labels, scores)
    return {
        "labels": "".join("1" if v else "0" for v in labels),
        "positives": int(np.sum(labels)),
        "negatives": int(np.sum(~labels)),
        "fpr": reprs(fpr),
        "tpr": reprs(tpr),
        "thresholds": reprs(thr),
        "tar_at_far": tar,
        "auc": repr(float(area)),
    }


def main():
    rng = np.random.default_rng(20200614)

    # Verification: 603 pairs of 16-d embeddings, identity centres on a Gaussian, per-image noise
    # large enough that genuine and impostor distances overlap (accuracy near 0.9), and a random
    # scale per row so that the normalisation matters. Row 10 is all zeros: sklearn leaves a
    # zero row as it is (its norm is replaced by 1), and so must we.
    pairs, dim, sigma = 603, 16, 0.75
    issame = rng.random(pairs) < 0.5
    rows = []
    for same in issame:
        c1 = rng.standard_normal(dim)
        c2 = c1 if same else rng.standard_normal(dim)
        rows.append(c1 + sigma * rng.standard_normal(dim))
        rows.append(c2 + sigma * rng.standard_normal(dim))
    emb = np.array(rows) * rng.uniform(5.0, 30.0, (2 * pairs, 1))
    emb[10] = 0.0
    emb32 = emb.astype(np.float32)

    # ROC with ties: numerators of multiples of 1/256 in [-256, 256].
    pos = rng.random(5000) < 0.2
    raw = np.where(pos, rng.normal(0.45, 0.2, 5000), rng.normal(0.1, 0.15, 5000))
    numerators = np.clip(np.round(raw * 256), -256, 256).astype(np.int64)
    tie_scores = numerators / 256.0

    # ROC with runs: 2000 distinct float32 scores sorted, labels in runs of 1..40 that are mostly
    # negative at low scores and mostly positive at high scores, then shuffled together.
    run_scores = np.sort(rng.uniform(-1, 1, 2000).astype(np.float32))
    assert len(np.unique(run_scores)) == 2000
    run_labels = np.zeros(2000, dtype=bool)
    i = 0
    while i < 2000:
        length = int(rng.integers(1, 41))
        run_labels[i:i + length] = rng.random() < (i / 2000.0)
        i += length
    order = rng.permutation(2000)
    run_scores, run_labels = run_scores[order], run_labels[order]

    ties = roc_case(pos, tie_scores)
    ties["score_numerators"] = [int(v) for v in numerators]
    ties["score_denominator"] = 256
    runs = roc_case(run_labels, run_scores)
    runs["scores_f32_hex"] = f32_hex(run_scores)

    fixture = {
        "generator": "scripts/eval_reference.py",
        "versions": {"python": sys.version.split()[0], "numpy": np.__version__,
                     "scipy": scipy.__version__, "sklearn": sklearn.__version__},
        "verification": verification(emb32, issame),
        "roc_ties": ties,
        "roc_runs": runs,
    }
    with open(OUT, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    v = fixture["verification"]
    print("wrote %s (%d bytes): accuracy %s +- %s, val %s, roc points %d / %d" % (
        os.path.normpath(OUT), os.path.getsize(OUT), v["accuracy"], v["std"], v["val"],
        len(ties["fpr"]), len(runs["fpr"])))


if __name__ == "__main__":
    main()
