//! Property tests for the index arithmetic of tlens-cache-core, each checked against a naive reference written here.
//!
//! - [`Slice`] selects exactly what Python selects: `list[i]`, `list[start:stop:step]` (negative indices and steps,
//!   out-of-range bounds clamped, a zero step refused), and torch's list indexing; where tlens deliberately refuses
//!   (an index past the end, a zero step, an empty selection in `apply`) it returns `Err`, never panics.
//! - [`DynTensor`]'s axis operations (negative axes, narrow, index, select, squeeze/unsqueeze, movedim, reshape,
//!   sum/mean, cat/stack), broadcasting arithmetic, `matmul` and `expand` agree with a row-major `Vec<f32>`
//!   implementation; an axis or index out of range is `Err`, never a panic.
//! - Hook names: every [`HookPoint`] of random configs survives `Display` → `FromStr`, `get_act_name` agrees with
//!   TransformerLens's (a transliteration of its Python) and with the parser, and no string — arbitrary or a mutated
//!   hook name — makes the parser panic or accept a non-canonical spelling.
//!
//! Why: these are the places where an off-by-one or a sign slip gives a plausible but wrong activation rather than an
//! error, and hand-picked examples cover only a few lengths, signs and shapes.

use burn_tensor::TensorData;
use proptest::prelude::*;
use proptest::sample::Index;
use tlens_cache_core::{
    ActFn, BlockHook, CacheError, CacheKey, DynTensor, HookPoint, HookedTransformerConfig, Norm,
    NormHook, NormalizationType, PositionalEmbeddingType, Slice, get_act_name, hook_points,
};

type B = burn_ndarray::NdArray<f32>;

// ---------------------------------------------------------------------------------------------------------------
// Slice against Python
// ---------------------------------------------------------------------------------------------------------------

/// Python's `list(range(n))[i]`: `None` where Python raises `IndexError`.
fn py_index(i: i64, n: usize) -> Option<usize> {
    let (i, n) = (i128::from(i), n as i128);
    let j = if i < 0 { i + n } else { i };
    (0..n).contains(&j).then_some(j as usize)
}

/// Python's `list(range(n))[start:stop:step]`: `None` where Python raises `ValueError` (a zero step).
///
/// The bounds are normalised as CPython's `PySlice_AdjustIndices` does; the selection is then found by brute force
/// over every index of the list (not by stepping), so an overflow or an off-by-one in stepping cannot hide here.
fn py_range(
    start: Option<i64>,
    stop: Option<i64>,
    step: Option<i64>,
    n: usize,
) -> Option<Vec<usize>> {
    let step = i128::from(step.unwrap_or(1));
    if step == 0 {
        return None;
    }
    let n = n as i128;
    let adjust = |v: Option<i64>, default: i128| -> i128 {
        let Some(v) = v else { return default };
        let v = i128::from(v);
        if v < 0 {
            if v + n < 0 {
                if step < 0 { -1 } else { 0 }
            } else {
                v + n
            }
        } else if v >= n {
            if step < 0 { n - 1 } else { n }
        } else {
            v
        }
    };
    let (start, stop) = if step > 0 {
        (adjust(start, 0), adjust(stop, n))
    } else {
        (adjust(start, n - 1), adjust(stop, -1))
    };
    let mut picked: Vec<usize> = (0..n)
        .filter(|&i| {
            if step > 0 {
                start <= i && i < stop && (i - start) % step == 0
            } else {
                stop < i && i <= start && (start - i) % -step == 0
            }
        })
        .map(|i| i as usize)
        .collect();
    if step < 0 {
        picked.reverse();
    }
    Some(picked)
}

/// What Python (TransformerLens) selects with `slice` from an axis of length `n`; `None` where it raises.
fn py_selection(slice: &Slice, n: usize) -> Option<Vec<usize>> {
    match slice {
        Slice::All => Some((0..n).collect()),
        Slice::Index(i) => py_index(*i, n).map(|j| vec![j]),
        Slice::Range { start, stop, step } => py_range(*start, *stop, *step, n),
        Slice::Indices(list) => list.iter().map(|&i| py_index(i, n)).collect(),
    }
}

fn bounded_slice(bound: i64) -> impl Strategy<Value = Slice> {
    let v = move || -bound..bound;
    prop_oneof![
        Just(Slice::All),
        v().prop_map(Slice::Index),
        (
            proptest::option::of(v()),
            proptest::option::of(v()),
            proptest::option::of(v())
        )
            .prop_map(|(start, stop, step)| Slice::Range { start, stop, step }),
        proptest::collection::vec(v(), 0..8).prop_map(Slice::Indices),
    ]
}

/// An `i64` that is often at or near the extremes (where `+ len` and `+= step` overflow).
fn extreme_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MIN + 1),
        Just(i64::MAX),
        Just(i64::MAX - 1),
        (-25i64..25),
        (i64::MAX - 25..=i64::MAX),
        (i64::MIN..i64::MIN + 25),
        any::<i64>(),
    ]
}

fn extreme_slice() -> impl Strategy<Value = Slice> {
    prop_oneof![
        extreme_i64().prop_map(Slice::Index),
        (
            proptest::option::of(extreme_i64()),
            proptest::option::of(extreme_i64()),
            proptest::option::of(extreme_i64())
        )
            .prop_map(|(start, stop, step)| Slice::Range { start, stop, step }),
        proptest::collection::vec(extreme_i64(), 0..4).prop_map(Slice::Indices),
    ]
}

/// Checks `slice.indices(n)` against Python, including which error tlens gives where Python raises.
fn check_indices(slice: &Slice, n: usize) -> Result<(), TestCaseError> {
    let got = slice.indices(n, "pos_slice");
    match (py_selection(slice, n), got) {
        (Some(want), Ok(got)) => prop_assert_eq!(got, want, "{} on length {}", slice, n),
        (None, Err(e)) => match slice {
            Slice::Range { .. } => {
                prop_assert!(matches!(e, CacheError::InvalidArgument(_)), "{e}")
            }
            Slice::Index(i) => prop_assert!(
                matches!(e, CacheError::SliceOutOfRange { index, len, .. } if index == *i && len == n),
                "{e}"
            ),
            Slice::Indices(list) => prop_assert!(
                matches!(e, CacheError::SliceOutOfRange { index, len, .. }
                    if len == n && py_index(index, n).is_none() && list.contains(&index)),
                "{e}"
            ),
            Slice::All => prop_assert!(false, "Slice::All failed: {e}"),
        },
        (want, got) => prop_assert!(
            false,
            "{} on length {}: Python gives {:?}, tlens {:?}",
            slice,
            n,
            want,
            got
        ),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `Slice::Range` is `list(range(n))[start:stop:step]` for every sign and out-of-range bound; step 0 is `Err`.
    #[test]
    fn range_slices_select_as_python(
        n in 0usize..20,
        start in proptest::option::of(-30i64..30),
        stop in proptest::option::of(-30i64..30),
        step in proptest::option::of(-30i64..30),
    ) {
        check_indices(&Slice::Range { start, stop, step }, n)?;
    }

    /// `Slice::Index` and `Slice::Indices` are Python/torch indexing: negative from the end, out of range `Err`.
    #[test]
    fn index_and_list_slices_select_as_python(n in 0usize..20, slice in bounded_slice(30)) {
        check_indices(&slice, n)?;
        // `keeping_axis` selects the same entries and never removes the axis.
        let kept = slice.keeping_axis();
        prop_assert!(!kept.removes_axis());
        prop_assert_eq!(kept.indices(n, "x").ok(), slice.indices(n, "x").ok());
        prop_assert_eq!(slice.removes_axis(), matches!(slice, Slice::Index(_)));
    }

    /// Near `i64::MIN`/`i64::MAX`, where `index + len` and `i += step` overflow, slices still agree with Python.
    #[test]
    fn extreme_slices_select_as_python(n in 0usize..20, slice in extreme_slice()) {
        check_indices(&slice, n)?;
    }

    /// A huge step from a small start, whose second entry would lie past `i64::MAX`: Python stops after the first.
    #[test]
    fn huge_steps_select_as_python(
        n in 0usize..20,
        start in proptest::option::of(-25i64..25),
        stop in proptest::option::of(-25i64..25),
        step in prop_oneof![i64::MAX - 30..=i64::MAX, i64::MIN..i64::MIN + 30],
    ) {
        check_indices(&Slice::Range { start, stop, step: Some(step) }, n)?;
    }

    /// `Slice::from(a..b)` is Python's `a:b`, and `Slice::from(None)` is everything.
    #[test]
    fn slice_conversions_are_python_slices(n in 0usize..20, a in -30i64..30, b in -30i64..30) {
        prop_assert_eq!(Slice::from(a..b).indices(n, "x").ok(), py_range(Some(a), Some(b), None, n));
        prop_assert_eq!(Slice::from(None::<i64>), Slice::All);
        prop_assert_eq!(Slice::from(Some(a)), Slice::Index(a));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A naive row-major n-d array, the reference for DynTensor
// ---------------------------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
struct Nd {
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// Every multi-index of `shape`, in row-major order (one empty index for rank 0).
fn multi_indices(shape: &[usize]) -> Vec<Vec<usize>> {
    let mut out = vec![vec![]];
    for &d in shape {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                (0..d).map(move |i| {
                    let mut idx = prefix.clone();
                    idx.push(i);
                    idx
                })
            })
            .collect();
    }
    out
}

/// Python's axis resolution: `-rank <= axis < rank`, negative from the end.
fn py_axis(axis: isize, rank: usize) -> Option<usize> {
    let r = rank as isize;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// NumPy's broadcasting rule, written from the right.
fn py_broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let at = |s: &[usize], i: usize| {
        if i + s.len() >= r {
            s[i + s.len() - r]
        } else {
            1
        }
    };
    (0..r)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

impl Nd {
    fn build(shape: Vec<usize>, f: impl Fn(&[usize]) -> f32) -> Nd {
        let data = multi_indices(&shape).iter().map(|i| f(i)).collect();
        Nd { shape, data }
    }

    fn at(&self, idx: &[usize]) -> f32 {
        assert_eq!(idx.len(), self.shape.len());
        let flat = idx.iter().zip(&self.shape).fold(0, |acc, (&i, &d)| {
            assert!(i < d);
            acc * d + i
        });
        self.data[flat]
    }

    /// The entry that broadcasts to `idx` of a larger result.
    fn at_broadcast(&self, idx: &[usize]) -> f32 {
        let off = idx.len() - self.shape.len();
        let own: Vec<usize> = self
            .shape
            .iter()
            .enumerate()
            .map(|(i, &d)| if d == 1 { 0 } else { idx[off + i] })
            .collect();
        self.at(&own)
    }

    fn to_dyn(&self) -> DynTensor<B> {
        let data = TensorData::new(self.data.clone(), self.shape.clone());
        DynTensor::from_data(data, &Default::default()).expect("rank <= 6")
    }

    fn of(t: &DynTensor<B>) -> Nd {
        Nd {
            shape: t.shape(),
            data: t.to_vec(),
        }
    }

    fn with_axis(&self, axis: usize, len: usize) -> Vec<usize> {
        let mut s = self.shape.clone();
        s[axis] = len;
        s
    }

    fn narrow(&self, axis: usize, start: usize, len: usize) -> Nd {
        Nd::build(self.with_axis(axis, len), |idx| {
            let mut i = idx.to_vec();
            i[axis] += start;
            self.at(&i)
        })
    }

    fn select(&self, axis: usize, list: &[usize]) -> Nd {
        Nd::build(self.with_axis(axis, list.len()), |idx| {
            let mut i = idx.to_vec();
            i[axis] = list[i[axis]];
            self.at(&i)
        })
    }

    fn index(&self, axis: usize, at: usize) -> Nd {
        let mut shape = self.shape.clone();
        shape.remove(axis);
        Nd::build(shape, |idx| {
            let mut i = idx.to_vec();
            i.insert(axis, at);
            self.at(&i)
        })
    }

    fn sum(&self, axis: usize) -> Nd {
        let mut shape = self.shape.clone();
        shape.remove(axis);
        Nd::build(shape, |idx| {
            (0..self.shape[axis])
                .map(|k| {
                    let mut i = idx.to_vec();
                    i.insert(axis, k);
                    self.at(&i)
                })
                .sum()
        })
    }

    fn mean_keep(&self, axis: usize) -> Nd {
        let n = self.shape[axis];
        Nd::build(self.with_axis(axis, 1), |idx| {
            let total: f32 = (0..n)
                .map(|k| {
                    let mut i = idx.to_vec();
                    i[axis] = k;
                    self.at(&i)
                })
                .sum();
            total / n as f32
        })
    }

    /// `torch.movedim(x, from, to)`.
    fn movedim(&self, from: usize, to: usize) -> Nd {
        let mut order: Vec<usize> = (0..self.shape.len()).filter(|&d| d != from).collect();
        order.insert(to, from);
        let shape = order.iter().map(|&d| self.shape[d]).collect();
        Nd::build(shape, |idx| {
            let mut src = vec![0; idx.len()];
            for (j, &d) in order.iter().enumerate() {
                src[d] = idx[j];
            }
            self.at(&src)
        })
    }

    fn binary(&self, other: &Nd, op: impl Fn(f32, f32) -> f32) -> Option<Nd> {
        let shape = py_broadcast(&self.shape, &other.shape)?;
        Some(Nd::build(shape, |idx| {
            op(self.at_broadcast(idx), other.at_broadcast(idx))
        }))
    }

    /// `torch.matmul` for rank >= 2.
    fn matmul(&self, other: &Nd) -> Option<Nd> {
        let (a, b) = (&self.shape, &other.shape);
        let (ra, rb) = (a.len(), b.len());
        if ra < 2 || rb < 2 || a[ra - 1] != b[rb - 2] {
            return None;
        }
        let mut shape = py_broadcast(&a[..ra - 2], &b[..rb - 2])?;
        let lead = shape.len();
        let (m, k, n) = (a[ra - 2], a[ra - 1], b[rb - 1]);
        shape.extend([m, n]);
        let pick = |s: &[usize], idx: &[usize], i: usize, j: usize| -> Vec<usize> {
            // Broadcast the leading axes of an operand of shape `s` to the result's leading index.
            let own = s.len() - 2;
            let mut v: Vec<usize> = (0..own)
                .map(|d| if s[d] == 1 { 0 } else { idx[lead - own + d] })
                .collect();
            v.extend([i, j]);
            v
        };
        Some(Nd::build(shape, |idx| {
            let (i, j) = (idx[lead], idx[lead + 1]);
            (0..k)
                .map(|kk| self.at(&pick(a, idx, i, kk)) * other.at(&pick(b, idx, kk, j)))
                .sum()
        }))
    }

    fn cat(parts: &[Nd], axis: usize) -> Nd {
        let total = parts.iter().map(|p| p.shape[axis]).sum();
        let shape = parts[0].with_axis(axis, total);
        Nd::build(shape, |idx| {
            let mut i = idx.to_vec();
            for p in parts {
                if i[axis] < p.shape[axis] {
                    return p.at(&i);
                }
                i[axis] -= p.shape[axis];
            }
            unreachable!("index within the total length")
        })
    }

    fn stack(parts: &[Nd]) -> Nd {
        let mut shape = vec![parts.len()];
        shape.extend(&parts[0].shape);
        Nd::build(shape, |idx| parts[idx[0]].at(&idx[1..]))
    }
}

/// Compares a DynTensor result with the reference (exactly: the values are small integers, so sums and products are
/// exact in `f32`; `tol` covers divisions).
fn same(got: &DynTensor<B>, want: &Nd, tol: f32) -> Result<(), TestCaseError> {
    let got = Nd::of(got);
    prop_assert_eq!(&got.shape, &want.shape);
    prop_assert_eq!(got.data.len(), want.data.len());
    for (g, w) in got.data.iter().zip(&want.data) {
        prop_assert!(
            (g - w).abs() <= tol * w.abs().max(1.0),
            "{:?} vs {:?}",
            got,
            want
        );
    }
    Ok(())
}

fn shape_strategy(ranks: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1usize..=4, ranks)
}

fn nd_of_shape(shape: Vec<usize>, nonzero: bool) -> impl Strategy<Value = Nd> {
    let n: usize = shape.iter().product();
    let value = if nonzero {
        prop_oneof![-8i8..=-1, 1i8..=8].boxed()
    } else {
        (-8i8..=8).boxed()
    };
    proptest::collection::vec(value, n).prop_map(move |v| Nd {
        shape: shape.clone(),
        data: v.into_iter().map(f32::from).collect(),
    })
}

fn nd(ranks: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Nd> {
    shape_strategy(ranks).prop_flat_map(|s| nd_of_shape(s, false))
}

/// Two shapes that broadcast (a suffix of a common shape, with some axes set to 1), or two unrelated ones.
fn shape_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    let related = (
        shape_strategy(1..=4),
        proptest::collection::vec(any::<bool>(), 4),
        proptest::collection::vec(any::<bool>(), 4),
        0usize..=4,
        any::<bool>(),
    )
        .prop_map(|(full, ones_a, ones_b, drop, swap)| {
            let a: Vec<usize> = full
                .iter()
                .zip(&ones_a)
                .map(|(&d, &one)| if one { 1 } else { d })
                .collect();
            let b: Vec<usize> = full
                .iter()
                .zip(&ones_b)
                .map(|(&d, &one)| if one { 1 } else { d })
                .skip(drop.min(full.len()))
                .collect();
            if swap { (b, a) } else { (a, b) }
        });
    prop_oneof![related, (shape_strategy(0..=4), shape_strategy(0..=4))]
}

fn nd_pair(nonzero_b: bool) -> impl Strategy<Value = (Nd, Nd)> {
    shape_pair().prop_flat_map(move |(a, b)| (nd_of_shape(a, false), nd_of_shape(b, nonzero_b)))
}

/// An axis that is in range about two times in three.
fn axis_for(rank: usize) -> impl Strategy<Value = isize> {
    let r = rank as isize;
    prop_oneof![2 => -r..r.max(1), 1 => -r - 3..r + 3]
}

/// Checks a fallible DynTensor operation: `Err` exactly where the reference has no result, else equal values.
fn agrees(
    got: tlens_cache_core::Result<DynTensor<B>>,
    want: Option<Nd>,
    tol: f32,
) -> Result<(), TestCaseError> {
    match (got, want) {
        (Ok(got), Some(want)) => same(&got, &want, tol),
        (Err(_), None) => Ok(()),
        (Ok(got), None) => Err(TestCaseError::fail(format!(
            "expected an error, got {:?}",
            Nd::of(&got)
        ))),
        (Err(e), Some(want)) => Err(TestCaseError::fail(format!(
            "expected {want:?}, got error {e}"
        ))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `from_data` keeps shape and values; `rank`, `shape`, `numel`, `dim` and `physical` follow Python's axes.
    #[test]
    fn axes_resolve_as_python(x in nd(0..=4), axis in -8isize..8) {
        let t = x.to_dyn();
        same(&t, &x, 0.0)?;
        prop_assert_eq!(t.rank(), x.shape.len());
        prop_assert_eq!(t.numel(), x.data.len());
        let want = py_axis(axis, x.shape.len());
        prop_assert_eq!(t.dim(axis).ok(), want.map(|a| x.shape[a]));
        prop_assert_eq!(t.physical(axis).is_ok(), want.is_some());
        // `into_data` and `into_tensor` keep the logical shape; `into_tensor` checks the rank.
        let data = t.clone().into_data();
        prop_assert_eq!(data.shape.to_vec(), x.shape.clone());
        prop_assert_eq!(data.convert::<f32>().to_vec::<f32>().unwrap(), x.data.clone());
        prop_assert_eq!(t.clone().into_tensor::<2>().is_ok(), x.shape.len() == 2);
        prop_assert_eq!(t.into_tensor::<3>().is_ok(), x.shape.len() == 3);
    }

    /// `narrow(axis, start, len)` keeps entries `start..start + len` (torch semantics; out of range is `Err`).
    #[test]
    fn narrow_matches_naive(
        (x, axis) in nd(1..=4).prop_flat_map(|x| { let r = x.shape.len(); (Just(x), axis_for(r)) }),
        start in 0usize..6,
        len in 0usize..6,
    ) {
        let want = py_axis(axis, x.shape.len())
            .filter(|&a| start + len <= x.shape[a])
            .map(|a| x.narrow(a, start, len));
        agrees(x.to_dyn().narrow(axis, start, len), want, 0.0)?;
    }

    /// `index(axis, i)` takes entry `i` and removes the axis; out of range is `Err`.
    #[test]
    fn index_matches_naive(
        (x, axis) in nd(1..=4).prop_flat_map(|x| { let r = x.shape.len(); (Just(x), axis_for(r)) }),
        i in 0usize..6,
    ) {
        let want = py_axis(axis, x.shape.len())
            .filter(|&a| i < x.shape[a])
            .map(|a| x.index(a, i));
        agrees(x.to_dyn().index(axis, i), want, 0.0)?;
    }

    /// `select(axis, list)` gathers the listed entries in order, keeping the axis; out of range is `Err`.
    #[test]
    fn select_matches_naive(
        (x, axis) in nd(1..=4).prop_flat_map(|x| { let r = x.shape.len(); (Just(x), axis_for(r)) }),
        list in proptest::collection::vec(0usize..6, 0..6),
    ) {
        let want = py_axis(axis, x.shape.len())
            .filter(|&a| list.iter().all(|&i| i < x.shape[a]))
            .map(|a| x.select(a, &list));
        agrees(x.to_dyn().select(axis, &list), want, 0.0)?;
    }

    /// `Slice::apply` on an axis is the Python selection: an index removes the axis, everything else keeps it, and
    /// an empty selection (which Python would allow) or an index out of range is `Err`.
    #[test]
    fn slice_apply_matches_naive(
        (x, axis) in nd(1..=4).prop_flat_map(|x| { let r = x.shape.len(); (Just(x), axis_for(r)) }),
        slice in bounded_slice(6),
    ) {
        let want = py_axis(axis, x.shape.len()).and_then(|a| {
            let picked = py_selection(&slice, x.shape[a])?;
            match slice {
                Slice::Index(_) => Some(x.index(a, picked[0])),
                _ if picked.is_empty() => None,
                _ => Some(x.select(a, &picked)),
            }
        });
        agrees(slice.apply(x.to_dyn(), axis, "pos_slice"), want, 0.0)?;
    }

    /// `sum_axis` removes the axis, `mean_axis_keep` keeps it with size 1.
    #[test]
    fn sum_and_mean_match_naive(
        (x, axis) in nd(1..=4).prop_flat_map(|x| { let r = x.shape.len(); (Just(x), axis_for(r)) }),
    ) {
        let a = py_axis(axis, x.shape.len());
        agrees(x.to_dyn().sum_axis(axis), a.map(|a| x.sum(a)), 0.0)?;
        agrees(x.to_dyn().mean_axis_keep(axis), a.map(|a| x.mean_keep(a)), 1e-6)?;
    }

    /// `squeeze` removes a size-1 axis (else `Err`); `unsqueeze` inserts one at any of the `rank + 1` positions.
    #[test]
    fn squeeze_and_unsqueeze_match_naive(x in nd(0..=6), axis in -9isize..9) {
        let r = x.shape.len();
        let squeezed = py_axis(axis, r).filter(|&a| x.shape[a] == 1).map(|a| {
            let mut s = x.shape.clone();
            s.remove(a);
            Nd { shape: s, data: x.data.clone() }
        });
        agrees(x.to_dyn().squeeze(axis), squeezed, 0.0)?;
        let unsqueezed = py_axis(axis, r + 1).filter(|_| r < 6).map(|a| {
            let mut s = x.shape.clone();
            s.insert(a, 1);
            Nd { shape: s, data: x.data.clone() }
        });
        agrees(x.to_dyn().unsqueeze(axis), unsqueezed, 0.0)?;
    }

    /// `movedim(from, to)` is `torch.movedim`.
    #[test]
    fn movedim_matches_naive(
        (x, from, to) in nd(1..=4).prop_flat_map(|x| {
            let r = x.shape.len();
            (Just(x), axis_for(r), axis_for(r))
        }),
    ) {
        let r = x.shape.len();
        let want = py_axis(from, r).zip(py_axis(to, r)).map(|(f, t)| x.movedim(f, t));
        agrees(x.to_dyn().movedim(from, to), want, 0.0)?;
    }

    /// `reshape` keeps the row-major values; a different element count or a rank above 6 is `Err`.
    #[test]
    fn reshape_matches_naive(
        (x, target) in nd(0..=4).prop_flat_map(|x| {
            let same_count = (Just(x.shape.clone()).prop_shuffle(), proptest::collection::vec(0usize..8, 0..4))
                .prop_map(|(mut s, ones)| {
                    for at in ones {
                        s.insert(at.min(s.len()), 1);
                    }
                    s
                });
            let flat = Just(vec![x.data.len()]);
            (Just(x), prop_oneof![same_count, flat, shape_strategy(0..=7)])
        }),
    ) {
        let want = (target.iter().product::<usize>() == x.data.len() && target.len() <= 6)
            .then(|| Nd { shape: target.clone(), data: x.data.clone() });
        agrees(x.to_dyn().reshape(&target), want, 0.0)?;
    }

    /// Element-wise arithmetic broadcasts as NumPy/PyTorch; shapes that do not broadcast are `Err`.
    #[test]
    fn broadcast_arithmetic_matches_naive((a, b) in nd_pair(true)) {
        prop_assert_eq!(
            DynTensor::<B>::broadcast_shape(&a.shape, &b.shape).ok(),
            py_broadcast(&a.shape, &b.shape)
        );
        agrees(a.to_dyn().add(b.to_dyn()), a.binary(&b, |x, y| x + y), 0.0)?;
        agrees(a.to_dyn().sub(b.to_dyn()), a.binary(&b, |x, y| x - y), 0.0)?;
        agrees(a.to_dyn().mul(b.to_dyn()), a.binary(&b, |x, y| x * y), 0.0)?;
        agrees(a.to_dyn().div(b.to_dyn()), a.binary(&b, |x, y| x / y), 1e-6)?;
    }

    /// `matmul` multiplies the last two axes and broadcasts the leading ones, as `torch.matmul` for rank >= 2.
    #[test]
    fn matmul_matches_naive(
        (a, b) in (
            shape_pair(),
            (1usize..=3, 1usize..=3, 1usize..=3),
            proptest::bool::weighted(0.2),
            0usize..=2,
        )
            .prop_flat_map(|((la, lb), (m, k, n), mismatch, cut)| {
                // Keep at most `cut` leading axes, so that the ranks stay <= 4; `mismatch` makes the inner sizes differ.
                let la: Vec<usize> = la[la.len().saturating_sub(cut)..].to_vec();
                let lb: Vec<usize> = lb[lb.len().saturating_sub(cut)..].to_vec();
                let sa = [la, vec![m, k]].concat();
                let sb = [lb, vec![k + usize::from(mismatch), n]].concat();
                (nd_of_shape(sa, false), nd_of_shape(sb, false))
            }),
    ) {
        agrees(a.to_dyn().matmul(b.to_dyn()), a.matmul(&b), 0.0)?;
    }

    /// `expand(shape)` is `torch.expand` without `-1`: only size-1 and missing leading axes grow.
    #[test]
    fn expand_matches_naive(
        (x, target) in nd(0..=4).prop_flat_map(|x| {
            let grown = (proptest::collection::vec(1usize..=3, 0..=3), proptest::collection::vec(1usize..=3, 4))
                .prop_map({
                    let shape = x.shape.clone();
                    move |(lead, sizes)| {
                        let mut t = lead;
                        t.extend(shape.iter().zip(&sizes).map(|(&d, &s)| if d == 1 { s } else { d }));
                        t
                    }
                });
            (Just(x), prop_oneof![grown, shape_strategy(0..=5)])
        }),
    ) {
        let want = (py_broadcast(&x.shape, &target).as_ref() == Some(&target) && target.len() <= 6)
            .then(|| Nd::build(target.clone(), |idx| x.at_broadcast(idx)));
        agrees(x.to_dyn().expand(&target), want, 0.0)?;
    }

    /// `cat` joins along any logical axis (`Err` for a bad axis or mismatched shapes); `stack` adds a leading axis.
    #[test]
    fn cat_and_stack_match_naive(
        (parts, axis, spoil) in (shape_strategy(1..=4), proptest::collection::vec(1usize..=3, 1..=4))
            .prop_flat_map(|(shape, lens)| {
                let r = shape.len();
                (Just(shape), Just(lens), axis_for(r), any::<Option<Index>>())
            })
            .prop_flat_map(|(shape, lens, axis, spoil)| {
                // Part `i` has length `lens[i]` along `axis` (when the axis exists).
                let a = py_axis(axis, shape.len());
                let parts: Vec<_> = lens
                    .iter()
                    .map(|&l| {
                        let mut s = shape.clone();
                        if let Some(a) = a {
                            s[a] = l;
                        }
                        nd_of_shape(s, false)
                    })
                    .collect();
                (parts, Just(axis), Just(spoil))
            }),
    ) {
        let r = parts[0].shape.len();
        // Optionally spoil one part by growing an axis other than the cat axis (or appending one).
        let mut parts = parts;
        if let (Some(ix), Some(a)) = (spoil, py_axis(axis, r)) {
            let p = ix.index(parts.len());
            let mut shape = parts[p].shape.clone();
            match (0..r).find(|&d| d != a) {
                Some(d) => shape[d] += 1,
                None => shape.push(1),
            }
            parts[p] = Nd::build(shape, |_| 1.0);
        }
        // torch.cat: the axis is resolved against the first part; every part has its rank and its shape off the axis.
        let first = &parts[0].shape;
        let fits = |a: usize| {
            parts.iter().all(|p| {
                p.shape.len() == first.len()
                    && p.shape.iter().zip(first).enumerate().all(|(d, (x, y))| d == a || x == y)
            })
        };
        let want = py_axis(axis, first.len()).filter(|&a| fits(a)).map(|a| Nd::cat(&parts, a));
        let dyns = || parts.iter().map(Nd::to_dyn).collect::<Vec<_>>();
                agrees(DynTensor::cat(dyns(), axis), want, 0.0)?;
        let same_shapes = parts.iter().all(|p| p.shape == parts[0].shape);
        agrees(DynTensor::stack(dyns()), same_shapes.then(|| Nd::stack(&parts)), 0.0)?;
    }
}

#[test]
fn empty_lists_are_errors_not_panics() {
    assert!(DynTensor::<B>::cat(vec![], 0).is_err());
    assert!(DynTensor::<B>::stack(vec![]).is_err());
}

// ---------------------------------------------------------------------------------------------------------------
// Hook names
// ---------------------------------------------------------------------------------------------------------------

/// A small valid config with every option that changes which hooks fire drawn at random.
fn config() -> impl Strategy<Value = HookedTransformerConfig> {
    let norms = [
        None,
        Some(NormalizationType::LN),
        Some(NormalizationType::LNPre),
        Some(NormalizationType::RMS),
        Some(NormalizationType::RMSPre),
    ];
    let acts = [
        ActFn::Relu,
        ActFn::Gelu,
        ActFn::GeluNew,
        ActFn::Silu,
        ActFn::SoluLn,
    ];
    (
        1usize..=3,
        proptest::sample::select(norms.to_vec()),
        proptest::sample::select(acts.to_vec()),
        proptest::collection::vec(any::<bool>(), 7),
    )
        .prop_map(|(n_layers, norm, act, flags)| {
            let mut cfg = HookedTransformerConfig::new(n_layers, 16, 8, 4, 10).expect("valid");
            cfg.normalization_type = norm;
            cfg.act_fn = Some(act);
            cfg.attn_only = flags[0];
            cfg.use_attn_result = flags[1];
            if flags[2] {
                cfg.positional_embedding_type = PositionalEmbeddingType::Rotary;
            }
            cfg.use_normalization_before_and_after = flags[3];
            cfg.use_qk_norm = flags[4];
            cfg.parallel_attn_mlp = flags[5];
            cfg.gated_mlp = flags[6] && act != ActFn::SoluLn;
            cfg.resolved().expect("a valid config")
        })
}

/// The norm modules as TransformerLens names them, written out here rather than taken from `Norm::module`.
fn norm_module(norm: Norm) -> &'static str {
    match norm {
        Norm::Ln1 => "ln1",
        Norm::Ln1Post => "ln1_post",
        Norm::Ln2 => "ln2",
        Norm::Ln2Post => "ln2_post",
        Norm::MlpLn => "mlp.ln",
        Norm::QNorm => "attn.q_norm",
        Norm::KNorm => "attn.k_norm",
    }
}

fn norm_name(h: NormHook) -> &'static str {
    match h {
        NormHook::Scale => "scale",
        NormHook::Normalized => "normalized",
    }
}

/// The canonical `(name, layer_type)` of a block hook in `get_act_name(name, layer, layer_type)`.
fn block_spelling(h: BlockHook) -> (&'static str, Option<&'static str>) {
    let attn = Some("attn");
    let mlp = Some("mlp");
    match h {
        BlockHook::ResidPre => ("resid_pre", None),
        BlockHook::Norm(norm, nh) => (norm_name(nh), Some(norm_module(norm))),
        BlockHook::Q => ("q", attn),
        BlockHook::K => ("k", attn),
        BlockHook::V => ("v", attn),
        BlockHook::RotQ => ("rot_q", attn),
        BlockHook::RotK => ("rot_k", attn),
        BlockHook::AttnScores => ("attn_scores", attn),
        BlockHook::Pattern => ("pattern", attn),
        BlockHook::Z => ("z", attn),
        BlockHook::Result => ("result", attn),
        BlockHook::AttnOut => ("attn_out", None),
        BlockHook::ResidMid => ("resid_mid", None),
        BlockHook::MlpPre => ("pre", mlp),
        BlockHook::MlpPreLinear => ("pre_linear", mlp),
        BlockHook::MlpMid => ("mid", mlp),
        BlockHook::MlpPost => ("post", mlp),
        BlockHook::MlpOut => ("mlp_out", None),
        BlockHook::ResidPost => ("resid_post", None),
    }
}

/// Every way TransformerLens's docs and aliases let one spell a block hook as `(name, layer_type)`.
fn block_spellings(h: BlockHook) -> Vec<(&'static str, Option<&'static str>)> {
    // An attention or MLP name ignores the layer type it is given.
    const ANY: [Option<&str>; 5] = [None, Some("a"), Some("mlp"), Some("ln1"), Some("xyz")];
    const BLOCK: [Option<&str>; 4] = [None, Some("b"), Some("block"), Some("blocks")];
    let (name, layer_type) = block_spelling(h);
    let aliases: &[&str] = match h {
        BlockHook::Q => &["q", "query"],
        BlockHook::K => &["k", "key"],
        BlockHook::V => &["v", "value"],
        BlockHook::AttnScores => &["attn_scores", "attn_logits"],
        BlockHook::Pattern => &["pattern", "attn"],
        BlockHook::MlpPre => &["pre", "mlp_pre"],
        BlockHook::MlpMid => &["mid", "mlp_mid"],
        BlockHook::MlpPost => &["post", "mlp_post"],
        _ => std::slice::from_ref(&name),
    };
    let types: Vec<Option<&str>> = match layer_type {
        Some("attn" | "mlp") => ANY.to_vec(),
        Some(t) if t.starts_with("ln") || t.contains('.') => vec![Some(t)],
        _ => BLOCK.to_vec(),
    };
    let mut out: Vec<_> = aliases
        .iter()
        .flat_map(|&n| types.iter().map(move |&t| (n, t)))
        .collect();
    // Explicit `attention`/`a` for attention hooks, `m` for MLP hooks, are also fine.
    match layer_type {
        Some("attn") => out.extend([(name, Some("attention")), (name, Some("attn"))]),
        Some("mlp") => out.extend([(name, Some("m"))]),
        _ => {}
    }
    out
}

/// Spellings of the hooks outside the blocks, as `(name, layer_type)` with no layer.
fn top_spellings(p: HookPoint) -> Vec<(&'static str, Option<&'static str>)> {
    match p {
        HookPoint::Embed => vec![("embed", None), ("embed", Some("b"))],
        HookPoint::PosEmbed => vec![("pos_embed", None)],
        HookPoint::LnFinal(h) => vec![(norm_name(h), None), (norm_name(h), Some("block"))],
        HookPoint::UnembedIn => vec![("in", Some("unembed"))],
        HookPoint::UnembedOut => vec![("out", Some("unembed"))],
        HookPoint::Block(..) => unreachable!(),
    }
}

/// What `get_act_name(name, layer, layer_type)` should name, by TransformerLens's rules, as a hook point; `None`
/// when the result is not a hook point (names here have no digits, so the `k6` shorthand never applies).
fn expected_point(name: &str, layer: Option<i64>, layer_type: Option<&str>) -> Option<HookPoint> {
    let name = match name {
        "attn" => "pattern",
        "attn_logits" => "attn_scores",
        "key" => "k",
        "query" => "q",
        "value" => "v",
        "mlp_pre" => "pre",
        "mlp_mid" => "mid",
        "mlp_post" => "post",
        other => other,
    };
    let forced = match name {
        "k" | "v" | "q" | "z" | "rot_k" | "rot_q" | "result" | "pattern" | "attn_scores" => {
            Some("attn")
        }
        "pre" | "post" | "mid" | "pre_linear" => Some("mlp"),
        _ => None,
    };
    let layer_type = forced
        .or_else(|| {
            layer_type.map(|t| match t {
                "a" | "attention" => "attn",
                "m" => "mlp",
                "b" | "block" | "blocks" => "",
                t => t,
            })
        })
        .filter(|t| !t.is_empty());
    match layer {
        None => match (name, layer_type) {
            ("embed", None) => Some(HookPoint::Embed),
            ("pos_embed", None) => Some(HookPoint::PosEmbed),
            ("scale", None) => Some(HookPoint::LnFinal(NormHook::Scale)),
            ("normalized", None) => Some(HookPoint::LnFinal(NormHook::Normalized)),
            ("in", Some("unembed")) => Some(HookPoint::UnembedIn),
            ("out", Some("unembed")) => Some(HookPoint::UnembedOut),
            _ => None,
        },
        Some(l) => {
            let l = usize::try_from(l).ok()?;
            BlockHook::ALL
                .into_iter()
                .find(|&h| block_spelling(h) == (name, layer_type))
                .map(|h| HookPoint::Block(l, h))
        }
    }
}

/// TransformerLens's `get_act_name`, transliterated from its Python, with `re.match(r"([a-z]+)(\d+)([a-z]?.*)")`
/// emulated for ASCII input (Python's `.` stops at a newline). Python's `\d` also matches non-ASCII decimal digits;
/// inputs here are ASCII.
fn tl_get_act_name(name: &str, layer: Option<i64>, layer_type: Option<&str>) -> String {
    if (name.contains('.') || name.starts_with("hook_")) && layer.is_none() && layer_type.is_none()
    {
        return name.to_string();
    }
    let mut name = name.to_string();
    let mut layer = layer.map(|l| l.to_string());
    let mut layer_type = layer_type.map(str::to_string);
    let letters = name.chars().take_while(char::is_ascii_lowercase).count();
    let digits = name[letters..]
        .chars()
        .take_while(char::is_ascii_digit)
        .count();
    if letters > 0 && digits > 0 {
        let rest = name[letters + digits..].split('\n').next().unwrap_or("");
        (layer, layer_type) = (
            Some(name[letters..letters + digits].to_string()),
            Some(rest.to_string()),
        );
        name.truncate(letters);
    }
    let name = match name.as_str() {
        "attn" => "pattern".to_string(),
        "attn_logits" => "attn_scores".to_string(),
        "key" => "k".to_string(),
        "query" => "q".to_string(),
        "value" => "v".to_string(),
        "mlp_pre" => "pre".to_string(),
        "mlp_mid" => "mid".to_string(),
        "mlp_post" => "post".to_string(),
        _ => name,
    };
    let mut full = String::new();
    if let Some(l) = &layer {
        full += &format!("blocks.{l}.");
    }
    let layer_type = if [
        "k",
        "v",
        "q",
        "z",
        "rot_k",
        "rot_q",
        "result",
        "pattern",
        "attn_scores",
    ]
    .contains(&name.as_str())
    {
        Some("attn".to_string())
    } else if ["pre", "post", "mid", "pre_linear"].contains(&name.as_str()) {
        Some("mlp".to_string())
    } else {
        match layer_type.as_deref() {
            Some("a" | "attention") => Some("attn".to_string()),
            Some("m") => Some("mlp".to_string()),
            Some("b" | "block" | "blocks") => Some(String::new()),
            _ => layer_type,
        }
    };
    if let Some(t) = layer_type.filter(|t| !t.is_empty()) {
        full += &format!("{t}.");
    }
    full += &format!("hook_{name}");
    if (name == "scale" || name == "normalized") && layer.is_none() {
        full = format!("ln_final.{full}");
    }
    full
}

/// A hook name is accepted only in its canonical spelling: whatever parses must print back unchanged.
fn parse_is_canonical(s: &str) -> Result<(), TestCaseError> {
    if let Ok(p) = s.parse::<HookPoint>() {
        prop_assert_eq!(p.to_string(), s);
    }
    Ok(())
}

/// Any hook point of any config (all 32 block hooks, layers up to 1000).
fn any_point() -> impl Strategy<Value = HookPoint> {
    prop_oneof![
        proptest::sample::select(HookPoint::OUTSIDE_BLOCKS.to_vec()),
        (
            0usize..1000,
            proptest::sample::select(BlockHook::ALL.to_vec())
        )
            .prop_map(|(l, h)| HookPoint::Block(l, h)),
    ]
}

/// Layer numbers as text: valid ones, and ones with a sign, a leading zero, spaces, non-ASCII digits, or too
/// large for `usize`.
fn layer_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("99999999999999999999".to_string()),
        Just(u64::MAX.to_string()),
        Just((u128::from(u64::MAX) + 1).to_string()),
        Just("-0".to_string()),
        Just("+1".to_string()),
        Just("01".to_string()),
        Just("00".to_string()),
        Just(String::new()),
        Just(" 1".to_string()),
        Just("1 ".to_string()),
        Just("\u{0663}".to_string()),
        Just("1e3".to_string()),
        Just("0x1".to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<u64>().prop_map(|v| v.to_string()),
        any::<i128>().prop_map(|v| v.to_string()),
        "[0-9]{1,30}",
        "-[0-9]{1,22}",
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    Insert(Index, char),
    Delete(Index),
    Truncate(Index),
    Duplicate(Index, Index),
    Uppercase(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let ch = prop_oneof![
        proptest::sample::select(vec![
            '.', '_', '0', '1', '9', '-', '+', ' ', 'a', 'é', '\n', '\u{0663}'
        ]),
        any::<char>(),
    ];
    prop_oneof![
        (any::<Index>(), ch).prop_map(|(i, c)| Mutation::Insert(i, c)),
        any::<Index>().prop_map(Mutation::Delete),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Duplicate(a, b)),
        any::<Index>().prop_map(Mutation::Uppercase),
    ]
}

fn mutate(s: &str, m: &Mutation) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    let n = chars.len();
    match m {
        Mutation::Insert(i, c) => chars.insert(i.index(n + 1), *c),
        Mutation::Delete(i) if n > 0 => {
            chars.remove(i.index(n));
        }
        Mutation::Truncate(i) => chars.truncate(i.index(n + 1)),
        Mutation::Duplicate(a, b) if n > 0 => {
            let (a, b) = (a.index(n), b.index(n));
            let (lo, hi) = (a.min(b), a.max(b));
            let piece: Vec<char> = chars[lo..=hi].to_vec();
            let tail = chars.split_off(hi + 1);
            chars.extend(piece);
            chars.extend(tail);
        }
        Mutation::Uppercase(i) if n > 0 => {
            let i = i.index(n);
            chars[i] = chars[i].to_ascii_uppercase();
        }
        _ => {}
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every hook of a random config prints and parses back to itself, under a unique name, and is its own cache
    /// key; blocks fire the same hooks in every layer.
    #[test]
    fn hook_points_round_trip(cfg in config()) {
        let points = hook_points(&cfg);
        let mut names = std::collections::HashSet::new();
        for p in &points {
            let name = p.to_string();
            prop_assert_eq!(name.parse::<HookPoint>(), Ok(*p), "{}", name);
            prop_assert!(names.insert(name.clone()), "{} listed twice", name);
            prop_assert_eq!(CacheKey::from(*p).resolve(cfg.n_layers), name.clone());
            prop_assert_eq!(get_act_name(&name, None, None), name);
            prop_assert!(p.layer().is_none_or(|l| l < cfg.n_layers));
        }
        let layer = |l: usize| -> Vec<BlockHook> {
            points
                .iter()
                .filter_map(|p| match p {
                    HookPoint::Block(m, h) if *m == l => Some(*h),
                    _ => None,
                })
                .collect()
        };
        for l in 1..cfg.n_layers {
            prop_assert_eq!(layer(l), layer(0));
        }
        for must in [BlockHook::ResidPre, BlockHook::Pattern, BlockHook::ResidPost] {
            prop_assert!(layer(0).contains(&must));
        }
        prop_assert_eq!(
            points.contains(&HookPoint::PosEmbed),
            cfg.positional_embedding_type == PositionalEmbeddingType::Standard
        );
    }

    /// Every TransformerLens spelling of a hook of a random config — `(name, layer, layer_type)` with aliases,
    /// the `k6` / `scale4ln1` shorthand, and a negative layer through `CacheKey` — names that hook.
    #[test]
    fn get_act_name_spellings_name_the_hook(cfg in config(), pick in any::<Index>()) {
        let n = cfg.n_layers;
        for p in hook_points(&cfg) {
            let want = p.to_string();
            let (spellings, layer) = match p {
                HookPoint::Block(l, h) => (block_spellings(h), Some(l)),
                top => (top_spellings(top), None),
            };
            let (name, layer_type) = spellings[pick.index(spellings.len())];
            let got = get_act_name(name, layer.map(|l| l as i64), layer_type);
            prop_assert_eq!(&got, &want, "{} {:?} {:?}", name, layer, layer_type);
            prop_assert_eq!(got.parse::<HookPoint>(), Ok(p));
            let key = CacheKey::Parts(name.to_string(), layer.map(|l| l as i64), layer_type.map(str::to_string));
            prop_assert_eq!(key.resolve(n), want.clone());
            if let Some(l) = layer {
                let negative = CacheKey::Parts(
                    name.to_string(),
                    Some(l as i64 - n as i64),
                    layer_type.map(str::to_string),
                );
                prop_assert_eq!(negative.resolve(n), want.clone());
                let compact_ok = name.bytes().all(|b| b.is_ascii_lowercase())
                    && !layer_type.unwrap_or("").contains('.');
                if compact_ok {
                    let compact = format!("{name}{l}{}", layer_type.unwrap_or(""));
                    prop_assert_eq!(get_act_name(&compact, None, None), want.clone(), "{}", compact);
                    prop_assert_eq!(CacheKey::from(compact.as_str()).resolve(n), want.clone());
                }
            }
        }
    }

    /// For any `(name, layer, layer_type)` from TransformerLens's vocabulary (and some that are not), the name
    /// `get_act_name` builds parses to exactly the hook point TransformerLens's rules predict, or to nothing.
    #[test]
    fn get_act_name_agrees_with_parsing(
        name in proptest::sample::select(vec![
            "embed", "pos_embed", "in", "out", "scale", "normalized", "resid_pre", "resid_mid", "resid_post",
            "attn_out", "mlp_out", "q", "k", "v", "z", "query", "key", "value", "rot_q", "rot_k", "result",
            "pattern", "attn", "attn_scores", "attn_logits", "pre", "mlp_pre", "pre_linear", "mid", "mlp_mid",
            "post", "mlp_post", "", "resid", "hook", "mlp", "ln1", "Q",
        ]),
        layer in prop_oneof![
            Just(None),
            (0i64..40).prop_map(Some),
            (-3i64..0).prop_map(Some),
            Just(Some(i64::MAX)),
        ],
        layer_type in proptest::sample::select(vec![
            None, Some("a"), Some("attention"), Some("m"), Some("mlp"), Some("b"), Some("block"), Some("blocks"),
            Some("attn"), Some("ln1"), Some("ln1_post"), Some("ln2"), Some("ln2_post"), Some("mlp.ln"),
            Some("attn.q_norm"), Some("attn.k_norm"), Some("unembed"), Some("ln_final"), Some(""), Some("x"),
            Some("attn.x"),
        ]),
    ) {
        let got = get_act_name(name, layer, layer_type);
        prop_assert_eq!(
            got.parse::<HookPoint>().ok(),
            expected_point(name, layer, layer_type),
            "{:?} {:?} {:?} -> {}", name, layer, layer_type, got
        );
        prop_assert_eq!(&got, &tl_get_act_name(name, layer, layer_type));
    }

    /// `get_act_name` is TransformerLens's on arbitrary ASCII names (shorthands, dots, newlines, capitals).
    #[test]
    fn get_act_name_matches_transformerlens(
        name in "[a-z0-9_.A-Z\n ]{0,12}",
        layer in proptest::option::of(-5i64..50),
        layer_type in proptest::option::of("[a-z0-9_.\n]{0,6}"),
    ) {
        prop_assert_eq!(
            get_act_name(&name, layer, layer_type.as_deref()),
            tl_get_act_name(&name, layer, layer_type.as_deref()),
            "{:?} {:?} {:?}", name, layer, layer_type
        );
    }

    /// No string makes the parser or `get_act_name` panic, and a string that parses is the canonical name.
    #[test]
    fn arbitrary_strings_never_panic(
        s in prop_oneof![
            ".*",
            "(blocks\\.|ln_final\\.|unembed\\.|hook_)?[a-z0-9_.]{0,24}",
            "blocks\\.[0-9+-]{0,22}\\.(attn\\.|mlp\\.|ln[12](_post)?\\.)?hook_[a-z_]{0,12}",
        ],
        layer in proptest::option::of(any::<i64>()),
        n_layers in 0usize..50,
    ) {
        parse_is_canonical(&s)?;
        let _ = get_act_name(&s, None, None);
        let _ = get_act_name(&s, layer, Some(&s));
        let _ = CacheKey::Name(s.clone()).resolve(n_layers);
        let _ = CacheKey::Parts(s.clone(), layer, None).resolve(n_layers);
    }

    /// A valid name with a character inserted, deleted, duplicated or capitalised never panics the parser, and
    /// parses only if it is still a canonical name.
    #[test]
    fn mutated_names_never_panic(p in any_point(), ms in proptest::collection::vec(mutation(), 1..4)) {
        let s = ms.iter().fold(p.to_string(), |s, m| mutate(&s, m));
        parse_is_canonical(&s)?;
        let _ = get_act_name(&s, None, None);
    }

    /// Replacing a block's layer number by other text parses exactly when the text is a canonical `usize`
    /// (digits, no sign, no leading zero, no overflow), to that layer.
    #[test]
    fn layer_numbers_parse_only_when_canonical(
        h in proptest::sample::select(BlockHook::ALL.to_vec()),
        text in layer_text(),
    ) {
        let name = format!("blocks.{text}.{}", HookPoint::Block(0, h).to_string().strip_prefix("blocks.0.").unwrap());
        let canonical = !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit())
            && (text == "0" || !text.starts_with('0'));
        let want = canonical
            .then(|| text.parse::<usize>().ok())
            .flatten()
            .map(|l| HookPoint::Block(l, h));
        prop_assert_eq!(name.parse::<HookPoint>().ok(), want, "{}", name);
        parse_is_canonical(&name)?;
    }
}
