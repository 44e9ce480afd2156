//! Governed SQL for Plinth, on DataFusion. The core chooses the tables a query may read; this
//! crate builds a fresh session that holds exactly those, in memory, and nothing else:
//! no catalog views (`information_schema` off), no DDL, DML or `SET`/`COPY` statements, no URL
//! or file tables, no file-reading table functions. Rows, time and operator memory are limited.
//! Kept in its own crate: DataFusion is the heaviest dependency of the platform.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::TableReference;
use datafusion::datasource::MemTable;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures_util::StreamExt;
use plinth_core::data::query::{QueryEngine, QueryLimits, QueryOutput, QueryTable, ResultFormat};

/// The DataFusion engine.
#[derive(Debug, Default, Clone, Copy)]
pub struct DataFusion;

fn session(tables: Vec<QueryTable>, limits: &QueryLimits) -> Result<SessionContext, String> {
    let config = SessionConfig::new()
        .with_information_schema(false)
        .with_default_catalog_and_schema("datafusion", "public");
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(limits.memory_bytes, 1.0)
        .build_arc()
        .map_err(|e| e.to_string())?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let catalog = ctx.catalog("datafusion").ok_or("no default catalog")?;
    for t in tables {
        let mut schema: Option<Arc<Schema>> = None;
        let mut partitions = Vec::with_capacity(t.parts.len());
        for (i, (bytes, format)) in t.parts.into_iter().enumerate() {
            let (fields, batches) = plinth_data::read_any(bytes, format)?;
            let s = match batches.first() {
                Some(b) => b.schema(),
                None => Arc::new(Schema::new(
                    fields.into_iter().map(|(n, dt)| Field::new(n, dt, true)).collect::<Vec<_>>(),
                )),
            };
            match &schema {
                Some(first) if first.fields() != s.fields() => {
                    return Err(format!(
                        "table '{}': file {} has other columns than the first",
                        t.name,
                        i + 1
                    ));
                }
                Some(_) => {}
                None => schema = Some(s),
            }
            partitions.push(batches);
        }
        let schema = schema.ok_or_else(|| format!("table '{}' has no files", t.name))?;
        let mem = MemTable::try_new(schema, partitions).map_err(|e| e.to_string())?;
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
        ctx.register_table(reference, Arc::new(mem)).map_err(|e| e.to_string())?;
    }
    Ok(ctx)
}

async fn execute(
    ctx: &SessionContext,
    sql: &str,
    max_rows: usize,
) -> Result<(Vec<RecordBatch>, Arc<Schema>, u64, bool), String> {
    let options =
        SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let df = ctx.sql_with_options(sql, options).await.map_err(clean)?;
    let schema: Arc<Schema> = Arc::new(df.schema().as_arrow().clone());
    let mut stream = df.execute_stream().await.map_err(clean)?;
    let (mut batches, mut rows, mut truncated) = (Vec::new(), 0usize, false);
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(clean)?;
        let room = max_rows - rows;
        if batch.num_rows() > room {
            batches.push(batch.slice(0, room));
            rows += room;
            truncated = true;
            break;
        }
        rows += batch.num_rows();
        batches.push(batch);
    }
    Ok((batches, schema, rows as u64, truncated))
}

/// DataFusion's messages, without its internal prefixes.
fn clean(e: datafusion::error::DataFusionError) -> String {
    let s = e.to_string();
    s.trim_start_matches("Error during planning: ").trim_start_matches("SQL error: ").to_string()
}

fn encode(
    batches: &[RecordBatch],
    schema: &Arc<Schema>,
    format: ResultFormat,
) -> Result<Vec<u8>, String> {
    match format {
        ResultFormat::JsonLines => {
            let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
            for b in batches {
                w.write(b).map_err(|e| e.to_string())?;
            }
            w.finish().map_err(|e| e.to_string())?;
            Ok(w.into_inner())
        }
        ResultFormat::Csv => {
            let mut out = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
                if batches.is_empty() {
                    w.write(&RecordBatch::new_empty(schema.clone())).map_err(|e| e.to_string())?;
                }
                for b in batches {
                    w.write(b).map_err(|e| e.to_string())?;
                }
            }
            Ok(out)
        }
        ResultFormat::Parquet => {
            let all = arrow::compute::concat_batches(schema, batches).map_err(|e| e.to_string())?;
            plinth_data::parquet_bytes(&all)
        }
    }
}

#[async_trait::async_trait]
impl QueryEngine for DataFusion {
    async fn run(
        &self,
        tables: Vec<QueryTable>,
        sql: &str,
        limits: QueryLimits,
        format: ResultFormat,
    ) -> Result<QueryOutput, String> {
        let work = async {
            let ctx = session(tables, &limits)?;
            let (batches, schema, rows, truncated) = execute(&ctx, sql, limits.max_rows).await?;
            Ok::<_, String>(QueryOutput {
                bytes: encode(&batches, &schema, format)?,
                rows,
                truncated,
            })
        };
        match tokio::time::timeout(limits.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "the query ran longer than its limit of {} ms",
                limits.timeout.as_millis()
            )),
        }
    }
}
