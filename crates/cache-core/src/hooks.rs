//! Forward hooks: the [`Hook`] trait (TransformerLens's `HookPoint` forward hooks) and [`Hooks`], the hooks of one
//! forward pass. Caching is one hook ([`CacheHook`](crate::recorder::CacheHook)); interventions (ablation, patching,
//! steering) are others.

use burn_tensor::{Tensor, backend::Backend};

use crate::derived::Derived;
use crate::dyn_tensor::DynTensor;
use crate::error::{CacheError, Result};
use crate::hook_point::HookPoint;

/// A forward hook: it sees the activation at the hook points it fires at and may replace it; the forward pass
/// continues with the replacement.
///
/// ```
/// use tlens_cache_core::{DynTensor, Hook, HookPoint, Result};
/// /// Doubles the residual stream entering every block.
/// struct Double;
/// impl<B: burn_tensor::backend::Backend> Hook<B> for Double {
///     fn fires_at(&self, point: HookPoint) -> bool {
///         matches!(point, HookPoint::Block(_, tlens_cache_core::BlockHook::ResidPre))
///     }
///     fn apply(&mut self, _: HookPoint, x: &DynTensor<B>) -> Result<Option<DynTensor<B>>> {
///         Ok(Some(x.clone().map(|t| t * 2.0)))
///     }
/// }
/// ```
pub trait Hook<B: Backend> {
    /// Whether the hook wants to see this hook point; hook points no hook wants cost nothing.
    fn fires_at(&self, point: HookPoint) -> bool;

    /// Sees an activation; returns its replacement (same shape), or `None` to leave it unchanged.
    fn apply(
        &mut self,
        point: HookPoint,
        activation: &DynTensor<B>,
    ) -> Result<Option<DynTensor<B>>>;

    /// Whether the hook can take this hook point's activation as the computation that makes it ([`Derived`]) rather
    /// than as a tensor. Only a hook that keeps what it sees, and changes nothing, can: the forward pass then need not
    /// hold the activation whole (the attention scores and pattern). The default is no.
    fn takes_derived(&self, _point: HookPoint) -> bool {
        false
    }

    /// Sees an activation as its computation; called only where [`takes_derived`](Self::takes_derived) says yes.
    /// The default computes it and applies the hook to the tensor, ignoring any replacement.
    fn apply_derived(&mut self, point: HookPoint, activation: &Derived<B>) -> Result<()> {
        self.apply(point, &activation.compute()).map(drop)
    }
}

/// A closure as a hook at one hook point: it gets the activation and returns a replacement, or `None`.
///
/// ```
/// use tlens_cache_core::{BlockHook, DynTensor, FnHook, HookPoint, Result};
/// type B = burn_ndarray::NdArray;
/// // Doubles the residual stream entering block 1.
/// let double = FnHook::new(HookPoint::Block(1, BlockHook::ResidPre), |x: &DynTensor<B>| -> Result<_> {
///     Ok(Some(x.clone().map(|t| t * 2.0)))
/// });
/// ```
pub struct FnHook<F> {
    point: HookPoint,
    f: F,
}

impl<F> FnHook<F> {
    /// A hook that calls `f` at `point`.
    pub fn new(point: HookPoint, f: F) -> Self {
        Self { point, f }
    }
}

impl<B: Backend, F: FnMut(&DynTensor<B>) -> Result<Option<DynTensor<B>>>> Hook<B> for FnHook<F> {
    fn fires_at(&self, point: HookPoint) -> bool {
        point == self.point
    }

    fn apply(&mut self, _: HookPoint, activation: &DynTensor<B>) -> Result<Option<DynTensor<B>>> {
        (self.f)(activation)
    }
}

/// The hooks of one forward pass, applied in order at every hook point.
pub struct Hooks<'a, B: Backend> {
    hooks: Vec<&'a mut dyn Hook<B>>,
}

impl<'a, B: Backend> Hooks<'a, B> {
    /// Hooks applied in this order (an intervention before the cache, so the cache sees what it changed).
    pub fn new(hooks: Vec<&'a mut dyn Hook<B>>) -> Self {
        Self { hooks }
    }

    /// No hooks: a plain forward pass.
    pub fn none() -> Self {
        Self { hooks: Vec::new() }
    }

    /// Whether any hook fires at `point`.
    pub fn fires_at(&self, point: HookPoint) -> bool {
        self.hooks.iter().any(|h| h.fires_at(point))
    }

    /// Whether every hook that fires at `point` takes its activation as a [`Derived`] computation (true when none
    /// fires): the forward pass may then hand them [`fire_derived`](Self::fire_derived) instead of the tensor.
    pub fn take_derived(&self, point: HookPoint) -> bool {
        self.hooks
            .iter()
            .filter(|h| h.fires_at(point))
            .all(|h| h.takes_derived(point))
    }

    /// Hands the computation of `point`'s activation to the hooks that fire there; the caller has checked
    /// [`take_derived`](Self::take_derived), so none of them can change it.
    pub fn fire_derived(&mut self, point: HookPoint, activation: &Derived<B>) -> Result<()> {
        for hook in self.hooks.iter_mut().filter(|h| h.fires_at(point)) {
            hook.apply_derived(point, activation)?;
        }
        Ok(())
    }

    /// Passes an activation through the hooks that fire at `point` and returns what the forward pass continues
    /// with. A replacement of another shape is an error naming the hook point and both shapes.
    pub fn fire<const D: usize>(
        &mut self,
        point: HookPoint,
        activation: Tensor<B, D>,
    ) -> Result<Tensor<B, D>> {
        if !self.fires_at(point) {
            return Ok(activation);
        }
        let shape = activation.dims();
        let mut current = DynTensor::new(activation.clone());
        let mut replaced = false;
        for hook in self.hooks.iter_mut().filter(|h| h.fires_at(point)) {
            if let Some(new) = hook.apply(point, &current)? {
                if new.shape() != shape {
                    return Err(CacheError::Shape(format!(
                        "a hook at `{point}` returned shape {:?} for an activation of shape {shape:?}",
                        new.shape()
                    )));
                }
                current = new;
                replaced = true;
            }
        }
        if replaced {
            current.into_tensor::<D>()
        } else {
            Ok(activation)
        }
    }
}
