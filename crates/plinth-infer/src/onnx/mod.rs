//! An ONNX graph executor for the tabular models scikit-learn, LightGBM and XGBoost exporters
//! write. Loading lowers each node to an [`ops::Op`] (refusing any operator it does not know,
//! with its name), so running a request is a walk over a pre-resolved list of nodes and value
//! slots. ONNX-ML operators are in [`ml`]; tree ensembles lower onto [`crate::tree`].

mod ml;
mod ops;

use std::borrow::Cow;
use std::collections::HashMap;

use plinth_api::registry::{DataType, TensorSpec};
use plinth_formats::onnx::{self as proto, AttrValue, Dim, ValueType};

use crate::tensor::{Data, Tensor};
use crate::{InferError, LoadError, Model};
use ops::Op;

#[derive(Debug)]
struct Step {
    op: Op,
    /// Value slots read (None for an omitted optional input).
    inputs: Vec<Option<usize>>,
    outputs: Vec<usize>,
    /// Per input: whether this step is the slot's last reader (nothing after it, graph outputs
    /// included, reads the slot), so that a value passed through unchanged can be moved on.
    last_read: Vec<bool>,
}

/// A loaded ONNX model.
#[derive(Debug)]
pub struct OnnxModel {
    steps: Vec<Step>,
    /// Initial contents of every value slot (initializers; graph inputs are filled per request).
    constants: Vec<Option<Tensor>>,
    input_slots: Vec<(String, usize, ValueType)>,
    output_slots: Vec<usize>,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
}

/// Attribute lookup helpers for lowering.
pub(crate) struct Attrs<'a> {
    node: &'a proto::Node,
    place: String,
}

impl<'a> Attrs<'a> {
    pub fn err(&self, reason: impl Into<String>) -> LoadError {
        LoadError::Unsupported(format!("{}: {}", self.place, reason.into()))
    }

    pub fn get(&self, name: &str) -> Option<&'a AttrValue> {
        self.node.attribute(name)
    }

    pub fn int(&self, name: &str, default: i64) -> Result<i64, LoadError> {
        match self.get(name) {
            None => Ok(default),
            Some(AttrValue::Int(i)) => Ok(*i),
            Some(_) => Err(self.err(format!("attribute '{name}' is not an integer"))),
        }
    }

    pub fn float(&self, name: &str, default: f32) -> Result<f32, LoadError> {
        match self.get(name) {
            None => Ok(default),
            Some(AttrValue::Float(f)) => Ok(*f),
            Some(_) => Err(self.err(format!("attribute '{name}' is not a float"))),
        }
    }

    pub fn string(&self, name: &str, default: &str) -> Result<String, LoadError> {
        match self.get(name) {
            None => Ok(default.to_string()),
            Some(AttrValue::String(s)) => String::from_utf8(s.clone())
                .map_err(|_| self.err(format!("attribute '{name}' is not UTF-8"))),
            Some(_) => Err(self.err(format!("attribute '{name}' is not a string"))),
        }
    }

    pub fn ints(&self, name: &str) -> Result<Vec<i64>, LoadError> {
        match self.get(name) {
            None => Ok(vec![]),
            Some(AttrValue::Ints(v)) => Ok(v.clone()),
            Some(AttrValue::Int(i)) => Ok(vec![*i]),
            Some(_) => Err(self.err(format!("attribute '{name}' is not a list of integers"))),
        }
    }

    pub fn floats(&self, name: &str) -> Result<Vec<f32>, LoadError> {
        match self.get(name) {
            None => Ok(vec![]),
            Some(AttrValue::Floats(v)) => Ok(v.clone()),
            Some(AttrValue::Float(f)) => Ok(vec![*f]),
            Some(AttrValue::Tensor(t)) => tensor_from_proto(t)
                .map_err(|e| self.err(e))?
                .data
                .to_f32()
                .ok_or_else(|| self.err(format!("attribute '{name}' is not numeric"))),
            Some(_) => Err(self.err(format!("attribute '{name}' is not a list of floats"))),
        }
    }

    pub fn strings(&self, name: &str) -> Result<Vec<String>, LoadError> {
        match self.get(name) {
            None => Ok(vec![]),
            Some(AttrValue::Strings(v)) => v
                .iter()
                .map(|s| {
                    String::from_utf8(s.clone())
                        .map_err(|_| self.err(format!("attribute '{name}' is not UTF-8")))
                })
                .collect(),
            Some(_) => Err(self.err(format!("attribute '{name}' is not a list of strings"))),
        }
    }
}

/// Decodes an initializer or tensor attribute.
pub(crate) fn tensor_from_proto(t: &proto::Tensor) -> Result<Tensor, String> {
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| format!("tensor '{}' has a negative dimension", t.name))
        })
        .collect::<Result<_, _>>()?;
    let n: usize = shape.iter().product();
    let raw = &t.raw_data;
    let check = |len: usize| {
        if len == n {
            Ok(())
        } else {
            Err(format!("tensor '{}' has {len} values for shape {shape:?}", t.name))
        }
    };
    let data = match t.data_type {
        1 => {
            let v: Vec<f32> = if !raw.is_empty() {
                raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect()
            } else {
                t.float_data.clone()
            };
            check(v.len())?;
            Data::F32(v)
        }
        11 => {
            let v: Vec<f64> = if !raw.is_empty() {
                raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8"))).collect()
            } else {
                t.double_data.clone()
            };
            check(v.len())?;
            Data::F64(v)
        }
        7 => {
            let v: Vec<i64> = if !raw.is_empty() {
                raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8"))).collect()
            } else {
                t.int64_data.clone()
            };
            check(v.len())?;
            Data::I64(v)
        }
        6 => {
            let v: Vec<i32> = if !raw.is_empty() {
                raw.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().expect("4"))).collect()
            } else {
                t.int32_data.iter().map(|&x| x as i32).collect()
            };
            check(v.len())?;
            Data::I32(v)
        }
        9 => {
            let v: Vec<bool> = if !raw.is_empty() {
                raw.iter().map(|&b| b != 0).collect()
            } else {
                t.int32_data.iter().map(|&x| x != 0).collect()
            };
            check(v.len())?;
            Data::Bool(v)
        }
        8 => {
            let v: Vec<String> =
                t.string_data.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect();
            check(v.len())?;
            Data::Str(v)
        }
        other => {
            return Err(format!("tensor '{}' has an unsupported element type {other}", t.name));
        }
    };
    Ok(Tensor { shape, data })
}

fn spec(v: &proto::ValueInfo) -> Option<TensorSpec> {
    match &v.ty {
        ValueType::Tensor { elem_type, shape } => Some(TensorSpec {
            name: v.name.clone(),
            datatype: proto::elem_type_to_datatype(*elem_type)?,
            shape: shape
                .as_ref()
                .map(|d| d.iter().map(|d| if let Dim::Value(x) = d { *x } else { -1 }).collect())
                .unwrap_or_default(),
        }),
        _ => None,
    }
}

impl OnnxModel {
    pub fn load(bytes: &[u8]) -> Result<OnnxModel, LoadError> {
        let model = proto::parse(bytes)?;
        proto::validate(&model)?;
        let g = &model.graph;
        let mut slots: HashMap<String, usize> = HashMap::new();
        let mut constants: Vec<Option<Tensor>> = Vec::new();
        let slot_of = |name: &str,
                       slots: &mut HashMap<String, usize>,
                       constants: &mut Vec<Option<Tensor>>|
         -> usize {
            *slots.entry(name.to_string()).or_insert_with(|| {
                constants.push(None);
                constants.len() - 1
            })
        };
        for init in &g.initializers {
            let t = tensor_from_proto(init).map_err(LoadError::Unsupported)?;
            let s = slot_of(&init.name, &mut slots, &mut constants);
            constants[s] = Some(t);
        }
        let init_names: std::collections::HashSet<&str> =
            g.initializers.iter().map(|t| t.name.as_str()).collect();
        let mut input_slots = Vec::new();
        let mut inputs = Vec::new();
        for i in g.inputs.iter().filter(|i| !init_names.contains(i.name.as_str())) {
            let s = slot_of(&i.name, &mut slots, &mut constants);
            input_slots.push((i.name.clone(), s, i.ty.clone()));
            inputs.push(spec(i).ok_or_else(|| {
                LoadError::Unsupported(format!(
                    "input '{}' is not a tensor ({})",
                    i.name,
                    i.ty.describe()
                ))
            })?);
        }
        let mut steps = Vec::new();
        for (n, node) in g.nodes.iter().enumerate() {
            let attrs =
                Attrs { node, place: format!("node[{n}] {} '{}'", node.op_type, node.name) };
            let op = ops::lower(node, &attrs)?;
            // An Identity names a value twice; it costs nothing at run time if both names share
            // one slot.
            if let (Op::Identity, [input], [output]) =
                (&op, node.inputs.as_slice(), node.outputs.as_slice())
                && !input.is_empty()
                && !slots.contains_key(output)
            {
                let slot = slot_of(input, &mut slots, &mut constants);
                slots.insert(output.clone(), slot);
                continue;
            }
            let inputs = node
                .inputs
                .iter()
                .map(|i| (!i.is_empty()).then(|| slot_of(i, &mut slots, &mut constants)))
                .collect();
            let outputs =
                node.outputs.iter().map(|o| slot_of(o, &mut slots, &mut constants)).collect();
            steps.push(Step { op, inputs, outputs, last_read: Vec::new() });
        }
        let mut output_slots = Vec::new();
        let mut outputs = Vec::new();
        for o in &g.outputs {
            output_slots.push(slots[&o.name]);
            outputs.push(output_spec(o, &steps, slots[&o.name]));
        }
        // Each slot's last reader: graph outputs read after every step.
        let mut read_later: std::collections::HashSet<usize> =
            output_slots.iter().copied().collect();
        for step in steps.iter_mut().rev() {
            step.last_read =
                step.inputs.iter().map(|s| s.is_some_and(|s| !read_later.contains(&s))).collect();
            read_later.extend(step.inputs.iter().flatten());
        }
        Ok(OnnxModel { steps, constants, input_slots, output_slots, inputs, outputs })
    }
}

/// The spec of a graph output. A ZipMap's sequence of maps is served as the probability matrix it
/// was made from; converters declare label shapes loosely, so the batch dimension is always -1.
fn output_spec(o: &proto::ValueInfo, steps: &[Step], slot: usize) -> TensorSpec {
    let zipmap = steps.iter().find(|s| s.outputs.contains(&slot)).and_then(|s| {
        if let Op::ZipMap { n_classes, .. } = &s.op { Some(*n_classes) } else { None }
    });
    if let Some(n) = zipmap {
        return TensorSpec {
            name: o.name.clone(),
            datatype: DataType::Fp32,
            shape: vec![-1, n as i64],
        };
    }
    let mut s = spec(o).unwrap_or(TensorSpec {
        name: o.name.clone(),
        datatype: DataType::Fp32,
        shape: vec![],
    });
    if let Some(first) = s.shape.first_mut() {
        *first = -1;
    }
    s
}

/// Checks an input against its declared shape (fixed dimensions only) and converts numbers to
/// the declared element type.
fn conform<'a>(spec: &TensorSpec, t: &'a Tensor) -> Result<Cow<'a, Tensor>, InferError> {
    if !spec.shape.is_empty() {
        let fits = spec.shape.len() == t.shape.len()
            && spec.shape.iter().zip(&t.shape).all(|(&d, &n)| d < 0 || d as usize == n);
        if !fits {
            return Err(InferError::new(
                spec.name.clone(),
                format!("expected shape {:?} (-1 = any), got {:?}", spec.shape, t.shape),
            ));
        }
    }
    let wrong = || {
        InferError::new(
            spec.name.clone(),
            format!("expected {:?} values, got {}", spec.datatype, t.data.type_name()),
        )
    };
    let data = match (spec.datatype, &t.data) {
        (DataType::Fp32, Data::F32(_))
        | (DataType::Fp64, Data::F64(_))
        | (DataType::Int64, Data::I64(_))
        | (DataType::Bytes, Data::Str(_)) => {
            return Ok(Cow::Borrowed(t));
        }
        (DataType::Fp32, d) => Data::F32(d.to_f32().ok_or_else(wrong)?),
        (DataType::Fp64, d) => {
            Data::F64(d.to_f32().ok_or_else(wrong)?.into_iter().map(f64::from).collect())
        }
        (DataType::Int64, Data::I32(v)) => Data::I64(v.iter().map(|&x| i64::from(x)).collect()),
        _ => return Err(wrong()),
    };
    Ok(Cow::Owned(Tensor::new(t.shape.clone(), data)))
}

impl Model for OnnxModel {
    fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    fn run(&self, inputs: &[(&str, &Tensor)]) -> Result<Vec<(String, Tensor)>, InferError> {
        // Initializers and inputs are borrowed; only what the nodes compute is owned.
        let mut values: Vec<Slot<'_>> =
            self.constants.iter().map(|c| c.as_ref().map_or(Slot::Empty, Slot::Ref)).collect();
        for (name, slot, _) in &self.input_slots {
            let tensor: &Tensor = match inputs {
                [(_, only)] if self.input_slots.len() == 1 => only,
                _ => {
                    inputs
                        .iter()
                        .find(|(n, _)| n == name)
                        .ok_or_else(|| InferError::new(name.clone(), "missing input"))?
                        .1
                }
            };
            let spec =
                self.inputs.iter().find(|s| &s.name == name).expect("every input slot has a spec");
            values[*slot] = match conform(spec, tensor)? {
                Cow::Borrowed(t) => Slot::Ref(t),
                Cow::Owned(t) => Slot::Own(t),
            };
        }
        for (k, step) in self.steps.iter().enumerate() {
            // Most operators take one to three inputs: no allocation for those.
            let mut few = [None; 4];
            let many: Vec<Option<&Tensor>>;
            let read = |s: &Option<usize>| s.and_then(|s| values[s].get());
            let args: &[Option<&Tensor>] = if step.inputs.len() <= few.len() {
                for (a, s) in few.iter_mut().zip(&step.inputs) {
                    *a = read(s);
                }
                &few[..step.inputs.len()]
            } else {
                many = step.inputs.iter().map(read).collect();
                &many
            };
            if let (Some(k), [out]) = (ops::passes_through(&step.op, args), &step.outputs[..]) {
                let from = step.inputs[k].expect("a passed-through input is present");
                values[*out] = match &values[from] {
                    Slot::Own(_) if step.last_read[k] => {
                        std::mem::replace(&mut values[from], Slot::Empty)
                    }
                    Slot::Own(t) => Slot::Own(t.clone()),
                    Slot::Ref(t) => Slot::Ref(t),
                    Slot::Empty => unreachable!("a passed-through input is present"),
                };
                continue;
            }
            let outs = ops::run(&step.op, args).map_err(|reason| {
                InferError::new("input", format!("step {k} ({}): {reason}", step.op.name()))
            })?;
            for (slot, t) in step.outputs.iter().zip(outs) {
                values[*slot] = Slot::Own(t);
            }
        }
        self.output_slots
            .iter()
            .zip(&self.outputs)
            .enumerate()
            .map(|(k, (slot, spec))| {
                // Two outputs may name one value (through an Identity): the last one takes it.
                let taken = if self.output_slots[k + 1..].contains(slot) {
                    values[*slot].get().map_or(Slot::Empty, |t| Slot::Own(t.clone()))
                } else {
                    std::mem::replace(&mut values[*slot], Slot::Empty)
                };
                let t = match taken {
                    Slot::Own(t) => t,
                    Slot::Ref(t) => t.clone(),
                    Slot::Empty => {
                        return Err(InferError::new(
                            spec.name.clone(),
                            "the graph did not produce this output",
                        ));
                    }
                };
                Ok((spec.name.clone(), t))
            })
            .collect()
    }
}

/// A value slot during one run.
enum Slot<'a> {
    Empty,
    Ref(&'a Tensor),
    Own(Tensor),
}

impl Slot<'_> {
    fn get(&self) -> Option<&Tensor> {
        match self {
            Slot::Empty => None,
            Slot::Ref(t) => Some(t),
            Slot::Own(t) => Some(t),
        }
    }
}
