//! The tree-ensemble evaluator: the hottest loop of the platform.
//!
//! Every tree format (LightGBM, XGBoost, ONNX-ML `TreeEnsemble*`) is lowered onto one flat
//! representation: all nodes of all trees in one array of small fixed-size records, children as
//! indices into it, leaves pointing into a table of `(target, weight)` pairs. Evaluation walks
//! rows in blocks and, within a block, tree by tree, so a tree's nodes stay in cache while every
//! row of the block descends it. Trees of numeric splits only (nearly all) are also laid out
//! breadth first with each split's children side by side, for walks in lockstep ([`Steps`]).

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

/// The evaluation form of a node: 16 bytes, every numeric split turned into `x <= t` on f32
/// (exact for f32 inputs: see [`Ensemble::compile`]), NaN's branch fixed at load time.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(crate) struct Fast {
    t: f32,
    /// Bits 0-28: feature index. Bit 31: leaf. Bit 30: NaN goes to `yes`. Bit 29: evaluate the
    /// general [`Node`] instead (categorical, equality and zero-as-missing splits).
    meta: u32,
    yes: u32,
    no: u32,
}

impl Fast {
    /// The child this (compiled, numeric) split sends `x` to, computed without a branch: which
    /// way a row goes is data, so a branch here is mispredicted about as often as not, and the
    /// misprediction costs more than the whole step (`perf annotate` showed the compiler's
    /// `jae` on `x <= t` as the hottest instructions of batch evaluation).
    #[inline(always)]
    fn child(self, x: f32) -> u32 {
        let yes = (x <= self.t) | (x.is_nan() & (self.meta & NAN_YES != 0));
        let mask = u32::from(yes).wrapping_neg();
        (self.yes & mask) | (self.no & !mask)
    }
}

/// The lockstep layout: the trees walked in lockstep, each laid out breadth first with the two
/// children of a split side by side, so that a step is `left + (x goes right)` without choosing
/// between two stored children (which compiled to a load from a computed address and, across
/// eight walks, spilled registers: the side-by-side layout cut the instructions of a 64-row
/// request by 16 %, of a 1-row one by 6 %, callgrind). Built by [`Ensemble::compile`].
///
/// One array per field, indexed by place: a step reads its threshold, feature and left child
/// each in one instruction addressed by the place itself. (One 16-byte record per place needed
/// the place scaled by 16 into a register first, and the feature masked out of a word it shared
/// with the NaN flag: eight instructions per step and walk, where these take five.)
#[derive(Debug, Clone, Default)]
pub(crate) struct Steps {
    /// The split's threshold, `x <= t` going left; +inf for a leaf (every value stays on it).
    t: Vec<f32>,
    /// The feature the split reads; 0 for a leaf.
    feature: Vec<u32>,
    /// The place of the first of the two children, the `x <= t` one; a leaf: its own place.
    left: Vec<u32>,
    /// Whether NaN goes left (true for a leaf, so that NaN stays on it too).
    nan_left: Vec<bool>,
    /// The node in `nodes` each place lays out (for a leaf, where its weights are:
    /// `leaf_range`).
    node: Vec<u32>,
}

impl Steps {
    fn len(&self) -> usize {
        self.t.len()
    }

    /// Appends `n` places, each a leaf of node 0 staying on itself until set.
    fn grow(&mut self, n: usize) {
        for _ in 0..n {
            let place = self.t.len() as u32;
            self.set_leaf(place as usize, 0);
        }
    }

    fn set_leaf(&mut self, place: usize, node: u32) {
        self.set(place, f32::INFINITY, 0, place as u32, true, node);
    }

    fn set(&mut self, place: usize, t: f32, feature: u32, left: u32, nan_left: bool, node: u32) {
        if place == self.t.len() {
            self.t.push(t);
            self.feature.push(feature);
            self.left.push(left);
            self.nan_left.push(nan_left);
            self.node.push(node);
        } else {
            self.t[place] = t;
            self.feature[place] = feature;
            self.left[place] = left;
            self.nan_left[place] = nan_left;
            self.node[place] = node;
        }
    }

    fn truncate(&mut self, len: usize) {
        self.t.truncate(len);
        self.feature.truncate(len);
        self.left.truncate(len);
        self.nan_left.truncate(len);
        self.node.truncate(len);
    }

    /// The place a walk at `place` goes to, for the value `x` of the row it walks; `NAN` says
    /// whether `x` may be NaN.
    ///
    /// # Safety
    /// `place` is a place of these steps and the place's feature is below `row.len()`.
    #[allow(unsafe_code)]
    #[inline(always)]
    unsafe fn next<const NAN: bool>(&self, place: usize, row: &[f32]) -> usize {
        // SAFETY: the caller's contract; `left` has as many places as `t` and `feature`.
        unsafe {
            let x = *row.get_unchecked(*self.feature.get_unchecked(place) as usize);
            let t = *self.t.get_unchecked(place);
            let left = if NAN {
                (x <= t) | (x.is_nan() & *self.nan_left.get_unchecked(place))
            } else {
                x <= t
            };
            *self.left.get_unchecked(place) as usize + usize::from(!left)
        }
    }
}

/// Whether any of the values is NaN (a row that has none walks without NaN checks).
#[inline]
fn any_nan(values: &[f32]) -> bool {
    values.iter().fold(false, |acc, x| acc | x.is_nan())
}

/// Rows walked down a tree together.
const LANES: usize = 8;

const LEAF: u32 = 1 << 31;
const NAN_YES: u32 = 1 << 30;
const SLOW: u32 = 1 << 29;
const FEATURE: u32 = (1 << 29) - 1;

/// The largest f32 that is `<= t`.
fn f32_at_most(t: f64) -> f32 {
    let c = t as f32;
    if f64::from(c) > t { c.next_down() } else { c }
}

/// The largest f32 that is `< t`; NaN (which no `x <= NaN` satisfies) when there is none.
fn f32_below(t: f64) -> f32 {
    let c = f32_at_most(t);
    if f64::from(c) != t {
        c
    } else if c == f32::NEG_INFINITY {
        f32::NAN
    } else {
        c.next_down()
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
    /// The evaluation form of `nodes`, built by [`Ensemble::check`]. A leaf's `yes` and `no`
    /// point at itself, so a walk that reached it stays there.
    pub(crate) fast: Vec<Fast>,
    /// `(first weight, count)` of each leaf, by node index.
    pub(crate) leaf_range: Vec<(u32, u32)>,
    /// Where every leaf adds one weight, and all to one target (regressors, and binary
    /// classifiers, which score one class: most models), that weight, by node index; empty
    /// otherwise. One read per tree instead of two dependent ones...
    pub(crate) leaf_value: Vec<f64>,
    /// ...and the target they all add to.
    pub(crate) leaf_target: usize,
    /// Per tree: whether every split is a compiled one (the tree can be walked in lockstep).
    pub(crate) lockstep: Vec<bool>,
    /// The lockstep trees' nodes, laid out for walks in lockstep...
    pub(crate) steps: Steps,
    /// ...and each lockstep tree's root among them.
    pub(crate) step_roots: Vec<u32>,
    /// Per lockstep tree: the most steps from its root to a leaf (a walk of that many steps has
    /// reached its leaf, and stays there).
    pub(crate) depth: Vec<u32>,
    /// How a lone row walks the trees: groups of [`LANES`] lockstep trees of similar depth
    /// (tree indices, and the group's greatest depth)...
    pub(crate) row_groups: Vec<([u32; LANES], u32)>,
    /// ...and the trees left over, walked one at a time.
    pub(crate) row_singles: Vec<u32>,
}

const ZERO_THRESHOLD: f64 = 1e-35;

/// Whether 0.0 takes the `yes` branch of a numeric split (where NaN goes when it counts as 0).
fn cmp_zero(n: &Node) -> bool {
    let t = n.threshold;
    match n.cmp {
        Cmp::Le => 0.0 <= t,
        Cmp::Lt => 0.0 < t,
        Cmp::Ge => 0.0 >= t,
        Cmp::Gt => 0.0 > t,
        Cmp::Eq => 0.0 == t,
        Cmp::Ne => 0.0 != t,
        Cmp::Leaf | Cmp::CatIn => false,
    }
}

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

    /// The leaf a row reaches in the tree rooted at `root` (the general, reference walk).
    pub fn leaf_of(&self, root: u32, row: &[f32]) -> &Node {
        let mut node = &self.nodes[root as usize];
        while node.cmp != Cmp::Leaf {
            let next = if self.decide(node, row) { node.yes } else { node.no };
            node = &self.nodes[next as usize];
        }
        node
    }

    /// The index of the leaf a row reaches, on the compiled nodes.
    #[inline(always)]
    fn leaf_index(&self, root: u32, row: &[f32]) -> usize {
        let fast = &self.fast;
        let mut i = root as usize;
        loop {
            let n = fast[i];
            if n.meta & (LEAF | SLOW) != 0 {
                if n.meta & LEAF != 0 {
                    return i;
                }
                let node = &self.nodes[i];
                i = if self.decide(node, row) { node.yes } else { node.no } as usize;
                continue;
            }
            let x = row[(n.meta & FEATURE) as usize];
            i = n.child(x) as usize;
        }
    }

    /// Adds every tree's leaf weights to `out` (`n_rows * n_targets`, row-major) for the rows in
    /// `features` (`n_rows * width`, row-major; `width >= n_features`).
    ///
    /// Rows go in blocks, and within a block tree by tree, so a tree's nodes stay in cache. A
    /// tree is walked by [`LANES`] rows in lockstep: each step is a dependent load, and
    /// independent walks side by side keep the core busy while each one waits for memory. The
    /// rows left over (all of them in a request of fewer than [`LANES`] rows, the common case
    /// of online serving) walk [`LANES`] trees in lockstep instead, for the same reason. Either
    /// way each row adds its trees' weights in tree order, so the sums do not depend on the
    /// batch a row came in.
    pub fn accumulate(&self, features: &[f32], width: usize, out: &mut [f64]) {
        const BLOCK: usize = 64;
        assert!(
            width >= self.n_features,
            "rows of {width} values for a model reading {} features",
            self.n_features
        );
        assert_eq!(
            self.fast.len(),
            self.nodes.len(),
            "an ensemble is evaluated after Ensemble::check"
        );
        let nf = width.max(1);
        let nt = self.n_targets;
        let n_rows = features.len() / nf;
        debug_assert_eq!(out.len(), n_rows * nt);
        let mut start = 0;
        while start < n_rows {
            let end = (start + BLOCK).min(n_rows);
            // Rows start..lanes_end go LANES at a time down each tree; the rest, tree-wise.
            let lanes_end = if nf == width { start + (end - start) / LANES * LANES } else { start };
            // Whether each group of LANES rows holds a NaN (found once, not once per tree).
            let mut group_nan = [false; BLOCK / LANES];
            for (g, nan) in group_nan.iter_mut().enumerate().take((lanes_end - start) / LANES) {
                let first = start + g * LANES;
                *nan = any_nan(&features[first * nf..(first + LANES) * nf]);
            }
            // Rows in groups of LANES, tree by tree (no pass over the trees at all when every
            // row is left over: a request of fewer than LANES rows, the common case online).
            if lanes_end > start {
                for (t, &root) in self.roots.iter().enumerate() {
                    let mut r = start;
                    if self.lockstep[t] {
                        let (steps, step_root) = (self.depth[t], self.step_roots[t]);
                        while r < lanes_end {
                            let leaves = if group_nan[(r - start) / LANES] {
                                self.walk_lanes::<true>(step_root, steps, features, nf, r)
                            } else {
                                self.walk_lanes::<false>(step_root, steps, features, nf, r)
                            };
                            for (lane, &leaf) in leaves.iter().enumerate() {
                                self.add_leaf(
                                    self.steps.node[leaf] as usize,
                                    &mut out[(r + lane) * nt..(r + lane + 1) * nt],
                                );
                            }
                            r += LANES;
                        }
                    }
                    for r in r..lanes_end {
                        let leaf = self.leaf_index(root, &features[r * nf..(r + 1) * nf]);
                        self.add_leaf(leaf, &mut out[r * nt..(r + 1) * nt]);
                    }
                }
            }
            for r in lanes_end..end {
                self.accumulate_row(
                    &features[r * nf..(r + 1) * nf],
                    &mut out[r * nt..(r + 1) * nt],
                );
            }
            start = end;
        }
    }

    /// One row through every tree, [`LANES`] trees at a time where they are all compiled. Only
    /// [`Ensemble::accumulate`] calls it, which asserted `width >= n_features` (rows are `width`
    /// long).
    // Kept out of `accumulate`: inlined there, it cost the 8-row lane loop 7 % more
    // instructions (callgrind, 64-row requests).
    #[inline(never)]
    fn accumulate_row(&self, row: &[f32], o: &mut [f64]) {
        debug_assert!(row.len() >= self.n_features);
        let nan = any_nan(&row[..self.n_features]);
        // On the stack for models of up to 512 trees (most): no allocation per row.
        let mut stack = [0u32; 512];
        let mut heap = Vec::new();
        let leaves: &mut [u32] = if self.roots.len() <= stack.len() {
            &mut stack[..self.roots.len()]
        } else {
            heap.resize(self.roots.len(), 0);
            &mut heap
        };
        for (trees, steps) in &self.row_groups {
            let roots = trees.map(|t| self.step_roots[t as usize]);
            let found = if nan {
                self.walk_trees::<true>(&roots, *steps, row)
            } else {
                self.walk_trees::<false>(&roots, *steps, row)
            };
            for (&t, leaf) in trees.iter().zip(found) {
                leaves[t as usize] = self.steps.node[leaf];
            }
        }
        for &t in &self.row_singles {
            leaves[t as usize] = self.leaf_index(self.roots[t as usize], row) as u32;
        }
        // Summed in tree order, whatever order the trees were walked in: the same sum as
        // every other path.
        if self.leaf_value.is_empty() {
            for &leaf in leaves.iter() {
                self.add_leaf(leaf as usize, o);
            }
        } else {
            let mut sum = o[self.leaf_target];
            for &leaf in leaves.iter() {
                sum += self.leaf_value[leaf as usize];
            }
            o[self.leaf_target] = sum;
        }
    }

    #[inline(always)]
    fn add_leaf(&self, leaf: usize, o: &mut [f64]) {
        if let Some(w) = self.leaf_value.get(leaf) {
            o[self.leaf_target] += w;
            return;
        }
        let (first, count) = self.leaf_range[leaf];
        if count == 1 {
            let (target, w) = self.leaf_weights[first as usize];
            o[target as usize] += w;
        } else {
            for &(target, w) in &self.leaf_weights[first as usize..(first + count) as usize] {
                o[target as usize] += w;
            }
        }
    }

    /// Walks [`LANES`] rows from `first` down one tree together (from its root's place among
    /// the [`Steps`]), `steps` (the tree's depth) steps; answers their leaves' places. `NAN`:
    /// whether a row may hold NaN.
    ///
    /// The one place Plinth reads without bounds checks, because it is the hottest loop of the
    /// platform: [`Ensemble::compile`] places both children of every split inside `steps` and
    /// points every leaf at itself, [`Ensemble::check`] checked every feature index against
    /// `n_features`, and `accumulate` asserts `width >= n_features`.
    #[allow(unsafe_code)]
    #[inline(always)]
    fn walk_lanes<const NAN: bool>(
        &self,
        root: u32,
        steps: u32,
        features: &[f32],
        width: usize,
        first: usize,
    ) -> [usize; LANES] {
        let rows: [&[f32]; LANES] =
            std::array::from_fn(|k| &features[(first + k) * width..(first + k + 1) * width]);
        let mut place = [root as usize; LANES];
        for _ in 0..steps {
            for k in 0..LANES {
                // SAFETY: see above; `place[k]` is a root or a child placed by `compile`, its
                // feature is below `n_features <= width == rows[k].len()`.
                place[k] = unsafe { self.steps.next::<NAN>(place[k], rows[k]) };
            }
        }
        place
    }

    /// Walks one row down [`LANES`] trees together (from their roots' places among the
    /// [`Steps`]), `steps` (their greatest depth) steps; answers their leaves' places. The same
    /// reasoning as [`Ensemble::walk_lanes`] makes the unchecked reads sound (`accumulate`
    /// asserts `width >= n_features`, a row's length).
    #[allow(unsafe_code)]
    #[inline(always)]
    fn walk_trees<const NAN: bool>(
        &self,
        roots: &[u32; LANES],
        steps: u32,
        row: &[f32],
    ) -> [usize; LANES] {
        let mut place = roots.map(|r| r as usize);
        for _ in 0..steps {
            for p in &mut place {
                // SAFETY: see above.
                *p = unsafe { self.steps.next::<NAN>(*p, row) };
            }
        }
        place
    }

    /// Builds the evaluation form of every node. A numeric split of an f32 input `x` is exactly
    /// `x <= t32` (or its negation, with the branches swapped) for the right f32 `t32`:
    /// `x <= t` ⟺ `x <= largest f32 ≤ t`, `x < t` ⟺ `x <= largest f32 < t`, and `>=`, `>` are
    /// the negations of those. Where a NaN goes is decided here, once.
    fn compile(&mut self) {
        self.fast = self
            .nodes
            .iter()
            .map(|n| {
                let m = n.missing;
                // Where the reference walk sends NaN.
                let nan_yes = if m & missing::NAN_DEFAULT != 0 {
                    m & missing::DEFAULT_YES != 0
                } else if m & missing::NAN_AS_ZERO != 0 {
                    let zero_default = m & missing::ZERO_DEFAULT != 0;
                    if zero_default { m & missing::DEFAULT_YES != 0 } else { cmp_zero(n) }
                } else {
                    n.cmp == Cmp::Ne
                };
                let feature = n.feature & FEATURE;
                let (t, swap) = match n.cmp {
                    Cmp::Leaf => return Fast { t: f32::INFINITY, meta: LEAF, yes: 0, no: 0 },
                    Cmp::Le => (f32_at_most(n.threshold), false),
                    Cmp::Lt => (f32_below(n.threshold), false),
                    Cmp::Ge => (f32_below(n.threshold), true),
                    Cmp::Gt => (f32_at_most(n.threshold), true),
                    Cmp::Eq | Cmp::Ne | Cmp::CatIn => {
                        return Fast { t: 0.0, meta: SLOW | feature, yes: n.yes, no: n.no };
                    }
                };
                if m & missing::ZERO_DEFAULT != 0 {
                    return Fast { t: 0.0, meta: SLOW | feature, yes: n.yes, no: n.no };
                }
                let (yes, no, nan_to_first) =
                    if swap { (n.no, n.yes, !nan_yes) } else { (n.yes, n.no, nan_yes) };
                Fast { t, meta: feature | if nan_to_first { NAN_YES } else { 0 }, yes, no }
            })
            .collect();
        for (i, f) in self.fast.iter_mut().enumerate() {
            if f.meta & LEAF != 0 {
                f.yes = i as u32;
                f.no = i as u32;
            }
        }
        self.leaf_range = self
            .nodes
            .iter()
            .map(|n| if n.cmp == Cmp::Leaf { (n.yes, n.no) } else { (0, 0) })
            .collect();
        // The one weight of a leaf, if it has exactly one.
        let single =
            |n: &Node| (n.cmp == Cmp::Leaf && n.no == 1).then(|| self.leaf_weights[n.yes as usize]);
        let mut leaves = self.nodes.iter().filter(|n| n.cmp == Cmp::Leaf).map(single);
        let target = leaves.next().flatten().map(|(target, _)| target);
        let one_target = leaves.all(|w| w.is_some_and(|(t, _)| Some(t) == target));
        (self.leaf_value, self.leaf_target) = match target {
            Some(target) if one_target => {
                let weight = |n: &Node| single(n).map_or(0.0, |(_, w)| w);
                (self.nodes.iter().map(weight).collect(), target as usize)
            }
            _ => (Vec::new(), 0),
        };
        self.lay_out_steps();
        // Trees of similar depth together, deepest first: a group walks as many steps as its
        // deepest tree (on the harness's 100-tree model, 16 % fewer steps than in tree order),
        // and the few left over, the shallowest, walk alone.
        let mut order: Vec<u32> =
            (0..self.roots.len() as u32).filter(|&t| self.lockstep[t as usize]).collect();
        order.sort_by_key(|&t| std::cmp::Reverse(self.depth[t as usize]));
        let groups = order.chunks_exact(LANES);
        let rest = groups.remainder();
        self.row_singles = (0..self.roots.len() as u32)
            .filter(|&t| !self.lockstep[t as usize])
            .chain(rest.iter().copied())
            .collect();
        self.row_groups = groups
            .map(|g| {
                let trees: [u32; LANES] = g.try_into().expect("chunks of LANES");
                (trees, trees.iter().map(|&t| self.depth[t as usize]).max().unwrap_or(0))
            })
            .collect();
    }

    /// Lays out every tree of compiled splits as [`Steps`], breadth first from its root (the
    /// top levels, which every walk reads, together): a split's children take the next two free
    /// places. Such a tree walks in lockstep, and its depth is recorded. A tree with a general
    /// split is walked by [`Ensemble::leaf_index`] instead; so is a graph whose layout would
    /// take more places than the model has nodes (only nodes with two parents can), which also
    /// bounds the work done here.
    fn lay_out_steps(&mut self) {
        let n = self.roots.len();
        self.steps = Steps::default();
        (self.step_roots, self.lockstep, self.depth) = (vec![0; n], vec![false; n], vec![0; n]);
        let mut queue = std::collections::VecDeque::new();
        for (t, &root) in self.roots.iter().enumerate() {
            let start = self.steps.len();
            self.steps.grow(1);
            queue.clear();
            queue.push_back((root as usize, start, 0u32));
            let (mut depth, mut laid_out) = (0, true);
            while let Some((i, place, d)) = queue.pop_front() {
                let f = self.fast[i];
                if f.meta & SLOW != 0 || self.steps.len() - start > self.nodes.len() {
                    laid_out = false;
                    break;
                }
                if f.meta & LEAF != 0 {
                    depth = depth.max(d);
                    self.steps.set_leaf(place, i as u32);
                } else {
                    let left = self.steps.len();
                    self.steps.grow(2);
                    queue.push_back((f.yes as usize, left, d + 1));
                    queue.push_back((f.no as usize, left + 1, d + 1));
                    let nan_left = f.meta & NAN_YES != 0;
                    self.steps.set(place, f.t, f.meta & FEATURE, left as u32, nan_left, i as u32);
                }
            }
            if laid_out {
                (self.step_roots[t], self.lockstep[t], self.depth[t]) = (start as u32, true, depth);
            } else {
                self.steps.truncate(start);
            }
        }
    }

    /// Checks every index the evaluator will follow, so evaluation cannot go out of bounds, and
    /// compiles the nodes for evaluation.
    pub fn check(&mut self) -> Result<(), String> {
        self.check_indices()?;
        self.compile();
        Ok(())
    }

    fn check_indices(&self) -> Result<(), String> {
        let n = self.nodes.len() as u64;
        for (i, node) in self.nodes.iter().enumerate() {
            match node.cmp {
                Cmp::Leaf => {
                    if u64::from(node.yes) + u64::from(node.no) > self.leaf_weights.len() as u64 {
                        return Err(format!("leaf {i} points past the leaf-weight table"));
                    }
                }
                cmp => {
                    if node.feature > FEATURE {
                        return Err(format!(
                            "node {i} reads feature {}, beyond what Plinth evaluates",
                            node.feature
                        ));
                    }
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
        let mut e = raw_stump(cmp, missing);
        e.check().unwrap();
        e
    }

    fn raw_stump(cmp: Cmp, missing: u8) -> Ensemble {
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
            ..Ensemble::default()
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
        let mut e = raw_stump(Cmp::CatIn, 0);
        e.nodes[0].threshold = 0.0;
        e.check().unwrap();
        assert_eq!(eval(&e, 1.0), 10.0);
        assert_eq!(eval(&e, 3.0), 10.0);
        assert_eq!(eval(&e, 2.0), 20.0);
        assert_eq!(eval(&e, 40.0), 20.0, "beyond the bitset");
        assert_eq!(eval(&e, -1.0), 20.0);
    }

    #[test]
    fn check_refuses_dangling_indices() {
        let mut e = raw_stump(Cmp::Le, 0);
        e.nodes[0].no = 9;
        assert!(e.check().is_err());
        let mut e = raw_stump(Cmp::Le, 0);
        e.nodes[0].feature = 3;
        assert!(e.check().is_err());
    }

    /// The compiled walk reaches the same leaf as the reference walk, for every operator and
    /// missing-value rule, on thresholds that are and are not f32 values, and on inputs at,
    /// just around, and far from them, NaN and infinities included.
    #[test]
    fn compiled_splits_decide_like_the_reference() {
        use missing::*;
        let thresholds = [
            1.0,
            0.1,
            -0.1,
            0.0,
            1e-40,
            3.4e38,
            1e300,
            -1e300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            2.5000000000000004,
        ];
        let flags = [
            0,
            NAN_DEFAULT,
            NAN_DEFAULT | DEFAULT_YES,
            NAN_AS_ZERO,
            NAN_AS_ZERO | ZERO_DEFAULT | DEFAULT_YES,
        ];
        for cmp in [Cmp::Le, Cmp::Lt, Cmp::Ge, Cmp::Gt, Cmp::Eq, Cmp::Ne] {
            for &t in &thresholds {
                for &m in &flags {
                    let mut e = raw_stump(cmp, m);
                    e.nodes[0].threshold = t;
                    e.check().unwrap();
                    let t32 = t as f32;
                    let xs = [
                        t32,
                        t32.next_up(),
                        t32.next_down(),
                        0.0,
                        -0.0,
                        1e-38,
                        f32::NAN,
                        f32::INFINITY,
                        f32::NEG_INFINITY,
                        7.0,
                        -7.0,
                    ];
                    for x in xs {
                        let reference = e.leaf_of(0, &[x]).yes;
                        let compiled = e.leaf_range[e.leaf_index(0, &[x])].0;
                        assert_eq!(compiled, reference, "{cmp:?} t={t} flags={m} x={x}");
                    }
                }
            }
        }
    }

    /// A forest of `n_trees` full trees of `depth`, `depth - 1` and `depth - 2` levels in turn
    /// (trees walked in lockstep differ in depth) over 5 features, thresholds and features from
    /// a fixed pseudo-random sequence; trees 3, 19, 35... have an equality split (not compiled,
    /// so its group of trees cannot go in lockstep).
    fn forest(n_trees: usize, depth: u32, n_targets: u32) -> Ensemble {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut e =
            Ensemble { n_features: 5, n_targets: n_targets as usize, ..Ensemble::default() };
        for t in 0..n_trees {
            let root = e.nodes.len() as u32;
            e.roots.push(root);
            let internal = (1u32 << (depth - t as u32 % depth.min(3))) - 1;
            for i in 0..(2 * internal + 1) {
                if i < internal {
                    let slow = t % 16 == 3 && i == 0;
                    e.nodes.push(Node {
                        threshold: (next() % 2000) as f64 / 1000.0 - 1.0,
                        feature: (next() % 5) as u32,
                        yes: root + 2 * i + 1,
                        no: root + 2 * i + 2,
                        cmp: if slow { Cmp::Eq } else { Cmp::Le },
                        missing: if next() % 2 == 0 {
                            missing::NAN_DEFAULT | missing::DEFAULT_YES
                        } else {
                            0
                        },
                    });
                } else {
                    let first = e.leaf_weights.len() as u32;
                    for target in 0..n_targets {
                        e.leaf_weights.push((target, (next() % 1_000_000) as f64 / 7_777.0 - 64.0));
                    }
                    e.nodes.push(Node::leaf(first, n_targets));
                }
            }
        }
        e.check().unwrap();
        e
    }

    #[test]
    fn nodes_with_two_parents_are_laid_out_within_bounds() {
        // Beside a stump: a node whose branches both lead to one leaf (laid out twice, which
        // answers the same), and a chain of six nodes whose branches both lead to the next,
        // 64 paths: more places than the model has nodes, so it is walked without the layout.
        let mut e = raw_stump(Cmp::Le, 0);
        e.nodes.push(Node { threshold: 0.5, feature: 0, yes: 1, no: 1, cmp: Cmp::Le, missing: 0 });
        e.roots.push(3);
        let chain = e.nodes.len() as u32;
        for k in 0..6 {
            let next = if k == 5 { 1 } else { chain + k + 1 };
            e.nodes.push(Node {
                threshold: 0.5,
                feature: 0,
                yes: next,
                no: next,
                cmp: Cmp::Le,
                missing: 0,
            });
        }
        e.roots.push(chain);
        e.check().unwrap();
        assert_eq!(e.lockstep, [true, true, false]);
        for (x, want) in [(0.0, 30.0), (2.0, 40.0)] {
            let mut out = [0.0];
            e.accumulate(&[x], 1, &mut out);
            assert_eq!(out[0], want, "x = {x}");
        }
    }

    #[test]
    fn any_batch_size_sums_every_row_like_the_reference_walk() {
        // (trees, targets, whether every weight goes to the last target instead, as a binary
        // classifier's go to one of its two classes)
        for (n_trees, n_targets, one_class) in [
            (1, 1, false),
            (7, 1, false),
            (8, 1, false),
            (21, 1, false),
            (100, 1, false),
            (24, 3, false),
            (24, 2, true),
        ] {
            let e = if one_class {
                let mut e = forest(n_trees, 4, 1);
                e.n_targets = n_targets as usize;
                e.leaf_weights.iter_mut().for_each(|(t, _)| *t = n_targets - 1);
                e.check().unwrap();
                assert!(!e.leaf_value.is_empty(), "one weight per leaf, all to one target");
                e
            } else {
                forest(n_trees, 4, n_targets)
            };
            assert_eq!(e.leaf_value.is_empty(), n_targets == 3);
            let mut seed = 7u64;
            // Rows 3, 14, 25... hold a NaN: some groups of 8 rows have one, others none.
            let rows: Vec<f32> = (0..150 * 5)
                .map(|i| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let nan = (i / 5) % 11 == 3 && i % 5 == (i / 55) % 5;
                    if nan { f32::NAN } else { ((seed >> 40) % 3000) as f32 / 1000.0 - 1.5 }
                })
                .collect();
            // The reference: each row alone, tree after tree, through the general walk.
            let nt = n_targets as usize;
            let mut reference = vec![0.0; 150 * nt];
            for (r, row) in rows.chunks(5).enumerate() {
                for &root in &e.roots {
                    let leaf = e.leaf_of(root, row);
                    for &(target, w) in
                        &e.leaf_weights[leaf.yes as usize..(leaf.yes + leaf.no) as usize]
                    {
                        reference[r * nt + target as usize] += w;
                    }
                }
            }
            for n in [1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65, 150] {
                let mut out = vec![0.0; n * nt];
                e.accumulate(&rows[..n * 5], 5, &mut out);
                assert_eq!(out, reference[..n * nt], "{n_trees} trees, {n} rows");
            }
        }
    }
}
