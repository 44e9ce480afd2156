//! Tensors: a shape and typed, row-major data. The runtimes take and return these.

/// Typed tensor contents.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    Bool(Vec<bool>),
    Str(Vec<String>),
}

impl Data {
    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::F64(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::I32(v) => v.len(),
            Data::Bool(v) => v.len(),
            Data::Str(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Data::F32(_) => "FP32",
            Data::F64(_) => "FP64",
            Data::I64(_) => "INT64",
            Data::I32(_) => "INT32",
            Data::Bool(_) => "BOOL",
            Data::Str(_) => "BYTES",
        }
    }

    /// The values as f32, borrowed when they already are (numbers convert; strings do not).
    pub fn as_f32(&self) -> Option<std::borrow::Cow<'_, [f32]>> {
        match self {
            Data::F32(v) => Some(std::borrow::Cow::Borrowed(v)),
            other => other.to_f32().map(std::borrow::Cow::Owned),
        }
    }

    /// The values as f32 (numbers convert; strings and booleans do not).
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        Some(match self {
            Data::F32(v) => v.clone(),
            Data::F64(v) => v.iter().map(|&x| x as f32).collect(),
            Data::I64(v) => v.iter().map(|&x| x as f32).collect(),
            Data::I32(v) => v.iter().map(|&x| x as f32).collect(),
            Data::Bool(v) => v.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect(),
            Data::Str(_) => return None,
        })
    }
}

/// A tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Data,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Data) -> Tensor {
        debug_assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape {shape:?} does not hold {} values",
            data.len()
        );
        Tensor { shape, data }
    }

    pub fn f32(shape: Vec<usize>, values: Vec<f32>) -> Tensor {
        Tensor::new(shape, Data::F32(values))
    }

    pub fn i64(shape: Vec<usize>, values: Vec<i64>) -> Tensor {
        Tensor::new(shape, Data::I64(values))
    }

    /// Rows and columns of a 2-D tensor (a 1-D tensor is one row).
    pub fn rows_cols(&self) -> (usize, usize) {
        match self.shape.as_slice() {
            [] => (1, 1),
            [n] => (1, *n),
            [r, rest @ ..] => (*r, rest.iter().product()),
        }
    }
}

impl Tensor {
    /// `{"shape": [...], "data": [...]}` (NaN and infinities become null).
    pub fn to_json(&self) -> serde_json::Value {
        let data = match &self.data {
            Data::F32(v) => serde_json::json!(
                v.iter().map(|x| if x.is_finite() { Some(*x) } else { None }).collect::<Vec<_>>()
            ),
            Data::F64(v) => serde_json::json!(
                v.iter().map(|x| if x.is_finite() { Some(*x) } else { None }).collect::<Vec<_>>()
            ),
            Data::I64(v) => serde_json::json!(v),
            Data::I32(v) => serde_json::json!(v),
            Data::Bool(v) => serde_json::json!(v),
            Data::Str(v) => serde_json::json!(v),
        };
        serde_json::json!({"shape": self.shape, "data": data})
    }
}
