//! LightGBM text models lowered onto the tree evaluator, with LightGBM's exact decision rules:
//! `x <= threshold` on doubles, missing types None / Zero / NaN, categorical bitsets, trees
//! assigned to classes round-robin, and the objective's link.

use plinth_formats::lightgbm;

use crate::LoadError;
use crate::tree::{Cmp, Ensemble, Node, missing};
use crate::tree_model::{Kind, Link, TreeModel};

pub fn load(bytes: &[u8]) -> Result<TreeModel, LoadError> {
    let model = lightgbm::parse(bytes)?;
    let per_iter = model.num_tree_per_iteration;
    let mut e = Ensemble {
        n_features: model.max_feature_idx + 1,
        n_targets: per_iter,
        ..Ensemble::default()
    };
    for (t, tree) in model.trees.iter().enumerate() {
        let target = (t % per_iter) as u32;
        let base = e.nodes.len() as u32;
        let internal = (tree.num_leaves - 1) as u32;
        e.roots.push(base);
        let cat_base = e.cat_sets.len();
        for w in tree.cat_boundaries.windows(2) {
            e.cat_sets.push(tree.cat_threshold[w[0] as usize..w[1] as usize].to_vec());
        }
        let child = |c: i32| if c >= 0 { base + c as u32 } else { base + internal + (!c) as u32 };
        for n in 0..internal as usize {
            let dt = tree.decision_type[n];
            let node = if dt & 1 == 1 {
                Node {
                    threshold: (cat_base + tree.threshold[n] as usize) as f64,
                    feature: tree.split_feature[n],
                    yes: child(tree.left_child[n]),
                    no: child(tree.right_child[n]),
                    cmp: Cmp::CatIn,
                    missing: 0,
                }
            } else {
                let default_yes = if dt & 2 != 0 { missing::DEFAULT_YES } else { 0 };
                let flags = match (dt >> 2) & 3 {
                    1 => missing::NAN_AS_ZERO | missing::ZERO_DEFAULT | default_yes,
                    2 => missing::NAN_DEFAULT | default_yes,
                    _ => missing::NAN_AS_ZERO,
                };
                Node {
                    threshold: tree.threshold[n],
                    feature: tree.split_feature[n],
                    yes: child(tree.left_child[n]),
                    no: child(tree.right_child[n]),
                    cmp: Cmp::Le,
                    missing: flags,
                }
            };
            e.nodes.push(node);
        }
        for &value in &tree.leaf_value {
            e.nodes.push(Node::leaf(e.leaf_weights.len() as u32, 1));
            e.leaf_weights.push((target, value));
        }
    }
    e.check().map_err(|m| LoadError::Unsupported(format!("lightgbm: {m}")))?;
    let objective = model.objective_name().to_string();
    let sigmoid = model.objective_param("sigmoid").unwrap_or(1.0);
    let (link, kind) = match objective.as_str() {
        "binary" => (Link::Sigmoid(sigmoid), Kind::Binary),
        "cross_entropy" | "xentropy" => (Link::Sigmoid(1.0), Kind::Binary),
        "multiclass" | "softmax" => (Link::Softmax, Kind::Multiclass(model.num_class)),
        "multiclassova" | "ova" | "ovr" | "multiclass_ova" => {
            (Link::Sigmoid(sigmoid), Kind::Multiclass(model.num_class))
        }
        "poisson" | "gamma" | "tweedie" => (Link::Exp, Kind::Regression),
        "lambdarank" | "rank_xendcg" | "xendcg" | "cross_entropy_lambda" | "xentlambda" => {
            return Err(LoadError::Unsupported(format!(
                "lightgbm objective '{objective}' is not supported for serving"
            )));
        }
        _ => (Link::Identity, Kind::Regression),
    };
    if matches!(kind, Kind::Regression | Kind::Binary) && per_iter != 1 {
        return Err(LoadError::Unsupported(format!(
            "lightgbm: objective '{objective}' with {per_iter} trees per iteration"
        )));
    }
    let divisor =
        if model.average_output { (model.trees.len() / per_iter).max(1) as f64 } else { 1.0 };
    Ok(TreeModel::new(e, vec![0.0; per_iter], divisor, link, kind))
}
