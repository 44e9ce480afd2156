//! Pushes: fresh rows written straight to the online store (from the API and from NATS), and
//! the view's freshness bookkeeping.

use super::*;

impl Plinth {
    /// Writes fresh values of a view straight to the online store.
    pub async fn push_features(
        &self,
        who: &Principal,
        team: &str,
        req: PushRequest,
    ) -> Result<PushResponse> {
        let t = self.team_ref(who, team).await?;
        who.require(&t, TeamRole::Developer, "pushing features")?;
        let meta = self
            .view_meta(&t.name, &req.feature_view)
            .await
            .map_err(|e| e.with_field("feature_view"))?;
        self.push_rows(&meta, &req.rows).await
    }

    pub(crate) async fn push_rows(
        &self,
        meta: &ViewMeta,
        rows: &[serde_json::Map<String, Value>],
    ) -> Result<PushResponse> {
        if rows.len() > 100_000 {
            return Err(Error::invalid("rows", "at most 100000 rows per push"));
        }
        let mut out = Vec::with_capacity(rows.len());
        let mut newest = i64::MIN;
        for (i, row) in rows.iter().enumerate() {
            let mut key = String::new();
            for (j, k) in meta.spec.join_keys.iter().enumerate() {
                let field = format!("rows[{i}].{}", k.name);
                let v = row.get(&k.name).ok_or_else(|| Error::missing(&field, "a join key"))?;
                if j > 0 {
                    key.push('\u{1f}');
                }
                push_key_text(&mut key, || field, k.kind, v)?;
            }
            let ts = match row.get("event_timestamp") {
                Some(Value::String(s)) => time_to_micros(
                    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                        .map_err(|e| {
                            Error::invalid(
                                format!("rows[{i}].event_timestamp"),
                                format!("not an RFC 3339 time: {e}"),
                            )
                        })?,
                ),
                Some(other) => {
                    return Err(Error::invalid(
                        format!("rows[{i}].event_timestamp"),
                        format!("expected an RFC 3339 time, got {other}"),
                    ));
                }
                None => {
                    return Err(Error::missing(
                        format!("rows[{i}].event_timestamp"),
                        "each row needs its event time",
                    ));
                }
            };
            for name in row.keys() {
                if name != "event_timestamp"
                    && !meta.index.contains_key(name)
                    && !meta.spec.join_keys.iter().any(|k| &k.name == name)
                {
                    return Err(Error::invalid(
                        format!("rows[{i}].{name}"),
                        "not a feature of the view",
                    ));
                }
            }
            let mut values = Vec::with_capacity(meta.spec.features.len());
            for f in &meta.spec.features {
                let v = row.get(&f.name).cloned().unwrap_or(Value::Null);
                check_value(&format!("rows[{i}].{}", f.name), f.kind, &v)?;
                values.push(v);
            }
            newest = newest.max(ts);
            out.push((
                store_key(&meta.id, &key),
                Stored { event_micros: ts, values: encode_values(&values).into() },
            ));
        }
        let received = out.len() as u64;
        let written = self.online.write(out).await? as u64;
        if received > 0 {
            self.note_event(&meta.id, newest, None).await?;
        }
        Ok(PushResponse { written, received })
    }

    /// Records the newest event written (and, for materializations, the watermark).
    pub(super) async fn note_event(
        &self,
        view_id: &str,
        newest: i64,
        watermark: Option<i64>,
    ) -> Result<()> {
        let mut tx = self.db.begin().await?;
        Sql::with(
            "UPDATE feature_views SET last_event = CASE WHEN last_event IS NULL OR last_event < $1 THEN $1 ELSE last_event END WHERE id = $2",
            [newest.into(), view_id.into()],
        )
        .execute(&mut tx)
        .await?;
        if let Some(w) = watermark {
            Sql::with(
                "UPDATE feature_views SET watermark = $1, last_materialized_at = $2 WHERE id = $3",
                [w.into(), now_micros().into(), view_id.into()],
            )
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await
    }
}
