//! A minimal ONNX writer: the protobuf of a `ModelProto` whose graph is a chain of `ai.onnx.ml`
//! nodes over one float input. Enough for the linear models; nothing here reads ONNX.

/// A protobuf message being written.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u8) {
        self.varint(((field as u64) << 3) | wire as u64);
    }
    fn int(&mut self, field: u32, v: i64) -> &mut Self {
        self.key(field, 0);
        self.varint(v as u64);
        self
    }
    fn bytes(&mut self, field: u32, b: &[u8]) -> &mut Self {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, field: u32, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }
    fn msg(&mut self, field: u32, m: Msg) -> &mut Self {
        self.bytes(field, &m.0)
    }
    fn float(&mut self, field: u32, v: f32) -> &mut Self {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn packed_floats(&mut self, field: u32, v: &[f32]) -> &mut Self {
        let mut b = Vec::with_capacity(v.len() * 4);
        v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
        self.bytes(field, &b)
    }
    fn packed_ints(&mut self, field: u32, v: &[i64]) -> &mut Self {
        let mut m = Msg::default();
        v.iter().for_each(|&x| m.varint(x as u64));
        self.bytes(field, &m.0)
    }
}

/// A node attribute.
#[derive(Debug, Clone)]
pub enum Attr {
    Float(f32),
    Int(i64),
    Str(String),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
}

/// One `ai.onnx.ml` node.
#[derive(Debug, Clone)]
pub struct Node {
    pub op: &'static str,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: Vec<(&'static str, Attr)>,
}

/// An output of the graph: name, element type (1 float, 7 int64) and shape (`-1`: batch).
#[derive(Debug, Clone)]
pub struct Output {
    pub name: String,
    pub elem_type: i32,
    pub shape: Vec<i64>,
}

fn value_info(name: &str, elem_type: i32, shape: &[i64]) -> Msg {
    let mut dims = Msg::default();
    for &d in shape {
        let mut dim = Msg::default();
        if d < 0 {
            dim.str(2, "N");
        } else {
            dim.int(1, d);
        }
        dims.msg(1, dim);
    }
    let mut tensor = Msg::default();
    tensor.int(1, elem_type as i64).msg(2, dims);
    let mut ty = Msg::default();
    ty.msg(1, tensor);
    let mut v = Msg::default();
    v.str(1, name).msg(2, ty);
    v
}

/// The model's bytes: input `input` (float, `[N, features]`), the nodes in order, the outputs.
pub fn model(features: usize, nodes: &[Node], outputs: &[Output], doc: &str) -> Vec<u8> {
    let mut graph = Msg::default();
    for n in nodes {
        let mut node = Msg::default();
        n.inputs.iter().for_each(|i| {
            node.str(1, i);
        });
        n.outputs.iter().for_each(|o| {
            node.str(2, o);
        });
        node.str(3, n.op).str(4, n.op);
        for (name, a) in &n.attrs {
            let mut attr = Msg::default();
            attr.str(1, name);
            match a {
                Attr::Float(f) => attr.float(2, *f).int(20, 1),
                Attr::Int(i) => attr.int(3, *i).int(20, 2),
                Attr::Str(s) => attr.str(4, s).int(20, 3),
                Attr::Floats(f) => attr.packed_floats(7, f).int(20, 6),
                Attr::Ints(i) => attr.packed_ints(8, i).int(20, 7),
            };
            node.msg(5, attr);
        }
        node.str(7, "ai.onnx.ml");
        graph.msg(1, node);
    }
    graph.str(2, "plinth_linear");
    graph.msg(11, value_info("input", 1, &[-1, features as i64]));
    for o in outputs {
        graph.msg(12, value_info(&o.name, o.elem_type, &o.shape));
    }
    let mut model = Msg::default();
    model.int(1, 8).str(2, "plinth").str(3, env!("CARGO_PKG_VERSION")).str(6, doc);
    let mut ml = Msg::default();
    ml.str(1, "ai.onnx.ml").int(2, 1);
    model.msg(8, ml);
    let mut core = Msg::default();
    core.str(1, "").int(2, 13);
    model.msg(8, core);
    model.msg(7, graph);
    model.0
}
