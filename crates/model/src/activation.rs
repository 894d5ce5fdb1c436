//! The MLP activation functions, written as TransformerLens computes them.

use burn_tensor::{Tensor, activation, backend::Backend};
use tlens_cache_core::ActFn;

/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`: GPT-2's GELU (`gelu_new`, `gelu_pytorch_tanh`).
///
/// The cube is two multiplications, not `powi`: the CPU backends compute a power with libm's `powf`, which took about
/// 5% of a GPT-2 forward pass on flex (`perf record` on `tlens-bench flex forward 8 128`).
fn gelu_new<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let cube = x.clone() * x.clone() * x.clone();
    let inner = (x.clone() + cube * 0.044715) * (2.0 / std::f64::consts::PI).sqrt();
    x * 0.5 * (inner.tanh() + 1.0)
}

/// `0.5·x·(1 + tanh(0.7978845608·x·(1 + 0.044715·x²)))`.
fn gelu_fast<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let inner = x.clone() * 0.7978845608 * (x.clone() * x.clone() * 0.044715 + 1.0);
    x * 0.5 * (inner.tanh() + 1.0)
}

/// Applies an activation over the last axis. For `solu_ln` this is the SoLU part (`x·softmax(x)`), before `mlp.ln`.
pub fn apply<B: Backend, const D: usize>(act: ActFn, x: Tensor<B, D>) -> Tensor<B, D> {
    match act {
        ActFn::Relu => activation::relu(x),
        ActFn::Gelu => activation::gelu(x),
        ActFn::GeluNew | ActFn::GeluPytorchTanh => gelu_new(x),
        ActFn::GeluFast => gelu_fast(x),
        ActFn::Silu => activation::silu(x),
        ActFn::SoluLn => x.clone() * activation::softmax(x, D - 1),
    }
}
