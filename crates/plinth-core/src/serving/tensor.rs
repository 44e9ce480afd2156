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

    /// The values as f64 (numbers and booleans convert; strings do not).
    pub fn as_f64_vec(&self) -> Option<Vec<f64>> {
        Some(match self {
            Data::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Data::F64(v) => v.clone(),
            Data::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Data::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Data::Bool(v) => v.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect(),
            Data::Str(_) => return None,
        })
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

impl Data {
    /// Appends the values as little-endian bytes, the layout of Triton's binary tensors (BYTES:
    /// a 4-byte little-endian length, then the bytes, per element).
    pub fn write_le(&self, out: &mut Vec<u8>) {
        match self {
            Data::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::F64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::I64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::I32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
            Data::Str(v) => v.iter().for_each(|s| {
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }),
        }
    }

    /// The bytes per element of an OIP datatype; 0 for BYTES (variable), `None` if unknown.
    pub fn element_size(datatype: &str) -> Option<usize> {
        Some(match datatype {
            "FP32" | "INT32" | "UINT32" => 4,
            "FP64" | "INT64" | "UINT64" => 8,
            "FP16" | "BF16" | "INT16" | "UINT16" => 2,
            "INT8" | "UINT8" | "BOOL" => 1,
            "BYTES" => 0,
            _ => return None,
        })
    }

    /// Reads little-endian values of an OIP datatype (the inverse of [`Data::write_le`]). FP16
    /// and BF16 widen to f32, narrow integers to i32, UINT32/UINT64 to i64.
    pub fn from_le(datatype: &str, bytes: &[u8]) -> Result<Data, String> {
        let width =
            Data::element_size(datatype).ok_or_else(|| format!("unknown datatype '{datatype}'"))?;
        if width > 0 && !bytes.len().is_multiple_of(width) {
            return Err(format!(
                "{} bytes is not a whole number of {datatype} values",
                bytes.len()
            ));
        }
        let w2 = |c: &[u8]| u16::from_le_bytes([c[0], c[1]]);
        let w4 = |c: &[u8]| -> [u8; 4] { c.try_into().expect("4 bytes") };
        let w8 = |c: &[u8]| -> [u8; 8] { c.try_into().expect("8 bytes") };
        Ok(match datatype {
            "FP32" => Data::F32(bytes.chunks_exact(4).map(|c| f32::from_le_bytes(w4(c))).collect()),
            "FP64" => Data::F64(bytes.chunks_exact(8).map(|c| f64::from_le_bytes(w8(c))).collect()),
            "FP16" => Data::F32(bytes.chunks_exact(2).map(|c| half_to_f32(w2(c))).collect()),
            "BF16" => Data::F32(
                bytes.chunks_exact(2).map(|c| f32::from_bits(u32::from(w2(c)) << 16)).collect(),
            ),
            "INT64" => {
                Data::I64(bytes.chunks_exact(8).map(|c| i64::from_le_bytes(w8(c))).collect())
            }
            "UINT64" => {
                Data::I64(bytes.chunks_exact(8).map(|c| u64::from_le_bytes(w8(c)) as i64).collect())
            }
            "INT32" => {
                Data::I32(bytes.chunks_exact(4).map(|c| i32::from_le_bytes(w4(c))).collect())
            }
            "UINT32" => Data::I64(
                bytes.chunks_exact(4).map(|c| i64::from(u32::from_le_bytes(w4(c)))).collect(),
            ),
            "INT16" => Data::I32(bytes.chunks_exact(2).map(|c| i32::from(w2(c) as i16)).collect()),
            "UINT16" => Data::I32(bytes.chunks_exact(2).map(|c| i32::from(w2(c))).collect()),
            "INT8" => Data::I32(bytes.iter().map(|&b| i32::from(b as i8)).collect()),
            "UINT8" => Data::I32(bytes.iter().map(|&b| i32::from(b)).collect()),
            "BOOL" => Data::Bool(bytes.iter().map(|&b| b != 0).collect()),
            _ => {
                let mut strings = Vec::new();
                let mut rest = bytes;
                while !rest.is_empty() {
                    if rest.len() < 4 {
                        return Err("a BYTES element's 4-byte length is cut short".into());
                    }
                    let len = u32::from_le_bytes(w4(&rest[..4])) as usize;
                    if rest.len() < 4 + len {
                        return Err("a BYTES element is longer than the data that follows".into());
                    }
                    strings.push(String::from_utf8_lossy(&rest[4..4 + len]).into_owned());
                    rest = &rest[4 + len..];
                }
                Data::Str(strings)
            }
        })
    }
}

/// IEEE half precision to f32.
fn half_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, mut f) => {
            // Subnormal: normalize.
            let mut e: u32 = 127 - 15 + 1;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((f & 0x3ff) << 13)
        }
        (31, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_little_endian_bytes() {
        for data in [
            Data::F32(vec![1.5, -0.0, f32::MAX]),
            Data::F64(vec![0.1, -2.0]),
            Data::I64(vec![i64::MIN, 7]),
            Data::I32(vec![-3, 4]),
            Data::Bool(vec![true, false]),
            Data::Str(vec!["a".into(), String::new(), "ünï".into()]),
        ] {
            let mut bytes = Vec::new();
            data.write_le(&mut bytes);
            assert_eq!(Data::from_le(data.type_name(), &bytes).unwrap(), data);
        }
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(0x0001), 2f32.powi(-24));
        assert!(Data::from_le("FP32", &[0, 0, 0]).is_err());
        assert!(Data::from_le("BYTES", &[9, 0, 0, 0, 1]).is_err());
    }
}
