//! The ONNX-ML tree ensembles (`TreeEnsembleClassifier`, `TreeEnsembleRegressor`) read and
//! checked completely: attribute lengths, node and weight references, modes, class or target
//! ids, one root per tree, no cycle. Upload validation and the runtime read them with this same
//! code, so a file accepted at upload is a file the runtime can load.
//!
//! A tree may be a DAG: onnxmltools writes a LightGBM categorical split as a chain of
//! `BRANCH_EQ` nodes whose true branches all lead to the same node. Such shared subtrees are
//! copied out, one copy per parent, so that every tree read here is a tree (the evaluator lays
//! a node's children side by side); only a real cycle is refused, and the copies are bounded.

use std::collections::HashMap;

use crate::onnx::{AttrValue, Node};

/// A tree ensemble's nodes, every tree a tree.
#[derive(Debug, Clone, Default)]
pub struct TreeEnsemble {
    pub nodes: Vec<EnsembleNode>,
    /// The root node of each tree, in the order trees first appear.
    pub roots: Vec<u32>,
    /// `(target, weight)` pairs of each leaf, by [`EnsembleNode::Leaf`]'s index.
    pub leaf_weights: Vec<Vec<(u32, f64)>>,
    /// The highest input column a split reads (none for trees of leaves only).
    pub max_feature: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Le,
    Lt,
    Ge,
    Gt,
    Eq,
    Ne,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EnsembleNode {
    /// Index into [`TreeEnsemble::leaf_weights`].
    Leaf(u32),
    Branch {
        mode: Mode,
        feature: u32,
        threshold: f32,
        /// Where a row goes when the comparison holds, and when it does not.
        yes: u32,
        no: u32,
        /// A missing value (NaN) goes the `yes` way.
        missing_yes: bool,
    },
}

/// A node to copy: the stored node, where its copy is linked from (parent copy, `yes` side),
/// and the length of the path that reached it.
type Visit = (u32, Option<(usize, bool)>, usize);

/// At most this many nodes once shared subtrees are copied out, besides 16 times the nodes
/// stored: the copies of a DAG can grow exponentially with its depth.
const MAX_EXTRA_NODES: usize = 1 << 20;

fn ints(node: &Node, name: &str) -> Result<Vec<i64>, String> {
    match node.attribute(name) {
        None => Ok(vec![]),
        Some(AttrValue::Ints(v)) => Ok(v.clone()),
        Some(AttrValue::Int(i)) => Ok(vec![*i]),
        Some(_) => Err(format!("attribute '{name}' is not a list of integers")),
    }
}

/// A list of floats, from `name` or, when that is absent, from the tensor `name_as_tensor`.
pub fn floats(node: &Node, name: &str) -> Result<Vec<f32>, String> {
    match node.attribute(name) {
        Some(AttrValue::Floats(v)) => return Ok(v.clone()),
        Some(AttrValue::Float(f)) => return Ok(vec![*f]),
        Some(_) => return Err(format!("attribute '{name}' is not a list of floats")),
        None => {}
    }
    let tensor_name = format!("{name}_as_tensor");
    match node.attribute(&tensor_name) {
        None => Ok(vec![]),
        Some(AttrValue::Tensor(t)) => {
            let raw = &t.raw_data;
            match t.data_type {
                1 if !raw.is_empty() => Ok(raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect()),
                1 => Ok(t.float_data.clone()),
                11 if !raw.is_empty() => Ok(raw
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                    .collect()),
                11 => Ok(t.double_data.iter().map(|&d| d as f32).collect()),
                other => Err(format!(
                    "attribute '{tensor_name}' has element type {other}, not float or double"
                )),
            }
        }
        Some(_) => Err(format!("attribute '{tensor_name}' is not a tensor")),
    }
}

fn strings(node: &Node, name: &str) -> Result<Vec<String>, String> {
    match node.attribute(name) {
        None => Ok(vec![]),
        Some(AttrValue::Strings(v)) => v
            .iter()
            .map(|s| {
                String::from_utf8(s.clone()).map_err(|_| format!("attribute '{name}' is not UTF-8"))
            })
            .collect(),
        Some(_) => Err(format!("attribute '{name}' is not a list of strings")),
    }
}

/// How many columns a tree ensemble node accumulates: the classifier's labels, or the
/// regressor's `n_targets`.
pub fn targets(node: &Node) -> Result<usize, String> {
    match node.op_type.as_str() {
        "TreeEnsembleClassifier" => {
            let n = ints(node, "classlabels_int64s")?
                .len()
                .max(strings(node, "classlabels_strings")?.len());
            if n == 0 {
                return Err("the classifier has no class labels".into());
            }
            Ok(n)
        }
        _ => match node.attribute("n_targets") {
            None => Ok(1),
            Some(AttrValue::Int(n)) if (1..=1 << 16).contains(n) => Ok(*n as usize),
            Some(_) => Err("n_targets must be an integer from 1 to 65536".into()),
        },
    }
}

impl TreeEnsemble {
    /// Reads and checks the ensemble of a `TreeEnsembleClassifier` (weights in `class_*`) or
    /// `TreeEnsembleRegressor` (`target_*`) node.
    pub fn read(node: &Node) -> Result<TreeEnsemble, String> {
        let prefix = if node.op_type == "TreeEnsembleClassifier" { "class" } else { "target" };
        let n_targets = targets(node)?;
        let tree_ids = ints(node, "nodes_treeids")?;
        let node_ids = ints(node, "nodes_nodeids")?;
        let feature_ids = ints(node, "nodes_featureids")?;
        let values = floats(node, "nodes_values")?;
        let modes = strings(node, "nodes_modes")?;
        let true_ids = ints(node, "nodes_truenodeids")?;
        let false_ids = ints(node, "nodes_falsenodeids")?;
        let tracks = ints(node, "nodes_missing_value_tracks_true")?;
        let n = tree_ids.len();
        if n == 0 {
            return Err("the ensemble has no nodes".into());
        }
        for (name, len) in [
            ("nodes_nodeids", node_ids.len()),
            ("nodes_featureids", feature_ids.len()),
            ("nodes_modes", modes.len()),
            ("nodes_truenodeids", true_ids.len()),
            ("nodes_falsenodeids", false_ids.len()),
            ("nodes_values", values.len()),
        ] {
            if len != n {
                return Err(format!("{name} has {len} entries for {n} nodes"));
            }
        }
        if !tracks.is_empty() && tracks.len() != n {
            return Err(format!(
                "nodes_missing_value_tracks_true has {} entries for {n} nodes",
                tracks.len()
            ));
        }
        let w_tree = ints(node, &format!("{prefix}_treeids"))?;
        let w_node = ints(node, &format!("{prefix}_nodeids"))?;
        let w_id = ints(node, &format!("{prefix}_ids"))?;
        let w_weight = floats(node, &format!("{prefix}_weights"))?;
        if w_node.len() != w_tree.len()
            || w_id.len() != w_tree.len()
            || w_weight.len() != w_tree.len()
        {
            return Err(format!("{prefix}_treeids/nodeids/ids/weights differ in length"));
        }
        // Every (tree, node), and trees in order of first appearance.
        let mut index: HashMap<(i64, i64), u32> = HashMap::with_capacity(n);
        let mut tree_order: Vec<i64> = Vec::new();
        let mut tree_of: HashMap<i64, usize> = HashMap::new();
        for i in 0..n {
            if index.insert((tree_ids[i], node_ids[i]), i as u32).is_some() {
                return Err(format!("node ({}, {}) is defined twice", tree_ids[i], node_ids[i]));
            }
            tree_of.entry(tree_ids[i]).or_insert_with(|| {
                tree_order.push(tree_ids[i]);
                tree_order.len() - 1
            });
        }
        let mut weights: HashMap<u32, Vec<(u32, f64)>> = HashMap::new();
        for k in 0..w_tree.len() {
            let Some(&at) = index.get(&(w_tree[k], w_node[k])) else {
                return Err(format!(
                    "{prefix} weight {k} refers to missing node ({}, {})",
                    w_tree[k], w_node[k]
                ));
            };
            if w_id[k] < 0 || w_id[k] as usize >= n_targets {
                return Err(format!(
                    "{prefix}_ids[{k}] = {} is out of range for {n_targets}",
                    w_id[k]
                ));
            }
            weights.entry(at).or_default().push((w_id[k] as u32, f64::from(w_weight[k])));
        }
        // The nodes as stored, children by index.
        let mut stored = Vec::with_capacity(n);
        let mut has_parent = vec![false; n];
        let mut max_feature: Option<usize> = None;
        for i in 0..n {
            let mode = match modes[i].as_str() {
                "LEAF" => {
                    stored.push(None);
                    continue;
                }
                "BRANCH_LEQ" => Mode::Le,
                "BRANCH_LT" => Mode::Lt,
                "BRANCH_GTE" => Mode::Ge,
                "BRANCH_GT" => Mode::Gt,
                "BRANCH_EQ" => Mode::Eq,
                "BRANCH_NEQ" => Mode::Ne,
                other => return Err(format!("nodes_modes[{i}] = '{other}' is not a known mode")),
            };
            let child = |id: i64, which: &str| {
                index.get(&(tree_ids[i], id)).copied().ok_or_else(|| {
                    format!("node {i}'s {which} node {id} does not exist in tree {}", tree_ids[i])
                })
            };
            let (yes, no) = (child(true_ids[i], "true")?, child(false_ids[i], "false")?);
            has_parent[yes as usize] = true;
            has_parent[no as usize] = true;
            let feature = u32::try_from(feature_ids[i]).map_err(|_| {
                format!("nodes_featureids[{i}] = {} is out of range", feature_ids[i])
            })?;
            max_feature = max_feature.max(Some(feature as usize));
            stored.push(Some(EnsembleNode::Branch {
                mode,
                feature,
                threshold: values[i],
                yes,
                no,
                missing_yes: tracks.get(i).copied().unwrap_or(0) != 0,
            }));
        }
        let mut roots = vec![Vec::new(); tree_order.len()];
        let mut sizes = vec![0usize; tree_order.len()];
        for i in 0..n {
            let t = tree_of[&tree_ids[i]];
            sizes[t] += 1;
            if !has_parent[i] {
                roots[t].push(i as u32);
            }
        }
        // Each tree walked from its root, every node copied each time it is reached.
        let limit = n.saturating_mul(16).max(n + MAX_EXTRA_NODES);
        let mut e = TreeEnsemble { max_feature, ..TreeEnsemble::default() };
        for (t, tree) in tree_order.iter().enumerate() {
            let [root] = roots[t][..] else {
                return Err(format!("tree {tree} has {} roots", roots[t].len()));
            };
            let mut stack: Vec<Visit> = vec![(root, None, 0)];
            while let Some((at, link, depth)) = stack.pop() {
                if depth >= sizes[t] {
                    return Err(format!("tree {tree} has a cycle through node {at}"));
                }
                if e.nodes.len() >= limit {
                    return Err(format!(
                        "tree {tree}'s shared subtrees copy out to more than {limit} nodes"
                    ));
                }
                let copy = e.nodes.len() as u32;
                match link {
                    None => e.roots.push(copy),
                    Some((parent, yes_side)) => match &mut e.nodes[parent] {
                        EnsembleNode::Branch { yes, no, .. } => {
                            *(if yes_side { yes } else { no }) = copy;
                        }
                        EnsembleNode::Leaf(_) => unreachable!("leaves have no children"),
                    },
                }
                match stored[at as usize] {
                    None => {
                        let leaf = e.leaf_weights.len() as u32;
                        e.leaf_weights.push(weights.get(&at).cloned().unwrap_or_default());
                        e.nodes.push(EnsembleNode::Leaf(leaf));
                    }
                    Some(branch @ EnsembleNode::Branch { yes, no, .. }) => {
                        e.nodes.push(branch);
                        let slot = copy as usize;
                        stack.push((no, Some((slot, false)), depth + 1));
                        stack.push((yes, Some((slot, true)), depth + 1));
                    }
                    Some(EnsembleNode::Leaf(_)) => unreachable!("stored leaves are None"),
                }
            }
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::Attribute;

    fn node(op: &str, attrs: Vec<(&str, AttrValue)>) -> Node {
        Node {
            op_type: op.into(),
            domain: "ai.onnx.ml".into(),
            attributes: attrs
                .into_iter()
                .map(|(name, value)| Attribute { name: name.into(), value })
                .collect(),
            ..Node::default()
        }
    }

    /// One tree: node 0 splits to 1 (true) and 2 (false); 2 splits to 1 (true: shared) and 3.
    fn dag(true_of_2: i64) -> Node {
        let modes = ["BRANCH_LEQ", "LEAF", "BRANCH_EQ", "LEAF"];
        node(
            "TreeEnsembleRegressor",
            vec![
                ("nodes_treeids", AttrValue::Ints(vec![0; 4])),
                ("nodes_nodeids", AttrValue::Ints(vec![0, 1, 2, 3])),
                ("nodes_featureids", AttrValue::Ints(vec![0, 0, 1, 0])),
                ("nodes_values", AttrValue::Floats(vec![0.5, 0.0, 2.0, 0.0])),
                (
                    "nodes_modes",
                    AttrValue::Strings(modes.iter().map(|m| m.as_bytes().to_vec()).collect()),
                ),
                ("nodes_truenodeids", AttrValue::Ints(vec![1, 0, true_of_2, 0])),
                ("nodes_falsenodeids", AttrValue::Ints(vec![2, 0, 3, 0])),
                ("target_treeids", AttrValue::Ints(vec![0, 0])),
                ("target_nodeids", AttrValue::Ints(vec![1, 3])),
                ("target_ids", AttrValue::Ints(vec![0, 0])),
                ("target_weights", AttrValue::Floats(vec![10.0, 30.0])),
            ],
        )
    }

    #[test]
    fn shared_subtrees_are_copied_out_and_cycles_refused() {
        let e = TreeEnsemble::read(&dag(1)).expect("a DAG is read");
        // Root, its two children, the shared leaf again and the last leaf: five nodes.
        assert_eq!(e.nodes.len(), 5);
        assert_eq!(e.max_feature, Some(1));
        let leaves: Vec<f64> = e
            .nodes
            .iter()
            .filter_map(|n| match n {
                EnsembleNode::Leaf(l) => Some(e.leaf_weights[*l as usize][0].1),
                _ => None,
            })
            .collect();
        assert_eq!(leaves.iter().filter(|w| **w == 10.0).count(), 2);
        // Every node but the root is reached exactly once.
        let mut parents = vec![0; e.nodes.len()];
        for n in &e.nodes {
            if let EnsembleNode::Branch { yes, no, .. } = n {
                parents[*yes as usize] += 1;
                parents[*no as usize] += 1;
            }
        }
        assert_eq!(parents, [0, 1, 1, 1, 1]);
        // Node 2's true branch back to node 0: a cycle.
        let e = TreeEnsemble::read(&dag(0)).unwrap_err();
        assert!(e.contains("roots") || e.contains("cycle"), "{e}");
        let e = TreeEnsemble::read(&dag(2)).unwrap_err();
        assert!(e.contains("cycle"), "{e}");
        let e = TreeEnsemble::read(&dag(7)).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
    }

    #[test]
    fn a_dag_that_doubles_at_every_level_is_bounded() {
        // 40 levels, each node's two children being the same next node: 2^40 paths.
        let levels = 40;
        let n = levels + 1;
        let mut modes: Vec<Vec<u8>> = vec![b"BRANCH_LEQ".to_vec(); levels];
        modes.push(b"LEAF".to_vec());
        let next: Vec<i64> = (1..=levels as i64).chain([0]).collect();
        let e = TreeEnsemble::read(&node(
            "TreeEnsembleRegressor",
            vec![
                ("nodes_treeids", AttrValue::Ints(vec![0; n])),
                ("nodes_nodeids", AttrValue::Ints((0..n as i64).collect())),
                ("nodes_featureids", AttrValue::Ints(vec![0; n])),
                ("nodes_values", AttrValue::Floats(vec![0.0; n])),
                ("nodes_modes", AttrValue::Strings(modes)),
                ("nodes_truenodeids", AttrValue::Ints(next.clone())),
                ("nodes_falsenodeids", AttrValue::Ints(next)),
            ],
        ))
        .unwrap_err();
        assert!(e.contains("copy out to more than"), "{e}");
    }
}
