//! LightGBM text models (`Booster.save_model`): a complete reader and validator.
//!
//! Layout: a header of `key=value` lines, then `Tree=N` blocks, then `end of trees`. In a tree,
//! child indices `>= 0` are internal nodes and negative ones are leaves (`!leaf`); `decision_type`
//! bit 0 marks a categorical split, bit 1 "missing goes left", bits 2-3 the missing type
//! (0 none, 1 zero, 2 NaN).

use std::collections::HashMap;

use plinth_api::registry::{DataType, ModelFormat, Signature, TensorSpec};
use serde_json::json;

use crate::{FormatError, Inspected};

const FORMAT: &str = "lightgbm";

#[derive(Debug, Clone)]
pub struct Model {
    pub version: String,
    pub num_class: usize,
    pub num_tree_per_iteration: usize,
    pub max_feature_idx: usize,
    /// The objective line, e.g. `binary sigmoid:1` or `multiclass num_class:3`.
    pub objective: String,
    pub average_output: bool,
    pub feature_names: Vec<String>,
    pub trees: Vec<Tree>,
}

impl Model {
    /// The objective's name (`binary`, `multiclass`, `regression`, ...).
    pub fn objective_name(&self) -> &str {
        self.objective.split_whitespace().next().unwrap_or("")
    }

    /// A numeric parameter of the objective, e.g. `sigmoid` in `binary sigmoid:1`.
    pub fn objective_param(&self, key: &str) -> Option<f64> {
        self.objective.split_whitespace().skip(1).find_map(|kv| {
            let (k, v) = kv.split_once(':')?;
            (k == key).then(|| v.parse().ok()).flatten()
        })
    }
}

#[derive(Debug, Clone)]
pub struct Tree {
    pub num_leaves: usize,
    pub split_feature: Vec<u32>,
    pub threshold: Vec<f64>,
    pub decision_type: Vec<u8>,
    pub left_child: Vec<i32>,
    pub right_child: Vec<i32>,
    pub leaf_value: Vec<f64>,
    pub cat_boundaries: Vec<u32>,
    pub cat_threshold: Vec<u32>,
    pub shrinkage: f64,
}

fn err(place: impl Into<String>, reason: impl Into<String>) -> FormatError {
    FormatError::new(FORMAT, place, reason)
}

fn key_values<'a>(lines: &[&'a str]) -> HashMap<&'a str, &'a str> {
    lines.iter().filter_map(|l| l.split_once('=')).collect()
}

fn parse_list<T: std::str::FromStr>(
    place: &str,
    key: &str,
    value: &str,
) -> Result<Vec<T>, FormatError> {
    value
        .split_whitespace()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<T>().map_err(|_| {
                err(format!("{place}.{key}[{i}]"), format!("'{s}' is not a valid number"))
            })
        })
        .collect()
}

fn parse_float_list(place: &str, key: &str, value: &str) -> Result<Vec<f64>, FormatError> {
    let values: Vec<f64> = parse_list(place, key, value)?;
    if let Some(i) = values.iter().position(|v| v.is_nan()) {
        return Err(err(format!("{place}.{key}[{i}]"), "value is NaN"));
    }
    Ok(values)
}

/// Parses and validates a LightGBM text model.
pub fn parse(bytes: &[u8]) -> Result<Model, FormatError> {
    let text =
        std::str::from_utf8(bytes).map_err(|e| err("file", format!("not UTF-8 text ({e})")))?;
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    if lines.first().map(|l| l.trim()) != Some("tree") {
        return Err(err("line 1", "a LightGBM text model starts with the line 'tree'"));
    }
    let first_tree = lines.iter().position(|l| l.starts_with("Tree=")).unwrap_or(lines.len());
    let end = lines.iter().position(|l| l.trim() == "end of trees").ok_or_else(|| {
        err(
            "file",
            "no 'end of trees' line: the file is truncated or not a complete LightGBM model",
        )
    })?;
    if end < first_tree {
        return Err(err("file", "'end of trees' comes before the first tree"));
    }
    let header = key_values(&lines[1..first_tree]);
    let get = |key: &str| {
        header.get(key).copied().ok_or_else(|| err("header", format!("missing '{key}'")))
    };
    let num: &dyn Fn(&str) -> Result<usize, FormatError> = &|key: &str| {
        let v = get(key)?;
        v.trim().parse::<usize>().map_err(|_| {
            err(format!("header.{key}"), format!("'{v}' is not a non-negative integer"))
        })
    };
    let version = header.get("version").copied().unwrap_or("").to_string();
    let num_class = num("num_class")?;
    let num_tree_per_iteration = num("num_tree_per_iteration")?;
    let max_feature_idx = num("max_feature_idx")?;
    let objective = get("objective")?.trim().to_string();
    if num_class == 0 || num_tree_per_iteration == 0 {
        return Err(err("header", "num_class and num_tree_per_iteration must be at least 1"));
    }
    let feature_names: Vec<String> = match header.get("feature_names") {
        Some(v) => v.split_whitespace().map(str::to_string).collect(),
        None => (0..=max_feature_idx).map(|i| format!("Column_{i}")).collect(),
    };
    if feature_names.len() != max_feature_idx + 1 {
        return Err(err(
            "header.feature_names",
            format!(
                "{} names for max_feature_idx={} ({} features)",
                feature_names.len(),
                max_feature_idx,
                max_feature_idx + 1
            ),
        ));
    }
    let average_output = lines[1..first_tree].iter().any(|l| l.trim() == "average_output");

    let mut trees = Vec::new();
    let mut i = first_tree;
    while i < end {
        if !lines[i].starts_with("Tree=") {
            i += 1;
            continue;
        }
        let label = lines[i].trim();
        let index: usize =
            label["Tree=".len()..].parse().map_err(|_| err(label, "tree index is not a number"))?;
        if index != trees.len() {
            return Err(err(label, format!("expected Tree={} here", trees.len())));
        }
        let start = i + 1;
        let mut stop = start;
        while stop < end && !lines[stop].starts_with("Tree=") {
            stop += 1;
        }
        trees.push(parse_tree(label, &lines[start..stop], max_feature_idx)?);
        i = stop;
    }
    if trees.is_empty() {
        return Err(err("file", "the model has no trees"));
    }
    if trees.len() % num_tree_per_iteration != 0 {
        return Err(err(
            "file",
            format!(
                "{} trees is not a multiple of num_tree_per_iteration={num_tree_per_iteration}",
                trees.len()
            ),
        ));
    }
    Ok(Model {
        version,
        num_class,
        num_tree_per_iteration,
        max_feature_idx,
        objective,
        average_output,
        feature_names,
        trees,
    })
}

fn parse_tree(place: &str, lines: &[&str], max_feature_idx: usize) -> Result<Tree, FormatError> {
    let kv = key_values(lines);
    let get = |key: &str| {
        kv.get(key).copied().ok_or_else(|| err(place, format!("missing '{key}' (truncated tree?)")))
    };
    let num_leaves: usize = get("num_leaves")?
        .trim()
        .parse()
        .map_err(|_| err(format!("{place}.num_leaves"), "not a positive integer"))?;
    if num_leaves == 0 {
        return Err(err(format!("{place}.num_leaves"), "must be at least 1"));
    }
    if kv.get("is_linear").map(|v| v.trim()) == Some("1") {
        return Err(err(place, "linear trees (linear_tree=true) are not supported"));
    }
    let leaf_value = parse_float_list(place, "leaf_value", get("leaf_value")?)?;
    if leaf_value.len() != num_leaves {
        return Err(err(
            format!("{place}.leaf_value"),
            format!("{} values for num_leaves={num_leaves}", leaf_value.len()),
        ));
    }
    let shrinkage = kv.get("shrinkage").and_then(|v| v.trim().parse().ok()).unwrap_or(1.0);
    let internal = num_leaves - 1;
    if internal == 0 {
        return Ok(Tree {
            num_leaves,
            split_feature: vec![],
            threshold: vec![],
            decision_type: vec![],
            left_child: vec![],
            right_child: vec![],
            leaf_value,
            cat_boundaries: vec![],
            cat_threshold: vec![],
            shrinkage,
        });
    }
    let sized = |key: &str, got: usize| -> Result<(), FormatError> {
        if got != internal {
            return Err(err(
                format!("{place}.{key}"),
                format!("{got} values for {internal} internal nodes (num_leaves={num_leaves})"),
            ));
        }
        Ok(())
    };
    let split_feature: Vec<u32> = parse_list(place, "split_feature", get("split_feature")?)?;
    sized("split_feature", split_feature.len())?;
    let threshold = parse_float_list(place, "threshold", get("threshold")?)?;
    sized("threshold", threshold.len())?;
    let decision_type: Vec<u8> = parse_list(place, "decision_type", get("decision_type")?)?;
    sized("decision_type", decision_type.len())?;
    let left_child: Vec<i32> = parse_list(place, "left_child", get("left_child")?)?;
    sized("left_child", left_child.len())?;
    let right_child: Vec<i32> = parse_list(place, "right_child", get("right_child")?)?;
    sized("right_child", right_child.len())?;
    let num_cat: usize = kv.get("num_cat").and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    let (cat_boundaries, cat_threshold) = if num_cat > 0 {
        let b: Vec<u32> = parse_list(place, "cat_boundaries", get("cat_boundaries")?)?;
        let t: Vec<u32> = parse_list(place, "cat_threshold", get("cat_threshold")?)?;
        if b.len() != num_cat + 1 {
            return Err(err(
                format!("{place}.cat_boundaries"),
                format!("{} values for num_cat={num_cat}", b.len()),
            ));
        }
        if b.windows(2).any(|w| w[0] > w[1]) || b.last().copied() != Some(t.len() as u32) {
            return Err(err(
                format!("{place}.cat_boundaries"),
                "boundaries are not increasing or do not end at the length of cat_threshold",
            ));
        }
        (b, t)
    } else {
        (vec![], vec![])
    };
    for (n, &f) in split_feature.iter().enumerate() {
        if f as usize > max_feature_idx {
            return Err(err(
                format!("{place}.split_feature[{n}]"),
                format!("feature {f} is beyond max_feature_idx={max_feature_idx}"),
            ));
        }
        if decision_type[n] & 1 == 1 {
            let idx = threshold[n];
            if idx < 0.0 || idx.fract() != 0.0 || idx as usize >= num_cat {
                return Err(err(
                    format!("{place}.threshold[{n}]"),
                    format!(
                        "categorical split refers to category set {idx}, but num_cat={num_cat}"
                    ),
                ));
            }
        } else if !threshold[n].is_finite()
            && threshold[n] != f64::INFINITY
            && threshold[n] != f64::NEG_INFINITY
        {
            return Err(err(format!("{place}.threshold[{n}]"), "threshold is not a number"));
        }
    }
    // Every internal node and leaf must be reached exactly once from the root: no dangling
    // index, no cycle, no shared subtree.
    let mut seen_internal = vec![false; internal];
    let mut seen_leaf = vec![false; num_leaves];
    let mut stack = vec![0i32];
    seen_internal[0] = true;
    while let Some(node) = stack.pop() {
        let n = node as usize;
        for (side, child) in [("left_child", left_child[n]), ("right_child", right_child[n])] {
            let place_child = format!("{place}.{side}[{n}]");
            if child >= 0 {
                let c = child as usize;
                if c >= internal {
                    return Err(err(
                        place_child,
                        format!("internal node {c} is out of range (the tree has {internal})"),
                    ));
                }
                if seen_internal[c] {
                    return Err(err(
                        place_child,
                        format!("internal node {c} is reached twice (cycle or shared subtree)"),
                    ));
                }
                seen_internal[c] = true;
                stack.push(child);
            } else {
                let leaf = (!child) as usize;
                if leaf >= num_leaves {
                    return Err(err(
                        place_child,
                        format!("leaf {leaf} is out of range (the tree has {num_leaves})"),
                    ));
                }
                if seen_leaf[leaf] {
                    return Err(err(place_child, format!("leaf {leaf} is reached twice")));
                }
                seen_leaf[leaf] = true;
            }
        }
    }
    if let Some(n) = seen_internal.iter().position(|s| !s) {
        return Err(err(place, format!("internal node {n} is not reachable from the root")));
    }
    if let Some(l) = seen_leaf.iter().position(|s| !s) {
        return Err(err(place, format!("leaf {l} is not reachable from the root")));
    }
    Ok(Tree {
        num_leaves,
        split_feature,
        threshold,
        decision_type,
        left_child,
        right_child,
        leaf_value,
        cat_boundaries,
        cat_threshold,
        shrinkage,
    })
}

pub(crate) fn inspect(bytes: &[u8]) -> Result<Inspected, FormatError> {
    let model = parse(bytes)?;
    let n_features = model.max_feature_idx + 1;
    let classes = match model.objective_name() {
        "binary" | "cross_entropy" | "xentropy" => Some(2),
        _ if model.num_class > 1 => Some(model.num_class),
        _ => None,
    };
    let outputs = crate::tree_outputs(classes);
    let signature = Signature {
        inputs: vec![TensorSpec {
            name: "input".into(),
            datatype: DataType::Fp32,
            shape: vec![-1, n_features as i64],
        }],
        outputs,
        feature_names: Some(model.feature_names.clone()),
    };
    let details = json!({
        "version": model.version,
        "objective": model.objective,
        "num_class": model.num_class,
        "num_tree_per_iteration": model.num_tree_per_iteration,
        "num_trees": model.trees.len(),
        "num_features": n_features,
        "max_leaves": model.trees.iter().map(|t| t.num_leaves).max().unwrap_or(0),
    });
    Ok(Inspected { format: ModelFormat::Lightgbm, signature: Some(signature), details })
}
