//! Real faces through every loader: the AT&T/ORL database (40 people x 10 greyscale 92x112
//! PGM images), fetched by `scripts/fetch_orl.sh` into `$GROUPFACE_ORL` (default
//! `~/.cache/groupface-data/orl`). Ignored by a plain `cargo test` because the images are not
//! in the repository; CI fetches them and runs `cargo test --release --test integration orl:: -- --ignored`.

use std::path::PathBuf;

use burn::backend::ndarray::NdArrayDevice;
use burn::backend::NdArray;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use groupface::data::dataset::{FaceBatch, FaceBatcher, FaceItem, FolderDataset, RecordDataset};
use groupface::data::recordio::pack_folder;
use groupface::data::verification_bin::VerificationSet;

fn orl_dir() -> PathBuf {
    std::env::var_os("GROUPFACE_ORL").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/groupface-data/orl")
    })
}

#[test]
#[ignore = "needs the ORL faces: run scripts/fetch_orl.sh, then this test with --ignored"]
fn orl_faces_through_every_loader() {
    let root = orl_dir();
    assert!(
        root.join("s1/1.pgm").exists(),
        "no ORL faces in {}: run scripts/fetch_orl.sh",
        root.display()
    );

    // Folder: 40 identities x 10 images, greyscale 92x112 turned into 32x32 RGB.
    let folder = FolderDataset::open(&root, 32).unwrap();
    assert_eq!((folder.len(), folder.folder().num_classes()), (400, 40));
    let item: FaceItem = folder.get(0).unwrap();
    assert_eq!((item.side, item.pixels.len()), (32, 32 * 32 * 3));
    // Greyscale: the three channels are equal.
    assert!(item.pixels.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
    assert!(folder.folder().take_resize_notice().is_some(), "resizing must be reported once");
    assert!(folder.folder().take_resize_notice().is_none());
    folder.errors().check().unwrap();

    // RecordIO: pack, read back, same labels in the same order.
    let dir = std::env::temp_dir().join(format!("groupface-orl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rec = dir.join("orl.rec");
    let stats = pack_folder(&root, &rec).unwrap();
    assert_eq!((stats.images, stats.identities), (400, 40));
    let records = RecordDataset::open(&rec, 32).unwrap();
    assert_eq!(records.len(), 400);
    for i in (0..400).step_by(37) {
        let (a, b) = (folder.get(i).unwrap(), records.get(i).unwrap());
        assert_eq!(a.label, b.label, "label of image {i}");
        // PGM is re-encoded as JPEG (quality 95): pixels agree to JPEG error.
        let mean_diff: f64 =
            a.pixels.iter().zip(&b.pixels).map(|(x, y)| (*x as f64 - *y as f64).abs()).sum::<f64>()
                / a.pixels.len() as f64;
        assert!(mean_diff < 4.0, "image {i}: mean pixel difference {mean_diff}");
    }
    records.errors().check().unwrap();

    // .bin: the first two images of each person as a positive pair, person p with p+1 as a
    // negative pair; written, read back and decoded.
    let f = folder.folder();
    let mut images = Vec::new();
    let mut issame = Vec::new();
    for p in 0..40 {
        let same = [p * 10, p * 10 + 1];
        let other = [p * 10 + 2, ((p + 1) % 40) * 10 + 2];
        for (pair, label) in [(same, true), (other, false)] {
            for i in pair {
                images.push(std::fs::read(f.path(i).unwrap()).unwrap());
            }
            issame.push(label);
        }
    }
    let bin = dir.join("orl.bin");
    VerificationSet::new(images, issame.clone()).unwrap().write(&bin).unwrap();
    let set = VerificationSet::read(&bin).unwrap();
    assert_eq!((set.len(), set.issame.clone()), (80, issame));
    let decoded = set.decode(5, Some(32)).unwrap();
    assert_eq!(decoded.dimensions(), (32, 32));

    // Batcher: normalised to [-1, 1], shapes and labels.
    let items: Vec<FaceItem> = (0..8).map(|i| folder.get(i * 10).unwrap()).collect();
    let batch: FaceBatch<NdArray<f32>> =
        FaceBatcher::new(true, 0).batch(items, &NdArrayDevice::Cpu);
    assert_eq!(batch.images.dims(), [8, 3, 32, 32]);
    let values: Vec<f32> = batch.images.into_data().iter::<f32>().collect();
    assert!(values.iter().all(|v| (-1.0..=1.0).contains(v)));
    let labels: Vec<i64> = batch.labels.into_data().iter::<i64>().collect();
    assert_eq!(labels, (0..8).collect::<Vec<i64>>());
    std::fs::remove_dir_all(&dir).ok();
}
