//! tlens's backend extension: the element-wise kernels a forward pass spends its time in, as a trait on the backend
//! with burn's generic ops as the default and fused versions where a backend gains from them (the pattern of burn's
//! custom-kernel examples). Every backend tlens builds implements it; the model's forward pass asks for it.
//!
//! flex fuses seven of them, each found in a `perf record` of `tlens-bench` and measured side by side:
//! - the MLP activations (GPT-2's GELU was six passes plus libm's scalar `tanhf`: 2.17 → 1.67 s at 8×128);
//! - the attention scores' scale and mask (1.72 → 1.52 s);
//! - the attention pattern (`run_with_cache` at 4×1024: 16.6–23.5 → 13.9–16.7 s on the first pass);
//! - rotary embeddings (Llama 3.2 1B at 1×512: 7.3 → 6.9 s);
//! - for the cache, the cast to half precision and a norm's scale on a stack (`CacheKernels`).
//!
//! The book's Performance chapter has the figures.

use burn_tensor::{FloatDType, Tensor, backend::Backend};
use tlens_cache_core::kernels::Physical;
use tlens_cache_core::{CacheKernels, via_f32};

use crate::hooked::{causal_mask, soft_cap};

/// The tanh approximations of GELU: `0.5·x·(1 + tanh(u(x)))`, which differ only in how they write `u`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TanhGelu {
    /// GPT-2's `gelu_new` (and `gelu_pytorch_tanh`): `u = √(2/π)·(x + 0.044715·x³)`.
    New,
    /// `gelu_fast`: `u = 0.7978845608·x·(1 + 0.044715·x²)`.
    Fast,
}

impl TanhGelu {
    /// `u(x)` on a tensor. The cube is two multiplications, not `powi`: the CPU backends compute a power with libm's
    /// `powf`, which took about 5% of a GPT-2 forward pass on flex.
    fn inner<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            TanhGelu::New => {
                let cube = x.clone() * x.clone() * x.clone();
                (x + cube * 0.044715) * (2.0 / std::f64::consts::PI).sqrt()
            }
            TanhGelu::Fast => x.clone() * 0.7978845608 * (x.clone() * x * 0.044715 + 1.0),
        }
    }
}

/// The kernels tlens's forward pass takes from its backend. Each method has burn's generic ops as its default, so a
/// backend implements only what it fuses.
pub trait Kernels: Backend {
    /// `0.5·x·(1 + tanh(u(x)))`, as TransformerLens computes it (`utils.gelu_new`, `utils.gelu_fast`).
    fn tanh_gelu<const D: usize>(x: Tensor<Self, D>, form: TanhGelu) -> Tensor<Self, D> {
        x.clone() * 0.5 * (form.inner(x).tanh() + 1.0)
    }

    /// `x·sigmoid(x)` (`F.silu`).
    fn silu<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, D> {
        burn_tensor::activation::silu(x)
    }

    /// `x` in another float precision, rounded to nearest even (`Tensor::cast`): how a half-precision cache stores
    /// its activations ([`RunOptions::cache_dtype`](tlens_cache_core::RunOptions::cache_dtype)).
    fn cast<const D: usize>(x: Tensor<Self, D>, dtype: FloatDType) -> Tensor<Self, D> {
        x.cast(dtype)
    }

    /// `(x − mean(x)) / scale` over the last axis (`x / scale` without `centre`): a norm's cached scale applied to a
    /// stack of residual-stream components ([`ApplyLnToStack`](tlens_cache_core::ApplyLnToStack)).
    fn normalise(x: Physical<Self>, scale: Physical<Self>, centre: bool) -> Physical<Self> {
        tlens_cache_core::kernels::normalise(x, scale, centre)
    }

    /// `lhs · rhs` where the inner axis has length one (`[…, m, 1] · […, 1, n]`, the cache's neuron results): burn's
    /// broadcast element-wise product, the same bits as the matrix product, in one pass where burn-ndarray's batched
    /// matrix product makes one small product per matrix (1.06 against 0.69 s for `stack_neuron_results` at 8×128).
    fn outer<const D: usize>(lhs: Tensor<Self, D>, rhs: Tensor<Self, D>) -> Tensor<Self, D> {
        lhs * rhs
    }

    /// These kernels as the functions an [`ActivationCache`](tlens_cache_core::ActivationCache) and its
    /// [`CacheHook`](tlens_cache_core::CacheHook) call (cache-core knows no backend, so it cannot name this trait).
    fn cache_kernels() -> CacheKernels<Self> {
        CacheKernels {
            cast: |x, dtype| Self::cast(x, dtype),
            normalise: |x, scale, centre| Self::normalise(x, scale, centre),
            matmul: |lhs, rhs| Self::matmul(lhs, rhs, None),
            outer: |lhs, rhs| Self::outer(lhs, rhs),
        }
    }

    /// Rotary embeddings on `x` (`[batch, pos, heads, d_head]`) from the tables `sin` and `cos`
    /// (`[1, pos, 1, rotary_dim]`): `x·cos + rotate_every_two(x)·sin` on the first `rotary_dim` dimensions of each
    /// head, pairing adjacent dimensions (GPT-J) or the two halves (GPT-NeoX, Llama), as TransformerLens's
    /// `apply_rotary`.
    fn rotary(
        x: Tensor<Self, 4>,
        sin: &Tensor<Self, 4>,
        cos: &Tensor<Self, 4>,
        adjacent_pairs: bool,
    ) -> Tensor<Self, 4> {
        crate::rotary::rotate(x, sin, cos, adjacent_pairs)
    }

    /// `f`, a chain of ops, on `x` as PyTorch runs it on a tensor of `x`'s precision: each op rounds its result to
    /// that precision once, computing in f32 (where the chain has more than one op, `f` rounds between them with
    /// `activation::rounded`). The default computes `f` in f32 and rounds the result ([`via_f32`]);
    /// a backend whose half-precision ops are PyTorch's own runs `f` on `x` as it is. `f` on an f32 `x` is plain `f`.
    fn half_ops<const D: usize>(
        x: Tensor<Self, D>,
        f: impl FnOnce(Tensor<Self, D>) -> Tensor<Self, D>,
    ) -> Tensor<Self, D> {
        via_f32(x, f)
    }

    /// The most bytes of attention scores computed at once when no hook reads the scores or the pattern: attention
    /// runs a few heads at a time, so that each chunk's scores stay below glibc's largest size for reusing freed
    /// memory (32 MiB) instead of costing fresh, zeroed pages (GPT-2 small at 4×1024 has 200 MB of scores per layer).
    const ATTENTION_CHUNK_BYTES: usize = 4 << 20;

    /// `x · weight + bias` over the last axis of `x` (`[batch, pos, d_in] · [d_in, d_out]`), rounded once in a
    /// half-precision model, as TransformerLens's fused `F.linear` / `addmm`.
    fn fused_linear(
        x: Tensor<Self, 3>,
        weight: Tensor<Self, 2>,
        bias: Option<Tensor<Self, 1>>,
    ) -> Tensor<Self, 3> {
        crate::linear::linear(x, weight, bias)
    }

    /// `lhs · rhs` over the last two axes (the same batch axes on both), plus `bias` over the last axis where given:
    /// every matrix product of the forward pass, the dense layers' and attention's.
    fn matmul<const D: usize>(
        lhs: Tensor<Self, D>,
        rhs: Tensor<Self, D>,
        bias: Option<Tensor<Self, 1>>,
    ) -> Tensor<Self, D> {
        generic_matmul(lhs, rhs, bias)
    }

    /// Attention scores from `q·kᵀ` (`[batch, heads, pos, pos]`): divided by `scale`, soft-capped, and `−∞` where a
    /// query may not see a key (later keys, and keys `window` or more positions back in a local layer), as
    /// TransformerLens's `calculate_attention_scores` and `apply_causal_mask`.
    fn causal_scores(
        scores: Tensor<Self, 4>,
        scale: f64,
        cap: Option<f64>,
        window: Option<usize>,
    ) -> Tensor<Self, 4> {
        generic_causal_scores(scores, scale, cap, window)
    }

    /// The attention pattern from masked scores (`[batch, heads, queries, keys]`): the softmax over the keys and,
    /// where `nan_to_zero`, zeros in place of NaN, as TransformerLens does once a hook has seen the scores (a query
    /// whose every key a hook masked has a NaN softmax; `torch.where(torch.isnan(pattern), 0, pattern)`).
    fn pattern(scores: Tensor<Self, 4>, nan_to_zero: bool) -> Tensor<Self, 4> {
        generic_pattern(scores, nan_to_zero)
    }
}

/// [`Kernels::matmul`] in burn's generic ops: the product, then the bias broadcast over its rows.
fn generic_matmul<B: Backend, const D: usize>(
    lhs: Tensor<B, D>,
    rhs: Tensor<B, D>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    let product = lhs.matmul(rhs);
    match bias {
        Some(b) => product + b.unsqueeze::<D>(),
        None => product,
    }
}

/// [`Kernels::pattern`] in burn's generic ops: `softmax`, then `is_nan` and `mask_fill`.
fn generic_pattern<B: Backend>(scores: Tensor<B, 4>, nan_to_zero: bool) -> Tensor<B, 4> {
    let pattern = burn_tensor::activation::softmax(scores, 3);
    match nan_to_zero {
        true => pattern.clone().mask_fill(pattern.is_nan(), 0.0),
        false => pattern,
    }
}

/// [`Kernels::causal_scores`] in burn's generic ops: a division, the soft cap, and a mask broadcast over batch and
/// heads.
fn generic_causal_scores<B: Backend>(
    scores: Tensor<B, 4>,
    scale: f64,
    cap: Option<f64>,
    window: Option<usize>,
) -> Tensor<B, 4> {
    let pos = scores.dims()[2];
    let mask = causal_mask::<B>(pos, window, &scores.device());
    soft_cap(scores / scale, cap).mask_fill(mask, f32::NEG_INFINITY)
}

impl<B: Kernels, C: burn_autodiff::checkpoint::strategy::CheckpointStrategy> Kernels
    for burn_autodiff::Autodiff<B, C>
{
}

// The backends as tlens's backend crates name them (f32 floats), with burn's generic kernels.
#[cfg(any(test, feature = "ndarray"))]
impl Kernels for burn_ndarray::NdArray<f32> {}

#[cfg(feature = "tch")]
impl Kernels for burn_tch::LibTorch<f32> {
    /// libtorch's half-precision ops are PyTorch's: `f` runs on `x` in its own precision, as in TransformerLens.
    fn half_ops<const D: usize>(
        x: Tensor<Self, D>,
        f: impl FnOnce(Tensor<Self, D>) -> Tensor<Self, D>,
    ) -> Tensor<Self, D> {
        f(x)
    }

    /// In half precision, libtorch's own `addmm` in the model's precision, which rounds once as the default does; the
    /// default computes in f32, which on a GPU would give up what half precision is for.
    fn fused_linear(
        x: Tensor<Self, 3>,
        weight: Tensor<Self, 2>,
        bias: Option<Tensor<Self, 1>>,
    ) -> Tensor<Self, 3> {
        use burn_tensor::TensorPrimitive;
        if x.dtype() == burn_tensor::DType::F32 {
            return crate::linear::linear(x, weight, bias);
        }
        let [batch, pos, d_in] = x.dims();
        let [_, d_out] = weight.dims();
        let raw = |t: burn_tensor::TensorPrimitive<Self>| t.tensor().tensor;
        let x = raw(x.reshape([batch * pos, d_in]).into_primitive());
        let weight = raw(weight.into_primitive());
        let y = match bias {
            Some(b) => raw(b.into_primitive()).addmm(&x, &weight),
            None => x.matmul(&weight),
        };
        let y =
            Tensor::<Self, 2>::from_primitive(TensorPrimitive::Float(burn_tch::TchTensor::new(y)));
        y.reshape([batch, pos, d_out])
    }
}

#[cfg(feature = "cuda")]
impl Kernels for burn_cuda::Cuda<f32, i32> {}

#[cfg(any(test, feature = "flex"))]
mod flex {
    use burn_flex::{Flex, FlexTensor, Layout};
    use burn_tensor::{Bytes, DType, Element, FloatDType, Tensor, TensorPrimitive};
    use half::slice::HalfFloatSliceExt;
    use rayon::prelude::*;
    use tlens_cache_core::dyn_tensor::MAX_RANK;
    use tlens_cache_core::kernels::Physical;

    use super::{Kernels, TanhGelu};

    /// `eˣ` for f32 without libm and without branches, so that a loop of it vectorises: Cephes' `expf` (range
    /// reduction by `ln 2`, a degree-6 polynomial on `[−ln2/2, ln2/2]`, within 2 ulp), with the rounding to the nearest
    /// integer done by adding 1.5·2²³ (whose bits then hold the integer) instead of a call to `floorf`.
    #[inline(always)]
    fn exp(x: f32) -> f32 {
        const SHIFTER: f32 = 12_582_912.0;
        let x = x.clamp(-87.0, 88.0);
        let k = x * std::f32::consts::LOG2_E + SHIFTER;
        let n = k - SHIFTER;
        let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
        let poly = (((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r
            + 4.166_579_6e-2)
            * r
            + 1.666_666_5e-1)
            * r
            + 0.5)
            * r
            * r
            + r
            + 1.0;
        let exponent = (k.to_bits() as i32).wrapping_sub(0x4B40_0000);
        poly * f32::from_bits((exponent.wrapping_add(127) << 23) as u32)
    }

    /// The tanh GELU written as `x / (1 + e^(−2u))`, which is `0.5·x·(1 + tanh u)` exactly. It avoids the
    /// cancellation in `1 + tanh u` for negative `u`, so it is nearer the true value than TransformerLens's own float32
    /// result (within 5e-7 absolute and 2.2e-6 relative of the f64 value from −30 to 30, where `1 + tanhf` loses all
    /// digits below −9).
    #[inline(always)]
    fn tanh_gelu(x: f32, form: TanhGelu) -> f32 {
        let u = match form {
            TanhGelu::New => 0.797_884_6 * (x + 0.044715 * x * x * x),
            TanhGelu::Fast => 0.797_884_6 * x * (1.0 + 0.044715 * x * x),
        };
        x / (1.0 + exp(-2.0 * u))
    }

    /// The same in f64 with libm, for f64 tensors (rare enough not to need speed).
    fn tanh_gelu_f64(x: f64, form: TanhGelu) -> f64 {
        let u = match form {
            TanhGelu::New => (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x),
            TanhGelu::Fast => 0.7978845608 * x * (1.0 + 0.044715 * x * x),
        };
        0.5 * x * (1.0 + u.tanh())
    }

    /// `x·sigmoid(x)` as `x / (1 + e^(−x))`.
    #[inline(always)]
    fn silu(x: f32) -> f32 {
        x / (1.0 + exp(-x))
    }

    /// Elements per task of a parallel element-wise pass: 64 KiB of f32, small enough to share the work evenly and
    /// large enough that rayon's scheduling costs nothing measurable.
    const PAR_CHUNK: usize = 1 << 14;

    /// One element-wise pass over a flex tensor. A contiguous f32 tensor is mapped on rayon's threads: burn-flex runs
    /// its element-wise ops on the calling thread alone, while the matrix products' two workers wait (22% of a
    /// forward pass's samples were that thread's on a 2-core machine). Rewritten in place when not shared; when
    /// shared (a cached MLP input, on its way to the GELU) into a new buffer, each chunk by the thread that maps it
    /// (burn-flex's own driver took 3% of a cached 8×128 run for this on one thread). Anything else goes through
    /// that driver, `unary_op` (public, though hidden from its docs; burn is pinned to 0.21.0): one new buffer, and
    /// f16/bf16 through the f32 function.
    fn map<const D: usize>(
        x: Tensor<Flex, D>,
        f32_op: impl Fn(f32) -> f32 + Copy + Send + Sync,
        f64_op: impl Fn(f64) -> f64 + Copy,
    ) -> Tensor<Flex, D> {
        let mut t = x.into_primitive().tensor();
        let out = if t.dtype() != DType::F32 || !is_whole(&t) {
            burn_flex::ops::unary::unary_op(t, f32_op, f64_op)
        } else if t.is_unique() {
            t.storage_mut::<f32>()
                .par_chunks_mut(PAR_CHUNK)
                .for_each(|chunk| chunk.iter_mut().for_each(|v| *v = f32_op(*v)));
            t
        } else {
            let src: &[f32] = t.storage(); // the whole buffer (`is_whole`)
            let mut out = Vec::<f32>::with_capacity(src.len());
            out.spare_capacity_mut()
                .par_chunks_mut(PAR_CHUNK)
                .zip(src.par_chunks(PAR_CHUNK))
                .for_each(|(dst, src)| {
                    dst.iter_mut().zip(src).for_each(|(d, &v)| {
                        d.write(f32_op(v));
                    })
                });
            // SAFETY: every element of the capacity was written above.
            unsafe { out.set_len(src.len()) };
            FlexTensor::new(
                Bytes::from_elems(out),
                Layout::contiguous(t.layout().shape().clone()),
                DType::F32,
            )
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    /// Whether the tensor's elements are its whole buffer, in order (what `to_contiguous` returns).
    fn is_whole(t: &FlexTensor) -> bool {
        let elements = t.layout().num_elements();
        t.is_contiguous() && t.layout().start_offset() == 0 && t.storage::<f32>().len() == elements
    }

    /// The scores of one forward pass, scaled and masked in one pass over them, in place, rows shared among rayon's
    /// threads as in [`map`]: burn-flex's `mask_fill` copies the broadcast mask to the scores' full shape through a
    /// strided iterator on every layer, and the division and the fill each write a new buffer. Soft-capped scores
    /// (Gemma 2) take the generic path.
    fn causal_scores(
        scores: Tensor<Flex, 4>,
        scale: f64,
        window: Option<usize>,
    ) -> Tensor<Flex, 4> {
        let [_, _, queries, keys] = scores.dims();
        let mut t = scores.into_primitive().tensor().to_contiguous();
        let scale = scale as f32;
        t.storage_mut::<f32>()
            .par_chunks_exact_mut(keys)
            .enumerate()
            .for_each(|(r, row)| {
                let i = r % queries;
                let first = window.map_or(0, |w| (i + 1).saturating_sub(w));
                row[..first].fill(f32::NEG_INFINITY);
                row[first..=i].iter_mut().for_each(|x| *x /= scale);
                row[i + 1..].fill(f32::NEG_INFINITY);
            });
        Tensor::from_primitive(TensorPrimitive::Float(t))
    }

    /// The exponent below which [`softmax_row`] takes `eˣ` as zero: [`exp`] clamps its argument at −87, and the
    /// masked keys' `−∞` must give exactly 0 (f32's `expf` is below 1.7e-38 there).
    const EXP_FLOOR: f32 = -87.0;

    /// The lanes [`softmax_row`] keeps its running maximum and sum in, so that the loops vectorise (one accumulator
    /// would fix the order of every addition).
    const LANES: usize = 16;

    /// `row` folded into [`LANES`] independent accumulators, element `i` into accumulator `i mod LANES`, so that the
    /// loop vectorises; the tail past the last full set of lanes is left to the caller.
    #[inline(always)]
    fn fold_lanes<T: Copy>(
        row: &[f32],
        init: T,
        step: impl Fn(T, f32) -> T,
    ) -> ([T; LANES], &[f32]) {
        let (chunks, tail) = row.as_chunks::<LANES>();
        let mut acc = [init; LANES];
        for chunk in chunks {
            for (a, &v) in acc.iter_mut().zip(chunk) {
                *a = step(*a, v);
            }
        }
        (acc, tail)
    }

    /// One row of scores turned into its softmax in place, as PyTorch's CPU kernel computes it (the maximum, `eˣ⁻ᵐᵃˣ`
    /// and their sum, then a product with the sum's reciprocal): NaN throughout where the row has a NaN or no
    /// finite maximum (every key masked), and zeros there instead where `nan_to_zero`.
    #[inline(always)]
    fn softmax_row(row: &mut [f32], nan_to_zero: bool) {
        let (maxes, tail) = fold_lanes(row, f32::NEG_INFINITY, f32::max);
        let max = maxes
            .iter()
            .chain(tail)
            .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let e = |x: f32| {
            let d = x - max;
            if d < EXP_FLOOR { 0.0 } else { exp(d) }
        };
        let (chunks, tail) = row.as_chunks_mut::<LANES>();
        let mut sums = [0.0f32; LANES];
        for chunk in chunks {
            for (s, x) in sums.iter_mut().zip(chunk) {
                *x = e(*x);
                *s += *x;
            }
        }
        let mut sum = sums.iter().sum::<f32>();
        for x in tail {
            *x = e(*x);
            sum += *x;
        }
        if max == f32::NEG_INFINITY || sum.is_nan() {
            row.fill(if nan_to_zero { 0.0 } else { f32::NAN });
            return;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|x| *x *= inv);
    }

    /// The attention pattern of f32 scores in one pass per row on rayon's threads, in place when the scores are not
    /// shared. burn-flex's fused softmax calls libm's scalar `expf` for every element and writes a zeroed buffer first
    /// (a pass of its own on one thread when the allocator hands back a used block); after a hook on the scores,
    /// `is_nan` and `mask_fill` then wrote two more buffers. When the scores are cached they are shared, and the
    /// pattern goes to a buffer of its own, each row copied into it by the thread that computes it.
    fn pattern(scores: FlexTensor, nan_to_zero: bool) -> FlexTensor {
        let keys = *scores.layout().shape().last().expect("rank 4");
        let mut t = scores.to_contiguous();
        drop(scores);
        if t.is_unique() && is_whole(&t) {
            t.storage_mut::<f32>()
                .par_chunks_exact_mut(keys)
                .for_each(|row| softmax_row(row, nan_to_zero));
            return t;
        }
        let src: &[f32] = t.storage(); // the whole buffer: `to_contiguous` gives nothing else
        let mut out = Vec::<f32>::with_capacity(src.len());
        out.spare_capacity_mut()
            .par_chunks_exact_mut(keys)
            .zip(src.par_chunks_exact(keys))
            .for_each(|(dst, row)| {
                // SAFETY: `dst` has room for `row`, and is written in full before it is read as `f32`s.
                let dst = unsafe {
                    let dst = dst.as_mut_ptr().cast::<f32>();
                    std::ptr::copy_nonoverlapping(row.as_ptr(), dst, row.len());
                    std::slice::from_raw_parts_mut(dst, row.len())
                };
                softmax_row(dst, nan_to_zero);
            });
        // SAFETY: every row of the capacity was written above.
        unsafe { out.set_len(src.len()) };
        FlexTensor::new(
            Bytes::from_elems(out),
            Layout::contiguous(t.layout().shape().clone()),
            DType::F32,
        )
    }

    /// The least work (`m·n·k` multiply-adds) for which one matrix product is split among rayon's threads, and the
    /// least for a batch of them to be shared out a matrix per task: burn-flex's own thresholds.
    const PARALLEL_PRODUCT: usize = 192 * 192 * 192;
    const PARALLEL_BATCH: usize = 128 * 128 * 128;

    /// Where each matrix of a flex tensor `[batch…, rows, cols]` starts in its buffer, and its row and column strides.
    struct Matrices<'a> {
        data: &'a [f32],
        starts: Vec<isize>,
        rs: isize,
        cs: isize,
    }

    impl<'a> Matrices<'a> {
        fn of(t: &'a FlexTensor) -> Self {
            let (shape, strides) = (t.layout().shape(), t.layout().strides());
            let rank = strides.len();
            let mut starts = vec![t.layout().start_offset() as isize];
            for axis in 0..rank - 2 {
                starts = starts
                    .iter()
                    .flat_map(|&s| (0..shape[axis] as isize).map(move |i| s + i * strides[axis]))
                    .collect();
            }
            Self {
                data: t.storage(),
                starts,
                rs: strides[rank - 2],
                cs: strides[rank - 1],
            }
        }

        fn at(&self, b: usize) -> *const f32 {
            self.data.as_ptr().wrapping_offset(self.starts[b])
        }
    }

    /// `lhs · rhs` (`[batch…, m, k] · [batch…, k, n]`, the same batch axes) plus `bias` (`[n]`) on every row, in f32,
    /// through the `gemm` crate that burn-flex calls, straight into a buffer that is never zeroed. burn-flex's product
    /// writes a zeroed `Vec<u8>` (a pass on one thread when the allocator hands back a used block), copies it into a
    /// block aligned to 16 bytes, and the bias is a third pass. The bias is the first term of the sum, as in PyTorch's
    /// `addmm`, which fills its output with the bias and has the product added to it.
    fn matmul(lhs: FlexTensor, rhs: FlexTensor, bias: Option<FlexTensor>) -> FlexTensor {
        let shape = lhs.layout().shape();
        let rank = shape.num_dims();
        let (m, k, n) = (
            shape[rank - 2],
            shape[rank - 1],
            rhs.layout().shape()[rank - 1],
        );
        let batch: usize = shape[..rank - 2].iter().product();
        let mut out_shape = shape.clone();
        out_shape[rank - 1] = n;
        let (a, b) = (Matrices::of(&lhs), Matrices::of(&rhs));
        let bias = bias.map(|b| b.to_contiguous()); // the whole buffer, from its start
        let bias: Option<&[f32]> = bias.as_ref().map(FlexTensor::storage);

        let size = m * n;
        let mut out = Vec::<f32>::with_capacity(batch * size);
        let dst = &mut out.spare_capacity_mut()[..batch * size];
        if let Some(bias) = bias.filter(|_| n > 0) {
            dst.par_chunks_exact_mut(n).for_each(|row| {
                row.iter_mut().zip(bias).for_each(|(d, &v)| {
                    d.write(v);
                })
            });
        }
        let product = |i: usize, dst: &mut [std::mem::MaybeUninit<f32>], parallelism| {
            // SAFETY: the operands' layouts describe their buffers, and `dst` holds `m·n` elements, each written
            // by `gemm` (and first by the bias where there is one, which `gemm` then reads).
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    dst.as_mut_ptr().cast::<f32>(),
                    1,
                    n as isize,
                    bias.is_some(),
                    a.at(i),
                    a.cs,
                    a.rs,
                    b.at(i),
                    b.cs,
                    b.rs,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                )
            }
        };
        let work = size * k;
        if size > 0
            && batch > 1
            && (batch >= 4 || work < PARALLEL_PRODUCT)
            && batch * work >= PARALLEL_BATCH
        {
            dst.par_chunks_exact_mut(size)
                .enumerate()
                .for_each(|(i, dst)| product(i, dst, gemm::Parallelism::None));
        } else {
            let parallelism = match work >= PARALLEL_PRODUCT {
                true => gemm::Parallelism::Rayon(0),
                false => gemm::Parallelism::None,
            };
            for i in 0..batch {
                product(i, &mut dst[i * size..][..size], parallelism);
            }
        }
        // SAFETY: every element was written above.
        unsafe { out.set_len(batch * size) };
        FlexTensor::new(
            Bytes::from_elems(out),
            Layout::contiguous(out_shape),
            DType::F32,
        )
    }

    /// f32 to f16 or bf16 in one pass, through the `half` crate's slice conversion (F16C instructions for f16 where
    /// the CPU has them). burn-flex 0.21 casts through a temporary f64 copy of the whole tensor: twice the f32 size
    /// in transient memory, and a 4×1024 run with an f16 cache took 30.6 s instead of 21.0 s.
    fn narrow<E: Element>(x: FlexTensor) -> FlexTensor
    where
        [E]: HalfFloatSliceExt,
    {
        let x = x.to_contiguous();
        let src: &[f32] = x.storage();
        let mut out = vec![E::default(); src.len()];
        out.convert_from_f32_slice(src);
        FlexTensor::new(
            Bytes::from_elems(out),
            Layout::contiguous(x.layout().shape().clone()),
            E::dtype(),
        )
    }

    /// A norm's scale on a stack in one pass per row on rayon's threads, in place when the stack is not shared (each
    /// row's sum in the same order whichever thread takes it). burn-flex has no fast path for a scale broadcast over
    /// the components axis (`[components, batch, pos, d_model] / [batch, pos, 1]`):
    /// it walked the stack with a strided iterator, after a mean and a difference that each wrote a new buffer, 42% of
    /// `compute_head_results` + `stack_head_results(apply_ln)` at 8×128. The mean is summed in f64.
    ///
    /// Only for f32, and a scale whose axes past its leading ones match the stack's ([`fits_rows`]).
    fn normalise(x: Physical<Flex>, scale: Physical<Flex>, centre: bool) -> Physical<Flex> {
        let width = x.dims()[MAX_RANK - 1];
        let scale = scale.into_primitive().tensor().to_contiguous();
        let scale: &[f32] = scale.storage();
        let mut t = x.into_primitive().tensor().to_contiguous();
        t.storage_mut::<f32>()
            .par_chunks_exact_mut(width)
            .enumerate()
            .for_each(|(r, row)| {
                let s = scale[r % scale.len()];
                let mean = if centre {
                    (sum_f64(row) / width as f64) as f32
                } else {
                    0.0
                };
                row.iter_mut().for_each(|v| *v = (*v - mean) / s);
            });
        Tensor::from_primitive(TensorPrimitive::Float(t))
    }

    /// The sum of a row in f64, kept in [`LANES`] partial sums ([`fold_lanes`]): one running sum is a
    /// chain of dependent additions, four cycles each (a tenth of `compute_head_results` +
    /// `stack_head_results(apply_ln)` at 8×128 on a Xeon). The same order on every thread.
    fn sum_f64(row: &[f32]) -> f64 {
        let (sums, tail) = fold_lanes(row, 0.0, |s, v| s + f64::from(v));
        sums.iter().sum::<f64>() + tail.iter().map(|&v| f64::from(v)).sum::<f64>()
    }

    /// Whether row `r` of `x` (over its last axis) takes element `r mod len` of `scale`: both f32, the scale's last
    /// axis one, and its axes past its leading ones equal to the stack's.
    fn fits_rows(x: &Physical<Flex>, scale: &Physical<Flex>) -> bool {
        let (dims, scale_dims) = (x.dims(), scale.dims());
        let last = MAX_RANK - 1;
        let first = scale_dims[..last]
            .iter()
            .position(|&d| d != 1)
            .unwrap_or(last);
        scale_dims[last] == 1
            && (first..last).all(|i| scale_dims[i] == dims[i])
            && x.dtype() == DType::F32
            && scale.dtype() == DType::F32
    }

    /// Rotary embeddings in one pass over each head's vector, on rayon's threads: the same products and sum per
    /// element as the generic version, so the same bits, without its slices, negation, concatenations and broadcast
    /// products (each a new buffer, the products over heads through a strided iterator).
    fn rotary(x: FlexTensor, sin: FlexTensor, cos: FlexTensor, adjacent_pairs: bool) -> FlexTensor {
        let shape = x.layout().shape().clone();
        let (positions, heads, d_head, dims) =
            (shape[1], shape[2], shape[3], sin.layout().shape()[3]);
        let (x, sin, cos) = (x.to_contiguous(), sin.to_contiguous(), cos.to_contiguous());
        let (values, sin, cos): (&[f32], &[f32], &[f32]) =
            (x.storage(), sin.storage(), cos.storage());
        let half = dims / 2;
        let mut out = values.to_vec();
        out.par_chunks_exact_mut(d_head)
            .zip(values.par_chunks_exact(d_head))
            .enumerate()
            .for_each(|(r, (row, input))| {
                let p = (r / heads) % positions;
                let (sin, cos) = (&sin[p * dims..][..dims], &cos[p * dims..][..dims]);
                for j in 0..dims {
                    let flipped = match (adjacent_pairs, j % 2 == 0, j < half) {
                        (true, true, _) => -input[j + 1],
                        (true, false, _) => input[j - 1],
                        (false, _, true) => -input[j + half],
                        (false, _, false) => input[j - half],
                    };
                    row[j] = input[j] * cos[j] + flipped * sin[j];
                }
            });
        FlexTensor::new(
            Bytes::from_elems(out),
            Layout::contiguous(shape),
            DType::F32,
        )
    }

    impl Kernels for Flex {
        fn tanh_gelu<const D: usize>(x: Tensor<Self, D>, form: TanhGelu) -> Tensor<Self, D> {
            map(
                x,
                move |x| tanh_gelu(x, form),
                move |x| tanh_gelu_f64(x, form),
            )
        }

        fn silu<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, D> {
            map(x, silu, |x| x / (1.0 + (-x).exp()))
        }

        fn cast<const D: usize>(x: Tensor<Self, D>, dtype: FloatDType) -> Tensor<Self, D> {
            let t = x.into_primitive().tensor();
            let out = match (t.dtype(), dtype) {
                (DType::F32, FloatDType::F16) => narrow::<half::f16>(t),
                (DType::F32, FloatDType::BF16) => narrow::<half::bf16>(t),
                _ => {
                    return Tensor::<Self, D>::from_primitive(TensorPrimitive::Float(t))
                        .cast(dtype);
                }
            };
            Tensor::from_primitive(TensorPrimitive::Float(out))
        }

        fn normalise(x: Physical<Self>, scale: Physical<Self>, centre: bool) -> Physical<Self> {
            if fits_rows(&x, &scale) {
                normalise(x, scale, centre)
            } else {
                tlens_cache_core::kernels::normalise(x, scale, centre)
            }
        }

        fn rotary(
            x: Tensor<Self, 4>,
            sin: &Tensor<Self, 4>,
            cos: &Tensor<Self, 4>,
            adjacent_pairs: bool,
        ) -> Tensor<Self, 4> {
            if [x.dtype(), sin.dtype(), cos.dtype()] != [DType::F32; 3] {
                return crate::rotary::rotate(x, sin, cos, adjacent_pairs);
            }
            let primitive = |t: Tensor<Self, 4>| t.into_primitive().tensor();
            let out = rotary(
                primitive(x),
                primitive(sin.clone()),
                primitive(cos.clone()),
                adjacent_pairs,
            );
            Tensor::from_primitive(TensorPrimitive::Float(out))
        }

        fn causal_scores(
            scores: Tensor<Self, 4>,
            scale: f64,
            cap: Option<f64>,
            window: Option<usize>,
        ) -> Tensor<Self, 4> {
            let [.., queries, keys] = scores.dims();
            if cap.is_some() || queries != keys || scores.dtype() != burn_tensor::DType::F32 {
                return super::generic_causal_scores(scores, scale, cap, window);
            }
            causal_scores(scores, scale, window)
        }

        fn matmul<const D: usize>(
            lhs: Tensor<Self, D>,
            rhs: Tensor<Self, D>,
            bias: Option<Tensor<Self, 1>>,
        ) -> Tensor<Self, D> {
            let (l, r) = (lhs.dims(), rhs.dims());
            let f32s = [lhs.dtype(), rhs.dtype()] == [DType::F32; 2]
                && bias.as_ref().is_none_or(|b| b.dtype() == DType::F32);
            if D < 2 || !f32s || l[..D - 2] != r[..D - 2] || l[D - 1] != r[D - 2] {
                return super::generic_matmul(lhs, rhs, bias);
            }
            let primitive = |t: Tensor<Self, D>| t.into_primitive().tensor();
            let out = matmul(
                primitive(lhs),
                primitive(rhs),
                bias.map(|b| b.into_primitive().tensor()),
            );
            Tensor::from_primitive(TensorPrimitive::Float(out))
        }

        /// The matrix product: burn-flex's broadcast element-wise product walks both operands with a strided
        /// iterator (60% of `stack_neuron_results` at 8×128).
        fn outer<const D: usize>(lhs: Tensor<Self, D>, rhs: Tensor<Self, D>) -> Tensor<Self, D> {
            Self::matmul(lhs, rhs, None)
        }

        fn pattern(scores: Tensor<Self, 4>, nan_to_zero: bool) -> Tensor<Self, 4> {
            let [.., keys] = scores.dims();
            if keys == 0 || scores.dtype() != DType::F32 {
                return super::generic_pattern(scores, nan_to_zero);
            }
            let out = pattern(scores.into_primitive().tensor(), nan_to_zero);
            Tensor::from_primitive(TensorPrimitive::Float(out))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Where a flex tensor's buffer starts: the same address before and after a kernel means it ran in place.
        fn address<const D: usize>(t: &Tensor<Flex, D>) -> *const f32 {
            t.clone()
                .into_primitive()
                .tensor()
                .storage::<f32>()
                .as_ptr()
        }

        /// The fused f32 GELU against the f64 formula over the range activations take, and at the edges.
        #[test]
        fn fused_activations_are_within_float32_rounding_of_the_f64_formula() {
            for form in [TanhGelu::New, TanhGelu::Fast] {
                let mut x = -30.0f32;
                while x < 30.0 {
                    let exact = tanh_gelu_f64(x as f64, form);
                    let err = (tanh_gelu(x, form) as f64 - exact).abs();
                    assert!(
                        err <= 6e-7 && err <= 3e-6 * exact.abs() + 1e-7,
                        "{form:?} at {x}: {} vs {exact}",
                        tanh_gelu(x, form)
                    );
                    x += 1e-4;
                }
                assert_eq!(tanh_gelu(1e6, form), 1e6);
                assert!(tanh_gelu(-1e6, form).abs() < 1e-30);
                assert_eq!(tanh_gelu(f32::INFINITY, form), f32::INFINITY);
                assert!(tanh_gelu(f32::NAN, form).is_nan());
            }
            let mut x = -100.0f32;
            while x < 100.0 {
                let exact = x as f64 / (1.0 + (-x as f64).exp());
                let err = (silu(x) as f64 - exact).abs();
                assert!(
                    err <= 3e-7 * exact.abs() + 1e-30,
                    "silu at {x}: {} vs {exact}",
                    silu(x)
                );
                x += 1e-3;
            }
        }

        /// A tensor many parallel chunks long gets each element's own value, the same bits as the scalar function,
        /// in every chunk (the last one short): rewritten in place when nobody shares it, and into a new buffer,
        /// leaving it as it was, when shared (a cached activation).
        #[test]
        fn parallel_passes_give_each_element_its_own_value() {
            let values: Vec<f32> = (0..5 * PAR_CHUNK + 7)
                .map(|i| (i as f32 * 0.37).sin() * 9.0)
                .collect();
            let expected: Vec<f32> = values
                .iter()
                .map(|&v| tanh_gelu(v, TanhGelu::New))
                .collect();
            let x = Tensor::<Flex, 1>::from_floats(values.as_slice(), &Default::default());
            let shared = Flex::tanh_gelu(x.clone(), TanhGelu::New);
            assert_ne!(
                address(&shared),
                address(&x),
                "a shared tensor is not rewritten"
            );
            assert_eq!(shared.into_data().to_vec::<f32>().unwrap(), expected);
            assert_eq!(x.clone().into_data().to_vec::<f32>().unwrap(), values);
            let before = address(&x);
            let out = Flex::tanh_gelu(x, TanhGelu::New);
            assert_eq!(
                address(&out),
                before,
                "a tensor nobody shares is rewritten in place"
            );
            assert_eq!(out.into_data().to_vec::<f32>().unwrap(), expected);
        }

        /// The fused pattern is the generic softmax within f32 rounding, on rows longer and shorter than its lanes:
        /// zeros under the mask, NaN rows (all keys masked, or a NaN score) as the generic path gives them, or zeros
        /// with `nan_to_zero`. Scores nobody shares are rewritten in place; shared (cached) scores are left alone.
        #[test]
        fn pattern_is_the_softmax_and_leaves_shared_scores_alone() {
            type Generic = burn_autodiff::Autodiff<Flex>;
            let device = Default::default();
            for keys in [5, 37] {
                let rows = 3 * 2 * keys;
                let mut values: Vec<f32> = (0..rows * keys)
                    .map(|i| (i as f32 * 0.61).sin() * 6.0)
                    .collect();
                for (r, row) in values.chunks_mut(keys).enumerate() {
                    row[r % keys + 1..].fill(f32::NEG_INFINITY); // causal
                }
                values[2 * keys..3 * keys].fill(f32::NEG_INFINITY); // a knocked-out query
                values[4 * keys] = f32::NAN;
                let scores = Tensor::<Flex, 1>::from_floats(values.as_slice(), &device)
                    .reshape([3, 2, keys, keys]);
                for nan_to_zero in [false, true] {
                    let generic = Generic::pattern(Tensor::from_inner(scores.clone()), nan_to_zero)
                        .inner()
                        .into_data()
                        .to_vec::<f32>()
                        .unwrap();
                    for input in [
                        scores.clone(),
                        (scores.clone().swap_dims(0, 1) * 1.0).swap_dims(0, 1), // strided
                    ] {
                        let fused = Flex::pattern(input, nan_to_zero)
                            .into_data()
                            .to_vec::<f32>()
                            .unwrap();
                        for (i, (&f, &g)) in fused.iter().zip(&generic).enumerate() {
                            assert!(
                                (f.is_nan() && g.is_nan()) || (f - g).abs() <= 1e-6,
                                "keys {keys}, element {i}: {f} against {g}"
                            );
                        }
                        let row = |r: usize| &fused[r * keys..][..keys];
                        assert!(row(2).iter().chain(row(4)).all(|&x| if nan_to_zero {
                            x == 0.0
                        } else {
                            x.is_nan()
                        }));
                        assert!(
                            row(1)[2..].iter().all(|&x| x == 0.0),
                            "masked keys are exactly zero"
                        );
                    }
                }
                assert_eq!(
                    scores
                        .clone()
                        .into_data()
                        .to_vec::<f32>()
                        .unwrap()
                        .iter()
                        .map(|x| x.to_bits())
                        .collect::<Vec<_>>(),
                    values.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    "the shared scores are unchanged"
                );
                let unique = scores.clone() * 1.0;
                let before = address(&unique);
                assert_eq!(
                    address(&Flex::pattern(unique, false)),
                    before,
                    "unshared scores are rewritten in place"
                );
            }
        }

        /// The flex product against burn-flex's own (the generic default): bit for bit without a bias, on strided,
        /// transposed and broadcast operands, on each of its three ways of sharing the work, and with a bias within
        /// the rounding of a sum taken in another order (the bias first, as `addmm`).
        #[test]
        fn products_are_burn_flex_products() {
            type Generic = burn_autodiff::Autodiff<Flex>;
            let device = Default::default();
            let tensor = |seed: f32, shape: [usize; 4]| {
                let n: usize = shape.iter().product();
                let values: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37 + seed).sin()).collect();
                Tensor::<Flex, 1>::from_floats(values.as_slice(), &device).reshape(shape)
            };
            let generic =
                |a: &Tensor<Flex, 4>, b: &Tensor<Flex, 4>, bias: Option<&Tensor<Flex, 1>>| {
                    Generic::matmul(
                        Tensor::from_inner(a.clone()),
                        Tensor::from_inner(b.clone()),
                        bias.map(|b| Tensor::from_inner(b.clone())),
                    )
                    .inner()
                    .into_data()
                };
            // [batch, heads, m, k] · [batch, heads, k, n]: many small matrices (a task each), one large one (split
            // by gemm), a few small ones (one thread), a query-major lhs, a transposed rhs, a head broadcast, k = 0.
            let cases = [
                (tensor(0.1, [2, 3, 5, 4]), tensor(0.7, [2, 3, 4, 6])),
                (
                    tensor(0.1, [3, 40, 96, 64]).swap_dims(1, 2),
                    tensor(0.7, [3, 96, 64, 96]),
                ),
                (tensor(0.1, [1, 1, 300, 200]), tensor(0.7, [1, 1, 200, 130])),
                (
                    tensor(0.1, [1, 2, 3, 4]),
                    tensor(0.7, [1, 2, 6, 4]).swap_dims(2, 3),
                ),
                (
                    tensor(0.1, [2, 4, 5, 4]),
                    tensor(0.7, [2, 1, 4, 6]).expand([2, 4, 4, 6]),
                ),
                (
                    Tensor::zeros([2, 3, 5, 0], &device),
                    Tensor::zeros([2, 3, 0, 6], &device),
                ),
            ];
            for (a, b) in cases {
                let n = b.dims()[3];
                let expected = generic(&a, &b, None);
                Flex::matmul(a.clone(), b.clone(), None)
                    .into_data()
                    .assert_eq(&expected, true);
                let values: Vec<f32> = (0..n).map(|i| i as f32 / 3.0 - 1.0).collect();
                let bias = Tensor::<Flex, 1>::from_floats(values.as_slice(), &device);
                let expected = generic(&a, &b, Some(&bias));
                Flex::matmul(a, b, Some(bias))
                    .into_data()
                    .assert_approx_eq::<f32>(
                        &expected,
                        burn_tensor::Tolerance::rel_abs(1e-6, 1e-6),
                    );
            }
        }

        /// The kernels flex runs agree with the generic defaults (which `Autodiff<Flex>` keeps, for its gradient),
        /// on contiguous and strided tensors.
        #[test]
        fn flex_fuses_what_the_default_computes() {
            type B = Flex;
            type Generic = burn_autodiff::Autodiff<B>;
            let device = Default::default();
            let values: Vec<f32> = (0..96).map(|i| (i as f32 - 48.0) / 7.0).collect();
            let x = Tensor::<B, 1>::from_floats(values.as_slice(), &device).reshape([4, 24]);
            for t in [x.clone(), x.clone().swap_dims(0, 1)] {
                for form in [TanhGelu::New, TanhGelu::Fast] {
                    let fused = B::tanh_gelu(t.clone(), form).into_data();
                    let generic = Generic::tanh_gelu(Tensor::from_inner(t.clone()), form)
                        .inner()
                        .into_data();
                    fused.assert_approx_eq::<f32>(&generic, burn_tensor::Tolerance::absolute(1e-6));
                }
                let fused = B::silu(t.clone()).into_data();
                let generic = Generic::silu(Tensor::from_inner(t.clone()))
                    .inner()
                    .into_data();
                fused.assert_approx_eq::<f32>(&generic, burn_tensor::Tolerance::absolute(1e-6));
            }
            // f16: both round f32 to nearest even. bf16: flex's own cast goes through f64, where the `half` crate's
            // conversion can round up just above a tie (half-rs issue 151), so it is checked against f32 → bf16.
            let wide = x.clone() * 1000.0 + 0.123;
            for t in [wide.clone(), wide.swap_dims(0, 1)] {
                let fused = B::cast(t.clone(), FloatDType::F16).into_data();
                fused.assert_eq(&t.clone().cast(FloatDType::F16).into_data(), true);
                let fused = B::cast(t.clone(), FloatDType::BF16).into_data();
                let expected: Vec<half::bf16> = t
                    .to_data()
                    .to_vec::<f32>()
                    .unwrap()
                    .into_iter()
                    .map(half::bf16::from_f32)
                    .collect();
                assert_eq!(fused.to_vec::<half::bf16>().unwrap(), expected);
            }
            // Rows of 8 (shorter than the sum's lanes) and of 24 (a full set of lanes and a tail), of multiples of 1/8:
            // their sums are exact, so the generic mean (summed in f32) and flex's (in f64) are the same number.
            let eighths: Vec<f32> = (0..96).map(|i| (i as f32 - 48.0) / 8.0).collect();
            let rows = Tensor::<B, 1>::from_floats(eighths.as_slice(), &device);
            let scale_values: Vec<f32> = (1..=4).map(|i| i as f32 / 3.0).collect();
            let scale = Tensor::<B, 1>::from_floats(scale_values.as_slice(), &device);
            for (stack, scale) in [[1, 1, 3, 2, 2, 8], [1, 1, 1, 2, 2, 24]]
                .into_iter()
                .flat_map(|shape| {
                    [
                        scale.clone().reshape([1, 1, 1, 2, 2, 1]),
                        scale.clone().narrow(0, 0, 2).reshape([1, 1, 1, 2, 1, 1]),
                    ]
                    .map(|scale| (rows.clone().reshape(shape), scale))
                })
            {
                for centre in [true, false] {
                    let fused = B::normalise(stack.clone(), scale.clone(), centre).into_data();
                    let generic = Generic::normalise(
                        Tensor::from_inner(stack.clone()),
                        Tensor::from_inner(scale.clone()),
                        centre,
                    )
                    .inner()
                    .into_data();
                    fused.assert_approx_eq::<f32>(&generic, burn_tensor::Tolerance::absolute(1e-6));
                }
            }
            // Products of one term per element, `[4, 3, 1] · [4, 1, 8]`: the matrix product gives the broadcast
            // product's bits.
            let column = x.clone().narrow(1, 0, 3).reshape([4, 3, 1]);
            let row = x.clone().narrow(1, 8, 8).reshape([4, 1, 8]);
            let generic = Generic::outer(
                Tensor::from_inner(column.clone()),
                Tensor::from_inner(row.clone()),
            )
            .inner()
            .into_data();
            B::outer(column, row).into_data().assert_eq(&generic, true);
            // [batch 2, pos 3, heads 2, d_head 8], rotating all 8 dimensions or the first 4.
            let heads = Tensor::<B, 1>::from_floats(&values[..96], &device).reshape([2, 3, 2, 8]);
            for dims in [8, 4] {
                let table = |f: fn(f32) -> f32| {
                    let v: Vec<f32> = (0..3 * dims).map(|i| f(i as f32 / 5.0)).collect();
                    Tensor::<B, 1>::from_floats(v.as_slice(), &device).reshape([1, 3, 1, dims])
                };
                let (sin, cos) = (table(f32::sin), table(f32::cos));
                for adjacent in [true, false] {
                    let fused = B::rotary(heads.clone(), &sin, &cos, adjacent).into_data();
                    let generic = Generic::rotary(
                        Tensor::from_inner(heads.clone()),
                        &Tensor::from_inner(sin.clone()),
                        &Tensor::from_inner(cos.clone()),
                        adjacent,
                    )
                    .inner()
                    .into_data();
                    fused.assert_eq(&generic, true);
                }
            }
            let scores = x.reshape([2, 3, 4, 4]);
            for s in [scores.clone(), scores.swap_dims(2, 3)] {
                for window in [None, Some(2), Some(9)] {
                    let fused = B::causal_scores(s.clone(), 0.7, None, window).into_data();
                    let generic =
                        Generic::causal_scores(Tensor::from_inner(s.clone()), 0.7, None, window)
                            .inner()
                            .into_data();
                    fused.assert_eq(&generic, true);
                }
            }
        }
    }
}
