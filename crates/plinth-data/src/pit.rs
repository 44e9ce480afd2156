//! Point-in-time joins: for each entity row, the feature row of the same entity with the latest
//! event timestamp at or before the entity's timestamp and within the TTL; among rows with that
//! timestamp, the one created last. Entity rows without a match are kept, with null features
//! (Feast's semantics, without its file store's habit of dropping them).
//!
//! The operator is an as-of merge over Arrow arrays: feature rows are bucketed by entity key
//! (a counting sort, O(n)), each bucket ordered by (event time, created time), and each entity
//! row binary-searches its bucket. The answer is gathered column by column with Arrow's `take`,
//! so feature columns keep their types and nulls.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray, UInt32Array};
use arrow::compute::{cast, concat_batches, take};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use std::sync::Arc;

/// What to join on and what to bring.
#[derive(Debug, Clone)]
pub struct PitSpec {
    /// Join key columns, present in both tables (one or more).
    pub keys: Vec<String>,
    /// The entity table's timestamp column.
    pub entity_timestamp: String,
    /// The feature table's event timestamp column.
    pub feature_timestamp: String,
    /// The feature table's created timestamp column, which breaks ties of event time.
    pub created_timestamp: Option<String>,
    /// Feature rows older than the entity timestamp minus this many microseconds do not match.
    pub ttl_micros: Option<i64>,
    /// The feature columns to bring (default: every column that is not a key or timestamp).
    pub features: Option<Vec<String>>,
}

/// A multiplicative hash for integer keys: the default SipHash costs more than the join.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_i64(&mut self, v: i64) {
        self.0 = (v as u64 ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    }
}

type Fast = BuildHasherDefault<KeyHasher>;

fn column<'a>(batch: &'a RecordBatch, name: &str, side: &str) -> Result<&'a ArrayRef, String> {
    batch.column_by_name(name).ok_or_else(|| format!("the {side} table has no column '{name}'"))
}

/// Microseconds since the epoch (time zones are instants already; naive times count as UTC);
/// nulls become `NULL_TS`, which sorts first and matches nothing.
fn micros(a: &ArrayRef, name: &str, side: &str) -> Result<Vec<i64>, String> {
    match a.data_type() {
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {}
        other => {
            return Err(format!("column '{name}' of the {side} table is {other}, not a timestamp"));
        }
    }
    let c = cast(a, &DataType::Timestamp(TimeUnit::Microsecond, None))
        .map_err(|e| format!("column '{name}': {e}"))?;
    let c = cast(&c, &DataType::Int64).map_err(|e| format!("column '{name}': {e}"))?;
    let c = c.as_any().downcast_ref::<Int64Array>().expect("cast to Int64");
    if c.null_count() == 0 {
        return Ok(c.values().to_vec());
    }
    Ok(c.iter().map(|v| v.unwrap_or(NULL_TS)).collect())
}

/// The timestamp of a null: before every real one, never matched.
const NULL_TS: i64 = i64::MIN;

/// Interns each row's join key as a dense id. Integer keys hash as integers; anything else as
/// its string form. Nulls never match.
struct Keys {
    /// Integer keys in a compact range are their own ids (`v - min`): no hashing.
    dense: Option<(i64, i64)>,
    ints: HashMap<i64, u32, Fast>,
    strs: HashMap<String, u32, Fast>,
    next: u32,
}

impl Keys {
    fn new() -> Keys {
        Keys { dense: None, ints: HashMap::default(), strs: HashMap::default(), next: 0 }
    }

    /// Ids of every row; `insert` false looks up only (unknown keys are `None`).
    fn ids(&mut self, cols: &[&ArrayRef], insert: bool) -> Result<Vec<Option<u32>>, String> {
        let n = cols.first().map_or(0, |c| c.len());
        if let [single] = cols
            && single.data_type().is_integer()
        {
            let c = cast(single, &DataType::Int64).map_err(|e| e.to_string())?;
            let c = c.as_any().downcast_ref::<Int64Array>().expect("cast to Int64");
            if insert && self.next == 0 {
                let min = arrow::compute::min(c).unwrap_or(0);
                let max = arrow::compute::max(c).unwrap_or(0);
                let span = max.checked_sub(min).unwrap_or(i64::MAX);
                if span < (4 * n as i64).max(1024) {
                    self.dense = Some((min, max));
                    self.next = (span + 1) as u32;
                }
            }
            if let Some((min, max)) = self.dense {
                return Ok(c
                    .iter()
                    .map(|v| v.filter(|v| (min..=max).contains(v)).map(|v| (v - min) as u32))
                    .collect());
            }
            let mut out = Vec::with_capacity(n);
            for v in c.iter() {
                out.push(v.and_then(|v| self.int(v, insert)));
            }
            return Ok(out);
        }
        let strs: Vec<ArrayRef> = cols
            .iter()
            .map(|c| cast(c, &DataType::Utf8).map_err(|e| format!("join key: {e}")))
            .collect::<Result<_, _>>()?;
        let strs: Vec<&StringArray> =
            strs.iter().map(|c| c.as_any().downcast_ref().expect("cast to Utf8")).collect();
        let mut out = Vec::with_capacity(n);
        let mut key = String::new();
        for i in 0..n {
            key.clear();
            let mut null = false;
            for s in &strs {
                if s.is_null(i) {
                    null = true;
                    break;
                }
                key.push_str(s.value(i));
                key.push('\u{1f}');
            }
            out.push(if null { None } else { self.string(&key, insert) });
        }
        Ok(out)
    }

    fn int(&mut self, v: i64, insert: bool) -> Option<u32> {
        if let Some(id) = self.ints.get(&v) {
            return Some(*id);
        }
        if !insert {
            return None;
        }
        let id = self.next;
        self.next += 1;
        self.ints.insert(v, id);
        Some(id)
    }

    fn string(&mut self, v: &str, insert: bool) -> Option<u32> {
        if let Some(id) = self.strs.get(v) {
            return Some(*id);
        }
        if !insert {
            return None;
        }
        let id = self.next;
        self.next += 1;
        self.strs.insert(v.to_string(), id);
        Some(id)
    }
}

/// Joins `entities` to `features` as of each entity row's timestamp. The result has the entity
/// table's columns, in its row order, then the feature columns.
pub fn pit_join(
    entities: &[RecordBatch],
    features: &[RecordBatch],
    spec: &PitSpec,
) -> Result<RecordBatch, String> {
    let e = concat(entities, "entity")?;
    let f = concat(features, "feature")?;
    if spec.keys.is_empty() {
        return Err("give at least one join key".into());
    }
    let f_keys: Vec<&ArrayRef> =
        spec.keys.iter().map(|k| column(&f, k, "feature")).collect::<Result<_, _>>()?;
    let e_keys: Vec<&ArrayRef> =
        spec.keys.iter().map(|k| column(&e, k, "entity")).collect::<Result<_, _>>()?;
    for (k, (a, b)) in spec.keys.iter().zip(e_keys.iter().zip(&f_keys)) {
        if a.data_type().is_integer() != b.data_type().is_integer() {
            return Err(format!(
                "join key '{k}' is {} in the entity table but {} in the feature table",
                a.data_type(),
                b.data_type()
            ));
        }
    }
    let f_ts = micros(
        column(&f, &spec.feature_timestamp, "feature")?,
        &spec.feature_timestamp,
        "feature",
    )?;
    let created = match &spec.created_timestamp {
        Some(c) => Some(micros(column(&f, c, "feature")?, c, "feature")?),
        None => None,
    };
    let e_ts =
        micros(column(&e, &spec.entity_timestamp, "entity")?, &spec.entity_timestamp, "entity")?;
    let feature_names: Vec<String> = match &spec.features {
        Some(names) => {
            for n in names {
                column(&f, n, "feature")?;
            }
            names.clone()
        }
        None => f
            .schema()
            .fields()
            .iter()
            .map(|fl| fl.name().clone())
            .filter(|n| {
                !spec.keys.contains(n)
                    && *n != spec.feature_timestamp
                    && Some(n) != spec.created_timestamp.as_ref()
            })
            .collect(),
    };

    // Bucket feature rows by key (counting sort); each entry carries its event time, created
    // time and row, so ordering and searching a bucket touch only that bucket's memory.
    let mut keys = Keys::new();
    let f_ids = keys.ids(&f_keys, true)?;
    let n_keys = keys.next as usize;
    let mut starts = vec![0u32; n_keys + 1];
    for (id, ts) in f_ids.iter().zip(&f_ts) {
        if let Some(id) = id
            && *ts != NULL_TS
        {
            starts[*id as usize + 1] += 1;
        }
    }
    for i in 0..n_keys {
        starts[i + 1] += starts[i];
    }
    let mut entries = vec![(0i64, 0i64, 0u32); starts[n_keys] as usize];
    // Two threads, each owning half of the key space (a contiguous half of `entries`).
    let mid = n_keys / 2;
    let (low, high) = entries.split_at_mut(starts[mid] as usize);
    let fill_half = |out: &mut [(i64, i64, u32)], keys: std::ops::Range<usize>| {
        let base = starts[keys.start];
        let mut fill: Vec<u32> = starts[keys.clone()].iter().map(|s| s - base).collect();
        for (row, (id, &ts)) in f_ids.iter().zip(&f_ts).enumerate() {
            if let Some(id) = id
                && keys.contains(&(*id as usize))
                && ts != NULL_TS
            {
                let at = &mut fill[*id as usize - keys.start];
                let c = created.as_ref().map_or(0, |c| c[row]);
                out[*at as usize] = (ts, c, row as u32);
                *at += 1;
            }
        }
        for k in keys {
            let bucket = &mut out[(starts[k] - base) as usize..(starts[k + 1] - base) as usize];
            if !bucket.is_sorted() {
                bucket.sort_unstable();
            }
        }
    };
    std::thread::scope(|s| {
        s.spawn(|| fill_half(low, 0..mid));
        fill_half(high, mid..n_keys);
    });

    // As-of lookup for each entity row, the rows split between two threads.
    let e_ids = keys.ids(&e_keys, false)?;
    let lower = |ts: i64| spec.ttl_micros.map_or(i64::MIN, |ttl| ts.saturating_sub(ttl));
    let lookup = |(id, &ts): (&Option<u32>, &i64)| -> Option<u32> {
        let k = (*id)? as usize;
        if ts == NULL_TS {
            return None;
        }
        let bucket = &entries[starts[k] as usize..starts[k + 1] as usize];
        // Entries at or before ts come first: the last of them is the answer.
        let n = bucket.partition_point(|e| e.0 <= ts);
        let (t, _, row) = *bucket.get(n.checked_sub(1)?)?;
        (t >= lower(ts)).then_some(row)
    };
    let half = e_ids.len() / 2;
    let (first, second) = std::thread::scope(|s| {
        let first =
            s.spawn(|| e_ids[..half].iter().zip(&e_ts[..half]).map(lookup).collect::<Vec<_>>());
        let second: Vec<Option<u32>> =
            e_ids[half..].iter().zip(&e_ts[half..]).map(lookup).collect();
        (first.join().expect("lookup thread"), second)
    });
    let mut pick = first;
    pick.extend(second);
    let indices = UInt32Array::from(pick);

    let mut fields: Vec<Field> = e.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns: Vec<ArrayRef> = e.columns().to_vec();
    for name in &feature_names {
        let a = column(&f, name, "feature")?;
        if e.column_by_name(name).is_some() {
            return Err(format!("column '{name}' is in both tables: rename one"));
        }
        columns.push(take(a.as_ref(), &indices, None).map_err(|e| e.to_string())?);
        let field = f.schema().field_with_name(name).map_err(|e| e.to_string())?.clone();
        fields.push(field.with_nullable(true));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}

fn concat(batches: &[RecordBatch], side: &str) -> Result<RecordBatch, String> {
    let first = batches.first().ok_or_else(|| format!("the {side} table is empty"))?;
    if batches.len() == 1 {
        return Ok(first.clone());
    }
    concat_batches(&first.schema(), batches).map_err(|e| format!("the {side} table: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, TimestampMicrosecondArray};

    const H: i64 = 3_600_000_000;

    fn features(rows: &[(i64, i64, i64, f64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), false),
            Field::new("created", DataType::Timestamp(TimeUnit::Microsecond, None), false),
            Field::new("v", DataType::Float64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1 * H))),
                Arc::new(TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.2 * H))),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.3))),
            ],
        )
        .unwrap()
    }

    fn entities(rows: &[(i64, i64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1 * H))
                        .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap()
    }

    fn join(f: &RecordBatch, e: &RecordBatch, ttl_hours: Option<i64>) -> Vec<Option<f64>> {
        let spec = PitSpec {
            keys: vec!["id".into()],
            entity_timestamp: "at".into(),
            feature_timestamp: "ts".into(),
            created_timestamp: Some("created".into()),
            ttl_micros: ttl_hours.map(|h| h * H),
            features: None,
        };
        let out = pit_join(std::slice::from_ref(e), std::slice::from_ref(f), &spec).unwrap();
        assert_eq!(out.num_columns(), 3, "entity columns, then the feature");
        out.column(2).as_any().downcast_ref::<Float64Array>().unwrap().iter().collect()
    }

    #[test]
    fn hand_computed_cases() {
        // Entity 1: rows at 10h and 20h, a late-arriving correction of 10h created at 30h, and a
        // row created later but for 25h. Entity 2: one old row.
        let f = features(&[
            (1, 20, 20, 2.0),
            (1, 10, 10, 1.0),
            (1, 10, 30, 1.5),
            (2, 0, 0, 9.0),
            (1, 25, 26, 3.0),
        ]);
        let e = entities(&[
            (1, 9),  // before any row: no match
            (1, 10), // equal timestamp: the row at 10h, the correction created last wins
            (1, 19), // latest at or before 19h: 10h
            (1, 20), // exactly at 20h
            (1, 24), // 20h
            (1, 60), // 25h (35h earlier: inside the TTL)
            (2, 48), // 0h, 48h earlier: within a 48h TTL (inclusive)
            (2, 49), // 49h later: outside the TTL
            (3, 50), // unknown entity: kept, null
        ]);
        assert_eq!(
            join(&f, &e, Some(48)),
            vec![
                None,
                Some(1.5),
                Some(1.5),
                Some(2.0),
                Some(2.0),
                Some(3.0),
                Some(9.0),
                None,
                None
            ]
        );
        // Without a TTL the old row still matches.
        assert_eq!(join(&f, &e, None)[7], Some(9.0));
    }

    #[test]
    fn bad_specs_are_refused_with_the_column() {
        let f = features(&[(1, 1, 1, 1.0)]);
        let e = entities(&[(1, 2)]);
        let spec = PitSpec {
            keys: vec!["id".into()],
            entity_timestamp: "id".into(),
            feature_timestamp: "ts".into(),
            created_timestamp: None,
            ttl_micros: None,
            features: Some(vec!["nope".into()]),
        };
        let err = pit_join(std::slice::from_ref(&e), std::slice::from_ref(&f), &spec).unwrap_err();
        assert!(err.contains("'id' of the entity table is Int64, not a timestamp"), "{err}");
        let spec = PitSpec { entity_timestamp: "at".into(), ..spec };
        let err = pit_join(&[e], &[f], &spec).unwrap_err();
        assert!(err.contains("no column 'nope'"), "{err}");
    }
}
