//! Plinth's own ONNX-ML operators (domain `ai.onnx.ml`), matching onnxruntime's results on what
//! skl2onnx and onnxmltools write. The semantics, including the binary-classifier special cases,
//! are written down in `docs/onnx-ml-semantics.md`. Tree ensembles lower onto
//! [`crate::tree::Ensemble`].

use std::collections::HashMap;

use plinth_formats::onnx as proto;

use super::Attrs;
use super::ops::floats;
use crate::LoadError;
use crate::tensor::{Data, Tensor};
use crate::tree::{Cmp, Ensemble, Node, missing};
use plinth_formats::onnx_ml::{EnsembleNode, Mode};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum PostTransform {
    None,
    Logistic,
    Softmax,
    SoftmaxZero,
    Probit,
}

impl PostTransform {
    fn parse(a: &Attrs<'_>) -> Result<Self, LoadError> {
        Ok(match a.string("post_transform", "NONE")?.as_str() {
            "NONE" => PostTransform::None,
            "LOGISTIC" => PostTransform::Logistic,
            "SOFTMAX" => PostTransform::Softmax,
            "SOFTMAX_ZERO" => PostTransform::SoftmaxZero,
            "PROBIT" => PostTransform::Probit,
            other => return Err(a.err(format!("unknown post_transform '{other}'"))),
        })
    }
}

fn logistic(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The inverse of the standard normal CDF, as onnxruntime computes PROBIT (sqrt(2) * erfinv(2p-1)).
fn probit(p: f64) -> f64 {
    std::f64::consts::SQRT_2 * erf_inv(2.0 * p - 1.0)
}

fn erf_inv(x: f64) -> f64 {
    // Giles' single-precision approximation, the one onnxruntime uses.
    let sgn = if x < 0.0 { -1.0 } else { 1.0 };
    let x = (1.0 - x) * (1.0 + x);
    let log = x.ln();
    let v = 2.0 / (std::f64::consts::PI * 0.147) + 0.5 * log;
    let v2 = 1.0 / 0.147 * log;
    let v3 = -v + (v * v - v2).sqrt();
    sgn * v3.sqrt()
}

/// Applies a post-transform to one row of scores.
fn transform(pt: PostTransform, row: &mut [f64]) {
    match pt {
        PostTransform::None => {}
        PostTransform::Logistic => row.iter_mut().for_each(|x| *x = logistic(*x)),
        PostTransform::Probit => row.iter_mut().for_each(|x| *x = probit(*x)),
        PostTransform::Softmax => {
            crate::tree_model::apply_link(crate::tree_model::Link::Softmax, row)
        }
        PostTransform::SoftmaxZero => {
            let max = row.iter().cloned().filter(|&x| x != 0.0).fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for x in row.iter_mut() {
                if *x != 0.0 {
                    *x = (*x - max).exp();
                    sum += *x;
                }
            }
            if sum > 0.0 {
                row.iter_mut().for_each(|x| *x /= sum);
            }
        }
    }
}

/// Class labels: integers or strings.
#[derive(Debug, Clone)]
pub(crate) enum Labels {
    Ints(Vec<i64>),
    Strings(Vec<String>),
}

impl Labels {
    fn parse(a: &Attrs<'_>) -> Result<Labels, LoadError> {
        let ints = a.ints("classlabels_ints")?;
        let ints = if ints.is_empty() { a.ints("classlabels_int64s")? } else { ints };
        let strings = a.strings("classlabels_strings")?;
        match (ints.is_empty(), strings.is_empty()) {
            (false, true) => Ok(Labels::Ints(ints)),
            (true, false) => Ok(Labels::Strings(strings)),
            _ => Err(a.err("needs exactly one of classlabels_int64s / classlabels_strings")),
        }
    }

    fn len(&self) -> usize {
        match self {
            Labels::Ints(v) => v.len(),
            Labels::Strings(v) => v.len(),
        }
    }

    fn pick(&self, idx: &[usize]) -> Data {
        match self {
            Labels::Ints(v) => Data::I64(idx.iter().map(|&i| v[i]).collect()),
            Labels::Strings(v) => Data::Str(idx.iter().map(|&i| v[i].clone()).collect()),
        }
    }
}

#[derive(Debug)]
pub(crate) struct TreeClassifier {
    ensemble: Ensemble,
    labels: Labels,
    base_values: Vec<f64>,
    post: PostTransform,
    /// Every leaf weight goes to one class column (the binary exporters' layout).
    single_column: Option<usize>,
    weights_all_positive: bool,
}

#[derive(Debug)]
pub(crate) struct TreeRegressor {
    ensemble: Ensemble,
    base_values: Vec<f64>,
    post: PostTransform,
    aggregate: Aggregate,
    n_trees: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

#[derive(Debug)]
pub(crate) struct LinearClassifier {
    coefficients: Vec<f64>,
    intercepts: Vec<f64>,
    n_rows: usize,
    labels: Labels,
    post: PostTransform,
}

#[derive(Debug)]
pub(crate) enum MlOp {
    TreeClassifier(TreeClassifier),
    TreeRegressor(TreeRegressor),
    LinearClassifier(LinearClassifier),
    LinearRegressor {
        coefficients: Vec<f64>,
        intercepts: Vec<f64>,
        targets: usize,
        post: PostTransform,
    },
    Scaler {
        offset: Vec<f64>,
        scale: Vec<f64>,
    },
    Imputer {
        values: Vec<f64>,
        replaced: f32,
    },
    Normalizer {
        norm: String,
    },
    Binarizer {
        threshold: f64,
    },
    ArrayFeatureExtractor,
    LabelEncoder(LabelMap),
}

impl MlOp {
    pub fn name(&self) -> &'static str {
        match self {
            MlOp::TreeClassifier(_) => "TreeEnsembleClassifier",
            MlOp::TreeRegressor(_) => "TreeEnsembleRegressor",
            MlOp::LinearClassifier(_) => "LinearClassifier",
            MlOp::LinearRegressor { .. } => "LinearRegressor",
            MlOp::Scaler { .. } => "Scaler",
            MlOp::Imputer { .. } => "Imputer",
            MlOp::Normalizer { .. } => "Normalizer",
            MlOp::Binarizer { .. } => "Binarizer",
            MlOp::ArrayFeatureExtractor => "ArrayFeatureExtractor",
            MlOp::LabelEncoder(_) => "LabelEncoder",
        }
    }
}

#[derive(Debug)]
pub(crate) enum LabelMap {
    IntToString { map: HashMap<i64, String>, default: String },
    StringToInt { map: HashMap<String, i64>, default: i64 },
    IntToInt { map: HashMap<i64, i64>, default: i64 },
}

/// Builds the ensemble of a `TreeEnsemble{Classifier,Regressor}` node from its checked form
/// ([`plinth_formats::onnx_ml::TreeEnsemble`], the reader upload validation uses: shared
/// subtrees copied out, cycles refused). Answers the ensemble, its tree count and base values.
fn lower_ensemble(
    node: &proto::Node,
    a: &Attrs<'_>,
    n_targets: usize,
) -> Result<(Ensemble, usize, Vec<f64>), LoadError> {
    let read = plinth_formats::onnx_ml::TreeEnsemble::read(node).map_err(|m| a.err(m))?;
    let one_target_regressor = node.op_type == "TreeEnsembleRegressor" && n_targets == 1;
    let mut e = Ensemble { n_targets, ..Ensemble::default() };
    for n in &read.nodes {
        e.nodes.push(match *n {
            EnsembleNode::Leaf(leaf) => {
                let mut list = read.leaf_weights[leaf as usize].clone();
                // A one-target regressor counts only the first weight of a leaf, as
                // onnxruntime does.
                if one_target_regressor {
                    list.truncate(1);
                }
                let node = Node::leaf(e.leaf_weights.len() as u32, list.len() as u32);
                e.leaf_weights.extend(list);
                node
            }
            EnsembleNode::Branch { mode, feature, threshold, yes, no, missing_yes } => Node {
                threshold: f64::from(threshold),
                feature,
                yes,
                no,
                cmp: match mode {
                    Mode::Le => Cmp::Le,
                    Mode::Lt => Cmp::Lt,
                    Mode::Ge => Cmp::Ge,
                    Mode::Gt => Cmp::Gt,
                    Mode::Eq => Cmp::Eq,
                    Mode::Ne => Cmp::Ne,
                },
                missing: if missing_yes { missing::NAN_DEFAULT | missing::DEFAULT_YES } else { 0 },
            },
        });
    }
    e.roots = read.roots.clone();
    e.n_features = read.max_feature.map_or(0, |f| f + 1);
    e.check().map_err(|m| a.err(m))?;
    let base_values = a.floats("base_values")?.into_iter().map(f64::from).collect();
    Ok((e, read.roots.len(), base_values))
}

pub(crate) fn lower(node: &proto::Node, a: &Attrs<'_>) -> Result<MlOp, LoadError> {
    Ok(match node.op_type.as_str() {
        "TreeEnsembleClassifier" => {
            let labels = Labels::parse(a)?;
            let (ensemble, _, base_values) = lower_ensemble(node, a, labels.len())?;
            let ids = a.ints("class_ids")?;
            let mut distinct: Vec<i64> = ids.clone();
            distinct.sort();
            distinct.dedup();
            let weights_all_positive = a.floats("class_weights")?.iter().all(|&w| w >= 0.0);
            let single_column =
                (labels.len() == 2 && distinct.len() == 1).then(|| distinct[0] as usize);
            MlOp::TreeClassifier(TreeClassifier {
                ensemble,
                labels,
                base_values,
                post: PostTransform::parse(a)?,
                single_column,
                weights_all_positive,
            })
        }
        "TreeEnsembleRegressor" => {
            let targets = a.int("n_targets", 1)?.max(1) as usize;
            let (ensemble, n_trees, base_values) = lower_ensemble(node, a, targets)?;
            let aggregate = match a.string("aggregate_function", "SUM")?.as_str() {
                "SUM" => Aggregate::Sum,
                "AVERAGE" => Aggregate::Average,
                "MIN" => Aggregate::Min,
                "MAX" => Aggregate::Max,
                other => return Err(a.err(format!("unknown aggregate_function '{other}'"))),
            };
            if matches!(aggregate, Aggregate::Min | Aggregate::Max) {
                return Err(a.err("aggregate_function MIN and MAX are not supported"));
            }
            MlOp::TreeRegressor(TreeRegressor {
                ensemble,
                base_values,
                post: PostTransform::parse(a)?,
                aggregate,
                n_trees,
            })
        }
        "LinearClassifier" => {
            let labels = Labels::parse(a)?;
            let coefficients: Vec<f64> =
                a.floats("coefficients")?.into_iter().map(f64::from).collect();
            let intercepts: Vec<f64> = a.floats("intercepts")?.into_iter().map(f64::from).collect();
            let n_rows = if intercepts.is_empty() { labels.len() } else { intercepts.len() };
            if n_rows == 0 || !coefficients.len().is_multiple_of(n_rows) {
                return Err(
                    a.err(format!("{} coefficients for {n_rows} classes", coefficients.len()))
                );
            }
            MlOp::LinearClassifier(LinearClassifier {
                coefficients,
                intercepts,
                n_rows,
                labels,
                post: PostTransform::parse(a)?,
            })
        }
        "LinearRegressor" => {
            let targets = a.int("targets", 1)?.max(1) as usize;
            let coefficients: Vec<f64> =
                a.floats("coefficients")?.into_iter().map(f64::from).collect();
            if !coefficients.len().is_multiple_of(targets) {
                return Err(
                    a.err(format!("{} coefficients for {targets} targets", coefficients.len()))
                );
            }
            MlOp::LinearRegressor {
                coefficients,
                intercepts: a.floats("intercepts")?.into_iter().map(f64::from).collect(),
                targets,
                post: PostTransform::parse(a)?,
            }
        }
        "Scaler" => MlOp::Scaler {
            offset: a.floats("offset")?.into_iter().map(f64::from).collect(),
            scale: a.floats("scale")?.into_iter().map(f64::from).collect(),
        },
        "Imputer" => {
            let values: Vec<f64> =
                a.floats("imputed_value_floats")?.into_iter().map(f64::from).collect();
            if values.is_empty() {
                return Err(a.err("only float imputation (imputed_value_floats) is supported"));
            }
            MlOp::Imputer { values, replaced: a.float("replaced_value_float", 0.0)? }
        }
        "Normalizer" => {
            let norm = a.string("norm", "MAX")?;
            if !matches!(norm.as_str(), "MAX" | "L1" | "L2") {
                return Err(a.err(format!("unknown norm '{norm}'")));
            }
            MlOp::Normalizer { norm }
        }
        "Binarizer" => MlOp::Binarizer { threshold: f64::from(a.float("threshold", 0.0)?) },
        "ArrayFeatureExtractor" => MlOp::ArrayFeatureExtractor,
        "LabelEncoder" => MlOp::LabelEncoder(lower_label_encoder(a)?),
        other => {
            return Err(
                a.err(format!("ONNX-ML operator '{other}' is not supported by Plinth's runtime"))
            );
        }
    })
}

fn lower_label_encoder(a: &Attrs<'_>) -> Result<LabelMap, LoadError> {
    let (ki, ks) = (a.ints("keys_int64s")?, a.strings("keys_strings")?);
    let (vi, vs) = (a.ints("values_int64s")?, a.strings("values_strings")?);
    if !ki.is_empty() && !vs.is_empty() && ki.len() == vs.len() {
        return Ok(LabelMap::IntToString {
            map: ki.into_iter().zip(vs).collect(),
            default: a.string("default_string", "_Unused")?,
        });
    }
    if !ks.is_empty() && !vi.is_empty() && ks.len() == vi.len() {
        return Ok(LabelMap::StringToInt {
            map: ks.into_iter().zip(vi).collect(),
            default: a.int("default_int64", -1)?,
        });
    }
    if !ki.is_empty() && !vi.is_empty() && ki.len() == vi.len() {
        return Ok(LabelMap::IntToInt {
            map: ki.into_iter().zip(vi).collect(),
            default: a.int("default_int64", -1)?,
        });
    }
    // Opset 1: classes_strings with an int64 <-> string direction.
    let classes = a.strings("classes_strings")?;
    if !classes.is_empty() {
        return Ok(LabelMap::IntToString {
            map: classes.into_iter().enumerate().map(|(i, s)| (i as i64, s)).collect(),
            default: a.string("default_string", "_Unused")?,
        });
    }
    Err(a.err("LabelEncoder with this combination of keys and values is not supported"))
}

type R<T> = Result<T, String>;

fn input<'a>(args: &[Option<&'a Tensor>], i: usize) -> R<&'a Tensor> {
    args.get(i).copied().flatten().ok_or_else(|| format!("missing input {i}"))
}

/// A float matrix `[rows, cols]` from a 1-D or 2-D input.
fn matrix(t: &Tensor) -> R<(std::borrow::Cow<'_, [f32]>, usize, usize)> {
    let (rows, cols) = t.rows_cols();
    Ok((floats(t)?, rows, cols))
}

pub(crate) fn run(op: &MlOp, args: &[Option<&Tensor>]) -> R<Vec<Tensor>> {
    match op {
        MlOp::TreeClassifier(c) => {
            let (x, rows, cols) = matrix(input(args, 0)?)?;
            if cols < c.ensemble.n_features {
                return Err(format!(
                    "expected at least {} features per row, got {cols}",
                    c.ensemble.n_features
                ));
            }
            let k = c.labels.len();
            let mut scores = vec![0.0; rows * k];
            c.ensemble.accumulate(&x, cols, &mut scores);
            let mut probs = Vec::with_capacity(rows * k);
            let mut label_idx = Vec::with_capacity(rows);
            for row in scores.chunks_mut(k) {
                let label = finalize_classifier(c, row);
                label_idx.push(label);
                probs.extend(row.iter().map(|&v| v as f32));
            }
            Ok(vec![
                Tensor::new(vec![rows], c.labels.pick(&label_idx)),
                Tensor::f32(vec![rows, k], probs),
            ])
        }
        MlOp::TreeRegressor(r) => {
            let (x, rows, cols) = matrix(input(args, 0)?)?;
            if cols < r.ensemble.n_features {
                return Err(format!(
                    "expected at least {} features per row, got {cols}",
                    r.ensemble.n_features
                ));
            }
            let t = r.ensemble.n_targets;
            let mut scores = vec![0.0; rows * t];
            r.ensemble.accumulate(&x, cols, &mut scores);
            for row in scores.chunks_mut(t) {
                if r.aggregate == Aggregate::Average {
                    row.iter_mut().for_each(|v| *v /= r.n_trees.max(1) as f64);
                }
                for (v, b) in row.iter_mut().zip(&r.base_values) {
                    *v += b;
                }
                // With one target, onnxruntime applies only PROBIT (docs/onnx-ml-semantics.md 2).
                if t > 1 || r.post == PostTransform::Probit {
                    transform(r.post, row);
                }
            }
            Ok(vec![Tensor::f32(vec![rows, t], scores.into_iter().map(|v| v as f32).collect())])
        }
        MlOp::LinearClassifier(c) => {
            let (x, rows, cols) = matrix(input(args, 0)?)?;
            if c.n_rows == 1 && c.post == PostTransform::Probit {
                return Err(
                    "LinearClassifier with one score row and PROBIT is undefined in ONNX-ML".into(),
                );
            }
            if c.coefficients.len() != c.n_rows * cols {
                return Err(format!(
                    "expected {} features per row, got {cols}",
                    c.coefficients.len() / c.n_rows
                ));
            }
            let k = c.labels.len();
            let mut probs = Vec::with_capacity(rows * k.max(2));
            let mut label_idx = Vec::with_capacity(rows);
            for r in 0..rows {
                let xr = &x[r * cols..(r + 1) * cols];
                let mut s: Vec<f64> = (0..c.n_rows)
                    .map(|j| {
                        let w = &c.coefficients[j * cols..(j + 1) * cols];
                        w.iter().zip(xr).map(|(a, b)| a * f64::from(*b)).sum::<f64>()
                            + c.intercepts.get(j).copied().unwrap_or(0.0)
                    })
                    .collect();
                let label = if c.n_rows == 1 && k == 2 {
                    // One score for two classes (docs/onnx-ml-semantics.md 3.1): [1 - q, q].
                    let v = s[0];
                    let q = match c.post {
                        PostTransform::Logistic => logistic(v),
                        _ => v,
                    };
                    s = vec![1.0 - q, q];
                    usize::from(v > 0.0)
                } else {
                    let label = argmax(&s);
                    transform(c.post, &mut s);
                    label
                };
                label_idx.push(label);
                probs.extend(s.iter().map(|&v| v as f32));
            }
            let width = probs.len() / rows.max(1);
            Ok(vec![
                Tensor::new(vec![rows], c.labels.pick(&label_idx)),
                Tensor::f32(vec![rows, width], probs),
            ])
        }
        MlOp::LinearRegressor { coefficients, intercepts, targets, post } => {
            let (x, rows, cols) = matrix(input(args, 0)?)?;
            if coefficients.len() != targets * cols {
                return Err(format!(
                    "expected {} features per row, got {cols}",
                    coefficients.len() / targets
                ));
            }
            let mut out = Vec::with_capacity(rows * targets);
            for r in 0..rows {
                let xr = &x[r * cols..(r + 1) * cols];
                let mut s: Vec<f64> = (0..*targets)
                    .map(|j| {
                        coefficients[j * cols..(j + 1) * cols]
                            .iter()
                            .zip(xr)
                            .map(|(a, b)| a * f64::from(*b))
                            .sum::<f64>()
                            + intercepts.get(j).copied().unwrap_or(0.0)
                    })
                    .collect();
                transform(*post, &mut s);
                out.extend(s.into_iter().map(|v| v as f32));
            }
            Ok(vec![Tensor::f32(vec![rows, *targets], out)])
        }
        MlOp::Scaler { offset, scale } => {
            let t = input(args, 0)?;
            let (x, rows, cols) = matrix(t)?;
            let pick = |v: &[f64], j: usize, default: f64| {
                if v.len() == 1 { v[0] } else { v.get(j).copied().unwrap_or(default) }
            };
            if (offset.len() > 1 && offset.len() != cols)
                || (scale.len() > 1 && scale.len() != cols)
            {
                return Err(format!(
                    "Scaler has {} offsets and {} scales for {cols} features",
                    offset.len(),
                    scale.len()
                ));
            }
            let mut out = Vec::with_capacity(rows * cols);
            for r in 0..rows {
                for j in 0..cols {
                    out.push(
                        ((f64::from(x[r * cols + j]) - pick(offset, j, 0.0)) * pick(scale, j, 1.0))
                            as f32,
                    );
                }
            }
            Ok(vec![Tensor::f32(t.shape.clone(), out)])
        }
        MlOp::Imputer { values, replaced } => {
            let t = input(args, 0)?;
            let (x, _, cols) = matrix(t)?;
            let mut x = x.into_owned();
            if values.len() > 1 && values.len() != cols {
                return Err(format!("Imputer has {} values for {cols} features", values.len()));
            }
            for (i, v) in x.iter_mut().enumerate() {
                let hit = if replaced.is_nan() { v.is_nan() } else { *v == *replaced };
                if hit {
                    *v = (if values.len() == 1 { values[0] } else { values[i % cols] }) as f32;
                }
            }
            Ok(vec![Tensor::f32(t.shape.clone(), x)])
        }
        MlOp::Normalizer { norm } => {
            let t = input(args, 0)?;
            let (x, rows, cols) = matrix(t)?;
            let mut out = Vec::with_capacity(x.len());
            for r in 0..rows {
                let row: Vec<f64> =
                    x[r * cols..(r + 1) * cols].iter().map(|&v| f64::from(v)).collect();
                let d = match norm.as_str() {
                    "MAX" => row.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                    "L1" => row.iter().map(|v| v.abs()).sum(),
                    _ => row.iter().map(|v| v * v).sum::<f64>().sqrt(),
                };
                out.extend(row.iter().map(|v| if d != 0.0 { (v / d) as f32 } else { *v as f32 }));
            }
            Ok(vec![Tensor::f32(t.shape.clone(), out)])
        }
        MlOp::Binarizer { threshold } => {
            let t = input(args, 0)?;
            let x = floats(t)?;
            Ok(vec![Tensor::f32(
                t.shape.clone(),
                x.iter().map(|&v| if f64::from(v) > *threshold { 1.0 } else { 0.0 }).collect(),
            )])
        }
        MlOp::ArrayFeatureExtractor => {
            let (t, idx) = (input(args, 0)?, input(args, 1)?);
            let Data::I64(indices) = &idx.data else {
                return Err("ArrayFeatureExtractor indices must be int64".into());
            };
            let (rows, cols) = t.rows_cols();
            if let Some(bad) = indices.iter().find(|&&i| i < 0 || i as usize >= cols) {
                return Err(format!(
                    "ArrayFeatureExtractor index {bad} is out of range for {cols} columns"
                ));
            }
            let pick = |r: usize| indices.iter().map(move |&i| r * cols + i as usize);
            let data = match &t.data {
                Data::F32(v) => Data::F32((0..rows).flat_map(|r| pick(r).map(|k| v[k])).collect()),
                Data::F64(v) => Data::F64((0..rows).flat_map(|r| pick(r).map(|k| v[k])).collect()),
                Data::I64(v) => Data::I64((0..rows).flat_map(|r| pick(r).map(|k| v[k])).collect()),
                Data::I32(v) => Data::I32((0..rows).flat_map(|r| pick(r).map(|k| v[k])).collect()),
                Data::Bool(v) => {
                    Data::Bool((0..rows).flat_map(|r| pick(r).map(|k| v[k])).collect())
                }
                Data::Str(v) => {
                    Data::Str((0..rows).flat_map(|r| pick(r).map(|k| v[k].clone())).collect())
                }
            };
            let shape =
                if t.shape.len() <= 1 { vec![indices.len()] } else { vec![rows, indices.len()] };
            Ok(vec![Tensor::new(shape, data)])
        }
        MlOp::LabelEncoder(map) => {
            let t = input(args, 0)?;
            let data = match (map, &t.data) {
                (LabelMap::IntToString { map, default }, Data::I64(v)) => Data::Str(
                    v.iter()
                        .map(|k| map.get(k).cloned().unwrap_or_else(|| default.clone()))
                        .collect(),
                ),
                (LabelMap::StringToInt { map, default }, Data::Str(v)) => {
                    Data::I64(v.iter().map(|k| *map.get(k).unwrap_or(default)).collect())
                }
                (LabelMap::IntToInt { map, default }, Data::I64(v)) => {
                    Data::I64(v.iter().map(|k| *map.get(k).unwrap_or(default)).collect())
                }
                (_, d) => return Err(format!("LabelEncoder got {} input", d.type_name())),
            };
            Ok(vec![Tensor::new(t.shape.clone(), data)])
        }
    }
}

fn argmax(row: &[f64]) -> usize {
    row.iter()
        .enumerate()
        .fold((0usize, f64::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
        .0
}

/// Turns one row of summed leaf weights into the class scores onnxruntime answers, and returns
/// the index of the predicted label.
fn finalize_classifier(c: &TreeClassifier, row: &mut [f64]) -> usize {
    if let Some(col) = c.single_column {
        // Binary exporters put every weight in one column: that score speaks for class 1.
        let mut s = row[col];
        if let Some(b) = c.base_values.get(col).or(c.base_values.first()) {
            s += b;
        }
        if c.weights_all_positive && c.post == PostTransform::None {
            row[0] = 1.0 - s;
            row[1] = s;
            return usize::from(s > 0.5);
        }
        match c.post {
            PostTransform::Logistic => {
                row[0] = logistic(-s);
                row[1] = logistic(s);
            }
            PostTransform::Probit => {
                row[0] = -s;
                row[1] = s;
                transform(PostTransform::Probit, row);
            }
            _ => {
                row[0] = -s;
                row[1] = s;
            }
        }
        return usize::from(s > 0.0);
    }
    for (v, b) in row.iter_mut().zip(&c.base_values) {
        *v += b;
    }
    transform(c.post, row);
    argmax(row)
}
