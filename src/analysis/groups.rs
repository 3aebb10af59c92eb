//! What the learned groups capture.
//!
//! The paper can only show pictures (Fig. 4: a 2-D projection of embeddings, Fig. 5: the share
//! of samples per group, Fig. 6: example images per group). With the synthetic generator's
//! hidden attributes (face shape, skin tone, hair colour, hair style, beard, glasses: all
//! discrete, see `crate::data::synth::ATTRIBUTE_NAMES`) we can also measure it:
//!
//! * [`GroupUsage`]: per-group share of samples and its entropy (a collapsed GDN puts
//!   everything in a few groups; self-distributed labelling is meant to prevent that);
//! * [`normalized_mutual_info`] and [`attribute_agreement`]: how much knowing a sample's group
//!   tells about each hidden attribute, against a shuffled-assignment chance level;
//! * [`pca_2d`] and [`scatter_svg`]: Fig. 4;
//! * [`samples_per_group`] and [`image_grid`]: Fig. 6.
//!
//! The synthetic attributes are already discrete, so no binning is needed here; a continuous
//! covariate would have to be cut into classes by the caller before [`normalized_mutual_info`].

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use image::{Rgb, RgbImage};

use crate::protocol::analysis_error::{AnalysisError, Result};
use crate::protocol::Matrix;

// ---------------------------------------------------------------------------------------------
// Group usage.

/// How evenly samples spread over the groups (paper Fig. 5).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupUsage {
    /// Samples assigned to each group.
    pub counts: Vec<usize>,
    /// `counts / total`, summing to 1.
    pub shares: Vec<f64>,
    /// Shannon entropy of `shares` in nats (`ln K` for uniform usage, 0 for one group).
    pub entropy: f64,
    /// `entropy / ln K` in `[0, 1]`, comparable across K (1 when K = 1).
    pub normalized_entropy: f64,
    /// `exp(entropy)`: how many equally used groups would give the same entropy.
    pub effective_groups: f64,
}

impl GroupUsage {
    /// Tallies `assignments` (each in `0..groups`); errors on an empty slice, `groups == 0` or
    /// an out-of-range assignment (naming its position).
    pub fn from_assignments(assignments: &[usize], groups: usize) -> Result<Self> {
        if groups == 0 {
            return Err(AnalysisError::invalid("groups", "need at least one group"));
        }
        if assignments.is_empty() {
            return Err(AnalysisError::invalid("assignments", "no sample to tally"));
        }
        let mut counts = vec![0usize; groups];
        for (i, &g) in assignments.iter().enumerate() {
            match counts.get_mut(g) {
                Some(c) => *c += 1,
                None => {
                    return Err(AnalysisError::invalid(
                        "assignments",
                        format!("sample {i} is in group {g}, expected a group below {groups}"),
                    ))
                }
            }
        }
        let total = assignments.len() as f64;
        let shares: Vec<f64> = counts.iter().map(|&c| c as f64 / total).collect();
        let h = entropy(&counts);
        let normalized_entropy = if groups > 1 { h / (groups as f64).ln() } else { 1.0 };
        Ok(GroupUsage { counts, shares, entropy: h, normalized_entropy, effective_groups: h.exp() })
    }
}

/// Shannon entropy (nats) of the distribution given by `counts`; 0 for no or one non-zero
/// count.
pub fn entropy(counts: &[usize]) -> f64 {
    let total: usize = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let n = total as f64;
    let h: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum();
    h.max(0.0)
}

// ---------------------------------------------------------------------------------------------
// Mutual information.

/// Sparse contingency counts of two labelings and their marginals. The joint counts are
/// ordered so that sums over them run in a fixed order: results are bit-identical run to run.
struct Contingency {
    joint: BTreeMap<(usize, usize), usize>,
    a: Vec<usize>,
    b: Vec<usize>,
    n: usize,
}

fn contingency(a: &[usize], b: &[usize]) -> Result<Contingency> {
    if a.len() != b.len() {
        return Err(AnalysisError::invalid(
            "b",
            format!("expected {} labels like the first labeling, found {}", a.len(), b.len()),
        ));
    }
    let index = |labels: &[usize]| {
        let mut ids: HashMap<usize, usize> = HashMap::new();
        let mut counts = Vec::new();
        let mut out = Vec::with_capacity(labels.len());
        for &l in labels {
            let next = ids.len();
            let k = *ids.entry(l).or_insert(next);
            if k == counts.len() {
                counts.push(0);
            }
            counts[k] += 1;
            out.push(k);
        }
        (out, counts)
    };
    let (ia, ca) = index(a);
    let (ib, cb) = index(b);
    let mut joint = BTreeMap::new();
    for (x, y) in ia.into_iter().zip(ib) {
        *joint.entry((x, y)).or_insert(0) += 1;
    }
    Ok(Contingency { joint, a: ca, b: cb, n: a.len() })
}

impl Contingency {
    fn mutual_information(&self) -> f64 {
        let n = self.n as f64;
        let mi: f64 = self
            .joint
            .iter()
            .map(|(&(x, y), &c)| {
                let c = c as f64;
                let (pa, pb) = (self.a[x] as f64, self.b[y] as f64);
                c / n * (c * n / (pa * pb)).ln()
            })
            .sum();
        mi.max(0.0)
    }
}

/// Mutual information (nats) between two labelings of the same samples (any label values).
pub fn mutual_information(a: &[usize], b: &[usize]) -> Result<f64> {
    Ok(contingency(a, b)?.mutual_information())
}

/// Normalised mutual information with the arithmetic-mean normaliser,
/// `NMI = MI(a, b) / ((H(a) + H(b)) / 2)`: scikit-learn's default
/// `normalized_mutual_info_score`, so values can be compared with other papers' tables. Like
/// scikit-learn, two labelings that both have a single class (or no sample) score 1, and zero
/// mutual information scores 0 whatever the entropies.
///
/// NMI grows with the number of classes at a fixed sample count even for random labelings;
/// [`attribute_agreement`] therefore also reports a shuffled-assignment chance level.
pub fn normalized_mutual_info(a: &[usize], b: &[usize]) -> Result<f64> {
    let c = contingency(a, b)?;
    if c.a.len() == c.b.len() && c.a.len() <= 1 {
        return Ok(1.0);
    }
    let mi = c.mutual_information();
    if mi == 0.0 {
        return Ok(0.0);
    }
    let normaliser = 0.5 * (entropy(&c.a) + entropy(&c.b));
    Ok(mi / normaliser)
}

/// Agreement between the group assignment and one hidden attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeAgreement {
    /// Attribute name (e.g. `skin_tone`).
    pub attribute: String,
    /// [`normalized_mutual_info`] of groups and attribute values.
    pub nmi: f64,
    /// Mean NMI over [`CHANCE_SHUFFLES`] deterministic shuffles of the group assignment: what
    /// groups unrelated to the attribute would score with the same group sizes.
    pub chance_nmi: f64,
    /// Mutual information in nats.
    pub mutual_information: f64,
    /// Entropy of the attribute's values in nats (the most `mutual_information` can reach).
    pub attribute_entropy: f64,
}

/// Number of shuffles behind [`AttributeAgreement::chance_nmi`].
pub const CHANCE_SHUFFLES: usize = 8;

/// One [`AttributeAgreement`] per attribute: `attributes[i]` holds sample `i`'s attribute values
/// in `names` order (e.g. `SynthFaces::attributes(label)`), `groups[i]` its group.
pub fn attribute_agreement<A: AsRef<[u8]>>(
    groups: &[usize],
    attributes: &[A],
    names: &[&str],
) -> Result<Vec<AttributeAgreement>> {
    if attributes.len() != groups.len() {
        return Err(AnalysisError::invalid(
            "attributes",
            format!("expected one row per sample ({}), found {}", groups.len(), attributes.len()),
        ));
    }
    if let Some((i, row)) =
        attributes.iter().enumerate().find(|(_, r)| r.as_ref().len() != names.len())
    {
        return Err(AnalysisError::invalid(
            "attributes",
            format!(
                "sample {i} has {} attribute values, expected {} ({})",
                row.as_ref().len(),
                names.len(),
                names.join(", ")
            ),
        ));
    }
    let mut shuffles = Vec::with_capacity(CHANCE_SHUFFLES);
    let mut state = 0x6A09_E667_F3BC_C909u64;
    for _ in 0..CHANCE_SHUFFLES {
        let mut g = groups.to_vec();
        for i in (1..g.len()).rev() {
            let j = (splitmix(&mut state) % (i as u64 + 1)) as usize;
            g.swap(i, j);
        }
        shuffles.push(g);
    }
    names
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let values: Vec<usize> =
                attributes.iter().map(|r| usize::from(r.as_ref()[k])).collect();
            let c = contingency(groups, &values)?;
            let mut chance = 0.0;
            for g in &shuffles {
                chance += normalized_mutual_info(g, &values)?;
            }
            Ok(AttributeAgreement {
                attribute: (*name).to_owned(),
                nmi: normalized_mutual_info(groups, &values)?,
                chance_nmi: chance / CHANCE_SHUFFLES as f64,
                mutual_information: c.mutual_information(),
                attribute_entropy: entropy(&c.b),
            })
        })
        .collect()
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------------------------
// PCA.

/// A 2-D principal-component projection.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    /// Coordinates of each row on the first two principal axes.
    pub points: Vec<[f64; 2]>,
    /// The two unit principal axes (each signed so that its largest-magnitude entry is
    /// positive, the first such entry on ties within a relative 1e-9), in input space.
    pub axes: [Vec<f64>; 2],
    /// Variance along each axis (divisor `n − 1`, as scikit-learn's `explained_variance_`).
    pub explained_variance: [f64; 2],
    /// Total variance (sum over all input dimensions, same divisor).
    pub total_variance: f64,
}

/// Iteration cap of [`pca_2d`]'s subspace iteration.
const PCA_MAX_ITERATIONS: usize = 2000;
/// Block width of the subspace iteration: extra vectors speed up convergence of the top two
/// when the 2nd and 3rd eigenvalues are close.
const PCA_BLOCK: usize = 8;

/// Projects rows onto their first two principal axes (paper Fig. 4).
///
/// Deterministic: a block subspace iteration on the covariance (applied as `Xᵀ(X·v)`, never
/// formed, so 512-wide embeddings of tens of thousands of images stay cheap) from a fixed
/// pseudo-random start, with Rayleigh–Ritz (a small Jacobi eigen-solver) each step, until the
/// top-two residuals fall below 1e-10 of the largest eigenvalue or 2000 iterations pass.
///
/// Errors: fewer than 2 rows or 2 columns, data that is not `rows x cols` values, a non-finite
/// value, or all rows identical.
pub fn pca_2d(data: &Matrix) -> Result<Projection> {
    let (n, d) = (data.rows, data.cols);
    if n < 2 || d < 2 {
        return Err(AnalysisError::invalid(
            "data",
            format!("PCA to 2-D needs at least 2 rows and 2 columns, found {n} x {d}"),
        ));
    }
    data.check_shape().map_err(|e| AnalysisError::invalid("data", e.to_string()))?;
    if let Some(i) = data.data.iter().position(|v| !v.is_finite()) {
        return Err(AnalysisError::invalid(
            "data",
            format!("row {} column {} is not finite", i / d, i % d),
        ));
    }
    let mut mean = vec![0f64; d];
    for row in data.iter_rows() {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += f64::from(*v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let x: Vec<f64> = data
        .iter_rows()
        .flat_map(|row| row.iter().zip(&mean).map(|(v, m)| f64::from(*v) - m))
        .collect();
    let denom = (n - 1) as f64;
    let total_variance = x.iter().map(|v| v * v).sum::<f64>() / denom;
    if total_variance == 0.0 {
        return Err(AnalysisError::invalid("data", "all rows are identical: no variance"));
    }
    // covariance times a vector: Xᵀ (X v) / (n − 1)
    let cov = |v: &[f64], out: &mut [f64]| {
        out.iter_mut().for_each(|o| *o = 0.0);
        for row in x.chunks_exact(d) {
            let s: f64 = row.iter().zip(v).map(|(a, b)| a * b).sum();
            for (o, a) in out.iter_mut().zip(row) {
                *o += s * a;
            }
        }
        out.iter_mut().for_each(|o| *o /= denom);
    };

    let p = PCA_BLOCK.min(d);
    let mut state = 0x243F_6A88_85A3_08D3u64;
    let random = |state: &mut u64| -> Vec<f64> {
        (0..d).map(|_| (splitmix(state) >> 11) as f64 / (1u64 << 53) as f64 - 0.5).collect()
    };
    let mut q: Vec<Vec<f64>> = (0..p).map(|_| random(&mut state)).collect();
    orthonormalize(&mut q, &mut || random(&mut state));
    let mut z = vec![vec![0f64; d]; p];
    let mut values = vec![0f64; p];
    for _ in 0..PCA_MAX_ITERATIONS {
        for (qi, zi) in q.iter().zip(z.iter_mut()) {
            cov(qi, zi);
        }
        // Rayleigh–Ritz on span(q)
        let t: Vec<Vec<f64>> =
            (0..p).map(|i| (0..p).map(|j| dot(&q[i], &z[j])).collect()).collect();
        let (vals, w) = symmetric_eigen(t);
        values = vals;
        q = combine(&q, &w);
        z = combine(&z, &w);
        let scale = values[0].abs().max(f64::MIN_POSITIVE);
        let converged = (0..2).all(|j| {
            let r: f64 = z[j].iter().zip(&q[j]).map(|(a, b)| (a - values[j] * b).powi(2)).sum();
            r.sqrt() <= 1e-10 * scale
        });
        if converged {
            break;
        }
        q.clone_from(&z);
        orthonormalize(&mut q, &mut || random(&mut state));
    }
    let mut axes = [q[0].clone(), q[1].clone()];
    for axis in axes.iter_mut() {
        // magnitudes within 1e-9 of the largest count as ties, so rounding noise cannot
        // decide the sign
        let largest = axis.iter().fold(0f64, |m, v| m.max(v.abs()));
        let first = axis.iter().find(|v| v.abs() >= largest * (1.0 - 1e-9)).copied();
        if first.is_some_and(|v| v < 0.0) {
            axis.iter_mut().for_each(|v| *v = -*v);
        }
    }
    let points = x.chunks_exact(d).map(|row| [dot(row, &axes[0]), dot(row, &axes[1])]).collect();
    Ok(Projection {
        points,
        axes,
        explained_variance: [values[0].max(0.0), values[1].max(0.0)],
        total_variance,
    })
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Columns `Σ_j v[j] · w[j][i]` for each `i` (vectors as rows).
fn combine(v: &[Vec<f64>], w: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let d = v[0].len();
    (0..v.len())
        .map(|i| {
            let mut out = vec![0f64; d];
            for (vj, wj) in v.iter().zip(w) {
                for (o, a) in out.iter_mut().zip(vj) {
                    *o += wj[i] * a;
                }
            }
            out
        })
        .collect()
}

/// Modified Gram–Schmidt; a vector that vanishes (rank-deficient data) is replaced by a fresh
/// one from `fresh`, so the block always spans `len` dimensions.
fn orthonormalize(q: &mut [Vec<f64>], fresh: &mut dyn FnMut() -> Vec<f64>) {
    for i in 0..q.len() {
        for attempt in 0..8 {
            let norm_before = dot(&q[i], &q[i]).sqrt();
            for j in 0..i {
                let (done, rest) = q.split_at_mut(i);
                let c = dot(&done[j], &rest[0]);
                for (a, b) in rest[0].iter_mut().zip(&done[j]) {
                    *a -= c * b;
                }
            }
            let norm = dot(&q[i], &q[i]).sqrt();
            if norm > 1e-10 * norm_before.max(f64::MIN_POSITIVE) && norm > 0.0 {
                q[i].iter_mut().for_each(|v| *v /= norm);
                break;
            }
            if attempt == 7 {
                q[i].iter_mut().for_each(|v| *v = 0.0);
            } else {
                q[i] = fresh();
            }
        }
    }
}

/// Eigenvalues (descending) and eigenvectors (`w[j][i]` = component `j` of vector `i`) of a
/// small symmetric matrix by cyclic Jacobi rotations.
fn symmetric_eigen(mut a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let p = a.len();
    let mut v: Vec<Vec<f64>> =
        (0..p).map(|i| (0..p).map(|j| if i == j { 1.0 } else { 0.0 }).collect()).collect();
    for _ in 0..100 {
        let off: f64 = (0..p)
            .flat_map(|i| (0..p).map(move |j| (i, j)))
            .filter(|(i, j)| i != j)
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        let diag: f64 = (0..p).map(|i| a[i][i] * a[i][i]).sum();
        if off <= 1e-30 * diag.max(f64::MIN_POSITIVE) {
            break;
        }
        for r in 0..p {
            for s in r + 1..p {
                if a[r][s] == 0.0 {
                    continue;
                }
                let theta = (a[s][s] - a[r][r]) / (2.0 * a[r][s]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let sn = t * c;
                for row in a.iter_mut() {
                    let (akr, aks) = (row[r], row[s]);
                    row[r] = c * akr - sn * aks;
                    row[s] = sn * akr + c * aks;
                }
                let (upper, lower) = a.split_at_mut(s);
                for (x, y) in upper[r].iter_mut().zip(lower[0].iter_mut()) {
                    let (ark, ask) = (*x, *y);
                    *x = c * ark - sn * ask;
                    *y = sn * ark + c * ask;
                }
                for row in v.iter_mut() {
                    let (vr, vs) = (row[r], row[s]);
                    row[r] = c * vr - sn * vs;
                    row[s] = sn * vr + c * vs;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..p).collect();
    order.sort_by(|&i, &j| a[j][j].total_cmp(&a[i][i]));
    let values = order.iter().map(|&i| a[i][i]).collect();
    let vectors = (0..p).map(|j| order.iter().map(|&i| v[j][i]).collect()).collect();
    (values, vectors)
}

// ---------------------------------------------------------------------------------------------
// SVG scatter plot.

/// Number of distinct group markers (8 shapes, filled then hollow); group `g` and
/// `g + MARKER_STYLES` share a marker.
pub const MARKER_STYLES: usize = 16;

const SVG_PLOT: f64 = 600.0;
const SVG_MARGIN: f64 = 40.0;
const SVG_LEGEND: f64 = 190.0;
const MARKER_R: f64 = 4.0;

/// Colour of identity `i`: hues spaced by the golden angle so that neighbouring identity
/// indices (often look-alikes in the synthetic set) get clearly different colours.
fn identity_colour(i: usize) -> String {
    let h = (i as f64 * 137.507_764) % 360.0;
    let (s, l) = (0.65, if i.is_multiple_of(2) { 0.45 } else { 0.6 });
    let c = (1.0 - (2.0 * l - 1.0f64).abs()) * s;
    let hp = h / 60.0;
    let x = c * (1.0 - (hp % 2.0 - 1.0).abs());
    let (r, g, b) = match hp as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = l - c / 2.0;
    let to = |v: f64| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    format!("#{:02x}{:02x}{:02x}", to(r), to(g), to(b))
}

/// SVG path of marker shape `shape` (0..8) centred at `(x, y)`.
fn marker_path(shape: usize, x: f64, y: f64) -> String {
    let r = MARKER_R;
    let poly = |pts: &[(f64, f64)]| {
        let mut s = String::new();
        for (k, (dx, dy)) in pts.iter().enumerate() {
            let _ = write!(s, "{}{:.2},{:.2}", if k == 0 { "M" } else { "L" }, x + dx, y + dy);
        }
        s.push('Z');
        s
    };
    let regular = |sides: usize, rot: f64| -> Vec<(f64, f64)> {
        (0..sides)
            .map(|k| {
                let a = rot + k as f64 * std::f64::consts::TAU / sides as f64;
                (r * a.cos(), r * a.sin())
            })
            .collect()
    };
    let t = r * 0.35;
    match shape % 8 {
        0 => format!(
            "M{:.2},{:.2}a{r},{r} 0 1,0 {:.2},0a{r},{r} 0 1,0 {:.2},0Z",
            x - r,
            y,
            2.0 * r,
            -2.0 * r
        ),
        1 => poly(&[
            (-r * 0.85, -r * 0.85),
            (r * 0.85, -r * 0.85),
            (r * 0.85, r * 0.85),
            (-r * 0.85, r * 0.85),
        ]),
        2 => poly(&regular(3, -std::f64::consts::FRAC_PI_2)),
        3 => poly(&regular(4, 0.0)),
        4 => poly(&regular(3, std::f64::consts::FRAC_PI_2)),
        5 => poly(&regular(6, 0.0)),
        6 => poly(&[
            (-t, -r),
            (t, -r),
            (t, -t),
            (r, -t),
            (r, t),
            (t, t),
            (t, r),
            (-t, r),
            (-t, t),
            (-r, t),
            (-r, -t),
            (-t, -t),
        ]),
        _ => {
            // an "x": the plus rotated by 45 degrees
            let c = std::f64::consts::FRAC_1_SQRT_2;
            let plus = [
                (-t, -r),
                (t, -r),
                (t, -t),
                (r, -t),
                (r, t),
                (t, t),
                (t, r),
                (-t, r),
                (-t, t),
                (-r, t),
                (-r, -t),
                (-t, -t),
            ];
            let rotated: Vec<(f64, f64)> =
                plus.iter().map(|(a, b)| (c * (a - b), c * (a + b))).collect();
            poly(&rotated)
        }
    }
}

/// Fill / stroke attributes of group `g`'s marker in `colour`.
fn marker_style(g: usize, colour: &str) -> String {
    if (g / 8).is_multiple_of(2) {
        format!("fill=\"{colour}\" stroke=\"#222222\" stroke-width=\"0.4\"")
    } else {
        format!("fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\"")
    }
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A self-contained SVG scatter plot of 2-D points (e.g. [`Projection::points`]), coloured
/// by identity and shaped by group (paper Fig. 4), with a legend of the groups present.
/// Every point is a `<path class="point" data-identity=".." data-group="..">`, so the file can
/// also be inspected or restyled by script. The y axis points up, as in a plot.
///
/// Errors: empty input, slices of different lengths, or a non-finite coordinate.
pub fn scatter_svg(
    points: &[[f64; 2]],
    identities: &[usize],
    groups: &[usize],
    title: &str,
) -> Result<String> {
    if points.is_empty() {
        return Err(AnalysisError::invalid("points", "nothing to plot"));
    }
    if identities.len() != points.len() || groups.len() != points.len() {
        return Err(AnalysisError::invalid(
            "identities",
            format!(
                "expected one identity and one group per point ({}), found {} and {}",
                points.len(),
                identities.len(),
                groups.len()
            ),
        ));
    }
    if let Some(i) = points.iter().position(|p| !p[0].is_finite() || !p[1].is_finite()) {
        return Err(AnalysisError::invalid("points", format!("point {i} is not finite")));
    }
    let range = |k: usize| {
        let lo = points.iter().map(|p| p[k]).fold(f64::INFINITY, f64::min);
        let hi = points.iter().map(|p| p[k]).fold(f64::NEG_INFINITY, f64::max);
        let span = if hi > lo { hi - lo } else { 2.0 };
        let mid = 0.5 * (lo + hi);
        (mid - 0.525 * span, mid + 0.525 * span)
    };
    let (x0, x1) = range(0);
    let (y0, y1) = range(1);
    let to_x = |v: f64| SVG_MARGIN + (v - x0) / (x1 - x0) * SVG_PLOT;
    let to_y = |v: f64| SVG_MARGIN + (y1 - v) / (y1 - y0) * SVG_PLOT;
    let width = SVG_PLOT + 2.0 * SVG_MARGIN + SVG_LEGEND;
    let height = SVG_PLOT + 2.0 * SVG_MARGIN;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(svg, "<title>{}</title>", xml_escape(title));
    let distinct_groups = {
        let mut g = groups.to_vec();
        g.sort_unstable();
        g.dedup();
        g
    };
    let _ = writeln!(
        svg,
        "<desc>{} points; colour = identity, marker = group{}</desc>",
        points.len(),
        if distinct_groups.iter().any(|&g| g >= MARKER_STYLES) {
            format!("; groups g and g+{MARKER_STYLES} share a marker")
        } else {
            String::new()
        }
    );
    let _ = writeln!(svg, "<rect width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>");
    let _ = writeln!(
        svg,
        "<rect x=\"{SVG_MARGIN}\" y=\"{SVG_MARGIN}\" width=\"{SVG_PLOT}\" height=\"{SVG_PLOT}\" \
         fill=\"none\" stroke=\"#999999\"/>"
    );
    let _ = writeln!(
        svg,
        "<text x=\"{SVG_MARGIN}\" y=\"{:.0}\" font-size=\"14\">{}</text>",
        SVG_MARGIN - 14.0,
        xml_escape(title)
    );
    for ((p, &id), &g) in points.iter().zip(identities).zip(groups) {
        let _ = writeln!(
            svg,
            "<path class=\"point\" data-identity=\"{id}\" data-group=\"{g}\" d=\"{}\" {}/>",
            marker_path(g, to_x(p[0]), to_y(p[1])),
            marker_style(g, &identity_colour(id))
        );
    }
    let lx = SVG_PLOT + 2.0 * SVG_MARGIN;
    let _ = writeln!(svg, "<text x=\"{lx}\" y=\"{SVG_MARGIN}\" font-size=\"13\">groups</text>");
    let row_h = ((SVG_PLOT - 20.0) / distinct_groups.len().max(1) as f64).min(18.0);
    for (k, &g) in distinct_groups.iter().enumerate() {
        let y = SVG_MARGIN + 20.0 + k as f64 * row_h;
        let count = groups.iter().filter(|&&x| x == g).count();
        let _ = writeln!(
            svg,
            "<path class=\"legend\" data-group=\"{g}\" d=\"{}\" {}/>",
            marker_path(g, lx + 6.0, y - 4.0),
            marker_style(g, "#555555")
        );
        let _ =
            writeln!(svg, "<text x=\"{:.0}\" y=\"{y:.1}\">group {g} ({count})</text>", lx + 16.0);
    }
    svg.push_str("</svg>\n");
    Ok(svg)
}

// ---------------------------------------------------------------------------------------------
// Image grids.

/// Sample indices to show for each group (paper Fig. 6): up to `per_group` samples of each of
/// the `groups` groups, most confident first when `confidence` (e.g. each sample's group
/// probability) is given, else in sample order; ties keep sample order.
pub fn samples_per_group(
    assignments: &[usize],
    groups: usize,
    per_group: usize,
    confidence: Option<&[f32]>,
) -> Result<Vec<Vec<usize>>> {
    if let Some(c) = confidence {
        if c.len() != assignments.len() {
            return Err(AnalysisError::invalid(
                "confidence",
                format!("expected one value per sample ({}), found {}", assignments.len(), c.len()),
            ));
        }
    }
    let mut out = vec![Vec::new(); groups];
    for (i, &g) in assignments.iter().enumerate() {
        out.get_mut(g)
            .ok_or_else(|| {
                AnalysisError::invalid(
                    "assignments",
                    format!("sample {i} is in group {g}, expected a group below {groups}"),
                )
            })?
            .push(i);
    }
    for members in out.iter_mut() {
        if let Some(c) = confidence {
            members.sort_by(|&a, &b| c[b].total_cmp(&c[a]));
        }
        members.truncate(per_group);
    }
    Ok(out)
}

/// Gap between cells, in pixels.
pub const GRID_GAP: u32 = 2;

/// Tiles images into one picture with a row per group (paper Fig. 6): row `r` shows the first
/// `columns` images of `rows[r]`, left to right, on a white background with [`GRID_GAP`]-pixel
/// gaps; a group without images leaves its row blank so rows stay aligned with group indices.
///
/// Errors: `columns == 0`, no image at all, or images of different sizes.
pub fn image_grid(rows: &[Vec<RgbImage>], columns: usize) -> Result<RgbImage> {
    if columns == 0 {
        return Err(AnalysisError::invalid("columns", "need at least one column"));
    }
    let (cw, ch) = rows
        .iter()
        .flatten()
        .next()
        .map(|img| img.dimensions())
        .ok_or_else(|| AnalysisError::invalid("rows", "no image to tile"))?;
    for (r, row) in rows.iter().enumerate() {
        for (c, img) in row.iter().take(columns).enumerate() {
            if img.dimensions() != (cw, ch) {
                return Err(AnalysisError::invalid(
                    "rows",
                    format!(
                        "image {c} of row {r} is {}x{}, expected {cw}x{ch} like the first",
                        img.width(),
                        img.height()
                    ),
                ));
            }
        }
    }
    let cols = u32::try_from(columns).unwrap_or(u32::MAX);
    let nrows = u32::try_from(rows.len()).unwrap_or(u32::MAX);
    let size = |n: u32, cell: u32| -> Option<u32> {
        n.checked_mul(cell)?.checked_add(n.checked_add(1)?.checked_mul(GRID_GAP)?)
    };
    let (w, h) = match (size(cols, cw), size(nrows, ch)) {
        (Some(w), Some(h)) if u64::from(w) * u64::from(h) <= 1 << 30 => (w, h),
        _ => return Err(AnalysisError::invalid("columns", "the grid would be too large")),
    };
    let mut out = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    for (r, row) in rows.iter().enumerate() {
        for (c, img) in row.iter().take(columns).enumerate() {
            let x = GRID_GAP + c as u32 * (cw + GRID_GAP);
            let y = GRID_GAP + r as u32 * (ch + GRID_GAP);
            image::imageops::replace(&mut out, img, i64::from(x), i64::from(y));
        }
    }
    Ok(out)
}

/// Saves `image` as PNG at `path`, naming the path on failure.
pub fn write_png(image: &RgbImage, path: &Path) -> Result<()> {
    image
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|source| AnalysisError::Image { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_shares_and_entropy() {
        let u = GroupUsage::from_assignments(&[0, 0, 1, 3, 3, 3, 3, 1], 4).unwrap();
        assert_eq!(u.counts, vec![2, 2, 0, 4]);
        assert_eq!(u.shares, vec![0.25, 0.25, 0.0, 0.5]);
        // H = −(2 · 0.25 ln 0.25 + 0.5 ln 0.5) = 1.5 ln 2
        let h = 1.5 * 2f64.ln();
        assert!((u.entropy - h).abs() < 1e-12);
        assert!((u.normalized_entropy - h / 4f64.ln()).abs() < 1e-12);
        assert!((u.effective_groups - 2f64.powf(1.5)).abs() < 1e-12);
        let uniform = GroupUsage::from_assignments(&[0, 1, 2, 0, 1, 2], 3).unwrap();
        assert!((uniform.normalized_entropy - 1.0).abs() < 1e-12);
        assert!((uniform.effective_groups - 3.0).abs() < 1e-12);
        let collapsed = GroupUsage::from_assignments(&[2; 5], 3).unwrap();
        assert_eq!((collapsed.entropy, collapsed.effective_groups), (0.0, 1.0));
        match GroupUsage::from_assignments(&[0, 4], 4) {
            Err(AnalysisError::InvalidInput { what, .. }) => assert!(what.contains("sample 1")),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
        assert!(GroupUsage::from_assignments(&[], 4).is_err());
        assert!(GroupUsage::from_assignments(&[0], 0).is_err());
        assert_eq!(entropy(&[]), 0.0);
    }

    #[test]
    fn nmi_hand_values() {
        // identical partitions (up to renaming) -> 1; independent ones -> 0
        assert!(
            (normalized_mutual_info(&[0, 0, 1, 1], &[7, 7, 3, 3]).unwrap() - 1.0).abs() < 1e-12
        );
        assert_eq!(normalized_mutual_info(&[0, 0, 1, 1], &[0, 1, 0, 1]).unwrap(), 0.0);
        // a = [0,0,1,1], b = [0,0,0,1]: joint counts (0,0)=2, (1,0)=1, (1,1)=1 of 4
        // MI = ½ ln(½ / (½·¾)) + ¼ ln(¼ / (½·¾)) + ¼ ln(¼ / (½·¼))
        let mi = 0.5 * (4.0f64 / 3.0).ln() + 0.25 * (2.0f64 / 3.0).ln() + 0.25 * 2f64.ln();
        let ha = 2f64.ln();
        let hb = -(0.75 * 0.75f64.ln() + 0.25 * 0.25f64.ln());
        let a = [0, 0, 1, 1];
        let b = [0, 0, 0, 1];
        assert!((mutual_information(&a, &b).unwrap() - mi).abs() < 1e-12);
        let nmi = normalized_mutual_info(&a, &b).unwrap();
        assert!((nmi - mi / (0.5 * (ha + hb))).abs() < 1e-12);
        assert!((normalized_mutual_info(&b, &a).unwrap() - nmi).abs() < 1e-15, "symmetric");
        // scikit-learn's limit cases
        assert_eq!(normalized_mutual_info(&[3, 3], &[1, 1]).unwrap(), 1.0);
        assert_eq!(normalized_mutual_info(&[], &[]).unwrap(), 1.0);
        assert_eq!(normalized_mutual_info(&[0, 0, 0, 1], &[5, 5, 5, 5]).unwrap(), 0.0);
        assert!(normalized_mutual_info(&[0, 1], &[0]).is_err());
    }

    #[test]
    fn nmi_matches_scikit_learn() {
        // python3 -c "from sklearn.metrics import normalized_mutual_info_score as n, \
        //   mutual_info_score as m; a=[0,0,1,1,2,2,2,3]; b=[0,0,0,1,1,2,2,2]; \
        //   print(repr(n(a,b)), repr(m(a,b)))"   (scikit-learn 1.9.1; scripts/analysis_parity.py)
        let a = [0, 0, 1, 1, 2, 2, 2, 3];
        let b = [0, 0, 0, 1, 1, 2, 2, 2];
        assert!((normalized_mutual_info(&a, &b).unwrap() - 0.5577965290899926).abs() < 1e-12);
        assert!((mutual_information(&a, &b).unwrap() - 0.670215921788226).abs() < 1e-12);
        // python3 -c "from sklearn.metrics import normalized_mutual_info_score as n, \
        //   mutual_info_score as m; g=[i*7%5 for i in range(40)]; \
        //   t=[(i*3)%4+(i%5==0) for i in range(40)]; print(repr(n(g,t)), repr(m(g,t)))"
        let g: Vec<usize> = (0..40).map(|i| i * 7 % 5).collect();
        let t: Vec<usize> = (0..40).map(|i| (i * 3) % 4 + usize::from(i % 5 == 0)).collect();
        assert!((normalized_mutual_info(&g, &t).unwrap() - 0.08017129446999016).abs() < 1e-12);
        assert!((mutual_information(&g, &t).unwrap() - 0.12510060588454716).abs() < 1e-12);
    }

    #[test]
    fn attribute_agreement_reports_each_attribute() {
        // 64 samples; groups follow attribute 0 exactly and ignore attribute 1
        let attrs: Vec<[u8; 2]> = (0..64u8).map(|i| [i % 4, (i / 4) % 3]).collect();
        let groups: Vec<usize> = attrs.iter().map(|a| usize::from(a[0])).collect();
        let res = attribute_agreement(&groups, &attrs, &["shape", "tone"]).unwrap();
        assert_eq!(res.len(), 2);
        assert_eq!(res[0].attribute, "shape");
        assert!((res[0].nmi - 1.0).abs() < 1e-12);
        assert!((res[0].mutual_information - 4f64.ln()).abs() < 1e-12);
        assert!((res[0].attribute_entropy - 4f64.ln()).abs() < 1e-12);
        assert!(res[0].chance_nmi > 0.0 && res[0].chance_nmi < 0.2, "{}", res[0].chance_nmi);
        let tone: Vec<usize> = attrs.iter().map(|a| usize::from(a[1])).collect();
        assert!((res[1].nmi - normalized_mutual_info(&groups, &tone).unwrap()).abs() < 1e-15);
        assert!(res[1].nmi < 0.1);
        // deterministic
        assert_eq!(res, attribute_agreement(&groups, &attrs, &["shape", "tone"]).unwrap());
        assert!(attribute_agreement(&groups[..3], &attrs, &["shape", "tone"]).is_err());
        match attribute_agreement(&groups, &attrs, &["shape"]) {
            Err(AnalysisError::InvalidInput { what, .. }) => assert!(what.contains("sample 0")),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    fn assert_close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }

    #[test]
    fn pca_axis_aligned_hand_case() {
        // variances along x, y, z: 18/5, 8/5, 2/5 (n − 1 = 5)
        let rows = [
            [3.0f32, 0.0, 0.0],
            [-3.0, 0.0, 0.0],
            [0.0, 2.0, 0.0],
            [0.0, -2.0, 0.0],
            [0.0, 0.0, 1.0],
            [0.0, 0.0, -1.0],
        ];
        let p = pca_2d(&Matrix::from_rows(&rows, "rows").unwrap()).unwrap();
        assert_close(p.explained_variance[0], 3.6);
        assert_close(p.explained_variance[1], 1.6);
        assert_close(p.total_variance, 5.6);
        for (got, want) in p.axes[0].iter().zip([1.0, 0.0, 0.0]) {
            assert_close(*got, want);
        }
        for (got, want) in p.axes[1].iter().zip([0.0, 1.0, 0.0]) {
            assert_close(*got, want);
        }
        let want = [[3.0, 0.0], [-3.0, 0.0], [0.0, 2.0], [0.0, -2.0], [0.0, 0.0], [0.0, 0.0]];
        for (got, want) in p.points.iter().zip(want) {
            assert_close(got[0], want[0]);
            assert_close(got[1], want[1]);
        }
    }

    #[test]
    fn pca_rotated_and_shifted_hand_case() {
        // ±2 along u = (1,1,0)/√2 and ±1 along v = (1,−1,0)/√2, all shifted by (5,5,5)
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let rows: Vec<[f32; 3]> = [(2.0, 0.0), (-2.0, 0.0), (0.0, 1.0), (0.0, -1.0)]
            .iter()
            .map(|&(a, b)| [5.0 + s * (a + b), 5.0 + s * (a - b), 5.0])
            .collect();
        let p = pca_2d(&Matrix::from_rows(&rows, "rows").unwrap()).unwrap();
        let tol = 1e-6; // inputs are f32
        assert!((p.explained_variance[0] - 8.0 / 3.0).abs() < tol);
        assert!((p.explained_variance[1] - 2.0 / 3.0).abs() < tol);
        // v's entries tie in magnitude: the first one is made positive
        let r = std::f64::consts::FRAC_1_SQRT_2;
        for (axis, want) in p.axes.iter().zip([[r, r, 0.0], [r, -r, 0.0]]) {
            for (g, w) in axis.iter().zip(want) {
                assert!((g - w).abs() < tol, "{axis:?}");
            }
        }
        let want = [[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]];
        for (got, want) in p.points.iter().zip(want) {
            assert!((got[0] - want[0]).abs() < tol && (got[1] - want[1]).abs() < tol);
        }
    }

    #[test]
    fn pca_matches_scikit_learn() {
        // python3 -c "import numpy as np; from sklearn.decomposition import PCA; \
        //   X = np.fromfunction(lambda i, j: (i*i*3 + j*5 + i*j) % 17, (30, 6)).astype(float); \
        //   p = PCA(2).fit(X); print(p.explained_variance_, abs(p.transform(X)[:3]))"
        // (scikit-learn 1.9.1, scripts/analysis_parity.py; absolute values because the two
        // sign conventions differ)
        let rows: Vec<Vec<f32>> = (0..30)
            .map(|i: usize| {
                (0..6).map(|j: usize| ((i * i * 3 + j * 5 + i * j) % 17) as f32).collect()
            })
            .collect();
        let p = pca_2d(&Matrix::from_rows(&rows, "rows").unwrap()).unwrap();
        assert_close(p.explained_variance[0], 41.86563452153109);
        assert_close(p.explained_variance[1], 31.695765488682262);
        let want = [
            [4.025734555957105, 9.049129017584217],
            [8.027863542165363, 0.33031545740525825],
            [0.4536763206058021, 6.00574364037654],
        ];
        for (got, want) in p.points.iter().zip(want) {
            assert_close(got[0].abs(), want[0]);
            assert_close(got[1].abs(), want[1]);
        }
    }

    #[test]
    fn pca_rank_one_and_bad_inputs() {
        // all points on one line: the second axis carries no variance but is still orthogonal
        let rows: Vec<[f32; 4]> = (0..5).map(|i| [i as f32, 2.0 * i as f32, 0.0, 1.0]).collect();
        let p = pca_2d(&Matrix::from_rows(&rows, "rows").unwrap()).unwrap();
        assert!((p.explained_variance[0] - p.total_variance).abs() < 1e-9);
        assert!(p.explained_variance[1].abs() < 1e-9);
        assert!(dot(&p.axes[0], &p.axes[1]).abs() < 1e-9);
        assert!((dot(&p.axes[1], &p.axes[1]) - 1.0).abs() < 1e-9);
        assert!(pca_2d(&Matrix::from_rows(&[[1.0f32, 2.0]; 3], "rows").unwrap()).is_err());
        assert!(pca_2d(&Matrix::from_rows(&[[1.0f32, 2.0]], "rows").unwrap()).is_err());
        assert!(pca_2d(&Matrix::from_rows(&[[1.0f32], [2.0]], "rows").unwrap()).is_err());
        let nan = Matrix::from_rows(&[[1.0f32, 2.0], [f32::NAN, 0.0]], "rows").unwrap();
        match pca_2d(&nan) {
            Err(AnalysisError::InvalidInput { what, .. }) => assert!(what.contains("row 1")),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn jacobi_solves_a_small_symmetric_matrix() {
        // [[2,1],[1,2]] has eigenvalues 3 and 1 with vectors (1,1)/√2 and (1,−1)/√2
        let (vals, w) = symmetric_eigen(vec![vec![2.0, 1.0], vec![1.0, 2.0]]);
        assert_close(vals[0], 3.0);
        assert_close(vals[1], 1.0);
        assert_close(w[0][0].abs(), std::f64::consts::FRAC_1_SQRT_2);
        assert_close(w[0][0] * w[1][0], 0.5);
        assert_close(w[0][1] * w[1][1], -0.5);
    }

    /// The `d="M x,y ..."` start of each point path and its attributes.
    fn points_of(svg: &str) -> Vec<(String, f64, f64)> {
        svg.lines()
            .filter(|l| l.starts_with("<path class=\"point\""))
            .map(|l| {
                let d = l.split("d=\"M").nth(1).unwrap();
                let xy: Vec<f64> =
                    d.split([',', 'L', 'a', 'Z']).take(2).map(|v| v.parse().unwrap()).collect();
                (l.to_owned(), xy[0], xy[1])
            })
            .collect()
    }

    #[test]
    fn scatter_svg_structure() {
        let pts = [[0.0, 0.0], [1.0, 2.0], [-3.0, 1.0], [2.0, -1.0], [0.5, 0.5]];
        let ids = [0, 0, 1, 2, 1];
        let groups = [0, 9, 9, 17, 1];
        let svg = scatter_svg(&pts, &ids, &groups, "PCA <r34> & groups").unwrap();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("PCA &lt;r34&gt; &amp; groups"));
        assert!(!svg.contains("href"), "no external resources");
        assert!(svg.contains("share a marker"), "group 17 reuses group 1's marker");
        let parsed = points_of(&svg);
        assert_eq!(parsed.len(), 5);
        for (line, x, y) in &parsed {
            assert!((30.0..=650.0).contains(x) && (30.0..=650.0).contains(y), "{line}");
        }
        // y grows upwards: point 1 (y = 2) is above point 3 (y = −1)
        assert!(parsed[1].2 < parsed[3].2);
        // same identity -> same colour; group 9 is hollow, group 0 filled
        let colour = identity_colour(0);
        assert!(parsed[0].0.contains(&format!("fill=\"{colour}\"")));
        assert!(parsed[1].0.contains(&format!("stroke=\"{colour}\"")));
        assert!(parsed[1].0.contains("fill=\"none\""));
        assert_ne!(identity_colour(1), identity_colour(2));
        assert!(parsed[3].0.contains("data-identity=\"2\" data-group=\"17\""));
        // one legend entry per distinct group, with its count
        assert_eq!(svg.matches("class=\"legend\"").count(), 4);
        assert!(svg.contains("group 9 (2)"));
        // every marker style differs in shape or fill
        let styles: std::collections::HashSet<(String, bool)> = (0..MARKER_STYLES)
            .map(|g| {
                let d = marker_path(g, 0.0, 0.0);
                (d, marker_style(g, "#000000").contains("none"))
            })
            .collect();
        assert_eq!(styles.len(), MARKER_STYLES);
        // a single point (zero range) still lands inside the plot
        let one = scatter_svg(&[[4.0, 4.0]], &[0], &[0], "one").unwrap();
        let (_, x, y) = points_of(&one)[0].clone();
        assert!((x - 336.0).abs() < 1e-6 && (y - 340.0).abs() < 1e-6, "{x} {y}");
        assert!(scatter_svg(&pts, &ids[..4], &groups, "t").is_err());
        assert!(scatter_svg(&[[f64::NAN, 0.0]], &[0], &[0], "t").is_err());
        assert!(scatter_svg(&[], &[], &[], "t").is_err());
    }

    #[test]
    fn samples_per_group_orders_by_confidence() {
        let assign = [1, 0, 1, 1, 2, 1];
        let conf = [0.2, 0.9, 0.8, 0.5, 0.7, 0.8];
        let by_conf = samples_per_group(&assign, 4, 2, Some(&conf)).unwrap();
        assert_eq!(by_conf, vec![vec![1], vec![2, 5], vec![4], vec![]]);
        let by_index = samples_per_group(&assign, 3, 3, None).unwrap();
        assert_eq!(by_index, vec![vec![1], vec![0, 2, 3], vec![4]]);
        assert!(samples_per_group(&assign, 2, 2, None).is_err());
        assert!(samples_per_group(&assign, 3, 2, Some(&conf[..2])).is_err());
    }

    #[test]
    fn image_grid_layout() {
        let cell = |v: u8| RgbImage::from_pixel(3, 2, Rgb([v, v, v]));
        let rows = vec![vec![cell(10), cell(20), cell(30)], vec![], vec![cell(40)]];
        let grid = image_grid(&rows, 2).unwrap();
        // width = 2 cells · 3 + 3 gaps · 2 = 12; height = 3 rows · 2 + 4 gaps · 2 = 14
        assert_eq!(grid.dimensions(), (12, 14));
        let at = |x, y| grid.get_pixel(x, y).0[0];
        // row 0: cells at x = 2..5 and 7..10, y = 2..4; the third image is cut
        assert_eq!((at(2, 2), at(4, 3), at(7, 2), at(9, 3)), (10, 10, 20, 20));
        assert_eq!((at(5, 2), at(6, 3), at(10, 2), at(0, 0)), (255, 255, 255, 255));
        // row 1 is blank, row 2 starts at y = 2 + 2 · (2 + 2) = 10
        assert!((6..8).all(|y| (0..12).all(|x| at(x, y) == 255)));
        assert_eq!((at(2, 10), at(4, 11), at(7, 10), at(2, 12)), (40, 40, 255, 255));
        assert!(image_grid(&rows, 0).is_err());
        assert!(image_grid(&[vec![], vec![]], 2).is_err());
        let mixed = vec![vec![cell(1)], vec![RgbImage::new(2, 2)]];
        match image_grid(&mixed, 2) {
            Err(AnalysisError::InvalidInput { what, .. }) => assert!(what.contains("row 1")),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
        let path = std::env::temp_dir().join(format!("groupface-grid-{}.png", std::process::id()));
        write_png(&grid, &path).unwrap();
        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!(back.as_raw(), grid.as_raw());
        std::fs::remove_file(&path).unwrap();
        assert!(write_png(&grid, Path::new("/nonexistent-dir/x.png")).is_err());
    }
}
