//! A training run: the Learner with the TUI dashboard, on one device, several, or several
//! processes, from a fresh or resumed run directory to the held-out evaluation.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::Sgd;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::backend::{Device as DeviceIds, DeviceId};
use burn::train::metric::{AccuracyMetric, LearningRateMetric, LossMetric};
use burn::train::{
    ExecutionStrategy, Interrupter, Learner, LearningComponentsMarker, SupervisedTraining,
    TrainingStrategy,
};

use crate::backend::conv::TrainBackend;
use crate::backend::{BackendJob, BackendKind};
use crate::data::loader::{EpochLoader, MissingHook};
use crate::evaluate::held_out::{evaluate_held_out, RunReport, VerificationProbe};
use crate::evaluate::targets::ValTargets;
use crate::objective::labels::{GroupLabeler, LabelMethod};
use crate::train::cluster::{CollectiveStrategy, NodeLaunch};
use crate::train::config::read_config;
use crate::train::config::TrainConfig;
use crate::train::data::{open_data, TrainData};
use crate::train::learner::{
    GroupFaceMetric, GroupFaceQuantity, ResumedMetricLogger, TargetMetric,
};
use crate::train::renderer::{EpochLines, QuietRenderer};
use crate::train::run_dir::{
    complete_checkpoints, last_checkpoint, load_labels, load_loss_scale, prepare_run_dir,
    save_atomically, save_labels, save_loss_scale, write_metrics_csv, AtomicRecorder, RunRecorder,
};
use crate::train::schedule::Schedule;
use crate::train::step::{LossScaler, StepGuard, TrainModel};
use crate::util::progress::Progress;

/// A training run on one backend: the configuration and where it writes.
#[derive(Debug, Clone)]
pub struct TrainRun {
    /// The run's configuration.
    pub config: TrainConfig,
    /// The run directory (`config.json`, metrics, checkpoints, `model.mpk`, `report.json`).
    pub out: PathBuf,
    /// No dashboard (runs inside an ablation).
    pub quiet: bool,
    /// Continue the run in `out` from its newest complete checkpoint (from the start when it
    /// has none); `out/config.json` must hold the same configuration.
    pub resume: bool,
    /// This process's place in a run of `config.nodes > 1` processes; `None` for one process.
    pub node: Option<NodeLaunch>,
}

/// What a finished run leaves behind.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The run directory.
    pub dir: PathBuf,
    /// The held-out evaluation (also in `report.json`).
    pub report: RunReport,
    /// Wall time of training, seconds.
    pub train_seconds: f64,
    /// Wall time of the evaluation, seconds.
    pub eval_seconds: f64,
    /// The run had finished before this call (`resume=true` on a finished run): nothing was
    /// trained or written, the report is the saved one and both times are 0.
    pub earlier: bool,
}

/// Trains on the backend `kind` (device `index` for GPUs), then evaluates on held-out
/// identities. Not generic, so that the Learner is compiled once, here, for every binary.
pub fn train(kind: BackendKind, index: usize, run: TrainRun) -> Result<TrainOutcome, String> {
    // The precision's dtype is checked against the device before anything is built.
    let precision = run.config.precision;
    crate::backend::run_with_precision(kind, precision, index, run)?
}

/// [`train`], with a quiet run's renderer reporting the training images of every step to
/// `progress` (the ablation's bar of each run in flight); a run with its dashboard ignores it.
pub fn train_reporting(
    kind: BackendKind,
    index: usize,
    run: TrainRun,
    progress: Arc<dyn Progress>,
) -> Result<TrainOutcome, String> {
    let precision = run.config.precision;
    crate::backend::run_with_precision(kind, precision, index, Reporting(run, progress))?
}

/// The job of [`train_reporting`].
struct Reporting(TrainRun, Arc<dyn Progress>);

/// Where Burn runs the steps: one device, or `devices` replicas with the optimiser on the
/// first. CPU backends have one device, which every replica shares; GPU replicas take the
/// device indices that follow the given one. The `ddp` build (CUDA only) runs the replicas
/// through burn-train's `ddp` strategy instead: a thread and an optimiser per GPU, the
/// gradients all-reduced by NCCL as the backward pass produces them.
fn execution_strategy<B: TrainBackend>(device: &B::Device, devices: usize) -> ExecutionStrategy<B> {
    if devices <= 1 {
        return ExecutionStrategy::single(device.clone());
    }
    let first = DeviceIds::to_id(device);
    let list = (0..devices as u16)
        .map(|k| {
            <B::Device as DeviceIds>::from_id(DeviceId {
                type_id: first.type_id,
                index_id: first.index_id + k,
            })
        })
        .collect();
    #[cfg(feature = "ddp")]
    {
        use burn::tensor::backend::distributed::{DistributedConfig, ReduceOperation};
        // A sum: each replica's loss is already divided by the number of replicas
        // (`StepGuard`), as for the in-process strategy, so the sum is the gradient of the
        // global batch's mean loss.
        ExecutionStrategy::ddp(list, DistributedConfig { all_reduce_op: ReduceOperation::Sum })
    }
    #[cfg(not(feature = "ddp"))]
    ExecutionStrategy::multi(list, burn::train::MultiDeviceOptim::OptimMainDevice)
}

/// Why a rank of a run of several processes stopped, once it has.
type FailureSlot = Arc<Mutex<Option<String>>>;

/// The Learner's components of a run: the model, SGD over it and the learning-rate schedule.
type Components<B> = LearningComponentsMarker<
    B,
    Schedule,
    TrainModel<B>,
    OptimizerAdaptor<Sgd<<B as AutodiffBackend>::InnerBackend>, TrainModel<B>, B>,
>;

/// What watches the steps of a run: the guard that stops it at a non-finite step or an
/// unreadable image, the held-out probe, and the interrupter the guard stops the Learner with.
struct Watch {
    guard: Arc<StepGuard>,
    probe: Arc<VerificationProbe>,
    /// The `val=` targets, if any.
    targets: Option<Arc<ValTargets>>,
    interrupter: Interrupter,
    /// An image that cannot be read stops the run at once, naming it.
    on_missing: MissingHook,
    /// Where a quiet run reports its progress.
    progress: Option<Arc<dyn Progress>>,
}

impl Watch {
    fn new(
        config: &TrainConfig,
        data: &TrainData,
        out: &Path,
        done_epochs: usize,
        progress: Option<Arc<dyn Progress>>,
    ) -> Result<Self, String> {
        let per_epoch = config.steps_per_epoch(data.train.len());
        let interrupter = Interrupter::new();
        let mut guard = StepGuard::new(
            per_epoch,
            done_epochs * per_epoch,
            config.clip_grad_norm,
            config.devices,
            interrupter.clone(),
        );
        if config.precision.scales_loss() {
            // A resumed run continues at the scale its checkpoint's epoch ended with.
            let scaler = match done_epochs {
                0 => LossScaler::default(),
                epoch => load_loss_scale(out, epoch)?,
            };
            guard = guard.with_loss_scaler(scaler);
        }
        let guard = Arc::new(guard);
        let probe = Arc::new(VerificationProbe::new(
            Arc::new(data.held_out.clone()),
            config.batch,
            config.eval.mode,
        ));
        let on_missing: MissingHook = {
            let guard = guard.clone();
            let errors = data.errors.clone();
            Arc::new(move |epoch: usize| {
                let what = errors
                    .as_ref()
                    .and_then(|e| e.check().err())
                    .unwrap_or_else(|| "an item of the dataset could not be produced".into());
                guard.stop(format!("epoch {epoch}: an image could not be read: {what}"));
            })
        };
        let targets = if config.val.is_empty() {
            None
        } else {
            let targets = ValTargets::load(
                &config.val,
                config.model.backbone.input_side,
                config.val_every,
                config.batch,
                config.eval.mode,
                out.join("val_targets.csv"),
                Some(done_epochs),
            )?;
            Some(Arc::new(targets))
        };
        Ok(Watch { guard, probe, targets, interrupter, on_missing, progress })
    }
}

impl BackendJob for TrainRun {
    type Output = Result<TrainOutcome, String>;

    fn run<B: TrainBackend>(self, device: B::Device) -> Result<TrainOutcome, String> {
        self.train_on::<B>(device, None)
    }
}

impl BackendJob for Reporting {
    type Output = Result<TrainOutcome, String>;

    fn run<B: TrainBackend>(self, device: B::Device) -> Result<TrainOutcome, String> {
        self.0.train_on::<B>(device, Some(self.1))
    }
}

impl TrainRun {
    /// The run, its quiet renderer reporting to `progress`.
    fn train_on<B: TrainBackend>(
        self,
        device: B::Device,
        progress: Option<Arc<dyn Progress>>,
    ) -> Result<TrainOutcome, String> {
        self.config.validate().map_err(|e| e.to_string())?;
        self.check_launch()?;
        let (resume_from, fingerprint) = self.resume_point()?;
        if let Some(finished) = self.finished_earlier(resume_from)? {
            return Ok(finished);
        }
        self.announce(resume_from);
        let config = &self.config;
        let started = Instant::now();
        let data = open_data(config)?;
        let watch = Watch::new(config, &data, &self.out, resume_from.unwrap_or(0), progress)?;
        let model = self.initial_model::<B>(resume_from, &watch, &device)?;
        let labeler = model.labeler.clone();
        let (training, collective_failure) = self.supervised_training::<B>(
            &data,
            &labeler,
            &watch,
            resume_from,
            fingerprint,
            &device,
        );
        let schedule = config.schedule(data.train.len()).map_err(|e| e.to_string())?;
        let result = training.launch(Learner::new(model, config.optimizer().init(), schedule));
        // Closes the dashboard now, so what follows prints on the restored terminal. Dropping
        // it is the way: burn-train 0.21's TUI `manual_close` waits for the user to press q
        // and then s, and a renderer dropped after it panics (its Drop unwraps the thread
        // handle `manual_close` already took).
        let trained = result.model;
        drop(result.renderer);
        self.check_stopped(&watch.guard, collective_failure)?;
        self.save_trained::<B>(&labeler, &trained)?;
        if let Some(scaler) = watch.guard.loss_scaler() {
            save_loss_scale(&self.out, config.epochs, &scaler)?;
            if !self.quiet {
                eprintln!(
                    "precision=f16: {} steps skipped for overflow, final loss scale {}",
                    scaler.skipped, scaler.scale
                );
            }
        }
        let train_seconds = started.elapsed().as_secs_f64();
        self.evaluate::<B>(&trained, &data, train_seconds, &device)
    }
}

impl TrainRun {
    /// `nodes` and `rank` come together or not at all.
    fn check_launch(&self) -> Result<(), String> {
        match (&self.node, self.config.nodes) {
            (None, nodes) if nodes > 1 => Err(format!(
                "nodes={nodes} needs this process's rank= and master=HOST:PORT, rank 0's \
                 address, which every rank names"
            )),
            (Some(launch), 1) => Err(format!(
                "rank={} is for a run of several processes: give nodes= too",
                launch.rank
            )),
            _ => Ok(()),
        }
    }

    /// This process's rank: its shard of the data, and the rank its errors name.
    fn rank(&self) -> usize {
        self.node.as_ref().map_or(0, |n| n.rank)
    }

    /// Prepares the run directory and returns the epoch to resume from (the newest checkpoint
    /// every rank holds) and the fingerprint that ranks of one run share.
    fn resume_point(&self) -> Result<(Option<usize>, u64), String> {
        let config = &self.config;
        let mut resume_from = prepare_run_dir(config, &self.out, self.resume)?;
        // Ranks must train the same configuration; `out` is not part of it.
        let fingerprint = crate::data::rng::fnv1a(
            serde_json::to_string(config).map_err(|e| e.to_string())?.as_bytes(),
        );
        if let (Some(launch), true) = (&self.node, self.resume) {
            let agreed = crate::train::cluster::agree_on_checkpoint(
                launch,
                config.nodes,
                fingerprint,
                &complete_checkpoints(&self.out),
            )?;
            if agreed != resume_from {
                eprintln!(
                    "resume: rank {} holds checkpoints up to epoch {}; the ranks resume \
                     together from {}",
                    self.rank(),
                    resume_from.unwrap_or(0),
                    agreed.map_or("the start".to_string(), |e| format!("epoch {e}"))
                );
            }
            resume_from = agreed;
        }
        Ok((resume_from, fingerprint))
    }

    /// The outcome of a run that had finished before this call. `report.json` is the last file
    /// a run writes: a run that has one is finished, and resuming it must not train its last
    /// epoch again or rewrite what it wrote (unless another rank of it needs this one to train
    /// that epoch again with it).
    fn finished_earlier(&self, resume_from: Option<usize>) -> Result<Option<TrainOutcome>, String> {
        let report_path = self.out.join("report.json");
        let all_finished = self.node.is_none() || resume_from == Some(self.config.epochs);
        if !(self.resume && report_path.is_file() && all_finished) {
            return Ok(None);
        }
        let report = RunReport::read(&report_path)?;
        eprintln!(
            "resume: {} finished all {} epochs earlier ({}); nothing to do",
            self.out.display(),
            self.config.epochs,
            report_path.display()
        );
        Ok(Some(TrainOutcome {
            dir: self.out.clone(),
            report,
            train_seconds: 0.0,
            eval_seconds: 0.0,
            earlier: true,
        }))
    }

    /// Says where a resumed run starts.
    fn announce(&self, resume_from: Option<usize>) {
        if self.quiet {
            return;
        }
        if let Some(epoch) = resume_from {
            eprintln!("resume: {} from the checkpoint of epoch {epoch}", self.out.display());
        } else if self.resume {
            eprintln!("resume: {} has no complete checkpoint; starting", self.out.display());
        }
    }

    /// The model the first step starts from: seeded, then `init=` on a fresh run, watched by
    /// the guard and the probe, with the label window of the checkpoint on a resumed one.
    fn initial_model<B: TrainBackend>(
        &self,
        resume_from: Option<usize>,
        watch: &Watch,
        device: &B::Device,
    ) -> Result<TrainModel<B>, String> {
        let config = &self.config;
        let mut model = seeded_model::<B>(config, device);
        if let (None, Some(init)) = (resume_from, &config.init) {
            let init = Path::new(init);
            if init.is_dir() {
                // What is not copied (a head of another width) keeps the seeded model's
                // weights, drawn from the seed alone under the init lock.
                let fresh = model.model.backbone.clone();
                model.model.backbone = load_backbone::<B>(init, config, fresh, device)?;
            } else {
                let (loaded, report) =
                    crate::model::interop::load_into(model.model, &config.model, init)
                        .map_err(|e| format!("init: {e}"))?;
                model.model = loaded;
                if !self.quiet {
                    eprintln!("init: {}: {}", init.display(), report.describe());
                }
            }
        }
        model.guard = watch.guard.clone();
        model.precision = config.precision;
        model.probe = Some(watch.probe.clone());
        model.targets = watch.targets.clone();
        if let Some(epoch) = resume_from {
            let history = load_labels(&self.out, epoch)?;
            model.labeler.lock().map_err(|_| "label window lock poisoned")?.restore(&history);
        }
        Ok(model)
    }

    /// The training and validation loaders. Each epoch starts by saving the label window the
    /// previous epoch's checkpoint needs, and by reseeding the backend (dropout), so a resumed
    /// epoch draws what it drew before.
    fn loaders<B: TrainBackend>(
        &self,
        data: &TrainData,
        labeler: &Arc<Mutex<GroupLabeler>>,
        watch: &Watch,
        done_epochs: usize,
        device: &B::Device,
    ) -> (EpochLoader<B>, EpochLoader<B::InnerBackend>) {
        let config = &self.config;
        let hook = {
            let labeler = labeler.clone();
            let dir = self.out.clone();
            let device = device.clone();
            let seed = config.seed;
            let probe = watch.probe.clone();
            let targets = watch.targets.clone();
            let guard = watch.guard.clone();
            Arc::new(move |epoch: usize| {
                probe.arm();
                if let Some(targets) = &targets {
                    targets.arm();
                }
                if epoch > 1 {
                    let history = labeler.lock().map(|l| l.history()).unwrap_or_default();
                    if let Err(e) = save_labels(&dir, epoch - 1, &history) {
                        eprintln!("error: {e}");
                    }
                    if let Some(scaler) = guard.loss_scaler() {
                        if let Err(e) = save_loss_scale(&dir, epoch - 1, &scaler) {
                            eprintln!("error: {e}");
                        }
                    }
                }
                let _guard = INIT_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                B::seed(&device, crate::data::rng::hash3(seed, 0xD0_0047, epoch as u64));
            })
        };
        let first_epoch = done_epochs + 1;
        let train = EpochLoader::<B>::new(
            data.train.clone(),
            config.batch,
            true,
            true,
            config.seed,
            config.workers,
            first_epoch,
            device.clone(),
        )
        .with_epoch_hook(hook)
        .with_missing_hook(watch.on_missing.clone())
        .shard(self.rank(), config.nodes)
        // Burn cuts `devices` slices of equal length out of this.
        .take(config.devices.max(1) * config.images_per_replica(data.train.len()));
        let valid = EpochLoader::<B::InnerBackend>::new(
            data.valid.clone(),
            config.batch,
            false,
            false,
            config.seed,
            config.workers,
            first_epoch,
            device.clone(),
        )
        .with_missing_hook(watch.on_missing.clone());
        (train, valid)
    }

    /// Burn's strategy for the steps: one device, several, or (with `node`) a ring of
    /// processes, whose failure slot says why a rank stopped.
    fn strategy<B: TrainBackend>(
        &self,
        labeler: &Arc<Mutex<GroupLabeler>>,
        fingerprint: u64,
        device: &B::Device,
    ) -> (TrainingStrategy<Components<B>>, Option<FailureSlot>) {
        let config = &self.config;
        let Some(launch) = &self.node else {
            let strategy = execution_strategy::<B>(device, config.devices);
            return (TrainingStrategy::Default(strategy), None);
        };
        let mut strategy =
            CollectiveStrategy::<B>::new(device.clone(), config.nodes, launch.clone(), fingerprint);
        let groups = config.model.groups;
        if config.labels == LabelMethod::SelfDistributed && groups > 0 {
            // A window row holds K values, or 2K where the labels standardise.
            let width = labeler.lock().map_or(groups, |l| l.row_width(groups));
            strategy = strategy.with_labels(labeler.clone(), width);
        }
        let failure = strategy.failure_slot();
        (TrainingStrategy::Custom(Arc::new(strategy)), Some(failure))
    }

    /// burn-train's supervised training of this run: its loaders, strategy, metrics (as
    /// `metrics.csv` lists them), atomic checkpoints, resume point, logger and renderer.
    fn supervised_training<B: TrainBackend>(
        &self,
        data: &TrainData,
        labeler: &Arc<Mutex<GroupLabeler>>,
        watch: &Watch,
        resume_from: Option<usize>,
        fingerprint: u64,
        device: &B::Device,
    ) -> (SupervisedTraining<Components<B>>, Option<FailureSlot>) {
        let (train, valid) =
            self.loaders::<B>(data, labeler, watch, resume_from.unwrap_or(0), device);
        let (strategy, failure) = self.strategy::<B>(labeler, fingerprint, device);
        let metric = GroupFaceMetric::new;
        let mut training = SupervisedTraining::new(&self.out, Arc::new(train), Arc::new(valid))
            .metrics((LossMetric::new(), AccuracyMetric::new()))
            .metric_train_numeric(metric(GroupFaceQuantity::ClassificationLoss))
            .metric_valid_numeric(metric(GroupFaceQuantity::ClassificationLoss))
            .metric_train_numeric(metric(GroupFaceQuantity::GroupingLoss))
            .metric_valid_numeric(metric(GroupFaceQuantity::GroupingLoss))
            .metric_train_numeric(metric(GroupFaceQuantity::LargestGroupShare))
            .metric_train_numeric(metric(GroupFaceQuantity::GroupEntropy))
            .metric_train_numeric(metric(GroupFaceQuantity::LargestLabelShare))
            .metric_train_numeric(metric(GroupFaceQuantity::LabelEntropy))
            .metric_train_numeric(metric(GroupFaceQuantity::GroupConfidence))
            .metric_valid_numeric(metric(GroupFaceQuantity::GroupConfidence))
            .metric_train_numeric(LearningRateMetric::new())
            .metric_valid_numeric(metric(GroupFaceQuantity::VerificationAccuracy));
        let names = watch.targets.as_ref().map(|t| t.names()).unwrap_or_default();
        for (index, name) in names.iter().enumerate() {
            let [accuracy, best] = crate::evaluate::targets::metric_names(name);
            for (metric, best) in [(accuracy, false), (best, true)] {
                let target = TargetMetric::new(index, metric, best);
                if self.config.val_every > 0 {
                    training = training.metric_train_numeric(target.clone());
                }
                training = training.metric_valid_numeric(target);
            }
        }
        let mut training = training
            .with_interrupter(watch.interrupter.clone())
            .with_file_checkpointer(AtomicRecorder::default())
            .with_training_strategy(strategy)
            .num_epochs(self.config.epochs)
            .summary();
        if let Some(epoch) = resume_from {
            training = training.checkpoint(epoch);
        }
        // In place of burn-train's default file logger (same files), numbering a resumed
        // run's first epoch right.
        training = training
            .with_metric_logger(ResumedMetricLogger::new(&self.out, resume_from.unwrap_or(0)));
        if self.quiet {
            training = training.renderer(QuietRenderer::new(watch.progress.clone()));
        } else if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            // burn-train's fallback prints a debug struct per step; a log wants an epoch a line.
            training = training.renderer(EpochLines::stdout());
        }
        (training, failure)
    }

    /// The error of a run that the guard or a failed rank stopped, naming the checkpoint to
    /// resume from.
    fn check_stopped(
        &self,
        guard: &StepGuard,
        collective_failure: Option<FailureSlot>,
    ) -> Result<(), String> {
        let checkpoint = || match last_checkpoint(&self.out) {
            Some(epoch) => format!(
                "the checkpoint of epoch {epoch} in {} is the last good state \
                 (resume=true continues from it)",
                self.out.join("checkpoint").display()
            ),
            None => "no epoch had finished, so there is no checkpoint".to_string(),
        };
        if let Some(reason) = guard.stop_reason() {
            return Err(format!(
                "training stopped in {reason}; that batch and the ones after it were not applied \
                 and no model was written; {}. Repair or remove the file, then run the same \
                 command again{}",
                checkpoint(),
                if last_checkpoint(&self.out).is_some() { " with resume=true" } else { "" }
            ));
        }
        if let Some(reason) = collective_failure.and_then(|f| f.lock().ok().and_then(|r| r.clone()))
        {
            return Err(format!(
                "rank {} stopped: {reason}; no model was written; {}",
                self.rank(),
                checkpoint()
            ));
        }
        if let Some(failure) = guard.failure() {
            let config = &self.config;
            return Err(format!(
                "training stopped at {failure}; nothing of that step was applied and no model \
                 was written; {}. Try a lower lr (now {}), a longer warmup (now {} \
                 epochs), or clip_grad_norm=5 (now {})",
                checkpoint(),
                config.lr,
                config.warmup,
                config.clip_grad_norm
            ));
        }
        Ok(())
    }

    /// Writes the trained model (`model.mpk`, and `model.safetensors` with insightface's keys
    /// for PyTorch, `init=` and `eval init=`) and the last epoch's label window: the epoch hook
    /// saves each window when the next epoch starts, the last epoch has no next, and without
    /// its window its checkpoint is not one to resume from.
    fn save_trained<B: TrainBackend>(
        &self,
        labeler: &Arc<Mutex<GroupLabeler>>,
        trained: &TrainModel<B::InnerBackend>,
    ) -> Result<(), String> {
        let history = labeler.lock().map(|l| l.history()).unwrap_or_default();
        save_labels(&self.out, self.config.epochs, &history)?;
        save_atomically(trained, &self.out.join("model"))?;
        crate::model::interop::export_safetensors(
            &trained.model,
            &self.config.model,
            &self.out.join("model.safetensors"),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    /// The held-out evaluation of the trained model, then `metrics.csv`, its `curves.svg` and
    /// the report, whose `report.json` is written last: a run that has one is finished.
    fn evaluate<B: TrainBackend>(
        self,
        trained: &TrainModel<B::InnerBackend>,
        data: &TrainData,
        train_seconds: f64,
        device: &B::Device,
    ) -> Result<TrainOutcome, String> {
        let config = &self.config;
        let started = Instant::now();
        let report = evaluate_held_out(
            &trained.model,
            &data.held_out,
            config.batch,
            config.eval.mode,
            device,
            Some(&self.out),
        )?;
        let eval_seconds = started.elapsed().as_secs_f64();
        write_metrics_csv(&self.out, config.epochs, &config.val_metric_names())?;
        crate::train::curves::write_training_curves(&self.out)?;
        report.write(&self.out).map_err(|e| e.to_string())?;
        Ok(TrainOutcome { dir: self.out, report, train_seconds, eval_seconds, earlier: false })
    }
}

/// Serialises seeding and weight initialisation across threads: the backend's generator is
/// global, so two runs drawing from it at once (an ablation's parallel jobs) would interleave
/// their draws and neither would be reproducible.
static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The run's model with weights drawn from `config.seed` alone.
fn seeded_model<B: AutodiffBackend>(config: &TrainConfig, device: &B::Device) -> TrainModel<B> {
    let _guard = INIT_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    B::seed(device, config.seed);
    let model = TrainModel::<B>::new(
        &config.model,
        &config.criterion,
        config.labels,
        config.label_window,
        device,
    )
    .with_label_space(config.label_space)
    .with_sample_seed(config.seed);
    // Parameters are initialised lazily, on first use; draw them all now, under the lock.
    let record = model.clone().into_record();
    model.load_record(record)
}

/// The backbone of the finished run in `dir`, fitted to `config`'s model: the convolutional
/// trunk always, the FC and its BatchNorm when the output widths agree; the rest stays as in
/// `fresh`, this run's seeded backbone.
fn load_backbone<B: Backend>(
    dir: &Path,
    config: &TrainConfig,
    mut fresh: crate::model::backbone::IResNet<B>,
    device: &B::Device,
) -> Result<crate::model::backbone::IResNet<B>, String> {
    let prior_config = read_config(&dir.join("config.json")).map_err(|e| format!("init: {e}"))?;
    let prior_backbone = prior_config.model.backbone_config();
    let ours = config.model.backbone_config();
    if prior_backbone.blocks != ours.blocks
        || prior_backbone.widths != ours.widths
        || prior_backbone.stem_width != ours.stem_width
        || prior_backbone.input_side != ours.input_side
    {
        return Err(format!(
            "init: the backbone of {} (blocks {:?}, widths {:?}, stem {}, input {}) differs from \
             this run's (blocks {:?}, widths {:?}, stem {}, input {})",
            dir.display(),
            prior_backbone.blocks,
            prior_backbone.widths,
            prior_backbone.stem_width,
            prior_backbone.input_side,
            ours.blocks,
            ours.widths,
            ours.stem_width,
            ours.input_side
        ));
    }
    let prior = TrainModel::<B>::new(
        &prior_config.model,
        &prior_config.criterion,
        prior_config.labels,
        prior_config.label_window,
        device,
    )
    .load_file(dir.join("model"), &RunRecorder::new(), device)
    .map_err(|e| format!("init: cannot load {}: {e}", dir.join("model.mpk").display()))?;
    let prior = prior.model.backbone;
    let same_head = prior_backbone.output_width == ours.output_width;
    fresh.stem = prior.stem;
    fresh.stem_bn = prior.stem_bn;
    fresh.stem_act = prior.stem_act;
    fresh.blocks = prior.blocks;
    fresh.out_bn = prior.out_bn;
    if same_head {
        fresh.fc = prior.fc;
        fresh.features = prior.features;
    }
    Ok(fresh)
}
