//! XGBoost JSON models (`Booster.save_model("model.json")`): a complete reader and validator.
//!
//! Quirks handled: XGBoost stores numbers of `learner_model_param` as strings; 3.x writes
//! `base_score` as a bracketed list with one value per class (`"[5E-1]"`); `default_left` is a
//! list of 0/1 integers or booleans depending on the version; leaves carry their value in
//! `split_conditions`. Categorical splits and `gblinear` boosters are refused.

use plinth_api::registry::{DataType, ModelFormat, Signature, TensorSpec};
use serde_json::{Value, json};

use crate::{FormatError, Inspected};

const FORMAT: &str = "xgboost";

#[derive(Debug, Clone)]
pub struct Model {
    /// `[major, minor, patch]` of the XGBoost that wrote the file.
    pub version: Vec<i64>,
    pub objective: String,
    pub num_class: usize,
    pub num_feature: usize,
    /// One base score per output group (a single value for binary and regression).
    pub base_score: Vec<f64>,
    pub feature_names: Option<Vec<String>>,
    pub trees: Vec<Tree>,
    /// The output group (class) of each tree.
    pub tree_group: Vec<usize>,
    /// DART weights per tree (1.0 for gbtree).
    pub tree_weights: Vec<f64>,
}

#[derive(Debug, Clone)]
pub struct Tree {
    pub left_children: Vec<i32>,
    pub right_children: Vec<i32>,
    pub split_indices: Vec<u32>,
    /// The threshold of an internal node; the value of a leaf.
    pub split_conditions: Vec<f64>,
    pub default_left: Vec<bool>,
}

impl Tree {
    pub fn is_leaf(&self, node: usize) -> bool {
        self.left_children[node] < 0
    }
}

fn err(place: impl Into<String>, reason: impl Into<String>) -> FormatError {
    FormatError::new(FORMAT, place, reason)
}

fn field<'a>(v: &'a Value, place: &str, key: &str) -> Result<&'a Value, FormatError> {
    v.get(key).ok_or_else(|| err(format!("{place}.{key}"), "missing field"))
}

fn string_number(v: &Value, place: &str) -> Result<f64, FormatError> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| err(place, "not a number")),
        Value::String(s) => {
            s.trim().parse::<f64>().map_err(|_| err(place, format!("'{s}' is not a number")))
        }
        _ => Err(err(place, "expected a number or a numeric string")),
    }
}

fn parse_base_score(v: &Value, place: &str) -> Result<Vec<f64>, FormatError> {
    if let Value::String(s) = v {
        let s = s.trim();
        if let Some(inner) = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            return inner
                .split(',')
                .map(|x| {
                    x.trim()
                        .parse::<f64>()
                        .map_err(|_| err(place, format!("'{x}' is not a number")))
                })
                .collect();
        }
    }
    Ok(vec![string_number(v, place)?])
}

fn array<'a>(v: &'a Value, place: &str, key: &str) -> Result<&'a Vec<Value>, FormatError> {
    field(v, place, key)?
        .as_array()
        .ok_or_else(|| err(format!("{place}.{key}"), "expected an array"))
}

fn ints(v: &Value, place: &str, key: &str) -> Result<Vec<i64>, FormatError> {
    array(v, place, key)?
        .iter()
        .enumerate()
        .map(|(i, x)| match x {
            Value::Bool(b) => Ok(i64::from(*b)),
            _ => {
                x.as_i64().ok_or_else(|| err(format!("{place}.{key}[{i}]"), "expected an integer"))
            }
        })
        .collect()
}

fn floats(v: &Value, place: &str, key: &str) -> Result<Vec<f64>, FormatError> {
    array(v, place, key)?
        .iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_f64().ok_or_else(|| err(format!("{place}.{key}[{i}]"), "expected a number"))
        })
        .collect()
}

/// Parses and validates an XGBoost JSON model.
pub fn parse(bytes: &[u8]) -> Result<Model, FormatError> {
    let root: Value = serde_json::from_slice(bytes).map_err(|e| {
        err("file", format!("not valid JSON at line {} column {}: {e} (XGBoost's binary UBJSON format is not supported; save with a .json name)", e.line(), e.column()))
    })?;
    if !root.is_object() {
        return Err(err("file", "an XGBoost JSON model is an object with a 'learner' field"));
    }
    let learner = field(&root, "$", "learner")?;
    let version = root
        .get("version")
        .and_then(Value::as_array)
        .map(|v| v.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    let lmp = field(learner, "learner", "learner_model_param")?;
    let num_class = string_number(
        field(lmp, "learner.learner_model_param", "num_class")?,
        "learner.learner_model_param.num_class",
    )? as usize;
    let num_feature = string_number(
        field(lmp, "learner.learner_model_param", "num_feature")?,
        "learner.learner_model_param.num_feature",
    )? as usize;
    let mut base_score = parse_base_score(
        field(lmp, "learner.learner_model_param", "base_score")?,
        "learner.learner_model_param.base_score",
    )?;
    let objective = field(field(learner, "learner", "objective")?, "learner.objective", "name")?
        .as_str()
        .ok_or_else(|| err("learner.objective.name", "expected a string"))?
        .to_string();
    let feature_names =
        learner.get("feature_names").and_then(Value::as_array).filter(|a| !a.is_empty()).map(|a| {
            a.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect::<Vec<_>>()
        });
    if let Some(names) = &feature_names
        && names.len() != num_feature
    {
        return Err(err(
            "learner.feature_names",
            format!("{} names for num_feature={num_feature}", names.len()),
        ));
    }
    let groups = num_class.max(1);
    if base_score.len() == 1 && groups > 1 {
        base_score = vec![base_score[0]; groups];
    }
    if base_score.len() != groups {
        return Err(err(
            "learner.learner_model_param.base_score",
            format!("{} values for {groups} output groups", base_score.len()),
        ));
    }

    let booster = field(learner, "learner", "gradient_booster")?;
    let booster_name =
        field(booster, "learner.gradient_booster", "name")?.as_str().unwrap_or_default();
    let (model, place, dart_weights) = match booster_name {
        "gbtree" => (
            field(booster, "learner.gradient_booster", "model")?,
            "learner.gradient_booster.model".to_string(),
            None,
        ),
        "dart" => {
            let gbtree = field(booster, "learner.gradient_booster", "gbtree")?;
            let w = floats(booster, "learner.gradient_booster", "weight_drop")?;
            (
                field(gbtree, "learner.gradient_booster.gbtree", "model")?,
                "learner.gradient_booster.gbtree.model".to_string(),
                Some(w),
            )
        }
        "gblinear" => {
            return Err(err(
                "learner.gradient_booster.name",
                "gblinear boosters are not supported (tree boosters are)",
            ));
        }
        other => {
            return Err(err("learner.gradient_booster.name", format!("unknown booster '{other}'")));
        }
    };
    let trees_json = array(model, &place, "trees")?;
    let tree_info = ints(model, &place, "tree_info")?;
    if tree_info.len() != trees_json.len() {
        return Err(err(
            format!("{place}.tree_info"),
            format!("{} entries for {} trees", tree_info.len(), trees_json.len()),
        ));
    }
    if trees_json.is_empty() {
        return Err(err(format!("{place}.trees"), "the model has no trees"));
    }
    let mut trees = Vec::with_capacity(trees_json.len());
    for (t, tj) in trees_json.iter().enumerate() {
        trees.push(parse_tree(tj, &format!("{place}.trees[{t}]"), num_feature)?);
    }
    let mut tree_group = Vec::with_capacity(tree_info.len());
    for (t, &g) in tree_info.iter().enumerate() {
        if g < 0 || g as usize >= groups {
            return Err(err(
                format!("{place}.tree_info[{t}]"),
                format!("group {g} is out of range for {groups} output groups"),
            ));
        }
        tree_group.push(g as usize);
    }
    let tree_weights = match dart_weights {
        Some(w) if w.len() == trees.len() => w,
        Some(w) => {
            return Err(err(
                "learner.gradient_booster.weight_drop",
                format!("{} weights for {} trees", w.len(), trees.len()),
            ));
        }
        None => vec![1.0; trees.len()],
    };
    Ok(Model {
        version,
        objective,
        num_class,
        num_feature,
        base_score,
        feature_names,
        trees,
        tree_group,
        tree_weights,
    })
}

fn parse_tree(tj: &Value, place: &str, num_feature: usize) -> Result<Tree, FormatError> {
    let param = field(tj, place, "tree_param")?;
    let num_nodes = string_number(
        field(param, &format!("{place}.tree_param"), "num_nodes")?,
        &format!("{place}.tree_param.num_nodes"),
    )? as usize;
    if num_nodes == 0 {
        return Err(err(format!("{place}.tree_param.num_nodes"), "a tree has at least one node"));
    }
    let left = ints(tj, place, "left_children")?;
    let right = ints(tj, place, "right_children")?;
    let split = ints(tj, place, "split_indices")?;
    let cond = floats(tj, place, "split_conditions")?;
    let default_left = ints(tj, place, "default_left")?;
    for (key, len) in [
        ("left_children", left.len()),
        ("right_children", right.len()),
        ("split_indices", split.len()),
        ("split_conditions", cond.len()),
        ("default_left", default_left.len()),
    ] {
        if len != num_nodes {
            return Err(err(
                format!("{place}.{key}"),
                format!("{len} entries for num_nodes={num_nodes} (truncated tree?)"),
            ));
        }
    }
    if let Some(types) = tj.get("split_type").and_then(Value::as_array)
        && let Some(i) = types.iter().position(|t| t.as_i64().unwrap_or(0) != 0)
    {
        return Err(err(
            format!("{place}.split_type[{i}]"),
            "categorical splits are not supported",
        ));
    }
    let mut seen = vec![false; num_nodes];
    seen[0] = true;
    let mut stack = vec![0usize];
    while let Some(n) = stack.pop() {
        let (l, r) = (left[n], right[n]);
        if l == -1 && r == -1 {
            continue;
        }
        if (l == -1) != (r == -1) {
            return Err(err(format!("{place}.left_children[{n}]"), "a node has exactly one child"));
        }
        let f = split[n];
        if f < 0 || f as usize >= num_feature {
            return Err(err(
                format!("{place}.split_indices[{n}]"),
                format!("feature {f} is out of range (num_feature={num_feature})"),
            ));
        }
        for (key, c) in [("left_children", l), ("right_children", r)] {
            if c < 0 || c as usize >= num_nodes {
                return Err(err(
                    format!("{place}.{key}[{n}]"),
                    format!("child {c} is out of range (num_nodes={num_nodes})"),
                ));
            }
            let c = c as usize;
            if seen[c] {
                return Err(err(
                    format!("{place}.{key}[{n}]"),
                    format!("node {c} is reached twice (cycle or shared subtree)"),
                ));
            }
            seen[c] = true;
            stack.push(c);
        }
    }
    if let Some(n) = seen.iter().position(|s| !s) {
        return Err(err(place, format!("node {n} is not reachable from the root")));
    }
    if let Some(i) = cond.iter().position(|c| c.is_nan()) {
        return Err(err(format!("{place}.split_conditions[{i}]"), "value is NaN"));
    }
    Ok(Tree {
        left_children: left.iter().map(|&x| x as i32).collect(),
        right_children: right.iter().map(|&x| x as i32).collect(),
        split_indices: split.iter().map(|&x| x.max(0) as u32).collect(),
        split_conditions: cond,
        default_left: default_left.iter().map(|&x| x != 0).collect(),
    })
}

pub(crate) fn inspect(bytes: &[u8]) -> Result<Inspected, FormatError> {
    let model = parse(bytes)?;
    let classes = if model.objective.starts_with("binary:") || model.objective == "reg:logistic" {
        Some(2)
    } else if model.num_class > 1 {
        Some(model.num_class)
    } else {
        None
    };
    let outputs = crate::tree_outputs(classes);
    let signature = Signature {
        inputs: vec![TensorSpec {
            name: "input".into(),
            datatype: DataType::Fp32,
            shape: vec![-1, model.num_feature as i64],
        }],
        outputs,
        feature_names: model.feature_names.clone(),
    };
    let details = json!({
        "version": model.version,
        "objective": model.objective,
        "num_class": model.num_class,
        "num_feature": model.num_feature,
        "num_trees": model.trees.len(),
        "base_score": model.base_score,
    });
    Ok(Inspected { format: ModelFormat::Xgboost, signature: Some(signature), details })
}
