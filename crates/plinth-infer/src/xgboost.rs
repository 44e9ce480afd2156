//! XGBoost JSON models lowered onto the tree evaluator, with XGBoost's rules: `x < threshold` in
//! single precision, NaN to the default branch, the base score turned into a margin by the
//! objective, DART tree weights, and the objective's link.

use plinth_formats::xgboost;

use crate::LoadError;
use crate::tree::{Cmp, Ensemble, Node, missing};
use crate::tree_model::{Kind, Link, TreeModel};

/// XGBoost keeps thresholds and leaf values as f32: round what the JSON says the same way.
fn f32_exact(x: f64) -> f64 {
    f64::from(x as f32)
}

pub fn load(bytes: &[u8]) -> Result<TreeModel, LoadError> {
    let model = xgboost::parse(bytes)?;
    let groups = model.num_class.max(1);
    let mut e =
        Ensemble { n_features: model.num_feature, n_targets: groups, ..Ensemble::default() };
    for (t, tree) in model.trees.iter().enumerate() {
        let base = e.nodes.len() as u32;
        e.roots.push(base);
        let group = model.tree_group[t] as u32;
        let weight = model.tree_weights[t];
        for n in 0..tree.left_children.len() {
            if tree.is_leaf(n) {
                e.nodes.push(Node::leaf(e.leaf_weights.len() as u32, 1));
                e.leaf_weights.push((group, f32_exact(tree.split_conditions[n]) * weight));
            } else {
                e.nodes.push(Node {
                    threshold: f32_exact(tree.split_conditions[n]),
                    feature: tree.split_indices[n],
                    yes: base + tree.left_children[n] as u32,
                    no: base + tree.right_children[n] as u32,
                    cmp: Cmp::Lt,
                    missing: missing::NAN_DEFAULT
                        | if tree.default_left[n] { missing::DEFAULT_YES } else { 0 },
                });
            }
        }
    }
    e.check().map_err(|m| LoadError::Unsupported(format!("xgboost: {m}")))?;
    let objective = model.objective.as_str();
    let (link, kind, margin): (Link, Kind, fn(f64) -> f64) = match objective {
        "binary:logistic" | "reg:logistic" => {
            (Link::Sigmoid(1.0), Kind::Binary, |p| (p / (1.0 - p)).ln())
        }
        "binary:logitraw" => (Link::Sigmoid(1.0), Kind::Binary, |m| m),
        "multi:softprob" | "multi:softmax" => (Link::Softmax, Kind::Multiclass(groups), |m| m),
        "count:poisson" | "reg:gamma" | "reg:tweedie" => (Link::Exp, Kind::Regression, |p| p.ln()),
        o if o.starts_with("reg:") => (Link::Identity, Kind::Regression, |m| m),
        o => {
            return Err(LoadError::Unsupported(format!(
                "xgboost objective '{o}' is not supported for serving"
            )));
        }
    };
    if objective == "reg:logistic" && groups != 1 {
        return Err(LoadError::Unsupported(
            "xgboost: reg:logistic with several output groups".into(),
        ));
    }
    let base = model.base_score.iter().map(|&b| margin(f64::from(b as f32))).collect();
    Ok(TreeModel::new(e, base, 1.0, link, kind))
}
