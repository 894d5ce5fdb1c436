//! [`DynTensor`]: a float tensor whose rank is known only at run time.
//!
//! TransformerLens's results change rank with their arguments: a cache without a batch axis drops one axis from
//! everything, an integer `pos_slice` drops another, and every stack method adds a component axis in front. burn's
//! tensors carry their rank in the type (`Tensor<B, D>`), so the cache stores a `Tensor<B, 6>` whose *leading* axes are
//! padding of size 1 and whose last `rank` axes are the logical ones. This layout makes the operations the cache needs
//! cheap and uniform:
//! - negative axes (`-1` = `D`, `-2` = positions, ...) map to fixed physical axes whatever the rank;
//! - element-wise operations between ranks broadcast exactly as in PyTorch (missing leading axes are size 1);
//! - stacking components is a concatenation on the padding axis just in front of the logical ones.
//!
//! Convert to a typed tensor with [`DynTensor::into_tensor`], which checks the rank.

use burn_tensor::{Int, Shape, Tensor, TensorData, backend::Backend};

use crate::error::{CacheError, Result};
use crate::kernels::{CastFn, MatmulFn, NormaliseFn};

/// The physical rank behind every [`DynTensor`]; the highest logical rank it can hold.
pub const MAX_RANK: usize = 6;

/// A float tensor of logical rank `0..=MAX_RANK`, with PyTorch-style negative axes and broadcasting.
#[derive(Clone, Debug)]
pub struct DynTensor<B: Backend> {
    inner: Tensor<B, MAX_RANK>,
    rank: usize,
}

impl<B: Backend> DynTensor<B> {
    /// Wraps a typed tensor; its rank becomes the logical rank.
    pub fn new<const D: usize>(tensor: Tensor<B, D>) -> Self {
        Self {
            inner: tensor.unsqueeze::<MAX_RANK>(),
            rank: D,
        }
    }

    /// Builds a tensor from data (any float or int dtype, converted to the backend's float type).
    pub fn from_data(data: TensorData, device: &burn_tensor::Device<B>) -> Result<Self> {
        let shape = data.shape.to_vec();
        let rank = shape.len();
        if rank > MAX_RANK {
            return Err(CacheError::Shape(format!(
                "rank {rank} is above the supported {MAX_RANK}"
            )));
        }
        let padded = pad_shape(&shape);
        let data = TensorData {
            shape: Shape::from(padded.to_vec()),
            ..data
        };
        let inner = Tensor::<B, MAX_RANK>::from_data(data.convert::<f32>(), device);
        Ok(Self { inner, rank })
    }

    /// The logical rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The logical shape.
    pub fn shape(&self) -> Vec<usize> {
        self.inner.dims()[MAX_RANK - self.rank..].to_vec()
    }

    /// The length of a logical axis (negative counts from the end).
    pub fn dim(&self, axis: isize) -> Result<usize> {
        Ok(self.inner.dims()[self.physical(axis)?])
    }

    /// The device the tensor lives on.
    pub fn device(&self) -> burn_tensor::Device<B> {
        self.inner.device()
    }

    /// The padded physical tensor, for operations that want it directly.
    pub fn physical_tensor(&self) -> &Tensor<B, MAX_RANK> {
        &self.inner
    }

    /// Wraps a padded physical tensor as a tensor of the given logical rank.
    pub(crate) fn from_physical(inner: Tensor<B, MAX_RANK>, rank: usize) -> Self {
        debug_assert!(inner.dims()[..MAX_RANK - rank].iter().all(|&d| d == 1));
        Self { inner, rank }
    }

    /// Converts to a typed tensor, checking that the logical rank is `D`.
    pub fn into_tensor<const D: usize>(self) -> Result<Tensor<B, D>> {
        if self.rank != D {
            return Err(CacheError::Shape(format!(
                "expected a rank-{D} tensor, found shape {:?} (rank {})",
                self.shape(),
                self.rank
            )));
        }
        let shape: [usize; D] = self.shape().try_into().expect("rank checked");
        if shape.contains(&0) {
            return Ok(Tensor::zeros(shape, &self.inner.device()));
        }
        Ok(self.inner.reshape(shape))
    }

    /// The values, with the logical shape.
    pub fn into_data(self) -> TensorData {
        let shape = self.shape();
        let data = self.inner.into_data();
        TensorData {
            shape: Shape::from(shape),
            ..data
        }
    }

    /// The tensor in another float precision (the values rounded to nearest even; no copy when it already is).
    pub fn cast(self, dtype: burn_tensor::FloatDType) -> Self {
        self.cast_with(dtype, |t, dtype| t.cast(dtype))
    }

    /// [`cast`](Self::cast) through a given conversion (a backend's own kernel).
    pub fn cast_with(self, dtype: burn_tensor::FloatDType, cast: CastFn<B>) -> Self {
        if self.inner.dtype() == burn_tensor::DType::from(dtype) {
            return self;
        }
        self.map(|t| cast(t, dtype))
    }

    /// The values as `f32`, row-major.
    pub fn to_vec(&self) -> Vec<f32> {
        self.inner
            .to_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("converted to f32")
    }

    /// Maps a logical axis (negative counts from the end) to its physical axis.
    pub fn physical(&self, axis: isize) -> Result<usize> {
        Ok(MAX_RANK - self.rank + logical_axis(&self.shape(), axis)?)
    }

    /// Keeps `length` entries of `axis` from `start`, as `torch.narrow` (an empty range gives an empty tensor; a range
    /// past the end of the axis is an error).
    pub fn narrow(self, axis: isize, start: usize, length: usize) -> Result<Self> {
        let p = self.physical(axis)?;
        let len = self.inner.dims()[p];
        if start.checked_add(length).is_none_or(|end| end > len) {
            return Err(CacheError::Shape(format!(
                "cannot narrow axis {axis} of shape {:?} to {length} entries from {start}",
                self.shape()
            )));
        }
        if length == 0 {
            // burn refuses an empty narrow.
            let mut shape = self.shape();
            shape[p - (MAX_RANK - self.rank)] = 0;
            return Ok(Self::zeros(&shape, &self.device()));
        }
        Ok(Self {
            inner: self.inner.narrow(p, start, length),
            rank: self.rank,
        })
    }

    /// Gathers the given indices along `axis`; the axis is kept. An index past the end of the axis is an error.
    pub fn select(self, axis: isize, indices: &[usize]) -> Result<Self> {
        let p = self.physical(axis)?;
        let len = self.inner.dims()[p];
        if let Some(bad) = indices.iter().find(|&&i| i >= len) {
            return Err(CacheError::Shape(format!(
                "index {bad} is out of range for axis {axis} of shape {:?}",
                self.shape()
            )));
        }
        let device = self.inner.device();
        let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [indices.len()]), &device);
        Ok(Self {
            inner: self.inner.select(p, idx),
            rank: self.rank,
        })
    }

    /// Takes entry `index` of `axis` and removes the axis. An index past the end of the axis is an error.
    pub fn index(self, axis: isize, index: usize) -> Result<Self> {
        let p = self.physical(axis)?;
        if index >= self.inner.dims()[p] {
            return Err(CacheError::Shape(format!(
                "index {index} is out of range for axis {axis} of shape {:?}",
                self.shape()
            )));
        }
        let narrowed = self.inner.narrow(p, index, 1);
        Ok(Self::drop_unit_axis(narrowed, p, self.rank))
    }

    /// Removes a size-1 physical axis `p` from a tensor of logical rank `rank`.
    fn drop_unit_axis(inner: Tensor<B, MAX_RANK>, p: usize, rank: usize) -> Self {
        let dims = inner.dims();
        let mut kept: Vec<usize> = dims[MAX_RANK - rank..].to_vec();
        kept.remove(p - (MAX_RANK - rank));
        Self {
            inner: reshape_padded(inner, pad_shape(&kept)),
            rank: rank - 1,
        }
    }

    /// Removes a size-1 logical axis.
    pub fn squeeze(self, axis: isize) -> Result<Self> {
        let p = self.physical(axis)?;
        if self.inner.dims()[p] != 1 {
            return Err(CacheError::Shape(format!(
                "cannot squeeze axis {axis} of shape {:?}",
                self.shape()
            )));
        }
        Ok(Self::drop_unit_axis(self.inner, p, self.rank))
    }

    /// Inserts a size-1 axis so that it becomes logical axis `axis` (0 = in front, -1 = at the end).
    pub fn unsqueeze(self, axis: isize) -> Result<Self> {
        if self.rank == MAX_RANK {
            return Err(CacheError::Shape(format!(
                "rank {MAX_RANK} is the most a tensor can have here"
            )));
        }
        let new_rank = self.rank as isize + 1;
        let logical = if axis < 0 { new_rank + axis } else { axis };
        if logical < 0 || logical >= new_rank {
            return Err(CacheError::Shape(format!(
                "cannot insert axis {axis} into shape {:?}",
                self.shape()
            )));
        }
        let mut shape = self.shape();
        shape.insert(logical as usize, 1);
        Ok(Self {
            inner: reshape_padded(self.inner, pad_shape(&shape)),
            rank: self.rank + 1,
        })
    }

    /// Reshapes to a new logical shape with the same number of elements. To the shape it has, a no-op: burn-ndarray
    /// 0.21 copies the whole tensor on every reshape, even one that changes nothing.
    pub fn reshape(self, shape: &[usize]) -> Result<Self> {
        if self.shape() == shape {
            return Ok(self);
        }
        let have: usize = self.shape().iter().product();
        let want: usize = shape.iter().product();
        if have != want || shape.len() > MAX_RANK {
            return Err(CacheError::Shape(format!(
                "cannot reshape {:?} to {:?}",
                self.shape(),
                shape
            )));
        }
        Ok(Self {
            inner: reshape_padded(self.inner, pad_shape(shape)),
            rank: shape.len(),
        })
    }

    /// Moves logical axis `from` to position `to` (both may be negative), as `torch.movedim`.
    ///
    /// The result is a copy, never a view: burn-tch 0.21 marks a permuted view as the sole owner of its memory, so a
    /// later in-place operation on it (burn-tch subtracts and divides in place when it can) would write through into
    /// the cached activation it came from. `repeat_dim(_, 1)` allocates on every backend.
    pub fn movedim(self, from: isize, to: isize) -> Result<Self> {
        Ok(self.moved_view(from, to)?.copied())
    }

    /// The same values in memory of their own (`repeat_dim(_, 1)` allocates on every backend).
    pub(crate) fn copied(self) -> Self {
        Self {
            inner: self.inner.repeat_dim(0, 1),
            rank: self.rank,
        }
    }

    /// [`movedim`](Self::movedim) as a view of the same memory, without the copy: only for a tensor nobody else
    /// holds, or for one whose result is copied before anything could write to it (a concatenation copies).
    pub(crate) fn moved_view(self, from: isize, to: isize) -> Result<Self> {
        let pf = self.physical(from)?;
        let pt = self.physical(to)?;
        Ok(Self {
            inner: self.inner.movedim(pf, pt),
            rank: self.rank,
        })
    }

    /// Stacks equally shaped tensors on a new leading axis, as `torch.stack(dim=0)`.
    pub fn stack(parts: Vec<Self>) -> Result<Self> {
        let first = parts
            .first()
            .ok_or_else(|| CacheError::InvalidArgument("nothing to stack".into()))?;
        let (rank, shape) = (first.rank, first.shape());
        if rank == MAX_RANK {
            return Err(CacheError::Shape(format!(
                "cannot stack tensors of rank {MAX_RANK}"
            )));
        }
        if let Some(bad) = parts.iter().find(|t| t.shape() != shape) {
            return Err(CacheError::Shape(format!(
                "cannot stack shapes {:?} and {:?}",
                shape,
                bad.shape()
            )));
        }
        let axis = MAX_RANK - rank - 1;
        let inner = Tensor::cat(parts.into_iter().map(|t| t.inner).collect(), axis);
        Ok(Self {
            inner,
            rank: rank + 1,
        })
    }

    /// Concatenates tensors of equal rank along a logical axis, as `torch.cat`.
    pub fn cat(parts: Vec<Self>, axis: isize) -> Result<Self> {
        let first = parts
            .first()
            .ok_or_else(|| CacheError::InvalidArgument("nothing to concatenate".into()))?;
        let p = first.physical(axis)?;
        let rank = first.rank;
        let mut expected = first.shape();
        let logical = p - (MAX_RANK - rank);
        for t in &parts {
            let mut s = t.shape();
            if s.len() != rank {
                return Err(CacheError::Shape(format!(
                    "cannot concatenate {:?} and {:?}",
                    expected, s
                )));
            }
            s[logical] = expected[logical];
            if s != expected {
                return Err(CacheError::Shape(format!(
                    "cannot concatenate {:?} and {:?}",
                    expected,
                    t.shape()
                )));
            }
            expected = s;
        }
        Ok(Self {
            inner: Tensor::cat(parts.into_iter().map(|t| t.inner).collect(), p),
            rank,
        })
    }

    /// Sums over a logical axis and removes it.
    pub fn sum_axis(self, axis: isize) -> Result<Self> {
        let p = self.physical(axis)?;
        let summed = self.inner.sum_dim(p);
        Ok(Self::drop_unit_axis(summed, p, self.rank))
    }

    /// Means over a logical axis, keeping it with size 1.
    pub fn mean_axis_keep(self, axis: isize) -> Result<Self> {
        let p = self.physical(axis)?;
        Ok(Self {
            inner: self.inner.mean_dim(p),
            rank: self.rank,
        })
    }

    /// The shape two tensors broadcast to, or an error naming both.
    pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
        let rank = a.len().max(b.len());
        let pad = |s: &[usize]| -> Vec<usize> {
            std::iter::repeat_n(1, rank - s.len())
                .chain(s.iter().copied())
                .collect()
        };
        let (pa, pb) = (pad(a), pad(b));
        pa.iter()
            .zip(&pb)
            .map(|(&x, &y)| match (x, y) {
                (x, y) if x == y => Ok(x),
                (1, y) => Ok(y),
                (x, 1) => Ok(x),
                _ => Err(CacheError::Shape(format!(
                    "shapes {a:?} and {b:?} do not broadcast"
                ))),
            })
            .collect()
    }

    fn binary(
        self,
        other: Self,
        op: impl FnOnce(Tensor<B, MAX_RANK>, Tensor<B, MAX_RANK>) -> Tensor<B, MAX_RANK>,
    ) -> Result<Self> {
        let shape = Self::broadcast_shape(&self.shape(), &other.shape())?;
        Ok(Self {
            inner: op(self.inner, other.inner),
            rank: shape.len(),
        })
    }

    /// Element-wise sum with broadcasting.
    #[allow(clippy::should_implement_trait)] // fallible (shapes are checked), so not `std::ops`
    pub fn add(self, other: Self) -> Result<Self> {
        self.binary(other, |a, b| a + b)
    }

    /// Element-wise difference with broadcasting.
    #[allow(clippy::should_implement_trait)] // fallible (shapes are checked), so not `std::ops`
    pub fn sub(self, other: Self) -> Result<Self> {
        self.binary(other, |a, b| a - b)
    }

    /// `(self − mean) / scale` over the last axis (`self / scale` without `centre`) through a backend's kernel, with
    /// `scale` broadcast as in [`div`](Self::div).
    pub fn normalise(self, scale: Self, centre: bool, kernel: NormaliseFn<B>) -> Result<Self> {
        self.binary(scale, |x, scale| kernel(x, scale, centre))
    }

    /// Element-wise product with broadcasting.
    #[allow(clippy::should_implement_trait)] // fallible (shapes are checked), so not `std::ops`
    pub fn mul(self, other: Self) -> Result<Self> {
        self.binary(other, |a, b| a * b)
    }

    /// Element-wise quotient with broadcasting.
    #[allow(clippy::should_implement_trait)] // fallible (shapes are checked), so not `std::ops`
    pub fn div(self, other: Self) -> Result<Self> {
        self.binary(other, |a, b| a / b)
    }

    /// Matrix product over the last two axes, broadcasting the leading ones, as `torch.matmul` for rank ≥ 2.
    pub fn matmul(self, other: Self) -> Result<Self> {
        self.matmul_with(other, |lhs, rhs| lhs.matmul(rhs))
    }

    /// [`matmul`](Self::matmul) through a backend's kernel ([`CacheKernels::matmul`](crate::CacheKernels::matmul) or
    /// [`CacheKernels::outer`](crate::CacheKernels::outer)).
    pub fn matmul_with(self, other: Self, kernel: MatmulFn<B>) -> Result<Self> {
        let (a, b) = (self.shape(), other.shape());
        if a.len() < 2 || b.len() < 2 || a[a.len() - 1] != b[b.len() - 2] {
            return Err(CacheError::Shape(format!(
                "cannot multiply matrices {a:?} and {b:?}"
            )));
        }
        let lead = Self::broadcast_shape(&a[..a.len() - 2], &b[..b.len() - 2])?;
        let mut shape = lead.clone();
        shape.extend([a[a.len() - 2], b[b.len() - 1]]);
        if a.contains(&0) || b.contains(&0) {
            // burn-flex 0.21 reads out of bounds on a matmul with an empty operand; the product is all zeros anyway.
            return Ok(Self::zeros(&shape, &self.device()));
        }
        Ok(Self {
            inner: kernel(self.inner, other.inner),
            rank: lead.len() + 2,
        })
    }

    /// Broadcasts to a larger shape, as `torch.expand`.
    pub fn expand(self, shape: &[usize]) -> Result<Self> {
        let target = Self::broadcast_shape(&self.shape(), shape)?;
        if target != shape || shape.len() > MAX_RANK {
            return Err(CacheError::Shape(format!(
                "cannot expand {:?} to {:?}",
                self.shape(),
                shape
            )));
        }
        Ok(Self {
            inner: self.inner.expand(pad_shape(shape)),
            rank: shape.len(),
        })
    }

    /// Applies a function to the physical tensor (for element-wise maps that keep the shape).
    pub fn map(self, f: impl FnOnce(Tensor<B, MAX_RANK>) -> Tensor<B, MAX_RANK>) -> Self {
        Self {
            inner: f(self.inner),
            rank: self.rank,
        }
    }

    /// The same values on another device.
    pub fn to_device(self, device: &burn_tensor::Device<B>) -> Self {
        Self {
            inner: self.inner.to_device(device),
            rank: self.rank,
        }
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.shape().iter().product()
    }

    /// A zero-filled tensor of the given logical shape.
    pub fn zeros(shape: &[usize], device: &burn_tensor::Device<B>) -> Self {
        Self {
            inner: Tensor::zeros(pad_shape(shape), device),
            rank: shape.len(),
        }
    }
}

/// Reshapes a physical tensor; an empty one is rebuilt instead, because burn's `reshape` reads a 0 in the target
/// shape as "keep this axis".
fn reshape_padded<B: Backend>(
    inner: Tensor<B, MAX_RANK>,
    shape: [usize; MAX_RANK],
) -> Tensor<B, MAX_RANK> {
    if shape.contains(&0) {
        Tensor::zeros(shape, &inner.device())
    } else {
        inner.reshape(shape)
    }
}

/// Pads a logical shape with leading ones to the physical rank.
fn pad_shape(shape: &[usize]) -> [usize; MAX_RANK] {
    let mut padded = [1; MAX_RANK];
    padded[MAX_RANK - shape.len()..].copy_from_slice(shape);
    padded
}

/// The index into `shape` of a logical axis (negative counts from the end), or an error naming the shape.
pub(crate) fn logical_axis(shape: &[usize], axis: isize) -> Result<usize> {
    let rank = shape.len() as isize;
    let logical = if axis < 0 { rank + axis } else { axis };
    if logical < 0 || logical >= rank {
        return Err(CacheError::Shape(format!(
            "axis {axis} does not exist in a tensor of shape {shape:?}"
        )));
    }
    Ok(logical as usize)
}
