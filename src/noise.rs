//! Training noise — dropout masks and the router's jitter — without the serial host generator on
//! burn-ndarray.
//!
//! Burn draws every random element through its backend; burn-ndarray does it on the host, one
//! element at a time through ChaCha and a distribution sampler, single-threaded: in the cpu
//! preset's training step that was about a fifth of the time (attention-score, residual, FFN and
//! expert dropout masks, ≈ 20 M elements per step). On burn-ndarray these functions instead draw
//! a 64-bit key from the backend's generator (so the noise still follows `B::seed`, the way runs
//! are reseeded and resumed), expand it with a counter-based hash (SplitMix64's finaliser over the
//! element index: every block independent, so both cores fill half each) and upload the mask. On
//! every other backend they are Burn's own (`Dropout::forward`, `random_like`), which draw on the
//! device.
//!
//! Resolution: a dropout decision uses 16 random bits (rate p rounded to a multiple of 2⁻¹⁶:
//! 0.1 → 0.100006), a jitter value 24 (uniform on a grid of 2⁻²⁴ of the range). The statistics
//! (rate, range, independence across calls and seeds, reproducibility) are tested in
//! `tests/noise.rs`.

use burn::tensor::{Distribution, Tensor, backend::Backend};

/// Dropout with Burn's semantics (`burn::nn::Dropout::forward`): in training (an autodiff
/// backend) and for `prob` > 0, each element is zeroed with probability `prob` and the others
/// are scaled by 1 / (1 − prob); otherwise the input is returned unchanged.
///
/// # Shapes
/// - x, output: any
pub fn dropout<B: Backend, const D: usize>(x: Tensor<B, D>, prob: f64) -> Tensor<B, D> {
    if prob == 0.0 || !B::ad_enabled(&x.device()) {
        return x;
    }
    #[cfg(feature = "ndarray")]
    if crate::backend_caps::is_ndarray::<B>() {
        let device = x.device();
        let shape = x.shape();
        let key = key::<B>(&device);
        let threshold = ((prob * 65536.0).round() as u32).min(65536);
        let scale = (1.0 / (1.0 - prob)) as f32;
        let n = shape.num_elements();
        let mask = fill(n, |i, out: &mut [f32]| {
            // 4 decisions of 16 bits from one 64-bit draw.
            for (j, chunk) in out.chunks_mut(4).enumerate() {
                let bits = mix(key, (i + j * 4) as u64 / 4);
                for (b, v) in chunk.iter_mut().enumerate() {
                    let r = ((bits >> (16 * b)) & 0xFFFF) as u32;
                    *v = if r >= threshold { scale } else { 0.0 };
                }
            }
        });
        let mask = Tensor::<B, D>::from_data(
            burn::tensor::TensorData::new(mask, shape),
            (&device, x.dtype()),
        );
        return x * mask;
    }
    burn::nn::DropoutConfig::new(prob).init().forward(x)
}

/// Uniform noise on [low, high) shaped like `x`, in `x`'s dtype (the router's multiplicative
/// jitter). Drawn like [`dropout`]'s masks on burn-ndarray, by `random_like` elsewhere.
pub fn uniform_like<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    low: f64,
    high: f64,
) -> Tensor<B, D> {
    #[cfg(feature = "ndarray")]
    if crate::backend_caps::is_ndarray::<B>() {
        let device = x.device();
        let shape = x.shape();
        let key = key::<B>(&device);
        let (low, width) = (low as f32, (high - low) as f32);
        let values = fill(shape.num_elements(), |i, out: &mut [f32]| {
            // 2 values of 24 bits (the top of each 32-bit half) from one 64-bit draw.
            for (j, chunk) in out.chunks_mut(2).enumerate() {
                let bits = mix(key, (i + j * 2) as u64 / 2);
                for (b, v) in chunk.iter_mut().enumerate() {
                    let u = ((bits >> (32 * b + 8)) & 0xFF_FFFF) as f32 / 16_777_216.0;
                    *v = low + width * u;
                }
            }
        });
        return Tensor::from_data(
            burn::tensor::TensorData::new(values, shape),
            (&device, x.dtype()),
        );
    }
    x.random_like(Distribution::Uniform(low, high))
}

/// A 64-bit key from the backend's generator: two draws, so that the noise follows `B::seed`.
#[cfg(feature = "ndarray")]
fn key<B: Backend>(device: &B::Device) -> u64 {
    let draws: Vec<f32> = Tensor::<B, 1>::random([2], Distribution::Uniform(0.0, 1.0), device)
        .into_data()
        .convert::<f32>()
        .to_vec()
        .unwrap_or_default();
    let bits = |i: usize| u64::from(draws.get(i).map_or(0, |v| v.to_bits()));
    mix(bits(0) << 32 | bits(1), 0x5EED)
}

/// SplitMix64's finaliser of key + counter · γ: a counter-based generator, any block computable
/// on its own.
#[cfg(feature = "ndarray")]
fn mix(key: u64, counter: u64) -> u64 {
    let mut z = key.wrapping_add(counter.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` values written by `f(first_index, chunk)`, the chunks on every core for large `n`. Chunk
/// starts are multiples of 4, so that each 64-bit draw serves one chunk.
#[cfg(feature = "ndarray")]
fn fill(n: usize, f: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0.0f32; n];
    let threads = if n >= 1 << 18 {
        std::thread::available_parallelism().map_or(1, |t| t.get().min(8))
    } else {
        1
    };
    if threads == 1 {
        f(0, &mut out);
        return out;
    }
    let per = n.div_ceil(threads).div_ceil(4) * 4;
    std::thread::scope(|scope| {
        for (c, chunk) in out.chunks_mut(per).enumerate() {
            let f = &f;
            scope.spawn(move || f(c * per, chunk));
        }
    });
    out
}
