//! Training learns: a short run on tiny synthetic data lowers its training loss by a stated
//! factor and verifies held-out identities well above chance. Every other test would pass with
//! a reversed or zeroed update (issue #24); this one fails, and its companion run with the
//! update zeroed shows that the loss bound tells the two apart.

use crate::common;

use std::path::Path;

use common::{backend, quiet_run, temp_dir, tiny_config};
use groupface::evaluate::held_out::SynthEvalConfig;
use groupface::train::config::TrainConfig;
use groupface::train::run::train;

/// The last epoch's mean training loss must be below this fraction of the first epoch's.
const LOSS_FACTOR: f64 = 0.5;
/// The held-out verification accuracy the trained run must exceed. Chance is 0.5: each of the
/// 10 folds holds as many positive pairs as negative ones. This guards the evaluation of a
/// trained model (weights that are not finite, or embeddings that collapsed to one point, give
/// 0.5), not learning itself: random convolutional features already separate synthetic
/// identities (the untrained network scores 0.89 here, and an untrained r100 reaches an AUC of
/// 0.965 on them: `assets/book_pth.txt`), and 16 training identities do not improve on that for
/// identities never seen. The loss factor is what tells a network that learned.
const VERIFICATION_FLOOR: f64 = 0.75;

// FIGURES, measured with `cargo test --release --test integration learning:: -- --nocapture` on flex, 2 cores
// (20 s for both runs): trained: first-epoch loss 52.56, last 17.89, ratio 0.340,
// verification 0.860; zeroed (lr 1e-12): first 46.01, last 44.69, ratio 0.971, verification
// 0.8875. LOSS_FACTOR sits between the two ratios.

/// 16 identities × 6 images (4 train, 2 validation): 64 training images, 4 steps of 16 an
/// epoch, 15 epochs = 60 steps at tiny_config's rate (0.1, half an epoch of warm-up, linear
/// decay). 16 held-out identities × 4 images, 400 verification pairs (40 a fold), so one
/// pair moves the accuracy by 0.0025, not by 0.05 as with `small_eval`'s 20 pairs.
fn learning_config() -> TrainConfig {
    let eval = SynthEvalConfig::new()
        .with_identities(16)
        .with_images_per_identity(4)
        .with_pairs(400)
        .with_distractors(20);
    let mut config = tiny_config(4).with_epochs(15).with_eval(eval);
    config.data.identities = 16;
    config.data.images_per_identity = 6;
    config.criterion.margin.classes = 16;
    config
}

/// The `loss` column of the train rows of a run's `metrics.csv`, in epoch order.
fn train_losses(run: &Path) -> Vec<f64> {
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let column = header.iter().position(|c| *c == "loss").expect("a loss column");
    let mut losses = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        if fields[1] == "train" {
            let epoch: usize = fields[0].parse().unwrap();
            assert_eq!(epoch, losses.len() + 1, "train rows out of order: {csv}");
            losses.push(fields[column].parse::<f64>().expect("a loss every epoch"));
        }
    }
    losses
}

/// What a run learned: its training loss by epoch and its held-out verification accuracy.
struct Learned {
    losses: Vec<f64>,
    verification: f64,
}

impl Learned {
    /// The last epoch's loss over the first's.
    fn ratio(&self) -> f64 {
        self.losses[self.losses.len() - 1] / self.losses[0]
    }
}

fn run(config: TrainConfig, out: &Path) -> Learned {
    let epochs = config.epochs;
    let outcome = train(backend(), 0, quiet_run(config, out.to_path_buf())).expect("training");
    let losses = train_losses(out);
    assert_eq!(losses.len(), epochs);
    assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0), "{losses:?}");
    Learned { losses, verification: outcome.report.plain.verification.accuracy }
}

#[test]
fn training_lowers_the_loss_and_verifies_held_out_identities() {
    let dir = temp_dir("learning");
    let trained = run(learning_config(), &dir.join("trained"));
    // The same run, seed and data with a rate too small to move a weight (lr must be > 0):
    // what a zeroed update gives. Its BatchNorm running statistics still follow the data, so
    // its held-out accuracy is that of the initial network, fairly evaluated.
    let zeroed = run(learning_config().with_lr(1e-12), &dir.join("zeroed"));
    for (name, learned) in [("trained", &trained), ("zeroed", &zeroed)] {
        eprintln!(
            "{name}: first-epoch loss {:.4}, last {:.4}, ratio {:.4}, verification {:.4}",
            learned.losses[0],
            learned.losses[learned.losses.len() - 1],
            learned.ratio(),
            learned.verification
        );
    }
    assert!(
        trained.ratio() < LOSS_FACTOR,
        "the training loss fell only to {:.3} of its first epoch's: {:?}",
        trained.ratio(),
        trained.losses
    );
    assert!(
        trained.verification > VERIFICATION_FLOOR,
        "held-out verification {} is not above {VERIFICATION_FLOOR}",
        trained.verification
    );
    // The bounds discriminate: with the weights held, each epoch's loss differs from the first
    // only through BatchNorm's batch statistics and the shuffled batches and flips, so the
    // ratio stays near 1, far above the factor (and a reversed update would raise the loss).
    assert!(
        zeroed.ratio() >= LOSS_FACTOR,
        "the loss fell to {:.3} of its first epoch's without an update: {:?}",
        zeroed.ratio(),
        zeroed.losses
    );
    let _ = std::fs::remove_dir_all(&dir);
}
