//! ONNX: a reader for `ModelProto` (graph, nodes, attributes, initializers, value types) and the
//! validation done at upload: the protobuf decodes completely, every operator's domain is
//! imported, the graph is topologically ordered and every graph output is produced.

use std::collections::HashSet;

use plinth_api::registry::{DataType, Signature, TensorSpec};
use serde_json::json;

use crate::protobuf::{self, Reader, Value, WireError};
use crate::{FormatError, Inspected};

const FORMAT: &str = "onnx";

/// How deeply graphs (a node's graph attribute holds a graph) and value types (a sequence of
/// maps of ...) may nest. The reader recurses once per level, so an unbounded file could
/// overflow the stack; real models nest a few levels.
const MAX_NESTING: u32 = 32;

fn too_deep(place: &str, what: &str) -> FormatError {
    FormatError::new(FORMAT, place, format!("{what} nest more than {MAX_NESTING} levels deep"))
}

/// A decoded ONNX model: the parts Plinth reads.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub ir_version: i64,
    /// `(domain, version)`; the default domain is `""`.
    pub opset_import: Vec<(String, i64)>,
    pub producer_name: String,
    pub producer_version: String,
    pub graph: Graph,
    pub metadata: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub name: String,
    pub nodes: Vec<Node>,
    pub initializers: Vec<Tensor>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
}

#[derive(Debug, Clone, Default)]
pub struct Node {
    pub name: String,
    pub op_type: String,
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attributes: Vec<Attribute>,
}

impl Node {
    pub fn attribute(&self, name: &str) -> Option<&AttrValue> {
        self.attributes.iter().find(|a| a.name == name).map(|a| &a.value)
    }
}

#[derive(Debug, Clone)]
pub struct Attribute {
    pub name: String,
    pub value: AttrValue,
}

#[derive(Debug, Clone)]
pub enum AttrValue {
    Float(f32),
    Int(i64),
    String(Vec<u8>),
    Tensor(Tensor),
    Graph(Box<Graph>),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Strings(Vec<Vec<u8>>),
    Tensors(Vec<Tensor>),
    /// Attribute kinds Plinth does not read (graphs lists, sparse tensors, type protos).
    Other,
}

/// An initializer or tensor attribute. Values are in whichever field the writer used.
#[derive(Debug, Clone, Default)]
pub struct Tensor {
    pub name: String,
    pub dims: Vec<i64>,
    pub data_type: i32,
    pub raw_data: Vec<u8>,
    pub float_data: Vec<f32>,
    pub double_data: Vec<f64>,
    pub int32_data: Vec<i64>,
    pub int64_data: Vec<i64>,
    pub string_data: Vec<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct ValueInfo {
    pub name: String,
    pub ty: ValueType,
}

#[derive(Debug, Clone)]
pub enum ValueType {
    Tensor { elem_type: i32, shape: Option<Vec<Dim>> },
    Sequence(Box<ValueType>),
    Map { key: i32, value: Box<ValueType> },
    Optional(Box<ValueType>),
    Unknown,
}

#[derive(Debug, Clone)]
pub enum Dim {
    Value(i64),
    Param(String),
    Unknown,
}

/// The ONNX `TensorProto.DataType` numbers Plinth maps to OIP datatypes.
pub fn elem_type_to_datatype(elem_type: i32) -> Option<DataType> {
    Some(match elem_type {
        1 => DataType::Fp32,
        2 => DataType::Uint8,
        3 => DataType::Int8,
        4 => DataType::Uint16,
        5 => DataType::Int16,
        6 => DataType::Int32,
        7 => DataType::Int64,
        8 => DataType::Bytes,
        9 => DataType::Bool,
        10 => DataType::Fp16,
        11 => DataType::Fp64,
        12 => DataType::Uint32,
        13 => DataType::Uint64,
        _ => return None,
    })
}

fn elem_type_name(elem_type: i32) -> String {
    match elem_type {
        1 => "float".into(),
        2 => "uint8".into(),
        3 => "int8".into(),
        4 => "uint16".into(),
        5 => "int16".into(),
        6 => "int32".into(),
        7 => "int64".into(),
        8 => "string".into(),
        9 => "bool".into(),
        10 => "float16".into(),
        11 => "double".into(),
        12 => "uint32".into(),
        13 => "uint64".into(),
        16 => "bfloat16".into(),
        other => format!("type{other}"),
    }
}

impl ValueType {
    /// A readable form such as `tensor(float)[?,25]` or `seq(map(int64,tensor(float)))`.
    pub fn describe(&self) -> String {
        match self {
            ValueType::Tensor { elem_type, shape } => {
                let dims = match shape {
                    None => String::new(),
                    Some(dims) => {
                        let d: Vec<String> = dims
                            .iter()
                            .map(|d| match d {
                                Dim::Value(v) => v.to_string(),
                                Dim::Param(p) => p.clone(),
                                Dim::Unknown => "?".into(),
                            })
                            .collect();
                        format!("[{}]", d.join(","))
                    }
                };
                format!("tensor({}){dims}", elem_type_name(*elem_type))
            }
            ValueType::Sequence(inner) => format!("seq({})", inner.describe()),
            ValueType::Map { key, value } => {
                format!("map({},{})", elem_type_name(*key), value.describe())
            }
            ValueType::Optional(inner) => format!("optional({})", inner.describe()),
            ValueType::Unknown => "unknown".into(),
        }
    }
}

/// A cheap check used by format detection: the bytes start with a plausible ModelProto field.
pub(crate) fn looks_like_onnx(bytes: &[u8]) -> bool {
    let mut r = Reader::new(bytes);
    match r.next_field() {
        // ir_version (1, varint), producer_name (2, len), graph (7, len), opset_import (8, len)
        Ok(Some((1, Value::Varint(_)))) => true,
        Ok(Some((2 | 3 | 4 | 6 | 7 | 8 | 14, Value::Len(_)))) => true,
        _ => false,
    }
}

fn wire(place: &str, e: WireError) -> FormatError {
    FormatError::new(FORMAT, place, format!("{} at byte {} of this message", e.reason, e.offset))
}

fn text(place: &str, bytes: &[u8]) -> Result<String, FormatError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| FormatError::new(FORMAT, place, "string is not valid UTF-8"))
}

fn expect_len<'a>(place: &str, v: Value<'a>) -> Result<&'a [u8], FormatError> {
    match v {
        Value::Len(b) => Ok(b),
        other => Err(FormatError::new(
            FORMAT,
            place,
            format!("expected a length-delimited field, found wire type {}", other.wire_type()),
        )),
    }
}

fn expect_varint(place: &str, v: Value<'_>) -> Result<i64, FormatError> {
    match v {
        Value::Varint(x) => Ok(x as i64),
        other => Err(FormatError::new(
            FORMAT,
            place,
            format!("expected a varint field, found wire type {}", other.wire_type()),
        )),
    }
}

/// Decodes a `ModelProto`.
pub fn parse(bytes: &[u8]) -> Result<Model, FormatError> {
    let mut model = Model::default();
    let mut graph = None;
    let mut r = Reader::new(bytes);
    while let Some((field, v)) = r.next_field().map_err(|e| wire("model", e))? {
        match field {
            1 => model.ir_version = expect_varint("model.ir_version", v)?,
            2 => {
                model.producer_name =
                    text("model.producer_name", expect_len("model.producer_name", v)?)?
            }
            3 => {
                model.producer_version =
                    text("model.producer_version", expect_len("model.producer_version", v)?)?
            }
            7 => graph = Some(parse_graph("model.graph", expect_len("model.graph", v)?, 0)?),
            8 => {
                let place = format!("model.opset_import[{}]", model.opset_import.len());
                let mut domain = String::new();
                let mut version = 0;
                let mut r = Reader::new(expect_len(&place, v)?);
                while let Some((f, v)) = r.next_field().map_err(|e| wire(&place, e))? {
                    match f {
                        1 => domain = text(&place, expect_len(&place, v)?)?,
                        2 => version = expect_varint(&place, v)?,
                        _ => {}
                    }
                }
                model.opset_import.push((domain, version));
            }
            14 => {
                let place = format!("model.metadata_props[{}]", model.metadata.len());
                let mut key = String::new();
                let mut value = String::new();
                let mut r = Reader::new(expect_len(&place, v)?);
                while let Some((f, v)) = r.next_field().map_err(|e| wire(&place, e))? {
                    match f {
                        1 => key = text(&place, expect_len(&place, v)?)?,
                        2 => value = text(&place, expect_len(&place, v)?)?,
                        _ => {}
                    }
                }
                model.metadata.push((key, value));
            }
            _ => {}
        }
    }
    model.graph =
        graph.ok_or_else(|| FormatError::new(FORMAT, "model.graph", "the model has no graph"))?;
    Ok(model)
}

fn parse_graph(place: &str, bytes: &[u8], depth: u32) -> Result<Graph, FormatError> {
    if depth > MAX_NESTING {
        return Err(too_deep(place, "graphs"));
    }
    let mut g = Graph::default();
    let mut r = Reader::new(bytes);
    while let Some((field, v)) = r.next_field().map_err(|e| wire(place, e))? {
        match field {
            1 => {
                let p = format!("{place}.node[{}]", g.nodes.len());
                g.nodes.push(parse_node(&p, expect_len(&p, v)?, depth)?);
            }
            2 => g.name = text(place, expect_len(place, v)?)?,
            5 => {
                let p = format!("{place}.initializer[{}]", g.initializers.len());
                g.initializers.push(parse_tensor(&p, expect_len(&p, v)?)?);
            }
            11 => {
                let p = format!("{place}.input[{}]", g.inputs.len());
                g.inputs.push(parse_value_info(&p, expect_len(&p, v)?)?);
            }
            12 => {
                let p = format!("{place}.output[{}]", g.outputs.len());
                g.outputs.push(parse_value_info(&p, expect_len(&p, v)?)?);
            }
            _ => {}
        }
    }
    Ok(g)
}

fn parse_node(place: &str, bytes: &[u8], depth: u32) -> Result<Node, FormatError> {
    let mut n = Node::default();
    let mut r = Reader::new(bytes);
    while let Some((field, v)) = r.next_field().map_err(|e| wire(place, e))? {
        match field {
            1 => n.inputs.push(text(place, expect_len(place, v)?)?),
            2 => n.outputs.push(text(place, expect_len(place, v)?)?),
            3 => n.name = text(place, expect_len(place, v)?)?,
            4 => n.op_type = text(place, expect_len(place, v)?)?,
            5 => {
                let p = format!("{place}.attribute[{}]", n.attributes.len());
                n.attributes.push(parse_attribute(&p, expect_len(&p, v)?, depth)?);
            }
            7 => n.domain = text(place, expect_len(place, v)?)?,
            _ => {}
        }
    }
    if n.op_type.is_empty() {
        return Err(FormatError::new(FORMAT, place, "node has no op_type"));
    }
    Ok(n)
}

fn parse_attribute(place: &str, bytes: &[u8], depth: u32) -> Result<Attribute, FormatError> {
    let mut name = String::new();
    let mut f = None;
    let mut i = None;
    let mut s = None;
    let mut t = None;
    let mut g = None;
    let mut floats = Vec::new();
    let mut ints = Vec::new();
    let mut strings = Vec::new();
    let mut tensors = Vec::new();
    let mut kind = 0i64;
    let mut r = Reader::new(bytes);
    while let Some((field, v)) = r.next_field().map_err(|e| wire(place, e))? {
        match field {
            1 => name = text(place, expect_len(place, v)?)?,
            2 => match v {
                Value::Fixed32(bits) => f = Some(f32::from_bits(bits)),
                _ => return Err(FormatError::new(FORMAT, place, "attribute f is not a float")),
            },
            3 => i = Some(expect_varint(place, v)?),
            4 => s = Some(expect_len(place, v)?.to_vec()),
            5 => t = Some(parse_tensor(place, expect_len(place, v)?)?),
            6 => g = Some(parse_graph(&format!("{place}.g"), expect_len(place, v)?, depth + 1)?),
            7 => protobuf::push_floats(v, &mut floats).map_err(|e| wire(place, e))?,
            8 => protobuf::push_varints(v, &mut ints).map_err(|e| wire(place, e))?,
            9 => strings.push(expect_len(place, v)?.to_vec()),
            10 => tensors.push(parse_tensor(place, expect_len(place, v)?)?),
            20 => kind = expect_varint(place, v)?,
            _ => {}
        }
    }
    // AttributeProto.AttributeType: FLOAT=1 INT=2 STRING=3 TENSOR=4 GRAPH=5 FLOATS=6 INTS=7 STRINGS=8 TENSORS=9
    let value =
        match kind {
            1 => AttrValue::Float(f.unwrap_or_default()),
            2 => AttrValue::Int(i.unwrap_or_default()),
            3 => AttrValue::String(s.unwrap_or_default()),
            4 => AttrValue::Tensor(t.ok_or_else(|| {
                FormatError::new(FORMAT, place, "TENSOR attribute without a tensor")
            })?),
            5 => AttrValue::Graph(Box::new(g.ok_or_else(|| {
                FormatError::new(FORMAT, place, "GRAPH attribute without a graph")
            })?)),
            6 => AttrValue::Floats(floats),
            7 => AttrValue::Ints(ints),
            8 => AttrValue::Strings(strings),
            9 => AttrValue::Tensors(tensors),
            // Writers before IR version 3 may omit the type: infer it from the field that is set.
            0 => {
                if let Some(f) = f {
                    AttrValue::Float(f)
                } else if let Some(i) = i {
                    AttrValue::Int(i)
                } else if let Some(s) = s {
                    AttrValue::String(s)
                } else if let Some(t) = t {
                    AttrValue::Tensor(t)
                } else if !floats.is_empty() {
                    AttrValue::Floats(floats)
                } else if !ints.is_empty() {
                    AttrValue::Ints(ints)
                } else if !strings.is_empty() {
                    AttrValue::Strings(strings)
                } else {
                    AttrValue::Other
                }
            }
            _ => AttrValue::Other,
        };
    if name.is_empty() {
        return Err(FormatError::new(FORMAT, place, "attribute has no name"));
    }
    Ok(Attribute { name, value })
}

fn parse_tensor(place: &str, bytes: &[u8]) -> Result<Tensor, FormatError> {
    let mut t = Tensor::default();
    let mut r = Reader::new(bytes);
    while let Some((field, v)) = r.next_field().map_err(|e| wire(place, e))? {
        let res = match field {
            1 => protobuf::push_varints(v, &mut t.dims),
            2 => {
                t.data_type = expect_varint(place, v)? as i32;
                Ok(())
            }
            4 => protobuf::push_floats(v, &mut t.float_data),
            5 => protobuf::push_varints(v, &mut t.int32_data),
            6 => {
                t.string_data.push(expect_len(place, v)?.to_vec());
                Ok(())
            }
            7 => protobuf::push_varints(v, &mut t.int64_data),
            8 => {
                t.name = text(place, expect_len(place, v)?)?;
                Ok(())
            }
            9 => {
                t.raw_data = expect_len(place, v)?.to_vec();
                Ok(())
            }
            10 => protobuf::push_doubles(v, &mut t.double_data),
            13 => Err(WireError {
                offset: 0,
                reason: "external tensor data is not supported: save the model with all tensors inside the file",
            }),
            _ => Ok(()),
        };
        res.map_err(|e| wire(place, e))?;
    }
    // data_location = EXTERNAL is field 14; tensors stored outside the file cannot be served.
    Ok(t)
}

fn parse_value_info(place: &str, bytes: &[u8]) -> Result<ValueInfo, FormatError> {
    let mut name = String::new();
    let mut ty = ValueType::Unknown;
    let mut r = Reader::new(bytes);
    while let Some((field, v)) = r.next_field().map_err(|e| wire(place, e))? {
        match field {
            1 => name = text(place, expect_len(place, v)?)?,
            2 => ty = parse_type(place, expect_len(place, v)?, 0)?,
            _ => {}
        }
    }
    if name.is_empty() {
        return Err(FormatError::new(FORMAT, place, "value has no name"));
    }
    Ok(ValueInfo { name, ty })
}

fn parse_type(place: &str, bytes: &[u8], depth: u32) -> Result<ValueType, FormatError> {
    if depth > MAX_NESTING {
        return Err(too_deep(place, "value types"));
    }
    let mut r = Reader::new(bytes);
    let mut ty = ValueType::Unknown;
    while let Some((field, v)) = r.next_field().map_err(|e| wire(place, e))? {
        match field {
            1 => {
                let mut elem_type = 0;
                let mut shape = None;
                let mut r = Reader::new(expect_len(place, v)?);
                while let Some((f, v)) = r.next_field().map_err(|e| wire(place, e))? {
                    match f {
                        1 => elem_type = expect_varint(place, v)? as i32,
                        2 => shape = Some(parse_shape(place, expect_len(place, v)?)?),
                        _ => {}
                    }
                }
                ty = ValueType::Tensor { elem_type, shape };
            }
            4 => {
                let mut inner = ValueType::Unknown;
                let mut r = Reader::new(expect_len(place, v)?);
                while let Some((f, v)) = r.next_field().map_err(|e| wire(place, e))? {
                    if f == 1 {
                        inner = parse_type(place, expect_len(place, v)?, depth + 1)?;
                    }
                }
                ty = ValueType::Sequence(Box::new(inner));
            }
            5 => {
                let mut key = 0;
                let mut value = ValueType::Unknown;
                let mut r = Reader::new(expect_len(place, v)?);
                while let Some((f, v)) = r.next_field().map_err(|e| wire(place, e))? {
                    match f {
                        1 => key = expect_varint(place, v)? as i32,
                        2 => value = parse_type(place, expect_len(place, v)?, depth + 1)?,
                        _ => {}
                    }
                }
                ty = ValueType::Map { key, value: Box::new(value) };
            }
            9 => {
                let mut inner = ValueType::Unknown;
                let mut r = Reader::new(expect_len(place, v)?);
                while let Some((f, v)) = r.next_field().map_err(|e| wire(place, e))? {
                    if f == 1 {
                        inner = parse_type(place, expect_len(place, v)?, depth + 1)?;
                    }
                }
                ty = ValueType::Optional(Box::new(inner));
            }
            _ => {}
        }
    }
    Ok(ty)
}

fn parse_shape(place: &str, bytes: &[u8]) -> Result<Vec<Dim>, FormatError> {
    let mut dims = Vec::new();
    let mut r = Reader::new(bytes);
    while let Some((field, v)) = r.next_field().map_err(|e| wire(place, e))? {
        if field != 1 {
            continue;
        }
        let mut dim = Dim::Unknown;
        let mut r = Reader::new(expect_len(place, v)?);
        while let Some((f, v)) = r.next_field().map_err(|e| wire(place, e))? {
            match f {
                1 => dim = Dim::Value(expect_varint(place, v)?),
                2 => dim = Dim::Param(text(place, expect_len(place, v)?)?),
                _ => {}
            }
        }
        dims.push(dim);
    }
    Ok(dims)
}

/// The operator domains Plinth knows: the default ONNX domain and ONNX-ML.
fn known_domain(domain: &str) -> bool {
    matches!(domain, "" | "ai.onnx" | "ai.onnx.ml")
}

/// Validates a decoded model's structure.
pub fn validate(model: &Model) -> Result<(), FormatError> {
    if model.ir_version < 3 {
        return Err(FormatError::new(
            FORMAT,
            "model.ir_version",
            format!("IR version {} is missing or too old (need 3 or later)", model.ir_version),
        ));
    }
    if model.opset_import.is_empty() {
        return Err(FormatError::new(
            FORMAT,
            "model.opset_import",
            "the model imports no operator set",
        ));
    }
    let g = &model.graph;
    if g.nodes.is_empty() {
        return Err(FormatError::new(FORMAT, "model.graph.node", "the graph has no nodes"));
    }
    if g.outputs.is_empty() {
        return Err(FormatError::new(FORMAT, "model.graph.output", "the graph has no outputs"));
    }
    let imported: HashSet<&str> = model
        .opset_import
        .iter()
        .map(|(d, _)| if d == "ai.onnx" { "" } else { d.as_str() })
        .collect();
    let mut defined: HashSet<&str> = HashSet::new();
    for i in &g.inputs {
        defined.insert(&i.name);
    }
    for t in &g.initializers {
        defined.insert(&t.name);
    }
    for (n, node) in g.nodes.iter().enumerate() {
        let place = format!("model.graph.node[{n}] ({} '{}')", node.op_type, node.name);
        let domain = if node.domain == "ai.onnx" { "" } else { node.domain.as_str() };
        if !known_domain(domain) {
            return Err(FormatError::new(
                FORMAT,
                place,
                format!(
                    "operator domain '{}' is not supported (only the ONNX and ONNX-ML domains are)",
                    node.domain
                ),
            ));
        }
        if !imported.contains(domain) {
            return Err(FormatError::new(
                FORMAT,
                place,
                format!("operator domain '{}' is used but not in opset_import", node.domain),
            ));
        }
        for (k, input) in node.inputs.iter().enumerate() {
            if !input.is_empty() && !defined.contains(input.as_str()) {
                return Err(FormatError::new(
                    FORMAT,
                    format!("{place}.input[{k}]"),
                    format!(
                        "'{input}' is not a graph input, an initializer or the output of an earlier node"
                    ),
                ));
            }
        }
        for output in &node.outputs {
            if !output.is_empty() {
                defined.insert(output);
            }
        }
    }
    for (k, out) in g.outputs.iter().enumerate() {
        if !defined.contains(out.name.as_str()) {
            return Err(FormatError::new(
                FORMAT,
                format!("model.graph.output[{k}]"),
                format!("output '{}' is produced by no node", out.name),
            ));
        }
    }
    validate_ml(g)
}

/// Checks the ONNX-ML tree ensembles completely ([`crate::onnx_ml::TreeEnsemble::read`]), and
/// that no split reads a column past its input's width where the graph declares that width.
fn validate_ml(g: &Graph) -> Result<(), FormatError> {
    let widths = row_widths(g);
    for (n, node) in g.nodes.iter().enumerate() {
        if node.domain != "ai.onnx.ml"
            || !matches!(node.op_type.as_str(), "TreeEnsembleClassifier" | "TreeEnsembleRegressor")
        {
            continue;
        }
        let place = format!("model.graph.node[{n}] ({} '{}')", node.op_type, node.name);
        let ensemble = crate::onnx_ml::TreeEnsemble::read(node)
            .map_err(|reason| FormatError::new(FORMAT, place.clone(), reason))?;
        let input = node.inputs.first().map(String::as_str).unwrap_or_default();
        if let (Some(max), Some(&width)) = (ensemble.max_feature, widths.get(input))
            && max >= width
        {
            return Err(FormatError::new(
                FORMAT,
                format!("{place}.nodes_featureids"),
                format!("a split reads column {max}, but its input '{input}' has {width} columns"),
            ));
        }
    }
    Ok(())
}

/// The row width (columns of a `[rows, columns]` tensor) of the values whose width the graph
/// declares: its inputs with a fixed last dimension, and what operators that keep the width
/// (casts, scalers, imputers, ...) or concatenate columns make of them.
pub fn row_widths(g: &Graph) -> std::collections::HashMap<&str, usize> {
    let mut widths = std::collections::HashMap::new();
    for i in &g.inputs {
        if let ValueType::Tensor { shape: Some(dims), .. } = &i.ty
            && let [_, Dim::Value(w)] = dims.as_slice()
            && let Ok(w) = usize::try_from(*w)
        {
            widths.insert(i.name.as_str(), w);
        }
    }
    for node in &g.nodes {
        let of = |k: usize| node.inputs.get(k).and_then(|i| widths.get(i.as_str()).copied());
        let width = match node.op_type.as_str() {
            "Cast" | "Identity" | "Scaler" | "Imputer" | "Normalizer" | "Binarizer" => of(0),
            "Concat" if matches!(node.attribute("axis"), Some(AttrValue::Int(1 | -1))) => {
                (0..node.inputs.len()).map(of).sum::<Option<usize>>()
            }
            _ => None,
        };
        if let (Some(w), Some(out)) = (width, node.outputs.first()) {
            widths.insert(out.as_str(), w);
        }
    }
    widths
}

fn tensor_spec(v: &ValueInfo) -> Option<TensorSpec> {
    match &v.ty {
        ValueType::Tensor { elem_type, shape } => Some(TensorSpec {
            name: v.name.clone(),
            datatype: elem_type_to_datatype(*elem_type)?,
            shape: shape
                .as_ref()
                .map(|dims| {
                    dims.iter().map(|d| if let Dim::Value(x) = d { *x } else { -1 }).collect()
                })
                .unwrap_or_default(),
        }),
        _ => None,
    }
}

/// The signature read from the graph: real inputs (initializers excluded) and tensor outputs.
pub fn signature(model: &Model) -> Signature {
    let inits: HashSet<&str> = model.graph.initializers.iter().map(|t| t.name.as_str()).collect();
    Signature {
        inputs: model
            .graph
            .inputs
            .iter()
            .filter(|i| !inits.contains(i.name.as_str()))
            .filter_map(tensor_spec)
            .collect(),
        outputs: model.graph.outputs.iter().filter_map(tensor_spec).collect(),
        feature_names: None,
    }
}

pub(crate) fn inspect(bytes: &[u8]) -> Result<Inspected, FormatError> {
    let model = parse(bytes)?;
    validate(&model)?;
    let mut ops: Vec<String> = model
        .graph
        .nodes
        .iter()
        .map(|n| {
            if n.domain.is_empty() {
                n.op_type.clone()
            } else {
                format!("{}:{}", n.domain, n.op_type)
            }
        })
        .collect();
    ops.sort();
    ops.dedup();
    let inits: HashSet<&str> = model.graph.initializers.iter().map(|t| t.name.as_str()).collect();
    let details = json!({
        "ir_version": model.ir_version,
        "opset_import": model.opset_import.iter().map(|(d, v)| json!({"domain": d, "version": v})).collect::<Vec<_>>(),
        "producer": format!("{} {}", model.producer_name, model.producer_version).trim().to_string(),
        "operators": ops,
        "nodes": model.graph.nodes.len(),
        "inputs": model.graph.inputs.iter().filter(|i| !inits.contains(i.name.as_str())).map(|i| json!({"name": i.name, "type": i.ty.describe()})).collect::<Vec<_>>(),
        "outputs": model.graph.outputs.iter().map(|o| json!({"name": o.name, "type": o.ty.describe()})).collect::<Vec<_>>(),
    });
    let signature = signature(&model);
    if signature.inputs.is_empty() {
        return Err(FormatError::new(
            FORMAT,
            "model.graph.input",
            "the graph has no tensor inputs",
        ));
    }
    Ok(Inspected {
        format: plinth_api::registry::ModelFormat::Onnx,
        signature: Some(signature),
        details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A length-delimited field.
    fn field(number: u32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(u64::from(number) << 3 | 2, &mut out);
        varint(body.len() as u64, &mut out);
        out.extend_from_slice(body);
        out
    }

    /// `inner` wrapped `levels` times, each level being the given field numbers from the outside
    /// in. Built with headers computed from the inside out, in linear time.
    fn nested(inner: &[u8], levels: usize, fields: &[u32]) -> Vec<u8> {
        let mut sizes = Vec::with_capacity(levels * fields.len());
        let mut len = inner.len();
        for _ in 0..levels {
            for &f in fields.iter().rev() {
                sizes.push((f, len));
                let mut head = Vec::new();
                varint(u64::from(f) << 3 | 2, &mut head);
                varint(len as u64, &mut head);
                len += head.len();
            }
        }
        let mut out = Vec::with_capacity(len);
        for &(f, len) in sizes.iter().rev() {
            varint(u64::from(f) << 3 | 2, &mut out);
            varint(len as u64, &mut out);
        }
        out.extend_from_slice(inner);
        out
    }

    fn model_with_input_type(ty: &[u8]) -> Vec<u8> {
        let input = [field(1, b"x"), field(2, ty)].concat();
        let mut model = vec![0x08, 8]; // ir_version 8
        model.extend(field(7, &field(11, &input)));
        model
    }

    #[test]
    fn nesting_past_the_limit_is_refused_not_recursed() {
        let tensor = field(1, &[0x08, 1]); // tensor_type { elem_type: FLOAT }
        // sequence_type (4) { elem_type (1): TypeProto }, 100,000 levels.
        let deep = nested(&tensor, 100_000, &[4, 1]);
        let e = parse(&model_with_input_type(&deep)).unwrap_err();
        assert!(e.to_string().contains("value types nest more than"), "{e}");
        let shallow = nested(&tensor, 3, &[4, 1]);
        let m = parse(&model_with_input_type(&shallow)).expect("a few levels parse");
        assert_eq!(m.graph.inputs[0].ty.describe(), "seq(seq(seq(tensor(float))))");

        // A node's graph attribute holding a graph with such a node, 100,000 levels:
        // GraphProto.node (1) { attribute (5) { g (6): GraphProto } }.
        let leaf = field(4, b"Identity"); // the innermost node's op_type
        let graphs = nested(&field(1, &leaf), 100_000, &[1, 5, 6]);
        let mut model = vec![0x08, 8];
        model.extend(field(7, &graphs[..]));
        let e = parse(&model).unwrap_err();
        assert!(e.to_string().contains("graphs nest more than"), "{e}");
    }
}
