//! A data loader whose order is a function of (seed, epoch) alone, so that a resumed run sees the
//! same batches as an uninterrupted one.
//!
//! burn's `DataLoaderBuilder::shuffle(seed)` draws each epoch's permutation from one generator
//! that advances epoch after epoch, and `SamplerDataset` draws from the operating system: after a
//! resume from epoch k the next epoch would repeat epoch 1's order (or a fresh random one).
//! [`EpochLoader`] instead derives epoch e's order from `seed` and `e` with the crate's
//! [`HostRng`], knows which epoch comes next (the resume epoch + 1), and, at each epoch's start,
//! reseeds the backend's generator (dropout, jitter) from the same pair. The Learner asks the
//! training loader for an iterator exactly once per epoch, which is what makes this work.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::data::dataset::Dataset;
use burn::tensor::backend::Backend;

use crate::init::HostRng;

/// How an epoch picks its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochOrder {
    /// A permutation of all items.
    Shuffle,
    /// This many items drawn with replacement (a step budget's share).
    Sample(usize),
    /// A stream of passes (each a fresh permutation of all items) cut into epochs of
    /// `per_epoch` items, `total` items in all: checkpoint intervals shorter than a pass.
    Passes {
        /// Items per epoch.
        per_epoch: usize,
        /// Items over the whole run (the last epoch may be shorter).
        total: usize,
    },
}

/// See the module documentation.
pub struct EpochLoader<B: Backend, I, O> {
    dataset: Arc<dyn Dataset<I>>,
    batcher: Arc<dyn Batcher<B, I, O>>,
    batch_size: usize,
    order: EpochOrder,
    seed: u64,
    next_epoch: Arc<AtomicUsize>,
    device: B::Device,
    /// Items `start..end` of each epoch's order (the whole order unless sliced).
    range: Option<(usize, usize)>,
    reseed_backend: bool,
}

impl<B: Backend, I: Send + Sync + 'static, O: Send + 'static> EpochLoader<B, I, O> {
    /// A loader of `dataset` in batches of `batch_size` on `device`: by default each epoch a
    /// permutation, seed 0, first epoch 1, backend generator untouched.
    pub fn new(
        dataset: Arc<dyn Dataset<I>>,
        batcher: Arc<dyn Batcher<B, I, O>>,
        batch_size: usize,
        device: B::Device,
    ) -> Self {
        Self {
            dataset,
            batcher,
            batch_size: batch_size.max(1),
            order: EpochOrder::Shuffle,
            seed: 0,
            next_epoch: Arc::new(AtomicUsize::new(1)),
            device,
            range: None,
            reseed_backend: false,
        }
    }

    /// How each epoch picks its items.
    pub fn with_order(mut self, order: EpochOrder) -> Self {
        self.order = order;
        self
    }

    /// The seed every epoch's order derives from.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The epoch of the first `iter()`: 1 for a fresh run, k + 1 after a resume from
    /// checkpoint k.
    pub fn with_first_epoch(mut self, epoch: usize) -> Self {
        self.next_epoch = Arc::new(AtomicUsize::new(epoch));
        self
    }

    /// Seed the backend's generator on the device from (seed, epoch) at each epoch's start.
    pub fn with_backend_reseed(mut self, reseed: bool) -> Self {
        self.reseed_backend = reseed;
        self
    }

    /// Epoch `epoch`'s item indices, in order.
    pub fn order_of(&self, epoch: usize) -> Vec<usize> {
        let n = self.dataset.len();
        let order: Vec<usize> = match self.order {
            EpochOrder::Sample(count) => {
                let mut rng = HostRng::new(epoch_seed(self.seed, epoch));
                (0..count)
                    .map(|_| (rng.next_u64() % n.max(1) as u64) as usize)
                    .collect()
            }
            EpochOrder::Shuffle => permutation(n, epoch_seed(self.seed, epoch)),
            EpochOrder::Passes { per_epoch, total } => {
                let start = (epoch.max(1) - 1) * per_epoch;
                let end = (start + per_epoch).min(total);
                let mut order = Vec::with_capacity(end.saturating_sub(start));
                let mut pass_cache: Option<(usize, Vec<usize>)> = None;
                for s in start..end {
                    let pass = s / n.max(1) + 1;
                    if pass_cache.as_ref().map(|(p, _)| *p) != Some(pass) {
                        let seed = epoch_seed(self.seed ^ 0x9A55, pass);
                        pass_cache = Some((pass, permutation(n, seed)));
                    }
                    order.push(
                        pass_cache
                            .as_ref()
                            .map_or(0, |(_, perm)| perm[s % n.max(1)]),
                    );
                }
                order
            }
        };
        match self.range {
            Some((start, end)) => order[start.min(order.len())..end.min(order.len())].to_vec(),
            None => order,
        }
    }

    fn items_per_epoch(&self) -> usize {
        let all = match self.order {
            EpochOrder::Sample(count) => count,
            EpochOrder::Shuffle => self.dataset.len(),
            EpochOrder::Passes { per_epoch, .. } => per_epoch,
        };
        match self.range {
            Some((start, end)) => end.min(all).saturating_sub(start),
            None => all,
        }
    }

    fn copy(&self, device: B::Device, range: Option<(usize, usize)>) -> Self {
        Self {
            dataset: self.dataset.clone(),
            batcher: self.batcher.clone(),
            batch_size: self.batch_size,
            order: self.order,
            seed: self.seed,
            next_epoch: self.next_epoch.clone(),
            device,
            range,
            reseed_backend: self.reseed_backend,
        }
    }
}

/// A permutation of 0..n (Fisher–Yates) from `seed`.
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = HostRng::new(seed);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// The seed of epoch `epoch`'s order and generator state.
pub fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    HostRng::new(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64()
}

impl<B: Backend, I: Send + Sync + 'static, O: Send + 'static> DataLoader<B, O>
    for EpochLoader<B, I, O>
{
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<O> + 'a> {
        let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
        if self.reseed_backend {
            B::seed(&self.device, epoch_seed(self.seed, epoch) ^ 0xD20F);
        }
        Box::new(EpochIter {
            loader: self,
            order: self.order_of(epoch),
            position: 0,
        })
    }

    fn num_items(&self) -> usize {
        self.items_per_epoch()
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, O>> {
        Arc::new(self.copy(device.clone(), self.range))
    }

    /// A slice counts its own epochs from this loader's next one: burn-train's multi-device
    /// strategy iterates each device's slice once per epoch, and every slice must cut the same
    /// epoch's order.
    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<B, O>> {
        let (base, _) = self.range.unwrap_or((0, self.items_per_epoch()));
        let mut slice = self.copy(self.device.clone(), Some((base + start, base + end)));
        slice.next_epoch = Arc::new(AtomicUsize::new(self.next_epoch.load(Ordering::SeqCst)));
        Arc::new(slice)
    }
}

struct EpochIter<'a, B: Backend, I, O> {
    loader: &'a EpochLoader<B, I, O>,
    order: Vec<usize>,
    position: usize,
}

impl<B: Backend, I, O> Iterator for EpochIter<'_, B, I, O> {
    type Item = O;

    fn next(&mut self) -> Option<O> {
        if self.position >= self.order.len() {
            return None;
        }
        let end = (self.position + self.loader.batch_size).min(self.order.len());
        let items: Vec<I> = self.order[self.position..end]
            .iter()
            .filter_map(|i| self.loader.dataset.get(*i))
            .collect();
        self.position = end;
        Some(self.loader.batcher.batch(items, &self.loader.device))
    }
}

impl<B: Backend, I, O> DataLoaderIterator<O> for EpochIter<'_, B, I, O> {
    fn progress(&self) -> Progress {
        Progress {
            items_processed: self.position,
            items_total: self.order.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TestBackend as B;
    use burn::data::dataset::InMemDataset;
    use burn::tensor::{Int, Tensor, TensorData};

    #[derive(Clone)]
    struct Ids;
    impl Batcher<B, usize, Tensor<B, 1, Int>> for Ids {
        fn batch(&self, items: Vec<usize>, device: &burn::tensor::Device<B>) -> Tensor<B, 1, Int> {
            let n = items.len();
            let v: Vec<i64> = items.into_iter().map(|i| i as i64).collect();
            Tensor::from_data(TensorData::new(v, [n]), device)
        }
    }

    fn epoch_items(loader: &EpochLoader<B, usize, Tensor<B, 1, Int>>) -> Vec<i64> {
        loader
            .iter()
            .flat_map(|b| b.into_data().convert::<i64>().to_vec::<i64>().unwrap())
            .collect()
    }

    fn loader(order: EpochOrder, first_epoch: usize) -> EpochLoader<B, usize, Tensor<B, 1, Int>> {
        let data = InMemDataset::new((0..10).collect::<Vec<usize>>());
        EpochLoader::new(Arc::new(data), Arc::new(Ids), 3, Default::default())
            .with_order(order)
            .with_seed(7)
            .with_first_epoch(first_epoch)
    }

    #[test]
    fn a_resumed_loader_continues_the_same_epoch_sequence() {
        let passes = EpochOrder::Passes {
            per_epoch: 4,
            total: 25,
        };
        for order in [EpochOrder::Shuffle, EpochOrder::Sample(8), passes] {
            let straight = loader(order, 1);
            let epochs: Vec<Vec<i64>> = (0..3).map(|_| epoch_items(&straight)).collect();
            assert_ne!(epochs[0], epochs[1], "epochs differ");
            let resumed = loader(order, 3);
            assert_eq!(epoch_items(&resumed), epochs[2], "epoch 3 after a resume");
        }
        let mut shuffled = epoch_items(&loader(EpochOrder::Shuffle, 1));
        shuffled.sort();
        assert_eq!(shuffled, (0..10).collect::<Vec<i64>>(), "a permutation");
        // Passes: 25 items in epochs of 4 = 7 epochs, the last of 1; each pass of 10 a
        // permutation.
        let stream = loader(passes, 1);
        let all: Vec<i64> = (0..7).flat_map(|_| epoch_items(&stream)).collect();
        assert_eq!(all.len(), 25);
        for pass in all.chunks(10).take(2) {
            let mut p = pass.to_vec();
            p.sort();
            assert_eq!(p, (0..10).collect::<Vec<i64>>());
        }
    }
}
