//! The whole pipeline at toy scale on the CPU: the Learner trains, the run directory holds
//! what it promises, evaluation of the saved model reproduces the run's report, and the
//! ablation runner skips finished runs.

use crate::common;

use common::{backend, quiet_run, small_eval, temp_dir, tiny_config};
use groupface::app::ablation::{parse_groups, run_grid, write_outputs, Grid, Preset, Recipe};
use groupface::app::jobs::{evaluate_run, EmbedJob, EvalData, EvalJob};
use groupface::evaluate::similarity::SimilarityKind;
use groupface::model::{Combine, GroupMode};
use groupface::objective::labels::{LabelMethod, LabelSpace};
use groupface::train::run::train;

/// An evaluation at batch 16 with insightface's 10 folds and no pictures.
fn eval_job(
    run: std::path::PathBuf,
    checkpoint: Option<groupface::model::GroupFaceConfig>,
    data: EvalData,
) -> EvalJob {
    EvalJob { run, checkpoint, data, mode: None, batch: 16, pictures: None, folds: 10 }
}

#[test]
fn train_writes_the_run_and_eval_reproduces_its_report() {
    let dir = temp_dir("pipeline-train");
    let run = quiet_run(tiny_config(4), dir.clone());
    let outcome = train(backend(), 0, run).expect("training runs");
    for file in [
        "config.json",
        "model.mpk",
        "model.safetensors",
        "report.json",
        "metrics.csv",
        "curves.svg",
        "group_shares.svg",
        "group_samples.png",
        "projection.svg",
    ] {
        assert!(dir.join(file).exists(), "{file} missing from the run directory");
    }
    let report = &outcome.report;
    assert_eq!((report.plain.positives, report.plain.negatives), (12, 54));
    assert!((0.0..=1.0).contains(&report.plain.verification.accuracy));
    let groups = report.groups.as_ref().expect("GroupFace reports its groups");
    assert_eq!(groups.shares.len(), 4);
    assert!((groups.shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    assert!(report.group_aware.is_some());

    // metrics.csv: a header, then 2 epochs x (train, valid).
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 5, "{csv}");
    assert!(lines[0].starts_with("epoch,split,loss,accuracy"));
    // Linear warm-up over half an epoch, then decay: the epoch means of the rate are finite
    // and positive, and the second epoch's is lower.
    let lr_column = lines[0].split(',').position(|c| c == "learning_rate").unwrap();
    let lr = |line: &str| line.split(',').nth(lr_column).unwrap().parse::<f64>().unwrap();
    assert!(lr(lines[2]) < lr(lines[1]) && lr(lines[2]) > 0.0, "{csv}");

    // The saved model, evaluated again, gives the same report.
    let job = eval_job(dir.clone(), None, EvalData::Synthetic);
    let again = evaluate_run(backend(), 0, job).expect("evaluation runs");
    assert_eq!(again.plain.verification.accuracy, report.plain.verification.accuracy);
    assert_eq!(again.plain.tar_at_far, report.plain.tar_at_far);

    // Rank-1 identification on the held-out identities: 8 probes (4 ids x 2 non-gallery
    // images), 200 distractors by default, so the curve ends at 200.
    let curve = &report.plain.rank1_curve;
    assert_eq!(curve.last().map(|p| p.distractors), Some(200));
    assert!(report.plain.rank1.is_some_and(|r| (0.0..=1.0).contains(&r)));

    // IJB-C 1:1 on a small IJB-shaped tree: 3 subjects x 2 templates, every template pair
    // listed: C(6, 2) = 15 pairs, 3 genuine.
    use groupface::protocol::ijb::{write_fake_ijb, FakeIjbSpec, Ijb};
    let ijb = dir.join("ijb");
    write_fake_ijb(&ijb, &FakeIjbSpec::uniform(Ijb::C, 3, 2, 2, 2)).unwrap();
    let mut job = eval_job(dir.clone(), None, EvalData::Ijb { root: ijb.clone(), which: Ijb::C });
    let scores_dir = dir.join("ijb-out");
    job.pictures = Some(scores_dir.clone());
    let ijb_report = evaluate_run(backend(), 0, job).expect("IJB evaluation runs");
    assert_eq!((ijb_report.plain.positives, ijb_report.plain.negatives), (3, 12));
    assert!(ijb_report.group_aware.is_some());
    // XNorm, the mean norm of the embeddings before normalisation, in every report made
    // from images (the held-out one included); the same images give the same figure.
    let xnorm = ijb_report.plain.xnorm.expect("XNorm of the IJB images");
    assert!(xnorm.is_finite() && xnorm > 0.0, "{xnorm}");
    assert_eq!(ijb_report.group_aware.as_ref().unwrap().xnorm, Some(xnorm));
    assert!(report.plain.xnorm.is_some_and(|x| x > 0.0), "{:?}", report.plain.xnorm);
    // The template-pair scores as insightface's eval_ijbc.py saves them (`ijbc.npy`, float32,
    // in the pair file's order), and the group-aware ones beside them; each report names its
    // file.
    for (name, report) in [
        ("ijbc", &ijb_report.plain),
        ("ijbc_group_aware", ijb_report.group_aware.as_ref().unwrap()),
    ] {
        let path = scores_dir.join(format!("{name}.npy"));
        let scores = groupface::protocol::npy::read(&path).unwrap().into_vec_f32().unwrap();
        assert_eq!(scores.len(), 15, "{name}");
        // Cosines; the group-aware score adds its group term, which has no fixed range.
        let top = if name == "ijbc" { 1.0 + 1e-6 } else { f32::INFINITY };
        assert!(scores.iter().all(|s| s.is_finite() && *s <= top), "{name}: {scores:?}");
        assert_eq!(report.settings["score_file"], path.display().to_string());
    }
    // The run's PyTorch export, evaluated as a checkpoint, gives the same scores.
    let job = eval_job(
        dir.join("model.safetensors"),
        Some(tiny_config(4).model),
        EvalData::Ijb { root: ijb.clone(), which: Ijb::C },
    );
    let from_export = evaluate_run(backend(), 0, job).expect("the export evaluates");
    assert_eq!(from_export.plain.roc, ijb_report.plain.roc);
    // A checkpoint has no held-out identities of its own.
    let job =
        eval_job(dir.join("model.safetensors"), Some(tiny_config(4).model), EvalData::Synthetic);
    let err = evaluate_run(backend(), 0, job).unwrap_err();
    assert!(err.contains("not a run"), "{err}");
    // `embed` on an image folder (3 identities x 3 synthetic faces, written as PNG) writes
    // what `eval embeddings= labels=` reads, and scores exactly as `eval data=FOLDER`.
    let folder = dir.join("faces");
    let faces = groupface::data::synth::SynthFaces::new(tiny_config(4).data).unwrap();
    for id in 0..3 {
        std::fs::create_dir_all(folder.join(format!("id{id}"))).unwrap();
        for k in 0..3 {
            faces.image(20 + id, k).save(folder.join(format!("id{id}/{k}.png"))).unwrap();
        }
    }
    let out = dir.join("embedded");
    let job = EmbedJob {
        run: dir.clone(),
        checkpoint: None,
        folder: folder.clone(),
        out: out.clone(),
        batch: 4,
        mode: None,
        flip: true,
    };
    let summary = groupface::backend::run(backend(), 0, job).unwrap().expect("embed runs");
    assert_eq!((summary.images, summary.width), (9, tiny_config(4).model.output_width()));
    let embeddings = groupface::protocol::npy::read_matrix(out.join("embeddings.npy")).unwrap();
    let features = groupface::protocol::npy::read_matrix(out.join("features.npy")).unwrap();
    assert_eq!((embeddings.rows, features.rows), (9, 9));
    let labels = groupface::protocol::pairs::read_labels(out.join("labels.txt"), 9).unwrap();
    let paths = std::fs::read_to_string(out.join("paths.txt")).unwrap();
    assert_eq!(paths.lines().count(), 9);
    assert!(paths.lines().nth(3).unwrap().ends_with("id1/0.png\t1"), "{paths}");
    let list = groupface::protocol::pairs::all_pairs(&labels);
    let from_files = groupface::evaluate::pairs::pairs_report(
        &groupface::evaluate::embed::Embeddings {
            embedding: embeddings,
            feature: None,
            probs: None,
            norms: Vec::new(),
        },
        &list,
        None,
        10,
        Default::default(),
    )
    .unwrap();
    let job = eval_job(dir.clone(), None, EvalData::Folder { root: folder.clone(), pairs: None });
    let from_model = evaluate_run(backend(), 0, job).expect("folder evaluation runs");
    assert_eq!((from_files.positives, from_files.negatives), (9, 27));
    assert_eq!(from_files.verification, from_model.plain.verification);
    assert_eq!(from_files.roc, from_model.plain.roc);
    // The report names the model it measured.
    assert_eq!(from_model.plain.settings["model"], dir.display().to_string());
    // folds=: 36 pairs in 4 folds of 9; data=synthetic keeps the run's 10 folds.
    let job = EvalJob {
        folds: 4,
        ..eval_job(dir.clone(), None, EvalData::Folder { root: folder.clone(), pairs: None })
    };
    let four = evaluate_run(backend(), 0, job).expect("4-fold evaluation runs");
    assert_eq!(four.plain.verification.fold_accuracies.len(), 4);
    let job = EvalJob { folds: 4, ..eval_job(dir.clone(), None, EvalData::Synthetic) };
    let err = evaluate_run(backend(), 0, job).unwrap_err();
    assert!(err.contains("folds=4") && err.contains("data=synthetic"), "{err}");

    // A missing meta file names the file.
    std::fs::remove_dir_all(ijb.join("meta")).unwrap();
    let job = eval_job(dir.clone(), None, EvalData::Ijb { root: ijb.clone(), which: Ijb::C });
    let err = evaluate_run(backend(), 0, job).unwrap_err();
    assert!(err.contains("ijbc_"), "{err}");

    // A model directory without a model is a clear error.
    std::fs::remove_file(dir.join("model.mpk")).unwrap();
    let job = eval_job(dir.clone(), None, EvalData::Synthetic);
    let err = evaluate_run(backend(), 0, job).unwrap_err();
    assert!(err.contains("model.mpk"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn concurrent_runs_of_one_seed_agree() {
    // Two runs at once share the backend's global generator; each must still draw its weights
    // from its own seed alone, or an ablation's parallel jobs would not be reproducible.
    let dir = temp_dir("pipeline-concurrent");
    let outcomes: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let out = dir.join(format!("run{i}"));
                scope.spawn(move || train(backend(), 0, quiet_run(tiny_config(4), out)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    assert_eq!(outcomes[0].report, outcomes[1].report);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_stage_recipe_starts_from_the_baseline_trunk() {
    let dir = temp_dir("pipeline-init");
    let baseline = dir.join("baseline");
    train(backend(), 0, quiet_run(tiny_config(0), baseline.clone())).expect("baseline trains");
    let config = tiny_config(4).with_init(Some(baseline.display().to_string())).with_epochs(1);
    let outcome = train(backend(), 0, quiet_run(config, dir.join("gf")))
        .expect("GroupFace trains from the baseline");
    assert!(outcome.report.groups.is_some());

    // Its trunk at step 0 is the baseline's: the same run at a rate too small to move a weight
    // (a step changes one by about 1e-12 times its gradient, far under the 1e-6 allowed) ends
    // with the baseline's trunk tensors. Without the copy they would be the seed's fresh
    // weights, which the baseline's 2 epochs at lr 0.1 moved far from. The FC and its
    // BatchNorm (`fc.`, `features.`) are not copied, their widths differing (64 for the
    // baseline's embedding, 256 for GroupFace's shared layer), and running statistics follow
    // every batch of training.
    let step0 = dir.join("gf-step0");
    let config = tiny_config(4)
        .with_init(Some(baseline.display().to_string()))
        .with_epochs(1)
        .with_lr(1e-12);
    train(backend(), 0, quiet_run(config, step0.clone())).expect("GroupFace at lr 1e-12");
    let tuned: std::collections::HashMap<String, Vec<f32>> =
        common::run_tensors(&step0).into_iter().collect();
    let mut compared = 0;
    for (key, source) in common::run_tensors(&baseline) {
        if key.starts_with("fc.") || key.starts_with("features.") || key.contains("running_") {
            continue;
        }
        // The baseline is written with insightface's keys, GroupFace under `backbone.`.
        let copied = tuned
            .get(&format!("backbone.{key}"))
            .unwrap_or_else(|| panic!("the fine-tuned run has no backbone.{key}"));
        assert_eq!(copied.len(), source.len(), "{key}");
        let gap = source.iter().zip(copied).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(gap <= 1e-6, "backbone.{key} is not the baseline's {key}: largest gap {gap}");
        compared += 1;
    }
    // Stem (conv, BatchNorm, PReLU: 4 tensors), 4 blocks of at least 9, the output BatchNorm.
    assert!(compared >= 4 + 4 * 9 + 2, "only {compared} trunk tensors compared");

    // A backbone of another shape is refused, naming both.
    let mut config = tiny_config(4).with_init(Some(baseline.display().to_string()));
    config.model.backbone.blocks = vec![2, 1, 1, 1];
    let err = train(backend(), 0, quiet_run(config, dir.join("bad"))).unwrap_err();
    assert!(err.contains("blocks [1, 1, 1, 1]") && err.contains("blocks [2, 1, 1, 1]"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ablation_grid_expands_and_skips_finished_runs() {
    assert_eq!(parse_groups("4..32").unwrap(), vec![4, 8, 16, 32]);
    assert_eq!(parse_groups("0,4,32").unwrap(), vec![0, 4, 32]);
    assert!(parse_groups("3..32").is_err());
    assert!(parse_groups("x").is_err());

    let grid = Grid {
        preset: Preset::Tiny,
        backbones: vec!["tiny".into()],
        groups: vec![2],
        modes: vec![GroupMode::Soft],
        combines: vec![Combine::Sum],
        labels: vec![LabelMethod::SelfDistributed],
        label_spaces: vec![LabelSpace::Zlog],
        recipe: Recipe::Scratch,
        finetune_lr: Some(0.005),
        similarities: vec![SimilarityKind::Plain, SimilarityKind::GroupAware],
        seeds: 2,
        epochs: Some(1),
        label_window: None,
        identities: vec![8],
        images_per_identity: Some(5),
        eval: Some(small_eval()),
    };
    let runs = grid.runs();
    // The baseline is always run: 2 settings x 2 seeds.
    let ids: Vec<String> = runs.iter().map(|r| r.id()).collect();
    assert_eq!(
        ids,
        [
            "tiny-baseline-seed0",
            "tiny-baseline-seed1",
            "tiny-groups2-soft-sum-self-distributed-seed0",
            "tiny-groups2-soft-sum-self-distributed-seed1",
        ]
    );
    let out = temp_dir("pipeline-ablation");
    let results = run_grid(&grid, &out.join("runs"), backend(), 0, 2).expect("grid runs");
    assert_eq!(results.len(), 4);
    // The tables may go to a folder that does not exist yet, apart from the runs.
    let tables = out.join("tables");
    let summary = write_outputs(&grid, &results, &tables, "test").unwrap();
    for file in ["runs.csv", "summary.md", "roc.svg", "accuracy_vs_groups.svg"] {
        assert!(tables.join(file).exists(), "{file} missing");
    }
    // runs.csv: header + 2 baseline rows (plain only) + 2 GroupFace rows x 2 similarities.
    let csv = std::fs::read_to_string(tables.join("runs.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 + 4, "{csv}");
    // summary.md: one row per setting and similarity, the paper's baseline number beside ours.
    assert!(summary.contains("| 0.3828 |"), "{summary}");
    assert_eq!(summary.lines().filter(|l| l.starts_with("| tiny")).count(), 3, "{summary}");

    // A second call reads every run back instead of training it again.
    let mtime = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let before = mtime(&out.join("runs").join(&ids[0]).join("model.mpk"));
    let again = run_grid(&grid, &out.join("runs"), backend(), 0, 2).unwrap();
    assert_eq!(again.len(), 4);
    assert_eq!(before, mtime(&out.join("runs").join(&ids[0]).join("model.mpk")));
    assert_eq!(
        again[3].report.plain.verification.accuracy,
        results[3].report.plain.verification.accuracy
    );

    // The same grid under the paper's recipe, one seed: the pretraining run is the seed's
    // scratch baseline, already in the runs folder and read back, and both arms (the baseline
    // too) are fine-tuned from it at finetune_lr.
    let pretrained = Grid { recipe: Recipe::Pretrained, seeds: 1, ..grid.clone() };
    let pre: Vec<String> = pretrained.pretraining_runs().iter().map(|r| r.id()).collect();
    assert_eq!(pre, ["tiny-baseline-seed0"]);
    let ids: Vec<String> = pretrained.runs().iter().map(|r| r.id()).collect();
    assert_eq!(
        ids,
        [
            "tiny-baseline-pretrained-seed0",
            "tiny-groups2-soft-sum-self-distributed-pretrained-seed0"
        ]
    );
    let tuned = run_grid(&pretrained, &out.join("runs"), backend(), 0, 2).unwrap();
    assert_eq!(tuned.len(), 2);
    assert_eq!(before, mtime(&out.join("runs").join(&pre[0]).join("model.mpk")));
    for id in &ids {
        let config =
            groupface::train::config::read_config(&out.join("runs").join(id).join("config.json"))
                .unwrap();
        let init = out.join("runs").join(&pre[0]).display().to_string();
        assert_eq!((config.init.as_deref(), config.lr), (Some(init.as_str()), 0.005), "{id}");
    }
    // A grid-wide key changed under the same ids is another run, not the one on disk.
    let other = Grid { epochs: Some(2), ..grid.clone() };
    let err = run_grid(&other, &out.join("runs"), backend(), 0, 2).unwrap_err();
    assert!(err.contains("other settings") && err.contains("epochs"), "{err}");
    // The window is not in the run ids either (the runs above had TrainConfig's default, 8).
    let other = Grid { label_window: Some(3), ..grid.clone() };
    let err = run_grid(&other, &out.join("runs"), backend(), 0, 2).unwrap_err();
    assert!(err.contains("other settings") && err.contains("label_window"), "{err}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn data_sheet_writes_a_grid_of_synthetic_faces_and_checks_its_keys() {
    let dir = temp_dir("sheet");
    std::fs::create_dir_all(&dir).unwrap();
    let data = |args: &[String]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_data")).args(args).output().unwrap()
    };
    let out = dir.join("faces.png");
    let mut args = vec![
        "sheet".to_string(),
        format!("out={}", out.display()),
        "identities=3".into(),
        "images=4".into(),
        "side=16".into(),
    ];
    let ok = data(&args);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    // 4 columns and 3 rows of 16-pixel faces with 2-pixel white lines between and around:
    // 4 * 16 + 5 * 2 = 74 wide, 3 * 16 + 4 * 2 = 56 high.
    let sheet = image::open(&out).unwrap().to_rgb8();
    assert_eq!(sheet.dimensions(), (74, 56));
    assert_eq!(sheet.get_pixel(0, 0).0, [255, 255, 255], "the frame is white");

    args[1] = format!("out={}", dir.join("faces.jpg").display());
    let bad = data(&args);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("`out`") && stderr.contains(".png"),
        "{stderr}"
    );
    args[1] = format!("out={}", out.display());
    args[2] = "identities=0".into();
    let bad = data(&args);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && stderr.contains("`identities`"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `bench` (task=train) takes real training steps on the CPU and prints its figures as JSON:
/// the step the Learner takes, here under Partial FC (`sample_rate=0.5` of 10 classes: 5
/// centres, the batch's 4 among them). No figure is checked for speed, only that each is there
/// and sane.
#[cfg(feature = "flex")]
#[test]
fn bench_takes_training_steps_on_the_cpu() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bench"))
        .args([
            "backbone=tiny",
            "groups=4",
            "batch=4",
            "steps=2",
            "warmup=1",
            "classes=10",
            "sample_rate=0.5",
            "backend=flex",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let row: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!((row["classes"].as_u64(), row["sample_rate"].as_f64()), (Some(10), Some(0.5)));
    assert_eq!((row["batch"].as_u64(), row["steps"].as_u64()), (Some(4), Some(2)));
    for key in ["step_seconds", "images_per_second", "last_loss"] {
        let value = row[key].as_f64().unwrap_or(f64::NAN);
        assert!(value.is_finite() && value > 0.0, "{key}: {row}");
    }
}
