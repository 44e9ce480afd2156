//! The tree-ensemble evaluator: the hottest loop of the platform.
//!
//! Every tree format (LightGBM, XGBoost, ONNX-ML `TreeEnsemble*`) is lowered onto one flat
//! representation: all nodes of all trees in one array of small fixed-size records, children as
//! indices into it, leaves pointing into a table of `(target, weight)` pairs. Evaluation walks
//! rows in blocks and, within a block, tree by tree, so a tree's nodes stay in cache while every
//! row of the block descends it.

/// How a split compares the feature value `x` with its threshold `t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Cmp {
    Leaf,
    /// `x <= t`
    Le,
    /// `x < t`
    Lt,
    /// `x >= t`
    Ge,
    /// `x > t`
    Gt,
    /// `x == t`
    Eq,
    /// `x != t`
    Ne,
    /// LightGBM categorical: `x` as a non-negative integer is in the bitset `cat_sets[t]`.
    CatIn,
}

/// Missing-value handling flags of a split.
pub mod missing {
    /// A NaN input takes the default branch.
    pub const NAN_DEFAULT: u8 = 1;
    /// A NaN input is replaced by 0.0 before comparing (LightGBM, missing type not NaN).
    pub const NAN_AS_ZERO: u8 = 2;
    /// An input with |x| <= 1e-35 takes the default branch (LightGBM missing type Zero).
    pub const ZERO_DEFAULT: u8 = 4;
    /// The default branch is the "yes" branch (else the "no" branch).
    pub const DEFAULT_YES: u8 = 8;
}

/// One node. For a leaf, `yes` is the first index into the leaf-weight table and `no` the count.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    pub threshold: f64,
    pub feature: u32,
    pub yes: u32,
    pub no: u32,
    pub cmp: Cmp,
    pub missing: u8,
}

impl Node {
    pub fn leaf(first_weight: u32, count: u32) -> Node {
        Node {
            threshold: 0.0,
            feature: 0,
            yes: first_weight,
            no: count,
            cmp: Cmp::Leaf,
            missing: 0,
        }
    }
}

/// A whole ensemble, ready to evaluate.
#[derive(Debug, Clone, Default)]
pub struct Ensemble {
    pub nodes: Vec<Node>,
    /// The root node of each tree.
    pub roots: Vec<u32>,
    /// `(target, weight)` pairs that leaves point into.
    pub leaf_weights: Vec<(u32, f64)>,
    /// Bitsets of LightGBM categorical splits.
    pub cat_sets: Vec<Vec<u32>>,
    /// The number of inputs each row has.
    pub n_features: usize,
    /// The number of accumulated outputs (classes or regression targets).
    pub n_targets: usize,
}

const ZERO_THRESHOLD: f64 = 1e-35;

impl Ensemble {
    #[inline(always)]
    fn decide(&self, node: &Node, row: &[f32]) -> bool {
        let mut x = f64::from(row[node.feature as usize]);
        let m = node.missing;
        if x.is_nan() {
            if m & missing::NAN_DEFAULT != 0 {
                return m & missing::DEFAULT_YES != 0;
            }
            if m & missing::NAN_AS_ZERO != 0 {
                x = 0.0;
            }
        }
        if m & missing::ZERO_DEFAULT != 0 && x.abs() <= ZERO_THRESHOLD {
            return m & missing::DEFAULT_YES != 0;
        }
        let t = node.threshold;
        match node.cmp {
            Cmp::Le => x <= t,
            Cmp::Lt => x < t,
            Cmp::Ge => x >= t,
            Cmp::Gt => x > t,
            Cmp::Eq => x == t,
            Cmp::Ne => x != t,
            Cmp::CatIn => {
                if x.is_nan() || x < 0.0 {
                    return false;
                }
                let v = x as u64;
                let set = &self.cat_sets[t as usize];
                let word = (v / 32) as usize;
                word < set.len() && (set[word] >> (v % 32)) & 1 == 1
            }
            Cmp::Leaf => false,
        }
    }

    /// The leaf a row reaches in the tree rooted at `root`.
    #[inline(always)]
    pub fn leaf_of(&self, root: u32, row: &[f32]) -> &Node {
        let mut node = &self.nodes[root as usize];
        while node.cmp != Cmp::Leaf {
            let next = if self.decide(node, row) { node.yes } else { node.no };
            node = &self.nodes[next as usize];
        }
        node
    }

    /// Adds every tree's leaf weights to `out` (`n_rows * n_targets`, row-major) for the rows in
    /// `features` (`n_rows * width`, row-major; `width >= n_features`).
    pub fn accumulate(&self, features: &[f32], width: usize, out: &mut [f64]) {
        const BLOCK: usize = 64;
        assert!(
            width >= self.n_features,
            "rows of {width} values for a model reading {} features",
            self.n_features
        );
        let nf = width.max(1);
        let nt = self.n_targets;
        let n_rows = features.len() / nf;
        debug_assert_eq!(out.len(), n_rows * nt);
        let mut start = 0;
        while start < n_rows {
            let end = (start + BLOCK).min(n_rows);
            for &root in &self.roots {
                for r in start..end {
                    let row = &features[r * nf..(r + 1) * nf];
                    let leaf = self.leaf_of(root, row);
                    let weights =
                        &self.leaf_weights[leaf.yes as usize..(leaf.yes + leaf.no) as usize];
                    let o = &mut out[r * nt..(r + 1) * nt];
                    for &(target, w) in weights {
                        o[target as usize] += w;
                    }
                }
            }
            start = end;
        }
    }

    /// Checks every index the evaluator will follow, so evaluation cannot go out of bounds.
    pub fn check(&self) -> Result<(), String> {
        let n = self.nodes.len() as u64;
        for (i, node) in self.nodes.iter().enumerate() {
            match node.cmp {
                Cmp::Leaf => {
                    if u64::from(node.yes) + u64::from(node.no) > self.leaf_weights.len() as u64 {
                        return Err(format!("leaf {i} points past the leaf-weight table"));
                    }
                }
                cmp => {
                    if node.feature as usize >= self.n_features {
                        return Err(format!(
                            "node {i} reads feature {} of {}",
                            node.feature, self.n_features
                        ));
                    }
                    if u64::from(node.yes) >= n || u64::from(node.no) >= n {
                        return Err(format!("node {i} has a child out of range"));
                    }
                    if cmp == Cmp::CatIn
                        && (node.threshold < 0.0 || node.threshold as usize >= self.cat_sets.len())
                    {
                        return Err(format!("node {i} refers to a missing category set"));
                    }
                }
            }
        }
        if let Some(&(t, _)) = self.leaf_weights.iter().find(|(t, _)| *t as usize >= self.n_targets)
        {
            return Err(format!("a leaf adds to target {t} of {}", self.n_targets));
        }
        if self.roots.iter().any(|&r| u64::from(r) >= n) {
            return Err("a tree root is out of range".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stump(cmp: Cmp, missing: u8) -> Ensemble {
        Ensemble {
            nodes: vec![
                Node { threshold: 1.0, feature: 0, yes: 1, no: 2, cmp, missing },
                Node::leaf(0, 1),
                Node::leaf(1, 1),
            ],
            roots: vec![0],
            leaf_weights: vec![(0, 10.0), (0, 20.0)],
            cat_sets: vec![vec![0b1010]],
            n_features: 1,
            n_targets: 1,
        }
    }

    fn eval(e: &Ensemble, x: f32) -> f64 {
        let mut out = vec![0.0];
        e.accumulate(&[x], 1, &mut out);
        out[0]
    }

    #[test]
    fn comparisons_follow_their_operator() {
        assert_eq!(eval(&stump(Cmp::Le, 0), 1.0), 10.0);
        assert_eq!(eval(&stump(Cmp::Lt, 0), 1.0), 20.0);
        assert_eq!(eval(&stump(Cmp::Ge, 0), 1.0), 10.0);
        assert_eq!(eval(&stump(Cmp::Gt, 0), 1.0), 20.0);
        assert_eq!(eval(&stump(Cmp::Eq, 0), 1.0), 10.0);
        assert_eq!(eval(&stump(Cmp::Ne, 0), 1.0), 20.0);
    }

    #[test]
    fn missing_values_take_the_configured_branch() {
        use missing::*;
        assert_eq!(eval(&stump(Cmp::Le, NAN_DEFAULT | DEFAULT_YES), f32::NAN), 10.0);
        assert_eq!(eval(&stump(Cmp::Le, NAN_DEFAULT), f32::NAN), 20.0);
        assert_eq!(eval(&stump(Cmp::Le, NAN_AS_ZERO), f32::NAN), 10.0, "NaN becomes 0 <= 1");
        assert_eq!(eval(&stump(Cmp::Le, 0), f32::NAN), 20.0, "NaN compares false");
        assert_eq!(eval(&stump(Cmp::Le, ZERO_DEFAULT), 0.0), 20.0);
    }

    #[test]
    fn categorical_splits_test_set_membership() {
        let mut e = stump(Cmp::CatIn, 0);
        e.nodes[0].threshold = 0.0;
        assert_eq!(eval(&e, 1.0), 10.0);
        assert_eq!(eval(&e, 3.0), 10.0);
        assert_eq!(eval(&e, 2.0), 20.0);
        assert_eq!(eval(&e, 40.0), 20.0, "beyond the bitset");
        assert_eq!(eval(&e, -1.0), 20.0);
    }

    #[test]
    fn check_refuses_dangling_indices() {
        let mut e = stump(Cmp::Le, 0);
        e.nodes[0].no = 9;
        assert!(e.check().is_err());
        let mut e = stump(Cmp::Le, 0);
        e.nodes[0].feature = 3;
        assert!(e.check().is_err());
    }
}
