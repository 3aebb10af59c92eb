//! What the `eval` and `embed` binaries do: a run or checkpoint on a data source.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::app::progress::Bar;
use crate::backend::conv::{ConvBackend, TrainBackend};
use crate::evaluate::embed::{embed_images, EmbedOptions, Embeddings};
use crate::evaluate::held_out::{evaluate_held_out, RunReport};
use crate::evaluate::ijb::{evaluate_ijb, IjbJob};
use crate::evaluate::pairs::{all_pairs_report_with_progress, pairs_report_with_progress};
use crate::evaluate::similarity::GroupAwareParams;
use crate::model::GroupMode;
use crate::protocol::report::Report;
use crate::protocol::verification;
use crate::train::run_dir::load_model;
use crate::util::progress::Progress;

/// What `eval model=RUN_DIR` evaluates on.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalData {
    /// The run's held-out synthetic identities (its `eval` settings).
    Synthetic,
    /// An image folder (one subfolder per identity). Pairs from `pairs` (rows index the
    /// folder's images in sorted path order), else every pair.
    Folder {
        /// The folder.
        root: PathBuf,
        /// A pairs file, `row_a row_b 1|0` per line.
        pairs: Option<PathBuf>,
    },
    /// An insightface verification `.bin` (pair i = images 2i and 2i+1).
    Bin(PathBuf),
    /// IJB-B or IJB-C 1:1 verification from `<root>/meta` and `<root>/loose_crop`.
    Ijb {
        /// The IJB root folder.
        root: PathBuf,
        /// Which benchmark.
        which: crate::protocol::ijb::Ijb,
    },
}

/// Evaluation of a finished run directory on one data source.
#[derive(Debug, Clone)]
pub struct EvalJob {
    /// The run directory (`config.json`, `model.mpk`), or with `checkpoint` a PyTorch or
    /// safetensors checkpoint file.
    pub run: PathBuf,
    /// The architecture of `run` when it is a checkpoint file (insightface's IResNet state
    /// dicts carry none), loaded by [`crate::model::interop::load_into`].
    pub checkpoint: Option<crate::model::GroupFaceConfig>,
    /// What to evaluate on.
    pub data: EvalData,
    /// Hard inference of a soft-trained model.
    pub mode: Option<GroupMode>,
    /// Images per forward pass (also how many are decoded at a time).
    pub batch: usize,
    /// Where the group analysis pictures go (synthetic data only).
    pub pictures: Option<PathBuf>,
    /// Folds of the verification protocol on listed pairs and IJB (insightface: 10; 1 picks
    /// and tests the threshold on all pairs). `data=synthetic` keeps the run's 10.
    pub folds: usize,
}
/// `embed`: the embeddings of every image of a folder, for other tools.
#[derive(Debug, Clone)]
pub struct EmbedJob {
    /// A run directory, or with `checkpoint` a checkpoint file.
    pub run: PathBuf,
    /// The architecture of a checkpoint file.
    pub checkpoint: Option<crate::model::GroupFaceConfig>,
    /// An image folder, one subfolder per identity.
    pub folder: PathBuf,
    /// Output folder.
    pub out: PathBuf,
    /// Images per forward pass (also how many are decoded at a time).
    pub batch: usize,
    /// Hard inference of a soft-trained model.
    pub mode: Option<GroupMode>,
    /// `true`: v̄(x) + v̄(flip x), the embedding insightface's evaluation scores (and every
    /// `eval` protocol here); `false`: v̄(x) alone, as arcface_torch's inference gives it, in
    /// half the forward passes. Recorded in `embedding.json`.
    pub flip: bool,
}

/// What [`EmbedJob`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedSummary {
    /// Images embedded (rows of every file).
    pub images: usize,
    /// Width of `embeddings.npy`.
    pub width: usize,
    /// Files written.
    pub files: Vec<PathBuf>,
}

impl crate::backend::BackendJob for EmbedJob {
    type Output = Result<EmbedSummary, String>;

    /// Writes into `out`:
    /// - `embeddings.npy`: float32 `[N, D]`, v̄(x) + v̄(flip x) with `flip` (v̄(x) without),
    ///   not normalised: with the flip, the embedding insightface's verification protocol
    ///   scores (normalise rows for cosine similarity);
    /// - `features.npy`: float32 `[N, F]`, v̂, the mean over both views with `flip` (GroupFace
    ///   only; for group-aware similarity);
    /// - `probs.npy`: float32 `[N, K]`, p(G|x), the mean over both views with `flip`
    ///   (GroupFace only);
    /// - `labels.txt`: the identity index of each row, so `eval embeddings= labels=` works;
    /// - `paths.txt`: the image path and identity folder of each row, tab-separated;
    /// - `embedding.json`: how the rows were computed: `flip`, `mode` (the inference override,
    ///   `null` for the trained one), `side`, the `model` and the `images` and `width`.
    ///
    /// A bar on stderr counts the images embedded.
    fn run<B: TrainBackend>(self, device: B::Device) -> Self::Output {
        use crate::protocol::{npy, Matrix};
        let (_, architecture, model) =
            load_model::<B::InnerBackend>(&self.run, self.checkpoint.as_ref(), &device)?;
        let side = architecture.backbone.input_side;
        let folder =
            crate::data::folder::ImageFolder::open(&self.folder).map_err(|e| e.to_string())?;
        let options = EmbedOptions {
            mode: self.mode,
            flip: self.flip,
            ..EmbedOptions::new(side, self.batch)
        };
        let bar = Bar::stderr();
        bar.start("embedding images", folder.len() as u64);
        let all = embed_images(&model, folder_images(&folder, side), &options, &device, &bar);
        bar.finish();
        let all = all?;
        let mut labels = String::new();
        let mut paths = String::new();
        for (path, label) in folder.items() {
            labels.push_str(&format!("{label}\n"));
            paths.push_str(&format!("{}\t{label}\n", path.display()));
        }
        std::fs::create_dir_all(&self.out)
            .map_err(|e| format!("cannot create {}: {e}", self.out.display()))?;
        let mut files = Vec::new();
        let mut write = |name: &str, m: &Matrix| -> Result<(), String> {
            let path = self.out.join(name);
            let matrix = Matrix::new(m.rows, m.cols, m.data.clone()).map_err(|e| e.to_string())?;
            npy::write_matrix_f32(&path, &matrix).map_err(|e| e.to_string())?;
            files.push(path);
            Ok(())
        };
        write("embeddings.npy", &all.embedding)?;
        if let Some(feature) = &all.feature {
            write("features.npy", feature)?;
        }
        if let Some(probs) = &all.probs {
            write("probs.npy", probs)?;
        }
        let how = serde_json::json!({
            "flip": self.flip,
            "mode": self.mode.map(|m| m.to_string()),
            "side": side,
            "model": self.run.display().to_string(),
            "images": all.embedding.rows,
            "width": all.embedding.cols,
        });
        let how = serde_json::to_string_pretty(&how).map_err(|e| e.to_string())? + "\n";
        for (name, text) in
            [("labels.txt", &labels), ("paths.txt", &paths), ("embedding.json", &how)]
        {
            let path = self.out.join(name);
            crate::util::fs::write_atomically(&path, text.as_bytes())?;
            files.push(path);
        }
        Ok(EmbedSummary { images: all.embedding.rows, width: all.embedding.cols, files })
    }
}

/// The images of `folder` in its (sorted) order, each decoded at `side` only when pulled, so
/// that a stream holds a batch of them at a time; a failure names the file.
fn folder_images(
    folder: &crate::data::folder::ImageFolder,
    side: usize,
) -> impl Iterator<Item = crate::data::Result<Vec<u8>>> + '_ {
    (0..folder.len()).map(move |i| folder.load(i, side as u32).map(|(image, _)| image.into_raw()))
}

/// The pairs of a report on a folder or a `.bin`: listed, or every pair of labelled rows.
enum PairSet {
    Listed(Vec<(usize, usize, bool)>),
    /// The identity of each row; never expanded into a list (10,000 images: 5·10⁷ pairs).
    All(Vec<usize>),
}

impl PairSet {
    fn report(
        &self,
        embeddings: &Embeddings,
        group_aware: Option<GroupAwareParams>,
        folds: usize,
        settings: BTreeMap<String, String>,
        progress: &dyn Progress,
    ) -> Result<Report, String> {
        match self {
            Self::Listed(list) => {
                pairs_report_with_progress(embeddings, list, group_aware, folds, settings, progress)
            }
            Self::All(labels) => all_pairs_report_with_progress(
                embeddings,
                labels,
                group_aware,
                folds,
                settings,
                progress,
            ),
        }
    }
}

impl crate::backend::BackendJob for EvalJob {
    type Output = Result<RunReport, String>;

    /// A bar on stderr counts the images embedded, then the pairs (or, for IJB, the templates
    /// and their pairs) scored.
    fn run<B: TrainBackend>(self, device: B::Device) -> Self::Output {
        let model = self.run.display().to_string();
        let bar = Bar::stderr();
        // Inference runs on the inner backend so BatchNorm uses its running statistics.
        let report = self.report::<B::InnerBackend>(device, &bar);
        bar.finish();
        let mut report = report?;
        // The report says which model it measured (its title names it too).
        for r in std::iter::once(&mut report.plain).chain(report.group_aware.as_mut()) {
            r.settings.insert("model".into(), model.clone());
        }
        Ok(report)
    }
}

impl EvalJob {
    fn report<B: ConvBackend>(
        self,
        device: B::Device,
        progress: &dyn Progress,
    ) -> Result<RunReport, String> {
        let (config, architecture, model) =
            load_model::<B>(&self.run, self.checkpoint.as_ref(), &device)?;
        let side = architecture.backbone.input_side;
        let options = EmbedOptions { mode: self.mode, ..EmbedOptions::new(side, self.batch) };
        let (embeddings, pairs, source) = match &self.data {
            EvalData::Synthetic => {
                let Some(config) = &config else {
                    return Err(format!(
                        "data=synthetic evaluates a run's held-out identities, and {} is a \
                         checkpoint, not a run: give data=FOLDER, FILE.bin or ijbb:/ijbc:ROOT",
                        self.run.display()
                    ));
                };
                if self.folds != verification::Options::default().folds {
                    return Err(format!(
                        "folds={} applies to listed pairs (a folder, a .bin, embeddings) and \
                         IJB; data=synthetic evaluates a run's held-out identities with \
                         insightface's 10 folds, as training did",
                        self.folds
                    ));
                }
                let held = crate::train::data::held_out(config)?;
                return evaluate_held_out(
                    &model,
                    &held,
                    self.batch,
                    self.mode.or(config.eval.mode),
                    &device,
                    self.pictures.as_deref(),
                );
            }
            EvalData::Folder { root, pairs } => {
                let folder =
                    crate::data::folder::ImageFolder::open(root).map_err(|e| e.to_string())?;
                progress.start("embedding images", folder.len() as u64);
                let images = folder_images(&folder, side);
                let embeddings = embed_images(&model, images, &options, &device, progress)?;
                let set = match pairs {
                    Some(file) => PairSet::Listed(
                        crate::protocol::pairs::read_pairs(file, folder.len())
                            .map_err(|e| e.to_string())?,
                    ),
                    None => PairSet::All(folder.items().iter().map(|(_, label)| *label).collect()),
                };
                (embeddings, set, root.display().to_string())
            }
            EvalData::Ijb { root, which } => {
                let job = IjbJob {
                    root,
                    which: *which,
                    side,
                    batch: self.batch,
                    folds: self.folds,
                    scores: self.pictures.as_deref(),
                };
                return evaluate_ijb(&model, &job, self.mode, &device, progress);
            }
            EvalData::Bin(path) => {
                let set = crate::data::verification_bin::VerificationSet::read(path)
                    .map_err(|e| e.to_string())?;
                // The pickle is read whole, but decoded images are several times its size.
                let images = (0..2 * set.len())
                    .map(|i| set.decode(i, Some(side as u32)).map(|im| im.into_raw()));
                progress.start("embedding images", 2 * set.len() as u64);
                let embeddings = embed_images(&model, images, &options, &device, progress)?;
                let list = (0..set.len())
                    .map(|i| (2 * i, 2 * i + 1, set.pair(i).map(|p| p.2).unwrap_or(false)))
                    .collect();
                (embeddings, PairSet::Listed(list), path.display().to_string())
            }
        };
        let mut settings = BTreeMap::new();
        settings.insert("protocol".into(), "listed pairs".into());
        settings.insert("data".into(), source);
        settings.insert("similarity".into(), "plain".into());
        let plain = pairs.report(&embeddings, None, self.folds, settings.clone(), progress)?;
        let group_aware = match embeddings.feature {
            Some(_) => {
                settings.insert("similarity".into(), "group-aware".into());
                let params = Some(GroupAwareParams::default());
                Some(pairs.report(&embeddings, params, self.folds, settings, progress)?)
            }
            None => None,
        };
        Ok(RunReport { plain, group_aware, groups: None })
    }
}

/// Runs an [`EvalJob`] on backend `kind`; not generic, so binaries share one compiled copy.
pub fn evaluate_run(
    kind: crate::backend::BackendKind,
    index: usize,
    job: EvalJob,
) -> Result<RunReport, String> {
    crate::backend::run(kind, index, job)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::{SynthConfig, SynthFaces};
    use crate::data::verification_bin::VerificationSet;
    use crate::model::GroupFaceConfig;
    use crate::util::progress::{NoProgress, Recorded};
    use crate::util::test_util::temp_dir;

    type B = burn::backend::NdArray<f32>;

    fn png(image: &image::RgbImage) -> Vec<u8> {
        let mut bytes = std::io::Cursor::new(Vec::new());
        image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
        bytes.into_inner()
    }

    /// A `.bin` and a folder (with a pairs file) of the same six faces, in the same order, are
    /// two sources of one stream: the same report, and a bad image is named in either.
    #[test]
    fn a_bin_and_a_folder_of_the_same_images_report_alike() {
        let dir = temp_dir("jobs-stream");
        let architecture = GroupFaceConfig::tiny(4);
        let model = architecture.init::<B>(&Default::default());
        let checkpoint = dir.join("model.safetensors");
        crate::model::interop::export_safetensors(&model, &architecture, &checkpoint).unwrap();
        let faces = SynthFaces::new(SynthConfig { side: 32, ..Default::default() }).unwrap();
        // Sorted path order a/0, a/1, b/0, ... is the `.bin`'s image order.
        let mut images = Vec::new();
        let folder = dir.join("faces");
        for (id, name) in ["a", "b", "c"].iter().enumerate() {
            std::fs::create_dir_all(folder.join(name)).unwrap();
            for k in 0..2 {
                let bytes = png(&faces.image(id, k));
                std::fs::write(folder.join(format!("{name}/{k}.png")), &bytes).unwrap();
                images.push(bytes);
            }
        }
        let pairs = dir.join("pairs.txt");
        std::fs::write(&pairs, "0 1 1\n2 3 1\n4 5 0\n").unwrap();
        let bin = dir.join("faces.bin");
        VerificationSet::new(images.clone(), vec![true, true, false]).unwrap().write(&bin).unwrap();
        let job = |data: EvalData| EvalJob {
            run: checkpoint.clone(),
            checkpoint: Some(architecture.clone()),
            data,
            mode: None,
            batch: 4,
            pictures: None,
            folds: 3,
        };
        let run = |data: EvalData| job(data).report::<B>(Default::default(), &NoProgress);
        let sink = Recorded::default();
        let from_bin =
            job(EvalData::Bin(bin.clone())).report::<B>(Default::default(), &sink).unwrap();
        // Six images embedded; three listed pairs scored twice (protocol and ROC) per similarity.
        let stage = |what: &str, n| (what.to_string(), n, n);
        assert_eq!(
            sink.stages(),
            [
                stage("embedding images", 6),
                stage("scoring pairs (plain)", 6),
                stage("scoring pairs (group-aware)", 6)
            ]
        );
        let from_folder =
            run(EvalData::Folder { root: folder.clone(), pairs: Some(pairs.clone()) }).unwrap();
        assert_eq!(from_bin.plain.verification, from_folder.plain.verification);
        assert_eq!(from_bin.plain.roc, from_folder.plain.roc);
        let aware = |r: &RunReport| r.group_aware.as_ref().map(|g| g.roc.clone());
        assert!(aware(&from_bin).is_some());
        assert_eq!(aware(&from_bin), aware(&from_folder));

        // Image 5 is in the second batch, so the first was embedded before it was decoded.
        images[5] = b"not an image".to_vec();
        VerificationSet::new(images, vec![true, true, false]).unwrap().write(&bin).unwrap();
        let err = run(EvalData::Bin(bin.clone())).unwrap_err();
        assert!(err.contains("faces.bin") && err.contains("record 5"), "{err}");
        std::fs::write(folder.join("c/1.png"), b"not an image").unwrap();
        let err = run(EvalData::Folder { root: folder, pairs: None }).unwrap_err();
        assert!(err.contains("1.png"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `embed flip=false` writes the model's output for each image alone, to the bit;
    /// `flip=true` the sum of the image's and its mirror's; `embedding.json` says which.
    #[test]
    fn embed_writes_the_plain_forward_pass_without_the_flip() {
        use crate::backend::BackendJob;
        use crate::data::dataset::to_chw;
        use crate::protocol::npy::read_matrix;
        use burn::prelude::*;
        let dir = temp_dir("jobs-embed");
        let architecture = GroupFaceConfig::tiny(4);
        let checkpoint = dir.join("model.safetensors");
        let initial = architecture.init::<B>(&Default::default());
        crate::model::interop::export_safetensors(&initial, &architecture, &checkpoint).unwrap();
        let faces = SynthFaces::new(SynthConfig { side: 32, ..Default::default() }).unwrap();
        let folder = dir.join("faces");
        for (id, name) in ["a", "b", "c"].iter().enumerate() {
            std::fs::create_dir_all(folder.join(name)).unwrap();
            for k in 0..2 {
                std::fs::write(folder.join(format!("{name}/{k}.png")), png(&faces.image(id, k)))
                    .unwrap();
            }
        }
        let embed = |flip: bool| {
            let out = dir.join(format!("flip-{flip}"));
            let job = EmbedJob {
                run: checkpoint.clone(),
                checkpoint: Some(architecture.clone()),
                folder: folder.clone(),
                out: out.clone(),
                batch: 4,
                mode: None,
                flip,
            };
            let summary = job.run::<burn::backend::Autodiff<B>>(Default::default()).unwrap();
            assert!(summary.files.contains(&out.join("embedding.json")));
            let how: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(out.join("embedding.json")).unwrap())
                    .unwrap();
            assert_eq!(how["flip"], flip);
            assert_eq!((how["images"].as_u64(), how["side"].as_u64()), (Some(6), Some(32)));
            read_matrix(out.join("embeddings.npy")).unwrap()
        };
        let (plain, flipped) = (embed(false), embed(true));
        // The forward passes the job makes: batches of 4 and 2 images, decoded as it decodes.
        let device = Default::default();
        let (_, _, model) = load_model::<B>(&checkpoint, Some(&architecture), &device).unwrap();
        let images = crate::data::folder::ImageFolder::open(&folder).unwrap();
        let forward = |range: std::ops::Range<usize>, mirror: bool| -> Vec<f32> {
            let mut pixels = Vec::new();
            for i in range.clone() {
                to_chw(images.load(i, 32).unwrap().0.as_raw(), 32, mirror, &mut pixels);
            }
            let input = TensorData::new(pixels, [range.len(), 3, 32, 32]);
            let output = model.forward(Tensor::<B, 4>::from_data(input, &device));
            output.embedding.into_data().to_vec().unwrap()
        };
        let expected: Vec<f32> = [0..4, 4..6].into_iter().flat_map(|r| forward(r, false)).collect();
        assert_eq!((plain.rows, plain.cols), (6, architecture.output_width()));
        assert_eq!(plain.data, expected);
        // The flip-sum takes both views in one pass of 2n images, whose sums may round apart
        // from two passes of n in the last bit.
        let mirrored: Vec<f32> = [0..4, 4..6].into_iter().flat_map(|r| forward(r, true)).collect();
        for (i, (&got, (&a, &b))) in
            flipped.data.iter().zip(expected.iter().zip(&mirrored)).enumerate()
        {
            assert!(
                (got - (a + b)).abs() <= 1e-5 * (a + b).abs().max(1.0),
                "value {i}: {got} vs {}",
                a + b
            );
        }
        assert!(plain.data.iter().zip(&flipped.data).any(|(p, f)| (p - f).abs() > 1e-3));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
