//! The MLP activation functions, written as TransformerLens computes them.

use burn_tensor::{FloatDType, Tensor, activation};
use tlens_cache_core::{ActFn, in_dtype, via_f32};

use crate::kernels::{Kernels, TanhGelu};

/// Applies an activation over the last axis. For `solu_ln` this is the SoLU part (`x·softmax(x)`), before `mlp.ln`.
///
/// A half-precision model computes what TransformerLens writes as several PyTorch ops (`gelu_new`, `gelu_fast`,
/// SoLU) one op at a time, each rounded to the model's precision ([`Kernels::half_ops`]), and the one-kernel
/// activations in f32 rounded once: the values then match TransformerLens's bit for bit, where one rounding for
/// `gelu_new` differs in the last bit of a third of them.
pub fn apply<B: Kernels, const D: usize>(act: ActFn, x: Tensor<B, D>) -> Tensor<B, D> {
    let dtype = FloatDType::from(x.dtype());
    if dtype == FloatDType::F32 {
        return fused(act, x);
    }
    let r = |t| rounded(t, dtype);
    match act {
        // 0.5 * x * (1.0 + tanh(sqrt(2/π) * (x + 0.044715 * pow(x, 3.0))))
        ActFn::GeluNew => B::half_ops(x, |x| {
            // `pow(x, 3.0)` as two products (on the parity plans, the values PyTorch's `pow` gives).
            let cube = r(r(x.clone() * x.clone()) * x.clone());
            let inner = r(x.clone() + r(cube * 0.044715));
            let tanh = r(r(inner * (2.0 / std::f64::consts::PI).sqrt()).tanh());
            r(x * 0.5) * r(tanh + 1.0)
        }),
        // 0.5 * x * (1.0 + tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))
        ActFn::GeluFast => B::half_ops(x, |x| {
            let square = r(r(x.clone() * 0.044715) * x.clone());
            let inner = r(r(x.clone() * 0.7978845608) * r(square + 1.0));
            r(x * 0.5) * r(r(inner.tanh()) + 1.0)
        }),
        // x * softmax(x)
        ActFn::SoluLn => B::half_ops(x, |x| x.clone() * r(activation::softmax(x, D - 1))),
        // One PyTorch kernel each (`F.gelu(approximate="tanh")` for gelu_pytorch_tanh): rounded once.
        ActFn::Relu | ActFn::Gelu | ActFn::GeluPytorchTanh | ActFn::Silu => {
            via_f32(x, |x| fused(act, x))
        }
    }
}

/// `t` rounded to `dtype` and kept in the precision it is computed in: one PyTorch op's result in a half-precision
/// model, in a chain of [`Kernels::half_ops`] (a no-op where the chain runs in `dtype` itself).
pub(crate) fn rounded<B: burn_tensor::backend::Backend, const D: usize>(
    t: Tensor<B, D>,
    dtype: FloatDType,
) -> Tensor<B, D> {
    let working = FloatDType::from(t.dtype());
    in_dtype(in_dtype(t, dtype), working)
}

/// The activation in f32, with the backend's fused kernels.
fn fused<B: Kernels, const D: usize>(act: ActFn, x: Tensor<B, D>) -> Tensor<B, D> {
    match act {
        ActFn::Relu => activation::relu(x),
        ActFn::Gelu => activation::gelu(x),
        ActFn::GeluNew | ActFn::GeluPytorchTanh => B::tanh_gelu(x, TanhGelu::New),
        ActFn::GeluFast => B::tanh_gelu(x, TanhGelu::Fast),
        ActFn::Silu => B::silu(x),
        ActFn::SoluLn => x.clone() * activation::softmax(x, D - 1),
    }
}
