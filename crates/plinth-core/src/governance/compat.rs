//! Whether a candidate version's signature keeps working for the callers of the version
//! serving now: the same features by name, the same input tensors (names, types, shapes where
//! both fix them), and every output callers read, unchanged.

use plinth_api::registry::{Signature, TensorSpec};

/// The ways `candidate` would break callers of `serving`, in words (empty when it would not).
pub(crate) fn breaking_changes(serving: &Signature, candidate: &Signature) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some(now), Some(next)) = (&serving.feature_names, &candidate.feature_names) {
        let dropped: Vec<&str> =
            now.iter().filter(|f| !next.contains(f)).map(String::as_str).collect();
        let added: Vec<&str> =
            next.iter().filter(|f| !now.contains(f)).map(String::as_str).collect();
        if !dropped.is_empty() {
            out.push(format!(
                "drops feature(s) {}: callers that send them are refused",
                dropped.join(", ")
            ));
        }
        if !added.is_empty() {
            out.push(format!(
                "needs new feature(s) {}: callers that do not send them are refused",
                added.join(", ")
            ));
        }
    }
    tensors("input", &serving.inputs, &candidate.inputs, true, &mut out);
    tensors("output", &serving.outputs, &candidate.outputs, false, &mut out);
    out
}

/// Compares tensors by name: a tensor of `now` missing from `next`, or of another type or shape,
/// breaks callers; for inputs, a tensor only `next` has does too (callers do not send it).
fn tensors(
    what: &str,
    now: &[TensorSpec],
    next: &[TensorSpec],
    new_ones_break: bool,
    out: &mut Vec<String>,
) {
    for t in now {
        match next.iter().find(|n| n.name == t.name) {
            None => out.push(format!("drops {what} '{}'", t.name)),
            Some(n) if n.datatype != t.datatype => out.push(format!(
                "{what} '{}' changes type from {:?} to {:?}",
                t.name, t.datatype, n.datatype
            )),
            Some(n) if !shapes_agree(&t.shape, &n.shape) => out.push(format!(
                "{what} '{}' changes shape from {:?} to {:?}",
                t.name, t.shape, n.shape
            )),
            Some(_) => {}
        }
    }
    if new_ones_break {
        for n in next.iter().filter(|n| !now.iter().any(|t| t.name == n.name)) {
            out.push(format!("needs new {what} '{}'", n.name));
        }
    }
}

/// Same rank, and every dimension both fix is the same (-1 is any).
fn shapes_agree(a: &[i64], b: &[i64]) -> bool {
    a.is_empty()
        || b.is_empty()
        || (a.len() == b.len() && a.iter().zip(b).all(|(x, y)| *x < 0 || *y < 0 || x == y))
}

#[cfg(test)]
mod tests {
    use plinth_api::registry::DataType;

    use super::*;

    fn sig(features: &[&str]) -> Signature {
        Signature {
            inputs: vec![TensorSpec {
                name: "input".into(),
                datatype: DataType::Fp32,
                shape: vec![-1, features.len() as i64],
            }],
            outputs: vec![TensorSpec {
                name: "label".into(),
                datatype: DataType::Int64,
                shape: vec![-1],
            }],
            feature_names: Some(features.iter().map(|f| f.to_string()).collect()),
        }
    }

    #[test]
    fn dropped_added_and_retyped_parts_break_callers() {
        let v1 = sig(&["age", "hours", "sex_male"]);
        assert!(breaking_changes(&v1, &v1).is_empty());
        let v2 = sig(&["age", "hours"]);
        let b = breaking_changes(&v1, &v2);
        assert!(b[0].contains("drops feature(s) sex_male"), "{b:?}");
        assert!(b.iter().any(|c| c.contains("changes shape from [-1, 3] to [-1, 2]")), "{b:?}");
        let v3 = sig(&["age", "hours", "sex_male", "zip"]);
        assert!(breaking_changes(&v1, &v3)[0].contains("needs new feature(s) zip"));
        let mut v4 = v1.clone();
        v4.outputs[0].datatype = DataType::Fp32;
        assert!(breaking_changes(&v1, &v4)[0].contains("output 'label' changes type"));
        let mut v5 = v1.clone();
        v5.outputs.push(TensorSpec {
            name: "extra".into(),
            datatype: DataType::Fp32,
            shape: vec![-1],
        });
        assert!(breaking_changes(&v1, &v5).is_empty(), "a new output breaks nobody");
    }
}
