//! The training data loader: an epoch's order and flips are functions of `(seed, epoch)` alone.
//!
//! Burn's own loader draws each epoch's shuffle from a generator that advances with every
//! epoch (and forks when the loader is moved or split), so a run resumed at epoch `e` would
//! see the first epoch's order again. Here epoch `e` always sees the same order and the same
//! flips, whether the run started at epoch 1 or resumed at `e`, and whatever the number of
//! worker threads. That is what makes a resumed run end with the same weights.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::data::dataset::Dataset;
use burn::prelude::*;

use super::dataset::{to_chw, FaceBatch, FaceItem};
use super::rng::{hash3, SplitMix64};

/// Called once at the start of every epoch (1-based), before its first batch is made.
pub type EpochHook = Arc<dyn Fn(usize) + Send + Sync>;

/// Called with the epoch when a batch comes out short because the dataset could not produce
/// some of its items (a decode error, which the dataset records in its error log).
pub type MissingHook = Arc<dyn Fn(usize) + Send + Sync>;

/// A data loader over [`FaceItem`]s whose epoch `e` is a fixed permutation and flip pattern.
///
/// Epochs are numbered from 1, as Burn's Learner numbers them. Each call to
/// [`DataLoader::iter`] starts the next epoch. Slices (one per device in multi-device
/// training) are contiguous ranges of each epoch's order and count their epochs themselves,
/// so every slice sees the same permutation in the same epoch.
pub struct EpochLoader<B: Backend> {
    dataset: Arc<dyn Dataset<FaceItem>>,
    /// Positions of each epoch's order that this loader yields.
    positions: Range<usize>,
    batch: usize,
    shuffle: bool,
    flip: bool,
    seed: u64,
    workers: usize,
    device: B::Device,
    next_epoch: AtomicUsize,
    on_epoch: Option<EpochHook>,
    on_missing: Option<MissingHook>,
    /// Whether this loader calls `on_epoch`: the whole loader, a process's shard, and of the
    /// slices Burn cuts for its devices only the first, so the hook runs once per epoch.
    calls_hook: bool,
}

impl<B: Backend> EpochLoader<B> {
    /// A loader over the whole dataset whose next epoch is `first_epoch` (1 for a new run,
    /// `e + 1` for a run resumed from the checkpoint of epoch `e`).
    ///
    /// `shuffle` and `flip` are for training; validation uses neither. `workers` threads
    /// decode batches ahead (0 or 1: decode on the calling thread).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dataset: Arc<dyn Dataset<FaceItem>>,
        batch: usize,
        shuffle: bool,
        flip: bool,
        seed: u64,
        workers: usize,
        first_epoch: usize,
        device: B::Device,
    ) -> Self {
        let len = dataset.len();
        Self {
            dataset,
            positions: 0..len,
            batch: batch.max(1),
            shuffle,
            flip,
            seed,
            workers,
            device,
            next_epoch: AtomicUsize::new(first_epoch.max(1)),
            on_epoch: None,
            on_missing: None,
            calls_hook: true,
        }
    }

    /// This process's shard of a run of `nodes` processes (rank `rank`): positions
    /// `[rank·n/nodes, (rank+1)·n/nodes)` of each epoch's order of `n` items, as Burn splits an
    /// epoch among its devices. The last `n mod nodes` positions are left out, so every
    /// process takes the same number of steps (a step is an all-reduce that all must join).
    pub fn shard(mut self, rank: usize, nodes: usize) -> Self {
        let nodes = nodes.max(1);
        let per = self.positions.len() / nodes;
        let start = self.positions.start + rank.min(nodes - 1) * per;
        self.positions = start..start + per;
        self
    }

    /// Keeps the first `len` positions of this loader's (or shard's) part of each epoch's
    /// order. Burn's `devices=N` slices are equally long when `len` is a multiple of `N`, so
    /// every optimiser step then has a batch on every replica: a slice longer than the others
    /// would end the epoch with a step of its replica alone.
    pub fn take(mut self, len: usize) -> Self {
        let end = self.positions.start + len.min(self.positions.len());
        self.positions = self.positions.start..end;
        self
    }

    /// Calls `hook(epoch)` when an epoch starts (on the loader or slice that starts at
    /// position 0 only, so once per epoch).
    pub fn with_epoch_hook(mut self, hook: EpochHook) -> Self {
        self.on_epoch = Some(hook);
        self
    }

    /// Calls `hook(epoch)` for every batch missing an item, before the short batch is
    /// returned, so the caller can stop training rather than train on fewer images unnoticed.
    pub fn with_missing_hook(mut self, hook: MissingHook) -> Self {
        self.on_missing = Some(hook);
        self
    }

    fn copy(&self, positions: Range<usize>, device: B::Device) -> Self {
        let calls_hook = self.calls_hook && positions.start == self.positions.start;
        Self {
            dataset: self.dataset.clone(),
            positions,
            batch: self.batch,
            shuffle: self.shuffle,
            flip: self.flip,
            seed: self.seed,
            workers: self.workers,
            device,
            next_epoch: AtomicUsize::new(self.next_epoch.load(Ordering::SeqCst)),
            on_epoch: self.on_epoch.clone(),
            on_missing: self.on_missing.clone(),
            calls_hook,
        }
    }

    /// Dataset indices of epoch `epoch`, in the order they are batched (this loader's slice).
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        let all = epoch_order(self.dataset.len(), self.shuffle, self.seed, epoch);
        all[self.positions.clone()].to_vec()
    }
}

/// The order of epoch `epoch` over `len` items: the identity without `shuffle`, else a
/// Fisher–Yates permutation drawn from `(seed, epoch)`.
pub fn epoch_order(len: usize, shuffle: bool, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if shuffle {
        let mut rng = SplitMix64::new(hash3(seed, 0xE90C_5EED, epoch as u64));
        for i in (1..order.len()).rev() {
            let j = rng.below(i + 1);
            order.swap(i, j);
        }
    }
    order
}

/// Whether item `index` is mirrored in epoch `epoch` (half of the items, redrawn each epoch).
pub fn flipped(seed: u64, index: usize, epoch: usize) -> bool {
    hash3(seed ^ 0xF11F, index as u64, epoch as u64) & 1 == 1
}

/// Decodes the items of one batch; an item the dataset cannot produce (a decode error, which
/// the dataset records in its error log) is left out of the batch.
fn decode(dataset: &dyn Dataset<FaceItem>, indices: &[usize]) -> Vec<FaceItem> {
    indices.iter().filter_map(|&i| dataset.get(i)).collect()
}

impl<B: Backend> DataLoader<B, FaceBatch<B>> for EpochLoader<B> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<FaceBatch<B>> + 'a> {
        let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
        if self.calls_hook {
            if let Some(hook) = &self.on_epoch {
                hook(epoch);
            }
        }
        let order = self.order(epoch);
        let batches: Vec<Vec<usize>> = order.chunks(self.batch).map(|c| c.to_vec()).collect();
        let workers = if self.workers > 1 && batches.len() > 1 {
            // Worker `w` decodes batches w, w + W, ...; each has its own bounded channel, so
            // batches come back in order and at most two per worker wait decoded.
            let count = self.workers.min(batches.len());
            let batches = Arc::new(batches.clone());
            (0..count)
                .map(|w| {
                    let (tx, rx) = sync_channel::<Vec<FaceItem>>(2);
                    let dataset = self.dataset.clone();
                    let batches = batches.clone();
                    std::thread::spawn(move || {
                        for b in (w..batches.len()).step_by(count) {
                            if tx.send(decode(dataset.as_ref(), &batches[b])).is_err() {
                                return;
                            }
                        }
                    });
                    rx
                })
                .collect()
        } else {
            Vec::new()
        };
        Box::new(EpochIter {
            loader: self,
            epoch,
            batches,
            workers,
            next: 0,
            items_done: 0,
            items_total: order.len(),
        })
    }

    fn num_items(&self) -> usize {
        self.positions.len()
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, FaceBatch<B>>> {
        Arc::new(self.copy(self.positions.clone(), device.clone()))
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<B, FaceBatch<B>>> {
        let base = self.positions.start;
        let end = (base + end).min(self.positions.end);
        let start = (base + start).min(end);
        Arc::new(self.copy(start..end, self.device.clone()))
    }
}

struct EpochIter<'a, B: Backend> {
    loader: &'a EpochLoader<B>,
    epoch: usize,
    batches: Vec<Vec<usize>>,
    workers: Vec<Receiver<Vec<FaceItem>>>,
    next: usize,
    items_done: usize,
    items_total: usize,
}

impl<B: Backend> Iterator for EpochIter<'_, B> {
    type Item = FaceBatch<B>;

    fn next(&mut self) -> Option<FaceBatch<B>> {
        loop {
            let b = self.next;
            let indices = self.batches.get(b)?;
            self.next += 1;
            self.items_done += indices.len();
            let items = if self.workers.is_empty() {
                decode(self.loader.dataset.as_ref(), indices)
            } else {
                // A worker only stops early when its receiver is gone, which is not the case
                // here; an empty batch is what a dead worker would leave.
                self.workers[b % self.workers.len()].recv().unwrap_or_default()
            };
            if items.len() < indices.len() {
                if let Some(hook) = &self.loader.on_missing {
                    hook(self.epoch);
                }
            }
            if items.is_empty() {
                continue;
            }
            return Some(self.batch(items, b));
        }
    }
}

impl<B: Backend> EpochIter<'_, B> {
    /// `[batch, 3, side, side]` pixels `(x/255 − 0.5)/0.5`, mirrored where [`flipped`] says.
    /// Batch `position` of the epoch's batches of this loader (or slice).
    fn batch(&self, items: Vec<FaceItem>, position: usize) -> FaceBatch<B> {
        let loader = self.loader;
        let batch = items.len();
        let side = items[0].side;
        let mut pixels = Vec::with_capacity(batch * 3 * side * side);
        let mut labels = Vec::with_capacity(batch);
        for item in &items {
            let mirror = loader.flip && flipped(loader.seed, item.index, self.epoch);
            to_chw(&item.pixels, side, mirror, &mut pixels);
            labels.push(item.label as i64);
        }
        FaceBatch {
            images: Tensor::from_data(
                TensorData::new(pixels, [batch, 3, side, side]),
                &loader.device,
            ),
            labels: Tensor::from_data(TensorData::new(labels, [batch]), &loader.device),
            // Slice k's batch i runs beside the other slices' batch i, in one optimiser step.
            step: Some((self.epoch, position)),
        }
    }
}

impl<B: Backend> DataLoaderIterator<FaceBatch<B>> for EpochIter<'_, B> {
    fn progress(&self) -> Progress {
        Progress::new(self.items_done, self.items_total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dataset::SynthDataset;
    use crate::data::synth::SynthConfig;
    use burn::backend::Flex;

    fn loader(workers: usize, first_epoch: usize) -> EpochLoader<Flex> {
        let config =
            SynthConfig { identities: 5, images_per_identity: 4, side: 8, ..Default::default() };
        let data: Arc<dyn Dataset<FaceItem>> = Arc::new(SynthDataset::new(config).unwrap());
        EpochLoader::new(data, 6, true, true, 3, workers, first_epoch, Default::default())
    }

    fn epoch_batches(loader: &EpochLoader<Flex>) -> Vec<(Vec<f32>, Vec<i64>)> {
        loader
            .iter()
            .map(|b| {
                (
                    b.images.into_data().iter::<f32>().collect(),
                    b.labels.into_data().iter::<i64>().collect(),
                )
            })
            .collect()
    }

    #[test]
    fn an_epoch_is_the_same_whether_reached_or_resumed_and_with_any_workers() {
        let fresh = loader(1, 1);
        let first = epoch_batches(&fresh);
        let second = epoch_batches(&fresh);
        // 20 items in batches of 6: 6, 6, 6, 2.
        assert_eq!(second.iter().map(|b| b.1.len()).collect::<Vec<_>>(), vec![6, 6, 6, 2]);
        assert_ne!(first, second, "epochs 1 and 2 must differ in order or flips");
        assert_eq!(epoch_batches(&loader(1, 2)), second, "resumed at epoch 2");
        assert_eq!(epoch_batches(&loader(3, 2)), second, "three workers");
    }

    #[test]
    fn slices_cover_each_epoch_once() {
        let whole = loader(1, 1);
        let order = whole.order(1);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..20).collect::<Vec<_>>());
        let a = whole.slice(0, 10);
        let b = whole.slice(10, 20);
        assert_eq!((a.num_items(), b.num_items()), (10, 10));
        let labels = |l: &Arc<dyn DataLoader<Flex, FaceBatch<Flex>>>| -> Vec<i64> {
            l.iter().flat_map(|b| b.labels.into_data().iter::<i64>().collect::<Vec<_>>()).collect()
        };
        let mut both = labels(&a);
        both.extend(labels(&b));
        // Item i of the synthetic set has label i / 4.
        let expected: Vec<i64> = order.iter().map(|&i| (i / 4) as i64).collect();
        assert_eq!(both, expected);
    }

    #[test]
    fn hook_runs_once_per_epoch_with_its_number() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let l = loader(1, 3).with_epoch_hook(Arc::new(move |e| log.lock().unwrap().push(e)));
        let tail = l.slice(10, 20);
        for _ in 0..2 {
            let _ = l.iter().count();
            let _ = tail.iter().count();
        }
        assert_eq!(*seen.lock().unwrap(), vec![3, 4]);
    }

    #[test]
    fn taken_to_a_multiple_of_the_devices_burns_slices_take_equal_steps() {
        use burn::data::dataloader::split::split_dataloader;
        // Burn's split of 20 items over 3 devices: 20 / 3 = 6 each and the remainder to the
        // last, 6, 6, 8. In batches of 6 the last replica has a second batch, of 2, which would
        // be a step of its own. Taking 18 = 3 * 6 leaves one batch of 6 on every replica.
        let sizes = |l: Arc<dyn DataLoader<Flex, FaceBatch<Flex>>>| -> Vec<Vec<usize>> {
            split_dataloader(l, &[Default::default(); 3])
                .iter()
                .map(|slice| slice.iter().map(|b| b.labels.dims()[0]).collect())
                .collect()
        };
        assert_eq!(sizes(Arc::new(loader(1, 1))), vec![vec![6], vec![6], vec![6, 2]]);
        let taken = loader(1, 1).take(18);
        assert_eq!(taken.num_items(), 18);
        assert_eq!(taken.order(1), loader(1, 1).order(1)[..18].to_vec());
        assert_eq!(sizes(Arc::new(taken)), vec![vec![6]; 3]);
        // Within a shard, `take` counts from the shard's first position.
        let shard = loader(1, 1).shard(1, 2).take(7);
        assert_eq!(shard.order(1), loader(1, 1).order(1)[10..17].to_vec());
        assert_eq!(loader(1, 1).take(50).num_items(), 20);
    }

    #[test]
    fn shards_are_burns_device_slices_of_equal_length_and_each_calls_the_hook() {
        // 20 items over 3 processes: 6 each (20 / 3, rounded down), positions 0..6, 6..12
        // and 12..18 of every epoch's order; positions 18 and 19 are left out.
        let order = loader(1, 1).order(2);
        for rank in 0..3 {
            let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
            let log = seen.clone();
            let shard = loader(1, 2)
                .with_epoch_hook(Arc::new(move |e| log.lock().unwrap().push(e)))
                .shard(rank, 3);
            assert_eq!(shard.num_items(), 6);
            assert_eq!(shard.order(2), order[6 * rank..6 * rank + 6].to_vec());
            let _ = shard.iter().count();
            // Each process's shard starts its epochs itself (seeding, label window).
            assert_eq!(*seen.lock().unwrap(), vec![2], "rank {rank}");
        }
        // Two processes over 20: Burn's `devices=2` slices exactly.
        let whole = loader(1, 1);
        let burn = whole.slice(10, 20);
        let shard = loader(1, 1).shard(1, 2);
        let labels = |l: &dyn DataLoader<Flex, FaceBatch<Flex>>| -> Vec<i64> {
            l.iter().flat_map(|b| b.labels.into_data().iter::<i64>().collect::<Vec<_>>()).collect()
        };
        assert_eq!(labels(&shard), labels(burn.as_ref()));
    }
}
