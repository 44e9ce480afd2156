//! Plinth's own prediction payloads: rows (objects by feature name, or arrays in input order) or
//! columns, checked against the version's signature and turned into the model's input tensor;
//! and the model's outputs turned back into predictions and probabilities.

use std::collections::BTreeMap;

use plinth_api::registry::{DataType, Signature};
use serde_json::Value;

use super::tensor::{Data, Tensor};
use crate::error::{Error, Result};

fn number(field: impl FnOnce() -> String, v: &Value) -> Result<f32> {
    match v {
        Value::Number(n) => {
            n.as_f64().map(|x| x as f32).ok_or_else(|| Error::invalid(field(), "not a number"))
        }
        Value::Null => Ok(f32::NAN),
        Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        other => Err(Error::invalid(
            field(),
            format!("expected a number or null, got {}", json_type(other)),
        )),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The single float matrix input a tabular model takes: `(name, width)`.
fn tabular_input(sig: &Signature) -> Result<(&str, usize)> {
    match sig.inputs.as_slice() {
        [input]
            if matches!(input.datatype, DataType::Fp32 | DataType::Fp64)
                && input.shape.len() == 2
                && input.shape[1] > 0 =>
        {
            Ok((&input.name, input.shape[1] as usize))
        }
        _ => Err(Error::invalid(
            "inputs",
            "this model does not take one [N, features] float matrix: call it through the Open Inference Protocol (/v2/models/...)",
        )),
    }
}

/// Builds the input tensor from rows or columns. Returns the tensor and its row count.
///
/// A feature `sig` does not read is refused unless `other_feature` accepts it (a feature of
/// another version the deployment serves: the same payload can reach a canary that reads fewer
/// features); then it is left out.
pub fn tensor_from_request(
    sig: &Signature,
    other_feature: &dyn Fn(&str) -> bool,
    rows: Option<&[Value]>,
    columns: Option<&BTreeMap<String, Vec<Value>>>,
    max_rows: usize,
) -> Result<(String, Tensor, usize)> {
    let (name, width) = tabular_input(sig)?;
    let names = sig.feature_names.as_deref();
    let index: Option<BTreeMap<&str, usize>> =
        names.map(|n| n.iter().enumerate().map(|(i, f)| (f.as_str(), i)).collect());
    let mut values: Vec<f32>;
    let n;
    match (rows, columns) {
        (Some(rows), None) => {
            n = rows.len();
            check_rows(n, max_rows, "rows")?;
            values = vec![f32::NAN; n * width];
            for (r, row) in rows.iter().enumerate() {
                let out = &mut values[r * width..(r + 1) * width];
                match row {
                    Value::Array(items) => {
                        if items.len() != width {
                            return Err(Error::invalid(
                                format!("rows[{r}]"),
                                format!("has {} values; the model takes {width}", items.len()),
                            ));
                        }
                        for (j, v) in items.iter().enumerate() {
                            out[j] = number(|| format!("rows[{r}][{j}]"), v)?;
                        }
                    }
                    Value::Object(map) => {
                        let index = index.as_ref().ok_or_else(|| {
                            Error::invalid(format!("rows[{r}]"), "this version's signature has no feature names: send each row as an array in input order")
                        })?;
                        let mut read = 0;
                        for (k, v) in map {
                            let Some(&j) = index.get(k.as_str()) else {
                                if other_feature(k) {
                                    continue;
                                }
                                return Err(Error::new(
                                    plinth_api::Code::UnknownField,
                                    format!("rows[{r}].{k}: not a feature of this model"),
                                )
                                .with_field(format!("rows[{r}].{k}")));
                            };
                            out[j] = number(|| format!("rows[{r}].{k}"), v)?;
                            read += 1;
                        }
                        if read != width {
                            let missing = names
                                .expect("index implies names")
                                .iter()
                                .find(|f| !map.contains_key(f.as_str()))
                                .expect("a feature is missing");
                            return Err(Error::missing(
                                format!("rows[{r}].{missing}"),
                                "every feature is required (send null for a missing value)",
                            ));
                        }
                    }
                    other => {
                        return Err(Error::invalid(
                            format!("rows[{r}]"),
                            format!("expected an object or an array, got {}", json_type(other)),
                        ));
                    }
                }
            }
        }
        (None, Some(columns)) => {
            let names = names.ok_or_else(|| {
                Error::invalid(
                    "columns",
                    "this version's signature has no feature names: send rows as arrays",
                )
            })?;
            let index = index.as_ref().expect("names imply index");
            if let Some(k) =
                columns.keys().find(|k| !index.contains_key(k.as_str()) && !other_feature(k))
            {
                return Err(Error::new(
                    plinth_api::Code::UnknownField,
                    format!("columns.{k}: not a feature of this model"),
                )
                .with_field(format!("columns.{k}")));
            }
            if let Some(missing) = names.iter().find(|f| !columns.contains_key(f.as_str())) {
                return Err(Error::missing(
                    format!("columns.{missing}"),
                    "every feature is required",
                ));
            }
            n = names.first().and_then(|f| columns.get(f)).map_or(0, Vec::len);
            check_rows(n, max_rows, "columns")?;
            values = vec![f32::NAN; n * width];
            for (k, col) in columns.iter().filter(|(k, _)| index.contains_key(k.as_str())) {
                if col.len() != n {
                    return Err(Error::invalid(
                        format!("columns.{k}"),
                        format!("has {} values; other columns have {n}", col.len()),
                    ));
                }
                let j = index[k.as_str()];
                for (r, v) in col.iter().enumerate() {
                    values[r * width + j] = number(|| format!("columns.{k}[{r}]"), v)?;
                }
            }
        }
        (Some(_), Some(_)) => {
            return Err(Error::invalid("columns", "send rows or columns, not both"));
        }
        (None, None) => return Err(Error::missing("rows", "send rows (or columns)")),
    }
    Ok((name.to_string(), Tensor::f32(vec![n, width], values), n))
}

fn check_rows(n: usize, max_rows: usize, field: &str) -> Result<()> {
    if n == 0 {
        return Err(Error::invalid(field, "at least one row is required"));
    }
    if n > max_rows {
        return Err(Error::invalid(
            field,
            format!("{n} rows is more than this deployment's limit of {max_rows}"),
        ));
    }
    Ok(())
}

/// Predictions (labels or values) and class probabilities from a model's outputs.
pub fn predictions(
    outputs: &[(String, Tensor)],
    rows: usize,
) -> (Vec<Value>, Option<Vec<Vec<f32>>>) {
    let probs = outputs
        .iter()
        .find(|(n, t)| n.contains("prob") && t.shape.len() == 2 && t.shape[0] == rows);
    let probabilities = probs.and_then(|(_, t)| {
        let Data::F32(v) = &t.data else { return None };
        let c = t.shape[1].max(1);
        Some(v.chunks(c).map(<[f32]>::to_vec).collect())
    });
    let label = outputs.iter().find(|(n, t)| n.contains("label") && t.shape.first() == Some(&rows));
    let chosen = label
        .or_else(|| outputs.iter().find(|(_, t)| t.shape.first() == Some(&rows)))
        .or(outputs.first());
    let values = match chosen {
        Some((_, t)) => match &t.data {
            Data::I64(v) => v.iter().map(|x| Value::from(*x)).collect(),
            Data::I32(v) => v.iter().map(|x| Value::from(*x)).collect(),
            Data::Str(v) => v.iter().map(|x| Value::from(x.clone())).collect(),
            Data::Bool(v) => v.iter().map(|x| Value::from(*x)).collect(),
            Data::F32(v) => {
                let per = v.len() / rows.max(1);
                v.chunks(per.max(1))
                    .map(|c| {
                        if c.len() == 1 {
                            json_f(f64::from(c[0]))
                        } else {
                            Value::from(c.iter().map(|x| json_f(f64::from(*x))).collect::<Vec<_>>())
                        }
                    })
                    .collect()
            }
            Data::F64(v) => {
                let per = v.len() / rows.max(1);
                v.chunks(per.max(1))
                    .map(|c| {
                        if c.len() == 1 {
                            json_f(c[0])
                        } else {
                            Value::from(c.iter().map(|x| json_f(*x)).collect::<Vec<_>>())
                        }
                    })
                    .collect()
            }
        },
        None => vec![],
    };
    (values, probabilities)
}

fn json_f(x: f64) -> Value {
    serde_json::Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null)
}
