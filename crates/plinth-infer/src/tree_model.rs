//! A tabular tree model: one float input `[N, F]`, an [`Ensemble`], base scores, a link function,
//! and outputs shaped for classification (`label`, `probabilities`) or regression
//! (`predictions`). LightGBM and XGBoost models load into this.

use plinth_api::registry::{DataType, TensorSpec};

use crate::tree::Ensemble;
use crate::{InferError, Model, Tensor};

/// The function from raw scores to the model's output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Link {
    Identity,
    /// `1 / (1 + exp(-scale * x))` on each score.
    Sigmoid(f64),
    Softmax,
    Exp,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// One score → P(class 1); outputs two probabilities.
    Binary,
    /// One score per class.
    Multiclass(usize),
    Regression,
}

#[derive(Debug)]
pub struct TreeModel {
    pub ensemble: Ensemble,
    /// Added to each target's sum before the link.
    pub base: Vec<f64>,
    /// Each sum is divided by this (LightGBM random-forest mode averages its trees).
    pub divisor: f64,
    pub link: Link,
    pub kind: Kind,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl TreeModel {
    pub fn new(
        ensemble: Ensemble,
        base: Vec<f64>,
        divisor: f64,
        link: Link,
        kind: Kind,
    ) -> TreeModel {
        let n_features = ensemble.n_features as i64;
        let inputs = vec![TensorSpec {
            name: "input".into(),
            datatype: DataType::Fp32,
            shape: vec![-1, n_features],
        }];
        let outputs = match kind {
            Kind::Binary | Kind::Multiclass(_) => {
                let classes = if let Kind::Multiclass(c) = kind { c as i64 } else { 2 };
                vec![
                    TensorSpec { name: "label".into(), datatype: DataType::Int64, shape: vec![-1] },
                    TensorSpec {
                        name: "probabilities".into(),
                        datatype: DataType::Fp32,
                        shape: vec![-1, classes],
                    },
                ]
            }
            Kind::Regression => vec![TensorSpec {
                name: "predictions".into(),
                datatype: DataType::Fp32,
                shape: vec![-1],
            }],
        };
        TreeModel { ensemble, base, divisor, link, kind, inputs, outputs }
    }

    /// Raw scores after base, averaging and link: `n_rows * n_targets`.
    pub fn scores(&self, features: &[f32]) -> Vec<f64> {
        let nt = self.ensemble.n_targets;
        let width = self.ensemble.n_features.max(1);
        let n_rows = features.len() / width;
        let mut out = vec![0.0f64; n_rows * nt];
        self.ensemble.accumulate(features, width, &mut out);
        for row in out.chunks_mut(nt) {
            for (s, b) in row.iter_mut().zip(&self.base) {
                *s = *s / self.divisor + b;
            }
            apply_link(self.link, row);
        }
        out
    }
}

pub fn apply_link(link: Link, row: &mut [f64]) {
    match link {
        Link::Identity => {}
        Link::Sigmoid(k) => row.iter_mut().for_each(|x| *x = 1.0 / (1.0 + (-k * *x).exp())),
        Link::Exp => row.iter_mut().for_each(|x| *x = x.exp()),
        Link::Softmax => {
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for x in row.iter_mut() {
                *x = (*x - max).exp();
                sum += *x;
            }
            row.iter_mut().for_each(|x| *x /= sum);
        }
    }
}

/// Finds the float matrix input: the single input, or one named `input`.
pub fn feature_matrix<'a>(
    inputs: &[(&str, &'a Tensor)],
    n_features: usize,
) -> Result<(std::borrow::Cow<'a, [f32]>, usize), InferError> {
    let (name, tensor) = match inputs {
        [one] => *one,
        _ => inputs
            .iter()
            .find(|(n, _)| *n == "input")
            .ok_or_else(|| {
                InferError::new(
                    "inputs",
                    format!("expected one input named 'input', got {}", inputs.len()),
                )
            })?
            .to_owned(),
    };
    let (rows, cols) = tensor.rows_cols();
    if tensor.shape.len() != 2 || cols != n_features {
        return Err(InferError::new(
            name,
            format!("expected shape [N, {n_features}], got {:?}", tensor.shape),
        ));
    }
    let values = tensor.data.as_f32().ok_or_else(|| {
        InferError::new(name, format!("expected numbers, got {}", tensor.data.type_name()))
    })?;
    Ok((values, rows))
}

impl Model for TreeModel {
    fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    fn run(&self, inputs: &[(&str, &Tensor)]) -> Result<Vec<(String, Tensor)>, InferError> {
        let (features, n_rows) = feature_matrix(inputs, self.ensemble.n_features)?;
        let scores = self.scores(&features);
        Ok(match self.kind {
            Kind::Binary => {
                let mut probs = Vec::with_capacity(n_rows * 2);
                let mut labels = Vec::with_capacity(n_rows);
                for &p in &scores {
                    probs.push((1.0 - p) as f32);
                    probs.push(p as f32);
                    labels.push(i64::from(p > 0.5));
                }
                vec![
                    ("label".into(), Tensor::i64(vec![n_rows], labels)),
                    ("probabilities".into(), Tensor::f32(vec![n_rows, 2], probs)),
                ]
            }
            Kind::Multiclass(c) => {
                let labels = scores
                    .chunks(c)
                    .map(|row| {
                        row.iter()
                            .enumerate()
                            .fold(
                                (0, f64::NEG_INFINITY),
                                |best, (i, &v)| if v > best.1 { (i, v) } else { best },
                            )
                            .0 as i64
                    })
                    .collect();
                vec![
                    ("label".into(), Tensor::i64(vec![n_rows], labels)),
                    (
                        "probabilities".into(),
                        Tensor::f32(vec![n_rows, c], scores.iter().map(|&x| x as f32).collect()),
                    ),
                ]
            }
            Kind::Regression => vec![(
                "predictions".into(),
                Tensor::f32(vec![n_rows], scores.iter().map(|&x| x as f32).collect()),
            )],
        })
    }
}
