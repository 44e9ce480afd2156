//! The feature store: entities, feature views over team datasets, feature services, the online
//! store (embedded or Redis), materialization into it (a durable job, full or incremental from
//! the view's watermark), online lookups of many entities × many features, pushes, freshness.

pub mod nats;
pub mod online;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use plinth_api::data::{ColumnType, DatasetRef};
use plinth_api::features::{
    CreateEntity, CreateFeatureService, CreateFeatureView, CreateTrainingSet, Entity, FeatureField,
    FeatureService, FeatureView, Freshness, JoinKey, Materialization, MaterializeRequest,
    OnlineColumn, OnlineMetadata, OnlineRequest, OnlineResponse, PushRequest, PushResponse,
};
use plinth_api::governance::JobStatus;
use plinth_api::identity::TeamRole;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::any::AnyRow;

use crate::Plinth;
use crate::audit::{self, Target};
use crate::auth::Principal;
use crate::data::ColumnData;
use crate::error::{Error, Result};
use crate::store::{Sql, col};
use crate::util::{check_name, check_text, micros_to_time, new_id, now_micros, time_to_micros};
use online::Stored;

/// What a view stores besides its identity (the `spec` column).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ViewSpec {
    join_keys: Vec<JoinKey>,
    source: DatasetRef,
    timestamp_field: String,
    created_timestamp_field: Option<String>,
    features: Vec<FeatureField>,
    ttl_seconds: u64,
    online: bool,
    freshness_sla_seconds: u64,
}

/// A view as lookups need it, cached in memory (views do not change after creation).
#[derive(Debug)]
pub(crate) struct ViewMeta {
    id: String,
    name: String,
    team_id: String,
    public: bool,
    spec: ViewSpec,
    /// Feature name → position in the stored values.
    index: HashMap<String, usize>,
}

/// Views by (team name, view name).
#[derive(Default)]
pub(crate) struct ViewCache(RwLock<HashMap<(String, String), Arc<ViewMeta>>>);

pub(crate) const MATERIALIZE: &str = "materialize";

/// A stored row, decoded: its event time and values in the view's feature order.
type Decoded = (i64, Vec<Value>);

/// The online store's value encoding: per feature a tag byte, then the value (little endian):
/// 0 null, 1 f64, 2 i64, 3 false, 4 true, 5 string (u32 length + UTF-8).
fn encode_values(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 9);
    for v in values {
        match v {
            Value::Null => out.push(0),
            Value::Number(n) => match n.as_i64() {
                Some(i) if !n.is_f64() => {
                    out.push(2);
                    out.extend_from_slice(&i.to_le_bytes());
                }
                _ => {
                    out.push(1);
                    out.extend_from_slice(&n.as_f64().unwrap_or(f64::NAN).to_le_bytes());
                }
            },
            Value::Bool(b) => out.push(if *b { 4 } else { 3 }),
            Value::String(s) => {
                out.push(5);
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            other => {
                let s = other.to_string();
                out.push(5);
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
    out
}

fn decode_values(mut b: &[u8]) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    let eight = |b: &[u8]| -> Option<[u8; 8]> { b.get(..8)?.try_into().ok() };
    while let Some((&tag, rest)) = b.split_first() {
        b = rest;
        out.push(match tag {
            0 => Value::Null,
            1 => {
                let x = f64::from_le_bytes(eight(b)?);
                b = &b[8..];
                serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
            }
            2 => {
                let x = i64::from_le_bytes(eight(b)?);
                b = &b[8..];
                Value::from(x)
            }
            3 => Value::Bool(false),
            4 => Value::Bool(true),
            5 => {
                let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
                let s = std::str::from_utf8(b.get(4..4 + n)?).ok()?.to_string();
                b = &b[4 + n..];
                Value::String(s)
            }
            _ => return None,
        });
    }
    Some(out)
}

/// The online-store key of an entity row of a view.
fn store_key(view_id: &str, key: &str) -> String {
    format!("{view_id}\u{1f}{key}")
}

/// A join-key value in canonical text: integers in decimal, strings as they are.
fn key_text(field: &str, kind: ColumnType, v: &Value) -> Result<String> {
    match (kind, v) {
        (ColumnType::Int64, Value::Number(n)) if n.is_i64() => Ok(n.to_string()),
        (ColumnType::String, Value::String(s)) => Ok(s.clone()),
        (k, other) => Err(Error::invalid(
            field,
            format!("join keys of this entity are {}, got {other}", k.as_str()),
        )),
    }
}

fn check_value(field: &str, kind: ColumnType, v: &Value) -> Result<()> {
    let ok = match (kind, v) {
        (_, Value::Null) => true,
        (ColumnType::Float64, Value::Number(_)) => true,
        (ColumnType::Int64, Value::Number(n)) => n.is_i64(),
        (ColumnType::Bool, Value::Bool(_)) => true,
        (ColumnType::String, Value::String(_)) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(field, format!("expected a {} value, got {v}", kind.as_str())))
    }
}

fn rfc3339(micros: i64) -> String {
    micros_to_time(micros)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

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

    const VIEW_SELECT: &str = "SELECT v.*, e.name AS entity_name, t.name AS team_name FROM feature_views v JOIN entities e ON e.id = v.entity_id JOIN teams t ON t.id = v.team_id";

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

    async fn service_features(&self, team_id: &str, name: &str) -> Result<Vec<String>> {
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
                key.push_str(&key_text(&field, k.kind, v)?);
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
                Stored { event_micros: ts, values: encode_values(&values) },
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
    async fn note_event(&self, view_id: &str, newest: i64, watermark: Option<i64>) -> Result<()> {
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

    /// The `view:feature` references of a request: a feature service's, or the list given.
    async fn feature_refs(
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

    /// Builds a point-in-time correct training set and saves it as a dataset version whose
    /// source records the entity dataset, the features and the views' datasets (lineage).
    pub async fn create_training_set(
        &self,
        who: &Principal,
        team: &str,
        req: CreateTrainingSet,
    ) -> Result<plinth_api::data::DatasetVersion> {
        let t = self.team_ref(who, team).await?;
        who.require(&t, TeamRole::Developer, "building a training set")?;
        check_name("name", &req.name)?;
        let refs = self.feature_refs(&t.id, req.feature_service.as_deref(), &req.features).await?;
        let ents = self.resolve_dataset(&t, &req.entities, "entities").await?;
        let entity_ts = req.entity_timestamp.clone().unwrap_or_else(|| "event_timestamp".into());
        let find = |name: &str| ents.info.columns.iter().find(|c| c.name == name);
        match find(&entity_ts) {
            Some(c) if c.kind == ColumnType::Timestamp => {}
            Some(c) => {
                return Err(Error::invalid(
                    "entity_timestamp",
                    format!(
                        "column '{entity_ts}' holds {} values, not timestamps",
                        c.kind.as_str()
                    ),
                ));
            }
            None => {
                return Err(Error::invalid(
                    "entity_timestamp",
                    format!("the entity dataset has no column '{entity_ts}'"),
                ));
            }
        }
        // Group the references by view, in first-use order.
        let mut groups: Vec<(Arc<ViewMeta>, Vec<String>)> = Vec::new();
        for (i, r) in refs.iter().enumerate() {
            let field = format!("features[{i}]");
            let (view, feature) = r
                .split_once(':')
                .ok_or_else(|| Error::invalid(&field, "write features as view:feature"))?;
            let meta = self.view_meta(&t.name, view).await.map_err(|e| e.with_field(&field))?;
            if !meta.index.contains_key(feature) {
                return Err(Error::invalid(
                    &field,
                    format!("view '{view}' has no feature '{feature}'"),
                ));
            }
            match groups.iter_mut().find(|(m, _)| m.id == meta.id) {
                Some((_, cols)) => cols.push(feature.to_string()),
                None => groups.push((meta, vec![feature.to_string()])),
            }
        }
        let mut joins = Vec::with_capacity(groups.len());
        let mut lineage = Vec::new();
        for (meta, columns) in groups {
            for k in &meta.spec.join_keys {
                match find(&k.name) {
                    Some(c) if c.kind == k.kind => {}
                    _ => {
                        return Err(Error::invalid(
                            "entities",
                            format!(
                                "the entity dataset needs join key '{}' ({}) of view '{}'",
                                k.name,
                                k.kind.as_str(),
                                meta.name
                            ),
                        ));
                    }
                }
            }
            let src = self.resolve_dataset(&t, &meta.spec.source, "features").await?;
            lineage.push(format!("{}@{}@{}", meta.name, src.info.dataset, src.info.version));
            joins.push(crate::data::PitJoin {
                features: self.dataset_bytes(&src.id).await?,
                format: crate::data::FileFormat::parse(&src.info.format)
                    .unwrap_or(crate::data::FileFormat::Csv),
                keys: meta.spec.join_keys.iter().map(|k| k.name.clone()).collect(),
                entity_timestamp: entity_ts.clone(),
                feature_timestamp: meta.spec.timestamp_field.clone(),
                created_timestamp: meta.spec.created_timestamp_field.clone(),
                ttl_micros: (meta.spec.ttl_seconds > 0)
                    .then_some(meta.spec.ttl_seconds as i64 * 1_000_000),
                columns,
            });
        }
        let entities = self.dataset_bytes(&ents.id).await?;
        let format = crate::data::FileFormat::parse(&ents.info.format)
            .unwrap_or(crate::data::FileFormat::Csv);
        let tables = self.tables.clone();
        let parquet =
            tokio::task::spawn_blocking(move || tables.point_in_time(entities, format, joins))
                .await
                .map_err(Error::internal)?
                .map_err(|e| Error::new(plinth_api::Code::InvalidData, e).with_field("entities"))?;
        let staged = self.staging().receive(&mut parquet.as_slice(), u64::MAX).await?;
        let source = format!(
            "training set: entities {}@{} as of '{entity_ts}'; features {}; views {}",
            ents.info.dataset,
            ents.info.version,
            refs.join(", "),
            lineage.join(", ")
        );
        let upload = plinth_api::data::UploadDataset {
            format: Some("parquet".into()),
            source: Some(source),
            description: None,
        };
        self.upload_dataset(who, team, &req.name, upload, staged).await
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_round_trip() {
        let values = vec![
            json!(0.1),
            json!(-3),
            Value::Null,
            json!(true),
            json!(false),
            json!("Lyon ✓"),
            json!(1e300),
        ];
        assert_eq!(decode_values(&encode_values(&values)).unwrap(), values);
        assert_eq!(decode_values(&[9]), None, "an unknown tag is refused");
        assert_eq!(decode_values(&[1, 0, 0]), None, "a truncated value is refused");
    }
}
