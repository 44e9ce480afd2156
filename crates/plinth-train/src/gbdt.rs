//! Gradient boosting on the binned matrix, as LightGBM does it: leaf-wise growth (always split
//! the leaf with the largest gain, up to `num_leaves`, within `max_depth`), histograms of
//! gradient and hessian sums per bin, the larger child's histogram obtained by subtraction
//! (parent − smaller child), L1/L2-regularized leaf outputs, learned directions for missing
//! values, gradient-sorted categorical splits, row and feature subsampling from seeds, and early
//! stopping on the validation split.

use std::ops::ControlFlow;

use rayon::prelude::*;

use crate::data::{Binned, Dataset, Mapper};
use crate::params::{Objective, Params};
use crate::rng::Rng;

/// One histogram cell: gradient and hessian sums over the rows in a bin. Row counts are not
/// summed (a third less work per row): as in LightGBM, a bin's count is read off its hessian
/// (`h × rows / hessian` of the leaf; exact when every hessian is 1, as in regression).
#[derive(Debug, Clone, Copy, Default)]
struct HCell {
    g: f64,
    h: f64,
}

/// Sums over some rows, with their count.
#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    g: f64,
    h: f64,
    n: u32,
}

impl Cell {
    fn add(&mut self, o: &Cell) {
        self.g += o.g;
        self.h += o.h;
        self.n += o.n;
    }
    fn sub(&self, o: &Cell) -> Cell {
        Cell { g: self.g - o.g, h: self.h - o.h, n: self.n.saturating_sub(o.n) }
    }
}

/// A trained tree in LightGBM's layout: internal nodes `0..num_leaves-1`, children `>= 0` are
/// nodes and negative ones (`!leaf`) are leaves.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    pub num_leaves: usize,
    pub split_feature: Vec<u32>,
    pub split_gain: Vec<f64>,
    pub threshold: Vec<f64>,
    pub decision_type: Vec<u8>,
    pub left_child: Vec<i32>,
    pub right_child: Vec<i32>,
    pub leaf_value: Vec<f64>,
    pub leaf_weight: Vec<f64>,
    pub leaf_count: Vec<u32>,
    pub internal_value: Vec<f64>,
    pub internal_weight: Vec<f64>,
    pub internal_count: Vec<u32>,
    pub cat_boundaries: Vec<u32>,
    pub cat_threshold: Vec<u32>,
    pub shrinkage: f64,
    /// Per internal node, the bins that go left (for predicting on binned rows).
    left_bins: Vec<[u64; 4]>,
    leaf_parent: Vec<i32>,
    leaf_depth: Vec<u32>,
}

fn has_bin(set: &[u64; 4], b: u8) -> bool {
    set[(b >> 6) as usize] >> (b & 63) & 1 == 1
}

impl Tree {
    fn leaf_of(&self, data: &Binned, r: usize) -> usize {
        if self.num_leaves <= 1 {
            return 0;
        }
        let mut node = 0i32;
        while node >= 0 {
            let n = node as usize;
            let b = data.bin(r, self.split_feature[n] as usize);
            node = if has_bin(&self.left_bins[n], b) {
                self.left_child[n]
            } else {
                self.right_child[n]
            };
        }
        !node as usize
    }

    fn add_bias(&mut self, bias: f64) {
        for v in self.leaf_value.iter_mut().chain(self.internal_value.iter_mut()) {
            *v += bias;
        }
    }
}

/// One iteration's progress.
#[derive(Debug, Clone)]
pub struct Progress {
    pub iteration: usize,
    pub of: usize,
    pub metric: &'static str,
    pub train: Option<f64>,
    pub valid: Option<f64>,
}

/// The result of boosting.
#[derive(Debug, Clone)]
pub struct Booster {
    pub objective: Objective,
    pub params: Params,
    /// Trees per iteration (classes for multiclass, else 1).
    pub per_iteration: usize,
    pub trees: Vec<Tree>,
    /// The best iteration on the validation split (1-based), when early stopping ran.
    pub best_iteration: Option<usize>,
    pub metric: &'static str,
    pub history: Vec<Progress>,
}

/// Why training stopped early, when it did.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    Cancelled,
}

struct Split {
    gain: f64,
    feature: usize,
    /// Bins that go left.
    left: [u64; 4],
    /// Numeric: the threshold bin; categorical: unused.
    threshold_bin: u8,
    default_left: bool,
    categorical: bool,
    left_sum: Cell,
    right_sum: Cell,
    left_out: f64,
    right_out: f64,
}

fn threshold_l1(s: f64, l1: f64) -> f64 {
    s.signum() * (s.abs() - l1).max(0.0)
}

#[derive(Clone, Copy)]
struct Reg {
    l1: f64,
    l2: f64,
    max_delta: f64,
}

impl Reg {
    fn output(&self, g: f64, h: f64) -> f64 {
        let r = -threshold_l1(g, self.l1) / (h + self.l2);
        if self.max_delta > 0.0 && r.abs() > self.max_delta {
            r.signum() * self.max_delta
        } else {
            r
        }
    }
    fn gain(&self, g: f64, h: f64) -> f64 {
        if self.max_delta <= 0.0 {
            let t = threshold_l1(g, self.l1);
            t * t / (h + self.l2)
        } else {
            let o = self.output(g, h);
            -(2.0 * threshold_l1(g, self.l1) * o + (h + self.l2) * o * o)
        }
    }
}

/// Every feature's histogram has 256 cells (a bin is a byte), so a row's bin indexes its
/// feature's cells with no bounds check; `ends[f]` is where the feature's own bins end.
const STRIDE: usize = 256;

struct Grower<'a> {
    p: &'a Params,
    data: &'a Binned,
    mappers: &'a [Mapper],
    ends: Vec<usize>,
    total_bins: usize,
    threads: usize,
    /// The run's own threads (`num_threads`), whatever else the process runs.
    pool: rayon::ThreadPool,
}

/// Per-row buffers a tree grows in, allocated once per training: the rows by leaf, the
/// partition's scratch, a leaf's gradients gathered.
struct Buffers {
    indices: Vec<u32>,
    scratch: Vec<u32>,
    gathered: Vec<[f32; 2]>,
}

/// Splits `rows` into `out`: those going left from the front (answers how many), the others
/// from the back.
#[inline(never)]
fn split_rows(rows: &[u32], out: &mut [u32], goes_left: &(impl Fn(u32) -> bool + Sync)) -> usize {
    // Branch-free (half the rows go each way, a branch would be mispredicted half the time):
    // each row is written at both ends and only the side it belongs to moves on. A slot
    // written for the other side is written again later, or last by this same row.
    let (mut l, mut r) = (0, out.len());
    for &x in rows {
        let left = goes_left(x);
        out[l] = x;
        out[r - 1] = x;
        l += left as usize;
        r -= !left as usize;
    }
    l
}

/// Runs `work(range)` over `0..n` cut into about `threads` chunks, on the training pool.
fn par_ranges<T: Send>(
    n: usize,
    threads: usize,
    work: impl Fn(std::ops::Range<usize>) -> T + Sync,
) -> Vec<T> {
    let t = threads.min(n.div_ceil(4096)).max(1);
    let chunk = n.div_ceil(t).max(1);
    (0..t).into_par_iter().map(|i| work(i * chunk..((i + 1) * chunk).min(n))).collect()
}

impl<'a> Grower<'a> {
    fn new(p: &'a Params, data: &'a Binned, mappers: &'a [Mapper]) -> Grower<'a> {
        let ends = mappers.iter().enumerate().map(|(f, m)| f * STRIDE + m.num_bins()).collect();
        Grower {
            p,
            data,
            mappers,
            ends,
            total_bins: mappers.len() * STRIDE,
            threads: p.threads(),
            pool: rayon::ThreadPoolBuilder::new()
                .num_threads(p.threads())
                .thread_name(|i| format!("plinth-train-{i}"))
                .build()
                .expect("a thread pool for training"),
        }
    }

    /// Feature `f`'s cells in a histogram.
    fn cells<'h>(&self, hist: &'h [HCell], f: usize) -> &'h [HCell] {
        &hist[f * STRIDE..self.ends[f]]
    }

    /// The histogram of the rows `idx` (all rows in order when `idx` is `None`): one feature
    /// at a time (threads take features), each over the leaf's rows with their gradients
    /// gathered once, interleaved, in the rows' order.
    /// `gh` is scratch space for the gathered gradients (at least as long as `idx`).
    fn histogram(
        &self,
        idx: Option<&[u32]>,
        g: &[f32],
        h: &[f32],
        used: &[usize],
        gh: &mut [[f32; 2]],
    ) -> Vec<HCell> {
        self.pool.install(|| self.histogram_in_pool(idx, g, h, used, gh))
    }

    fn histogram_in_pool(
        &self,
        idx: Option<&[u32]>,
        g: &[f32],
        h: &[f32],
        used: &[usize],
        gh: &mut [[f32; 2]],
    ) -> Vec<HCell> {
        let mut hist = vec![HCell::default(); self.total_bins];
        if let Some(idx) = idx {
            gh[..idx.len()].par_chunks_mut(1 << 14).zip(idx.par_chunks(1 << 14)).for_each(
                |(o, i)| {
                    for (o, &r) in o.iter_mut().zip(i) {
                        *o = [g[r as usize], h[r as usize]];
                    }
                },
            );
        }
        let gathered: Option<&[[f32; 2]]> = idx.map(|idx| &gh[..idx.len()]);
        let one = |f: usize, cells: &mut [HCell; STRIDE]| {
            let col = self.data.column(f);
            // Four copies of the cells, rows taking turns: neighbouring rows often share a bin,
            // and one copy would make each update wait for the previous one's store.
            let mut four = [[HCell::default(); STRIDE]; 4];
            let mut add = |k: usize, b: u8, gh: [f32; 2]| {
                let c = &mut four[k][b as usize];
                c.g += gh[0] as f64;
                c.h += gh[1] as f64;
            };
            match (idx, &gathered) {
                (Some(idx), Some(gh)) => {
                    let (ic, ir) = idx.as_chunks::<4>();
                    let (gc, gr) = gh.as_chunks::<4>();
                    for (i4, g4) in ic.iter().zip(gc) {
                        for k in 0..4 {
                            add(k, col[i4[k] as usize], g4[k]);
                        }
                    }
                    for (&r, &g1) in ir.iter().zip(gr) {
                        add(0, col[r as usize], g1);
                    }
                }
                _ => {
                    let (bc, br) = col.as_chunks::<4>();
                    let (gc, gr) = g[..col.len()].as_chunks::<4>();
                    let (hc, hr) = h[..col.len()].as_chunks::<4>();
                    for ((b4, g4), h4) in bc.iter().zip(gc).zip(hc) {
                        for k in 0..4 {
                            add(k, b4[k], [g4[k], h4[k]]);
                        }
                    }
                    for ((&b, &g1), &h1) in br.iter().zip(gr).zip(hr) {
                        add(0, b, [g1, h1]);
                    }
                }
            }
            for (b, c) in cells.iter_mut().enumerate() {
                c.g = four[0][b].g + four[1][b].g + four[2][b].g + four[3][b].g;
                c.h = four[0][b].h + four[1][b].h + four[2][b].h + four[3][b].h;
            }
        };
        let (cells, _) = hist.as_chunks_mut::<STRIDE>();
        let n = idx.map_or(self.data.rows, <[u32]>::len);
        if n < 1 << 11 {
            for &f in used {
                one(f, &mut cells[f]);
            }
        } else {
            cells
                .par_iter_mut()
                .enumerate()
                .filter(|(f, _)| used.binary_search(f).is_ok())
                .for_each(|(f, c)| one(f, c));
        }
        hist
    }

    fn best_split(&self, hist: &[HCell], sum: Cell, used: &[usize]) -> Option<Split> {
        let p = self.p;
        let reg = Reg { l1: p.lambda_l1, l2: p.lambda_l2, max_delta: p.max_delta_step };
        let factor = if sum.h > 0.0 { sum.n as f64 / sum.h } else { 0.0 };
        let of = |f: usize| {
            let own = self.cells(hist, f);
            let mut cells = [Cell::default(); STRIDE];
            for (c, h) in cells.iter_mut().zip(own) {
                *c = Cell { g: h.g, h: h.h, n: (h.h * factor).round() as u32 };
            }
            let cells = &cells[..own.len()];
            match &self.mappers[f] {
                Mapper::Numeric { nan_bin, .. } => {
                    self.numeric(f, cells, sum, nan_bin.is_some(), reg)
                }
                Mapper::Categorical { .. } => self.categorical(f, cells, sum),
            }
        };
        // The largest gain; between equal gains, the lower feature (as a scan in order would).
        let better = |a: Split, b: Split| {
            if b.gain > a.gain || (b.gain == a.gain && b.feature < a.feature) { b } else { a }
        };
        self.pool.install(|| used.par_iter().filter_map(|&f| of(f)).reduce_with(better))
    }

    fn allowed(&self, c: &Cell) -> bool {
        c.n as usize >= self.p.min_data_in_leaf && c.h >= self.p.min_sum_hessian_in_leaf
    }

    fn numeric(
        &self,
        f: usize,
        cells: &[Cell],
        sum: Cell,
        has_nan: bool,
        reg: Reg,
    ) -> Option<Split> {
        let numeric = cells.len() - has_nan as usize;
        if numeric < 2 {
            return None;
        }
        let min_shift = reg.gain(sum.g, sum.h) + self.p.min_gain_to_split;
        let mut best: Option<Split> = None;
        let nan = if has_nan { cells[numeric] } else { Cell::default() };
        let directions: &[bool] = if has_nan && nan.n > 0 { &[false, true] } else { &[false] };
        for &default_left in directions {
            let mut left = if default_left { nan } else { Cell::default() };
            for (t, c) in cells[..numeric - 1].iter().enumerate() {
                left.add(c);
                if c.n == 0 && t > 0 {
                    // The same split as the previous threshold.
                    continue;
                }
                if !self.allowed(&left) {
                    continue;
                }
                let right = sum.sub(&left);
                if !self.allowed(&right) {
                    break;
                }
                let gain = reg.gain(left.g, left.h) + reg.gain(right.g, right.h);
                if gain <= min_shift || best.as_ref().is_some_and(|b| gain - min_shift <= b.gain) {
                    continue;
                }
                best = Some(Split {
                    gain: gain - min_shift,
                    feature: f,
                    left: [0; 4],
                    threshold_bin: t as u8,
                    default_left,
                    categorical: false,
                    left_sum: left,
                    right_sum: right,
                    left_out: reg.output(left.g, left.h),
                    right_out: reg.output(right.g, right.h),
                });
            }
        }
        // The bins that go left, for the best threshold only.
        if let Some(b) = best.as_mut() {
            for bin in 0..=b.threshold_bin as usize {
                b.left[bin >> 6] |= 1 << (bin & 63);
            }
            if b.default_left {
                b.left[numeric >> 6] |= 1 << (numeric & 63);
            }
        }
        best
    }

    fn categorical(&self, f: usize, cells: &[Cell], sum: Cell) -> Option<Split> {
        let p = self.p;
        let used: Vec<usize> = (1..cells.len()).filter(|&b| cells[b].n > 0).collect();
        if used.is_empty() {
            return None;
        }
        // As LightGBM: one-vs-rest when the feature has few bins; otherwise the children (not
        // the parent) carry the extra `cat_l2`, which makes a many-category split earn its keep.
        let one_hot = cells.len() <= p.max_cat_to_onehot;
        let plain = Reg { l1: p.lambda_l1, l2: p.lambda_l2, max_delta: p.max_delta_step };
        let reg = Reg { l2: if one_hot { p.lambda_l2 } else { p.lambda_l2 + p.cat_l2 }, ..plain };
        let min_shift = plain.gain(sum.g, sum.h) + p.min_gain_to_split;
        let mut best: Option<(f64, Vec<usize>, Cell)> = None;
        let mut consider = |gain: f64, set: &[usize], left: Cell| {
            if gain > min_shift && best.as_ref().is_none_or(|b| gain > b.0) {
                best = Some((gain, set.to_vec(), left));
            }
        };
        if one_hot {
            for &b in &used {
                let left = cells[b];
                let right = sum.sub(&left);
                if !self.allowed(&left) || !self.allowed(&right) {
                    continue;
                }
                consider(reg.gain(left.g, left.h) + reg.gain(right.g, right.h), &[b], left);
            }
        } else {
            let mut sorted: Vec<usize> =
                used.into_iter().filter(|&b| cells[b].n as f64 >= p.cat_smooth).collect();
            let ctr = |b: usize| cells[b].g / (cells[b].h + p.cat_smooth);
            sorted.sort_by(|&a, &b| ctr(a).total_cmp(&ctr(b)).then(a.cmp(&b)));
            let max_cats = p.max_cat_threshold.min(sorted.len().div_ceil(2)).max(1);
            for reverse in [false, true] {
                let order: Vec<usize> =
                    if reverse { sorted.iter().rev().copied().collect() } else { sorted.clone() };
                let mut left = Cell::default();
                let mut group = 0u32;
                for i in 0..order.len().min(max_cats) {
                    let c = cells[order[i]];
                    left.add(&c);
                    group += c.n;
                    if !self.allowed(&left) {
                        continue;
                    }
                    let right = sum.sub(&left);
                    if !self.allowed(&right) || (right.n as usize) < p.min_data_per_group {
                        break;
                    }
                    if (group as usize) < p.min_data_per_group {
                        continue;
                    }
                    group = 0;
                    consider(
                        reg.gain(left.g, left.h) + reg.gain(right.g, right.h),
                        &order[..=i],
                        left,
                    );
                }
            }
        }
        let (gain, bins, left) = best?;
        let right = sum.sub(&left);
        let mut set = [0u64; 4];
        for &b in &bins {
            set[b >> 6] |= 1 << (b & 63);
        }
        Some(Split {
            gain: gain - min_shift,
            feature: f,
            left: set,
            threshold_bin: 0,
            default_left: false,
            categorical: true,
            left_sum: left,
            right_sum: right,
            left_out: reg.output(left.g, left.h),
            right_out: reg.output(right.g, right.h),
        })
    }

    /// Grows one tree on the rows `bag` (every row when `None`) and returns it with the row
    /// indices of each leaf (`indices[begin[l]..begin[l] + count[l]]`).
    fn grow(
        &self,
        g: &[f32],
        h: &[f32],
        bag: Option<&[u32]>,
        used: &[usize],
        buffers: &mut Buffers,
    ) -> (Tree, Vec<usize>, Vec<usize>) {
        let Buffers { indices, scratch, gathered: gh } = buffers;
        let p = self.p;
        let max_leaves = p.num_leaves;
        indices.clear();
        match bag {
            Some(b) => indices.extend_from_slice(b),
            None => indices.extend(0..self.data.rows as u32),
        }
        let mut begin = vec![0usize; max_leaves];
        let mut count = vec![0usize; max_leaves];
        count[0] = indices.len();
        let root_hist = self.histogram(bag, g, h, used, gh);
        let mut sum = Cell { n: indices.len() as u32, ..Cell::default() };
        // Every row counts once in each feature: one feature's cells sum to the leaf.
        if let Some(&f) = used.first() {
            for c in self.cells(&root_hist, f) {
                sum.g += c.g;
                sum.h += c.h;
            }
        }
        let reg = Reg { l1: p.lambda_l1, l2: p.lambda_l2, max_delta: p.max_delta_step };
        let mut tree = Tree {
            num_leaves: 1,
            leaf_value: vec![reg.output(sum.g, sum.h)],
            leaf_weight: vec![sum.h],
            leaf_count: vec![sum.n],
            leaf_parent: vec![-1],
            leaf_depth: vec![0],
            shrinkage: 1.0,
            ..Tree::default()
        };
        let mut hists: Vec<Option<Vec<HCell>>> = vec![None; max_leaves];
        let mut sums = vec![Cell::default(); max_leaves];
        let mut splits: Vec<Option<Split>> = (0..max_leaves).map(|_| None).collect();
        sums[0] = sum;
        splits[0] = self.best_split(&root_hist, sum, used);
        hists[0] = Some(root_hist);
        let depth_ok = |d: u32| p.max_depth <= 0 || (d as i64) < p.max_depth;
        if !depth_ok(0) {
            splits[0] = None;
        }
        while tree.num_leaves < max_leaves {
            let Some(leaf) = (0..tree.num_leaves)
                .filter(|&l| splits[l].as_ref().is_some_and(|s| s.gain > 0.0))
                .max_by(|&a, &b| {
                    let (ga, gb) =
                        (splits[a].as_ref().unwrap().gain, splits[b].as_ref().unwrap().gain);
                    ga.total_cmp(&gb).then(b.cmp(&a))
                })
            else {
                break;
            };
            let s = splits[leaf].take().expect("chosen leaf has a split");
            let new = tree.num_leaves;
            // Partition the leaf's rows: left keeps the place, right follows.
            let (b0, n0) = (begin[leaf], count[leaf]);
            let column = self.data.column(s.feature);
            let goes_left = |r: u32| has_bin(&s.left, column[r as usize]);
            // Each thread splits its share of the rows into the scratch buffer (lefts from the
            // front, rights from the back), then lefts and rights are copied back in order:
            // a leaf's rows stay ascending, so reading their bins streams through memory.
            let t = if n0 >= 1 << 15 { self.threads } else { 1 };
            let chunk = n0.div_ceil(t.max(1)).max(1);
            let lefts: Vec<usize> = if t > 1 {
                let (rows, out) = (&indices[b0..b0 + n0], &mut scratch[b0..b0 + n0]);
                self.pool.install(|| {
                    rows.par_chunks(chunk)
                        .zip(out.par_chunks_mut(chunk))
                        .map(|(rows, out)| split_rows(rows, out, &goes_left))
                        .collect()
                })
            } else {
                vec![split_rows(&indices[b0..b0 + n0], &mut scratch[b0..b0 + n0], &goes_left)]
            };
            let mut w = b0;
            for (i, &l) in lefts.iter().enumerate() {
                let start = b0 + i * chunk;
                indices[w..w + l].copy_from_slice(&scratch[start..start + l]);
                w += l;
            }
            let nl = w - b0;
            for (i, &l) in lefts.iter().enumerate() {
                let start = b0 + i * chunk;
                let end = (start + chunk).min(b0 + n0);
                for &x in scratch[start + l..end].iter().rev() {
                    indices[w] = x;
                    w += 1;
                }
            }
            begin[leaf] = b0;
            count[leaf] = nl;
            begin[new] = b0 + nl;
            count[new] = n0 - nl;
            // Record the split in LightGBM's layout.
            let node = (new - 1) as i32;
            let parent = tree.leaf_parent[leaf];
            if parent >= 0 {
                let pn = parent as usize;
                if tree.left_child[pn] == !(leaf as i32) {
                    tree.left_child[pn] = node;
                } else {
                    tree.right_child[pn] = node;
                }
            }
            let mapper = &self.mappers[s.feature];
            let (threshold, decision_type) = if s.categorical {
                let Mapper::Categorical { cats, .. } = mapper else { unreachable!() };
                let index = tree.cat_boundaries.len().saturating_sub(1);
                if tree.cat_boundaries.is_empty() {
                    tree.cat_boundaries.push(0);
                }
                let values: Vec<u32> = (1..=cats.len())
                    .filter(|&b| has_bin(&s.left, b as u8))
                    .map(|b| cats[b - 1] as u32)
                    .collect();
                let words = values.iter().max().map_or(1, |m| (*m as usize) / 32 + 1);
                let mut bits = vec![0u32; words];
                for v in values {
                    bits[(v / 32) as usize] |= 1 << (v % 32);
                }
                tree.cat_threshold.extend_from_slice(&bits);
                tree.cat_boundaries.push(tree.cat_threshold.len() as u32);
                // Categorical, missing type NaN: a missing value goes right.
                (index as f64, 1 | (2 << 2))
            } else {
                let Mapper::Numeric { upper, nan_bin, .. } = mapper else { unreachable!() };
                let missing: u8 = if nan_bin.is_some() { 2 } else { 0 };
                (upper[s.threshold_bin as usize], (missing << 2) | ((s.default_left as u8) << 1))
            };
            tree.split_feature.push(s.feature as u32);
            tree.split_gain.push(s.gain);
            tree.threshold.push(threshold);
            tree.decision_type.push(decision_type);
            tree.left_child.push(!(leaf as i32));
            tree.right_child.push(!(new as i32));
            tree.internal_value.push(tree.leaf_value[leaf]);
            tree.internal_weight.push(sums[leaf].h);
            tree.internal_count.push(sums[leaf].n);
            tree.left_bins.push(s.left);
            let depth = tree.leaf_depth[leaf] + 1;
            // Counts from the partition, exact (the split's were read off hessians).
            let (left_sum, right_sum) =
                (Cell { n: nl as u32, ..s.left_sum }, Cell { n: (n0 - nl) as u32, ..s.right_sum });
            tree.leaf_value[leaf] = s.left_out;
            tree.leaf_weight[leaf] = s.left_sum.h;
            tree.leaf_count[leaf] = left_sum.n;
            tree.leaf_parent[leaf] = node;
            tree.leaf_depth[leaf] = depth;
            tree.leaf_value.push(s.right_out);
            tree.leaf_weight.push(s.right_sum.h);
            tree.leaf_count.push(right_sum.n);
            tree.leaf_parent.push(node);
            tree.leaf_depth.push(depth);
            tree.num_leaves += 1;
            sums[leaf] = left_sum;
            sums[new] = right_sum;
            if tree.num_leaves >= max_leaves || !depth_ok(depth) {
                hists[leaf] = None;
                continue;
            }
            // The smaller child's histogram is built; the larger one's is the parent's minus it.
            let parent_hist = hists[leaf].take().expect("a splittable leaf keeps its histogram");
            let (small, large) = if nl <= n0 - nl { (leaf, new) } else { (new, leaf) };
            let small_hist = self.histogram(
                Some(&indices[begin[small]..begin[small] + count[small]]),
                g,
                h,
                used,
                gh,
            );
            let mut large_hist = parent_hist;
            for (a, b) in large_hist.iter_mut().zip(&small_hist) {
                a.g -= b.g;
                a.h -= b.h;
            }
            splits[small] = self.best_split(&small_hist, sums[small], used);
            splits[large] = self.best_split(&large_hist, sums[large], used);
            hists[small] = Some(small_hist);
            hists[large] = Some(large_hist);
        }
        (tree, begin, count)
    }
}

/// The objective's gradients, initial score and metric.
struct Loss {
    objective: Objective,
    k: usize,
    alpha: f64,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl Loss {
    fn metric(&self) -> &'static str {
        match self.objective {
            Objective::Binary => "binary_logloss",
            Objective::Multiclass => "multi_logloss",
            Objective::Regression => "l2",
            Objective::Huber => "huber",
        }
    }

    fn init_scores(&self, label: &[f32]) -> Vec<f64> {
        let n = label.len().max(1) as f64;
        match self.objective {
            Objective::Binary => {
                let p =
                    (label.iter().map(|&y| y as f64).sum::<f64>() / n).clamp(1e-15, 1.0 - 1e-15);
                vec![(p / (1.0 - p)).ln()]
            }
            Objective::Multiclass => {
                let mut c = vec![0.0; self.k];
                for &y in label {
                    c[y as usize] += 1.0;
                }
                c.iter().map(|&x| (x / n).max(1e-15).ln()).collect()
            }
            Objective::Regression | Objective::Huber => {
                vec![label.iter().map(|&y| y as f64).sum::<f64>() / n]
            }
        }
    }

    /// Gradients for every class: `g[k * n + r]`.
    fn gradients(
        &self,
        scores: &[f64],
        label: &[f32],
        g: &mut [f32],
        h: &mut [f32],
        threads: usize,
    ) {
        let n = label.len();
        let k = self.k;
        let (objective, alpha) = (self.objective, self.alpha);
        if k == 1 {
            // One score per row: each thread writes its rows' gradients in place.
            let chunk = n.div_ceil(threads.max(1)).max(4096);
            g.par_chunks_mut(chunk)
                .zip(h.par_chunks_mut(chunk))
                .zip(scores.par_chunks(chunk))
                .zip(label.par_chunks(chunk))
                .for_each(|(((g, h), sc), y)| {
                    for i in 0..g.len() {
                        let (gr, hr) = match objective {
                            Objective::Binary => {
                                // In f32, which is what the gradients are kept in.
                                let p = 1.0 / (1.0 + (-(sc[i] as f32)).exp());
                                ((p - y[i]) as f64, (p * (1.0 - p)) as f64)
                            }
                            Objective::Huber => {
                                let d = sc[i] - y[i] as f64;
                                (if d.abs() <= alpha { d } else { d.signum() * alpha }, 1.0)
                            }
                            _ => (sc[i] - y[i] as f64, 1.0),
                        };
                        g[i] = gr as f32;
                        h[i] = hr as f32;
                    }
                });
            return;
        }
        // Each thread fills the rows of its range, for every class.
        let chunks = par_ranges(n, threads, |range| {
            let mut out = Vec::with_capacity(range.len() * k * 2);
            for r in range {
                match objective {
                    Objective::Binary => {
                        let p = sigmoid(scores[r]);
                        out.push(((p - label[r] as f64) as f32, (p * (1.0 - p)) as f32));
                    }
                    Objective::Regression => out.push(((scores[r] - label[r] as f64) as f32, 1.0)),
                    Objective::Huber => {
                        let d = scores[r] - label[r] as f64;
                        let gr = if d.abs() <= alpha { d } else { d.signum() * alpha };
                        out.push((gr as f32, 1.0));
                    }
                    Objective::Multiclass => {
                        let max = (0..k).map(|c| scores[c * n + r]).fold(f64::MIN, f64::max);
                        let mut e: Vec<f64> =
                            (0..k).map(|c| (scores[c * n + r] - max).exp()).collect();
                        let s: f64 = e.iter().sum();
                        let factor = k as f64 / (k as f64 - 1.0);
                        for (c, e) in e.iter_mut().enumerate() {
                            let p = *e / s;
                            let y = (label[r] as usize == c) as u8 as f64;
                            out.push(((p - y) as f32, (factor * p * (1.0 - p)) as f32));
                        }
                    }
                }
            }
            out
        });
        let mut r = 0usize;
        for chunk in chunks {
            for row in chunk.chunks(k) {
                for (c, &(gr, hr)) in row.iter().enumerate() {
                    g[c * n + r] = gr;
                    h[c * n + r] = hr;
                }
                r += 1;
            }
        }
    }

    fn evaluate(&self, scores: &[f64], label: &[f32]) -> f64 {
        let n = label.len();
        if n == 0 {
            return f64::NAN;
        }
        let total: f64 = match self.objective {
            Objective::Binary => label
                .iter()
                .zip(scores)
                .map(|(&y, &s)| {
                    let p = sigmoid(s).clamp(1e-15, 1.0 - 1e-15);
                    if y > 0.5 { -p.ln() } else { -(1.0 - p).ln() }
                })
                .sum(),
            Objective::Multiclass => (0..n)
                .map(|r| {
                    let max = (0..self.k).map(|c| scores[c * n + r]).fold(f64::MIN, f64::max);
                    let s: f64 = (0..self.k).map(|c| (scores[c * n + r] - max).exp()).sum();
                    let y = label[r] as usize;
                    let p = ((scores[y * n + r] - max).exp() / s).max(1e-15);
                    -p.ln()
                })
                .sum(),
            Objective::Regression => {
                label.iter().zip(scores).map(|(&y, &s)| (s - y as f64).powi(2)).sum()
            }
            Objective::Huber => label
                .iter()
                .zip(scores)
                .map(|(&y, &s)| {
                    let d = (s - y as f64).abs();
                    if d <= self.alpha { 0.5 * d * d } else { self.alpha * (d - 0.5 * self.alpha) }
                })
                .sum(),
        };
        total / n as f64
    }
}

/// Boosts `params.num_iterations` rounds on the dataset, calling `progress` after each; a
/// `Break` from it cancels.
pub fn train(
    data: &Dataset,
    params: &Params,
    progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<Booster, Stop> {
    let train = &data.train;
    let n = train.rows;
    let k = if params.objective == Objective::Multiclass { params.num_class } else { 1 };
    let loss = Loss { objective: params.objective, k, alpha: params.alpha };
    let grower = Grower::new(params, train, &data.mappers);
    let init =
        if params.boost_from_average { loss.init_scores(&train.label) } else { vec![0.0; k] };
    let mut scores = vec![0.0f64; k * n];
    let mut valid_scores = vec![0.0f64; k * data.valid.rows];
    for c in 0..k {
        scores[c * n..(c + 1) * n].fill(init[c]);
        valid_scores[c * data.valid.rows..(c + 1) * data.valid.rows].fill(init[c]);
    }
    let mut g = vec![0f32; k * n];
    let mut h = vec![0f32; k * n];
    let mut buffers = Buffers {
        indices: Vec::with_capacity(n),
        scratch: vec![0; n],
        gathered: vec![[0.0; 2]; n],
    };
    let mut bag_rng = Rng::new(params.bagging_seed);
    let mut feature_rng = Rng::new(params.feature_fraction_seed);
    let mut bag: Option<Vec<u32>> = None;
    let mut in_bag: Vec<bool> = Vec::new();
    let all_features: Vec<usize> = (0..data.mappers.len()).collect();
    let mut trees: Vec<Tree> = Vec::new();
    let mut history = Vec::new();
    let mut best: Option<(usize, f64)> = None;
    let bagging = params.bagging_freq > 0 && params.bagging_fraction < 1.0;
    for it in 0..params.num_iterations {
        grower
            .pool
            .install(|| loss.gradients(&scores, &train.label, &mut g, &mut h, grower.threads));
        if bagging && it % params.bagging_freq == 0 {
            let rows: Vec<u32> =
                (0..n as u32).filter(|_| bag_rng.next_f64() < params.bagging_fraction).collect();
            in_bag = vec![false; n];
            rows.iter().for_each(|&r| in_bag[r as usize] = true);
            bag = Some(rows);
        }
        let mut grew = false;
        for c in 0..k {
            let used: Vec<usize> = if params.feature_fraction < 1.0 {
                let want = ((all_features.len() as f64 * params.feature_fraction).round() as usize)
                    .clamp(1, all_features.len());
                let mut pool = all_features.clone();
                for i in 0..want {
                    let j = i + feature_rng.below((pool.len() - i) as u64) as usize;
                    pool.swap(i, j);
                }
                let mut chosen = pool[..want].to_vec();
                chosen.sort_unstable();
                chosen
            } else {
                all_features.clone()
            };
            let (gc, hc) = (&g[c * n..(c + 1) * n], &h[c * n..(c + 1) * n]);
            // The whole tree grows on the pool: its parallel steps follow each other without
            // waking sleeping threads between them.
            let (mut tree, begin, count) =
                grower.pool.install(|| grower.grow(gc, hc, bag.as_deref(), &used, &mut buffers));
            grew |= tree.num_leaves > 1;
            // Shrink, then move the training scores: rows of the bag by their leaf, the others
            // by walking the tree.
            for v in tree.leaf_value.iter_mut().chain(tree.internal_value.iter_mut()) {
                *v *= params.learning_rate;
            }
            tree.shrinkage = params.learning_rate;
            let sc = &mut scores[c * n..(c + 1) * n];
            for l in 0..tree.num_leaves {
                let v = tree.leaf_value[l];
                for &r in &buffers.indices[begin[l]..begin[l] + count[l]] {
                    sc[r as usize] += v;
                }
            }
            if bag.is_some() {
                for r in (0..n).filter(|&r| !in_bag[r]) {
                    sc[r] += tree.leaf_value[tree.leaf_of(train, r)];
                }
            }
            let vr = data.valid.rows;
            let vs = &mut valid_scores[c * vr..(c + 1) * vr];
            for (r, s) in vs.iter_mut().enumerate() {
                *s += tree.leaf_value[tree.leaf_of(&data.valid, r)];
            }
            if it == 0 && init[c].abs() > 1e-15 {
                tree.add_bias(init[c]);
            }
            trees.push(tree);
        }
        let train_metric =
            params.is_provide_training_metric.then(|| loss.evaluate(&scores, &train.label));
        let valid_metric =
            (data.valid.rows > 0).then(|| loss.evaluate(&valid_scores, &data.valid.label));
        let step = Progress {
            iteration: it + 1,
            of: params.num_iterations,
            metric: loss.metric(),
            train: train_metric,
            valid: valid_metric,
        };
        if progress(&step).is_break() {
            return Err(Stop::Cancelled);
        }
        history.push(step);
        if let Some(v) = valid_metric
            && best.is_none_or(|(_, b)| v < b)
        {
            best = Some((it + 1, v));
        }
        if !grew {
            // No leaf can be split any more: further trees would all be empty.
            break;
        }
        if params.early_stopping_round > 0
            && let Some((b, _)) = best
            && it + 1 - b >= params.early_stopping_round
        {
            trees.truncate(b * k);
            return Ok(Booster {
                objective: params.objective,
                params: params.clone(),
                per_iteration: k,
                trees,
                best_iteration: Some(b),
                metric: loss.metric(),
                history,
            });
        }
    }
    let best_iteration = if params.early_stopping_round > 0 { best.map(|b| b.0) } else { None };
    if let Some(b) = best_iteration {
        trees.truncate(b * k);
    }
    Ok(Booster {
        objective: params.objective,
        params: params.clone(),
        per_iteration: k,
        trees,
        best_iteration,
        metric: loss.metric(),
        history,
    })
}
