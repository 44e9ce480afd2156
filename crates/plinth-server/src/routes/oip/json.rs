//! A reader for the common shape of an OIP JSON inference request, cheaper than serde's: 1-row
//! requests are mostly numbers, and serde's number visitor cost ~360 instructions each.
//!
//! It reads `{"id", "inputs": [{"name", "shape", "datatype", "data"}], "outputs": [{"name"}]}`
//! with data in (nested) arrays of numbers and booleans, and strings without escapes. It
//! answers `None` for anything else (any `parameters`, an escape, an unknown or repeated
//! key, anything malformed): serde then reads the body, and names the field of any error. So it
//! only ever accepts what serde accepts, and reads it the same way.
//!
//! Numbers with at most 19 digits and a power of ten within ±22 are converted exactly
//! (Clinger's fast path: both factors are exact doubles, so one division or multiplication
//! rounds correctly, as serde_json computes them); serde_json reads any other.

use serde_json::Map;

use super::{Flat, InferInput, InferRequest, Num, RequestedOutput};

/// The request, if the body has the common shape.
pub(super) fn read(body: &[u8]) -> Option<InferRequest> {
    let mut r = Reader { b: body, i: 0 };
    let req = r.request()?;
    r.space();
    (r.i == body.len()).then_some(req)
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn space(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// The next byte after whitespace, consumed.
    fn next(&mut self) -> Option<u8> {
        self.space();
        let c = *self.b.get(self.i)?;
        self.i += 1;
        Some(c)
    }

    fn peek(&mut self) -> Option<u8> {
        self.space();
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    /// A string without escapes or control characters (borrowing the body, not the reader).
    fn str(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let (b, start) = (self.b, self.i);
        let len = b[start..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        // Ends at its quote: not at an escape or a control character.
        (b[start + len] == b'"').then_some(())?;
        self.i = start + len + 1;
        std::str::from_utf8(&b[start..start + len]).ok()
    }

    /// The members of an object, each read by `member` (which answers `None` to give up).
    fn object(&mut self, mut member: impl FnMut(&mut Self, &str) -> Option<()>) -> Option<()> {
        self.expect(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let key = self.str()?;
            self.expect(b':')?;
            member(self, key)?;
            match self.next()? {
                b',' => {}
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    /// The elements of an array, each read by `element`, collected.
    fn list<T>(&mut self, mut element: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let mut items = Vec::new();
        self.array(|r| {
            items.push(element(r)?);
            Some(())
        })?;
        Some(items)
    }

    /// The elements of an array, each read by `element`.
    fn array(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.expect(b'[')?;
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            element(self)?;
            match self.next()? {
                b',' => {}
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    fn request(&mut self) -> Option<InferRequest> {
        let (mut id, mut inputs, mut outputs) = (None, None, None);
        self.object(|r, key| match key {
            "id" if id.is_none() => {
                id = Some(r.str()?.to_string());
                Some(())
            }
            "inputs" if inputs.is_none() => {
                inputs = Some(r.list(Self::input)?);
                Some(())
            }
            "outputs" if outputs.is_none() => {
                outputs = Some(r.list(|r| {
                    let mut name = None;
                    r.object(|r, key| match key {
                        "name" if name.is_none() => {
                            name = Some(r.str()?.to_string());
                            Some(())
                        }
                        _ => None,
                    })?;
                    Some(RequestedOutput { name: name?, parameters: Map::new() })
                })?);
                Some(())
            }
            _ => None,
        })?;
        Some(InferRequest {
            id,
            parameters: Map::new(),
            inputs: inputs?,
            outputs: outputs.unwrap_or_default(),
        })
    }

    fn input(&mut self) -> Option<InferInput> {
        let (mut name, mut shape, mut datatype, mut data) = (None, None, None, None);
        self.object(|r, key| match key {
            "name" if name.is_none() => {
                name = Some(r.str()?.to_string());
                Some(())
            }
            "datatype" if datatype.is_none() => {
                datatype = Some(r.str()?.to_string());
                Some(())
            }
            "shape" if shape.is_none() => {
                shape = Some(r.list(|r| {
                    r.space();
                    match r.number()? {
                        Num::Int(d) => Some(d),
                        Num::Float(_) => None,
                    }
                })?);
                Some(())
            }
            "data" if data.is_none() => {
                let mut flat = Flat::default();
                // Room for as many numbers as the shape holds, when it came first.
                let elements = shape.as_ref().and_then(|s: &Vec<i64>| {
                    s.iter().try_fold(1i64, |n, &d| n.checked_mul(d)).filter(|&n| n > 0)
                });
                flat.nums.reserve(elements.map_or(32, |n| n.min(1 << 20) as usize));
                r.values(&mut flat, MAX_DEPTH)?;
                data = Some(flat);
                Some(())
            }
            _ => None,
        })?;
        Some(InferInput {
            name: name?,
            shape: shape?,
            datatype: datatype?,
            parameters: Map::new(),
            data,
        })
    }

    /// A value of a tensor's data: a number, a boolean, a string, or an array of them, nested
    /// at most `depth` deep (deeper is left to serde, whose recursion limit refuses it).
    fn values(&mut self, flat: &mut Flat, depth: u32) -> Option<()> {
        match self.peek()? {
            b'[' => {
                let depth = depth.checked_sub(1)?;
                self.i += 1;
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    // Numbers, the common case, without a call per element.
                    match self.peek()? {
                        b'-' | b'0'..=b'9' => flat.nums.push(self.number()?),
                        _ => self.values(flat, depth)?,
                    }
                    match self.next()? {
                        b',' => {}
                        b']' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                flat.nums.push(self.number()?);
                Some(())
            }
            b't' => {
                self.literal(b"true")?;
                flat.bools.push(true);
                Some(())
            }
            b'f' => {
                self.literal(b"false")?;
                flat.bools.push(false);
                Some(())
            }
            b'"' => {
                let s = self.str()?.to_string();
                flat.strings.push(s);
                Some(())
            }
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// A number, read strictly by JSON's grammar. Integers that fit an i64 stay integers (as
    /// serde_json reads them: `-0` is a float).
    fn number(&mut self) -> Option<Num> {
        let b = self.b;
        let start = self.i;
        let negative = b.get(self.i) == Some(&b'-');
        if negative {
            self.i += 1;
        }
        let mut mantissa: u64 = 0;
        // Digits read into the mantissa, leading zeros included: up to 19 cannot overflow it.
        // (One digit before the point, as in most data, is read on its own.)
        let mut count = match (b.get(self.i), b.get(self.i + 1)) {
            (Some(&d @ b'0'..=b'9'), Some(b'.')) => {
                mantissa = u64::from(d - b'0');
                self.i += 1;
                1
            }
            _ => digits(b, &mut self.i, &mut mantissa),
        };
        // One digit at least, and no leading zero before another digit.
        if count == 0 || (count > 1 && b[self.i - count] == b'0') {
            return None;
        }
        let mut exponent: i64 = 0;
        let mut integer = true;
        if b.get(self.i) == Some(&b'.') {
            integer = false;
            self.i += 1;
            let fraction = digits(b, &mut self.i, &mut mantissa);
            if fraction == 0 {
                return None;
            }
            count += fraction;
            exponent -= fraction as i64;
        }
        if let Some(b'e' | b'E') = b.get(self.i) {
            integer = false;
            self.i += 1;
            let sign = b.get(self.i).copied();
            if let Some(b'-' | b'+') = sign {
                self.i += 1;
            }
            let (from, mut e) = (self.i, 0i64);
            while let Some(d @ b'0'..=b'9') = b.get(self.i) {
                e = (e * 10 + i64::from(d - b'0')).min(1 << 32);
                self.i += 1;
            }
            if self.i == from {
                return None;
            }
            exponent += if sign == Some(b'-') { -e } else { e };
        }
        let exact = count <= 19;
        Some(if integer && exact {
            match (negative, mantissa) {
                (true, 0) => Num::Float(-0.0),
                (true, m) if m <= 1 << 63 => Num::Int((m as i64).wrapping_neg()),
                (false, m) if m <= i64::MAX as u64 => Num::Int(m as i64),
                (_, m) => Num::Float(if negative { -(m as f64) } else { m as f64 }),
            }
        } else if exact && mantissa <= 1 << 53 && (-22..=22).contains(&exponent) {
            let m = mantissa as f64;
            let f = if exponent < 0 {
                m / POW10[exponent.unsigned_abs() as usize]
            } else {
                m * POW10[exponent as usize]
            };
            Num::Float(if negative { -f } else { f })
        } else {
            // Rare (more than 19 digits, a large power of ten): read by serde_json, as the rest
            // of the body would be, so that the answer is the same to the bit.
            match serde_json::from_slice::<serde_json::Number>(&b[start..self.i]).ok()? {
                n if n.is_i64() => Num::Int(n.as_i64()?),
                n => Num::Float(n.as_f64()?),
            }
        })
    }
}

/// How deep the arrays of a tensor's data may nest here. A tensor has a handful of
/// dimensions; deeper data goes to serde, which refuses nesting past its recursion limit (the
/// reader recurses once per level: without a bound, 20,000 `[` overflowed the stack).
const MAX_DEPTH: u32 = 32;

/// Exact powers of ten as doubles: 10^22 is the largest.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

const POW10_U64: [u64; 9] =
    [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000];

/// Reads the decimal digits at `*i` into `mantissa` (wrapping: the caller checks the count),
/// up to eight at a time, and answers how many there were.
fn digits(b: &[u8], i: &mut usize, mantissa: &mut u64) -> usize {
    let start = *i;
    while let Some(chunk) = b.get(*i..*i + 8) {
        let v = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let run = (not_digits(v).trailing_zeros() / 8) as usize;
        if run == 0 {
            return *i - start;
        }
        // The run's digits moved to the top bytes, zeros below: an eight-digit number with
        // leading zeros. (Subtracting '0' borrows only from the bytes past the run.)
        let run_digits = v.wrapping_sub(0x3030_3030_3030_3030) << (8 * (8 - run));
        *mantissa = mantissa.wrapping_mul(POW10_U64[run]).wrapping_add(value_of_eight(run_digits));
        *i += run;
        if run < 8 {
            return *i - start;
        }
    }
    // Fewer than eight bytes left.
    while let Some(d @ b'0'..=b'9') = b.get(*i) {
        *mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
        *i += 1;
    }
    *i - start
}

/// A byte of zero where `v` (eight bytes, little-endian) holds an ASCII digit, non-zero
/// elsewhere: a digit's high nibble is 3, and adding 6 does not carry into it (it is at most 9).
/// Adding 6 carries into the next byte only from a byte of 0xFA or more, a non-digit: the
/// lowest zero bytes (the run of digits) are exact whatever follows them.
fn not_digits(v: u64) -> u64 {
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    ((v & HIGH) | ((v.wrapping_add(0x0606_0606_0606_0606) & HIGH) >> 4)) ^ 0x3333_3333_3333_3333
}

/// The value of eight digits (0-9 in each byte, the first in the lowest), combined pairwise:
/// digits into pairs, pairs into fours, fours into the eight-digit number.
fn value_of_eight(d: u64) -> u64 {
    // Each 16-bit lane: first digit * 10 + second.
    let pairs = (d.wrapping_mul(10) + (d >> 8)) & 0x00FF_00FF_00FF_00FF;
    // Each 32-bit lane: first pair * 100 + second.
    let fours = (pairs.wrapping_mul(100) + (pairs >> 16)) & 0x0000_FFFF_0000_FFFF;
    // The first four * 10^4 + the second four.
    (fours & 0xFFFF).wrapping_mul(10_000) + (fours >> 32)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse_serde(body: &str) -> Option<InferRequest> {
        serde_json::from_str(body).ok()
    }

    /// The fast reader and serde agree on `body`: same request, or the fast reader gives up.
    fn agree(body: &str) -> bool {
        let fast = read(body.as_bytes());
        let slow = parse_serde(body);
        match (&fast, &slow) {
            (Some(f), Some(s)) => {
                assert_eq!(describe(f), describe(s), "{body}");
                true
            }
            (Some(_), None) => panic!("the fast reader accepted what serde refuses: {body}"),
            (None, _) => false,
        }
    }

    fn describe(r: &InferRequest) -> String {
        let inputs: Vec<String> = r
            .inputs
            .iter()
            .map(|i| {
                let data = i.data.as_ref().map(|d| {
                    let nums: Vec<String> = d
                        .nums
                        .iter()
                        .map(|n| match n {
                            Num::Int(i) => format!("i{i}"),
                            Num::Float(f) => format!("f{:x}", f.to_bits()),
                        })
                        .collect();
                    format!("{nums:?} {:?} {:?}", d.bools, d.strings)
                });
                format!("{} {:?} {} {:?} {data:?}", i.name, i.shape, i.datatype, i.parameters)
            })
            .collect();
        let outputs: Vec<&str> = r.outputs.iter().map(|o| o.name.as_str()).collect();
        format!("{:?} {:?} {inputs:?} {outputs:?}", r.id, r.parameters)
    }

    fn one(data: &str) -> String {
        format!(r#"{{"inputs":[{{"name":"x","shape":[1,1],"datatype":"FP64","data":[{data}]}}]}}"#)
    }

    #[test]
    fn reads_what_serde_reads_and_the_same_way() {
        let body = json!({
            "id": "r1",
            "inputs": [
                {"name": "input", "shape": [2, 3], "datatype": "FP32",
                 "data": [[-0.2741923, 0.65516573, 5.0007353], [1, -7, 1e5]]},
                {"name": "flags", "shape": [2], "datatype": "BOOL", "data": [true, false]},
                {"name": "words", "shape": [1], "datatype": "BYTES", "data": ["ünïcode"]},
            ],
            "outputs": [{"name": "label"}, {"name": "probabilities"}],
        })
        .to_string();
        assert!(agree(&body));
        let spaced = "{ \"inputs\" : [ { \"name\" : \"x\" , \"shape\" : [ 1 , 2 ] ,\n\t\"datatype\" : \"FP32\" , \"data\" : [ [ 1.5 , 2 ] ] } ] }\r\n";
        assert!(agree(spaced));
        assert!(agree(r#"{"inputs":[]}"#));
    }

    #[test]
    fn numbers_read_as_serde_json_reads_them() {
        for text in [
            "0",
            "-0",
            "7",
            "-7",
            "1.5",
            "-0.2741923",
            "0.65516573",
            "5.0007353",
            "1e5",
            "1E-5",
            "2.5e+3",
            "-3.376439",
            "123456789012345678",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "0.1",
            "0.30000000000000004",
            "1.7976931348623157e308",
            "5e-324",
            "123456789.123456789",
            "1e-30",
            "4.9406564584124654e-324",
            "0.00000000000000000000000000001",
            "12345678901234567890123",
            "3.14159265358979323846",
            "0.1234567",
            "12345678.87654321",
            "1e22",
            "1e23",
            "9007199254740993",
            "0e0",
            "-0.0",
        ] {
            // Each number next to others, so the eight-byte reads see what follows it.
            assert!(agree(&one(&format!("{text},{text}"))), "{text}");
            assert!(agree(&one(text)), "{text}");
        }
    }

    #[test]
    fn anything_else_is_left_to_serde() {
        for body in [
            one("1e400"),
            one("-1e400"),
            one("01"),
            one("1."),
            one(".5"),
            one("1e"),
            one("-"),
            one("+1"),
            one("null"),
            one("1,"),
            one("[1"),
            one(r#""a\"b""#),
            one("tru"),
            one("{}"),
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1],"parameters":{}}]}"#
                .to_string(),
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#
                .to_string(),
            r#"{"inputs":[],"parameters":{"binary_data_output":true}}"#.to_string(),
            r#"{"inputs":[{"name":"x","name":"y","shape":[1],"datatype":"FP32","data":[1]}]}"#
                .to_string(),
            r#"{"inputs":[{"name":"x","shape":[1.5],"datatype":"FP32","data":[1]}]}"#.to_string(),
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]} x"#.to_string(),
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],}"#.to_string(),
            r#"{"inputs":[],"other":1}"#.to_string(),
            r#"{"id":"a\nb","inputs":[]}"#.to_string(),
            r#"{"outputs":[]}"#.to_string(),
            String::new(),
        ] {
            assert!(!agree(&body), "the fast reader should give up on {body}");
        }
    }

    #[test]
    fn deep_arrays_are_left_to_serde_which_refuses_them() {
        let nested = |depth: usize| one(&format!("{}1{}", "[".repeat(depth), "]".repeat(depth)));
        assert!(agree(&nested(MAX_DEPTH as usize - 2)));
        assert!(!agree(&nested(MAX_DEPTH as usize)));
        // Far past any limit: neither reader recurses without bound.
        let deep = one(&"[".repeat(20_000));
        assert!(read(deep.as_bytes()).is_none());
        assert!(parse_serde(&deep).is_none());
    }

    #[test]
    fn runs_of_digits_read_eight_bytes_at_a_time_agree_with_one_at_a_time() {
        for text in [
            "12345678",
            "00000000",
            "99999999",
            "10203040",
            "8765432,",
            "1234567.",
            "1]",
            "0,1",
            "12 45678",
            "1234e567",
            "/1234567",
            ":1234567",
            "123456789012",
            "7\u{10ffff}xyz",
            "3",
            "42",
            "",
        ] {
            let (mut i, mut mantissa) = (0, 0);
            let n = digits(text.as_bytes(), &mut i, &mut mantissa);
            let run = text.bytes().take_while(u8::is_ascii_digit).count();
            assert_eq!((n, i), (run, run), "{text}");
            assert_eq!(mantissa, text[..run].parse::<u64>().unwrap_or(0), "{text}");
        }
    }
}
