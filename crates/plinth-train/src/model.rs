//! The LightGBM text model a booster is written as (`Booster.save_model`'s format): what Plinth
//! serves with its own evaluator and what the `lightgbm` package loads.

use std::fmt::Write;

use crate::data::{Dataset, Mapper};
use crate::gbdt::{Booster, Tree};
use crate::params::Objective;

fn join<T: std::fmt::Display>(v: &[T]) -> String {
    let mut s = String::new();
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{x}");
    }
    s
}

/// Doubles in scientific notation, the shortest text that reads back to the same bits, with
/// LightGBM's spelling of infinities.
fn num(v: f64) -> String {
    if v == f64::INFINITY {
        "1.7976931348623157e+308".into()
    } else if v == f64::NEG_INFINITY {
        "-1.7976931348623157e+308".into()
    } else {
        format!("{v:e}")
    }
}

fn nums(v: &[f64]) -> String {
    v.iter().map(|&x| num(x)).collect::<Vec<_>>().join(" ")
}

fn tree_text(t: &Tree) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "num_leaves={}", t.num_leaves);
    let num_cat = t.cat_boundaries.len().saturating_sub(1);
    let _ = writeln!(s, "num_cat={num_cat}");
    if t.num_leaves > 1 {
        let _ = writeln!(s, "split_feature={}", join(&t.split_feature));
        let _ = writeln!(s, "split_gain={}", nums(&t.split_gain));
        let _ = writeln!(s, "threshold={}", nums(&t.threshold));
        let _ = writeln!(s, "decision_type={}", join(&t.decision_type));
        let _ = writeln!(s, "left_child={}", join(&t.left_child));
        let _ = writeln!(s, "right_child={}", join(&t.right_child));
    }
    let _ = writeln!(s, "leaf_value={}", nums(&t.leaf_value));
    if t.num_leaves > 1 {
        let _ = writeln!(s, "leaf_weight={}", nums(&t.leaf_weight));
        let _ = writeln!(s, "leaf_count={}", join(&t.leaf_count));
        let _ = writeln!(s, "internal_value={}", nums(&t.internal_value));
        let _ = writeln!(s, "internal_weight={}", nums(&t.internal_weight));
        let _ = writeln!(s, "internal_count={}", join(&t.internal_count));
    }
    if num_cat > 0 {
        let _ = writeln!(s, "cat_boundaries={}", join(&t.cat_boundaries));
        let _ = writeln!(s, "cat_threshold={}", join(&t.cat_threshold));
    }
    let _ = writeln!(s, "is_linear=0");
    let _ = writeln!(s, "shrinkage={}", num(t.shrinkage));
    s.push('\n');
    s
}

/// The booster as a LightGBM text model.
pub fn lightgbm_text(b: &Booster, data: &Dataset) -> String {
    let k = b.per_iteration;
    let objective = match b.objective {
        Objective::Binary => "binary sigmoid:1".to_string(),
        Objective::Multiclass => format!("multiclass num_class:{k}"),
        Objective::Regression => "regression".to_string(),
        Objective::Huber => format!("huber alpha:{}", b.params.alpha),
    };
    let names: Vec<String> = data.feature_names.iter().map(|n| sanitize(n)).collect();
    let infos: Vec<String> = data.mappers.iter().map(Mapper::info).collect();
    let trees: Vec<String> =
        b.trees.iter().enumerate().map(|(i, t)| format!("Tree={i}\n{}\n", tree_text(t))).collect();
    let mut s = String::new();
    s.push_str("tree\nversion=v4\n");
    let _ = writeln!(s, "num_class={k}");
    let _ = writeln!(s, "num_tree_per_iteration={k}");
    s.push_str("label_index=0\n");
    let _ = writeln!(s, "max_feature_idx={}", names.len() - 1);
    let _ = writeln!(s, "objective={objective}");
    let _ = writeln!(s, "feature_names={}", names.join(" "));
    let _ = writeln!(s, "feature_infos={}", infos.join(" "));
    let sizes: Vec<usize> = trees.iter().map(String::len).collect();
    let _ = writeln!(s, "tree_sizes={}", join(&sizes));
    s.push('\n');
    for t in &trees {
        s.push_str(t);
    }
    s.push_str("end of trees\n\n");
    // Split counts per feature, as LightGBM reports them.
    let mut importance = vec![0usize; names.len()];
    for t in &b.trees {
        for &f in &t.split_feature {
            importance[f as usize] += 1;
        }
    }
    let mut order: Vec<usize> = (0..names.len()).filter(|&f| importance[f] > 0).collect();
    order.sort_by(|&a, &b| importance[b].cmp(&importance[a]).then(a.cmp(&b)));
    s.push_str("feature_importances:\n");
    for f in order {
        let _ = writeln!(s, "{}={}", names[f], importance[f]);
    }
    s.push_str("\nparameters:\n");
    for line in b.params.lightgbm_lines() {
        s.push_str(&line);
        s.push('\n');
    }
    s.push_str("end of parameters\n\n");
    // Category names of string features, in the place and shape LightGBM's pandas support
    // keeps them (a category's code is its rank in this list).
    let categories: Vec<serde_json::Value> = data
        .mappers
        .iter()
        .filter_map(|m| match m {
            Mapper::Categorical { names: Some(n), .. } => Some(serde_json::json!(n)),
            _ => None,
        })
        .collect();
    if categories.is_empty() {
        s.push_str("pandas_categorical:null\n");
    } else {
        let _ = writeln!(s, "pandas_categorical:{}", serde_json::Value::Array(categories));
    }
    s
}

/// Feature names as LightGBM writes them: no spaces or special JSON characters.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_whitespace() || "[]{}\",:".contains(c) { '_' } else { c })
        .collect()
}
