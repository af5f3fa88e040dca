//! Host kernels for decoding on burn-ndarray, whose tensors already live in host memory.
//!
//! One token at a time, every matmul is a vector–matrix product, and burn-ndarray's matmul runs
//! it through `matrixmultiply`'s sgemm, which packs the whole weight matrix and pads the single
//! row to a register block of 8 (≈ 30 µs for a 128 × 128 weight on this machine, against ≈ 2 µs
//! for the product itself). Here the products read the weights in place (zero-copy views of the
//! ndarray storage) in a plain row loop. Only [`crate::decode`] uses them, and only when the
//! backend is plain `NdArray` (no autodiff) with f32 tensors; every other case returns `None` and
//! the caller uses Burn's ops.

use core::any::Any;

use burn::tensor::{Tensor, TensorData, TensorPrimitive, backend::Backend};
use burn_ndarray::{NdArray, NdArrayTensor};

/// `t` as an `NdArray` tensor when `B` is `NdArray`.
fn downcast<B: Backend, const D: usize>(t: Tensor<B, D>) -> Option<Tensor<NdArray, D>> {
    (Box::new(t) as Box<dyn Any>)
        .downcast::<Tensor<NdArray, D>>()
        .ok()
        .map(|b| *b)
}

/// The inverse of [`downcast`] (for `B` = `NdArray`).
fn upcast<B: Backend, const D: usize>(t: Tensor<NdArray, D>) -> Tensor<B, D> {
    *(Box::new(t) as Box<dyn Any>)
        .downcast::<Tensor<B, D>>()
        .expect("upcast is only called after a successful downcast")
}

/// Calls `f` with the f32 data of `t` in row-major order, without copying it, if it is a
/// standard-layout f32 `NdArray` tensor.
fn with_f32<B: Backend, const D: usize, R>(
    t: &Tensor<B, D>,
    f: impl FnOnce(&[f32]) -> R,
) -> Option<R> {
    let t = downcast::<B, D>(t.clone())?;
    match t.into_primitive() {
        TensorPrimitive::Float(NdArrayTensor::F32(storage)) => {
            let view = storage.view();
            view.as_slice().map(f)
        }
        _ => None,
    }
}

/// Whether the host kernels serve backend `B` (plain `NdArray`).
pub(crate) fn serves<B: Backend>() -> bool {
    core::any::TypeId::of::<B>() == core::any::TypeId::of::<NdArray>()
}

/// `rows` (`[R, n]`, row-major) as a tensor of `B` (= `NdArray`, whose one device is the CPU).
fn tensor<B: Backend>(rows: Vec<f32>, shape: [usize; 2]) -> Tensor<B, 2> {
    let device = burn_ndarray::NdArrayDevice::Cpu;
    upcast(Tensor::<NdArray, 2>::from_data(
        TensorData::new(rows, shape),
        &device,
    ))
}

/// y = x·W (+ b) for a few rows: x `[R, n_in]`, W `[n_in, n_out]` (burn's `Linear` layout),
/// b `[n_out]`. `None` when the host kernels do not serve `B` or a tensor is not f32.
pub(crate) fn linear<B: Backend>(
    x: &Tensor<B, 2>,
    weight: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
) -> Option<Tensor<B, 2>> {
    // One expert, chosen by every row.
    let [rows, _] = x.dims();
    let bias = bias.map(|b| b.clone().unsqueeze::<2>()); // [1, n_out]
    expert_linear(
        x,
        &vec![0; rows],
        &weight.clone().unsqueeze(),
        bias.as_ref(),
    )
}

/// y = x·Wᵀ for a few rows with W stored `[n_out, n_in]` (a tied LM head: the token
/// embeddings): one dot product per output. `None` when the host kernels do not serve `B`.
pub(crate) fn linear_transposed<B: Backend>(
    x: &Tensor<B, 2>,
    weight: &Tensor<B, 2>,
) -> Option<Tensor<B, 2>> {
    if !serves::<B>() {
        return None;
    }
    let [rows, n_in] = x.dims();
    let [n_out, w_in] = weight.dims();
    assert_eq!(
        n_in, w_in,
        "host::linear_transposed: x [R, {n_in}] · Wᵀ, W [n, {w_in}]"
    );
    let x = with_f32(x, <[f32]>::to_vec)?;
    let y = with_f32(weight, |w| {
        x.chunks_exact(n_in)
            .flat_map(|xr| {
                w.chunks_exact(n_in)
                    .map(move |wr| xr.iter().zip(wr).map(|(a, b)| a * b).sum::<f32>())
            })
            .collect::<Vec<f32>>()
    })?;
    Some(tensor::<B>(y, [rows, n_out]))
}

/// Attention of one new query per sequence over every cached key, burn-nn's arithmetic
/// (scores q·k / √d_k, softmax or quiet softmax exp(x − m) / (e^(−m) + Σ exp(x − m)), the
/// weighted values), heads side by side in the last dimension.
///
/// Shapes: q `[B, 1, H·d_k]`, keys and values `[B, S, H·d_k]`, output `[B, 1, H·d_k]`. `None`
/// when the host kernels do not serve `B`.
pub(crate) fn attend_one<B: Backend>(
    q: &Tensor<B, 3>,
    keys: &Tensor<B, 3>,
    values: &Tensor<B, 3>,
    heads: usize,
    quiet: bool,
) -> Option<Tensor<B, 3>> {
    if !serves::<B>() {
        return None;
    }
    let [batch, one, d] = q.dims();
    let [_, seq, _] = keys.dims();
    assert_eq!(one, 1, "host::attend_one: one query per sequence");
    let d_k = d / heads;
    let scale = (d_k as f32).sqrt();
    let q = with_f32(q, <[f32]>::to_vec)?;
    let mut out = vec![0.0f32; batch * d];
    let mut scores = vec![0.0f32; seq];
    with_f32(keys, |k| {
        with_f32(values, |v| {
            for b in 0..batch {
                for h in 0..heads {
                    let at = |s: usize| (b * seq + s) * d + h * d_k;
                    let qh = &q[b * d + h * d_k..b * d + (h + 1) * d_k];
                    for (s, score) in scores.iter_mut().enumerate() {
                        let kh = &k[at(s)..at(s) + d_k];
                        *score = qh.iter().zip(kh).map(|(a, b)| a * b).sum::<f32>() / scale;
                    }
                    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0.0f32;
                    for score in scores.iter_mut() {
                        *score = (*score - max).exp();
                        sum += *score;
                    }
                    if quiet {
                        sum += (-max).exp();
                    }
                    let oh = &mut out[b * d + h * d_k..b * d + (h + 1) * d_k];
                    for (s, w) in scores.iter().enumerate() {
                        let vh = &v[at(s)..at(s) + d_k];
                        for (o, x) in oh.iter_mut().zip(vh) {
                            *o += w / sum * x;
                        }
                    }
                }
            }
        })
    })??;
    let device = burn_ndarray::NdArrayDevice::Cpu;
    Some(upcast(Tensor::<NdArray, 3>::from_data(
        TensorData::new(out, [batch, 1, d]),
        &device,
    )))
}

/// y += Σᵢ xᵢ · W[i, :] over the rows of W (`[x.len(), n]`, row-major): the weight is read once,
/// contiguously, and the inner loop vectorises.
fn axpy_rows(x: &[f32], w: &[f32], n: usize, y: &mut [f32]) {
    for (xi, wr) in x.iter().zip(w.chunks_exact(n)) {
        if *xi != 0.0 {
            for (yj, wj) in y.iter_mut().zip(wr) {
                *yj += xi * wj;
            }
        }
    }
}

/// The chosen experts' products for a few tokens: row (t, j) of the result is
/// `x[t] · W[ids[t·k + j]]` (+ `b[ids[..]]`), with W `[E, n_in, n_out]` stacked and b
/// `[E, n_out]`. x has one row per token (`[T, n_in]`) or one per (token, choice)
/// (`[T·k, n_in]`). `None` when the host kernels do not serve `B`.
pub(crate) fn expert_linear<B: Backend>(
    x: &Tensor<B, 2>,
    ids: &[usize],
    weight: &Tensor<B, 3>,
    bias: Option<&Tensor<B, 2>>,
) -> Option<Tensor<B, 2>> {
    if !serves::<B>() {
        return None;
    }
    let [x_rows, n_in] = x.dims();
    let [_, w_in, n_out] = weight.dims();
    assert_eq!(
        n_in, w_in,
        "host::expert_linear: x [R, {n_in}] · W [E, {w_in}, n]"
    );
    let per_row = ids.len() / x_rows; // k when x has one row per token, 1 otherwise
    let x = with_f32(x, <[f32]>::to_vec)?;
    let mut y = vec![0.0; ids.len() * n_out];
    if let Some(b) = bias {
        with_f32(b, |b| {
            for (yr, e) in y.chunks_exact_mut(n_out).zip(ids) {
                yr.copy_from_slice(&b[e * n_out..(e + 1) * n_out]);
            }
        })?;
    }
    with_f32(weight, |w| {
        for (r, (yr, e)) in y.chunks_exact_mut(n_out).zip(ids).enumerate() {
            let xr = &x[(r / per_row) * n_in..(r / per_row + 1) * n_in];
            let we = &w[e * n_in * n_out..(e + 1) * n_in * n_out];
            axpy_rows(xr, we, n_out, yr);
        }
    })?;
    Some(tensor::<B>(y, [ids.len(), n_out]))
}

/// The integer ids of a small int tensor, read on the host (free on `NdArray`).
pub(crate) fn ids<B: Backend, const D: usize>(
    t: Tensor<B, D, burn::tensor::Int>,
) -> Option<Vec<usize>> {
    if !serves::<B>() {
        return None;
    }
    t.into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .ok()
        .map(|v| v.into_iter().map(|i| i as usize).collect())
}
