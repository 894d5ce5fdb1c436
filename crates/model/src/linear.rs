//! The model's dense products, `[batch, pos, d_in] · [d_in, d_out] + bias`, computed as one `[batch·pos, d_in]` matrix
//! product rather than a batched one with the weight broadcast over the batch: the CPU backends run the single large
//! product faster (about 9% of a GPT-2 forward on flex), and every backend gives the same values.

use burn_tensor::{FloatDType, Tensor};

use crate::kernels::Kernels;
use tlens_cache_core::{in_dtype, via_f32};

/// `x · weight + bias` over the last axis of `x`, rounded once, as TransformerLens's fused `F.linear` / `addmm`: a
/// half-precision model multiplies and adds in f32 and rounds the sum to its precision (rounding the product first and
/// the sum again changes the last bit of about a third of a bf16 model's queries and keys).
pub(crate) fn linear<B: Kernels>(
    x: Tensor<B, 3>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 3> {
    let f32 = FloatDType::F32;
    via_f32(x, |x| {
        let [batch, pos, d_in] = x.dims();
        let [_, d_out] = weight.dims();
        B::matmul(
            x.reshape([batch * pos, d_in]),
            in_dtype(weight, f32),
            bias.map(|b| in_dtype(b, f32)),
        )
        .reshape([batch, pos, d_out])
    })
}
