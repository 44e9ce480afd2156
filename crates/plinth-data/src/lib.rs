//! Tabular data for Plinth, on Arrow: CSV (plain or gzip-compressed, types inferred) and Parquet
//! decoded into the core's columnar [`Table`], Parquet output, and the point-in-time join
//! ([`pit`]). Kept out of `plinth-core` so the core builds without Arrow; the binary hands a
//! [`Tables`] to the core as its `TableReader`.

pub mod pit;

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;
use plinth_core::data::{Column, ColumnData, FileFormat, PitJoin, Table, TableReader};

/// The Arrow-backed reader.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tables;

impl TableReader for Tables {
    fn read(&self, bytes: Vec<u8>, format: FileFormat) -> Result<Table, String> {
        let batches = read_any(bytes, format)?;
        to_table(&batches.0, &batches.1)
    }

    fn point_in_time(
        &self,
        entities: Vec<u8>,
        format: FileFormat,
        joins: Vec<PitJoin>,
    ) -> Result<Vec<u8>, String> {
        let (_, mut current) = read_any(entities, format)?;
        for j in joins {
            let (_, features) = read_any(j.features, j.format)?;
            let spec = pit::PitSpec {
                keys: j.keys,
                entity_timestamp: j.entity_timestamp,
                feature_timestamp: j.feature_timestamp,
                created_timestamp: j.created_timestamp,
                ttl_micros: j.ttl_micros,
                features: Some(j.columns),
            };
            current = vec![pit::pit_join(&current, &features, &spec)?];
        }
        let batch = current.first().ok_or("the entity table is empty")?;
        parquet_bytes(batch)
    }
}

/// Reads a CSV or Parquet file into record batches.
pub fn read_any(bytes: Vec<u8>, format: FileFormat) -> Result<Batches, String> {
    match format {
        FileFormat::Parquet => read_parquet(bytes),
        FileFormat::Csv => read_csv(bytes),
    }
}

/// One batch as Parquet bytes (Snappy).
pub fn parquet_bytes(batch: &RecordBatch) -> Result<Vec<u8>, String> {
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(false)
        .build();
    let mut out = Vec::new();
    let mut w =
        ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).map_err(|e| e.to_string())?;
    w.write(batch).map_err(|e| e.to_string())?;
    w.close().map_err(|e| e.to_string())?;
    Ok(out)
}

/// A file read whole: its columns (name, type) and its rows.
pub type Batches = (Vec<(String, DataType)>, Vec<RecordBatch>);

/// Reads a whole Parquet file. Flat files with several columns are decoded by two threads, each
/// taking half of the columns.
pub fn read_parquet(bytes: Vec<u8>) -> Result<Batches, String> {
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let bytes = bytes::Bytes::from(bytes);
    let open = || {
        ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
            .map_err(|e| format!("not a readable Parquet file: {e}"))
    };
    let builder = open()?;
    let schema = builder.schema().clone();
    let fields: Vec<(String, DataType)> =
        schema.fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
    // One batch per file when it fits: callers want whole columns, not chunks to glue.
    let rows = builder.metadata().file_metadata().num_rows().clamp(1, 1 << 24) as usize;
    let leaves = builder.parquet_schema().num_columns();
    let read = |builder: ParquetRecordBatchReaderBuilder<bytes::Bytes>| -> Result<Vec<RecordBatch>, String> {
        builder
            .with_batch_size(rows)
            .build()
            .map_err(|e| format!("not a readable Parquet file: {e}"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the Parquet file is damaged: {e}"))
    };
    if leaves != fields.len() || leaves < 4 || rows < 100_000 {
        return Ok((fields, read(builder)?));
    }
    let half = leaves / 2;
    let part = |range: std::ops::Range<usize>| -> Result<Vec<RecordBatch>, String> {
        let b = open()?;
        let mask = ProjectionMask::leaves(b.parquet_schema(), range);
        read(b.with_projection(mask))
    };
    let (a, b) = std::thread::scope(|s| {
        let first = s.spawn(|| part(0..half));
        let second = part(half..leaves);
        (first.join().unwrap_or_else(|_| Err("a Parquet reader thread failed".into())), second)
    });
    let (a, b) = (a?, b?);
    if a.len() != b.len() {
        return Err("the Parquet file is damaged: column chunks disagree on row counts".into());
    }
    let batches = a
        .into_iter()
        .zip(b)
        .map(|(x, y)| {
            let columns: Vec<ArrayRef> = x.columns().iter().chain(y.columns()).cloned().collect();
            RecordBatch::try_new(schema.clone(), columns)
                .map_err(|e| format!("the Parquet file is damaged: {e}"))
        })
        .collect::<Result<_, _>>()?;
    Ok((fields, batches))
}

/// Reads a Parquet file from disk into record batches.
pub fn read_parquet_file(path: &std::path::Path) -> Result<Vec<RecordBatch>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    read_parquet(bytes).map(|(_, b)| b).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes one batch as a Parquet file (Snappy-compressed), atomically: a temporary file in the
/// same folder is renamed into place once complete.
pub fn write_parquet_file(path: &std::path::Path, batch: &RecordBatch) -> Result<(), String> {
    let bytes = parquet_bytes(batch)?;
    let dir =
        path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let tmp = tempfile_in(dir)?;
    std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn tempfile_in(dir: &std::path::Path) -> Result<std::path::PathBuf, String> {
    let name = format!(
        ".plinth-{}-{}.tmp",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    Ok(dir.join(name))
}

/// Reads a whole CSV file (header row; types inferred from every row; gzip detected).
pub fn read_csv(bytes: Vec<u8>) -> Result<Batches, String> {
    use arrow::csv::ReaderBuilder;
    use arrow::csv::reader::Format;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| format!("not a readable gzip file: {e}"))?;
        out
    } else {
        bytes
    };
    if std::str::from_utf8(&bytes[..bytes.len().min(64 * 1024)]).is_err()
        && std::str::from_utf8(&bytes[..bytes.len().min(64 * 1024).saturating_sub(4)]).is_err()
    {
        return Err("not a CSV file: the content is not UTF-8 text".into());
    }
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err("the CSV file is empty: it needs at least a header row".into());
    }
    let format = Format::default().with_header(true);
    let (schema, _) = format
        .infer_schema(Cursor::new(&bytes), None)
        .map_err(|e| format!("not a readable CSV file: {e}"))?;
    let mut seen = std::collections::HashSet::new();
    for f in schema.fields() {
        if f.name().trim().is_empty() {
            return Err("the CSV header has an empty column name".into());
        }
        if !seen.insert(f.name().clone()) {
            return Err(format!("the CSV header names column '{}' twice", f.name()));
        }
    }
    let fields =
        schema.fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
    let reader = ReaderBuilder::new(Arc::new(schema))
        .with_format(format)
        .with_batch_size(65_536)
        .build(Cursor::new(bytes))
        .map_err(|e| format!("not a readable CSV file: {e}"))?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the CSV file has a bad row: {e}"))?;
    Ok((fields, batches))
}

fn convert(name: &str, dt: &DataType, arrays: &[&ArrayRef]) -> Result<ColumnData, String> {
    let cast_all = |to: &DataType| -> Result<Vec<ArrayRef>, String> {
        arrays
            .iter()
            .map(|a| {
                cast(a, to).map_err(|e| format!("column '{name}': cannot read {dt} values: {e}"))
            })
            .collect()
    };
    use DataType::*;
    Ok(match dt {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => {
            let mut v = Vec::new();
            for a in cast_all(&Int64)? {
                let a = a.as_any().downcast_ref::<Int64Array>().expect("cast to Int64");
                v.extend(a.iter());
            }
            ColumnData::Int64(v)
        }
        Float16 | Float32 | Float64 | Decimal128(..) | Decimal256(..) => {
            let mut v = Vec::new();
            for a in cast_all(&Float64)? {
                let a = a.as_any().downcast_ref::<Float64Array>().expect("cast to Float64");
                v.extend(a.iter());
            }
            ColumnData::Float64(v)
        }
        Boolean => {
            let mut v = Vec::new();
            for a in arrays {
                let a = a.as_any().downcast_ref::<BooleanArray>().expect("a boolean array");
                v.extend(a.iter());
            }
            ColumnData::Bool(v)
        }
        Utf8 | LargeUtf8 | Utf8View | Dictionary(..) | Binary | LargeBinary | BinaryView => {
            let mut dict: Vec<String> = Vec::new();
            let mut index: HashMap<String, u32> = HashMap::new();
            let mut codes = Vec::new();
            for a in cast_all(&Utf8)? {
                let a = a.as_any().downcast_ref::<StringArray>().expect("cast to Utf8");
                codes.reserve(a.len());
                for s in a.iter() {
                    codes.push(s.map(|s| match index.get(s) {
                        Some(c) => *c,
                        None => {
                            let c = dict.len() as u32;
                            dict.push(s.to_string());
                            index.insert(s.to_string(), c);
                            c
                        }
                    }));
                }
            }
            ColumnData::Str { dict, codes }
        }
        Timestamp(..) | Date32 | Date64 => {
            let mut v = Vec::new();
            for a in cast_all(&Timestamp(TimeUnit::Microsecond, None))? {
                let a = a
                    .as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .expect("cast to timestamp");
                v.extend(a.iter());
            }
            ColumnData::Timestamp(v)
        }
        Null => ColumnData::Str {
            dict: vec![],
            codes: vec![None; arrays.iter().map(|a| a.len()).sum()],
        },
        other => {
            return Err(format!("column '{name}' has type {other}, which Plinth does not read"));
        }
    })
}

fn to_table(fields: &[(String, DataType)], batches: &[RecordBatch]) -> Result<Table, String> {
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    let mut columns = Vec::with_capacity(fields.len());
    for (i, (name, dt)) in fields.iter().enumerate() {
        let arrays: Vec<&ArrayRef> = batches.iter().map(|b| b.column(i)).collect();
        columns.push(Column { name: name.clone(), data: convert(name, dt, &arrays)? });
    }
    Ok(Table { columns, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_types_nulls_and_gzip() {
        let csv = b"age,name,score,ok\n30,ann,1.5,true\n,bob,,false\n41,,2.0,\n".to_vec();
        let t = Tables.read(csv.clone(), FileFormat::Csv).unwrap();
        assert_eq!(t.rows, 3);
        assert_eq!(
            t.column("age").unwrap().data,
            ColumnData::Int64(vec![Some(30), None, Some(41)])
        );
        assert_eq!(
            t.column("score").unwrap().data,
            ColumnData::Float64(vec![Some(1.5), None, Some(2.0)])
        );
        assert_eq!(
            t.column("ok").unwrap().data,
            ColumnData::Bool(vec![Some(true), Some(false), None])
        );
        assert_eq!(t.column("name").unwrap().data.text(2), None);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &csv).unwrap();
        let t2 = Tables.read(gz.finish().unwrap(), FileFormat::Csv).unwrap();
        assert_eq!(t, t2);
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let e = Tables.read(b"PAR1garbage".to_vec(), FileFormat::Parquet).unwrap_err();
        assert!(e.contains("Parquet"), "{e}");
        let e = Tables.read(b"a,a\n1,2\n".to_vec(), FileFormat::Csv).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let e = Tables.read(b"a,b\n1,2\n3\n".to_vec(), FileFormat::Csv).unwrap_err();
        assert!(e.contains("row") || e.contains("CSV"), "{e}");
        let e = Tables.read(vec![], FileFormat::Csv).unwrap_err();
        assert!(e.contains("empty"), "{e}");
    }
}
