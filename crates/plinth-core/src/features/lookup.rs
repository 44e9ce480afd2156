//! Online reads: many entities × many features in Feast's shapes, and the features of a
//! prediction by entity key (read as the deployment's own team).

use super::*;

impl Plinth {
    /// Online read: many entities × many features, in Feast's answer shape. Without a caller,
    /// only public views answer.
    pub async fn online_features(
        &self,
        who: Option<&Principal>,
        team: &str,
        req: &OnlineRequest,
    ) -> Result<OnlineResponse> {
        let team_id = match who {
            Some(p) => Some(self.team_ref(p, team).await?.id),
            None => None,
        };
        if req.feature_service.is_some() && team_id.is_none() {
            return Err(Error::new(
                plinth_api::Code::Unauthenticated,
                "reading a feature service needs an API key",
            ));
        }
        let refs = self
            .feature_refs(
                team_id.as_deref().unwrap_or_default(),
                req.feature_service.as_deref(),
                &req.features,
            )
            .await?;
        self.online_lookup(team_id.as_deref(), team, &refs, &req.entities).await
    }

    /// Reads online features of `team`'s views: as that team when `team_id` is given, else
    /// public views only.
    pub(crate) async fn online_lookup(
        &self,
        team_id: Option<&str>,
        team: &str,
        refs: &[String],
        entities: &std::collections::BTreeMap<String, Vec<Value>>,
    ) -> Result<OnlineResponse> {
        // Resolve every reference to (view, position), views in first-use order.
        let mut views: Vec<Arc<ViewMeta>> = Vec::new();
        let mut cols: Vec<(usize, usize)> = Vec::with_capacity(refs.len());
        for (i, r) in refs.iter().enumerate() {
            let field = format!("features[{i}]");
            let (view, feature) = r
                .split_once(':')
                .ok_or_else(|| Error::invalid(&field, "write features as view:feature"))?;
            let meta = match views.iter().position(|v| v.name == view) {
                Some(vi) => vi,
                None => {
                    let m = self.view_meta(team, view).await.map_err(|e| e.with_field(&field))?;
                    match team_id {
                        Some(t) if t != m.team_id => {
                            return Err(Error::not_found("feature view", view).with_field(&field));
                        }
                        None if !m.public => {
                            return Err(Error::new(
                                plinth_api::Code::Unauthenticated,
                                format!("feature view '{view}' is not public: send an API key"),
                            ));
                        }
                        _ => {}
                    }
                    views.push(m);
                    views.len() - 1
                }
            };
            let pos = *views[meta].index.get(feature).ok_or_else(|| {
                Error::invalid(&field, format!("view '{view}' has no feature '{feature}'"))
            })?;
            cols.push((meta, pos));
        }
        // The entity rows: every view must take the same join keys.
        let keys = &views[0].spec.join_keys;
        for v in &views {
            if v.spec.join_keys != *keys {
                return Err(Error::invalid(
                    "features",
                    "the views take different join keys: read them in separate calls",
                ));
            }
        }
        let mut n = None;
        for k in keys {
            let vals = entities.get(&k.name).ok_or_else(|| {
                Error::missing(format!("entities.{}", k.name), "a join key of the features' entity")
            })?;
            if *n.get_or_insert(vals.len()) != vals.len() {
                return Err(Error::invalid(
                    "entities",
                    "every join key needs the same number of values",
                ));
            }
        }
        for name in entities.keys() {
            if !keys.iter().any(|k| &k.name == name) {
                return Err(Error::invalid(
                    format!("entities.{name}"),
                    "not a join key of the features' entity",
                ));
            }
        }
        let n = n.unwrap_or(0);
        if n > 10_000 {
            return Err(Error::invalid("entities", "at most 10000 entity rows per call"));
        }
        let key_cols: Vec<(&JoinKey, &Vec<Value>)> =
            keys.iter().map(|k| (k, &entities[&k.name])).collect();
        let key_texts = (0..n)
            .map(|i| {
                let mut s = String::new();
                for (j, (k, values)) in key_cols.iter().enumerate() {
                    if j > 0 {
                        s.push('\u{1f}');
                    }
                    s.push_str(&key_text(
                        &format!("entities.{}[{i}]", k.name),
                        k.kind,
                        &values[i],
                    )?);
                }
                Ok(s)
            })
            .collect::<Result<Vec<String>>>()?;
        // One read per view, then decode each stored row once.
        let mut rows: Vec<Vec<Option<Decoded>>> = Vec::with_capacity(views.len());
        for v in &views {
            let ks: Vec<String> = key_texts.iter().map(|k| store_key(&v.id, k)).collect();
            let stored = self.online.read(&ks).await?;
            rows.push(
                stored
                    .into_iter()
                    .map(|s| s.and_then(|s| decode_values(&s.values).map(|v| (s.event_micros, v))))
                    .collect(),
            );
        }
        let mut results = Vec::with_capacity(keys.len() + cols.len());
        let mut names = Vec::with_capacity(keys.len() + cols.len());
        for k in keys {
            names.push(k.name.clone());
            results.push(OnlineColumn {
                values: entities[&k.name].clone(),
                statuses: vec!["PRESENT".into(); n],
                event_timestamps: vec!["1970-01-01T00:00:00Z".into(); n],
            });
        }
        for ((vi, pos), r) in cols.iter().zip(refs) {
            names.push(r.split_once(':').map_or(r.as_str(), |x| x.1).to_string());
            let mut c = OnlineColumn {
                values: Vec::with_capacity(n),
                statuses: Vec::with_capacity(n),
                event_timestamps: Vec::with_capacity(n),
            };
            for row in &rows[*vi] {
                match row {
                    Some((ts, vals)) => {
                        c.values.push(vals.get(*pos).cloned().unwrap_or(Value::Null));
                        c.statuses.push("PRESENT".into());
                        c.event_timestamps.push(rfc3339(*ts));
                    }
                    None => {
                        c.values.push(Value::Null);
                        c.statuses.push("NOT_FOUND".into());
                        c.event_timestamps.push("1970-01-01T00:00:00Z".into());
                    }
                }
            }
            results.push(c);
        }
        Ok(OnlineResponse { metadata: OnlineMetadata { feature_names: names }, results })
    }

    /// Checks that a version may declare a feature service: it exists in the team and gives
    /// exactly the features the signature names.
    pub(crate) async fn check_feature_service(
        &self,
        team_id: &str,
        service: &str,
        signature: &plinth_api::registry::Signature,
    ) -> Result<()> {
        let field = "metadata.feature_service";
        let refs =
            self.service_features(team_id, service).await.map_err(|e| e.with_field(field))?;
        let Some(names) = &signature.feature_names else {
            return Err(Error::invalid(
                field,
                "the signature has no feature names to match the service's features to",
            ));
        };
        let mut given: Vec<&str> =
            refs.iter().map(|r| r.split_once(':').map_or(r.as_str(), |x| x.1)).collect();
        let mut wanted: Vec<&str> = names.iter().map(String::as_str).collect();
        given.sort_unstable();
        wanted.sort_unstable();
        if given != wanted {
            return Err(Error::invalid(
                field,
                format!(
                    "feature service '{service}' gives [{}]; the model takes [{}]",
                    given.join(", "),
                    wanted.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// The feature values of entity rows for a prediction by the version `version_id` of a
    /// deployment of `team`: read through the version's feature service, as the owning team.
    /// Absent entities give nulls (missing values), as an online read does.
    pub async fn prediction_features(
        &self,
        team_id: &str,
        team: &str,
        version_id: &str,
        entities: &std::collections::BTreeMap<String, Vec<Value>>,
    ) -> Result<std::collections::BTreeMap<String, Vec<Value>>> {
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT feature_service FROM model_versions WHERE id = $1",
                [version_id.into()],
            ))
            .await?
            .ok_or_else(|| Error::internal("the serving version vanished"))?;
        let service: Option<String> = col(&row, "feature_service")?;
        let service = service.ok_or_else(|| {
            Error::invalid(
                "entities",
                "the serving version declares no feature service: send rows or columns",
            )
        })?;
        let refs = self.service_features(team_id, &service).await?;
        let answer =
            self.online_lookup(Some(team_id), team, &refs, entities).await.map_err(|e| {
                if e.field.as_deref().is_some_and(|f| f.starts_with("features")) {
                    e.with_field("entities")
                } else {
                    e
                }
            })?;
        let keys = answer.results.len() - refs.len();
        Ok(answer.metadata.feature_names[keys..]
            .iter()
            .cloned()
            .zip(answer.results.into_iter().skip(keys).map(|c| c.values))
            .collect())
    }

    /// The `view:feature` references of a request: a feature service's, or the list given.
    pub(super) async fn feature_refs(
        &self,
        team_id: &str,
        service: Option<&str>,
        features: &[String],
    ) -> Result<Vec<String>> {
        match (service, features.is_empty()) {
            (Some(s), true) => self.service_features(team_id, s).await,
            (None, false) => Ok(features.to_vec()),
            _ => Err(Error::invalid("features", "give either features or feature_service")),
        }
    }
}
