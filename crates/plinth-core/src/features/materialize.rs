//! Materialization jobs: the latest row of each entity (newer than the watermark when
//! incremental) into the online store, encoded while the previous chunk is written.

use super::*;

impl Plinth {
    /// Queues a materialization of a view into the online store.
    pub async fn materialize(
        &self,
        who: &Principal,
        team: &str,
        view: &str,
        req: MaterializeRequest,
    ) -> Result<Materialization> {
        let t = self.team_ref(who, team).await?;
        who.require(&t, TeamRole::Developer, "materializing")?;
        let meta = self.view_meta(&t.name, view).await?;
        if !meta.spec.online {
            return Err(Error::conflict(format!("feature view '{view}' is not online")));
        }
        let incremental = req.incremental.unwrap_or(true);
        let params =
            json!({"view_id": meta.id, "team": t.name, "view": view, "incremental": incremental});
        let mut tx = self.db.begin().await?;
        let id = self
            .enqueue(
                &mut tx,
                crate::tasks::NewTask::new(Some(&t.id), MATERIALIZE, &params, &who.id),
            )
            .await?;
        let target = Target {
            team_id: Some(&t.id),
            object_type: "feature_view",
            object_id: &meta.id,
            object_name: view,
        };
        audit::record(
            &mut tx,
            who,
            "feature_view.materialize",
            target,
            json!({"job": id, "incremental": incremental}),
        )
        .await?;
        tx.commit().await?;
        self.wake_tasks();
        self.get_materialization(who, &id).await
    }

    pub async fn get_materialization(&self, who: &Principal, id: &str) -> Result<Materialization> {
        let r = self
            .db
            .fetch_optional(&Sql::with("SELECT j.*, t.name AS team_name FROM tasks j JOIN teams t ON t.id = j.team_id WHERE j.id = $1 AND j.kind = $2", [id.into(), MATERIALIZE.into()]))
            .await?
            .ok_or_else(|| Error::not_found("materialization", id))?;
        if who.role_in(&col::<String>(&r, "team_id")?).is_none() {
            return Err(Error::not_found("materialization", id));
        }
        let params: Value = serde_json::from_str(&col::<String>(&r, "args")?)?;
        let state: String = col(&r, "state")?;
        Ok(Materialization {
            id: id.to_string(),
            team: col(&r, "team_name")?,
            feature_view: params["view"].as_str().unwrap_or_default().to_string(),
            incremental: params["incremental"].as_bool().unwrap_or(true),
            status: plinth_api::tasks::TaskState::parse(&state)
                .map_or(JobStatus::Failed, plinth_api::tasks::TaskState::job_status),
            progress: col(&r, "progress")?,
            error: col(&r, "error")?,
            result: col::<Option<String>>(&r, "result")?
                .map(|s| serde_json::from_str(&s))
                .transpose()?,
            created_at: micros_to_time(col(&r, "created_at")?),
        })
    }

    /// The job body: the latest row of each entity (newer than the watermark when incremental)
    /// into the online store. The source is scanned, never held: a first pass over the key and
    /// time columns finds each entity's latest row, a second encodes those rows, in chunks that
    /// the store writes while the next chunk is encoded. Memory: a batch of rows and a chunk of
    /// encoded ones, plus 40 bytes per entity (80 with hashed keys; see [`Latest`]), whatever
    /// the table's length.
    ///
    /// Logs where it starts and what it wrote, reports progress, and stops at a cancellation.
    pub(crate) async fn run_materialization(&self, task: &crate::tasks::TaskRun) -> Result<Value> {
        let (id, params) = (task.id.as_str(), &task.args);
        let team = params["team"].as_str().unwrap_or_default();
        let view = params["view"].as_str().unwrap_or_default();
        let incremental = params["incremental"].as_bool().unwrap_or(true);
        let meta = self.view_meta(team, view).await?;
        let r = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT watermark FROM feature_views WHERE id = $1",
                [meta.id.clone().into()],
            ))
            .await?
            .ok_or_else(|| Error::internal("the view vanished"))?;
        let watermark: Option<i64> = if incremental { col(&r, "watermark")? } else { None };
        let tref = crate::auth::TeamRef { id: meta.team_id.clone(), name: team.to_string() };
        let ds = self.resolve_dataset(&tref, &meta.spec.source, "source").await?;
        let from = match watermark {
            Some(w) => format!("rows newer than {}", crate::util::micros_to_time(w)),
            None => "every row".to_string(),
        };
        self.task_log(
            id,
            "info",
            &format!(
                "attempt {}: reading {from} of dataset {} ({} rows) into the online store",
                task.attempt, meta.spec.source.name, ds.info.rows
            ),
        )
        .await?;
        let file = self.dataset_file(&ds.id).await?;
        // A single integer key hashes as an integer, and indexes an array when its values (as
        // the dataset's profile gives them, exactly) span a compact range.
        let int_key = match meta.spec.join_keys.as_slice() {
            [k] if k.kind == ColumnType::Int64 => {
                ds.info.columns.iter().find(|c| c.name == k.name && c.kind == ColumnType::Int64)
            }
            _ => None,
        };
        let dense = int_key.and_then(|c| {
            let exact = |x: f64| x.abs() < 9.0e15;
            let (min, max) = (c.min.filter(|x| exact(*x))?, c.max.filter(|x| exact(*x))?);
            let (min, max) = (min as i64, max as i64);
            (max >= min && max - min < 4 * ds.info.rows as i64 + 1024).then_some((min, max))
        });
        let scan = Scan {
            tables: self.tables.clone(),
            path: file.path.clone(),
            format: file.format,
            meta: meta.clone(),
            watermark,
            int_key: int_key.is_some(),
            dense,
            total_rows: ds.info.rows,
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Step>(1);
        let scanning = tokio::task::spawn_blocking(move || scan.run(&tx));
        let (mut written, mut last_progress) = (0usize, std::time::Instant::now());
        while let Some(step) = rx.recv().await {
            match step {
                Step::Progress(p) => {
                    // Dropping the receiver stops the scan at its next step.
                    task.check()?;
                    if last_progress.elapsed() >= std::time::Duration::from_millis(100) {
                        self.set_progress(id, p).await?;
                        last_progress = std::time::Instant::now();
                    }
                }
                Step::Rows(rows) => written += self.online.write(rows).await?,
            }
        }
        let done = scanning.await.map_err(Error::internal)??;
        drop(file);
        if let Some(newest) = done.newest {
            self.note_event(&meta.id, newest, Some(newest)).await?;
        } else {
            let mut tx = self.db.begin().await?;
            Sql::with(
                "UPDATE feature_views SET last_materialized_at = $1 WHERE id = $2",
                [now_micros().into(), meta.id.clone().into()],
            )
            .execute(&mut tx)
            .await?;
            tx.commit().await?;
        }
        self.task_log(
            id,
            "info",
            &format!(
                "attempt {}: read {} rows, wrote the latest of {} entities",
                task.attempt, done.rows_read, done.entities
            ),
        )
        .await?;
        Ok(json!({
            "rows_read": done.rows_read,
            "entities": done.entities,
            "written": written,
            "incremental": incremental,
        }))
    }
}

/// What the scanning thread hands the job: progress, or encoded rows for the store.
enum Step {
    Progress(f64),
    Rows(Vec<(String, Stored)>),
}

/// What a finished scan found.
struct Scanned {
    rows_read: u64,
    entities: usize,
    /// The latest event time written, if any row was.
    newest: Option<i64>,
}

/// The latest row of an entity so far: event time, created time, row number.
#[derive(Clone, Copy)]
struct Best {
    event: i64,
    created: i64,
    row: u64,
}

impl Best {
    const NONE: Best = Best { event: i64::MIN, created: i64::MIN, row: u64::MAX };

    /// Takes the row if it is at least as late (the later of equal rows wins, as Feast's does).
    fn offer(&mut self, event: i64, created: i64, row: u64) {
        if self.row == u64::MAX || (event, created) >= (self.event, self.created) {
            *self = Best { event, created, row };
        }
    }
}

/// Each entity's latest row. Keys in a compact integer range index an array (24 bytes a slot);
/// other integer keys and text keys hash.
enum Latest {
    Dense { min: i64, slots: Vec<Best> },
    Int(HashMap<i64, Best>),
    Text(HashMap<String, Best>),
}

/// Rows encoded per write to the online store (one transaction of the embedded store: fewer,
/// larger ones rewrite fewer B-tree pages).
const CHUNK: usize = 100_000;

/// One materialization's two passes over its source, on a blocking thread.
struct Scan {
    tables: Arc<dyn crate::data::TableReader>,
    path: std::path::PathBuf,
    format: crate::data::FileFormat,
    meta: Arc<ViewMeta>,
    watermark: Option<i64>,
    int_key: bool,
    dense: Option<(i64, i64)>,
    total_rows: u64,
}

impl Scan {
    fn run(self, tx: &tokio::sync::mpsc::Sender<Step>) -> Result<Scanned> {
        let spec = &self.meta.spec;
        let keys: Vec<String> = spec.join_keys.iter().map(|k| k.name.clone()).collect();
        let fail = |e: String| Error::new(plinth_api::Code::InvalidData, e).with_field("source");
        // A job that stopped listening (failed or gone) stops the scan too.
        let progress = |done: u64, from: f64, to: f64| {
            let part = done as f64 / self.total_rows.max(1) as f64;
            tx.blocking_send(Step::Progress(from + (to - from) * part.min(1.0)))
                .map_err(|_| "the job stopped".to_string())
        };

        // Pass 1: the keys and times only.
        let mut first: Vec<String> = keys.clone();
        first.push(spec.timestamp_field.clone());
        first.extend(spec.created_timestamp_field.clone());
        let mut latest = match (self.dense, self.int_key) {
            (Some((min, max)), true) => {
                Latest::Dense { min, slots: vec![Best::NONE; (max - min + 1) as usize] }
            }
            (None, true) => Latest::Int(HashMap::new()),
            _ => Latest::Text(HashMap::new()),
        };
        let mut row0 = 0u64;
        self.tables
            .scan(&self.path, self.format, Some(&first), &mut |t| {
                let ts = timestamps(&t, &spec.timestamp_field, "timestamp_field")?;
                let created = match &spec.created_timestamp_field {
                    Some(c) => Some(timestamps(&t, c, "created_timestamp_field")?),
                    None => None,
                };
                let key_cols = columns(&t, &keys)?;
                for i in 0..t.rows {
                    let Some(event) = ts[i] else { continue };
                    if self.watermark.is_some_and(|w| event <= w) {
                        continue;
                    }
                    let c = created.and_then(|c| c[i]).unwrap_or(i64::MIN);
                    let row = row0 + i as u64;
                    match (&mut latest, key_cols.as_slice()) {
                        (Latest::Dense { min, slots }, [ColumnData::Int64(k)]) => {
                            let Some(k) = k[i] else { continue };
                            match k.checked_sub(*min).and_then(|o| slots.get_mut(o as usize)) {
                                Some(slot) => slot.offer(event, c, row),
                                // The profile is exact: a key outside it means the file changed.
                                None => return Err("a key outside the profiled range".into()),
                            }
                        }
                        (Latest::Int(map), [ColumnData::Int64(k)]) => {
                            let Some(k) = k[i] else { continue };
                            map.entry(k).or_insert(Best::NONE).offer(event, c, row);
                        }
                        (Latest::Text(map), cols) => {
                            let Some(key) = text_key(cols, i) else { continue };
                            map.entry(key).or_insert(Best::NONE).offer(event, c, row);
                        }
                        _ => return Err("a join key column changed type".into()),
                    }
                }
                row0 += t.rows as u64;
                progress(row0, 0.0, 0.4)
            })
            .map_err(fail)?;
        let rows_read = row0;

        // The winners in row order, for the second pass to meet them as it reads.
        let mut winners: Vec<(u64, i64)> = match &latest {
            Latest::Dense { slots, .. } => {
                slots.iter().filter(|b| b.row != u64::MAX).map(|b| (b.row, b.event)).collect()
            }
            Latest::Int(map) => map.values().map(|b| (b.row, b.event)).collect(),
            Latest::Text(map) => map.values().map(|b| (b.row, b.event)).collect(),
        };
        drop(latest);
        winners.sort_unstable();
        let newest = winners.iter().map(|w| w.1).max();

        // Pass 2: the keys and features of the winning rows, encoded in chunks.
        let mut second: Vec<String> = keys.clone();
        for f in &spec.features {
            if !second.contains(&f.name) {
                second.push(f.name.clone());
            }
        }
        let (mut next, mut row0) = (0usize, 0u64);
        let mut chunk: Vec<(String, Stored)> = Vec::with_capacity(CHUNK);
        self.tables
            .scan(&self.path, self.format, Some(&second), &mut |t| {
                let key_cols = columns(&t, &keys)?;
                let features: Vec<(ColumnType, &ColumnData)> = spec
                    .features
                    .iter()
                    .map(|f| Ok((f.kind, column(&t, &f.name)?)))
                    .collect::<std::result::Result<_, String>>()?;
                let end = row0 + t.rows as u64;
                while let Some(&(row, event)) = winners.get(next).filter(|w| w.0 < end) {
                    next += 1;
                    let i = (row - row0) as usize;
                    let key = text_key(&key_cols, i).ok_or("a winning row lost its key")?;
                    let mut values = Vec::with_capacity(features.len() * 9);
                    for (kind, c) in &features {
                        online::encode_cell(&mut values, *kind, c, i);
                    }
                    chunk.push((
                        store_key(&self.meta.id, &key),
                        Stored { event_micros: event, values: values.into() },
                    ));
                    if chunk.len() == CHUNK {
                        let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                        tx.blocking_send(Step::Rows(full)).map_err(|_| "the job stopped")?;
                    }
                }
                row0 = end;
                progress(row0, 0.4, 1.0)
            })
            .map_err(fail)?;
        if !chunk.is_empty() {
            tx.blocking_send(Step::Rows(chunk)).map_err(|_| fail("the job stopped".into()))?;
        }
        Ok(Scanned { rows_read, entities: winners.len(), newest })
    }
}

fn column<'t>(
    t: &'t crate::data::Table,
    name: &str,
) -> std::result::Result<&'t ColumnData, String> {
    t.column(name).map(|c| &c.data).ok_or_else(|| format!("the dataset has no column '{name}'"))
}

fn columns<'t>(
    t: &'t crate::data::Table,
    names: &[String],
) -> std::result::Result<Vec<&'t ColumnData>, String> {
    names.iter().map(|n| column(t, n)).collect()
}

fn timestamps<'t>(
    t: &'t crate::data::Table,
    name: &str,
    field: &str,
) -> std::result::Result<&'t [Option<i64>], String> {
    match column(t, name)? {
        ColumnData::Timestamp(v) => Ok(v),
        _ => Err(format!("{field} '{name}' is not a timestamp column")),
    }
}

/// A row's entity key in canonical text (the online store's key), `None` when a part is null.
fn text_key(cols: &[&ColumnData], i: usize) -> Option<String> {
    let mut key = String::new();
    for (j, c) in cols.iter().enumerate() {
        if j > 0 {
            key.push('\u{1f}');
        }
        key.push_str(&c.text(i)?);
    }
    Some(key)
}
