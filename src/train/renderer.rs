//! What a run shows while it trains when burn-train's dashboard does not: a progress sink
//! inside an ablation ([`QuietRenderer`]), and one line per epoch where stdout is not a
//! terminal ([`EpochLines`]), in place of burn-train's fallback, which prints a debug struct
//! (`TrainingProgress { progress: Some(Progress {...`) per step into the log.

use std::sync::Arc;

use burn::train::metric::{MetricDefinition, MetricId, NumericEntry};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};
use burn::train::LearnerSummary;

use crate::util::progress::Progress;

/// A renderer that draws nothing: for runs inside an ablation, which print one line per run
/// instead of a dashboard per run. Metrics still go to the run directory's logs.
///
/// With a [`Progress`] sink it reports the training images of every step over the run's
/// epochs, with the epoch as message; the epochs a resumed run had trained count as done.
#[derive(Default, Clone)]
pub struct QuietRenderer {
    progress: Option<Arc<dyn Progress>>,
    /// Whether the sink heard of the run's stage.
    started: bool,
    /// Images reported so far.
    reported: u64,
    /// The message last shown, so that each is sent once rather than once per step.
    shown: String,
}

impl QuietRenderer {
    /// A renderer that reports to `progress`, or to nothing.
    pub fn new(progress: Option<Arc<dyn Progress>>) -> Self {
        Self { progress, ..Self::default() }
    }

    fn show(&mut self, text: String) {
        if let Some(progress) = self.progress.as_ref().filter(|_| text != self.shown) {
            progress.message(&text);
            self.shown = text;
        }
    }
}

impl MetricsRendererTraining for QuietRenderer {
    fn update_train(&mut self, _state: MetricState) {}
    fn update_valid(&mut self, _state: MetricState) {}

    fn render_train(&mut self, item: TrainingProgress, _progress: Vec<ProgressType>) {
        let (Some(progress), Some(items)) = (self.progress.clone(), item.progress) else {
            return;
        };
        let (epoch, epochs) =
            (item.global_progress.items_processed, item.global_progress.items_total);
        let label = format!("epoch {epoch}/{epochs}");
        let per_epoch = items.items_total;
        let done = (epoch.saturating_sub(1) * per_epoch + items.items_processed) as u64;
        if !self.started {
            // The sink hears of the run after its first step: that step is no measure of the
            // rate, no more than the epochs of a resumed run.
            progress.start_at(&label, (epochs * per_epoch) as u64, done);
            self.started = true;
            self.shown = label.clone();
            self.reported = done;
        }
        self.show(label);
        if done > self.reported {
            progress.advance(done - self.reported);
            self.reported = done;
        }
    }

    fn render_valid(&mut self, item: TrainingProgress, _progress: Vec<ProgressType>) {
        let global = item.global_progress;
        self.show(format!("epoch {}/{}: validation", global.items_processed, global.items_total));
    }

    fn on_train_end(
        &mut self,
        _summary: Option<LearnerSummary>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        // What the run does next, before its caller hears of it.
        self.show("held-out evaluation".into());
        Ok(())
    }
}

impl MetricsRendererEvaluation for QuietRenderer {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}
    fn render_test(&mut self, _item: EvaluationProgress, _progress: Vec<ProgressType>) {}
    fn on_test_end(
        &mut self,
        _summary: Option<LearnerSummary>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        Ok(())
    }
}

impl MetricsRenderer for QuietRenderer {
    fn manual_close(&mut self) {}
    fn register_metric(&mut self, _definition: MetricDefinition) {}
}

/// Weighted epoch means of one split's metrics, in the order they first arrive (the order the
/// run registers them: loss and accuracy first).
#[derive(Debug, Default)]
struct Means(Vec<Mean>);

#[derive(Debug)]
struct Mean {
    id: MetricId,
    sum: f64,
    weight: f64,
    /// Whether any value was a number: the baseline's group metrics never are.
    measured: bool,
}

impl Means {
    /// Adds one step's value with its weight (burn-train's: images for the loss and the
    /// accuracy, 1 per step for ours, 0 on the steps that did not measure).
    fn add(&mut self, id: &MetricId, value: f64, weight: f64) {
        let at = match self.0.iter().position(|m| m.id == *id) {
            Some(at) => at,
            None => {
                self.0.push(Mean { id: id.clone(), sum: 0.0, weight: 0.0, measured: false });
                self.0.len() - 1
            }
        };
        let mean = &mut self.0[at];
        if weight > 0.0 {
            mean.sum += value * weight;
            mean.weight += weight;
            mean.measured |= !value.is_nan();
        }
    }
}

/// One line per epoch on stdout, for runs whose stdout is not a terminal (a log file, CI,
/// `nohup`), in place of burn-train's per-step debug print:
///
/// `epoch 2/10 | train loss=3.2150 accuracy=41.2000 ... | valid loss=... | lr=0.0125 | 312.4 s`
///
/// Every value is the epoch's weighted mean, as `metrics.csv` holds it, under the name of its
/// `metrics.csv` column (without the trailing `_`); the learning rate, a training metric, comes
/// after the validation numbers; the seconds are those since the renderer was made (the start
/// of training in this process) at the epoch's last step. A metric that never measured a
/// number in the epoch (the baseline's group shares) is left out. The line is written once
/// the epoch's validation is done, or when the next epoch or the end of training shows that
/// it is; an epoch the run stopped in says how many of its images it trained.
pub struct EpochLines {
    names: Vec<(MetricId, String)>,
    /// The updates of the step being processed, added once its epoch is known: burn-train
    /// sends a step's metrics before its progress.
    pending: Vec<(MetricId, f64, f64)>,
    train: Means,
    valid: Means,
    /// The epoch in progress and the number of epochs.
    epoch: Option<(usize, usize)>,
    /// Training images of the epoch done and in all.
    images: (usize, usize),
    /// Seconds at the epoch's last step.
    seconds: f64,
    written: bool,
    clock: Box<dyn Fn() -> f64 + Send + Sync>,
    out: Box<dyn FnMut(String) + Send + Sync>,
}

/// burn-train's name of the learning-rate metric, whose value goes at the end of a line.
const LEARNING_RATE: &str = "Learning Rate";

impl EpochLines {
    /// Lines on stdout, seconds from now.
    pub fn stdout() -> Self {
        let started = std::time::Instant::now();
        Self::with(
            Box::new(move || started.elapsed().as_secs_f64()),
            Box::new(|line| {
                use std::io::Write;
                // A closed stdout must not stop the run; the metrics are in the run directory.
                let _ = writeln!(std::io::stdout().lock(), "{line}");
            }),
        )
    }

    fn with(
        clock: Box<dyn Fn() -> f64 + Send + Sync>,
        out: Box<dyn FnMut(String) + Send + Sync>,
    ) -> Self {
        Self {
            names: Vec::new(),
            pending: Vec::new(),
            train: Means::default(),
            valid: Means::default(),
            epoch: None,
            images: (0, 0),
            seconds: 0.0,
            written: false,
            clock,
            out,
        }
    }

    fn queue(&mut self, state: MetricState) {
        if let MetricState::Numeric(entry, value) = state {
            let (value, weight) = match value {
                NumericEntry::Value(v) => (v, 1.0),
                NumericEntry::Aggregated { aggregated_value, count } => {
                    (aggregated_value, count as f64)
                }
            };
            self.pending.push((entry.metric_id, value, weight));
        }
    }

    /// Moves to the epoch of a step that just arrived, writing the line of the one before
    /// if it is still due, and adds the step's metrics to `split`'s means.
    fn step(&mut self, global: &burn::data::dataloader::Progress, valid: bool) {
        let epoch = (global.items_processed, global.items_total);
        if self.epoch != Some(epoch) {
            self.write();
            self.epoch = Some(epoch);
            self.train = Means::default();
            self.valid = Means::default();
            self.images = (0, 0);
            self.written = false;
        }
        let means = if valid { &mut self.valid } else { &mut self.train };
        for (id, value, weight) in self.pending.drain(..) {
            means.add(&id, value, weight);
        }
        self.seconds = (self.clock)();
    }

    fn name(&self, id: &MetricId) -> Option<&str> {
        self.names.iter().find(|(known, _)| known == id).map(|(_, name)| name.as_str())
    }

    /// The epoch's line, if one is due.
    fn write(&mut self) {
        let Some((epoch, epochs)) = self.epoch.filter(|_| !self.written) else { return };
        self.written = true;
        let mut line = format!("epoch {epoch}/{epochs}");
        if self.images.0 < self.images.1 {
            line.push_str(&format!(
                " (stopped after {} of {} images)",
                self.images.0, self.images.1
            ));
        }
        let mut lr = None;
        for (split, means) in [("train", &self.train), ("valid", &self.valid)] {
            let mut part = String::new();
            for mean in means.0.iter().filter(|m| m.measured) {
                let name = self.name(&mean.id).unwrap_or("?");
                let value = mean.sum / mean.weight;
                if name == LEARNING_RATE {
                    lr = Some(value);
                } else {
                    part.push_str(&format!(" {}={}", key(name), number(value)));
                }
            }
            if !part.is_empty() {
                line.push_str(&format!(" | {split}{part}"));
            }
        }
        if let Some(lr) = lr {
            line.push_str(&format!(" | lr={}", number(lr)));
        }
        line.push_str(&format!(" | {:.1} s", self.seconds));
        (self.out)(line);
    }
}

/// A metric's `metrics.csv` column without its trailing `_`: `L1 (margin softmax)` is
/// `l1_margin_softmax`.
fn key(name: &str) -> String {
    let key = name.to_lowercase().replace([' ', '(', ')'], "_").replace("__", "_");
    key.trim_matches('_').to_string()
}

/// Four decimals, or four significant digits in exponent form where the decimals would hide
/// some (a learning rate of 3.125e-3).
fn number(v: f64) -> String {
    if v == 0.0 || (1e-2..1e5).contains(&v.abs()) || !v.is_finite() {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

/// burn-train's summary without the model's module tree, which runs to hundreds of lines in a
/// log (`summary` prints a model's parts); the table of epochs stays.
fn without_model(summary: &str) -> String {
    match (summary.find("Model:\n"), summary.find("Total Epochs:")) {
        (Some(model), Some(epochs)) if model < epochs => {
            format!("{}{}", &summary[..model], &summary[epochs..])
        }
        _ => summary.to_string(),
    }
}

impl MetricsRendererTraining for EpochLines {
    fn update_train(&mut self, state: MetricState) {
        self.queue(state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.queue(state);
    }

    fn render_train(&mut self, item: TrainingProgress, _progress: Vec<ProgressType>) {
        self.step(&item.global_progress, false);
        if let Some(items) = item.progress {
            self.images = (items.items_processed, items.items_total);
        }
    }

    fn render_valid(&mut self, item: TrainingProgress, _progress: Vec<ProgressType>) {
        self.step(&item.global_progress, true);
        if item.progress.is_some_and(|p| p.items_processed >= p.items_total) {
            self.write();
        }
    }

    fn on_train_end(
        &mut self,
        summary: Option<LearnerSummary>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        self.write();
        // burn-train's renderers end with the summary; a log keeps its table.
        if let Some(summary) = summary {
            (self.out)(without_model(&summary.to_string()));
        }
        Ok(())
    }
}

impl MetricsRendererEvaluation for EpochLines {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}
    fn render_test(&mut self, _item: EvaluationProgress, _progress: Vec<ProgressType>) {}
    fn on_test_end(
        &mut self,
        _summary: Option<LearnerSummary>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        Ok(())
    }
}

impl MetricsRenderer for EpochLines {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.push((definition.metric_id, definition.name));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use burn::data::dataloader::Progress as Count;
    use burn::train::metric::{MetricAttributes, MetricEntry, SerializedEntry};

    use super::*;
    use crate::util::progress::Recorded;

    fn progress(epoch: usize, epochs: usize, done: usize, total: usize) -> TrainingProgress {
        TrainingProgress {
            progress: Some(Count::new(done, total)),
            global_progress: Count::new(epoch, epochs),
            iteration: None,
        }
    }

    fn id(name: &str) -> MetricId {
        MetricId::new(Arc::new(name.to_string()))
    }

    /// A numeric update as burn-train sends it: the step's value and its weight.
    fn value(name: &str, value: f64, count: usize) -> MetricState {
        numeric(name, NumericEntry::Aggregated { aggregated_value: value, count })
    }

    fn numeric(name: &str, value: NumericEntry) -> MetricState {
        let entry = MetricEntry::new(id(name), SerializedEntry::new(String::new(), String::new()));
        MetricState::Numeric(entry, value)
    }

    #[test]
    fn epoch_lines_write_each_epoch_once_with_its_means() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let now = Arc::new(Mutex::new(0.0));
        let mut renderer = {
            let (lines, now) = (lines.clone(), now.clone());
            EpochLines::with(
                Box::new(move || *now.lock().unwrap()),
                Box::new(move |line| lines.lock().unwrap().push(line)),
            )
        };
        let names = ["Loss", "Accuracy", "Learning Rate", "Largest group share"];
        for name in names.into_iter().chain(["Verification accuracy"]) {
            let attributes = MetricAttributes::None;
            let metric_id = id(name);
            renderer.register_metric(MetricDefinition {
                metric_id,
                name: name.into(),
                description: None,
                attributes,
            });
        }
        let train = |r: &mut EpochLines, (loss, accuracy, lr, images): (f64, f64, f64, usize)| {
            r.update_train(value("Loss", loss, images));
            r.update_train(value("Accuracy", accuracy, images));
            r.update_train(numeric("Learning Rate", NumericEntry::Value(lr)));
            // The baseline's group share: no number in any step.
            r.update_train(value("Largest group share", f64::NAN, 1));
        };
        let set = |at: f64| *now.lock().unwrap() = at;
        // Epoch 1: batches of 4 and 2 images; the loss mean weighs them 4:2.
        train(&mut renderer, (3.0, 25.0, 0.1, 4));
        set(1.0);
        renderer.render_train(progress(1, 2, 4, 6), vec![]);
        train(&mut renderer, (6.0, 50.0, 0.3, 2));
        set(2.0);
        renderer.render_train(progress(1, 2, 6, 6), vec![]);
        assert!(lines.lock().unwrap().is_empty(), "nothing before the validation");
        // Validation: the verification accuracy weighs 1 on the step that measured it, 0 after.
        renderer.update_valid(value("Loss", 5.0, 3));
        renderer.update_valid(value("Verification accuracy", 0.75, 1));
        set(2.5);
        renderer.render_valid(progress(1, 2, 3, 4), vec![]);
        renderer.update_valid(value("Loss", 1.0, 1));
        renderer.update_valid(value("Verification accuracy", 0.5, 0));
        set(3.4);
        renderer.render_valid(progress(1, 2, 4, 4), vec![]);
        assert_eq!(lines.lock().unwrap().len(), 1, "written when the validation is done");
        // Epoch 2 stops after one batch, before any validation; its first step's metrics come
        // before its progress and belong to it, not to epoch 1.
        train(&mut renderer, (1.5, 75.0, 3.125e-4, 4));
        set(4.0);
        renderer.render_train(progress(2, 2, 4, 6), vec![]);
        renderer.on_train_end(None).unwrap();
        assert_eq!(
            *lines.lock().unwrap(),
            [
                "epoch 1/2 | train loss=4.0000 accuracy=33.3333 | valid loss=4.0000 \
                 verification_accuracy=0.7500 | lr=0.2000 | 3.4 s",
                "epoch 2/2 (stopped after 4 of 6 images) | train loss=1.5000 accuracy=75.0000 \
                 | lr=3.125e-4 | 4.0 s",
            ]
        );
    }

    #[test]
    fn numbers_keep_four_digits_and_the_summary_loses_the_model_tree() {
        let shown: Vec<String> =
            [44.07781, 0.0125, 0.003125, 3.125e-4, 0.0, f64::NAN].map(number).into();
        assert_eq!(shown, ["44.0778", "0.0125", "3.125e-3", "3.125e-4", "0.0000", "NaN"]);
        let summary = "=== Learner Summary ===\nModel:\n\"TrainModel\" {\n  params: 5\n}\n\
                       Total Epochs: 2\n\n\n| Split | Metric |\n";
        assert_eq!(
            without_model(summary),
            "=== Learner Summary ===\nTotal Epochs: 2\n\n\n| Split | Metric |\n"
        );
        assert_eq!(without_model("Total Epochs: 2\n"), "Total Epochs: 2\n");
    }

    #[test]
    fn a_quiet_renderer_reports_the_images_of_the_epochs_it_trains() {
        let sink = Arc::new(Recorded::default());
        let shared: Arc<dyn Progress> = sink.clone();
        let mut renderer = QuietRenderer::new(Some(shared));
        // Resumed from the checkpoint of epoch 1 of 3: its 6 images and the first step's 4
        // are done when the sink first hears of the run.
        for (epoch, done) in [(2, 4), (2, 6), (3, 4), (3, 6)] {
            renderer.render_train(progress(epoch, 3, done, 6), vec![]);
            if done == 6 {
                renderer.render_valid(progress(epoch, 3, 2, 2), vec![]);
                renderer.render_valid(progress(epoch, 3, 2, 2), vec![]);
            }
        }
        renderer.on_train_end(None).unwrap();
        assert_eq!(
            sink.calls(),
            [
                "start epoch 2/3 18",
                "advance 10",
                "advance 2",
                "message epoch 2/3: validation",
                "message epoch 3/3",
                "advance 4",
                "advance 2",
                "message epoch 3/3: validation",
                "message held-out evaluation",
            ]
        );
    }
}
