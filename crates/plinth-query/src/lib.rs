//! Governed SQL for Plinth, on DataFusion. The core chooses the tables a query may read; this
//! crate builds a fresh session that holds exactly those and nothing else: no catalog views
//! (`information_schema` off), no DDL, DML or `SET`/`COPY` statements, no URL or file tables,
//! no file-reading table functions. Rows, time and operator memory are limited.
//!
//! Nothing is held whole: a table's files are scanned as the plan pulls from them (only the
//! columns it asks for), and the result is encoded and handed over batch by batch, at most
//! [`QUERY_BUFFER`] chunks ahead of the reader.
//!
//! Kept in its own crate: DataFusion is the heaviest dependency of the platform.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::datatypes::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{MemorySchemaProvider, Session, TableProvider};
use datafusion::common::TableReference;
use datafusion::datasource::TableType;
use datafusion::execution::TaskContext;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures_util::StreamExt;
use plinth_core::data::LocalFile;
use plinth_core::data::query::{
    QUERY_BUFFER, QueryEngine, QueryEvent, QueryLimits, QueryTable, ResultFormat,
};
use plinth_data::FileScan;
use tokio::sync::{mpsc, oneshot};

mod guard;

/// The DataFusion engine.
#[derive(Debug, Default, Clone, Copy)]
pub struct DataFusion;

/// One file of a table: how to scan it, and the file itself (kept while any scan may run).
#[derive(Debug)]
struct TableFile {
    scan: FileScan,
    _file: LocalFile,
}

/// A table whose rows are its files' rows, read when the plan pulls them.
#[derive(Debug)]
struct FilesTable {
    schema: SchemaRef,
    files: Vec<Arc<TableFile>>,
}

#[async_trait]
impl TableProvider for FilesTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let parts = self
            .files
            .iter()
            .map(|file| {
                Arc::new(FilePart {
                    file: file.clone(),
                    projection: projection.cloned(),
                    schema: schema.clone(),
                }) as Arc<dyn PartitionStream>
            })
            .collect();
        let exec = StreamingTableExec::try_new(
            schema,
            parts,
            None,
            std::iter::empty::<LexOrdering>(),
            false,
            limit,
        )?;
        Ok(Arc::new(exec))
    }
}

/// One file's rows, with the projected columns only, read on a blocking thread one batch at a
/// time; the thread stops when the plan stops pulling.
#[derive(Debug)]
struct FilePart {
    file: Arc<TableFile>,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
}

impl PartitionStream for FilePart {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (tx, rx) = mpsc::channel::<datafusion::error::Result<RecordBatch>>(2);
        let (file, projection, schema) =
            (self.file.clone(), self.projection.clone(), self.schema.clone());
        tokio::task::spawn_blocking(move || {
            let scan = || {
                file.scan.batches(projection.as_deref(), &mut |batch| {
                    // The table's schema (every column nullable, no file metadata), same columns.
                    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
                    let batch = RecordBatch::try_new_with_options(
                        schema.clone(),
                        batch.columns().to_vec(),
                        &options,
                    )
                    .map_err(|e| format!("a file of the table does not fit its schema: {e}"))?;
                    tx.blocking_send(Ok(batch)).map_err(|_| "the query stopped reading".to_string())
                })
            };
            // A reader that panics (a damaged file) must not look like the end of the file.
            let scanned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(scan))
                .unwrap_or_else(|_| Err(format!("reading {} failed", file.scan.path().display())));
            if let Err(e) = scanned {
                let _ = tx.blocking_send(Err(datafusion::error::DataFusionError::Execution(e)));
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

/// Opens every table's files (reading their schemas) and registers the tables, and nothing
/// else, in a fresh session whose functions charge what they build to the query's memory pool
/// ([`guard`]). Blocking: CSV schemas are inferred from every row.
fn session(tables: Vec<QueryTable>, limits: &QueryLimits) -> Result<SessionContext, String> {
    let config = SessionConfig::new()
        .with_information_schema(false)
        .with_default_catalog_and_schema("datafusion", "public");
    let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(limits.memory_bytes));
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(pool.clone())
        .build_arc()
        .map_err(|e| e.to_string())?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    guard::charge_functions(&ctx, &pool);
    let catalog = ctx.catalog("datafusion").ok_or("no default catalog")?;
    for t in tables {
        let mut schema: Option<SchemaRef> = None;
        let mut files = Vec::with_capacity(t.parts.len());
        for (i, file) in t.parts.into_iter().enumerate() {
            let scan = open_cached(&file).map_err(|e| format!("table '{}': {e}", t.name))?;
            // Every column nullable, no file metadata: files of one table compare by columns.
            let fields: Vec<Field> = scan
                .schema()
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), f.data_type().clone(), true))
                .collect();
            let s = Arc::new(Schema::new(fields));
            match &schema {
                Some(first) if first != &s => {
                    return Err(format!(
                        "table '{}': file {} has other columns than the first",
                        t.name,
                        i + 1
                    ));
                }
                Some(_) => {}
                None => schema = Some(s),
            }
            files.push(Arc::new(TableFile { scan, _file: file }));
        }
        let schema = schema.ok_or_else(|| format!("table '{}' has no files", t.name))?;
        let reference = match &t.schema {
            None => TableReference::bare(t.name.clone()),
            Some(owner) => {
                if catalog.schema(owner).is_none() {
                    catalog
                        .register_schema(owner, Arc::new(MemorySchemaProvider::new()))
                        .map_err(|e| e.to_string())?;
                }
                TableReference::partial(owner.clone(), t.name.clone())
            }
        };
        ctx.register_table(reference, Arc::new(FilesTable { schema, files }))
            .map_err(|e| e.to_string())?;
    }
    Ok(ctx)
}

/// Opens a file to scan, reusing what an earlier query learnt of the same file (same path, size
/// and modification time): a CSV file's types are inferred from all of its rows, a pass worth
/// doing once, not per query.
fn open_cached(file: &LocalFile) -> Result<FileScan, String> {
    type Key = (std::path::PathBuf, u64, Option<std::time::SystemTime>);
    static SEEN: Mutex<Option<HashMap<Key, FileScan>>> = Mutex::new(None);
    let meta = std::fs::metadata(&file.path)
        .map_err(|e| format!("cannot read {}: {e}", file.path.display()))?;
    let key = (file.path.clone(), meta.len(), meta.modified().ok());
    if let Some(scan) = SEEN.lock().expect("cache lock").as_ref().and_then(|m| m.get(&key)) {
        return Ok(scan.clone());
    }
    let scan = FileScan::open(&file.path, file.format)?;
    let mut seen = SEEN.lock().expect("cache lock");
    let map = seen.get_or_insert_with(HashMap::new);
    if map.len() >= 1024 {
        map.clear();
    }
    map.insert(key, scan.clone());
    Ok(scan)
}

/// The stack of the thread that parses and plans a query. Planning recurses once per level of
/// an expression; [`guard::check_statement`] bounds the levels before planning starts, and
/// this stack holds far more than that bound needs (DataFusion's recursive steps also grow
/// their stack on demand, `recursive_protection`), so no statement overflows it.
const PLAN_STACK: usize = 64 * 1024 * 1024;

/// Builds the query's session and its physical plan on a thread of its own ([`PLAN_STACK`]):
/// parse, check the statement ([`guard::check_statement`]), plan, refuse what is not a query,
/// optimize. Whatever the statement holds is dropped on that thread too.
async fn plan(
    tables: Vec<QueryTable>,
    sql: String,
    limits: QueryLimits,
) -> Result<(SessionContext, Arc<dyn ExecutionPlan>), String> {
    let runtime = tokio::runtime::Handle::current();
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("plinth-sql-plan".into())
        .stack_size(PLAN_STACK)
        .spawn(move || {
            let planned = (|| {
                let ctx = session(tables, &limits)?;
                let state = ctx.state();
                let dialect = state.config().options().sql_parser.dialect;
                let statement = state.sql_to_statement(&sql, &dialect).map_err(clean)?;
                guard::check_statement(&statement)?;
                let logical =
                    runtime.block_on(state.statement_to_plan(statement)).map_err(clean)?;
                SQLOptions::new()
                    .with_allow_ddl(false)
                    .with_allow_dml(false)
                    .with_allow_statements(false)
                    .verify_plan(&logical)
                    .map_err(clean)?;
                let physical =
                    runtime.block_on(state.create_physical_plan(&logical)).map_err(clean)?;
                Ok((ctx, physical))
            })();
            let _ = tx.send(planned);
        })
        .map_err(|e| format!("cannot start the query's planner: {e}"))?;
    rx.await.map_err(|_| "the query's planner stopped without an answer".to_string())?
}

/// DataFusion's messages, without its internal prefixes.
fn clean(e: datafusion::error::DataFusionError) -> String {
    let s = e.to_string();
    let s = s
        .trim_start_matches("Error during planning: ")
        .trim_start_matches("SQL error: ")
        .trim_start_matches("Execution error: ");
    // The parser's errors come as Rust debug text: `ParserError("Expected: ...")`.
    match s.strip_prefix("ParserError(\"").and_then(|r| r.strip_suffix("\")")) {
        Some(inner) => format!("syntax error: {}", inner.replace("\\\"", "\"")),
        None => s.to_string(),
    }
}

/// Encodes a result batch by batch in the asked format.
enum Encoder {
    JsonLines,
    Csv { schema: SchemaRef, header_written: bool },
    Parquet(Box<plinth_data::ParquetStream>),
}

impl Encoder {
    fn new(format: ResultFormat, schema: SchemaRef) -> Result<Encoder, String> {
        Ok(match format {
            ResultFormat::JsonLines => Encoder::JsonLines,
            ResultFormat::Csv => Encoder::Csv { schema, header_written: false },
            ResultFormat::Parquet => {
                Encoder::Parquet(Box::new(plinth_data::ParquetStream::new(schema)?))
            }
        })
    }

    /// The bytes this batch adds to the result (Parquet gives bytes as row groups fill).
    fn write(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, String> {
        match self {
            Encoder::JsonLines => {
                let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
                w.write(batch).map_err(|e| e.to_string())?;
                w.finish().map_err(|e| e.to_string())?;
                Ok(w.into_inner())
            }
            Encoder::Csv { header_written, .. } => {
                let mut out = Vec::new();
                {
                    let mut w = arrow::csv::WriterBuilder::new()
                        .with_header(!*header_written)
                        .build(&mut out);
                    w.write(batch).map_err(|e| e.to_string())?;
                }
                *header_written = true;
                Ok(out)
            }
            Encoder::Parquet(p) => p.write(batch),
        }
    }

    /// The result's last bytes (a CSV header for an empty result, Parquet's footer).
    fn finish(self) -> Result<Vec<u8>, String> {
        match self {
            Encoder::JsonLines => Ok(Vec::new()),
            Encoder::Csv { schema, header_written: false } => {
                let mut out = Vec::new();
                {
                    let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
                    w.write(&RecordBatch::new_empty(schema)).map_err(|e| e.to_string())?;
                }
                Ok(out)
            }
            Encoder::Csv { .. } => Ok(Vec::new()),
            Encoder::Parquet(p) => p.finish(),
        }
    }
}

/// Pulls the rest of the result, encodes it and hands it over; the last event says how it ended.
async fn produce(
    tx: &mpsc::Sender<QueryEvent>,
    mut encoder: Encoder,
    mut stream: SendableRecordBatchStream,
    mut next: Option<RecordBatch>,
    max_rows: usize,
) -> Result<QueryEvent, String> {
    let (mut rows, mut truncated) = (0usize, false);
    while let Some(batch) = next.take() {
        let room = max_rows - rows;
        let batch = if batch.num_rows() > room {
            truncated = true;
            batch.slice(0, room)
        } else {
            batch
        };
        rows += batch.num_rows();
        let bytes = encoder.write(&batch)?;
        if !bytes.is_empty() && tx.send(QueryEvent::Rows(bytes)).await.is_err() {
            return Err("the reader went away".into());
        }
        if truncated {
            break;
        }
        next = stream.next().await.transpose().map_err(clean)?;
    }
    let tail = encoder.finish()?;
    if !tail.is_empty() && tx.send(QueryEvent::Rows(tail)).await.is_err() {
        return Err("the reader went away".into());
    }
    Ok(QueryEvent::Done { rows: rows as u64, truncated })
}

#[async_trait]
impl QueryEngine for DataFusion {
    async fn run(
        &self,
        tables: Vec<QueryTable>,
        sql: &str,
        limits: QueryLimits,
        format: ResultFormat,
    ) -> Result<mpsc::Receiver<QueryEvent>, String> {
        let deadline = tokio::time::Instant::from_std(limits.started) + limits.timeout;
        let timed_out = move || {
            format!("the query ran longer than its limit of {} ms", limits.timeout.as_millis())
        };
        // Plan it, start it, and wait for its first rows: most failures show before any answer.
        let start = async {
            let (ctx, plan) = plan(tables, sql.to_string(), limits).await?;
            let schema = plan.schema();
            let mut stream =
                datafusion::physical_plan::execute_stream(plan, ctx.task_ctx()).map_err(clean)?;
            let first = stream.next().await.transpose().map_err(clean)?;
            Ok::<_, String>((ctx, schema, stream, first))
        };
        let (ctx, schema, stream, first) =
            tokio::time::timeout_at(deadline, start).await.map_err(|_| timed_out())??;
        let encoder = Encoder::new(format, schema)?;
        let (tx, rx) = mpsc::channel(QUERY_BUFFER);
        tokio::spawn(async move {
            let work = produce(&tx, encoder, stream, first, limits.max_rows);
            let end = match tokio::time::timeout_at(deadline, work).await {
                Ok(Ok(done)) => done,
                Ok(Err(e)) => QueryEvent::Failed(e),
                Err(_) => QueryEvent::Failed(timed_out()),
            };
            // The session (and the files it reads) lived until the last row was encoded; the
            // outcome waits for the reader, but not forever.
            drop(ctx);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(60), tx.send(end)).await;
        });
        Ok(rx)
    }
}
