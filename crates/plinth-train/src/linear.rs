//! Linear regression (ridge, closed form) and logistic regression (binary, L2, Newton's method)
//! on standardized inputs, streamed: each pass reads the source once and keeps only
//! features × features sums. Written as ONNX: an `Imputer` (a missing value becomes the
//! training mean, i.e. zero after standardizing) then `LinearRegressor` or `LinearClassifier`
//! with the standardization folded into the coefficients.

use std::ops::ControlFlow;

use plinth_core::data::{ColumnData, Table};

use crate::data::{Columns, Labels, Source, label_text, sort_classes};
use crate::gbdt::Progress;
use crate::onnx::{Attr, Node, Output};

/// Linear model settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearParams {
    /// L2 penalty on the standardized coefficients (sklearn's `1 / C`); the intercept is not
    /// penalized.
    pub lambda_l2: f64,
    /// Newton iterations at most (logistic).
    pub max_iter: usize,
    /// Stop when no coefficient moves more than this.
    pub tol: f64,
}

impl Default for LinearParams {
    fn default() -> LinearParams {
        LinearParams { lambda_l2: 1.0, max_iter: 100, tol: 1e-10 }
    }
}

impl LinearParams {
    pub fn from_json(
        map: &std::collections::BTreeMap<String, serde_json::Value>,
    ) -> Result<LinearParams, crate::ParamError> {
        let mut p = LinearParams::default();
        for (k, v) in map {
            let n = v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok()));
            let bad = |reason: &str| crate::ParamError { field: k.clone(), reason: reason.into() };
            match k.as_str() {
                "lambda_l2" | "reg_lambda" | "alpha" => {
                    p.lambda_l2 =
                        n.filter(|x| *x >= 0.0).ok_or_else(|| bad("must be a number >= 0"))?
                }
                "C" => {
                    p.lambda_l2 =
                        1.0 / n.filter(|x| *x > 0.0).ok_or_else(|| bad("must be a number > 0"))?
                }
                "max_iter" => {
                    p.max_iter =
                        n.filter(|x| *x >= 1.0).ok_or_else(|| bad("must be at least 1"))? as usize
                }
                "tol" => p.tol = n.filter(|x| *x > 0.0).ok_or_else(|| bad("must be positive"))?,
                "seed" | "random_state" | "num_threads" | "verbose" => {}
                _ => {
                    return Err(bad(
                        "not a parameter of the linear trainers (lambda_l2, C, max_iter, tol)",
                    ));
                }
            }
        }
        Ok(p)
    }
}

/// A fitted linear model on the original scale: `score = intercept + Σ coef[i] · x[i]`, with a
/// missing `x[i]` read as `mean[i]`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub logistic: bool,
    pub coef: Vec<f64>,
    pub intercept: f64,
    pub mean: Vec<f64>,
    pub labels: Labels,
    pub feature_names: Vec<String>,
    pub rows: usize,
    pub iterations: usize,
}

fn value(data: &ColumnData, r: usize) -> Option<f64> {
    match data {
        ColumnData::Float64(v) => v[r].filter(|x| !x.is_nan()),
        ColumnData::Int64(v) => v[r].map(|x| x as f64),
        ColumnData::Bool(v) => v[r].map(|x| x as u8 as f64),
        _ => None,
    }
}

fn positions(t: &Table, cols: &Columns) -> Result<(Vec<usize>, usize), String> {
    let find = |name: &str, what: &str| {
        t.columns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| format!("{what}: the data has no column '{name}'"))
    };
    let mut features = Vec::new();
    for f in &cols.features {
        let p = find(f, "features")?;
        if matches!(t.columns[p].data, ColumnData::Str { .. } | ColumnData::Timestamp(_)) {
            return Err(format!(
                "features.{f}: linear models take numeric features; encode it first or use the \
                 gbdt trainer, which splits categories natively"
            ));
        }
        features.push(p);
    }
    Ok((features, find(&cols.label, "label")?))
}

/// Solves `a · x = b` for a symmetric positive-definite `a` (Cholesky), `n × n` row-major.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Result<Vec<f64>, String> {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if d <= 1e-300 {
            return Err("the features are collinear (the system is singular); add lambda_l2".into());
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
    }
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= a[i * n + k] * b[k];
        }
        b[i] = s / a[i * n + i];
    }
    for i in (0..n).rev() {
        let mut s = b[i];
        for k in i + 1..n {
            s -= a[k * n + i] * b[k];
        }
        b[i] = s / a[i * n + i];
    }
    Ok(b)
}

/// Fits a linear (`logistic = false`) or binary logistic model.
pub fn train_linear(
    source: &mut dyn Source,
    cols: &Columns,
    logistic: bool,
    params: &LinearParams,
    progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<Linear, crate::TrainError> {
    use crate::TrainError::Invalid;
    let nf = cols.features.len();
    if nf == 0 {
        return Err(Invalid("features: at least one feature is needed".into()));
    }
    // Pass 1: means, standard deviations, classes.
    let mut n = 0usize;
    let mut present = vec![0usize; nf];
    let mut sum = vec![0.0; nf];
    let mut sumsq = vec![0.0; nf];
    let mut classes: Vec<String> = Vec::new();
    source
        .scan(&mut |t| {
            let (fp, lp) = positions(t, cols)?;
            for r in 0..t.rows {
                let label = label_text(&t.columns[lp].data, r)
                    .ok_or_else(|| format!("{}: row {} has no label", cols.label, n + r + 1))?;
                if logistic {
                    if !classes.contains(&label) {
                        classes.push(label);
                        if classes.len() > 2 {
                            return Err(format!(
                                "{}: logistic regression here is binary; the data has more than \
                                 two classes ({}); use the gbdt trainer for multiclass",
                                cols.label,
                                classes.join(", ")
                            ));
                        }
                    }
                } else if label.parse::<f64>().map(|v| !v.is_finite()).unwrap_or(true) {
                    return Err(format!("{}: '{label}' is not a number (regression)", cols.label));
                }
                for (f, &p) in fp.iter().enumerate() {
                    if let Some(v) = value(&t.columns[p].data, r) {
                        present[f] += 1;
                        sum[f] += v;
                        sumsq[f] += v * v;
                    }
                }
            }
            n += t.rows;
            Ok(())
        })
        .map_err(Invalid)?;
    if n == 0 {
        return Err(Invalid("data: no rows".into()));
    }
    let mean: Vec<f64> =
        (0..nf).map(|f| if present[f] > 0 { sum[f] / present[f] as f64 } else { 0.0 }).collect();
    let sd: Vec<f64> = (0..nf)
        .map(|f| {
            let m = present[f].max(1) as f64;
            let var = (sumsq[f] / m - mean[f] * mean[f]).max(0.0);
            if var > 1e-24 { var.sqrt() } else { 1.0 }
        })
        .collect();
    let labels = if logistic {
        if classes.len() < 2 {
            return Err(Invalid(format!("{}: only one class in the data", cols.label)));
        }
        sort_classes(&mut classes);
        Labels::Classes(classes)
    } else {
        Labels::Values
    };
    let positive = match &labels {
        Labels::Classes(c) => Some(c[1].clone()),
        Labels::Values => None,
    };
    // Coefficients on the standardized scale: w[0] is the intercept.
    let d = nf + 1;
    let mut w = vec![0.0; d];
    let mut iterations = 0;
    let max_iter = if logistic { params.max_iter } else { 1 };
    for it in 0..max_iter {
        let mut a = vec![0.0; d * d];
        let mut b = vec![0.0; d];
        let mut loss = 0.0;
        let mut z = vec![0.0; d];
        source
            .scan(&mut |t| {
                let (fp, lp) = positions(t, cols)?;
                for r in 0..t.rows {
                    z[0] = 1.0;
                    for (f, &p) in fp.iter().enumerate() {
                        z[f + 1] =
                            value(&t.columns[p].data, r).map_or(0.0, |v| (v - mean[f]) / sd[f]);
                    }
                    let label = label_text(&t.columns[lp].data, r).unwrap_or_default();
                    let (weight, target) = if let Some(pos) = &positive {
                        let y = (label == *pos) as u8 as f64;
                        let s: f64 = z.iter().zip(&w).map(|(a, b)| a * b).sum();
                        let p = 1.0 / (1.0 + (-s).exp());
                        loss -=
                            if y > 0.5 { p.max(1e-300).ln() } else { (1.0 - p).max(1e-300).ln() };
                        // Newton step as weighted least squares: b = Σ (h·s + (y − p)) z.
                        let h = (p * (1.0 - p)).max(1e-12);
                        (h, h * s + (y - p))
                    } else {
                        (1.0, label.parse::<f64>().unwrap_or(0.0))
                    };
                    for i in 0..d {
                        let zi = z[i] * weight;
                        b[i] += z[i] * target;
                        for j in 0..=i {
                            a[i * d + j] += zi * z[j];
                        }
                    }
                }
                Ok(())
            })
            .map_err(Invalid)?;
        for i in 0..d {
            for j in 0..i {
                a[j * d + i] = a[i * d + j];
            }
        }
        for i in 1..d {
            a[i * d + i] += params.lambda_l2;
            if logistic {
                loss += 0.5 * params.lambda_l2 * w[i] * w[i];
            }
        }
        let next = solve(a, b, d).map_err(Invalid)?;
        let moved = next.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        w = next;
        iterations = it + 1;
        let step = Progress {
            iteration: it + 1,
            of: max_iter,
            metric: if logistic { "binary_logloss" } else { "l2" },
            train: logistic.then_some(loss / n as f64),
            valid: None,
        };
        if progress(&step).is_break() {
            return Err(crate::TrainError::Cancelled);
        }
        if moved < params.tol {
            break;
        }
    }
    let coef: Vec<f64> = (0..nf).map(|f| w[f + 1] / sd[f]).collect();
    let intercept = w[0] - (0..nf).map(|f| coef[f] * mean[f]).sum::<f64>();
    Ok(Linear {
        logistic,
        coef,
        intercept,
        mean,
        labels,
        feature_names: cols.features.clone(),
        rows: n,
        iterations,
    })
}

impl Linear {
    /// The model as ONNX bytes.
    pub fn onnx(&self) -> Vec<u8> {
        let nf = self.coef.len();
        let coef: Vec<f32> = self.coef.iter().map(|&c| c as f32).collect();
        let imputer = Node {
            op: "Imputer",
            inputs: vec!["input".into()],
            outputs: vec!["imputed".into()],
            attrs: vec![
                (
                    "imputed_value_floats",
                    Attr::Floats(self.mean.iter().map(|&m| m as f32).collect()),
                ),
                ("replaced_value_float", Attr::Float(f32::NAN)),
            ],
        };
        let (node, outputs) = if self.logistic {
            (
                Node {
                    op: "LinearClassifier",
                    inputs: vec!["imputed".into()],
                    outputs: vec!["label".into(), "probabilities".into()],
                    attrs: vec![
                        ("coefficients", Attr::Floats(coef)),
                        ("intercepts", Attr::Floats(vec![self.intercept as f32])),
                        ("classlabels_ints", Attr::Ints(vec![0, 1])),
                        ("multi_class", Attr::Int(0)),
                        ("post_transform", Attr::Str("LOGISTIC".into())),
                    ],
                },
                vec![
                    Output { name: "label".into(), elem_type: 7, shape: vec![-1] },
                    Output { name: "probabilities".into(), elem_type: 1, shape: vec![-1, 2] },
                ],
            )
        } else {
            (
                Node {
                    op: "LinearRegressor",
                    inputs: vec!["imputed".into()],
                    outputs: vec!["variable".into()],
                    attrs: vec![
                        ("coefficients", Attr::Floats(coef)),
                        ("intercepts", Attr::Floats(vec![self.intercept as f32])),
                        ("targets", Attr::Int(1)),
                        ("post_transform", Attr::Str("NONE".into())),
                    ],
                },
                vec![Output { name: "variable".into(), elem_type: 1, shape: vec![-1, 1] }],
            )
        };
        let doc = format!(
            "Plinth {} regression; features: {}",
            if self.logistic { "logistic" } else { "linear" },
            self.feature_names.join(", ")
        );
        crate::onnx::model(nf, &[imputer, node], &outputs, &doc)
    }
}
