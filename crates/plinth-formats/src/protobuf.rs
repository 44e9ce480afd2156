//! A minimal protobuf wire-format reader: enough to walk ONNX messages without generated code.
//!
//! Every read is bounds-checked; a truncated or corrupt message yields an error naming the
//! offset, never a panic.

pub(crate) const VARINT: u8 = 0;
pub(crate) const FIXED64: u8 = 1;
pub(crate) const LEN: u8 = 2;
pub(crate) const FIXED32: u8 = 5;

/// A field value as it appears on the wire.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

#[derive(Debug)]
pub(crate) struct WireError {
    pub offset: usize,
    pub reason: &'static str,
}

/// Iterates over the fields of one message.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(WireError { offset: self.pos, reason: "truncated varint" });
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError { offset: self.pos, reason: "varint longer than 10 bytes" })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.buf.len());
        let Some(end) = end else {
            return Err(WireError {
                offset: self.pos,
                reason: "field runs past the end of the message (truncated file?)",
            });
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next `(field number, value)`, or `None` at the end of the message.
    pub fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, WireError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let start = self.pos;
        let tag = self.varint()?;
        let field = tag >> 3;
        let wire = (tag & 7) as u8;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(WireError { offset: start, reason: "invalid field number" });
        }
        let value = match wire {
            VARINT => Value::Varint(self.varint()?),
            FIXED64 => {
                let b = self.take(8)?;
                Value::Fixed64(u64::from_le_bytes(b.try_into().expect("8 bytes")))
            }
            LEN => {
                let len = self.varint()?;
                let len = usize::try_from(len)
                    .map_err(|_| WireError { offset: start, reason: "length too large" })?;
                Value::Len(self.take(len)?)
            }
            FIXED32 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes(b.try_into().expect("4 bytes")))
            }
            _ => {
                return Err(WireError {
                    offset: start,
                    reason: "unsupported wire type (groups are not used by ONNX)",
                });
            }
        };
        Ok(Some((field as u32, value)))
    }
}

impl Value<'_> {
    pub fn wire_type(&self) -> u8 {
        match self {
            Value::Varint(_) => VARINT,
            Value::Fixed64(_) => FIXED64,
            Value::Len(_) => LEN,
            Value::Fixed32(_) => FIXED32,
        }
    }
}

/// Reads a packed or unpacked repeated varint field value into `out`.
pub(crate) fn push_varints(value: Value<'_>, out: &mut Vec<i64>) -> Result<(), WireError> {
    match value {
        Value::Varint(v) => out.push(v as i64),
        Value::Len(bytes) => {
            let mut r = Reader::new(bytes);
            while r.pos < bytes.len() {
                out.push(r.varint()? as i64);
            }
        }
        _ => return Err(WireError { offset: 0, reason: "expected a varint" }),
    }
    Ok(())
}

/// Reads a packed or unpacked repeated float field value into `out`.
pub(crate) fn push_floats(value: Value<'_>, out: &mut Vec<f32>) -> Result<(), WireError> {
    match value {
        Value::Fixed32(v) => out.push(f32::from_bits(v)),
        Value::Len(bytes) => {
            if bytes.len() % 4 != 0 {
                return Err(WireError {
                    offset: 0,
                    reason: "packed floats not a multiple of 4 bytes",
                });
            }
            out.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))));
        }
        _ => return Err(WireError { offset: 0, reason: "expected a float" }),
    }
    Ok(())
}

/// Reads a packed or unpacked repeated double field value into `out`.
pub(crate) fn push_doubles(value: Value<'_>, out: &mut Vec<f64>) -> Result<(), WireError> {
    match value {
        Value::Fixed64(v) => out.push(f64::from_bits(v)),
        Value::Len(bytes) => {
            if bytes.len() % 8 != 0 {
                return Err(WireError {
                    offset: 0,
                    reason: "packed doubles not a multiple of 8 bytes",
                });
            }
            out.extend(bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8"))));
        }
        _ => return Err(WireError { offset: 0, reason: "expected a double" }),
    }
    Ok(())
}
