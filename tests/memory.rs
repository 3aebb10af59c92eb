//! Memory of all-pairs verification, through the entry point of `eval embeddings= labels=`
//! ([`all_pairs_report`]; `eval data=FOLDER` without `pairs=` shares it). A counting global
//! allocator records the peak bytes held while a report is computed.
//!
//! The pair-list code copied both rows of every pair out (pair-major), then again inside the
//! protocol: 3,000 rows of width 512 aborted under a 6 GiB limit. The figure for 10,000 rows
//! (5·10⁷ pairs, the target: within 2 GB) comes from
//! `cargo test --release --test memory -- --ignored --nocapture`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Mutex, MutexGuard};

use groupface::evaluate::embed::Embeddings;
use groupface::evaluate::pairs::{all_pairs_report, pairs_report};
use groupface::evaluate::similarity::GroupAwareParams;
use groupface::protocol::pairs::{all_pairs, Pair};
use groupface::protocol::report::Report;
use groupface::protocol::roc::Roc;
use groupface::protocol::verification;
use groupface::protocol::Matrix;

/// Bytes allocated now, and the most since the last [`peak_during`] began.
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Allocations past this total are refused (the process then aborts on the failed allocation):
/// the 2 GB target. The pair-list code's first pair-major copy for 2,000 rows (4.1 GB)
/// is refused at once, where letting it through would swap the machine.
const LIMIT: usize = 2 << 30;

/// [`System`], counting.
struct Counting;

impl Counting {
    /// Counts `size` more bytes, unless that passes [`LIMIT`].
    fn reserve(size: usize) -> bool {
        let now = CURRENT.fetch_add(size, SeqCst).saturating_add(size);
        if now > LIMIT {
            CURRENT.fetch_sub(size, SeqCst);
            return false;
        }
        PEAK.fetch_max(now, SeqCst);
        true
    }
}

// SAFETY: every call is forwarded to `System` with the caller's arguments; the counters only
// decide whether to forward an allocation, and a refused one returns null as the trait allows.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !Self::reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            CURRENT.fetch_sub(layout.size(), SeqCst);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !Self::reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            CURRENT.fetch_sub(layout.size(), SeqCst);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), SeqCst);
    }

    /// Counted as the new block beside the old one: a moving realloc holds both for a moment.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !Self::reserve(new_size) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        CURRENT.fetch_sub(if p.is_null() { new_size } else { layout.size() }, SeqCst);
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The counters are global: the tests of this file run one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `f`'s result and the most bytes held during `f` beyond those held when it began.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(SeqCst);
    PEAK.store(base, SeqCst);
    let out = f();
    (out, PEAK.load(SeqCst).saturating_sub(base))
}

/// Uniform in [-1, 1) from an xorshift generator.
fn uniform(seed: u64) -> impl FnMut() -> f32 {
    let mut state = seed | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// `n` rows of width `dim`, `per` consecutive rows per identity: the identity's centre plus
/// noise of the same size, so positives mostly but not always score above negatives. With
/// `feature_dim > 0`, random v̂ of that width for group-aware similarity.
fn embeddings(n: usize, dim: usize, per: usize, feature_dim: usize) -> (Embeddings, Vec<usize>) {
    let mut next = uniform(n as u64 * 1_000_003 + dim as u64);
    let labels: Vec<usize> = (0..n).map(|i| i / per).collect();
    let centres: Vec<f32> = (0..n.div_ceil(per) * dim).map(|_| next()).collect();
    let mut data = Vec::with_capacity(n * dim);
    for &id in &labels {
        for k in 0..dim {
            data.push(centres[id * dim + k] + next());
        }
    }
    let feature = (feature_dim > 0).then(|| {
        Matrix::new(n, feature_dim, (0..n * feature_dim).map(|_| next()).collect()).unwrap()
    });
    let embedding = Matrix::new(n, dim, data).unwrap();
    (Embeddings { embedding, feature, probs: None, norms: Vec::new() }, labels)
}

/// The report as the pair-list code computed it: both rows of every pair copied out for the
/// protocol (which copied them again), the scores of all pairs held in `f64`.
fn pair_list_report(
    e: &Embeddings,
    pairs: &[Pair],
    group_aware: Option<GroupAwareParams>,
    folds: usize,
) -> Report {
    let normalized = e.embedding.normalized();
    let score = |a: usize, b: usize| -> f64 {
        let cos: f64 = normalized
            .row(a)
            .iter()
            .zip(normalized.row(b))
            .map(|(x, y)| *x as f64 * *y as f64)
            .sum();
        match (group_aware, &e.feature) {
            (Some(p), Some(f)) => {
                let d: f64 = f
                    .row(a)
                    .iter()
                    .zip(f.row(b))
                    .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                    .sum::<f64>()
                    .sqrt();
                cos - p.beta * d.powf(p.gamma)
            }
            _ => cos,
        }
    };
    let scores: Vec<f64> = pairs.iter().map(|&(a, b, _)| score(a, b)).collect();
    let issame: Vec<bool> = pairs.iter().map(|p| p.2).collect();
    let options = verification::Options { folds, ..Default::default() };
    let result = match group_aware {
        Some(_) => {
            let distances: Vec<f64> = scores.iter().map(|s| 2.0 - 2.0 * s).collect();
            verification::evaluate_distances_with(&distances, &issame, &options)
        }
        None => {
            let raw = &e.embedding;
            let a: Vec<f32> = pairs.iter().flat_map(|p| raw.row(p.0).to_vec()).collect();
            let b: Vec<f32> = pairs.iter().flat_map(|p| raw.row(p.1).to_vec()).collect();
            verification::evaluate_embeddings_with(&a, &b, raw.cols, &issame, &options)
        }
    }
    .unwrap();
    let scores: Vec<f32> = scores.iter().map(|&s| s as f32).collect();
    let roc = Roc::from_scores(&scores, &issame).unwrap();
    Report::new(result, &roc, None, BTreeMap::new())
}

/// The streamed reports equal, to the bit, what the pair-list code reported: plain and
/// group-aware, over all pairs and over a listed order.
#[test]
fn streamed_reports_equal_the_pair_list_reports() {
    let _serial = serial();
    // 40 rows of width 24 (v̂ of width 6), 8 identities of 5: 40·39/2 = 780 pairs, of which
    // 8·(5·4/2) = 80 positive.
    let (e, labels) = embeddings(40, 24, 5, 6);
    let list = all_pairs(&labels);
    assert_eq!(list.len(), 780);
    // Listed in reverse with the rows swapped: other folds, the same pairs.
    let listed: Vec<Pair> = list.iter().rev().map(|&(a, b, same)| (b, a, same)).collect();
    let mut plain_and_group_aware = Vec::new();
    for group_aware in [None, Some(GroupAwareParams::default())] {
        let streamed = all_pairs_report(&e, &labels, group_aware, 10, BTreeMap::new()).unwrap();
        let reference = pair_list_report(&e, &list, group_aware, 10);
        assert_eq!(streamed, reference);
        let json = |r: &Report| serde_json::to_string(r).unwrap();
        assert_eq!(json(&streamed), json(&reference));
        assert_eq!((streamed.positives, streamed.negatives), (80, 700));
        assert_eq!(streamed.verification.fold_accuracies.len(), 10);
        let streamed_list = pairs_report(&e, &listed, group_aware, 7, BTreeMap::new()).unwrap();
        assert_eq!(streamed_list, pair_list_report(&e, &listed, group_aware, 7));
        plain_and_group_aware.push(streamed);
    }
    // The penalty changes the scores, so the second pass did run group-aware.
    assert_ne!(plain_and_group_aware[0].auc, plain_and_group_aware[1].auc);
}

#[test]
fn bad_pairs_and_labels_are_errors_naming_them() {
    let _serial = serial();
    let (e, labels) = embeddings(6, 4, 3, 0);
    let err = all_pairs_report(&e, &labels[..5], None, 2, BTreeMap::new()).unwrap_err();
    assert_eq!(err, "length mismatch: labels has 5 rows but embeddings has 6");
    let err = pairs_report(&e, &[(0, 1, true), (2, 6, false)], None, 2, BTreeMap::new());
    let err = err.unwrap_err();
    assert!(err.starts_with("pair 1 (2, 6): expected row indices below 6"), "{err}");
}

/// The most an all-pairs report may hold at once beyond its inputs, for `n` rows of width
/// `dim` and `P = n (n - 1) / 2` pairs:
/// - the protocol pass: the rows copied once as `f32` and prepared once as `f64`
///   (12·n·dim), the labels (P) and the `f64` distances (8·P): 12·n·dim + 9·P;
/// - the ROC pass: the rows normalised as `f32` (4·n·dim), the labels (P), the `f32` scores
///   (4·P), the ROC's sort keys (4·P) and its radix buffer (at most 4·P): 4·n·dim + 13·P;
///
/// so at most 12·n·dim + 13·P, plus 4 MiB for the threshold histograms, the report and the
/// test harness. 2,000 x 512: 12.3 MB + 26.0 MB + 4.2 MB = 42.5 MB, where the pair-list code
/// copied 2·P·dim·4 = 8.2 GB of pair-major rows (and [`LIMIT`] refuses the first 4.1 GB).
fn bound(n: usize, dim: usize) -> usize {
    let pairs = n * (n - 1) / 2;
    12 * n * dim + 13 * pairs + (4 << 20)
}

/// Peak bytes of the all-pairs report of `n` random rows of width 512 (5 per identity),
/// checked against [`bound`].
fn all_pairs_peak(n: usize) -> usize {
    all_pairs_peak_within(n, bound(n, 512))
}

/// Peak bytes of the all-pairs report of `n` random rows of width 512, checked against
/// `limit`.
fn all_pairs_peak_within(n: usize, limit: usize) -> usize {
    let dim = 512;
    let (e, labels) = embeddings(n, dim, 5, 0);
    let (report, peak) =
        peak_during(|| all_pairs_report(&e, &labels, None, 10, BTreeMap::new()).unwrap());
    let pairs = n * (n - 1) / 2;
    // n / 5 identities of 5 rows, C(5, 2) = 10 positive pairs each.
    let positives = n / 5 * 10;
    assert_eq!(
        (report.positives, report.negatives),
        (positives as u64, (pairs - positives) as u64)
    );
    assert_eq!(report.verification.pairs, pairs);
    assert!(peak < limit, "{n} x {dim}: peak {peak} bytes, above the bound {limit} bytes");
    peak
}

/// 2,000 x 512 (1,999,000 pairs): within the bound (42.5 MB), where the pair-list code fails.
#[test]
fn all_pairs_of_2000_embeddings_stay_within_the_bound() {
    let _serial = serial();
    all_pairs_peak(2000);
}

/// 10,000 x 512 (49,995,000 pairs; within 2 GB): prints the measured peak.
#[test]
#[ignore = "5·10⁷ pairs take about a minute in release; run with --ignored --nocapture"]
fn all_pairs_of_10000_embeddings_peak() {
    let _serial = serial();
    // The target: 10,000 embeddings of width 512 within 2 GB.
    let peak = all_pairs_peak_within(10_000, 2_000_000_000);
    println!(
        "all_pairs_report, 10000 x 512 (49995000 pairs): peak {peak} bytes ({:.1} MB) \
         beyond the inputs (target 2 GB; 13 bytes a pair would be {} bytes)",
        peak as f64 / 1e6,
        bound(10_000, 512)
    );
    // The passes one by one, each from nothing held, so the peak can be placed.
    let (e, labels) = embeddings(10_000, 512, 5, 0);
    let pairs = || groupface::protocol::pairs::all_pairs_iter(&labels);
    let (issame, labels_peak) = peak_during(|| pairs().map(|p| p.2).collect::<Vec<bool>>());
    let raw = &e.embedding;
    let (distances, protocol_peak) = peak_during(|| {
        let matrix =
            groupface::protocol::Matrix::new(raw.rows, raw.cols, raw.data.clone()).unwrap();
        verification::pair_distances(&matrix, pairs(), true).unwrap()
    });
    let (_, options_peak) = peak_during(|| {
        verification::evaluate_distances_with(&distances, &issame, &Default::default()).unwrap()
    });
    drop(distances);
    let normalized = raw.normalized();
    let (scores, scores_peak) = peak_during(|| {
        pairs()
            .map(|(a, b, _)| {
                normalized.row(a).iter().zip(normalized.row(b)).map(|(x, y)| x * y).sum::<f32>()
            })
            .collect::<Vec<f32>>()
    });
    let (roc, roc_peak) = peak_during(|| Roc::from_scores(&scores, &issame).unwrap());
    let distinct = {
        let mut keys: Vec<u32> = scores.iter().map(|s| s.to_bits()).collect();
        keys.sort_unstable();
        keys.dedup();
        keys.len()
    };
    for (what, bytes) in [
        ("labels of the pairs", labels_peak),
        ("protocol distances (with the prepared rows)", protocol_peak),
        ("protocol on the distances", options_peak),
        ("ROC scores", scores_peak),
        ("ROC from the scores", roc_peak),
    ] {
        println!("  {what}: {bytes} bytes ({:.2} a pair)", bytes as f64 / 49_995_000.0);
    }
    // Beyond the sort keys and their radix buffer (8 bytes a pair), the ROC pass holds the
    // curve: 24 bytes a point (fps, tps, threshold). scikit-learn's drop_intermediate keeps
    // every point where the step changes; f32 scores of random rows tie unevenly, so a
    // large share of the distinct scores stays a point.
    println!(
        "  ROC: {} points ({} bytes at 24 a point) from {distinct} distinct scores",
        roc.len(),
        roc.len() * 24
    );
}
