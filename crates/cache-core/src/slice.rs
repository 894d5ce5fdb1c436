//! [`Slice`]: TransformerLens's `Slice`, the one way positions, batches and neurons are selected.
//!
//! The four forms behave as in TransformerLens: [`Slice::All`] leaves the axis alone, [`Slice::Index`] takes one entry
//! and removes the axis (negative counts from the end), [`Slice::Range`] is Python's `slice(start, stop, step)` and
//! keeps the axis, [`Slice::Indices`] gathers a list of entries and keeps the axis. Unlike TransformerLens, an index
//! past the end of the axis is an error, not a silently shorter result.

use burn_tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::dyn_tensor::DynTensor;
use crate::error::{CacheError, Result};

/// A selection along one axis, with TransformerLens semantics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Slice {
    /// No selection (`None` in TransformerLens).
    #[default]
    All,
    /// One entry; the axis is removed (an `int`).
    Index(i64),
    /// Python's `slice(start, stop, step)`; the axis is kept.
    Range {
        /// First entry (default 0, or the end for a negative step).
        start: Option<i64>,
        /// One past the last entry (default: the end of the axis).
        stop: Option<i64>,
        /// Step (default 1; never 0).
        step: Option<i64>,
    },
    /// A list of entries, gathered in this order; the axis is kept.
    Indices(Vec<i64>),
}

/// Which argument a slice came from, for error messages.
pub type SliceRole = &'static str;

impl Slice {
    /// `slice(start, stop)`: entries `start..stop`.
    pub fn range(start: i64, stop: i64) -> Self {
        Slice::Range {
            start: Some(start),
            stop: Some(stop),
            step: None,
        }
    }

    /// Whether this slice removes the axis it is applied to.
    pub fn removes_axis(&self) -> bool {
        matches!(self, Slice::Index(_))
    }

    /// The form `run_with_cache` uses: an index becomes a one-entry list, so the axis is kept
    /// (TransformerLens's `Slice.unwrap`).
    pub fn keeping_axis(&self) -> Slice {
        match self {
            Slice::Index(i) => Slice::Indices(vec![*i]),
            other => other.clone(),
        }
    }

    /// The entries of an axis of length `len` that this slice selects, in order.
    pub fn indices(&self, len: usize, role: SliceRole) -> Result<Vec<usize>> {
        let n = len as i64;
        let resolve = |i: i64| -> Result<usize> {
            let j = if i < 0 { i + n } else { i };
            if j < 0 || j >= n {
                Err(CacheError::SliceOutOfRange {
                    what: role.to_string(),
                    index: i,
                    len,
                })
            } else {
                Ok(j as usize)
            }
        };
        match self {
            Slice::All => Ok((0..len).collect()),
            Slice::Index(i) => Ok(vec![resolve(*i)?]),
            Slice::Indices(list) => list.iter().map(|&i| resolve(i)).collect(),
            Slice::Range { start, stop, step } => {
                let step = step.unwrap_or(1);
                if step == 0 {
                    return Err(CacheError::InvalidArgument(format!(
                        "{role}: slice step cannot be zero"
                    )));
                }
                Ok(python_range(*start, *stop, step, n)
                    .map(|i| i as usize)
                    .collect())
            }
        }
    }

    /// Applies the slice to a logical axis of `t` (negative counts from the end).
    pub fn apply<B: Backend>(
        &self,
        t: DynTensor<B>,
        axis: isize,
        role: SliceRole,
    ) -> Result<DynTensor<B>> {
        // The axis must exist even for `All` (TransformerLens raises `IndexError` there too).
        let len = t.dim(axis)?;
        if matches!(self, Slice::All) {
            return Ok(t);
        }
        let idx = self.indices(len, role)?;
        match self {
            Slice::Index(_) => t.index(axis, idx[0]),
            _ if idx.is_empty() => Err(CacheError::InvalidArgument(format!(
                "{role} {self} selects nothing from an axis of length {len}"
            ))),
            _ if idx.windows(2).all(|w| w[1] == w[0] + 1) => {
                if idx.len() == len {
                    Ok(t)
                } else {
                    t.narrow(axis, idx[0], idx.len())
                }
            }
            _ => t.select(axis, &idx),
        }
    }
}

/// Python's `range(*slice(start, stop, step).indices(n))`.
fn python_range(
    start: Option<i64>,
    stop: Option<i64>,
    step: i64,
    n: i64,
) -> impl Iterator<Item = i64> {
    let clamp = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
    let (lo, hi) = if step > 0 { (0, n) } else { (-1, n - 1) };
    let norm = |v: Option<i64>, default: i64| match v {
        None => default,
        Some(v) if v < 0 => clamp(v + n, lo, hi),
        Some(v) => clamp(v, lo, hi),
    };
    let (s, e) = if step > 0 {
        (norm(start, 0), norm(stop, n))
    } else {
        (norm(start, n - 1), norm(stop, -1))
    };
    // `None` once the next entry would lie past `i64::MAX` (a huge step): Python stops there too.
    let mut next = Some(s);
    std::iter::from_fn(move || {
        let i = next.filter(|&i| if step > 0 { i < e } else { i > e })?;
        next = i.checked_add(step);
        Some(i)
    })
}

impl std::fmt::Display for Slice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |v: &Option<i64>| v.map(|x| x.to_string()).unwrap_or_default();
        match self {
            Slice::All => write!(f, "None"),
            Slice::Index(i) => write!(f, "{i}"),
            Slice::Range { start, stop, step } => match step {
                Some(s) => write!(f, "{}:{}:{s}", opt(start), opt(stop)),
                None => write!(f, "{}:{}", opt(start), opt(stop)),
            },
            Slice::Indices(list) => write!(f, "{list:?}"),
        }
    }
}

impl From<i64> for Slice {
    fn from(i: i64) -> Self {
        Slice::Index(i)
    }
}

impl From<Vec<i64>> for Slice {
    fn from(list: Vec<i64>) -> Self {
        Slice::Indices(list)
    }
}

impl From<std::ops::Range<i64>> for Slice {
    fn from(r: std::ops::Range<i64>) -> Self {
        Slice::range(r.start, r.end)
    }
}

impl<T: Into<Slice>> From<Option<T>> for Slice {
    fn from(o: Option<T>) -> Self {
        o.map_or(Slice::All, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(s: Slice, n: usize) -> Vec<usize> {
        s.indices(n, "pos_slice").unwrap()
    }

    #[test]
    fn ranges_read_as_python() {
        let r = |a, b, c| Slice::Range {
            start: a,
            stop: b,
            step: c,
        };
        assert_eq!(idx(r(None, Some(3), None), 5), vec![0, 1, 2]);
        assert_eq!(idx(r(Some(-2), None, None), 5), vec![3, 4]);
        assert_eq!(idx(r(None, None, Some(-2)), 5), vec![4, 2, 0]);
        assert_eq!(idx(r(Some(0), Some(5), Some(-2)), 5), Vec::<usize>::new());
        assert_eq!(idx(r(Some(1), Some(100), Some(2)), 5), vec![1, 3]);
        assert_eq!(idx(r(Some(-100), Some(2), None), 5), vec![0, 1]);
    }

    #[test]
    fn indices_and_index_check_bounds() {
        assert_eq!(idx(Slice::Index(-1), 4), vec![3]);
        assert_eq!(idx(Slice::Indices(vec![0, -1]), 4), vec![0, 3]);
        let err = Slice::Index(4).indices(4, "pos_slice").unwrap_err();
        assert!(
            matches!(
                err,
                CacheError::SliceOutOfRange {
                    index: 4,
                    len: 4,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            Slice::Range {
                start: None,
                stop: None,
                step: Some(0)
            }
            .indices(3, "x")
            .is_err()
        );
    }

    #[test]
    fn keeping_axis_turns_an_index_into_a_list() {
        assert_eq!(Slice::Index(-1).keeping_axis(), Slice::Indices(vec![-1]));
        assert_eq!(Slice::All.keeping_axis(), Slice::All);
    }
}
