//! The online store: the latest feature row of each entity, by key, for low-latency reads. One
//! interface, two stores: an embedded one (redb, a file under the data directory; the default)
//! and Redis for scale. Both keep a value only if its event time is not older than the stored
//! one, atomically, so a late push or a re-run materialization never goes back in time.

use std::path::Path;
use std::sync::Arc;

use redb::{ReadableDatabase, TableDefinition};
use serde_json::Value;

use crate::error::{Error, Result};

/// The online store's value encoding: per feature a tag byte, then the value (little endian):
/// 0 null, 1 f64, 2 i64, 3 false, 4 true, 5 string (u32 length + UTF-8).
pub(crate) fn encode_values(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 9);
    for v in values {
        match v {
            Value::Null => out.push(0),
            Value::Number(n) => match n.as_i64() {
                Some(i) if !n.is_f64() => {
                    out.push(2);
                    out.extend_from_slice(&i.to_le_bytes());
                }
                _ => {
                    out.push(1);
                    out.extend_from_slice(&n.as_f64().unwrap_or(f64::NAN).to_le_bytes());
                }
            },
            Value::Bool(b) => out.push(if *b { 4 } else { 3 }),
            Value::String(s) => {
                out.push(5);
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            other => {
                let s = other.to_string();
                out.push(5);
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
    out
}

/// Encodes one cell of a feature of type `kind`, as [`encode_values`] encodes the JSON value
/// that cell reads as (numbers of a float feature as floats, non-finite ones as null).
pub(crate) fn encode_cell(
    out: &mut Vec<u8>,
    kind: plinth_api::data::ColumnType,
    column: &crate::data::ColumnData,
    row: usize,
) {
    use crate::data::ColumnData;
    use plinth_api::data::ColumnType;
    match (kind, column) {
        (ColumnType::Float64, c) => match c.number(row).filter(|x| x.is_finite()) {
            Some(x) => {
                out.push(1);
                out.extend_from_slice(&x.to_le_bytes());
            }
            None => out.push(0),
        },
        (ColumnType::Int64, ColumnData::Int64(v)) => match v[row] {
            Some(x) => {
                out.push(2);
                out.extend_from_slice(&x.to_le_bytes());
            }
            None => out.push(0),
        },
        (ColumnType::Bool, ColumnData::Bool(v)) => match v[row] {
            Some(b) => out.push(if b { 4 } else { 3 }),
            None => out.push(0),
        },
        (_, c) => match c.text(row) {
            Some(s) => {
                out.push(5);
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            None => out.push(0),
        },
    }
}

pub(crate) fn decode_values(mut b: &[u8]) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    let eight = |b: &[u8]| -> Option<[u8; 8]> { b.get(..8)?.try_into().ok() };
    while let Some((&tag, rest)) = b.split_first() {
        b = rest;
        out.push(match tag {
            0 => Value::Null,
            1 => {
                let x = f64::from_le_bytes(eight(b)?);
                b = &b[8..];
                serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
            }
            2 => {
                let x = i64::from_le_bytes(eight(b)?);
                b = &b[8..];
                Value::from(x)
            }
            3 => Value::Bool(false),
            4 => Value::Bool(true),
            5 => {
                let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
                let s = std::str::from_utf8(b.get(4..4 + n)?).ok()?.to_string();
                b = &b[4 + n..];
                Value::String(s)
            }
            _ => return None,
        });
    }
    Some(out)
}

/// A stored row: its event time (µs) and its encoded values (shared: a cached row is handed
/// out without copying).
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub event_micros: i64,
    pub values: Arc<[u8]>,
}

#[async_trait::async_trait]
pub trait OnlineStore: Send + Sync {
    /// Writes each row whose event time is at least the stored one's. Returns how many were
    /// written.
    async fn write(&self, rows: Vec<(String, Stored)>) -> Result<usize>;
    /// Reads the rows of the keys, in order (`None` for absent keys).
    async fn read(&self, keys: &[String]) -> Result<Vec<Option<Stored>>>;
    /// For logs: `embedded:<path>` or `redis://host:port`.
    fn describe(&self) -> String;
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(plinth_api::Code::Unavailable, format!("the online store ({what}) failed: {e}"))
}

const ROWS: TableDefinition<&str, &[u8]> = TableDefinition::new("rows");

/// The embedded store: one redb file. Values are the event time (8 bytes, big-endian) followed
/// by the encoded values. Rows read are kept in memory ([`RowCache`]): this process is the
/// file's only writer (redb locks the file), so updating the cache on every write keeps it
/// exact.
pub struct EmbeddedStore {
    db: Arc<redb::Database>,
    path: String,
    cache: Arc<RowCache>,
}

/// Rows recently read, by key, kept up to date by writes, up to a byte budget; when full it
/// starts over (a cheap generation reset: hot rows come back on their next read).
///
/// A read could race a write (the read's snapshot older than a row the write just cached):
/// every write bumps `writes` under the lock, and rows read are kept only if no write
/// happened since the read began.
pub struct RowCache {
    rows: std::sync::RwLock<std::collections::HashMap<String, Stored>>,
    writes: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicUsize,
    budget: usize,
}

impl RowCache {
    fn new(budget: usize) -> RowCache {
        RowCache {
            rows: std::sync::RwLock::default(),
            writes: std::sync::atomic::AtomicU64::new(0),
            bytes: std::sync::atomic::AtomicUsize::new(0),
            budget,
        }
    }

    fn get(&self, key: &str) -> Option<Stored> {
        self.rows.read().expect("cache lock").get(key).cloned()
    }

    /// How many writes have gone through the cache: read it before a read transaction begins.
    fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Rows a committed write stored: cached ones are replaced (others are left to their
    /// first read, so a bulk load does not push the hot rows out).
    fn put_written(&self, rows: impl IntoIterator<Item = (String, Stored)>) {
        let mut map = self.rows.write().expect("cache lock");
        self.writes.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        for (key, row) in rows {
            if let Some(cached) = map.get_mut(&key) {
                *cached = row;
            }
        }
    }

    /// Rows a read found, if no write went through since `writes_before` (else they may be
    /// older than what that write cached).
    fn put_read(&self, rows: Vec<(String, Stored)>, writes_before: u64) {
        let mut map = self.rows.write().expect("cache lock");
        if self.writes() == writes_before {
            self.insert(&mut map, rows);
        }
    }

    fn insert(
        &self,
        map: &mut std::collections::HashMap<String, Stored>,
        rows: impl IntoIterator<Item = (String, Stored)>,
    ) {
        use std::sync::atomic::Ordering;
        for (key, row) in rows {
            let size = key.len() + row.values.len() + 64;
            if self.bytes.fetch_add(size, Ordering::Relaxed) + size > self.budget {
                map.clear();
                self.bytes.store(size, Ordering::Relaxed);
            }
            map.insert(key, row);
        }
    }
}

/// Memory the embedded store's row cache may use.
const ROW_CACHE_BYTES: usize = 64 << 20;

impl EmbeddedStore {
    pub fn open(path: &Path) -> Result<EmbeddedStore> {
        let db = redb::Database::create(path).map_err(|e| unavailable("embedded", e))?;
        let txn = db.begin_write().map_err(|e| unavailable("embedded", e))?;
        txn.open_table(ROWS).map_err(|e| unavailable("embedded", e))?;
        txn.commit().map_err(|e| unavailable("embedded", e))?;
        Ok(EmbeddedStore {
            db: Arc::new(db),
            path: path.display().to_string(),
            cache: Arc::new(RowCache::new(ROW_CACHE_BYTES)),
        })
    }
}

fn encode(s: &Stored) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + s.values.len());
    out.extend_from_slice(&s.event_micros.to_be_bytes());
    out.extend_from_slice(&s.values);
    out
}

fn decode(b: &[u8]) -> Option<Stored> {
    let ts = i64::from_be_bytes(b.get(..8)?.try_into().ok()?);
    Some(Stored { event_micros: ts, values: b[8..].into() })
}

#[async_trait::async_trait]
impl OnlineStore for EmbeddedStore {
    async fn write(&self, mut rows: Vec<(String, Stored)>) -> Result<usize> {
        let (db, cache) = (self.db.clone(), self.cache.clone());
        tokio::task::spawn_blocking(move || -> Result<usize> {
            // In key order the B-tree is walked once, left to right, instead of at random. A
            // stable sort keeps the later of two rows of one key last, so it wins as it should.
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            let e = |e: &dyn std::fmt::Display| unavailable("embedded", e);
            let txn = db.begin_write().map_err(|x| e(&x))?;
            // Whether each row replaced the stored one.
            let mut kept = vec![true; rows.len()];
            {
                let mut t = txn.open_table(ROWS).map_err(|x| e(&x))?;
                for ((key, row), kept) in rows.iter().zip(&mut kept) {
                    // Insert, and put the old row back in the rare case it was newer: one
                    // B-tree walk per row instead of two.
                    let bytes = encode(row);
                    let old = t
                        .insert(key.as_str(), bytes.as_slice())
                        .map_err(|x| e(&x))?
                        .map(|old| old.value().to_vec());
                    if let Some(o) = old.as_deref().and_then(decode)
                        && o.event_micros > row.event_micros
                    {
                        t.insert(key.as_str(), encode(&o).as_slice()).map_err(|x| e(&x))?;
                        *kept = false;
                    }
                }
            }
            txn.commit().map_err(|x| e(&x))?;
            // Committed: the cache learns the rows now stored (a later row of one key wins).
            let written = kept.iter().filter(|k| **k).count();
            cache.put_written(rows.into_iter().zip(kept).filter(|(_, k)| *k).map(|(r, _)| r));
            Ok(written)
        })
        .await
        .map_err(Error::internal)?
    }

    async fn read(&self, keys: &[String]) -> Result<Vec<Option<Stored>>> {
        // Reads are a few microseconds each: done inline, no thread hop.
        let mut out: Vec<Option<Stored>> = keys.iter().map(|k| self.cache.get(k)).collect();
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| out[i].is_none()).collect();
        if missing.is_empty() {
            return Ok(out);
        }
        let e = |e: &dyn std::fmt::Display| unavailable("embedded", e);
        let writes_before = self.cache.writes();
        let txn = self.db.begin_read().map_err(|x| e(&x))?;
        let t = txn.open_table(ROWS).map_err(|x| e(&x))?;
        let mut found = Vec::new();
        for i in missing {
            let row = t.get(keys[i].as_str()).map_err(|x| e(&x))?.and_then(|v| decode(v.value()));
            if let Some(row) = &row {
                found.push((keys[i].clone(), row.clone()));
            }
            out[i] = row;
        }
        self.cache.put_read(found, writes_before);
        Ok(out)
    }

    fn describe(&self) -> String {
        format!("embedded:{}", self.path)
    }
}

/// Keeps the newer row, atomically: `KEYS[1]`, `ARGV[1]` event time, `ARGV[2]` value.
const WRITE_IF_NEWER: &str = r"
local cur = redis.call('HGET', KEYS[1], 't')
if (not cur) or tonumber(cur) <= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 't', ARGV[1], 'v', ARGV[2])
  return 1
end
return 0";

/// Redis: one hash per key (`t` event time, `v` values), under a prefix.
pub struct RedisStore {
    conn: redis::aio::ConnectionManager,
    prefix: String,
    url: String,
    script: redis::Script,
}

impl RedisStore {
    pub async fn open(url: &str, prefix: &str) -> Result<RedisStore> {
        let client = redis::Client::open(url).map_err(|e| unavailable("redis", e))?;
        let conn = redis::aio::ConnectionManager::new(client)
            .await
            .map_err(|e| unavailable("redis", e))?;
        let mut c = conn.clone();
        let _: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(WRITE_IF_NEWER)
            .query_async(&mut c)
            .await
            .map_err(|e| unavailable("redis", e))?;
        let shown = match url.split_once('@') {
            Some((_, host)) => format!("redis://…@{host}"),
            None => url.to_string(),
        };
        Ok(RedisStore {
            conn,
            prefix: prefix.to_string(),
            url: shown,
            script: redis::Script::new(WRITE_IF_NEWER),
        })
    }
}

#[async_trait::async_trait]
impl OnlineStore for RedisStore {
    async fn write(&self, rows: Vec<(String, Stored)>) -> Result<usize> {
        let mut conn = self.conn.clone();
        let mut written = 0;
        for chunk in rows.chunks(1000) {
            let mut pipe = redis::pipe();
            for (key, row) in chunk {
                pipe.invoke_script(
                    self.script
                        .key(format!("{}{key}", self.prefix))
                        .arg(row.event_micros)
                        .arg(&*row.values),
                );
            }
            let done: Vec<i64> = match pipe.query_async(&mut conn).await {
                Ok(d) => d,
                // The server lost its script cache (a restart): load it again, retry once.
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    let _: String = redis::cmd("SCRIPT")
                        .arg("LOAD")
                        .arg(WRITE_IF_NEWER)
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| unavailable("redis", e))?;
                    pipe.query_async(&mut conn).await.map_err(|e| unavailable("redis", e))?
                }
                Err(e) => return Err(unavailable("redis", e)),
            };
            written += done.iter().filter(|d| **d == 1).count();
        }
        Ok(written)
    }

    async fn read(&self, keys: &[String]) -> Result<Vec<Option<Stored>>> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("HMGET").arg(format!("{}{k}", self.prefix)).arg("t").arg("v");
        }
        let rows: Vec<(Option<i64>, Option<Vec<u8>>)> =
            pipe.query_async(&mut conn).await.map_err(|e| unavailable("redis", e))?;
        Ok(rows
            .into_iter()
            .map(|(t, v)| match (t, v) {
                (Some(t), Some(v)) => Some(Stored { event_micros: t, values: v.into() }),
                _ => None,
            })
            .collect())
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

/// The shared behaviour both stores must have; run by each store's tests.
#[cfg(test)]
pub(crate) async fn conformance(store: &dyn OnlineStore, ns: &str) {
    let k = |s: &str| format!("{ns}:{s}");
    let row = |t: i64, v: &str| Stored { event_micros: t, values: v.as_bytes().into() };
    assert_eq!(store.read(&[k("a")]).await.unwrap(), vec![None]);
    let n = store.write(vec![(k("a"), row(10, "a10")), (k("b"), row(5, "b5"))]).await.unwrap();
    assert_eq!(n, 2);
    // Older rows never replace newer ones; equal or newer ones do.
    let n = store.write(vec![(k("a"), row(9, "a9")), (k("b"), row(5, "b5bis"))]).await.unwrap();
    assert_eq!(n, 1);
    let got = store.read(&[k("a"), k("missing"), k("b")]).await.unwrap();
    assert_eq!(got, vec![Some(row(10, "a10")), None, Some(row(5, "b5bis"))]);
    store.write(vec![(k("a"), row(11, ""))]).await.unwrap();
    assert_eq!(store.read(&[k("a")]).await.unwrap(), vec![Some(row(11, ""))]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stored_values_round_trip() {
        let values = vec![
            json!(0.1),
            json!(-3),
            Value::Null,
            json!(true),
            json!(false),
            json!("Lyon ✓"),
            json!(1e300),
        ];
        assert_eq!(decode_values(&encode_values(&values)).unwrap(), values);
        assert_eq!(decode_values(&[9]), None, "an unknown tag is refused");

        // Cells encode as their JSON values do.
        use crate::data::ColumnData;
        use plinth_api::data::ColumnType;
        let cells = [
            (ColumnType::Float64, ColumnData::Float64(vec![Some(0.25)]), json!(0.25)),
            (ColumnType::Float64, ColumnData::Int64(vec![Some(3)]), json!(3.0)),
            (ColumnType::Float64, ColumnData::Float64(vec![Some(f64::NAN)]), Value::Null),
            (ColumnType::Int64, ColumnData::Int64(vec![Some(-7)]), json!(-7)),
            (ColumnType::Int64, ColumnData::Int64(vec![None]), Value::Null),
            (ColumnType::Bool, ColumnData::Bool(vec![Some(true)]), json!(true)),
            (
                ColumnType::String,
                ColumnData::Str { dict: vec!["a✓".into()], codes: vec![Some(0)] },
                json!("a✓"),
            ),
        ];
        for (kind, column, value) in cells {
            let mut out = Vec::new();
            encode_cell(&mut out, kind, &column, 0);
            assert_eq!(out, encode_values(std::slice::from_ref(&value)), "{kind:?} {value}");
        }
        assert_eq!(decode_values(&[1, 0, 0]), None, "a truncated value is refused");
    }

    #[tokio::test]
    async fn the_row_cache_never_serves_a_row_older_than_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("online.redb")).unwrap();
        let row = |t: i64, v: &str| Stored { event_micros: t, values: v.as_bytes().into() };
        let k = || vec!["k".to_string()];
        store.write(vec![("k".into(), row(1, "one"))]).await.unwrap();
        assert_eq!(store.read(&k()).await.unwrap(), vec![Some(row(1, "one"))]);
        // A write after a cached read replaces the cached row; an older one does not.
        store.write(vec![("k".into(), row(2, "two"))]).await.unwrap();
        store.write(vec![("k".into(), row(0, "zero"))]).await.unwrap();
        assert_eq!(store.read(&k()).await.unwrap(), vec![Some(row(2, "two"))]);
        // Rows read before a write are not cached after it.
        let before = store.cache.writes();
        store.write(vec![("k".into(), row(3, "three"))]).await.unwrap();
        store.cache.put_read(vec![("k".into(), row(2, "two"))], before);
        assert_eq!(store.read(&k()).await.unwrap(), vec![Some(row(3, "three"))]);
        // A full cache starts over, and reads still answer from the store.
        let small = RowCache::new(200);
        small.put_read((0..10).map(|i| (format!("k{i}"), row(i, "v"))).collect(), 0);
        assert!(small.rows.read().unwrap().len() < 10);
        assert_eq!(small.get("k9"), Some(row(9, "v")), "the newest rows survive a reset");
        // Writes replace cached rows and leave the others to their first read.
        small.put_written([("k9".to_string(), row(10, "w")), ("new".to_string(), row(1, "n"))]);
        assert_eq!((small.get("k9"), small.get("new")), (Some(row(10, "w")), None));
    }

    #[tokio::test]
    async fn embedded_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("online.redb")).unwrap();
        conformance(&store, "t").await;
        // Durable: reopened, the rows are there.
        drop(store);
        let store = EmbeddedStore::open(&dir.path().join("online.redb")).unwrap();
        assert!(store.read(&["t:a".to_string()]).await.unwrap()[0].is_some());
    }

    #[tokio::test]
    async fn redis_store_conforms() {
        let url = std::env::var("PLINTH_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
        let prefix = format!("plinth-test-{}:", crate::util::new_id("t"));
        let store = RedisStore::open(&url, &prefix).await.expect("Redis on 127.0.0.1:6379");
        conformance(&store, "t").await;
    }
}
