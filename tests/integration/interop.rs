//! Weights from PyTorch: the fixtures of `scripts/make_interop_fixture.py` (insightface's
//! IResNet and the SPEC section 1 GroupFace head, built in PyTorch with random weights and real
//! BatchNorm statistics) must give the same outputs here within 1e-4, and what we export must
//! load back. Regenerate the fixtures with `python3 scripts/make_interop_fixture.py`; check an
//! export against PyTorch with `python3 scripts/make_interop_fixture.py --check-export F`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::prelude::*;
use burn_store::{ModuleStore, SafetensorsStore};
use groupface::backend::conv::ConvBackend;
use groupface::model::backbone::IResNetConfig;
use groupface::model::interop::{export_safetensors, load_into, Layout};
use groupface::model::{argmax_rows, Combine, GroupFace, GroupFaceConfig, GroupMode};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/interop").join(name)
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("groupface-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// `io.safetensors`: images and reference outputs, as f32 values with shapes.
fn io() -> BTreeMap<String, (Vec<usize>, TensorData)> {
    let mut store = SafetensorsStore::from_file(fixture("io.safetensors"));
    store
        .get_all_snapshots()
        .unwrap()
        .iter()
        .map(|(k, s)| (k.clone(), (s.shape.to_vec(), s.to_data().unwrap())))
        .collect()
}

/// The fixture's backbone (manifest.json `iresnet_config`).
fn backbone() -> IResNetConfig {
    IResNetConfig::new(vec![2, 1, 1, 1], vec![8, 16, 16, 32])
        .with_stem_width(8)
        .with_input_side(32)
        .with_output_width(32)
        .with_dropout(0.0)
}

fn baseline_config() -> GroupFaceConfig {
    GroupFaceConfig::new(backbone()).with_groups(0).with_embedding(32)
}

/// The fixture's GroupFace (manifest.json `groupface_config`).
fn groupface_config(mode: GroupMode, combine: Combine) -> GroupFaceConfig {
    GroupFaceConfig::new(backbone())
        .with_groups(4)
        .with_mode(mode)
        .with_combine(combine)
        .with_embedding(16)
        .with_shared(64)
        .with_gdn_hidden(16)
        .with_gdn_feature(8)
}

fn floats(data: &TensorData) -> Vec<f32> {
    data.clone().convert::<f32>().to_vec::<f32>().unwrap()
}

/// Max |ours − reference| against the tolerance 1e-4 · max(1, max |reference|); prints it.
fn check<Bk: Backend>(
    name: &str,
    ours: Tensor<Bk, 2>,
    io: &BTreeMap<String, (Vec<usize>, TensorData)>,
) -> f32 {
    let (shape, reference) = &io[name];
    assert_eq!(ours.dims().to_vec(), *shape, "{name}: shape");
    let ours = floats(&ours.into_data());
    let reference = floats(reference);
    let diff = ours.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let scale = reference.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    println!("{name:28} max abs diff {diff:.3e} (max |ref| {scale:.3})");
    assert!(diff <= 1e-4 * scale, "{name}: max abs diff {diff} > 1e-4 x {scale}");
    diff
}

fn images<Bk: Backend>(
    io: &BTreeMap<String, (Vec<usize>, TensorData)>,
    device: &Bk::Device,
) -> Tensor<Bk, 4> {
    Tensor::from_data(io["images"].1.clone().convert::<f32>(), device)
}

fn insightface_parity<Bk: ConvBackend>(device: &Bk::Device) {
    let io = io();
    for file in ["iresnet.pt", "iresnet.safetensors"] {
        let config = baseline_config();
        let (model, report) =
            load_into(config.init::<Bk>(device), &config, &fixture(file)).unwrap();
        assert_eq!(report.layout, Layout::Insightface);
        assert!(report.fresh.is_empty(), "{:?}", report.fresh);
        // 4 stem/neck BNs x 4 + ... : every tensor of the file but num_batches_tracked.
        assert_eq!(report.loaded, 111, "{}", report.describe());
        let out = model.forward(images::<Bk>(&io, device));
        check("iresnet.embedding", out.embedding, &io);
    }
}

#[test]
fn insightface_iresnet_reproduces_pytorch() {
    insightface_parity::<burn::backend::Flex<f32>>(&burn::backend::flex::FlexDevice);
    insightface_parity::<burn::backend::NdArray<f32>>(&burn::backend::ndarray::NdArrayDevice::Cpu);
}

fn groupface_parity<Bk: ConvBackend>(device: &Bk::Device) {
    let io = io();
    for file in ["groupface.pt", "groupface.safetensors"] {
        for (prefix, mode, combine) in [
            ("soft", GroupMode::Soft, Combine::Sum),
            ("hard", GroupMode::Hard, Combine::Sum),
            ("soft_concat", GroupMode::Soft, Combine::Concat),
        ] {
            let config = groupface_config(mode, combine);
            let (model, report) =
                load_into(config.init::<Bk>(device), &config, &fixture(file)).unwrap();
            assert_eq!(report.layout, Layout::GroupFace);
            assert!(report.fresh.is_empty(), "{:?}", report.fresh);
            let out = model.forward(images::<Bk>(&io, device));
            let groups = out.groups.expect("a GroupFace output");
            check(&format!("{prefix}.instance"), out.instance, &io);
            check(&format!("{prefix}.logits"), groups.logits, &io);
            check(&format!("{prefix}.probs"), groups.probs.clone(), &io);
            check(&format!("{prefix}.feature"), groups.feature, &io);
            check(&format!("{prefix}.aggregate"), groups.aggregate, &io);
            check(&format!("{prefix}.embedding"), out.embedding, &io);
            if mode == GroupMode::Hard {
                let selected: Vec<usize> = io["hard.selected"]
                    .1
                    .clone()
                    .convert::<i64>()
                    .to_vec::<i64>()
                    .unwrap()
                    .into_iter()
                    .map(|v| v as usize)
                    .collect();
                assert_eq!(argmax_rows(groups.probs), selected, "hard.selected");
                let distinct: std::collections::BTreeSet<_> = selected.iter().collect();
                assert!(distinct.len() > 1, "the fixture spreads images over groups");
            }
            if prefix == "soft" {
                let all = groups.representations.expect("soft mode keeps every v_x^G");
                let [n, k, d] = all.dims();
                let (shape, reference) = &io["soft.representations"];
                assert_eq!(vec![n, k, d], *shape);
                let ours = floats(&all.into_data());
                let diff = ours
                    .iter()
                    .zip(floats(reference))
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                println!("soft.representations         max abs diff {diff:.3e}");
                assert!(diff <= 1e-4, "soft.representations: {diff}");
            }
        }
    }
}

#[test]
fn groupface_head_reproduces_pytorch_in_every_mode() {
    groupface_parity::<burn::backend::Flex<f32>>(&burn::backend::flex::FlexDevice);
    groupface_parity::<burn::backend::NdArray<f32>>(&burn::backend::ndarray::NdArrayDevice::Cpu);
}

type Cpu = burn::backend::Flex<f32>;
const CPU: burn::backend::flex::FlexDevice = burn::backend::flex::FlexDevice;

#[test]
fn insightface_trunk_fills_a_groupface_model_and_the_heads_start_fresh() {
    let io = io();
    // The paper's recipe: a softmax-pretrained trunk, a fresh head. Our shared width (64)
    // differs from the checkpoint's 32-d fc, so fc and features start fresh too.
    // ANCHOR: load
    let config = groupface_config(GroupMode::Soft, Combine::Sum);
    let (model, report) =
        load_into(config.init::<Cpu>(&CPU), &config, &fixture("iresnet.pt")).unwrap();
    // ANCHOR_END: load
    assert_eq!(report.layout, Layout::Insightface);
    assert!(report.fresh.iter().any(|k| k == "backbone.fc.weight"), "{:?}", report.fresh);
    assert!(report.fresh.iter().any(|k| k.starts_with("head.gdn.")));
    assert!(report.describe().contains("fresh: fc, features, head"), "{}", report.describe());
    // The trunk is the checkpoint's: the feature map before fc equals the baseline's.
    let baseline = baseline_config();
    let (reference, _) =
        load_into(baseline.init::<Cpu>(&CPU), &baseline, &fixture("iresnet.pt")).unwrap();
    let trunk = |m: &GroupFace<Cpu>| {
        let b = &m.backbone;
        let mut x = b.stem_act.forward(b.stem_bn.forward(b.stem.forward(images::<Cpu>(&io, &CPU))));
        for block in &b.blocks {
            x = block.forward(x);
        }
        floats(&b.out_bn.forward(x).into_data())
    };
    assert_eq!(trunk(&model), trunk(&reference));
}

#[test]
fn export_round_trips_with_pytorch_keys() {
    let io = io();
    for (file, config) in [
        ("iresnet.safetensors", baseline_config()),
        ("groupface.safetensors", groupface_config(GroupMode::Soft, Combine::Sum)),
    ] {
        let (model, _) = load_into(config.init::<Cpu>(&CPU), &config, &fixture(file)).unwrap();
        let out = temp(&format!("export-{file}"));
        let written = export_safetensors(&model, &config, &out).unwrap();
        // Kept for `make_interop_fixture.py --check-export`, which reads it back in PyTorch.
        println!("wrote {} ({written} tensors)", out.display());
        // Same keys as PyTorch's state dict, less num_batches_tracked.
        let mut theirs = SafetensorsStore::from_file(fixture(file));
        let mut ours = SafetensorsStore::from_file(&out);
        let their_keys: Vec<String> = theirs
            .keys()
            .unwrap()
            .into_iter()
            .filter(|k| !k.ends_with("num_batches_tracked"))
            .collect();
        let mut our_keys = ours.keys().unwrap();
        our_keys.sort();
        let mut sorted = their_keys.clone();
        sorted.sort();
        assert_eq!(our_keys, sorted, "{file}");
        assert_eq!(written, our_keys.len());
        // Bit-identical tensors, in PyTorch's layouts.
        for key in &their_keys {
            let a = theirs.get_snapshot(key).unwrap().unwrap().to_data().unwrap();
            let b = ours.get_snapshot(key).unwrap().unwrap().to_data().unwrap();
            assert_eq!(a.shape, b.shape, "{key}");
            assert_eq!(floats(&a), floats(&b), "{key}");
        }
        // The file is a function of the weights alone: safetensors orders its metadata by a
        // HashMap, different in each map, so without sorting two exports of 2 metadata keys
        // would match with probability 1/2 each; eight in a row, 1/128.
        let bytes = std::fs::read(&out).unwrap();
        for k in 0..8 {
            let again = temp(&format!("export-{k}-{file}"));
            export_safetensors(&model, &config, &again).unwrap();
            assert!(std::fs::read(&again).unwrap() == bytes, "export {k} of {file} differs");
            std::fs::remove_file(&again).unwrap();
        }
        // And it loads back to the same outputs.
        let (again, _) = load_into(config.init::<Cpu>(&CPU), &config, &out).unwrap();
        let x = images::<Cpu>(&io, &CPU);
        assert_eq!(
            floats(&model.forward(x.clone()).embedding.into_data()),
            floats(&again.forward(x).embedding.into_data())
        );
    }
}

#[test]
fn checkpoints_that_do_not_fit_are_refused_with_their_keys() {
    // Another architecture: r18-like depth against the fixture's [2, 1, 1, 1].
    let deeper = GroupFaceConfig::new(IResNetConfig { blocks: vec![2, 2, 1, 1], ..backbone() })
        .with_groups(0)
        .with_embedding(32);
    let err = load_into(deeper.init::<Cpu>(&CPU), &deeper, &fixture("iresnet.pt"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("iresnet.pt"), "{err}");
    assert!(
        err.contains("missing from the file") && err.contains("layer2.1.conv1.weight"),
        "{err}"
    );

    // Wrong widths: every mis-shaped key is listed with both shapes.
    let wider = GroupFaceConfig::new(IResNetConfig { widths: vec![8, 16, 32, 32], ..backbone() })
        .with_groups(0)
        .with_embedding(32);
    let err = load_into(wider.init::<Cpu>(&CPU), &wider, &fixture("iresnet.safetensors"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("layer3.0.conv1.weight: file [16, 16, 3, 3], model [32, 16, 3, 3]"),
        "{err}"
    );

    // A GroupFace checkpoint whose head has another K.
    let k8 = groupface_config(GroupMode::Soft, Combine::Sum).with_groups(8);
    let err =
        load_into(k8.init::<Cpu>(&CPU), &k8, &fixture("groupface.pt")).err().unwrap().to_string();
    assert!(err.contains("head.gdn.classifier.weight: file [4, 8], model [8, 8]"), "{err}");

    // Missing and extra keys: rewrite the fixture without one tensor and with a stray one.
    let mut store = SafetensorsStore::from_file(fixture("iresnet.safetensors"));
    let all = store.get_all_snapshots().unwrap().clone();
    let mut views = Vec::new();
    let mut data = Vec::new();
    for (key, s) in &all {
        if key == "layer1.0.bn1.running_var" {
            continue;
        }
        let values = floats(&s.to_data().unwrap());
        data.push((key.clone(), s.shape.to_vec(), values));
    }
    data.push(("layer9.0.conv1.weight".to_string(), vec![2], vec![1.0, 2.0]));
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = data
        .iter()
        .map(|(k, shape, v)| {
            (k.clone(), shape.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect())
        })
        .collect();
    for (k, shape, b) in &bytes {
        views.push((
            k.clone(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .unwrap(),
        ));
    }
    let broken = temp("broken.safetensors");
    std::fs::write(&broken, safetensors::serialize(views, None).unwrap()).unwrap();
    let config = baseline_config();
    let err = load_into(config.init::<Cpu>(&CPU), &config, &broken).err().unwrap().to_string();
    assert!(err.contains("1 missing, 1 unexpected, 0 wrong shape"), "{err}");
    assert!(err.contains("backbone.layer1.0.bn1.running_var [8]"), "{err}");
    assert!(err.contains("backbone.layer9.0.conv1.weight [2]"), "{err}");

    // Not a checkpoint at all, and an unknown extension.
    let junk = temp("junk.pt");
    std::fs::write(&junk, b"not a pickle").unwrap();
    let config = baseline_config();
    let err = load_into(config.init::<Cpu>(&CPU), &config, &junk).err().unwrap().to_string();
    assert!(err.contains("junk.pt") && err.contains("not a PyTorch state dict"), "{err}");
    let err = load_into(config.init::<Cpu>(&CPU), &config, &temp("weights.onnx"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("weights.onnx"), "{err}");
}
