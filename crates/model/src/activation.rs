//! The MLP activation functions, written as TransformerLens computes them.

use burn_tensor::{Tensor, activation};
use tlens_cache_core::ActFn;

use crate::kernels::{Kernels, TanhGelu};

/// Applies an activation over the last axis. For `solu_ln` this is the SoLU part (`x·softmax(x)`), before `mlp.ln`.
pub fn apply<B: Kernels, const D: usize>(act: ActFn, x: Tensor<B, D>) -> Tensor<B, D> {
    match act {
        ActFn::Relu => activation::relu(x),
        ActFn::Gelu => activation::gelu(x),
        ActFn::GeluNew | ActFn::GeluPytorchTanh => B::tanh_gelu(x, TanhGelu::New),
        ActFn::GeluFast => B::tanh_gelu(x, TanhGelu::Fast),
        ActFn::Silu => B::silu(x),
        ActFn::SoluLn => x.clone() * activation::softmax(x, D - 1),
    }
}
