//! The operators: lowering from ONNX nodes (attributes checked once, at load) and execution.

use plinth_formats::onnx as proto;

use super::Attrs;
use super::ml;
use crate::LoadError;
use crate::tensor::{Data, Tensor};

#[derive(Debug, Clone, Copy)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum UnOp {
    Relu,
    Sigmoid,
    Tanh,
    Exp,
    Neg,
    Abs,
    Sqrt,
}

#[derive(Debug)]
pub(crate) enum Op {
    Identity,
    Cast { to: i64 },
    Binary(BinOp),
    Unary(UnOp),
    MatMul,
    Gemm { alpha: f32, beta: f32, trans_a: bool, trans_b: bool },
    Softmax { axis: i64 },
    ArgMax { axis: i64, keepdims: bool },
    Reshape,
    Flatten { axis: i64 },
    Concat { axis: i64 },
    ZipMap { n_classes: usize },
    Ml(Box<ml::MlOp>),
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Identity => "Identity",
            Op::Cast { .. } => "Cast",
            Op::Binary(_) => "elementwise",
            Op::Unary(_) => "elementwise",
            Op::MatMul => "MatMul",
            Op::Gemm { .. } => "Gemm",
            Op::Softmax { .. } => "Softmax",
            Op::ArgMax { .. } => "ArgMax",
            Op::Reshape => "Reshape",
            Op::Flatten { .. } => "Flatten",
            Op::Concat { .. } => "Concat",
            Op::ZipMap { .. } => "ZipMap",
            Op::Ml(m) => m.name(),
        }
    }
}

pub(crate) fn lower(node: &proto::Node, a: &Attrs<'_>) -> Result<Op, LoadError> {
    let domain = if node.domain == "ai.onnx" { "" } else { node.domain.as_str() };
    if domain == "ai.onnx.ml" {
        if node.op_type == "ZipMap" {
            let n =
                a.ints("classlabels_int64s")?.len().max(a.strings("classlabels_strings")?.len());
            return Ok(Op::ZipMap { n_classes: n });
        }
        return Ok(Op::Ml(Box::new(ml::lower(node, a)?)));
    }
    Ok(match node.op_type.as_str() {
        "Identity" => Op::Identity,
        "Cast" => Op::Cast { to: a.int("to", 1)? },
        "Add" => Op::Binary(BinOp::Add),
        "Sub" => Op::Binary(BinOp::Sub),
        "Mul" => Op::Binary(BinOp::Mul),
        "Div" => Op::Binary(BinOp::Div),
        "Relu" => Op::Unary(UnOp::Relu),
        "Sigmoid" => Op::Unary(UnOp::Sigmoid),
        "Tanh" => Op::Unary(UnOp::Tanh),
        "Exp" => Op::Unary(UnOp::Exp),
        "Neg" => Op::Unary(UnOp::Neg),
        "Abs" => Op::Unary(UnOp::Abs),
        "Sqrt" => Op::Unary(UnOp::Sqrt),
        "MatMul" => Op::MatMul,
        "Gemm" => Op::Gemm {
            alpha: a.float("alpha", 1.0)?,
            beta: a.float("beta", 1.0)?,
            trans_a: a.int("transA", 0)? != 0,
            trans_b: a.int("transB", 0)? != 0,
        },
        "Softmax" => Op::Softmax { axis: a.int("axis", -1)? },
        "ArgMax" => Op::ArgMax { axis: a.int("axis", 0)?, keepdims: a.int("keepdims", 1)? != 0 },
        "Reshape" => Op::Reshape,
        "Flatten" => Op::Flatten { axis: a.int("axis", 1)? },
        "Concat" => Op::Concat { axis: a.int("axis", 0)? },
        other => {
            return Err(
                a.err(format!("operator '{other}' is not supported by Plinth's ONNX runtime"))
            );
        }
    })
}

type R<T> = Result<T, String>;

fn arg<'a>(args: &[Option<&'a Tensor>], i: usize, op: &str) -> R<&'a Tensor> {
    args.get(i).copied().flatten().ok_or_else(|| format!("{op} needs input {i}"))
}

/// f32 view of a float tensor (the dtype most tabular graphs use), borrowed when it is f32.
pub(crate) fn floats(t: &Tensor) -> R<std::borrow::Cow<'_, [f32]>> {
    t.data.as_f32().ok_or_else(|| format!("expected a numeric tensor, got {}", t.data.type_name()))
}

fn to_f64(d: &Data) -> R<Vec<f64>> {
    Ok(match d {
        Data::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        Data::F64(v) => v.clone(),
        Data::I64(v) => v.iter().map(|&x| x as f64).collect(),
        Data::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        Data::Bool(v) => v.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect(),
        Data::Str(_) => return Err("expected numbers, got strings".into()),
    })
}

/// Converts f64 results back to the element type of `like`.
fn from_f64(like: &Data, v: Vec<f64>) -> Data {
    match like {
        Data::F32(_) => Data::F32(v.into_iter().map(|x| x as f32).collect()),
        Data::I64(_) => Data::I64(v.into_iter().map(|x| x as i64).collect()),
        Data::I32(_) => Data::I32(v.into_iter().map(|x| x as i32).collect()),
        Data::Bool(_) => Data::Bool(v.into_iter().map(|x| x != 0.0).collect()),
        _ => Data::F64(v),
    }
}

fn broadcast_shape(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        };
    }
    Ok(out)
}

/// The flat index into a tensor of `shape` for output position `idx` of `out_shape`.
fn source_index(out_shape: &[usize], shape: &[usize], mut idx: usize) -> usize {
    let offset = out_shape.len() - shape.len();
    let mut src = 0;
    let mut stride = 1;
    for d in (0..out_shape.len()).rev() {
        let coord = idx % out_shape[d];
        idx /= out_shape[d];
        if d >= offset {
            let dim = shape[d - offset];
            if dim != 1 {
                src += coord * stride;
            }
            stride *= dim;
        }
    }
    src
}

fn binary(op: BinOp, a: &Tensor, b: &Tensor) -> R<Tensor> {
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    if let (Data::F32(x), Data::F32(y)) = (&a.data, &b.data) {
        // In f32 directly: for +, -, * and /, rounding the exact result once to f32 equals
        // rounding it to f64 first (f64 has more than twice f32's precision), so this answers
        // what the f64 path below does, without its conversions.
        let f = |p: f32, q: f32| match op {
            BinOp::Add => p + q,
            BinOp::Sub => p - q,
            BinOp::Mul => p * q,
            BinOp::Div => p / q,
        };
        let out: Vec<f32> = if a.shape == shape && b.shape == shape {
            x.iter().zip(y).map(|(&p, &q)| f(p, q)).collect()
        } else {
            let n: usize = shape.iter().product();
            (0..n)
                .map(|i| {
                    f(x[source_index(&shape, &a.shape, i)], y[source_index(&shape, &b.shape, i)])
                })
                .collect()
        };
        return Ok(Tensor::new(shape, Data::F32(out)));
    }
    let (x, y) = (to_f64(&a.data)?, to_f64(&b.data)?);
    let n: usize = shape.iter().product();
    let same = a.shape == shape && b.shape == shape;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (p, q) = if same {
            (x[i], y[i])
        } else {
            (x[source_index(&shape, &a.shape, i)], y[source_index(&shape, &b.shape, i)])
        };
        out.push(match op {
            BinOp::Add => p + q,
            BinOp::Sub => p - q,
            BinOp::Mul => p * q,
            BinOp::Div => p / q,
        });
    }
    Ok(Tensor::new(shape, from_f64(&a.data, out)))
}

fn axis_of(axis: i64, rank: usize) -> R<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize >= rank.max(1) {
        Err(format!("axis {axis} is out of range for rank {rank}"))
    } else {
        Ok(a as usize)
    }
}

fn matmul(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> R<(Vec<f64>, usize, usize)> {
    if a.shape.len() != 2 || b.shape.len() != 2 {
        return Err(format!(
            "matrix product of shapes {:?} and {:?} (only 2-D is supported)",
            a.shape, b.shape
        ));
    }
    let (x, y) = (to_f64(&a.data)?, to_f64(&b.data)?);
    let (m, k) = if trans_a { (a.shape[1], a.shape[0]) } else { (a.shape[0], a.shape[1]) };
    let (k2, n) = if trans_b { (b.shape[1], b.shape[0]) } else { (b.shape[0], b.shape[1]) };
    if k != k2 {
        return Err(format!(
            "matrix product of shapes {:?} and {:?}: inner dimensions differ",
            a.shape, b.shape
        ));
    }
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for p in 0..k {
            let av = if trans_a { x[p * m + i] } else { x[i * k + p] };
            for j in 0..n {
                let bv = if trans_b { y[j * k + p] } else { y[p * n + j] };
                out[i * n + j] += av * bv;
            }
        }
    }
    Ok((out, m, n))
}

/// Whether a Cast to the ONNX element type `to` is to the type `t` already has.
fn casts_to_itself(to: i64, t: &Tensor) -> bool {
    matches!(
        (to, &t.data),
        (1, Data::F32(_))
            | (11, Data::F64(_))
            | (7, Data::I64(_))
            | (6, Data::I32(_))
            | (9, Data::Bool(_))
            | (8, Data::Str(_))
    )
}

/// Which input, if any, the operator would answer unchanged for these arguments: an Identity, a
/// Cast to the type the tensor already has, a multiplication or division by a constant one that
/// broadcasting does not reshape. Converters write such steps (onnxmltools follows a LightGBM
/// classifier with a Cast of its labels to int64 and a Mul of its probabilities by 1): the
/// executor hands the input on instead of computing a copy.
pub(crate) fn passes_through(op: &Op, args: &[Option<&Tensor>]) -> Option<usize> {
    let is_one = |t: &Tensor| match &t.data {
        Data::F32(v) => v.as_slice() == [1.0],
        Data::F64(v) => v.as_slice() == [1.0],
        Data::I64(v) => v.as_slice() == [1],
        Data::I32(v) => v.as_slice() == [1],
        _ => false,
    };
    // `x` times the one `k` is `x`, same type, same shape.
    let times_one = |x: &Tensor, k: &Tensor| {
        std::mem::discriminant(&x.data) == std::mem::discriminant(&k.data)
            && is_one(k)
            && k.shape.len() <= x.shape.len()
    };
    match (op, args) {
        (Op::Identity, [Some(_)]) => Some(0),
        (Op::Cast { to }, [Some(t)]) => casts_to_itself(*to, t).then_some(0),
        (Op::Binary(BinOp::Mul), [Some(x), Some(k)]) if times_one(x, k) => Some(0),
        (Op::Binary(BinOp::Mul), [Some(k), Some(x)]) if times_one(x, k) => Some(1),
        (Op::Binary(BinOp::Div), [Some(x), Some(k)]) if times_one(x, k) => Some(0),
        _ => None,
    }
}

pub(crate) fn run(op: &Op, args: &[Option<&Tensor>]) -> R<Vec<Tensor>> {
    let name = op.name();
    Ok(match op {
        Op::Identity => vec![arg(args, 0, name)?.clone()],
        Op::Cast { to } => {
            let t = arg(args, 0, name)?;
            if casts_to_itself(*to, t) {
                // Exact, and integers past 2^53 keep every digit.
                return Ok(vec![t.clone()]);
            }
            let v = to_f64(&t.data);
            let data = match (*to, &t.data) {
                (1, _) => Data::F32(v?.into_iter().map(|x| x as f32).collect()),
                (11, _) => Data::F64(v?),
                (7, _) => Data::I64(v?.into_iter().map(|x| x as i64).collect()),
                (6, _) => Data::I32(v?.into_iter().map(|x| x as i32).collect()),
                (9, _) => Data::Bool(v?.into_iter().map(|x| x != 0.0).collect()),
                (8, Data::I64(v)) => Data::Str(v.iter().map(|x| x.to_string()).collect()),
                (8, Data::Str(v)) => Data::Str(v.clone()),
                (to, _) => return Err(format!("Cast to element type {to} is not supported")),
            };
            vec![Tensor::new(t.shape.clone(), data)]
        }
        Op::Binary(b) => vec![binary(*b, arg(args, 0, name)?, arg(args, 1, name)?)?],
        Op::Unary(u) => {
            let t = arg(args, 0, name)?;
            let v: Vec<f64> = to_f64(&t.data)?
                .into_iter()
                .map(|x| match u {
                    UnOp::Relu => x.max(0.0),
                    UnOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
                    UnOp::Tanh => x.tanh(),
                    UnOp::Exp => x.exp(),
                    UnOp::Neg => -x,
                    UnOp::Abs => x.abs(),
                    UnOp::Sqrt => x.sqrt(),
                })
                .collect();
            vec![Tensor::new(t.shape.clone(), from_f64(&t.data, v))]
        }
        Op::MatMul => {
            let (a, b) = (arg(args, 0, name)?, arg(args, 1, name)?);
            let (v, m, n) = matmul(a, b, false, false)?;
            vec![Tensor::new(vec![m, n], from_f64(&a.data, v))]
        }
        Op::Gemm { alpha, beta, trans_a, trans_b } => {
            let (a, b) = (arg(args, 0, name)?, arg(args, 1, name)?);
            let (mut v, m, n) = matmul(a, b, *trans_a, *trans_b)?;
            v.iter_mut().for_each(|x| *x *= f64::from(*alpha));
            if let Some(c) = args.get(2).copied().flatten() {
                let shape = broadcast_shape(&[m, n], &c.shape)?;
                if shape != [m, n] {
                    return Err(format!(
                        "Gemm bias of shape {:?} does not broadcast to [{m}, {n}]",
                        c.shape
                    ));
                }
                let cv = to_f64(&c.data)?;
                for (i, x) in v.iter_mut().enumerate() {
                    *x += f64::from(*beta) * cv[source_index(&[m, n], &c.shape, i)];
                }
            }
            vec![Tensor::new(vec![m, n], from_f64(&a.data, v))]
        }
        Op::Softmax { axis } => {
            let t = arg(args, 0, name)?;
            let ax = axis_of(*axis, t.shape.len())?;
            let inner: usize = t.shape[ax..].iter().product();
            let mut v = to_f64(&t.data)?;
            for row in v.chunks_mut(inner.max(1)) {
                crate::tree_model::apply_link(crate::tree_model::Link::Softmax, row);
            }
            vec![Tensor::new(t.shape.clone(), from_f64(&t.data, v))]
        }
        Op::ArgMax { axis, keepdims } => {
            let t = arg(args, 0, name)?;
            if t.shape.len() != 2 || axis_of(*axis, 2)? != 1 {
                return Err("ArgMax is supported on the last axis of a 2-D tensor".into());
            }
            let v = to_f64(&t.data)?;
            let (rows, cols) = (t.shape[0], t.shape[1]);
            let idx: Vec<i64> = (0..rows)
                .map(|r| {
                    let row = &v[r * cols..(r + 1) * cols];
                    row.iter()
                        .enumerate()
                        .fold(
                            (0usize, f64::NEG_INFINITY),
                            |b, (i, &x)| if x > b.1 { (i, x) } else { b },
                        )
                        .0 as i64
                })
                .collect();
            vec![Tensor::i64(if *keepdims { vec![rows, 1] } else { vec![rows] }, idx)]
        }
        Op::Reshape => {
            let (t, s) = (arg(args, 0, name)?, arg(args, 1, name)?);
            let Data::I64(dims) = &s.data else {
                return Err("Reshape's shape must be int64".into());
            };
            let total: usize = t.shape.iter().product();
            let mut shape = Vec::with_capacity(dims.len());
            let mut infer = None;
            for (i, &d) in dims.iter().enumerate() {
                match d {
                    -1 => {
                        infer = Some(i);
                        shape.push(1);
                    }
                    0 => shape.push(*t.shape.get(i).ok_or("Reshape copies a missing dimension")?),
                    d if d > 0 => shape.push(d as usize),
                    _ => return Err(format!("Reshape dimension {d}")),
                }
            }
            if let Some(i) = infer {
                let known: usize = shape.iter().product();
                shape[i] = total / known.max(1);
            }
            if shape.iter().product::<usize>() != total {
                return Err(format!("cannot reshape {:?} into {dims:?}", t.shape));
            }
            vec![Tensor::new(shape, t.data.clone())]
        }
        Op::Flatten { axis } => {
            let t = arg(args, 0, name)?;
            let ax = if *axis < 0 {
                (*axis + t.shape.len() as i64).max(0) as usize
            } else {
                (*axis as usize).min(t.shape.len())
            };
            let outer: usize = t.shape[..ax].iter().product();
            let inner: usize = t.shape[ax..].iter().product();
            vec![Tensor::new(vec![outer, inner], t.data.clone())]
        }
        Op::Concat { axis } => {
            let parts: Vec<&Tensor> = args.iter().flatten().copied().collect();
            let first = parts.first().ok_or("Concat needs inputs")?;
            let rank = first.shape.len();
            let ax = axis_of(*axis, rank)?;
            if rank != 2 || ax != 1 {
                let rows: usize = parts.iter().map(|p| p.shape.first().copied().unwrap_or(0)).sum();
                if ax == 0 && parts.iter().all(|p| p.shape[1..] == first.shape[1..]) {
                    let mut v = Vec::new();
                    for p in &parts {
                        v.extend(to_f64(&p.data)?);
                    }
                    let mut shape = first.shape.clone();
                    shape[0] = rows;
                    return Ok(vec![Tensor::new(shape, from_f64(&first.data, v))]);
                }
                return Err("Concat is supported on axis 0, or axis 1 of 2-D tensors".into());
            }
            let rows = first.shape[0];
            let cols: usize = parts.iter().map(|p| p.shape[1]).sum();
            let datas: Vec<Vec<f64>> = parts.iter().map(|p| to_f64(&p.data)).collect::<R<_>>()?;
            let mut v = Vec::with_capacity(rows * cols);
            for r in 0..rows {
                for (p, d) in parts.iter().zip(&datas) {
                    if p.shape[0] != rows {
                        return Err("Concat of tensors with different row counts".into());
                    }
                    v.extend_from_slice(&d[r * p.shape[1]..(r + 1) * p.shape[1]]);
                }
            }
            vec![Tensor::new(vec![rows, cols], from_f64(&first.data, v))]
        }
        // A sequence of maps is not a tensor: serve the probability matrix it would be built from.
        Op::ZipMap { .. } => {
            let t = arg(args, 0, name)?;
            vec![Tensor::new(t.shape.clone(), Data::F32(floats(t)?.into_owned()))]
        }
        Op::Ml(m) => ml::run(m, args)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], data: Data) -> Tensor {
        Tensor::new(shape.to_vec(), data)
    }

    #[test]
    fn only_steps_that_change_nothing_pass_their_input_through() {
        let x = t(&[2, 2], Data::F32(vec![1.5, -0.0, f32::NAN, 3.0]));
        let one = t(&[], Data::F32(vec![1.0]));
        let labels = t(&[2], Data::I64(vec![0, 1]));
        let mul = Op::Binary(BinOp::Mul);
        assert_eq!(passes_through(&Op::Identity, &[Some(&x)]), Some(0));
        assert_eq!(passes_through(&Op::Cast { to: 7 }, &[Some(&labels)]), Some(0));
        assert_eq!(passes_through(&mul, &[Some(&x), Some(&one)]), Some(0));
        assert_eq!(passes_through(&mul, &[Some(&one), Some(&x)]), Some(1));
        assert_eq!(passes_through(&Op::Binary(BinOp::Div), &[Some(&x), Some(&one)]), Some(0));
        // Each of these computes something new.
        assert_eq!(passes_through(&Op::Cast { to: 1 }, &[Some(&labels)]), None, "a new type");
        let two = t(&[], Data::F32(vec![2.0]));
        assert_eq!(passes_through(&mul, &[Some(&x), Some(&two)]), None);
        let f64_one = t(&[], Data::F64(vec![1.0]));
        assert_eq!(passes_through(&mul, &[Some(&x), Some(&f64_one)]), None, "another type");
        let deeper_one = t(&[1, 1, 1], Data::F32(vec![1.0]));
        assert_eq!(passes_through(&mul, &[Some(&x), Some(&deeper_one)]), None, "a new shape");
        assert_eq!(passes_through(&Op::Binary(BinOp::Div), &[Some(&one), Some(&x)]), None);
        assert_eq!(passes_through(&Op::Binary(BinOp::Add), &[Some(&x), Some(&one)]), None);
        // And where they pass, running them answers the input itself.
        let ran = run(&mul, &[Some(&x), Some(&one)]).unwrap();
        assert_eq!(ran[0].shape, x.shape);
        let (Data::F32(a), Data::F32(b)) = (&ran[0].data, &x.data) else { panic!() };
        assert!(a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits()));
    }
}
