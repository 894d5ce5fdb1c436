//! Comparing two plan outputs (tlens against a TransformerLens golden, or one backend against another), element by
//! element with `|a − b| ≤ atol + rtol·|b|`, as plan-format.md defines agreement; a model run in half precision
//! (a plan's `dtype`) is compared with a bound in units of that precision ([`Tolerance::for_precision`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::Precision;
use crate::error::{Result, TlensError};

/// Tolerances of a comparison: an element agrees when `|a − b| ≤ atol + rtol·|b| + of_max·max(1, max|b|)`, where
/// `max|b|` is the largest finite magnitude in the reference tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance (relative to the reference value).
    pub rtol: f64,
    /// Tolerance relative to the reference tensor's largest magnitude, or to 1 if that is smaller.
    pub of_max: f64,
}

impl Tolerance {
    /// plan-format.md's float32 defaults: `atol = 1e-5`, `rtol = 1e-4`.
    pub const F32: Tolerance = Tolerance {
        atol: 1e-5,
        rtol: 1e-4,
        of_max: 0.0,
    };

    /// The tolerance for a model run in `precision`: [`Tolerance::F32`] for f32; for f16 and bf16, four units in the
    /// last place at the tensor's largest magnitude, `|a − b| ≤ 4·ε·max(1, max|b|)` (ε = 2⁻⁸ for bf16, 2⁻¹¹ for f16).
    ///
    /// Both sides round the same operations the same way, but a matrix product summed in another order can land on
    /// the other side of a rounding boundary, and the next layers carry that ulp along: elsewhere the values are
    /// equal bit for bit. Near zero (a logit, a centred stream) one ulp of the tensor's scale is far more than one ulp
    /// of the value, hence a bound on the tensor's scale rather than on each element; and a result that cancels (a
    /// logit difference of 0.06 made of normalised components of size 1) carries the error of its inputs, hence the
    /// floor of 1, the scale of a normalised stream.
    pub fn for_precision(precision: Precision) -> Tolerance {
        let epsilon = match precision {
            Precision::F32 => return Tolerance::F32,
            Precision::F16 => 2f64.powi(-11),
            Precision::Bf16 => 2f64.powi(-8),
        };
        Tolerance {
            atol: 0.0,
            rtol: 0.0,
            of_max: 4.0 * epsilon,
        }
    }
}

impl std::fmt::Display for Tolerance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut terms = Vec::new();
        if self.atol > 0.0 {
            terms.push(format!("{:e}", self.atol));
        }
        if self.rtol > 0.0 {
            terms.push(format!("{:e}·|b|", self.rtol));
        }
        if self.of_max > 0.0 {
            terms.push(format!("{:e}·max(1, max|b|)", self.of_max));
        }
        write!(f, "|a − b| ≤ {}", terms.join(" + "))
    }
}

/// A plan output read back: tensors as f64 with shapes, and metadata.
pub struct PlanOutput {
    /// Tensors by name: shape and values.
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f64>)>,
    /// Metadata (`labels/<id>`, `error/<id>`, `plan`).
    pub metadata: HashMap<String, String>,
}

impl PlanOutput {
    /// Reads a plan output file.
    pub fn read(path: &Path) -> Result<Self> {
        let err = |m: String| TlensError::File {
            path: path.display().to_string(),
            message: m,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| err(e.to_string()))?;
        let metadata = meta.metadata().clone().unwrap_or_default();
        let st = SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let d = view.data();
            let values: Vec<f64> = match view.dtype() {
                Dtype::F32 => d
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                    .collect(),
                Dtype::I64 => d
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f64)
                    .collect(),
                other => {
                    return Err(err(format!(
                        "`{name}` has dtype {other:?}; plan outputs hold F32 and I64"
                    )));
                }
            };
            tensors.insert(name, (view.shape().to_vec(), values));
        }
        Ok(Self { tensors, metadata })
    }

    fn prefixed(&self, prefix: &str) -> BTreeMap<String, &String> {
        self.metadata
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|id| (id.to_string(), v)))
            .collect()
    }
}

/// The worst disagreement found in one tensor.
#[derive(Clone, Debug)]
pub struct TensorDiff {
    /// Tensor name.
    pub name: String,
    /// Largest `|a − b|`.
    pub max_abs: f64,
    /// Largest `|a − b| / |b|` over elements with `b ≠ 0`.
    pub max_rel: f64,
    /// Elements outside tolerance.
    pub failures: usize,
}

/// The result of comparing two plan outputs.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    /// Per-tensor worst errors, for every tensor present in both.
    pub tensors: Vec<TensorDiff>,
    /// Structural disagreements (missing tensors, shapes, labels, failed calls) and failing tensors, one line each.
    pub problems: Vec<String>,
}

impl Comparison {
    /// Whether the outputs agree.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// Largest absolute error over all tensors.
    pub fn worst_abs(&self) -> f64 {
        self.tensors.iter().map(|t| t.max_abs).fold(0.0, f64::max)
    }

    /// Largest relative error over all tensors.
    pub fn worst_rel(&self) -> f64 {
        self.tensors.iter().map(|t| t.max_rel).fold(0.0, f64::max)
    }
}

/// Compares `ours` with `reference`, skipping the call ids in `skip` (deliberate divergences).
pub fn compare(
    ours: &PlanOutput,
    reference: &PlanOutput,
    tol: Tolerance,
    skip: &BTreeSet<String>,
) -> Comparison {
    let skipped = |name: &str| {
        name.strip_prefix("call/")
            .is_some_and(|id| skip.contains(id))
    };
    let mut cmp = Comparison::default();
    let names: BTreeSet<&String> = ours
        .tensors
        .keys()
        .chain(reference.tensors.keys())
        .filter(|n| !skipped(n))
        .collect();
    for name in names {
        match (ours.tensors.get(name), reference.tensors.get(name)) {
            (Some(_), None) => cmp.problems.push(format!("{name}: only in ours")),
            (None, Some(_)) => cmp.problems.push(format!("{name}: missing from ours")),
            (Some((sa, a)), Some((sb, b))) if sa != sb => cmp
                .problems
                .push(format!("{name}: shape {sa:?} vs reference {sb:?}")),
            (Some((_, a)), Some((_, b))) => {
                let diff = diff_values(name, a, b, tol);
                if diff.failures > 0 {
                    cmp.problems.push(format!(
                        "{name}: {} elements out of tolerance (max abs {:.3e}, max rel {:.3e})",
                        diff.failures, diff.max_abs, diff.max_rel
                    ));
                }
                cmp.tensors.push(diff);
            }
            (None, None) => unreachable!("names come from the two maps"),
        }
    }
    for prefix in ["labels/", "error/"] {
        let (mine, theirs) = (ours.prefixed(prefix), reference.prefixed(prefix));
        for id in mine.keys().chain(theirs.keys()).collect::<BTreeSet<_>>() {
            if skip.contains(id.as_str()) {
                continue;
            }
            match (mine.get(id), theirs.get(id)) {
                (Some(_), Some(_)) if prefix == "error/" => {}
                (Some(a), Some(b)) if a == b => {}
                (a, b) => cmp
                    .problems
                    .push(format!("{prefix}{id}: ours {a:?}, reference {b:?}")),
            }
        }
    }
    cmp
}

fn diff_values(name: &str, a: &[f64], b: &[f64], tol: Tolerance) -> TensorDiff {
    let mut d = TensorDiff {
        name: name.to_string(),
        max_abs: 0.0,
        max_rel: 0.0,
        failures: 0,
    };
    let scale = b
        .iter()
        .filter(|y| y.is_finite())
        .fold(0.0, |m: f64, y| m.max(y.abs()));
    let atol = tol.atol + tol.of_max * scale.max(1.0);
    for (&x, &y) in a.iter().zip(b) {
        if x == y || (x.is_nan() && y.is_nan()) {
            continue;
        }
        let abs = (x - y).abs();
        if abs.is_nan() || abs > atol + tol.rtol * y.abs() {
            d.failures += 1;
        }
        d.max_abs = d
            .max_abs
            .max(if abs.is_nan() { f64::INFINITY } else { abs });
        if y != 0.0 {
            d.max_rel = d.max_rel.max(abs / y.abs());
        }
    }
    d
}

/// The plan files under `dir` (`*.json` except `divergences.json`), sorted.
pub fn committed_plans(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let err = |e: std::io::Error| TlensError::File {
        path: dir.display().to_string(),
        message: e.to_string(),
    };
    let mut plans = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let path = entry.map_err(err)?.path();
        if path.extension().is_some_and(|e| e == "json")
            && path.file_name().is_some_and(|n| n != DIVERGENCES)
        {
            plans.push(path);
        }
    }
    plans.sort();
    Ok(plans)
}

/// The file in the plans folder listing, per plan stem, the call ids where tlens deliberately differs from
/// TransformerLens (with the reason and the test that shows it).
pub const DIVERGENCES: &str = "divergences.json";

/// The call ids of `plan_stem` that are deliberate divergences (see [`DIVERGENCES`]).
pub fn divergent_calls(plans_dir: &Path, plan_stem: &str) -> Result<BTreeSet<String>> {
    let path = plans_dir.join(DIVERGENCES);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(BTreeSet::new());
    };
    let all: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_str(&text).map_err(|e| TlensError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
    Ok(all
        .get(plan_stem)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default())
}
