//! Procedural synthetic faces: the library's embedded default dataset.
//!
//! Every identity is defined by hidden discrete attributes (face shape, skin tone, hair colour,
//! hair style, beard, glasses) that form natural groups, plus continuous "genes" for the face
//! geometry and colours. A fraction of identities are *look-alikes*: copies of an earlier
//! identity with most attributes shared and the geometry perturbed only slightly, which makes
//! verification at low false-accept rates hard for small models.
//!
//! Each image adds per-image nuisance scaled by [`SynthConfig::difficulty`]: in-plane rotation,
//! a yaw-like horizontal warp, scale and shift, lighting gradient, brightness / contrast / colour
//! cast, expression (smile, open mouth, eye openness, brow raise), blur, pixel noise, a background
//! (solid, gradient or texture) and sometimes an occluder (a rectangle or a hand-like blob).
//! At `difficulty == 0` all images of one identity are identical.
//!
//! Faces are roughly aligned like the ArcFace 112x112 template (eyes near y = 51/112 at
//! x = 38/112 and 73/112, nose tip near (56, 71)/112, mouth corners near y = 92/112) and are
//! drawn in normalised coordinates with analytic anti-aliasing, so any `side` works.
//!
//! Determinism: the same `(seed, identity, index)` gives bit-identical pixels on any machine.
//! Only `+ - * /`, `sqrt`, `abs`, `floor`, `min`/`max` and exact integer/float conversions are
//! used (trigonometry uses a fixed polynomial), and all randomness comes from
//! [`SplitMix64`] (from the `rng` module) seeded by hashing the triple.

use std::fs;
use std::path::Path;

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use super::error::{DataError, Result};
use super::rng::{hash3, mix64, SplitMix64};
use crate::util::fs::Staged;
use crate::util::progress::{NoProgress, Progress};

/// Number of hidden discrete attributes per identity.
pub const NUM_ATTRIBUTES: usize = 6;

/// Names of the hidden attributes, in the order used by [`SynthFaces::attributes`].
pub const ATTRIBUTE_NAMES: [&str; NUM_ATTRIBUTES] =
    ["face_shape", "skin_tone", "hair_colour", "hair_style", "beard", "glasses"];

/// Names of each attribute's values (value `v` of attribute `a` is `ATTRIBUTE_VALUES[a][v]`).
pub const ATTRIBUTE_VALUES: [&[&str]; NUM_ATTRIBUTES] = [
    &["oval", "round", "long", "square"],
    &["very_light", "light", "medium", "tan", "dark"],
    &["black", "brown", "blonde", "red", "grey"],
    &["short", "long", "curly", "bald"],
    &["none", "stubble", "full"],
    &["none", "clear", "dark"],
];

/// Sampling weights of each attribute's values (unnormalised).
const ATTRIBUTE_WEIGHTS: [&[f32]; NUM_ATTRIBUTES] = [
    &[1.0, 1.0, 1.0, 1.0],
    &[1.0, 1.0, 1.0, 1.0, 1.0],
    &[3.0, 3.0, 2.0, 1.0, 1.0],
    &[0.35, 0.30, 0.15, 0.20],
    &[0.58, 0.24, 0.18],
    &[0.60, 0.25, 0.15],
];

/// Probability of each attribute value (the weights above, normalised); handy for tests and
/// for reporting group statistics.
pub fn attribute_probabilities(attribute: usize) -> Vec<f32> {
    match ATTRIBUTE_WEIGHTS.get(attribute) {
        Some(w) => {
            let total: f32 = w.iter().sum();
            w.iter().map(|x| x / total).collect()
        }
        None => Vec::new(),
    }
}

const A_FACE: usize = 0;
const A_SKIN: usize = 1;
const A_HAIR_COLOUR: usize = 2;
const A_HAIR_STYLE: usize = 3;
const A_BEARD: usize = 4;
const A_GLASSES: usize = 5;

const STYLE_SHORT: u8 = 0;
const STYLE_LONG: u8 = 1;
const STYLE_CURLY: u8 = 2;
const STYLE_BALD: u8 = 3;

/// Stream tags so that the identity, look-alike and image streams never collide.
const TAG_IDENTITY: u64 = 0x1D_E471_7100;
const TAG_LOOKALIKE: u64 = 0x100C_A11C_E000;
const TAG_IMAGE: u64 = 0x1A6E_0000_0000;

/// Configuration of the synthetic face generator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthConfig {
    /// Seed of the whole dataset; different seeds give unrelated identities.
    pub seed: u64,
    /// Number of identities (classes).
    pub identities: usize,
    /// Images generated per identity.
    pub images_per_identity: usize,
    /// Output image side in pixels (images are square), 8..=1024.
    pub side: u32,
    /// Nuisance strength in `[0, 1]`: 0 gives identical images per identity.
    pub difficulty: f32,
    /// Fraction in `[0, 1]` of identities derived as look-alikes of an earlier identity.
    pub lookalike_fraction: f32,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 0,
            identities: 100,
            images_per_identity: 20,
            side: 112,
            difficulty: 0.5,
            lookalike_fraction: 0.2,
        }
    }
}

impl SynthConfig {
    /// Checks every field, returning [`DataError::InvalidConfig`] naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.identities == 0 {
            return Err(invalid("identities", "must be at least 1"));
        }
        if self.images_per_identity == 0 {
            return Err(invalid("images_per_identity", "must be at least 1"));
        }
        if self.identities.checked_mul(self.images_per_identity).is_none() {
            return Err(invalid(
                "images_per_identity",
                "identities * images_per_identity overflows",
            ));
        }
        if !(8..=1024).contains(&self.side) {
            return Err(invalid("side", format!("must be in 8..=1024, got {}", self.side)));
        }
        if !(0.0..=1.0).contains(&self.difficulty) {
            return Err(invalid(
                "difficulty",
                format!("must be in [0, 1], got {}", self.difficulty),
            ));
        }
        if !(0.0..=1.0).contains(&self.lookalike_fraction) {
            return Err(invalid(
                "lookalike_fraction",
                format!("must be in [0, 1], got {}", self.lookalike_fraction),
            ));
        }
        Ok(())
    }
}

fn invalid(field: &'static str, what: impl Into<String>) -> DataError {
    DataError::InvalidConfig { field, what: what.into() }
}

// ---------------------------------------------------------------------------------------------
// Deterministic maths helpers.

const PI: f32 = std::f32::consts::PI;
const TAU: f32 = 2.0 * PI;
const HALF_PI: f32 = 0.5 * PI;

/// Sine by range reduction and a fixed odd polynomial (max error about 1e-6 on any platform).
fn psin(x: f32) -> f32 {
    let k = (x * (1.0 / TAU) + 0.5).floor();
    let mut r = x - k * TAU;
    if r > HALF_PI {
        r = PI - r;
    } else if r < -HALF_PI {
        r = -PI - r;
    }
    let r2 = r * r;
    r * (1.0
        + r2 * (-1.0 / 6.0 + r2 * (1.0 / 120.0 + r2 * (-1.0 / 5040.0 + r2 * (1.0 / 362_880.0)))))
}

/// Cosine via [`psin`].
fn pcos(x: f32) -> f32 {
    psin(x + HALF_PI)
}

#[inline]
fn sq(x: f32) -> f32 {
    x * x
}

#[inline]
fn clamp01(x: f32) -> f32 {
    x.clamp(0.0, 1.0)
}

/// Coverage of a shape with signed distance `d` by a pixel of footprint `w`.
#[inline]
fn cov(d: f32, w: f32) -> f32 {
    clamp01(0.5 - d / w)
}

#[inline]
fn mix(c: &mut [f32; 3], col: [f32; 3], a: f32) {
    if a > 0.0 {
        c[0] += (col[0] - c[0]) * a;
        c[1] += (col[1] - c[1]) * a;
        c[2] += (col[2] - c[2]) * a;
    }
}

#[inline]
fn scale3(c: [f32; 3], k: f32) -> [f32; 3] {
    [c[0] * k, c[1] * k, c[2] * k]
}

#[inline]
fn lerp3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

#[inline]
fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

/// Approximate signed distance to an axis-aligned ellipse (first-order, exact on the boundary
/// direction).
#[inline]
fn ellipse_sd(x: f32, y: f32, a: f32, b: f32) -> f32 {
    let ia = 1.0 / a;
    let ib = 1.0 / b;
    let nx = x * ia;
    let ny = y * ib;
    let r = (nx * nx + ny * ny).sqrt();
    let gx = nx * ia;
    let gy = ny * ib;
    let g = (gx * gx + gy * gy).sqrt();
    if g < 1e-6 {
        return -a.min(b);
    }
    (r - 1.0) * r / g
}

/// Signed distance to a capsule (segment `a`..`b` with radius `r`).
#[inline]
fn capsule_sd(px: f32, py: f32, ax: f32, ay: f32, bx: f32, by: f32, r: f32) -> f32 {
    let pax = px - ax;
    let pay = py - ay;
    let bax = bx - ax;
    let bay = by - ay;
    let dd = bax * bax + bay * bay;
    let h = if dd > 0.0 { clamp01((pax * bax + pay * bay) / dd) } else { 0.0 };
    let dx = pax - bax * h;
    let dy = pay - bay * h;
    (dx * dx + dy * dy).sqrt() - r
}

// ---------------------------------------------------------------------------------------------
// Identities.

/// Continuous identity "genes", each in [0, 1] and mapped to a range when rendering.
const NUM_GENES: usize = 36;
const G_FACE_W: usize = 0;
const G_FACE_H: usize = 1;
const G_JAW: usize = 2;
const G_EYE_DX: usize = 3;
const G_EYE_W: usize = 4;
const G_EYE_H: usize = 5;
const G_EYE_TILT: usize = 6;
const G_IRIS_R: usize = 7;
const G_BROW_GAP: usize = 8;
const G_BROW_LEN: usize = 9;
const G_BROW_TH: usize = 10;
const G_BROW_SLANT: usize = 11;
const G_BROW_ARCH: usize = 12;
const G_NOSE_Y: usize = 13;
const G_NOSE_W: usize = 14;
const G_NOSE_BRIDGE: usize = 15;
const G_MOUTH_Y: usize = 16;
const G_MOUTH_W: usize = 17;
const G_LIP_TH: usize = 18;
const G_EAR: usize = 19;
const G_HAIRLINE: usize = 20;
const G_PART: usize = 21;
const G_HAIR_VOL: usize = 22;
const G_SKIN_L: usize = 23;
const G_SKIN_HUE: usize = 24;
const G_HAIR_L: usize = 25;
const G_IRIS_COL: usize = 26;
const G_LIP_RED: usize = 27;
const G_LENS_SHAPE: usize = 28;
const G_LENS_SIZE: usize = 29;
const G_FRAME_COL: usize = 30;
const G_BLUSH: usize = 31;
const G_EYE_Y: usize = 32;
const G_CHIN: usize = 33;
const G_HAIR_LEN: usize = 34;
const G_REST_SMILE: usize = 35;

/// One identity: discrete attributes, genes and (for look-alikes) the parent identity.
#[derive(Debug, Clone)]
struct Identity {
    attrs: [u8; NUM_ATTRIBUTES],
    genes: [f32; NUM_GENES],
    parent: Option<usize>,
}

impl Identity {
    /// Gene `i` on `[lo, hi]`: genes are kept in `[0, 1]` so that look-alikes perturb all alike.
    fn gene(&self, i: usize, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.genes[i]
    }
}

/// Whether identity `i` is flagged as a look-alike (a pure function of seed and index).
fn lookalike_flag(seed: u64, i: usize, fraction: f32) -> bool {
    if i == 0 || fraction <= 0.0 {
        return false;
    }
    SplitMix64::new(hash3(seed, i as u64, TAG_LOOKALIKE)).f32() < fraction
}

/// Parent of a look-alike: an earlier identity that is not itself a look-alike.
fn lookalike_parent(seed: u64, i: usize, fraction: f32) -> Option<usize> {
    if !lookalike_flag(seed, i, fraction) {
        return None;
    }
    let mut rng = SplitMix64::new(hash3(seed, i as u64, TAG_LOOKALIKE ^ 0xFF));
    for _ in 0..16 {
        let j = rng.below(i);
        if !lookalike_flag(seed, j, fraction) {
            return Some(j);
        }
    }
    None
}

/// An identity drawn from scratch.
fn base_identity(seed: u64, i: usize) -> Identity {
    let mut rng = SplitMix64::new(hash3(seed, i as u64, TAG_IDENTITY));
    let mut attrs = [0u8; NUM_ATTRIBUTES];
    for (a, w) in attrs.iter_mut().zip(ATTRIBUTE_WEIGHTS.iter()) {
        *a = rng.weighted(w) as u8;
    }
    let mut genes = [0f32; NUM_GENES];
    for g in genes.iter_mut() {
        *g = rng.f32();
    }
    Identity { attrs, genes, parent: None }
}

/// Identity `i` of the dataset `(seed, fraction)`, look-alikes derived from their parent.
fn make_identity(seed: u64, i: usize, fraction: f32) -> Identity {
    let Some(p) = lookalike_parent(seed, i, fraction) else {
        return base_identity(seed, i);
    };
    let mut id = base_identity(seed, p);
    id.parent = Some(p);
    let mut rng = SplitMix64::new(hash3(seed, i as u64, TAG_LOOKALIKE ^ 0xA5A5));
    // Change at most one "style" attribute; face shape and skin tone stay.
    if rng.chance(0.35) {
        let which = [A_HAIR_COLOUR, A_HAIR_STYLE, A_BEARD, A_GLASSES][rng.below(4)];
        id.attrs[which] = rng.weighted(ATTRIBUTE_WEIGHTS[which]) as u8;
    }
    for g in id.genes.iter_mut() {
        *g = clamp01(*g + 0.12 * rng.normal());
    }
    id
}

// ---------------------------------------------------------------------------------------------
// Palettes.

const SKIN_TONES: [[f32; 3]; 5] = [
    [0.96, 0.83, 0.74],
    [0.90, 0.72, 0.60],
    [0.76, 0.56, 0.42],
    [0.58, 0.40, 0.28],
    [0.38, 0.26, 0.18],
];

const HAIR_COLOURS: [[f32; 3]; 5] = [
    [0.07, 0.06, 0.06],
    [0.28, 0.17, 0.10],
    [0.86, 0.71, 0.44],
    [0.58, 0.24, 0.10],
    [0.66, 0.66, 0.66],
];

const IRIS_COLOURS: [[f32; 3]; 4] =
    [[0.25, 0.15, 0.08], [0.40, 0.27, 0.14], [0.30, 0.45, 0.62], [0.35, 0.48, 0.30]];

const FRAME_COLOURS: [[f32; 3]; 4] =
    [[0.05, 0.05, 0.05], [0.30, 0.18, 0.10], [0.62, 0.62, 0.66], [0.55, 0.10, 0.12]];

fn palette_pick<const N: usize>(p: &[[f32; 3]; N], g: f32) -> [f32; 3] {
    let i = ((g * N as f32) as usize).min(N - 1);
    p[i]
}

// ---------------------------------------------------------------------------------------------
// Per-image scene.

#[derive(Debug, Clone)]
enum Background {
    Solid([f32; 3]),
    Gradient { a: [f32; 3], b: [f32; 3], dx: f32, dy: f32 },
    Texture { grid: Box<[[f32; 3]; 25]>, fx: f32, fy: f32, stripe: f32 },
}

#[derive(Debug, Clone, Copy)]
enum Occluder {
    None,
    Rect { cx: f32, cy: f32, hw: f32, hh: f32, col: [f32; 3] },
    Hand { cx: f32, cy: f32, cos: f32, sin: f32, col: [f32; 3] },
}

/// Everything needed to shade one image, derived from an identity and per-image nuisance.
struct Scene {
    fw: f32,
    // screen -> face transform
    cos_r: f32,
    sin_r: f32,
    inv_scale: f32,
    sx: f32,
    sy: f32,
    yaw: f32,
    yaw_squash: f32,
    background: Background,
    shirt: [f32; 3],
    // face shape
    face_cy: f32,
    face_a: f32,
    face_b: f32,
    taper: f32,
    square: f32,
    chin: f32,
    skin: [f32; 3],
    light_x: f32,
    face_light: f32,
    blush: f32,
    // eyes
    eye_dx: f32,
    eye_y: f32,
    eye_w: f32,
    eye_h: f32,
    eye_h_full: f32,
    eye_tilt: f32,
    iris_r: f32,
    iris_col: [f32; 3],
    gaze: f32,
    // brows
    brow_y: f32,
    brow_half: f32,
    brow_th: f32,
    brow_slant: f32,
    brow_arch: f32,
    brow_col: [f32; 3],
    // nose and mouth
    nose_y: f32,
    nose_w: f32,
    nose_bridge: f32,
    mouth_y: f32,
    mouth_w: f32,
    lip_th: f32,
    lip_col: [f32; 3],
    smile: f32,
    mouth_open: f32,
    // ears
    ear_y: f32,
    ear_w: f32,
    ear_h: f32,
    // hair and beard
    hair_style: u8,
    hair: [f32; 3],
    hairline: f32,
    part: f32,
    hair_vol: f32,
    hair_len: f32,
    beard: u8,
    // glasses
    glasses: u8,
    lens_w: f32,
    lens_h: f32,
    lens_sq: f32,
    frame_col: [f32; 3],
    occluder: Occluder,
}

/// Post-processing parameters of one image.
struct Post {
    light_k: f32,
    light_x: f32,
    light_y: f32,
    brightness: f32,
    contrast: f32,
    gain: [f32; 3],
    blur_passes: u32,
    noise: f32,
}

fn random_colour(rng: &mut SplitMix64) -> [f32; 3] {
    [rng.range(0.1, 0.95), rng.range(0.1, 0.95), rng.range(0.1, 0.95)]
}

/// Camera-like nuisance; kept apart from the face so the screen -> face transform has one source.
struct Pose {
    rot: f32,
    scale: f32,
    sx: f32,
    sy: f32,
    yaw: f32,
}

impl Pose {
    /// First block of [`Nuisance::draw`]; the draws must keep this order to keep the images.
    fn draw(rng: &mut SplitMix64, d: f32) -> Pose {
        let rot = d * 0.28 * rng.normal().clamp(-1.6, 1.6);
        let scale = 1.0 + d * rng.sym(0.09);
        let sx = d * rng.sym(0.04);
        let sy = d * rng.sym(0.04);
        let yaw = d * rng.sym(0.7);
        Pose { rot, scale, sx, sy, yaw }
    }
}

/// Per-image expression; the smile varies around the identity's resting smile.
struct Expression {
    smile: f32,
    mouth_open: f32,
    eye_open: f32,
    gaze: f32,
    brow_raise: f32,
}

impl Expression {
    /// Second block of [`Nuisance::draw`]; `rest_smile` is the identity's, so no draw is hidden.
    fn draw(rng: &mut SplitMix64, d: f32, rest_smile: f32) -> Expression {
        let smile = (rest_smile + d * rng.range(-0.6, 1.2)).clamp(-0.8, 1.3);
        let mouth_open = if rng.chance(0.35 * d) { rng.range(0.2, 1.0) } else { 0.0 };
        let mut eye_open = 1.0 - d * rng.range(0.0, 0.45);
        if rng.chance(0.06 * d) {
            eye_open = 0.12;
        }
        let gaze = d * rng.sym(0.8);
        let brow_raise = d * rng.sym(0.018);
        Expression { smile, mouth_open, eye_open, gaze, brow_raise }
    }
}

/// Per-image lighting; only `face_light` shades the face, the rest goes to [`Post`].
struct Lighting {
    light_x: f32,
    light_y: f32,
    light_k: f32,
    face_light: f32,
    brightness: f32,
    contrast: f32,
    gain: [f32; 3],
}

impl Lighting {
    /// Third block of [`Nuisance::draw`]; the draws must keep this order to keep the images.
    fn draw(rng: &mut SplitMix64, d: f32) -> Lighting {
        let la = rng.range(0.0, TAU);
        let (light_x, light_y) = (pcos(la), psin(la));
        let light_k = d * rng.range(0.0, 0.55);
        let face_light = d * rng.range(0.0, 0.35);
        let brightness = d * rng.sym(0.14);
        let contrast = 1.0 + d * rng.sym(0.3);
        let gain = [1.0 + d * rng.sym(0.08), 1.0 + d * rng.sym(0.08), 1.0 + d * rng.sym(0.08)];
        Lighting { light_x, light_y, light_k, face_light, brightness, contrast, gain }
    }
}

impl Background {
    /// Both colours are drawn whatever the kind, so that the later draws do not shift with it.
    fn draw(rng: &mut SplitMix64, d: f32) -> Background {
        let neutral = [0.62, 0.62, 0.6];
        let bg_kind = rng.below(3);
        let c1 = lerp3(neutral, random_colour(rng), d);
        let c2 = lerp3(neutral, random_colour(rng), d);
        match bg_kind {
            0 => Background::Solid(c1),
            1 => {
                let ga = rng.range(0.0, TAU);
                Background::Gradient { a: c1, b: c2, dx: pcos(ga), dy: psin(ga) }
            }
            _ => {
                let mut grid = Box::new([[0.0; 3]; 25]);
                for cell in grid.iter_mut() {
                    let t = rng.f32();
                    let jitter = 1.0 + d * rng.sym(0.15);
                    *cell = scale3(lerp3(c1, c2, t), jitter);
                }
                Background::Texture {
                    grid,
                    fx: rng.range(20.0, 70.0),
                    fy: rng.range(20.0, 70.0),
                    stripe: d * rng.range(0.0, 0.12),
                }
            }
        }
    }
}

/// Blur is drawn for a 112-pixel image and scaled, so that every `side` looks alike.
fn draw_blur_passes(rng: &mut SplitMix64, side: u32, d: f32) -> u32 {
    let blur_sigma_112 = if rng.chance(0.5) { d * rng.range(0.0, 2.2) } else { 0.0 };
    let sigma_px = blur_sigma_112 * side as f32 / 112.0;
    // one [1 2 1]/4 pass has variance 0.5 px^2
    (sigma_px * sigma_px * 2.0 + 0.5).floor() as u32
}

impl Occluder {
    /// Last block of [`Nuisance::draw`]; a hand takes the identity's `skin` tone index.
    fn draw(rng: &mut SplitMix64, d: f32, skin: u8) -> Occluder {
        // screen coordinates
        if rng.chance(0.22 * d) {
            if rng.chance(0.5) {
                Occluder::Rect {
                    cx: rng.sym(0.3),
                    cy: rng.range(-0.2, 0.4),
                    hw: rng.range(0.08, 0.22),
                    hh: rng.range(0.05, 0.14),
                    col: random_colour(rng),
                }
            } else {
                let ang = rng.sym(0.9);
                let tone = SKIN_TONES[skin as usize % SKIN_TONES.len()];
                Occluder::Hand {
                    cx: rng.sym(0.3),
                    cy: rng.range(0.15, 0.5),
                    cos: pcos(ang),
                    sin: psin(ang),
                    col: scale3(tone, rng.range(0.85, 1.05)),
                }
            }
        } else {
            Occluder::None
        }
    }
}

/// All the randomness of one image, so that the draw order is written down in one place.
struct Nuisance {
    pose: Pose,
    expression: Expression,
    lighting: Lighting,
    background: Background,
    shirt: [f32; 3],
    blur_passes: u32,
    noise: f32,
    occluder: Occluder,
}

impl Nuisance {
    /// The order of these draws is part of the dataset: moving one changes every image.
    fn draw(id: &Identity, rng: &mut SplitMix64, side: u32, d: f32) -> Nuisance {
        let pose = Pose::draw(rng, d);
        let expression = Expression::draw(rng, d, id.gene(G_REST_SMILE, -0.2, 0.5));
        let lighting = Lighting::draw(rng, d);
        let background = Background::draw(rng, d);
        let shirt = lerp3([0.3, 0.32, 0.4], random_colour(rng), 0.8 * d);
        let blur_passes = draw_blur_passes(rng, side, d);
        let noise = d * rng.range(0.0, 0.06);
        let occluder = Occluder::draw(rng, d, id.attrs[A_SKIN]);
        Nuisance { pose, expression, lighting, background, shirt, blur_passes, noise, occluder }
    }
}

/// Face outline `(a, b, taper, square)`: the face-shape template, moved a little by the genes.
fn face_outline(id: &Identity) -> (f32, f32, f32, f32) {
    let (fa, fb, taper, square) = match id.attrs[A_FACE] {
        0 => (0.345, 0.50, 0.42, 0.0),
        1 => (0.385, 0.47, 0.25, 0.0),
        2 => (0.315, 0.54, 0.38, 0.15),
        _ => (0.365, 0.495, 0.12, 0.85),
    };
    let face_a = fa + id.gene(G_FACE_W, -0.018, 0.018);
    let face_b = fb + id.gene(G_FACE_H, -0.015, 0.015);
    let taper = (taper + id.gene(G_JAW, -0.1, 0.1)).max(0.0);
    (face_a, face_b, taper, square)
}

/// Identity colours that are derived from one another (brows from hair, lips from skin).
struct Colours {
    skin: [f32; 3],
    hair: [f32; 3],
    brow: [f32; 3],
    lip: [f32; 3],
}

/// The colours of `id`; blonde and grey hair get darker brows so that the brows still show.
fn identity_colours(id: &Identity) -> Colours {
    let a = &id.attrs;
    let gr = |i: usize, lo: f32, hi: f32| id.gene(i, lo, hi);
    let skin_base = SKIN_TONES[a[A_SKIN] as usize % SKIN_TONES.len()];
    let skin_l = gr(G_SKIN_L, 0.94, 1.06);
    let hue = gr(G_SKIN_HUE, -0.03, 0.03);
    let skin = [
        (skin_base[0] * skin_l + hue).min(1.0),
        skin_base[1] * skin_l,
        (skin_base[2] * skin_l - hue).max(0.0),
    ];
    let hair_base = HAIR_COLOURS[a[A_HAIR_COLOUR] as usize % HAIR_COLOURS.len()];
    let hair = scale3(hair_base, gr(G_HAIR_L, 0.8, 1.15));
    let brow = if a[A_HAIR_COLOUR] == 2 || a[A_HAIR_COLOUR] == 4 {
        lerp3(hair, [0.25, 0.2, 0.15], 0.45)
    } else {
        scale3(hair, 0.9)
    };
    let lip = lerp3(scale3(skin, 0.82), [0.72, 0.3, 0.3], gr(G_LIP_RED, 0.25, 0.6));
    Colours { skin, hair, brow, lip }
}

/// Draws one image's nuisance (all its randomness, in a fixed order) and joins it with `id`.
fn build_scene(id: &Identity, rng: &mut SplitMix64, side: u32, d: f32) -> (Scene, Post) {
    let nuisance = Nuisance::draw(id, rng, side, d);
    let light = &nuisance.lighting;
    let post = Post {
        light_k: light.light_k,
        light_x: light.light_x,
        light_y: light.light_y,
        brightness: light.brightness,
        contrast: light.contrast,
        gain: light.gain,
        blur_passes: nuisance.blur_passes,
        noise: nuisance.noise,
    };
    (Scene::new(id, side, nuisance), post)
}

impl Scene {
    /// Maps the genes to their ranges; no draw happens here, so the order of fields is free.
    fn new(id: &Identity, side: u32, nuisance: Nuisance) -> Scene {
        let g = &id.genes;
        let a = &id.attrs;
        let gr = |i: usize, lo: f32, hi: f32| id.gene(i, lo, hi);
        let (face_a, face_b, taper, square) = face_outline(id);
        let colours = identity_colours(id);
        let eye_h_full = gr(G_EYE_H, 0.018, 0.027);
        let Nuisance { pose, expression: ex, lighting, background, shirt, occluder, .. } = nuisance;
        Scene {
            fw: 1.0 / (side as f32 * pose.scale),
            cos_r: pcos(pose.rot),
            sin_r: psin(pose.rot),
            inv_scale: 1.0 / pose.scale,
            sx: pose.sx,
            sy: pose.sy,
            yaw: pose.yaw,
            yaw_squash: 1.0 + 0.2 * pose.yaw.abs(),
            background,
            shirt,
            face_cy: 0.035,
            face_a,
            face_b,
            taper,
            square,
            chin: gr(G_CHIN, 0.0, 0.4),
            skin: colours.skin,
            light_x: lighting.light_x,
            face_light: lighting.face_light,
            blush: gr(G_BLUSH, 0.0, 1.0),
            eye_dx: gr(G_EYE_DX, 0.145, 0.172),
            eye_y: gr(G_EYE_Y, -0.05, -0.03),
            eye_w: gr(G_EYE_W, 0.045, 0.06),
            eye_h: eye_h_full * ex.eye_open,
            eye_h_full,
            eye_tilt: gr(G_EYE_TILT, -0.12, 0.22),
            iris_r: eye_h_full * gr(G_IRIS_R, 0.9, 1.2),
            iris_col: palette_pick(&IRIS_COLOURS, g[G_IRIS_COL]),
            gaze: ex.gaze,
            brow_y: -0.04 - gr(G_BROW_GAP, 0.06, 0.085) - ex.brow_raise,
            brow_half: gr(G_BROW_LEN, 0.05, 0.07),
            brow_th: gr(G_BROW_TH, 0.011, 0.024),
            brow_slant: gr(G_BROW_SLANT, -0.015, 0.02),
            brow_arch: gr(G_BROW_ARCH, 0.0, 0.018),
            brow_col: colours.brow,
            nose_y: gr(G_NOSE_Y, 0.12, 0.16),
            nose_w: gr(G_NOSE_W, 0.03, 0.05),
            nose_bridge: gr(G_NOSE_BRIDGE, 0.4, 1.0),
            mouth_y: gr(G_MOUTH_Y, 0.31, 0.345),
            mouth_w: gr(G_MOUTH_W, 0.1, 0.145),
            lip_th: gr(G_LIP_TH, 0.011, 0.022),
            lip_col: colours.lip,
            smile: ex.smile,
            mouth_open: ex.mouth_open,
            ear_y: 0.06,
            ear_w: gr(G_EAR, 0.035, 0.05),
            ear_h: gr(G_EAR, 0.07, 0.095),
            hair_style: a[A_HAIR_STYLE],
            hair: colours.hair,
            hairline: gr(G_HAIRLINE, -0.36, -0.24),
            part: gr(G_PART, -0.25, 0.25),
            hair_vol: gr(G_HAIR_VOL, 0.01, 0.06),
            hair_len: gr(G_HAIR_LEN, 0.3, 0.6),
            beard: a[A_BEARD],
            glasses: a[A_GLASSES],
            lens_w: gr(G_LENS_SIZE, 0.062, 0.078),
            lens_h: gr(G_LENS_SIZE, 0.045, 0.058),
            lens_sq: gr(G_LENS_SHAPE, 0.0, 1.0),
            frame_col: palette_pick(&FRAME_COLOURS, g[G_FRAME_COL]),
            occluder,
        }
    }

    fn background(&self, u: f32, v: f32) -> [f32; 3] {
        match &self.background {
            Background::Solid(c) => *c,
            Background::Gradient { a, b, dx, dy } => lerp3(*a, *b, clamp01(0.5 + dx * u + dy * v)),
            Background::Texture { grid, fx, fy, stripe } => {
                // bilinear value noise on a 5x5 grid spanning the image
                let gx = (u + 0.5).clamp(0.0, 0.999) * 4.0;
                let gy = (v + 0.5).clamp(0.0, 0.999) * 4.0;
                let ix = gx.floor();
                let iy = gy.floor();
                let tx = gx - ix;
                let ty = gy - iy;
                let i = (iy as usize) * 5 + ix as usize;
                let c00 = grid[i % 25];
                let c10 = grid[(i + 1) % 25];
                let c01 = grid[(i + 5) % 25];
                let c11 = grid[(i + 6) % 25];
                let c = lerp3(lerp3(c00, c10, tx), lerp3(c01, c11, tx), ty);
                scale3(c, 1.0 + *stripe * psin(*fx * u + 0.5 * psin(*fy * v)))
            }
        }
    }

    /// Signed distance to the face outline and the normalised radius (1 on the outline).
    #[inline]
    fn face_sd(&self, x: f32, y: f32) -> (f32, f32) {
        let yy = y - self.face_cy;
        let t = (yy / self.face_b).max(0.0);
        let a = self.face_a * (1.0 - self.taper * t * t * (1.0 - 0.35 * self.chin * t));
        let nx = x / a;
        let ny = yy / self.face_b;
        let r2 = (nx * nx + ny * ny).sqrt();
        let r = if self.square > 0.0 {
            let nx2 = nx * nx;
            let ny2 = ny * ny;
            let r4 = (nx2 * nx2 + ny2 * ny2).sqrt().sqrt();
            lerp(r2, r4, self.square)
        } else {
            r2
        };
        ((r - 1.0) * a.min(self.face_b) * 0.85, r)
    }

    fn hair_shade(&self, x: f32, y: f32) -> [f32; 3] {
        let k = if self.hair_style == STYLE_CURLY {
            // one jittered ring (a curl) per cell of a slightly warped grid
            let sx = x * 75.0 + 0.6 * psin(y * 23.0);
            let sy = y * 75.0 + 0.6 * psin(x * 19.0);
            let (ix, iy) = (sx.floor(), sy.floor());
            let h = mix64((ix as i64 as u64).wrapping_mul(0x9E37_79B9) ^ (iy as i64 as u64));
            let ox = 0.35 + 0.3 * ((h & 0xFF) as f32 / 255.0);
            let oy = 0.35 + 0.3 * (((h >> 8) & 0xFF) as f32 / 255.0);
            let (dx, dy) = (sx - ix - ox, sy - iy - oy);
            let r = (dx * dx + dy * dy).sqrt();
            0.78 + 0.4 * clamp01(1.0 - (r - 0.28).abs() * 6.0)
        } else {
            1.0 + 0.06 * psin(x * 150.0 + 5.0 * psin(y * 8.0 + x * 3.0))
        };
        // darker towards the bottom and edges, a little sheen on top
        let sheen = 1.0 + 0.18 * clamp01(-(y + 0.35) * 4.0) * clamp01(1.0 - (x * 4.0).abs());
        let c = scale3(self.hair, k * sheen);
        [c[0] + 0.015, c[1] + 0.015, c[2] + 0.015]
    }

    /// Colour of the scene at screen position (u, v) in [-0.5, 0.5]^2.
    fn pixel(&self, u: f32, v: f32) -> [f32; 3] {
        let mut c = self.background(u, v);
        let fw = self.fw;

        // screen -> face coordinates
        let du = u - self.sx;
        let dv = v - self.sy;
        let x0 = (self.cos_r * du + self.sin_r * dv) * self.inv_scale;
        let y = (-self.sin_r * du + self.cos_r * dv) * self.inv_scale;
        let w = (1.0 - x0 * x0 * 6.0).max(0.0);
        let x = x0 * self.yaw_squash - self.yaw * 0.085 * w;
        let side = if x < 0.0 { -1.0 } else { 1.0 };
        let ax = x.abs();

        // shirt, long hair behind the head, neck
        let shirt_d = (0.4 + 0.5 * (0.45 - ax).max(0.0)) - y;
        mix(&mut c, self.shirt, cov(shirt_d, fw));
        // long hair behind the head
        if self.hair_style == STYLE_LONG {
            let hw = self.face_a * 1.12 + self.hair_vol;
            let d = (ax - hw - 0.03 * clamp01(y * 3.0)).max(y - self.hair_len).max(-0.1 - y);
            let k = cov(d, fw.max(0.01));
            if k > 0.0 {
                mix(&mut c, scale3(self.hair_shade(x, y), 0.8), k);
            }
        }

        let neck_d = (ax - self.face_a * 0.55).max(self.face_cy + 0.15 - y);
        let neck_shade = 0.72 + 0.1 * clamp01((y - 0.4) * 5.0);
        mix(&mut c, scale3(self.skin, neck_shade), cov(neck_d, fw));

        // ears
        let ear_x = self.face_a * 0.97;
        let ed = ellipse_sd(ax - ear_x, y - self.ear_y, self.ear_w, self.ear_h);
        let ek = cov(ed, fw);
        if ek > 0.0 && self.hair_style != STYLE_LONG {
            let inner =
                clamp01(1.0 - ellipse_sd(ax - ear_x - 0.008, y - self.ear_y, 0.02, 0.05) / 0.02);
            mix(&mut c, scale3(self.skin, 0.88 - 0.15 * inner), ek);
        }

        // scalp (visible when bald, otherwise under the hair) and face share one shading
        let tx = (x / self.face_a).clamp(-1.2, 1.2);
        let tx2 = tx * tx;
        let shade = (1.0 - 0.3 * tx2 * tx2) * (1.0 + self.face_light * self.light_x * tx);
        let scalp_d =
            ellipse_sd(x, y - self.face_cy + 0.02, self.face_a * 1.03, self.face_b * 1.02);
        let sk = cov(scalp_d, fw);
        if sk > 0.0 && y < self.face_cy {
            let shine = 1.0 + 0.1 * clamp01(0.5 - ellipse_sd(x + 0.06, y + 0.38, 0.1, 0.05) / 0.05);
            mix(&mut c, scale3(self.skin, shade * shine), sk);
        }

        // face
        let (fd, fr) = self.face_sd(x, y);
        let fc = cov(fd, fw);
        if fc > 0.0 {
            let chin = clamp01((fr - 0.8) * 5.0) * clamp01((y - self.face_cy) * 4.0);
            mix(&mut c, scale3(self.skin, shade * (1.0 - 0.15 * chin)), fc);
        }
        if fc > 0.0 {
            self.features(&mut c, x, y, side, ax, fc);
        }

        // full beard (may extend below the chin)
        if self.beard == 2 {
            let base = self.nose_y + 0.05 - 0.16 * sq(clamp01(ax / self.face_a));
            let (bd, _) = self.face_sd(x * 0.985, y - 0.012);
            let k =
                cov(bd, fw) * cov(base - y, 0.025 + fw) * (0.7 + 0.3 * clamp01((y - base) * 20.0));
            if k > 0.0 {
                // keep the lips visible
                let t = x / (self.mouth_w * 1.05);
                let lip_mask = if t.abs() < 1.0 {
                    let yc = self.mouth_y + self.smile * 0.02 * (0.4 - t * t);
                    let h = (self.lip_th * 1.3 + self.mouth_open * 0.02) * (1.0 - t * t).sqrt();
                    cov((y - yc - 0.002).abs() - h, fw)
                } else {
                    0.0
                };
                mix(&mut c, self.hair_shade(x, y), k * 0.95 * (1.0 - lip_mask));
            }
        }

        // hair on top of the head
        if self.hair_style != STYLE_BALD {
            self.hair(&mut c, x, y, fc);
        }

        if self.glasses > 0 {
            self.glasses(&mut c, x, y, side, ax);
        }
        self.occluder(&mut c, u, v);
        c
    }

    /// Features over the skin, in painting order: a later one covers an earlier one.
    fn features(&self, c: &mut [f32; 3], x: f32, y: f32, side: f32, ax: f32, fc: f32) {
        self.cheeks(c, x, y, ax, fc);
        self.eye_and_brow(c, x, y, side);
        self.nose(c, x, y, side, ax);
        self.mouth(c, x, y, ax);
    }

    /// Blush and stubble, weighted by the face coverage `fc` so they fade at the outline.
    fn cheeks(&self, c: &mut [f32; 3], x: f32, y: f32, ax: f32, fc: f32) {
        let fw = self.fw;
        // cheek blush
        let bd = ellipse_sd(ax - 0.2, y - 0.17, 0.075, 0.055);
        let bk = clamp01(0.5 - bd / 0.05) * self.blush * 0.22 * fc;
        mix(c, [0.85, 0.4, 0.4], bk);

        // stubble
        if self.beard == 1 {
            let base = self.nose_y + 0.06 - 0.12 * sq(clamp01(ax / self.face_a));
            let mouth_gap = ellipse_sd(x, y - self.mouth_y, self.mouth_w * 1.05, self.lip_th * 1.6);
            let k = cov(base - y, 0.03 + fw) * fc * clamp01(mouth_gap / 0.01 + 0.5);
            let speck = 0.8 + 0.2 * psin(x * 420.0 + psin(y * 170.0)) * psin(y * 390.0);
            let dark = scale3(lerp3(self.skin, self.hair, 0.5), 0.75 * speck);
            mix(c, dark, k * 0.3);
        }
    }

    /// Eye and brow share one bounding box, so that most face pixels skip both.
    fn eye_and_brow(&self, c: &mut [f32; 3], x: f32, y: f32, side: f32) {
        let ex = (x - side * self.eye_dx) * side; // positive towards the outer corner
        let ey = y - self.eye_y;
        if ex.abs() < 0.11 && ey > -0.14 && ey < 0.08 {
            self.eye(c, ex, ey, side);
            self.brow(c, x, y, side);
        }
    }

    /// One eye in coordinates mirrored per side (`ex` grows towards the outer corner), so both
    /// eyes share this code.
    fn eye(&self, c: &mut [f32; 3], ex: f32, ey: f32, side: f32) {
        let fw = self.fw;
        // socket shading
        let sd = ellipse_sd(ex + 0.004, ey + 0.01, self.eye_w * 1.4, self.eye_h_full * 2.3);
        mix(c, scale3(self.skin, 0.78), clamp01(0.5 - sd / 0.025) * 0.35);
        // crease
        let crease =
            ellipse_sd(ex, ey + self.eye_h_full * 0.35, self.eye_w * 1.02, self.eye_h_full * 1.45);
        if ey < 0.0 {
            mix(c, scale3(self.skin, 0.6), cov(crease.abs() - 0.002, fw) * 0.35);
        }
        let ly = ey + self.eye_tilt * ex;
        let d_eye = ellipse_sd(ex, ly, self.eye_w, self.eye_h.max(0.002));
        let ce = cov(d_eye, fw);
        if ce > 0.0 {
            self.eyeball(c, ex, ly, side, ce);
        }
        // lid line and lashes (thicker towards the outer corner)
        let lw = 0.0035 + 0.002 * clamp01(ex / self.eye_w + 0.5);
        if ly < self.eye_h * 0.4 {
            let k = cov(d_eye.abs() - lw, fw);
            mix(c, [0.12, 0.08, 0.07], k * 0.95);
        } else {
            let k = cov(d_eye.abs() - 0.0015, fw);
            mix(c, scale3(self.skin, 0.55), k * 0.5);
        }
    }

    /// White, iris, pupil and highlight, each masked by the eye opening `ce` so that a closing
    /// lid hides them.
    fn eyeball(&self, c: &mut [f32; 3], ex: f32, ly: f32, side: f32, ce: f32) {
        let fw = self.fw;
        mix(c, [0.93, 0.91, 0.88], ce);
        let ix = ex + self.gaze * self.eye_w * 0.3 * side;
        let di = (ix * ix + ly * ly).sqrt();
        let ci = cov(di - self.iris_r, fw) * ce;
        mix(c, self.iris_col, ci);
        let cp = cov(di - self.iris_r * 0.45, fw) * ce;
        mix(c, [0.03, 0.02, 0.02], cp);
        let hx = ix + self.iris_r * 0.35;
        let hy = ly + self.iris_r * 0.35;
        let ch = cov((hx * hx + hy * hy).sqrt() - self.iris_r * 0.2, fw) * ce;
        mix(c, [1.0, 1.0, 1.0], ch * 0.8);
    }

    /// One brow, thinning towards its outer end; drawn in the eye's box, which contains it.
    fn brow(&self, c: &mut [f32; 3], x: f32, y: f32, side: f32) {
        let fw = self.fw;
        let bx = (x - side * (self.eye_dx + 0.006)) * side;
        let t = (bx / self.brow_half).clamp(-1.0, 1.0);
        let by = y - self.brow_y + self.brow_arch * (1.0 - t * t) - self.brow_slant * t;
        let th = self.brow_th * (1.0 - 0.45 * clamp01(t + 0.2)) * 0.5;
        let d_brow = (by.abs() - th).max(bx.abs() - self.brow_half);
        let kb = cov(d_brow, fw.max(0.004));
        mix(c, self.brow_col, kb * 0.92);
    }

    /// Nose drawn as shading only (bridge shadow on the side away from the light, tip, nostrils),
    /// since a frontal face has no nose outline.
    fn nose(&self, c: &mut [f32; 3], x: f32, y: f32, side: f32, ax: f32) {
        let fw = self.fw;
        let ny = y - self.nose_y;
        if ax < 0.09 && ny > -0.2 && ny < 0.05 {
            let light_side = 1.0 - 0.4 * clamp01(self.light_x * side * self.face_light * 4.0);
            let bridge = capsule_sd(
                ax,
                y,
                0.034,
                self.eye_y + 0.02,
                self.nose_w * 0.95,
                self.nose_y - 0.03,
                0.008,
            );
            mix(
                c,
                scale3(self.skin, 0.7),
                clamp01(0.5 - bridge / 0.015) * 0.45 * self.nose_bridge * light_side,
            );
            let tip = ellipse_sd(x, ny + 0.022, 0.028, 0.022);
            mix(c, scale3(self.skin, 1.12), clamp01(0.5 - tip / 0.02) * 0.25);
            let under = ellipse_sd(x, ny + 0.004, self.nose_w * 1.05, 0.012);
            mix(c, scale3(self.skin, 0.72), clamp01(0.5 - under / 0.012) * 0.45);
            let ala = ellipse_sd(ax - self.nose_w, ny + 0.008, 0.02, 0.02);
            if ax > self.nose_w * 0.8 {
                mix(c, scale3(self.skin, 0.6), cov(ala.abs() - 0.003, fw) * 0.6);
            }
            let nostril = ellipse_sd(ax - self.nose_w * 0.55, ny + 0.001, 0.014, 0.0075);
            mix(c, scale3(self.skin, 0.3), cov(nostril, fw) * 0.85);
        }
    }

    /// Lips, and the mouth's inside and teeth only when the expression opens it.
    fn mouth(&self, c: &mut [f32; 3], x: f32, y: f32, ax: f32) {
        let fw = self.fw;
        let t = x / self.mouth_w;
        if t.abs() < 1.2 && (y - self.mouth_y).abs() < 0.09 {
            let tt = clamp01(1.0 - t * t);
            let yc = self.mouth_y + self.smile * 0.02 * (0.4 - t * t);
            let env = tt.sqrt();
            let dy = y - yc;
            let gap = self.mouth_open * self.lip_th * 1.4 * env;
            let tu = self.lip_th * 0.8 * env + 0.0015;
            let tl = self.lip_th * env + 0.0015;
            let cm = 0.5 * (tl - tu);
            let hm = 0.5 * gap + 0.5 * (tu + tl);
            let d_lips = ((dy - cm).abs() - hm).max(ax - self.mouth_w);
            let kl = cov(d_lips, fw);
            if kl > 0.0 {
                let lower = if dy > 0.0 { 1.08 } else { 0.92 };
                mix(c, scale3(self.lip_col, lower), kl);
            }
            if gap > 0.0005 {
                let d_in = (dy.abs() - gap * 0.5).max(ax - self.mouth_w * 0.92);
                let ki = cov(d_in, fw);
                mix(c, [0.25, 0.07, 0.07], ki);
                let d_teeth = (dy + gap * 0.25).abs() - gap * 0.25;
                mix(c, [0.9, 0.88, 0.82], cov(d_teeth.max(ax - self.mouth_w * 0.7), fw) * ki);
            }
            let seam = dy.abs() - 0.0018 - gap * 0.5;
            mix(c, scale3(self.lip_col, 0.45), cov(seam.max(ax - self.mouth_w * 1.02), fw) * 0.9);
        }
    }

    fn hair(&self, c: &mut [f32; 3], x: f32, y: f32, fc: f32) {
        let fw = self.fw;
        let ha = self.face_a * 1.1 + self.hair_vol;
        let hb = self.face_b * 1.03 + self.hair_vol;
        let mut hd = ellipse_sd(x, y - self.face_cy + 0.03, ha, hb);
        let curly = self.hair_style == STYLE_CURLY;
        if curly {
            hd += 0.016 * psin(x * 52.0 + 0.3) * psin(y * 52.0 + 1.1);
        }
        let skull = cov(hd, fw);
        if skull <= 0.0 && self.hair_style != STYLE_LONG {
            return;
        }
        let t = x / self.face_a;
        let t2 = t * t;
        let hairline = self.hairline + self.part * x + 0.5 * t2 * t2;
        let front = cov(y - hairline, 0.012 + fw);
        let bottom_y = match self.hair_style {
            STYLE_CURLY => self.ear_y - 0.03,
            STYLE_LONG => self.face_cy + 0.25,
            STYLE_SHORT => self.ear_y - 0.07,
            _ => self.ear_y - 0.07,
        };
        let bottom = cov(y - bottom_y, 0.02 + fw);
        let k = skull * (1.0 - fc).max(front) * bottom;
        if k > 0.0 {
            mix(c, self.hair_shade(x, y), k);
        }
    }

    fn glasses(&self, c: &mut [f32; 3], x: f32, y: f32, side: f32, ax: f32) {
        let fw = self.fw;
        let gx = (x - side * self.eye_dx) * side;
        let gy = y - self.eye_y - 0.006;
        let nx = gx / self.lens_w;
        let ny = gy / self.lens_h;
        let r2 = (nx * nx + ny * ny).sqrt();
        let nx2 = nx * nx;
        let ny2 = ny * ny;
        let r4 = (nx2 * nx2 + ny2 * ny2).sqrt().sqrt();
        let r = lerp(r2, r4, self.lens_sq);
        let d = (r - 1.0) * self.lens_h;
        let lens = cov(d, fw);
        if lens > 0.0 {
            if self.glasses == 2 {
                let refl = 0.08 * clamp01(1.0 - (gx + gy * 0.8 + 0.02).abs() / 0.02);
                mix(c, [0.05 + refl, 0.05 + refl, 0.07 + refl], lens * 0.9);
            } else {
                mix(c, [0.85, 0.92, 1.0], lens * 0.08);
            }
        }
        let ft = 0.0045;
        let frame = cov(d.abs() - ft, fw);
        mix(c, self.frame_col, frame);
        // bridge and temple arms
        let inner = self.eye_dx - self.lens_w * 0.97;
        let bridge =
            capsule_sd(ax, y, 0.0, self.eye_y - 0.008, inner, self.eye_y - 0.006, ft * 0.8);
        mix(c, self.frame_col, cov(bridge, fw));
        let outer = self.eye_dx + self.lens_w * 0.98;
        let arm =
            capsule_sd(ax, y, outer, self.eye_y, self.face_a + 0.02, self.eye_y + 0.01, ft * 0.7);
        mix(c, self.frame_col, cov(arm, fw));
    }

    fn occluder(&self, c: &mut [f32; 3], u: f32, v: f32) {
        let fw = self.fw;
        match self.occluder {
            Occluder::None => {}
            Occluder::Rect { cx, cy, hw, hh, col } => {
                let d = ((u - cx).abs() - hw).max((v - cy).abs() - hh);
                let k = cov(d, fw);
                let shade = 1.0 + 0.08 * psin((u - cx) * 40.0);
                mix(c, scale3(col, shade), k);
            }
            Occluder::Hand { cx, cy, cos, sin, col } => {
                let dx = u - cx;
                let dy = v - cy;
                let lx = cos * dx + sin * dy;
                let ly = -sin * dx + cos * dy;
                let mut d = ellipse_sd(lx, ly, 0.1, 0.12);
                let lens = [0.13, 0.15, 0.145, 0.12];
                for (k, len) in lens.iter().enumerate() {
                    let fx = -0.072 + 0.048 * k as f32;
                    d = d.min(capsule_sd(lx, ly, fx, -0.06, fx * 1.15, -0.06 - len, 0.021));
                }
                d = d.min(capsule_sd(lx, ly, 0.07, 0.02, 0.16, -0.05, 0.024));
                let k = cov(d, fw);
                if k > 0.0 {
                    let shade = 0.85 + 0.15 * clamp01(0.5 - d / 0.03);
                    mix(c, scale3(col, shade), k);
                    // finger gaps
                    mix(c, scale3(col, 0.6), cov(d.abs() - 0.0015, fw) * 0.6 * k);
                }
            }
        }
    }
}

/// Renders one image of `id` using the per-image stream `rng`.
fn render(id: &Identity, rng: &mut SplitMix64, side: u32, difficulty: f32) -> RgbImage {
    let (scene, post) = build_scene(id, rng, side, difficulty);
    let n = side as usize;
    let mut buf: Vec<[f32; 3]> = Vec::with_capacity(n * n);
    let inv = 1.0 / side as f32;
    for py in 0..n {
        let v = (py as f32 + 0.5) * inv - 0.5;
        for px in 0..n {
            let u = (px as f32 + 0.5) * inv - 0.5;
            let mut c = scene.pixel(u, v);
            // global lighting gradient, brightness / contrast / colour cast
            let l = 1.0 + post.light_k * (post.light_x * u + post.light_y * v) * 1.6;
            for (ck, gain) in c.iter_mut().zip(post.gain) {
                *ck = ((*ck * l - 0.5) * post.contrast + 0.5 + post.brightness) * gain;
            }
            buf.push(c);
        }
    }
    for _ in 0..post.blur_passes.min(64) {
        blur_pass(&mut buf, n);
    }
    let mut img = RgbImage::new(side, side);
    for (p, c) in img.pixels_mut().zip(buf.iter()) {
        let mut out = [0u8; 3];
        if post.noise > 0.0 {
            let r = rng.next_u64();
            let lum = tri(r) * post.noise;
            for (k, o) in out.iter_mut().enumerate() {
                let chroma = tri(r >> (16 * (k + 1))) * post.noise * 0.35;
                *o = quantize(c[k] + lum + chroma);
            }
        } else {
            for (k, o) in out.iter_mut().enumerate() {
                *o = quantize(c[k]);
            }
        }
        *p = Rgb(out);
    }
    img
}

/// Triangular noise in [-1, 1] from the low 16 bits of `r` (two 8-bit uniforms).
#[inline]
fn tri(r: u64) -> f32 {
    let a = (r & 0xFF) as f32;
    let b = ((r >> 8) & 0xFF) as f32;
    (a + b) * (1.0 / 255.0) - 1.0
}

#[inline]
fn quantize(x: f32) -> u8 {
    (x * 255.0 + 0.5).clamp(0.0, 255.0) as u8
}

/// One separable [1 2 1] / 4 blur pass with clamped edges.
fn blur_pass(buf: &mut [[f32; 3]], n: usize) {
    if n < 2 {
        return;
    }
    let mut tmp = vec![[0.0f32; 3]; n];
    for row in buf.chunks_mut(n) {
        for x in 0..n {
            let a = row[x.saturating_sub(1)];
            let b = row[x];
            let c = row[(x + 1).min(n - 1)];
            tmp[x] = [
                0.25 * (a[0] + c[0]) + 0.5 * b[0],
                0.25 * (a[1] + c[1]) + 0.5 * b[1],
                0.25 * (a[2] + c[2]) + 0.5 * b[2],
            ];
        }
        row.copy_from_slice(&tmp);
    }
    for x in 0..n {
        for y in 0..n {
            let a = buf[y.saturating_sub(1) * n + x];
            let b = buf[y * n + x];
            let c = buf[(y + 1).min(n - 1) * n + x];
            tmp[y] = [
                0.25 * (a[0] + c[0]) + 0.5 * b[0],
                0.25 * (a[1] + c[1]) + 0.5 * b[1],
                0.25 * (a[2] + c[2]) + 0.5 * b[2],
            ];
        }
        for y in 0..n {
            buf[y * n + x] = tmp[y];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Public dataset.

/// A synthetic face dataset: `identities x images_per_identity` images generated on demand.
///
/// Items are ordered identity-major: flat index `i` is image `i % images_per_identity` of
/// identity `i / images_per_identity`, whose label is the identity.
#[derive(Debug, Clone)]
pub struct SynthFaces {
    config: SynthConfig,
    identities: Vec<Identity>,
}

impl SynthFaces {
    /// Validates `config` and precomputes the identities.
    pub fn new(config: SynthConfig) -> Result<Self> {
        config.validate()?;
        let identities = (0..config.identities)
            .map(|i| make_identity(config.seed, i, config.lookalike_fraction))
            .collect();
        Ok(SynthFaces { config, identities })
    }

    /// The configuration this dataset was built from.
    pub fn config(&self) -> &SynthConfig {
        &self.config
    }

    /// Total number of images (`identities * images_per_identity`).
    pub fn len(&self) -> usize {
        self.config.identities * self.config.images_per_identity
    }

    /// Whether the dataset has no image (never true for a validated config).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of identities (classes).
    pub fn num_identities(&self) -> usize {
        self.config.identities
    }

    /// Images per identity.
    pub fn images_per_identity(&self) -> usize {
        self.config.images_per_identity
    }

    fn identity(&self, identity: usize) -> std::borrow::Cow<'_, Identity> {
        match self.identities.get(identity) {
            Some(id) => std::borrow::Cow::Borrowed(id),
            None => std::borrow::Cow::Owned(make_identity(
                self.config.seed,
                identity,
                self.config.lookalike_fraction,
            )),
        }
    }

    /// Renders image `index` of `identity` at the configured side.
    ///
    /// Any `identity` and `index` are accepted (also past the configured counts): the result
    /// is a pure function of `(seed, lookalike_fraction, identity, index, side, difficulty)`.
    pub fn image(&self, identity: usize, index: usize) -> RgbImage {
        let id = self.identity(identity);
        let mut rng =
            SplitMix64::new(hash3(self.config.seed, identity as u64, TAG_IMAGE ^ index as u64));
        render(&id, &mut rng, self.config.side, self.config.difficulty)
    }

    /// `(identity, index)` of flat item `flat`, or `None` past the end.
    pub fn locate(&self, flat: usize) -> Option<(usize, usize)> {
        if flat >= self.len() {
            return None;
        }
        let per = self.config.images_per_identity;
        Some((flat / per, flat % per))
    }

    /// Label (identity) of flat item `flat`, or `None` past the end.
    pub fn label(&self, flat: usize) -> Option<usize> {
        self.locate(flat).map(|(id, _)| id)
    }

    /// Image and label of flat item `flat`, or `None` past the end.
    pub fn get(&self, flat: usize) -> Option<(RgbImage, usize)> {
        self.locate(flat).map(|(id, idx)| (self.image(id, idx), id))
    }

    /// Hidden discrete attributes of `identity`, in [`ATTRIBUTE_NAMES`] order.
    pub fn attributes(&self, identity: usize) -> [u8; NUM_ATTRIBUTES] {
        self.identity(identity).attrs
    }

    /// The identity that `identity` is a look-alike of, if it is one.
    pub fn lookalike_of(&self, identity: usize) -> Option<usize> {
        self.identity(identity).parent
    }

    /// Writes `out/<identity:05>/<index:03>.png` for every image plus `out/attributes.csv`
    /// (header `identity,` then one column per attribute name).
    ///
    /// The folder is written as a hidden sibling of `out` and moved in place once complete
    /// ([`Staged`]), so a run stopped part-way leaves `out` as it was. An `out` that holds
    /// anything is refused, naming it, unless `overwrite`: the old identities would otherwise
    /// sit beside the new ones. With `overwrite` the old folder is removed once the new one is
    /// in place.
    pub fn write_folder(&self, out: &Path, overwrite: bool) -> Result<()> {
        self.write_folder_with_progress(out, overwrite, &NoProgress)
    }

    /// [`Self::write_folder`], each image written advancing `progress`.
    pub fn write_folder_with_progress(
        &self,
        out: &Path,
        overwrite: bool,
        progress: &dyn Progress,
    ) -> Result<()> {
        let staged = Staged::folder(out, overwrite)?;
        progress.start("writing synthetic faces", self.len() as u64);
        self.write_images(staged.path(0), progress)?;
        staged.commit().map_err(DataError::from)
    }

    /// The images and `attributes.csv` of [`Self::write_folder`], into the existing folder
    /// `out`.
    fn write_images(&self, out: &Path, progress: &dyn Progress) -> Result<()> {
        let csv_path = out.join("attributes.csv");
        let mut csv = String::from("identity");
        for name in ATTRIBUTE_NAMES {
            csv.push(',');
            csv.push_str(name);
        }
        csv.push('\n');
        for identity in 0..self.config.identities {
            let dir = out.join(format!("{identity:05}"));
            fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
            for index in 0..self.config.images_per_identity {
                let path = dir.join(format!("{index:03}.png"));
                self.image(identity, index)
                    .save_with_format(&path, image::ImageFormat::Png)
                    .map_err(|source| DataError::Image {
                        path: path.clone(),
                        record: None,
                        source,
                    })?;
                progress.advance(1);
            }
            csv.push_str(&identity.to_string());
            for v in self.attributes(identity) {
                csv.push(',');
                csv.push_str(&v.to_string());
            }
            csv.push('\n');
        }
        fs::write(&csv_path, csv).map_err(|e| DataError::io(&csv_path, e))
    }

    /// A grid of `images` images (columns) for each of the first `identities` identities
    /// (rows), separated by 2-pixel white lines; for READMEs and quick visual checks. Both
    /// counts are clamped to `1..=256`.
    pub fn contact_sheet(&self, identities: usize, images: usize) -> RgbImage {
        let side = self.config.side;
        let gap = 2u32;
        let cols = images.clamp(1, 256) as u32;
        let rows = identities.clamp(1, 256) as u32;
        let w = cols * side + (cols + 1) * gap;
        let h = rows * side + (rows + 1) * gap;
        let mut sheet = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
        for r in 0..rows {
            for c in 0..cols {
                let img = self.image(r as usize, c as usize);
                let ox = gap + c * (side + gap);
                let oy = gap + r * (side + gap);
                image::imageops::replace(&mut sheet, &img, i64::from(ox), i64::from(oy));
            }
        }
        sheet
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::test_util::names;

    use crate::data::rng::fnv1a;

    fn faces(seed: u64, side: u32, difficulty: f32) -> SynthFaces {
        SynthFaces::new(SynthConfig {
            seed,
            identities: 50,
            images_per_identity: 10,
            side,
            difficulty,
            lookalike_fraction: 0.2,
        })
        .unwrap()
    }

    #[test]
    fn poly_trig_is_accurate() {
        let mut x = -20.0f32;
        while x < 20.0 {
            assert!((psin(x) - x.sin()).abs() < 2e-5, "sin({x})");
            assert!((pcos(x) - x.cos()).abs() < 2e-5, "cos({x})");
            x += 0.0137;
        }
    }

    #[test]
    fn same_input_gives_same_pixels() {
        let a = faces(7, 48, 0.5);
        let b = faces(7, 48, 0.5);
        for (id, idx) in [(0, 0), (3, 5), (49, 9), (1000, 2)] {
            assert!(a.image(id, idx) == b.image(id, idx), "({id}, {idx}) differs");
        }
        assert!(a.image(1, 0) != a.image(1, 1));
        assert!(a.image(1, 0) != a.image(2, 0));
        assert!(a.image(1, 0) != faces(8, 48, 0.5).image(1, 0));
    }

    #[test]
    fn determinism_constants() {
        // Recorded hashes: any change here means the dataset changed for every user.
        // (seed, side, difficulty, identity, index, FNV-1a 64 of the RGB bytes); the fifth
        // case is a curly-haired identity with glasses.
        let cases: [(u64, u32, f32, usize, usize, u64); 5] = [
            (0, 32, 0.5, 0, 0, 0x8632_4494_5a56_851a),
            (0, 112, 0.5, 3, 1, 0xe144_4486_8870_7252),
            (12345, 48, 1.0, 17, 4, 0xa27c_4ffb_ae09_77f8),
            (99, 112, 0.0, 5, 0, 0x3811_2104_40c4_7649),
            (3, 64, 0.5, 1, 2, 0x27d8_149d_b0bd_1bb3),
        ];
        let mut got = Vec::new();
        for (seed, side, diff, id, idx, _) in cases {
            let img = faces(seed, side, diff).image(id, idx);
            assert_eq!(img.dimensions(), (side, side));
            got.push(fnv1a(img.as_raw()));
        }
        println!("determinism hashes: {got:#018x?}");
        for (case, h) in cases.iter().zip(&got) {
            assert_eq!(*h, case.5, "hash changed for case {case:?}: {h:#018x}");
        }
    }

    #[test]
    fn difficulty_zero_gives_identical_images_per_identity() {
        let f = faces(3, 32, 0.0);
        assert!(f.image(4, 0) == f.image(4, 7));
        assert!(f.image(4, 0) != f.image(5, 0));
    }

    #[test]
    fn attribute_distribution_matches_weights() {
        let n = 4000;
        let f = SynthFaces::new(SynthConfig {
            seed: 11,
            identities: n,
            images_per_identity: 1,
            lookalike_fraction: 0.0,
            ..SynthConfig::default()
        })
        .unwrap();
        let mut counts: Vec<Vec<usize>> =
            ATTRIBUTE_VALUES.iter().map(|v| vec![0; v.len()]).collect();
        for i in 0..n {
            for (a, v) in f.attributes(i).iter().enumerate() {
                counts[a][*v as usize] += 1;
            }
        }
        for (a, cs) in counts.iter().enumerate() {
            let p = attribute_probabilities(a);
            for (v, c) in cs.iter().enumerate() {
                let freq = *c as f32 / n as f32;
                assert!(
                    (freq - p[v]).abs() < 0.03,
                    "{}={} freq {freq} expected {}",
                    ATTRIBUTE_NAMES[a],
                    ATTRIBUTE_VALUES[a][v],
                    p[v]
                );
            }
        }
        // the joint attribute tuple forms many groups, but not one per identity
        let mut groups: Vec<[u8; NUM_ATTRIBUTES]> = (0..n).map(|i| f.attributes(i)).collect();
        groups.sort();
        groups.dedup();
        assert!(groups.len() > 500 && groups.len() < n, "{} groups", groups.len());
    }

    #[test]
    fn lookalikes_share_attributes_and_fraction() {
        let n = 2000;
        let f = SynthFaces::new(SynthConfig {
            seed: 5,
            identities: n,
            images_per_identity: 1,
            lookalike_fraction: 0.3,
            ..SynthConfig::default()
        })
        .unwrap();
        let mut count = 0;
        let mut shared = 0;
        for i in 0..n {
            if let Some(p) = f.lookalike_of(i) {
                assert!(p < i);
                assert!(f.lookalike_of(p).is_none(), "parents are never look-alikes");
                count += 1;
                let (a, b) = (f.attributes(i), f.attributes(p));
                shared += a.iter().zip(&b).filter(|(x, y)| x == y).count();
                assert_eq!(a[A_FACE], b[A_FACE]);
                assert_eq!(a[A_SKIN], b[A_SKIN]);
            }
        }
        let frac = count as f32 / n as f32;
        assert!((frac - 0.3).abs() < 0.04, "look-alike fraction {frac}");
        assert!(shared as f32 / (count * NUM_ATTRIBUTES) as f32 > 0.9);
    }

    #[test]
    fn lookalikes_are_closer_than_strangers() {
        // Mean absolute pixel difference at difficulty 0: look-alike pairs must be much closer
        // than random pairs, but not identical.
        let f = SynthFaces::new(SynthConfig {
            seed: 21,
            identities: 300,
            images_per_identity: 1,
            side: 32,
            difficulty: 0.0,
            lookalike_fraction: 0.3,
        })
        .unwrap();
        let diff = |a: usize, b: usize| -> f32 {
            let (x, y) = (f.image(a, 0), f.image(b, 0));
            let s: u64 =
                x.as_raw().iter().zip(y.as_raw()).map(|(p, q)| u64::from(p.abs_diff(*q))).sum();
            s as f32 / x.as_raw().len() as f32
        };
        let mut la = Vec::new();
        let mut rnd = Vec::new();
        for i in 0..300 {
            if let Some(p) = f.lookalike_of(i) {
                la.push(diff(i, p));
                rnd.push(diff(i, (i * 7 + 13) % 300));
            }
        }
        la.sort_by(f32::total_cmp);
        rnd.sort_by(f32::total_cmp);
        let (ml, mr) = (la[la.len() / 2], rnd[rnd.len() / 2]);
        println!("median pixel diff: look-alike {ml}, random {mr}");
        assert!(ml > 0.0 && ml < 0.6 * mr);
    }

    #[test]
    fn flat_index_is_identity_major() {
        let f = faces(1, 16, 0.5);
        assert_eq!(f.len(), 500);
        assert_eq!(f.locate(23), Some((2, 3)));
        assert_eq!(f.label(499), Some(49));
        assert_eq!(f.label(500), None);
        let (img, label) = f.get(23).unwrap();
        assert_eq!(label, 2);
        assert_eq!(img.as_raw(), f.image(2, 3).as_raw());
    }

    #[test]
    fn invalid_config_names_field() {
        let bad = [
            (SynthConfig { identities: 0, ..SynthConfig::default() }, "identities"),
            (
                SynthConfig { images_per_identity: 0, ..SynthConfig::default() },
                "images_per_identity",
            ),
            (SynthConfig { side: 4, ..SynthConfig::default() }, "side"),
            (SynthConfig { difficulty: 1.5, ..SynthConfig::default() }, "difficulty"),
            (SynthConfig { difficulty: f32::NAN, ..SynthConfig::default() }, "difficulty"),
            (
                SynthConfig { lookalike_fraction: -0.1, ..SynthConfig::default() },
                "lookalike_fraction",
            ),
        ];
        for (cfg, field) in bad {
            match SynthFaces::new(cfg) {
                Err(DataError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected InvalidConfig({field}), got {other:?}"),
            }
        }
    }

    #[test]
    fn write_folder_layout_and_csv() {
        let dir = std::env::temp_dir().join(format!("groupface-synth-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let f = SynthFaces::new(SynthConfig {
            identities: 3,
            images_per_identity: 2,
            side: 24,
            ..SynthConfig::default()
        })
        .unwrap();
        f.write_folder(&dir, false).unwrap();
        let img = image::open(dir.join("00002").join("001.png")).unwrap().to_rgb8();
        assert_eq!(img.as_raw(), f.image(2, 1).as_raw());
        let csv = fs::read_to_string(dir.join("attributes.csv")).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "identity,face_shape,skin_tone,hair_colour,hair_style,beard,glasses");
        assert_eq!(lines.len(), 4);
        let row: Vec<u8> = lines[2].split(',').map(|s| s.parse().unwrap()).collect();
        assert_eq!(row[0], 1);
        assert_eq!(&row[1..], &f.attributes(1));
        fs::remove_dir_all(&dir).unwrap();
    }

    fn small(identities: usize) -> SynthFaces {
        let config =
            SynthConfig { identities, images_per_identity: 1, side: 16, ..Default::default() };
        SynthFaces::new(config).unwrap()
    }

    #[test]
    fn a_used_folder_is_refused_and_overwrite_replaces_it_whole() {
        // Before, a second synth of 2 identities into a folder of 3 left 00002 beside the new
        // ones, and the folder read as 3 identities.
        let dir = std::env::temp_dir().join(format!("groupface-synth-used-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let out = dir.join("faces");
        small(3).write_folder(&out, false).unwrap();
        let err = small(2).write_folder(&out, false).unwrap_err().to_string();
        assert!(err.contains(&out.display().to_string()), "{err}");
        assert!(err.contains("00000, 00001, 00002 and 1 more") && err.contains("overwrite=true"));
        assert_eq!(names(&out), ["00000", "00001", "00002", "attributes.csv"], "left as it was");

        small(2).write_folder(&out, true).unwrap();
        assert_eq!(names(&out), ["00000", "00001", "attributes.csv"]);
        let csv = fs::read_to_string(out.join("attributes.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + 2);
        assert_eq!(names(&dir), ["faces"], "no temporary or old folder is left");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_interrupted_synth_leaves_the_output_as_it_was() {
        let dir = std::env::temp_dir().join(format!("groupface-synth-stop-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let out = dir.join("faces");
        small(2).write_folder(&out, false).unwrap();
        // What a synth killed part-way leaves: a hidden partial sibling, half written.
        let partial = dir.join(".faces.partial-4242-0");
        fs::create_dir_all(partial.join("00000")).unwrap();
        fs::write(partial.join("00000").join("000.png"), b"half a png").unwrap();
        assert_eq!(names(&out), ["00000", "00001", "attributes.csv"]);
        let folder = crate::data::folder::ImageFolder::open(&out).unwrap();
        assert_eq!((folder.num_classes(), folder.len()), (2, 2));
        // A later synth into a new folder beside it is not disturbed either.
        small(1).write_folder(&dir.join("more"), false).unwrap();
        assert_eq!(names(&dir.join("more")), ["00000", "attributes.csv"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn contact_sheet_size() {
        let f = faces(0, 16, 0.5);
        let s = f.contact_sheet(3, 4);
        assert_eq!(s.dimensions(), (4 * 16 + 5 * 2, 3 * 16 + 4 * 2));
    }
}
