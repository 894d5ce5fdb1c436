//! [`Derived`]: an activation kept as the computation that makes it, and [`Kept`], how a cache holds each activation.
//!
//! The attention scores and pattern are most of a full cache: GPT-2 small at 4×1024 has 4.8 GB of them in 8.6 GB.
//! Both follow exactly from the queries and keys the cache keeps anyway (and whose buffers the scores' recipe shares),
//! so a cached run that no hook asks to see them whole keeps their recipe instead: the forward pass then computes them
//! a few heads at a time, as a plain forward pass does, and the cache computes them again, in the same slices with the
//! same kernels and so to the same bits, each time they are read.

use std::sync::Arc;

use burn_tensor::backend::Backend;

use crate::dyn_tensor::{DynTensor, logical_axis};
use crate::error::Result;
use crate::slice::{Slice, SliceRole};

/// The computation of one activation.
type Recipe<B> = Arc<dyn Fn() -> DynTensor<B> + Send + Sync>;

/// An activation that is computed when it is read, from tensors the recipe holds.
///
/// ```
/// use tlens_cache_core::{Derived, DynTensor, Slice};
/// type B = burn_ndarray::NdArray;
/// let ones = Derived::new(vec![2, 3], || DynTensor::<B>::zeros(&[2, 3], &Default::default()).map(|t| t + 1.0));
/// let row = ones.slice(&Slice::Index(1), 0, "batch_slice").unwrap();
/// assert_eq!((row.shape(), row.compute().to_vec()), (&[3][..], vec![1.0; 3]));
/// assert!(ones.slice(&Slice::Index(2), 0, "batch_slice").is_err());
/// ```
#[derive(Clone)]
pub struct Derived<B: Backend> {
    recipe: Recipe<B>,
    shape: Vec<usize>,
}

impl<B: Backend> Derived<B> {
    /// The activation of shape `shape` that `recipe` computes.
    pub fn new(
        shape: Vec<usize>,
        recipe: impl Fn() -> DynTensor<B> + Send + Sync + 'static,
    ) -> Self {
        Self {
            recipe: Arc::new(recipe),
            shape,
        }
    }

    /// The shape the recipe computes.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Runs the recipe.
    pub fn compute(&self) -> DynTensor<B> {
        (self.recipe)()
    }

    /// The same activation with `slice` applied to a logical axis (negative counts from the end). The slice is checked
    /// here, against the shape, so that reading the result cannot fail.
    pub fn slice(&self, slice: &Slice, axis: isize, role: SliceRole) -> Result<Self> {
        // The slice applied to the axis's positions alone: the same checks and the same resulting length.
        let at = logical_axis(&self.shape, axis)?;
        let probe = DynTensor::<B>::zeros(&[self.shape[at]], &Default::default());
        let selected = slice.apply(probe, 0, role)?.shape();
        let mut shape = self.shape.clone();
        shape.splice(at..=at, selected);
        let (inner, slice) = (self.recipe.clone(), slice.clone());
        Ok(Self::new(shape, move || {
            slice
                .apply(inner(), axis, role)
                .expect("the slice was checked against this shape when it was added")
        }))
    }

    /// The same activation with a shape-preserving `f` applied (a cast, a move to another device).
    pub fn map(&self, f: impl Fn(DynTensor<B>) -> DynTensor<B> + Send + Sync + 'static) -> Self {
        let inner = self.recipe.clone();
        Self::new(self.shape.clone(), move || f(inner()))
    }
}

impl<B: Backend> std::fmt::Debug for Derived<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Derived {{ shape: {:?} }}", self.shape)
    }
}

/// How a cache holds one activation: the tensor, or the recipe that computes it.
#[derive(Clone, Debug)]
pub enum Kept<B: Backend> {
    /// The tensor itself.
    Tensor(DynTensor<B>),
    /// Computed when read.
    Derived(Derived<B>),
}

impl<B: Backend> Kept<B> {
    /// The activation's tensor, computed if it is derived.
    pub fn tensor(&self) -> DynTensor<B> {
        match self {
            Kept::Tensor(t) => t.clone(),
            Kept::Derived(d) => d.compute(),
        }
    }

    /// The activation's shape, without computing it.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Kept::Tensor(t) => t.shape(),
            Kept::Derived(d) => d.shape.clone(),
        }
    }

    /// The bytes of tensor memory this entry holds on its own: none for a derived activation.
    pub fn stored_bytes(&self) -> usize {
        match self {
            Kept::Tensor(t) => t.numel() * t.physical_tensor().dtype().size(),
            Kept::Derived(_) => 0,
        }
    }

    /// The same activation with `slice` applied to a logical axis.
    pub fn slice(&self, slice: &Slice, axis: isize, role: SliceRole) -> Result<Self> {
        Ok(match self {
            Kept::Tensor(t) => Kept::Tensor(slice.apply(t.clone(), axis, role)?),
            Kept::Derived(d) => Kept::Derived(d.slice(slice, axis, role)?),
        })
    }

    /// The same activation with a shape-preserving `f` applied, now or when read.
    pub fn map(self, f: impl Fn(DynTensor<B>) -> DynTensor<B> + Send + Sync + 'static) -> Self {
        match self {
            Kept::Tensor(t) => Kept::Tensor(f(t)),
            Kept::Derived(d) => Kept::Derived(d.map(f)),
        }
    }
}

impl<B: Backend> From<DynTensor<B>> for Kept<B> {
    fn from(t: DynTensor<B>) -> Self {
        Kept::Tensor(t)
    }
}

impl<B: Backend> From<Derived<B>> for Kept<B> {
    fn from(d: Derived<B>) -> Self {
        Kept::Derived(d)
    }
}
