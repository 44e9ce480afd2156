//! Entities, feature views (checked against their dataset's schema) and feature services,
//! and the in-memory cache of view metadata that lookups use.

use super::*;

impl Plinth {
    pub async fn create_entity(
        &self,
        who: &Principal,
        team: &str,
        req: CreateEntity,
    ) -> Result<Entity> {
        let t = self.team_ref(who, team).await?;
        who.require(&t, TeamRole::Developer, "defining an entity")?;
        check_name("name", &req.name)?;
        if req.join_keys.is_empty() {
            return Err(Error::invalid("join_keys", "an entity needs at least one join key"));
        }
        for (i, k) in req.join_keys.iter().enumerate() {
            check_name(&format!("join_keys[{i}].name"), &k.name)?;
            if !matches!(k.kind, ColumnType::Int64 | ColumnType::String) {
                return Err(Error::invalid(
                    format!("join_keys[{i}].type"),
                    "join keys are int64 or string",
                ));
            }
        }
        let description = req.description.unwrap_or_default();
        check_text("description", &description, 10_000)?;
        let now = now_micros();
        let id = new_id("ent");
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO entities (id, team_id, name, join_keys, description, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [id.clone().into(), t.id.clone().into(), req.name.clone().into(), serde_json::to_string(&req.join_keys)?.into(), description.clone().into(), now.into(), who.id.clone().into()],
        )
        .execute_unique(&mut tx, || Error::already_exists("entity", &req.name).with_field("name"))
        .await?;
        let target = Target {
            team_id: Some(&t.id),
            object_type: "entity",
            object_id: &id,
            object_name: &req.name,
        };
        audit::record(&mut tx, who, "entity.create", target, json!({"join_keys": req.join_keys}))
            .await?;
        tx.commit().await?;
        Ok(Entity {
            team: t.name,
            name: req.name,
            join_keys: req.join_keys,
            description,
            created_at: micros_to_time(now),
        })
    }

    pub async fn list_entities(&self, who: &Principal, team: &str) -> Result<Vec<Entity>> {
        let t = self.team_ref(who, team).await?;
        let rows = self
            .db
            .fetch_all(&Sql::with(
                "SELECT * FROM entities WHERE team_id = $1 ORDER BY name",
                [t.id.clone().into()],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Entity {
                    team: t.name.clone(),
                    name: col(r, "name")?,
                    join_keys: serde_json::from_str(&col::<String>(r, "join_keys")?)?,
                    description: col(r, "description")?,
                    created_at: micros_to_time(col(r, "created_at")?),
                })
            })
            .collect()
    }

    /// Defines a feature view over a dataset of the team, checked against the dataset's schema.
    pub async fn create_feature_view(
        &self,
        who: &Principal,
        team: &str,
        req: CreateFeatureView,
    ) -> Result<FeatureView> {
        let t = self.team_ref(who, team).await?;
        who.require(&t, TeamRole::Developer, "defining a feature view")?;
        check_name("name", &req.name)?;
        let ent = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT id, join_keys FROM entities WHERE team_id = $1 AND name = $2",
                [t.id.clone().into(), req.entity.clone().into()],
            ))
            .await?
            .ok_or_else(|| {
                Error::not_found("entity", format!("{}/{}", t.name, req.entity))
                    .with_field("entity")
            })?;
        let join_keys: Vec<JoinKey> = serde_json::from_str(&col::<String>(&ent, "join_keys")?)?;
        let ds = self.resolve_dataset(&t, &req.source, "source").await?;
        let column = |field: String, name: &str| {
            ds.info.columns.iter().find(|c| c.name == name).ok_or_else(|| {
                Error::invalid(
                    field,
                    format!(
                        "dataset {}@{} has no column '{name}'",
                        ds.info.dataset, ds.info.version
                    ),
                )
            })
        };
        for k in &join_keys {
            let c = column("entity".into(), &k.name)?;
            if c.kind != k.kind {
                return Err(Error::invalid(
                    "entity",
                    format!(
                        "join key '{}' is {} in the entity but {} in the dataset",
                        k.name,
                        k.kind.as_str(),
                        c.kind.as_str()
                    ),
                ));
            }
        }
        for (field, name) in [
            ("timestamp_field", Some(&req.timestamp_field)),
            ("created_timestamp_field", req.created_timestamp_field.as_ref()),
        ] {
            let Some(name) = name else { continue };
            let c = column(field.into(), name)?;
            if c.kind != ColumnType::Timestamp {
                return Err(Error::invalid(
                    field,
                    format!("column '{name}' holds {} values, not timestamps", c.kind.as_str()),
                ));
            }
        }
        if req.features.is_empty() {
            return Err(Error::invalid("features", "a view needs at least one feature"));
        }
        for (i, f) in req.features.iter().enumerate() {
            let c = column(format!("features[{i}].name"), &f.name)?;
            let compatible =
                c.kind == f.kind || (f.kind == ColumnType::Float64 && c.kind == ColumnType::Int64);
            if !compatible || f.kind == ColumnType::Timestamp {
                return Err(Error::invalid(
                    format!("features[{i}].type"),
                    format!(
                        "column '{}' holds {} values; the feature is declared {}",
                        f.name,
                        c.kind.as_str(),
                        f.kind.as_str()
                    ),
                ));
            }
        }
        let spec = ViewSpec {
            join_keys,
            source: DatasetRef { name: req.source.name.clone(), version: req.source.version },
            timestamp_field: req.timestamp_field,
            created_timestamp_field: req.created_timestamp_field,
            features: req.features,
            ttl_seconds: req.ttl_seconds,
            online: req.online,
            freshness_sla_seconds: req.freshness_sla_seconds.max(1),
        };
        let id = new_id("fv");
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO feature_views (id, team_id, name, entity_id, spec, public, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            [id.clone().into(), t.id.clone().into(), req.name.clone().into(), col::<String>(&ent, "id")?.into(), serde_json::to_string(&spec)?.into(), i64::from(req.public).into(), now.into(), who.id.clone().into()],
        )
        .execute_unique(&mut tx, || Error::already_exists("feature view", &req.name).with_field("name"))
        .await?;
        let target = Target {
            team_id: Some(&t.id),
            object_type: "feature_view",
            object_id: &id,
            object_name: &req.name,
        };
        audit::record(&mut tx, who, "feature_view.create", target, serde_json::to_value(&spec)?)
            .await?;
        tx.commit().await?;
        self.get_feature_view(who, team, &req.name).await
    }

    pub(super) const VIEW_SELECT: &str = "SELECT v.*, e.name AS entity_name, t.name AS team_name FROM feature_views v JOIN entities e ON e.id = v.entity_id JOIN teams t ON t.id = v.team_id";

    fn view_from_row(&self, r: &AnyRow) -> Result<FeatureView> {
        let spec: ViewSpec = serde_json::from_str(&col::<String>(r, "spec")?)?;
        let last_event: Option<i64> = col(r, "last_event")?;
        let stale = last_event
            .is_none_or(|t| now_micros() - t > spec.freshness_sla_seconds as i64 * 1_000_000);
        Ok(FeatureView {
            team: col(r, "team_name")?,
            name: col(r, "name")?,
            entity: col(r, "entity_name")?,
            join_keys: spec.join_keys,
            source: spec.source,
            timestamp_field: spec.timestamp_field,
            created_timestamp_field: spec.created_timestamp_field,
            features: spec.features,
            ttl_seconds: spec.ttl_seconds,
            online: spec.online,
            freshness_sla_seconds: spec.freshness_sla_seconds,
            public: col::<i64>(r, "public")? != 0,
            freshness: Freshness {
                last_event_at: last_event.map(micros_to_time),
                last_materialized_at: col::<Option<i64>>(r, "last_materialized_at")?
                    .map(micros_to_time),
                watermark: col::<Option<i64>>(r, "watermark")?.map(micros_to_time),
                stale,
            },
            created_at: micros_to_time(col(r, "created_at")?),
        })
    }

    pub async fn get_feature_view(
        &self,
        who: &Principal,
        team: &str,
        name: &str,
    ) -> Result<FeatureView> {
        let t = self.team_ref(who, team).await?;
        let r = self
            .db
            .fetch_optional(&Sql::with(
                &format!("{} WHERE v.team_id = $1 AND v.name = $2", Self::VIEW_SELECT),
                [t.id.clone().into(), name.into()],
            ))
            .await?
            .ok_or_else(|| Error::not_found("feature view", format!("{}/{name}", t.name)))?;
        self.view_from_row(&r)
    }

    pub async fn list_feature_views(
        &self,
        who: &Principal,
        team: &str,
    ) -> Result<Vec<FeatureView>> {
        let t = self.team_ref(who, team).await?;
        let rows = self
            .db
            .fetch_all(&Sql::with(
                &format!("{} WHERE v.team_id = $1 ORDER BY v.name", Self::VIEW_SELECT),
                [t.id.clone().into()],
            ))
            .await?;
        rows.iter().map(|r| self.view_from_row(r)).collect()
    }

    /// Every view's freshness, for `/metrics`: (team, view, seconds since the newest event, stale).
    pub async fn freshness_gauges(&self) -> Result<Vec<(String, String, Option<f64>, bool)>> {
        let rows = self
            .db
            .fetch_all(&Sql::new(&format!("{} ORDER BY t.name, v.name", Self::VIEW_SELECT)))
            .await?;
        let now = now_micros();
        rows.iter()
            .map(|r| {
                let v = self.view_from_row(r)?;
                let age = v.freshness.last_event_at.map(|t| (now - time_to_micros(t)) as f64 / 1e6);
                Ok((v.team, v.name, age, v.freshness.stale))
            })
            .collect()
    }

    pub async fn create_feature_service(
        &self,
        who: &Principal,
        team: &str,
        req: CreateFeatureService,
    ) -> Result<FeatureService> {
        let t = self.team_ref(who, team).await?;
        who.require(&t, TeamRole::Developer, "defining a feature service")?;
        check_name("name", &req.name)?;
        if req.features.is_empty() {
            return Err(Error::invalid("features", "a service needs at least one feature"));
        }
        for (i, f) in req.features.iter().enumerate() {
            let (view, feature) = f.split_once(':').ok_or_else(|| {
                Error::invalid(format!("features[{i}]"), "write features as view:feature")
            })?;
            let meta = self
                .view_meta(&t.name, view)
                .await
                .map_err(|e| e.with_field(format!("features[{i}]")))?;
            if !meta.index.contains_key(feature) {
                return Err(Error::invalid(
                    format!("features[{i}]"),
                    format!("view '{view}' has no feature '{feature}'"),
                ));
            }
        }
        let description = req.description.unwrap_or_default();
        let id = new_id("fs");
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO feature_services (id, team_id, name, features, description, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [id.clone().into(), t.id.clone().into(), req.name.clone().into(), serde_json::to_string(&req.features)?.into(), description.clone().into(), now.into(), who.id.clone().into()],
        )
        .execute_unique(&mut tx, || Error::already_exists("feature service", &req.name).with_field("name"))
        .await?;
        let target = Target {
            team_id: Some(&t.id),
            object_type: "feature_service",
            object_id: &id,
            object_name: &req.name,
        };
        audit::record(
            &mut tx,
            who,
            "feature_service.create",
            target,
            json!({"features": req.features}),
        )
        .await?;
        tx.commit().await?;
        Ok(FeatureService {
            team: t.name,
            name: req.name,
            features: req.features,
            description,
            created_at: micros_to_time(now),
        })
    }

    pub(super) async fn service_features(&self, team_id: &str, name: &str) -> Result<Vec<String>> {
        let r = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT features FROM feature_services WHERE team_id = $1 AND name = $2",
                [team_id.into(), name.into()],
            ))
            .await?
            .ok_or_else(|| {
                Error::not_found("feature service", name).with_field("feature_service")
            })?;
        Ok(serde_json::from_str(&col::<String>(&r, "features")?)?)
    }

    /// A view's metadata, from the cache or the database. Looks up by team *name* without
    /// authorizing: callers check access.
    pub(crate) async fn view_meta(&self, team: &str, view: &str) -> Result<Arc<ViewMeta>> {
        let key = (team.to_string(), view.to_string());
        if let Some(m) = self.views.0.read().expect("view cache").get(&key) {
            return Ok(m.clone());
        }
        let r = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT v.id, v.team_id, v.spec, v.public FROM feature_views v JOIN teams t ON t.id = v.team_id WHERE t.name = $1 AND v.name = $2",
                [team.into(), view.into()],
            ))
            .await?
            .ok_or_else(|| Error::not_found("feature view", format!("{team}/{view}")))?;
        let spec: ViewSpec = serde_json::from_str(&col::<String>(&r, "spec")?)?;
        let index = spec.features.iter().enumerate().map(|(i, f)| (f.name.clone(), i)).collect();
        let meta = Arc::new(ViewMeta {
            id: col(&r, "id")?,
            name: view.to_string(),
            team_id: col(&r, "team_id")?,
            public: col::<i64>(&r, "public")? != 0,
            spec,
            index,
        });
        self.views.0.write().expect("view cache").insert(key, meta.clone());
        Ok(meta)
    }
}
