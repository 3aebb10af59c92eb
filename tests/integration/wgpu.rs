//! The same forward pass on wgpu and ndarray, from the same weights, agrees within 1e-4.
//!
//! Runs on any wgpu adapter; CI uses Mesa's software Vulkan device (lavapipe, Debian's
//! `mesa-vulkan-drivers`). Built only with both `wgpu` and `ndarray`; ignored by a plain
//! `cargo test` because a machine without any wgpu adapter cannot run it.
#![cfg(all(feature = "wgpu", feature = "ndarray"))]

use crate::common;

use burn::backend::ndarray::NdArrayDevice;
use burn::backend::wgpu::WgpuDevice;
use burn::backend::{NdArray, Wgpu};
use burn::module::Module;
use burn::prelude::*;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use common::*;
use groupface::model::{Combine, GroupFace, GroupFaceConfig, GroupMode};

fn compare(config: GroupFaceConfig) {
    let cpu = NdArrayDevice::Cpu;
    let gpu = WgpuDevice::DefaultDevice;
    // Parameters are initialised lazily: a clone taken before first use would draw its own
    // random weights. So both models load the same serialised record.
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let source: GroupFace<NdArray<f32>> = config.init(&cpu);
    let bytes = recorder.record(source.into_record(), ()).unwrap();
    let reference: GroupFace<NdArray<f32>> =
        config.init(&cpu).load_record(recorder.load(bytes.clone(), &cpu).unwrap());
    let moved: GroupFace<Wgpu<f32, i32>> =
        config.init(&gpu).load_record(recorder.load(bytes, &gpu).unwrap());

    let x_cpu = images::<NdArray<f32>>(4, config.backbone.input_side, &cpu);
    let x_gpu = Tensor::<Wgpu<f32, i32>, 4>::from_data(x_cpu.to_data(), &gpu);
    let a = reference.forward(x_cpu);
    let b = moved.forward(x_gpu);
    let name = format!("groups={} mode={} combine={}", config.groups, config.mode, config.combine);
    assert_close(&values(b.embedding), &values(a.embedding), 1e-4, &format!("{name} v̄"));
    if let (Some(ga), Some(gb)) = (a.groups, b.groups) {
        assert_close(&values(gb.probs), &values(ga.probs), 1e-4, &format!("{name} p"));
        assert_close(&values(gb.feature), &values(ga.feature), 1e-4, &format!("{name} v̂"));
    }
}

#[test]
#[ignore = "needs a wgpu adapter: `cargo test --release --test integration wgpu:: -- --ignored` (CI runs it on lavapipe)"]
fn wgpu_forward_matches_ndarray() {
    compare(GroupFaceConfig::tiny(0));
    compare(GroupFaceConfig::tiny(4));
    compare(GroupFaceConfig::tiny(4).with_mode(GroupMode::Hard).with_combine(Combine::Concat));
}

/// A GPU backend that cannot start is an error that says what to check, with exit status 1 (a
/// failed run, not a usage error), not a panic (CubeCL panics in its server thread;
/// `backend::run` probes the device first).
/// The Vulkan loader is pointed at a driver file that does not exist, so wgpu finds no
/// adapter on any machine; this needs none and is not ignored.
#[test]
fn a_wgpu_backend_that_cannot_start_is_an_error() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["backbone=tiny", "batch=2", "steps=1", "warmup=0", "backend=wgpu"])
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .env("WGPU_BACKEND", "vulkan")
        .output()
        .expect("bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("error: backend `wgpu` could not start")
            && stderr.contains("check that wgpu sees an adapter"),
        "stderr: {stderr}"
    );
}
