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
        let id = self.enqueue_job(&mut tx, &t.id, MATERIALIZE, &params, &who.id).await?;
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
        self.wake_jobs();
        self.get_materialization(who, &id).await
    }

    pub async fn get_materialization(&self, who: &Principal, id: &str) -> Result<Materialization> {
        let r = self
            .db
            .fetch_optional(&Sql::with("SELECT j.*, t.name AS team_name FROM jobs j JOIN teams t ON t.id = j.team_id WHERE j.id = $1 AND j.kind = $2", [id.into(), MATERIALIZE.into()]))
            .await?
            .ok_or_else(|| Error::not_found("materialization", id))?;
        if who.role_in(&col::<String>(&r, "team_id")?).is_none() {
            return Err(Error::not_found("materialization", id));
        }
        let params: Value = serde_json::from_str(&col::<String>(&r, "params")?)?;
        let status: String = col(&r, "status")?;
        Ok(Materialization {
            id: id.to_string(),
            team: col(&r, "team_name")?,
            feature_view: params["view"].as_str().unwrap_or_default().to_string(),
            incremental: params["incremental"].as_bool().unwrap_or(true),
            status: JobStatus::parse(&status).unwrap_or(JobStatus::Failed),
            progress: col(&r, "progress")?,
            error: col(&r, "error")?,
            result: col::<Option<String>>(&r, "result")?
                .map(|s| serde_json::from_str(&s))
                .transpose()?,
            created_at: micros_to_time(col(&r, "created_at")?),
        })
    }

    /// The job body: the latest row of each entity (newer than the watermark when incremental)
    /// into the online store, in chunks, with progress.
    pub(crate) async fn run_materialization(&self, id: &str, params: &Value) -> Result<Value> {
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
        let bytes = self.dataset_bytes(&ds.id).await?;
        let format =
            crate::data::FileFormat::parse(&ds.info.format).unwrap_or(crate::data::FileFormat::Csv);
        let t0 = std::time::Instant::now();
        let table = self.read_table(bytes, format).await?;
        tracing::debug!(ms = t0.elapsed().as_millis(), "materialize: table read");
        self.set_progress(id, 0.2).await?;
        let col_of = |name: &str| {
            table.column(name).map(|c| &c.data).ok_or_else(|| {
                Error::invalid("source", format!("the dataset has no column '{name}'"))
            })
        };
        let ts = match col_of(&meta.spec.timestamp_field)? {
            ColumnData::Timestamp(v) => v,
            _ => return Err(Error::invalid("timestamp_field", "not a timestamp column")),
        };
        let created = match &meta.spec.created_timestamp_field {
            Some(c) => match col_of(c)? {
                ColumnData::Timestamp(v) => Some(v),
                _ => {
                    return Err(Error::invalid(
                        "created_timestamp_field",
                        "not a timestamp column",
                    ));
                }
            },
            None => None,
        };
        let key_cols: Vec<&ColumnData> =
            meta.spec.join_keys.iter().map(|k| col_of(&k.name)).collect::<Result<_>>()?;
        let feature_cols: Vec<(&FeatureField, &ColumnData)> =
            meta.spec.features.iter().map(|f| Ok((f, col_of(&f.name)?))).collect::<Result<_>>()?;
        // Latest row per entity: (event, created, row). A single integer key hashes as an
        // integer; other keys as their canonical text.
        let mut latest: HashMap<String, (i64, i64, usize)> = HashMap::new();
        let mut latest_int: HashMap<i64, (i64, i64, usize)> = HashMap::new();
        let int_key = match key_cols.as_slice() {
            [ColumnData::Int64(v)] => Some(v),
            _ => None,
        };
        // Keys in a compact range index an array instead of a hash map.
        let dense = int_key.and_then(|v| {
            let (min, max) =
                v.iter().flatten().fold((i64::MAX, i64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            let span = max.checked_sub(min)?;
            (span < 4 * table.rows as i64 + 1024).then_some(min)
        });
        let mut slots: Vec<Option<(i64, i64, usize)>> = match (dense, int_key) {
            (Some(min), Some(v)) => {
                let max = v.iter().flatten().copied().max().unwrap_or(min);
                vec![None; (max - min + 1) as usize]
            }
            _ => Vec::new(),
        };
        for i in 0..table.rows {
            let Some(t) = ts[i] else { continue };
            if watermark.is_some_and(|w| t <= w) {
                continue;
            }
            let c = created.and_then(|c| c[i]).unwrap_or(i64::MIN);
            let e = if let (Some(keys), Some(min)) = (int_key, dense) {
                let Some(k) = keys[i] else { continue };
                slots[(k - min) as usize].get_or_insert((t, c, i))
            } else if let Some(keys) = int_key {
                let Some(k) = keys[i] else { continue };
                latest_int.entry(k).or_insert((t, c, i))
            } else {
                let mut key = String::new();
                let mut null = false;
                for (j, col) in key_cols.iter().enumerate() {
                    match col.text(i) {
                        Some(s) => {
                            if j > 0 {
                                key.push('\u{1f}');
                            }
                            key.push_str(&s);
                        }
                        None => null = true,
                    }
                }
                if null {
                    continue;
                }
                latest.entry(key).or_insert((t, c, i))
            };
            if (t, c) >= (e.0, e.1) {
                *e = (t, c, i);
            }
        }
        latest.extend(latest_int.into_iter().map(|(k, v)| (k.to_string(), v)));
        if let Some(min) = dense {
            latest.extend(
                slots
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, v)| Some(((min + i as i64).to_string(), v?))),
            );
        }
        tracing::debug!(ms = t0.elapsed().as_millis(), "materialize: latest rows found");
        self.set_progress(id, 0.5).await?;
        let total = latest.len();
        let mut newest = watermark.unwrap_or(i64::MIN);
        let mut written = 0usize;
        const CHUNK: usize = 25_000;
        let encode_row = |key: &str, t: i64, row: usize| -> (String, Stored) {
            let values: Vec<Value> = feature_cols
                .iter()
                .map(|(f, c)| match (f.kind, c) {
                    (ColumnType::Float64, c) => c
                        .number(row)
                        .and_then(|x| serde_json::Number::from_f64(x).map(Value::Number))
                        .unwrap_or(Value::Null),
                    (ColumnType::Int64, ColumnData::Int64(v)) => {
                        v[row].map_or(Value::Null, Value::from)
                    }
                    (ColumnType::Bool, ColumnData::Bool(v)) => {
                        v[row].map_or(Value::Null, Value::from)
                    }
                    (_, c) => c.text(row).map_or(Value::Null, Value::from),
                })
                .collect();
            (store_key(&meta.id, key), Stored { event_micros: t, values: encode_values(&values) })
        };
        let entries: Vec<(String, (i64, i64, usize))> = latest.into_iter().collect();
        // Encode the next chunk while the store writes the previous one.
        let mut pending: Option<Vec<(String, Stored)>> = None;
        for (n, chunk) in entries.chunks(CHUNK).enumerate() {
            let encode = async {
                chunk.iter().map(|(key, (t, _, row))| encode_row(key, *t, *row)).collect::<Vec<_>>()
            };
            let batch = match pending.take() {
                Some(prev) => {
                    let (w, batch) = tokio::join!(self.online.write(prev), encode);
                    written += w?;
                    batch
                }
                None => encode.await,
            };
            newest = chunk.iter().map(|(_, (t, _, _))| *t).fold(newest, i64::max);
            pending = Some(batch);
            self.set_progress(id, 0.5 + 0.5 * (n * CHUNK) as f64 / total.max(1) as f64).await?;
        }
        let batch = pending.unwrap_or_default();
        written += self.online.write(batch).await?;
        tracing::debug!(ms = t0.elapsed().as_millis(), "materialize: written");
        if total > 0 {
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
        Ok(
            json!({"rows_read": table.rows, "entities": total, "written": written, "incremental": incremental}),
        )
    }
}
