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

    fn scan(
        &self,
        path: &std::path::Path,
        format: FileFormat,
        columns: Option<&[String]>,
        each: &mut dyn FnMut(Table) -> Result<(), String>,
    ) -> Result<(), String> {
        let file = FileScan::open(path, format)?;
        let names: Vec<String> = file.schema.fields().iter().map(|f| f.name().clone()).collect();
        let keep = match columns {
            Some(columns) => positions(&names, columns)?,
            None => (0..names.len()).collect(),
        };
        let fields: Vec<(String, DataType)> = keep
            .iter()
            .map(|&i| (names[i].clone(), file.schema.field(i).data_type().clone()))
            .collect();
        let mut any = false;
        file.batches(Some(&keep), &mut |b| {
            any = true;
            each(to_table(&fields, &[b])?)
        })?;
        if !any {
            // No rows: the columns still are what they are.
            let schema = Arc::new(file.schema.project(&keep).map_err(|e| e.to_string())?);
            each(to_table(&fields, &[RecordBatch::new_empty(schema)])?)?;
        }
        Ok(())
    }

    fn write_parquet(
        &self,
        out: &mut dyn std::io::Write,
        source: &mut dyn plinth_core::data::Rows,
    ) -> Result<u64, String> {
        let mut stream: Option<ParquetStream> = None;
        let mut rows = 0u64;
        source.scan(&mut |t: &Table| {
            let batch = to_batch(t)?;
            let s = match &mut stream {
                Some(s) => s,
                None => stream.insert(ParquetStream::new(batch.schema())?),
            };
            out.write_all(&s.write(&batch)?).map_err(|e| e.to_string())?;
            rows += t.rows as u64;
            Ok(())
        })?;
        if let Some(s) = stream {
            out.write_all(&s.finish()?).map_err(|e| e.to_string())?;
        }
        Ok(rows)
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

/// Parquet written as batches arrive: bytes come out as row groups (of at most 64Ki rows) fill,
/// so a long result never sits whole in memory.
pub struct ParquetStream {
    writer: parquet::arrow::ArrowWriter<SharedBuffer>,
    buffer: SharedBuffer,
}

/// A `Write` whose bytes can be taken while a writer still holds it.
#[derive(Clone, Default)]
struct SharedBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buffer lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuffer {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().expect("buffer lock"))
    }
}

impl ParquetStream {
    pub fn new(schema: arrow::datatypes::SchemaRef) -> Result<ParquetStream, String> {
        use parquet::basic::Compression;
        use parquet::file::properties::WriterProperties;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_dictionary_enabled(false)
            .set_max_row_group_row_count(Some(65_536))
            .build();
        let buffer = SharedBuffer::default();
        let writer = parquet::arrow::ArrowWriter::try_new(buffer.clone(), schema, Some(props))
            .map_err(|e| e.to_string())?;
        Ok(ParquetStream { writer, buffer })
    }

    /// Adds a batch; answers the bytes written since the last call (empty until a row group
    /// is full).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, String> {
        self.writer.write(batch).map_err(|e| e.to_string())?;
        Ok(self.buffer.take())
    }

    /// The rest of the file: the last row group and the footer.
    pub fn finish(self) -> Result<Vec<u8>, String> {
        self.writer.close().map_err(|e| e.to_string())?;
        Ok(self.buffer.take())
    }
}

/// A file read whole: its columns (name, type) and its rows.
pub type Batches = (Vec<(String, DataType)>, Vec<RecordBatch>);

/// Reads a whole Parquet file. Flat files with several columns are decoded by two threads, each
/// taking half of the columns.
pub fn read_parquet(bytes: Vec<u8>) -> Result<Batches, String> {
    let bytes = bytes::Bytes::from(bytes);
    read_parquet_from(|| Ok(bytes.clone()))
}

/// Reads a whole Parquet file from a source opened once per reading thread (each reads the
/// column chunks it decodes, straight from the source).
fn read_parquet_from<R: parquet::file::reader::ChunkReader + 'static>(
    source: impl Fn() -> Result<R, String> + Sync,
) -> Result<Batches, String> {
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let open = || {
        ParquetRecordBatchReaderBuilder::try_new(source()?)
            .map_err(|e| format!("not a readable Parquet file: {e}"))
    };
    let builder = open()?;
    let schema = builder.schema().clone();
    let fields: Vec<(String, DataType)> =
        schema.fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
    // One batch per file when it fits: callers want whole columns, not chunks to glue.
    let rows = builder.metadata().file_metadata().num_rows().clamp(1, 1 << 24) as usize;
    let leaves = builder.parquet_schema().num_columns();
    let read = |builder: ParquetRecordBatchReaderBuilder<R>| -> Result<Vec<RecordBatch>, String> {
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

/// Rows per batch when a file is scanned (at most).
const SCAN_BATCH_ROWS: usize = 65_536;

/// Cells per batch when a file is scanned: the readers set room aside for a whole batch of every
/// column, so a wide file reads fewer rows at a time (5,000 columns at 65,536 rows zeroed 2.6 GB
/// of field offsets for a one-row upload, 15 s).
const SCAN_BATCH_CELLS: usize = 1 << 20;

/// Rows per batch for a file of `columns` columns.
fn batch_rows(columns: usize) -> usize {
    (SCAN_BATCH_CELLS / columns.max(1)).clamp(1, SCAN_BATCH_ROWS)
}

/// The positions of `columns` among `names`, in file order; a missing one is an error.
fn positions(names: &[String], columns: &[String]) -> Result<Vec<usize>, String> {
    let present: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    for c in columns {
        if !present.contains(c.as_str()) {
            return Err(format!("the file has no column '{c}'"));
        }
    }
    let wanted: std::collections::HashSet<&str> = columns.iter().map(String::as_str).collect();
    Ok((0..names.len()).filter(|&i| wanted.contains(names[i].as_str())).collect())
}

/// A CSV or Parquet file read one batch of rows at a time: memory holds one batch, whatever the
/// file's size. Its schema comes from the Parquet footer, or for CSV from a first pass that
/// infers the types from every row (as [`read_csv`] does) without holding them.
#[derive(Debug, Clone)]
pub struct FileScan {
    path: std::path::PathBuf,
    format: FileFormat,
    schema: arrow::datatypes::SchemaRef,
    gzip: bool,
}

impl FileScan {
    pub fn open(path: &std::path::Path, format: FileFormat) -> Result<FileScan, String> {
        let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
        let file = std::fs::File::open(path).map_err(cannot)?;
        let (schema, gzip) = match format {
            FileFormat::Parquet => {
                let builder =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                        .map_err(|e| format!("not a readable Parquet file: {e}"))?;
                (builder.schema().clone(), false)
            }
            FileFormat::Csv => {
                let mut file = std::io::BufReader::new(file);
                let head = std::io::BufRead::fill_buf(&mut file).map_err(cannot)?;
                let gzip = head.starts_with(&[0x1f, 0x8b]);
                let scan = FileScan {
                    path: path.into(),
                    format,
                    schema: Arc::new(arrow::datatypes::Schema::empty()),
                    gzip,
                };
                // The text's start: UTF-8 (a character cut at the end of it aside), not blank.
                let mut start = Vec::with_capacity(64 * 1024);
                scan.csv_reader()?
                    .take(64 * 1024)
                    .read_to_end(&mut start)
                    .map_err(|e| format!("not a readable gzip file: {e}"))?;
                if std::str::from_utf8(&start).is_err()
                    && std::str::from_utf8(&start[..start.len().saturating_sub(4)]).is_err()
                {
                    return Err("not a CSV file: the content is not UTF-8 text".into());
                }
                if start.iter().all(|b| b.is_ascii_whitespace()) {
                    return Err("the CSV file is empty: it needs at least a header row".into());
                }
                let (schema, _) = csv_format()
                    .infer_schema(scan.csv_reader()?, None)
                    .map_err(|e| format!("not a readable CSV file: {e}"))?;
                check_csv_header(&schema)?;
                (Arc::new(schema), gzip)
            }
        };
        Ok(FileScan { path: path.into(), format, schema, gzip })
    }

    pub fn schema(&self) -> &arrow::datatypes::SchemaRef {
        &self.schema
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn csv_reader(&self) -> Result<Box<dyn Read + Send>, String> {
        let file = std::fs::File::open(&self.path)
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        Ok(if self.gzip {
            Box::new(std::io::BufReader::new(flate2::read::MultiGzDecoder::new(
                std::io::BufReader::new(file),
            )))
        } else {
            Box::new(std::io::BufReader::new(file))
        })
    }

    /// Reads the file in batches of rows, with only the columns at `projection` (by position
    /// in [`FileScan::schema`]; all when `None`), handing each batch to `each`, which may stop
    /// the scan with an error.
    pub fn batches(
        &self,
        projection: Option<&[usize]>,
        each: &mut dyn FnMut(RecordBatch) -> Result<(), String>,
    ) -> Result<(), String> {
        match self.format {
            FileFormat::Parquet => {
                use parquet::arrow::ProjectionMask;
                use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
                let file = std::fs::File::open(&self.path)
                    .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
                let mut builder = ParquetRecordBatchReaderBuilder::try_new(file)
                    .map_err(|e| format!("not a readable Parquet file: {e}"))?;
                if let Some(p) = projection {
                    let mask = ProjectionMask::roots(builder.parquet_schema(), p.iter().copied());
                    builder = builder.with_projection(mask);
                }
                let columns = projection.map_or(self.schema.fields().len(), <[usize]>::len);
                let reader = builder
                    .with_batch_size(batch_rows(columns))
                    .build()
                    .map_err(|e| format!("not a readable Parquet file: {e}"))?;
                for batch in reader {
                    each(batch.map_err(|e| format!("the Parquet file is damaged: {e}"))?)?;
                }
            }
            FileFormat::Csv => {
                // Every field of a row is parsed, whichever are kept.
                let mut builder = arrow::csv::ReaderBuilder::new(self.schema.clone())
                    .with_format(csv_format())
                    .with_batch_size(batch_rows(self.schema.fields().len()));
                if let Some(p) = projection {
                    builder = builder.with_projection(p.to_vec());
                }
                let reader = builder
                    .build(self.csv_reader()?)
                    .map_err(|e| format!("not a readable CSV file: {e}"))?;
                for batch in reader {
                    each(batch.map_err(|e| format!("the CSV file has a bad row: {e}"))?)?;
                }
            }
        }
        Ok(())
    }
}

fn csv_format() -> arrow::csv::reader::Format {
    arrow::csv::reader::Format::default().with_header(true)
}

/// Column names must be present and distinct.
fn check_csv_header(schema: &arrow::datatypes::Schema) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for f in schema.fields() {
        if f.name().trim().is_empty() {
            return Err("the CSV header has an empty column name".into());
        }
        if !seen.insert(f.name().clone()) {
            return Err(format!("the CSV header names column '{}' twice", f.name()));
        }
    }
    Ok(())
}

/// Reads a Parquet file from disk into record batches (its column chunks read as they are
/// decoded, not the file first).
pub fn read_parquet_file(path: &std::path::Path) -> Result<Vec<RecordBatch>, String> {
    let open =
        || std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
    read_parquet_from(open).map(|(_, b)| b).map_err(|e| format!("{}: {e}", path.display()))
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
    let format = csv_format();
    let (schema, _) = format
        .infer_schema(Cursor::new(&bytes), None)
        .map_err(|e| format!("not a readable CSV file: {e}"))?;
    check_csv_header(&schema)?;
    let fields =
        schema.fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
    let rows = batch_rows(schema.fields().len());
    let reader = ReaderBuilder::new(Arc::new(schema))
        .with_format(format)
        .with_batch_size(rows)
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

/// A core table as one Arrow batch (strings as plain UTF-8, timestamps in microseconds, UTC).
pub fn to_batch(t: &Table) -> Result<RecordBatch, String> {
    use arrow::datatypes::{Field, Schema};
    let mut fields = Vec::with_capacity(t.columns.len());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(t.columns.len());
    for c in &t.columns {
        let (dt, array): (DataType, ArrayRef) = match &c.data {
            ColumnData::Int64(v) => (DataType::Int64, Arc::new(Int64Array::from(v.clone()))),
            ColumnData::Float64(v) => (DataType::Float64, Arc::new(Float64Array::from(v.clone()))),
            ColumnData::Bool(v) => (DataType::Boolean, Arc::new(BooleanArray::from(v.clone()))),
            ColumnData::Str { dict, codes } => (
                DataType::Utf8,
                Arc::new(StringArray::from(
                    codes.iter().map(|c| c.map(|c| dict[c as usize].as_str())).collect::<Vec<_>>(),
                )),
            ),
            ColumnData::Timestamp(v) => (
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                Arc::new(TimestampMicrosecondArray::from(v.clone()).with_timezone("UTC")),
            ),
        };
        fields.push(Field::new(c.name.as_str(), dt, true));
        arrays.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|e| e.to_string())
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
    fn scans_give_the_named_columns_batch_by_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from("id,name,score,when\n");
        for i in 0..150_000 {
            csv.push_str(&format!("{i},n{},{}.5,2024-01-01T00:00:00\n", i % 7, i % 3));
        }
        let whole = Tables.read(csv.clone().into_bytes(), FileFormat::Csv).unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, &csv).unwrap();
        let parquet = dir.path().join("t.parquet");
        let (_, batches) = read_csv(csv.into_bytes()).unwrap();
        let all = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        write_parquet_file(&parquet, &all).unwrap();
        let wanted = vec!["score".to_string(), "id".to_string()];
        for (file, format) in [(&path, FileFormat::Csv), (&parquet, FileFormat::Parquet)] {
            let mut ids = Vec::new();
            let mut scores = Vec::new();
            let mut batches = 0;
            Tables
                .scan(file, format, Some(&wanted), &mut |t: Table| {
                    batches += 1;
                    let names: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
                    assert_eq!(names, ["id", "score"], "file order, only the named columns");
                    match (&t.columns[0].data, &t.columns[1].data) {
                        (ColumnData::Int64(i), ColumnData::Float64(s)) => {
                            ids.extend_from_slice(i);
                            scores.extend_from_slice(s);
                        }
                        other => panic!("{other:?}"),
                    }
                    Ok(())
                })
                .unwrap();
            assert!(batches >= 3, "{format:?}: {batches} batches");
            assert_eq!(ColumnData::Int64(ids), whole.column("id").unwrap().data, "{format:?}");
            assert_eq!(ColumnData::Float64(scores), whole.column("score").unwrap().data);
            let e = Tables.scan(file, format, Some(&["nope".into()]), &mut |_| Ok(())).unwrap_err();
            assert!(e.contains("no column 'nope'"), "{e}");
        }
    }

    #[test]
    fn wide_files_are_read_a_few_rows_at_a_time() {
        assert_eq!(batch_rows(6), SCAN_BATCH_ROWS);
        assert_eq!(batch_rows(5_000), 209);
        assert_eq!(batch_rows(10_000_000), 1);
        // 5,000 columns, 300 rows: every cell comes back, in batches of at most 209 rows.
        let (columns, rows) = (5_000, 300);
        let mut csv = (0..columns).map(|c| format!("c{c}")).collect::<Vec<_>>().join(",");
        for r in 0..rows {
            csv.push('\n');
            csv.push_str(
                &(0..columns).map(|c| ((r + c) % 7).to_string()).collect::<Vec<_>>().join(","),
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wide.csv");
        std::fs::write(&path, csv).unwrap();
        let scan = FileScan::open(&path, FileFormat::Csv).unwrap();
        let (mut seen, mut largest) = (0, 0);
        scan.batches(Some(&[4_999]), &mut |b| {
            seen += b.num_rows();
            largest = largest.max(b.num_rows());
            Ok(())
        })
        .unwrap();
        assert_eq!((seen, largest), (rows, 209));
        assert_eq!(positions(&["a".into(), "b".into()], &["b".into()]).unwrap(), vec![1]);
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
