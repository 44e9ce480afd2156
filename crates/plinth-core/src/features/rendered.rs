//! Stored online rows decoded and rendered as JSON once, then reused by every read that finds
//! the same row: an answer of 100 entities × 10 features is then copies, not 1,000 floats
//! formatted and 100 times in RFC 3339.
//!
//! The memo is keyed by the row itself (event time and encoded bytes), so it can never answer
//! with a row other than the one the store returned: a changed row has another key, and is
//! rendered afresh. It works the same over both online stores.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::online::{Stored, decode_values};

/// One stored row, decoded and rendered.
#[derive(Debug)]
pub struct RenderedRow {
    /// The values, for the prediction path.
    pub values: Vec<Value>,
    /// The values' JSON texts, one after the other; value `i` ends at `ends[i]`.
    json: Box<[u8]>,
    ends: Box<[u32]>,
    /// The event time in RFC 3339.
    pub time: Box<str>,
}

impl RenderedRow {
    fn new(stored: &Stored) -> Option<RenderedRow> {
        let values = decode_values(&stored.values)?;
        let mut json = Vec::with_capacity(values.len() * 20);
        let mut ends = Vec::with_capacity(values.len());
        for v in &values {
            // Writing a JSON value into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut json, v);
            ends.push(json.len() as u32);
        }
        Some(RenderedRow {
            values,
            json: json.into(),
            ends: ends.into(),
            time: super::rfc3339(stored.event_micros).into(),
        })
    }

    /// The JSON text of value `pos` (`None` past the end).
    pub fn json(&self, pos: usize) -> Option<&[u8]> {
        let end = *self.ends.get(pos)? as usize;
        let start = if pos == 0 { 0 } else { self.ends[pos - 1] as usize };
        Some(&self.json[start..end])
    }

    fn size(&self, key: usize) -> usize {
        key + self.json.len() + self.ends.len() * 4 + self.values.len() * 32 + self.time.len() + 128
    }
}

/// A stored row's identity: its event time and encoded values.
type RowKey = (i64, Arc<[u8]>);

/// The memo: rows by (event time, encoded values), up to a byte budget; when full it starts
/// over (hot rows come back on their next read). Keys share the stored rows' bytes.
pub struct RenderCache {
    rows: RwLock<HashMap<RowKey, Arc<RenderedRow>>>,
    bytes: AtomicUsize,
    budget: usize,
}

impl Default for RenderCache {
    fn default() -> Self {
        RenderCache::new(RENDER_CACHE_BYTES)
    }
}

/// Memory the memo may use.
const RENDER_CACHE_BYTES: usize = 32 << 20;

impl RenderCache {
    pub fn new(budget: usize) -> RenderCache {
        RenderCache { rows: RwLock::default(), bytes: AtomicUsize::new(0), budget }
    }

    /// The row rendered: from the memo when the same row was rendered before, else rendered
    /// now and remembered. `None` when its bytes do not decode.
    pub fn get(&self, stored: &Stored) -> Option<Arc<RenderedRow>> {
        let key = (stored.event_micros, stored.values.clone());
        if let Some(row) = self.rows.read().expect("render lock").get(&key) {
            return Some(row.clone());
        }
        let row = Arc::new(RenderedRow::new(stored)?);
        let size = row.size(stored.values.len());
        let mut map = self.rows.write().expect("render lock");
        if self.bytes.fetch_add(size, Ordering::Relaxed) + size > self.budget {
            map.clear();
            self.bytes.store(size, Ordering::Relaxed);
        }
        map.insert(key, row.clone());
        Some(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::online::encode_values;
    use serde_json::json;

    fn stored(t: i64, values: &[Value]) -> Stored {
        Stored { event_micros: t, values: encode_values(values).into() }
    }

    #[test]
    fn rows_render_once_and_never_answer_for_another_row() {
        let cache = RenderCache::new(1 << 20);
        let a = stored(1_000_000, &[json!(0.1), json!(null), json!("x\"y"), json!(7), json!(true)]);
        let first = cache.get(&a).unwrap();
        let texts: Vec<&[u8]> = (0..5).map(|i| first.json(i).unwrap()).collect();
        assert_eq!(texts, [&b"0.1"[..], b"null", b"\"x\\\"y\"", b"7", b"true"]);
        assert!(first.json(5).is_none());
        assert_eq!(&*first.time, "1970-01-01T00:00:01Z");
        // The same row again: the memo's.
        assert!(Arc::ptr_eq(&first, &cache.get(&a).unwrap()));
        // Same values, another event time: rendered afresh with its own time.
        let later = cache.get(&stored(2_000_000, &[json!(0.1)])).unwrap();
        assert_eq!((&*later.time, later.values.len()), ("1970-01-01T00:00:02Z", 1));
        let b = stored(2_000_000, &[json!(0.1), json!(null), json!("x\"y"), json!(7), json!(true)]);
        assert_eq!(&*cache.get(&b).unwrap().time, "1970-01-01T00:00:02Z");
        // Bytes that do not decode render nothing.
        assert!(cache.get(&Stored { event_micros: 0, values: vec![9].into() }).is_none());
    }

    #[test]
    fn a_full_memo_starts_over() {
        let cache = RenderCache::new(600);
        for i in 0..20 {
            let row = cache.get(&stored(i, &[json!(i as f64 + 0.5)])).unwrap();
            assert_eq!(row.values, vec![json!(i as f64 + 0.5)]);
        }
        assert!(cache.bytes.load(Ordering::Relaxed) <= 600);
        assert!(cache.rows.read().unwrap().len() < 20);
    }
}
