//! The model registry: models (named per team), immutable numbered versions with a validated
//! artifact, a signature, a model card and lineage.

use std::collections::{BTreeMap, HashSet};

use plinth_api::Code;
use plinth_api::Page;
use plinth_api::identity::TeamRole;
use plinth_api::registry::{
    ApprovalState, Artifact, CreateModel, CreateVersion, Model, ModelFormat, ModelQuery,
    ModelVersion, Signature, SignatureSource, Task, UpdateModel, UpdateVersion, VersionQuery,
};
use serde_json::json;
use sqlx::any::AnyRow;

use crate::Plinth;
use crate::audit::{self, Target, like_escape};
use crate::auth::{Principal, TeamRef};
use crate::error::{Error, Result};
use crate::store::artifacts::{ArtifactReader, StagedFile};
use crate::store::{Sql, col};
use crate::util::{
    check_name, check_text, decode_cursor, encode_cursor, micros_to_time, new_id, now_micros,
    page_limit,
};

/// A model as the registry finds it before an operation.
pub struct ModelRef {
    pub team: TeamRef,
    pub id: String,
    pub name: String,
    pub task: Task,
    pub archived: bool,
}

fn check_tags(field: &str, tags: &BTreeMap<String, String>) -> Result<()> {
    if tags.len() > 64 {
        return Err(Error::invalid(field, "at most 64 tags"));
    }
    for (k, v) in tags {
        if k.is_empty()
            || k.len() > 128
            || k.chars().any(|c| c.is_control() || c == '=' || c.is_whitespace())
        {
            return Err(Error::invalid(
                format!("{field}.{k}"),
                "a tag key is 1-128 characters without spaces, '=' or control characters",
            ));
        }
        check_text(&format!("{field}.{k}"), v, 256)?;
    }
    Ok(())
}

fn check_owners(field: &str, owners: &[String]) -> Result<()> {
    if owners.len() > 32 {
        return Err(Error::invalid(field, "at most 32 owners"));
    }
    for (i, o) in owners.iter().enumerate() {
        if o.trim().is_empty() {
            return Err(Error::invalid(format!("{field}[{i}]"), "must not be empty"));
        }
        check_text(&format!("{field}[{i}]"), o, 200)?;
    }
    Ok(())
}

fn model_from_row(row: &AnyRow, tags: BTreeMap<String, String>) -> Result<Model> {
    let task: String = col(row, "task")?;
    let owners: String = col(row, "owners")?;
    Ok(Model {
        id: col(row, "id")?,
        team: col(row, "team_name")?,
        name: col(row, "name")?,
        task: Task::parse(&task).ok_or_else(|| Error::internal(format!("bad task {task}")))?,
        description: col(row, "description")?,
        tags,
        owners: serde_json::from_str(&owners)?,
        latest_version: col::<i64>(row, "latest_version")? as u32,
        created_at: micros_to_time(col(row, "created_at")?),
        created_by: col(row, "created_by_name")?,
        updated_at: micros_to_time(col(row, "updated_at")?),
        archived_at: col::<Option<i64>>(row, "archived_at")?.map(micros_to_time),
    })
}

pub(crate) fn version_from_row(row: &AnyRow) -> Result<ModelVersion> {
    let format: String = col(row, "format")?;
    let signature_source: String = col(row, "signature_source")?;
    let approval: String = col(row, "approval_state")?;
    Ok(ModelVersion {
        id: col(row, "id")?,
        team: col(row, "team_name")?,
        model: col(row, "model_name")?,
        version: col::<i64>(row, "version")? as u32,
        description: col(row, "description")?,
        artifact: Artifact {
            format: ModelFormat::parse(&format)
                .ok_or_else(|| Error::internal(format!("bad format {format}")))?,
            filename: col(row, "artifact_filename")?,
            size_bytes: col::<i64>(row, "artifact_size")? as u64,
            sha256: col(row, "artifact_sha256")?,
            details: serde_json::from_str(&col::<String>(row, "format_details")?)?,
        },
        signature: serde_json::from_str(&col::<String>(row, "signature")?)?,
        signature_source: serde_json::from_value(json!(signature_source))?,
        card: serde_json::from_str(&col::<String>(row, "card")?)?,
        lineage: serde_json::from_str(&col::<String>(row, "lineage")?)?,
        approval: ApprovalState::parse(&approval)
            .ok_or_else(|| Error::internal(format!("bad approval {approval}")))?,
        created_at: micros_to_time(col(row, "created_at")?),
        created_by: col(row, "created_by_name")?,
        archived_at: col::<Option<i64>>(row, "archived_at")?.map(micros_to_time),
        feature_service: col(row, "feature_service")?,
    })
}

const MODEL_SELECT: &str =
    "SELECT m.*, t.name AS team_name, COALESCE(p.name, m.created_by) AS created_by_name
    FROM models m JOIN teams t ON t.id = m.team_id LEFT JOIN principals p ON p.id = m.created_by";

const VERSION_SELECT: &str = "SELECT v.*, t.name AS team_name, m.name AS model_name, COALESCE(p.name, v.created_by) AS created_by_name
    FROM model_versions v JOIN models m ON m.id = v.model_id JOIN teams t ON t.id = v.team_id
    LEFT JOIN principals p ON p.id = v.created_by";

/// Locks a model's row until the transaction ends, and says whether the model is archived.
/// Archiving (a version or the model) and changing a deployment of it both take the lock
/// first, so neither decides on what the other is changing: a model or version archived
/// meanwhile is not deployed, one deployed meanwhile is not archived.
pub(crate) async fn lock_model(
    tx: &mut crate::store::Tx,
    db: &crate::store::Db,
    model_id: &str,
) -> Result<bool> {
    let row = Sql::with(
        &format!("SELECT archived_at FROM models WHERE id = $1{}", db.for_update()),
        [model_id.into()],
    )
    .fetch_optional_tx(tx)
    .await?;
    Ok(match row {
        Some(r) => col::<Option<i64>>(&r, "archived_at")?.is_some(),
        None => true,
    })
}

/// The environment where a version of the model (any version when `None`) serves or shadows
/// now, read in the caller's transaction (which holds [`lock_model`]).
async fn serves(
    tx: &mut crate::store::Tx,
    model_id: &str,
    version: Option<u32>,
) -> Result<Option<String>> {
    let rows = Sql::with(
        "SELECT environment, spec FROM deployments WHERE model_id = $1 ORDER BY environment",
        [model_id.into()],
    )
    .fetch_all_tx(tx)
    .await?;
    for row in rows {
        let spec: plinth_api::serving::DeploymentSpec =
            serde_json::from_str(&col::<String>(&row, "spec")?)?;
        let mut used = spec.versions.iter().map(|s| s.version).chain(spec.shadows.iter().copied());
        if version.is_none_or(|v| used.any(|u| u == v)) {
            return Ok(Some(col(&row, "environment")?));
        }
    }
    Ok(None)
}

/// Marks a version approved for production (freezing its card) inside `tx`, with its audit
/// entry; a version approved already stays as it was.
pub(crate) async fn record_production_approval(
    tx: &mut crate::store::Tx,
    who: &Principal,
    team_id: &str,
    version_id: &str,
    name: &str,
) -> Result<()> {
    let changed = Sql::with(
        "UPDATE model_versions SET approval_state = 'approved_for_production', approved_at = $1, approved_by = $2
         WHERE id = $3 AND approval_state <> 'approved_for_production'",
        [now_micros().into(), who.id.clone().into(), version_id.into()],
    )
    .execute(tx)
    .await?;
    if changed > 0 {
        let t = Target {
            team_id: Some(team_id),
            object_type: "model_version",
            object_id: version_id,
            object_name: name,
        };
        let state = ApprovalState::ApprovedForProduction.as_str();
        audit::record(tx, who, "model_version.approve", t, json!({"state": state})).await?;
    }
    Ok(())
}

/// The task an artifact implies, when the format says so.
pub(crate) fn artifact_task(
    format: ModelFormat,
    details: &serde_json::Value,
) -> Option<(Task, String)> {
    match format {
        ModelFormat::Lightgbm => {
            let objective = details["objective"].as_str()?.to_string();
            let name = objective.split_whitespace().next()?.to_string();
            let task = match name.as_str() {
                "binary" | "cross_entropy" | "xentropy" => Task::BinaryClassification,
                "multiclass" | "multiclassova" | "softmax" | "ova" => {
                    Task::MulticlassClassification
                }
                _ if name.starts_with("lambdarank") || name.starts_with("rank") => return None,
                _ => Task::Regression,
            };
            Some((task, format!("objective '{objective}'")))
        }
        ModelFormat::Xgboost => {
            let objective = details["objective"].as_str()?.to_string();
            let task = if objective.starts_with("binary:") {
                Task::BinaryClassification
            } else if objective.starts_with("multi:") {
                Task::MulticlassClassification
            } else if objective.starts_with("reg:")
                || objective.starts_with("count:")
                || objective.starts_with("survival:")
            {
                Task::Regression
            } else {
                return None;
            };
            Some((task, format!("objective '{objective}'")))
        }
        ModelFormat::Onnx => {
            let ops: Vec<&str> =
                details["operators"].as_array()?.iter().filter_map(|v| v.as_str()).collect();
            let classifier =
                ops.iter().any(|o| o.ends_with("Classifier") || o.ends_with(":ZipMap"));
            let regressor = ops.iter().any(|o| o.ends_with("Regressor"));
            match (classifier, regressor) {
                (true, false) => {
                    None.or(Some((Task::BinaryClassification, "a classifier operator".to_string())))
                }
                (false, true) => Some((Task::Regression, "a regressor operator".to_string())),
                _ => None,
            }
        }
    }
}

fn task_matches(declared: Task, implied: Task, format: ModelFormat) -> bool {
    match (declared, implied) {
        (a, b) if a == b => true,
        // ONNX classifier operators serve binary and multiclass alike.
        (Task::MulticlassClassification, Task::BinaryClassification) => format == ModelFormat::Onnx,
        _ => false,
    }
}

fn check_signature(sig: &Signature, field: &str) -> Result<()> {
    if sig.inputs.is_empty() {
        return Err(Error::invalid(format!("{field}.inputs"), "at least one input is required"));
    }
    let mut names = HashSet::new();
    for (i, t) in sig.inputs.iter().chain(sig.outputs.iter()).enumerate() {
        let place = if i < sig.inputs.len() {
            format!("{field}.inputs[{i}]")
        } else {
            format!("{field}.outputs[{}]", i - sig.inputs.len())
        };
        if t.name.is_empty() || t.name.len() > 256 {
            return Err(Error::invalid(format!("{place}.name"), "must be 1-256 characters"));
        }
        if i < sig.inputs.len() && !names.insert(t.name.as_str()) {
            return Err(Error::invalid(
                format!("{place}.name"),
                format!("duplicate input name '{}'", t.name),
            ));
        }
        if t.shape.iter().any(|&d| d < -1 || d == 0) {
            return Err(Error::invalid(
                format!("{place}.shape"),
                "dimensions are positive, or -1 for a variable dimension",
            ));
        }
    }
    if let Some(features) = &sig.feature_names {
        let mut seen = HashSet::new();
        for (i, f) in features.iter().enumerate() {
            if f.is_empty() || !seen.insert(f.as_str()) {
                return Err(Error::invalid(
                    format!("{field}.feature_names[{i}]"),
                    "feature names must be non-empty and unique",
                ));
            }
        }
        if let [input] = sig.inputs.as_slice()
            && let Some(&width) = input.shape.last()
            && input.shape.len() == 2
            && width > 0
            && width as usize != features.len()
        {
            return Err(Error::invalid(
                format!("{field}.feature_names"),
                format!("{} names for an input of width {width}", features.len()),
            ));
        }
    }
    Ok(())
}

/// Merges a signature given at registration with the artifact's: inputs must keep their names
/// and datatypes (the runtime feeds the artifact's graph), shapes and feature names may refine it.
fn merge_signature(
    artifact: Option<Signature>,
    given: Option<Signature>,
) -> Result<(Signature, SignatureSource)> {
    match (artifact, given) {
        (None, None) => Err(Error::missing(
            "metadata.signature",
            "this artifact format does not carry a signature",
        )),
        (Some(a), None) => Ok((a, SignatureSource::Artifact)),
        (None, Some(g)) => {
            check_signature(&g, "metadata.signature")?;
            Ok((g, SignatureSource::Registration))
        }
        (Some(a), Some(g)) => {
            check_signature(&g, "metadata.signature")?;
            let names = |s: &Signature| {
                s.inputs.iter().map(|t| (t.name.clone(), t.datatype)).collect::<Vec<_>>()
            };
            if names(&a) != names(&g) {
                return Err(Error::invalid(
                    "metadata.signature.inputs",
                    format!(
                        "must keep the artifact's input names and datatypes: {}",
                        a.inputs
                            .iter()
                            .map(|t| format!("{} {:?}", t.name, t.datatype))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            Ok((g, SignatureSource::Overridden))
        }
    }
}

impl Plinth {
    pub(crate) async fn model_ref(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
    ) -> Result<ModelRef> {
        let team = self.team_ref(who, team).await?;
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT id, name, task, archived_at FROM models WHERE team_id = $1 AND name = $2",
                [team.id.clone().into(), model.into()],
            ))
            .await?
            .ok_or_else(|| Error::not_found("model", format!("{}/{model}", team.name)))?;
        let task: String = col(&row, "task")?;
        Ok(ModelRef {
            id: col(&row, "id")?,
            name: col(&row, "name")?,
            task: Task::parse(&task).ok_or_else(|| Error::internal(format!("bad task {task}")))?,
            archived: col::<Option<i64>>(&row, "archived_at")?.is_some(),
            team,
        })
    }

    async fn tags_of(
        &self,
        model_ids: &[String],
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
        let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        if model_ids.is_empty() {
            return Ok(out);
        }
        let mut sql = Sql::new("SELECT model_id, key, value FROM model_tags WHERE model_id IN (");
        for (i, id) in model_ids.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(id.clone());
        }
        sql.push(")");
        for row in self.db.fetch_all(&sql).await? {
            out.entry(col(&row, "model_id")?)
                .or_default()
                .insert(col(&row, "key")?, col(&row, "value")?);
        }
        Ok(out)
    }

    async fn load_model(&self, id: &str) -> Result<Model> {
        let row = self
            .db
            .fetch_optional(&Sql::with(&format!("{MODEL_SELECT} WHERE m.id = $1"), [id.into()]))
            .await?
            .ok_or_else(|| Error::internal("model vanished"))?;
        let mut tags = self.tags_of(&[id.to_string()]).await?;
        model_from_row(&row, tags.remove(id).unwrap_or_default())
    }

    pub async fn create_model(
        &self,
        who: &Principal,
        team: &str,
        req: CreateModel,
    ) -> Result<Model> {
        let team = self.team_ref(who, team).await?;
        who.require(&team, TeamRole::Developer, "registering a model")?;
        check_name("name", &req.name)?;
        let description = req.description.unwrap_or_default();
        check_text("description", &description, 10_000)?;
        check_tags("tags", &req.tags)?;
        let owners = req.owners.unwrap_or_else(|| vec![who.name.clone()]);
        check_owners("owners", &owners)?;
        let id = new_id("mdl");
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO models (id, team_id, name, task, description, owners, latest_version, created_at, created_by, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $7)",
            [
                id.clone().into(),
                team.id.clone().into(),
                req.name.clone().into(),
                req.task.as_str().into(),
                description.clone().into(),
                serde_json::to_string(&owners)?.into(),
                now.into(),
                who.id.clone().into(),
            ],
        )
        .execute_unique(&mut tx, || Error::already_exists("model", format!("{}/{}", team.name, req.name)).with_field("name"))
        .await?;
        for (k, v) in &req.tags {
            Sql::with(
                "INSERT INTO model_tags (model_id, key, value) VALUES ($1, $2, $3)",
                [id.clone().into(), k.into(), v.into()],
            )
            .execute(&mut tx)
            .await?;
        }
        let t = Target {
            team_id: Some(&team.id),
            object_type: "model",
            object_id: &id,
            object_name: &req.name,
        };
        audit::record(
            &mut tx,
            who,
            "model.create",
            t,
            json!({"task": req.task, "description": description, "tags": req.tags, "owners": owners}),
        )
        .await?;
        tx.commit().await?;
        self.load_model(&id).await
    }

    /// Lists or searches the models the caller can see.
    pub async fn list_models(&self, who: &Principal, q: &ModelQuery) -> Result<Page<Model>> {
        let limit = page_limit(q.limit)?;
        let mut sql = Sql::new(&format!("{MODEL_SELECT} WHERE 1 = 1"));
        if let Some(team) = &q.team {
            let team = self.team_ref(who, team).await?;
            sql.push(" AND m.team_id = ").bind(team.id);
        } else if let Some(ids) = who.visible_teams() {
            if ids.is_empty() {
                return Ok(Page { items: vec![], next_cursor: None });
            }
            sql.push(" AND m.team_id IN (");
            for (i, id) in ids.into_iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(id);
            }
            sql.push(")");
        }
        if let Some(text) = q.q.as_deref().filter(|t| !t.is_empty()) {
            sql.push(" AND LOWER(m.name) LIKE ")
                .bind(format!("%{}%", like_escape(&text.to_lowercase())))
                .push(" ESCAPE '\\'");
        }
        if let Some(tag) = q.tag.as_deref() {
            let (key, value) = match tag.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (tag, None),
            };
            if key.is_empty() {
                return Err(Error::invalid("tag", "use key or key=value"));
            }
            sql.push(
                " AND EXISTS (SELECT 1 FROM model_tags g WHERE g.model_id = m.id AND g.key = ",
            )
            .bind(key);
            if let Some(value) = value {
                sql.push(" AND g.value = ").bind(value);
            }
            sql.push(")");
        }
        if let Some(format) = q.format.as_deref() {
            let format = ModelFormat::parse(format)
                .ok_or_else(|| Error::invalid("format", "one of onnx, lightgbm, xgboost"))?;
            sql.push(" AND EXISTS (SELECT 1 FROM model_versions v WHERE v.model_id = m.id AND v.archived_at IS NULL AND v.format = ")
                .bind(format.as_str())
                .push(")");
        }
        if let Some(task) = q.task.as_deref() {
            let task = Task::parse(task).ok_or_else(|| {
                Error::invalid(
                    "task",
                    "one of binary_classification, multiclass_classification, regression",
                )
            })?;
            sql.push(" AND m.task = ").bind(task.as_str());
        }
        if !q.include_archived.unwrap_or(false) {
            sql.push(" AND m.archived_at IS NULL");
        }
        if let Some(cursor) = &q.cursor {
            let parts = decode_cursor(cursor, 3)?;
            sql.push(" AND (t.name > ")
                .bind(parts[0].clone())
                .push(" OR (t.name = ")
                .bind(parts[0].clone())
                .push(" AND (m.name > ")
                .bind(parts[1].clone())
                .push(" OR (m.name = ")
                .bind(parts[1].clone())
                .push(" AND m.id > ")
                .bind(parts[2].clone())
                .push("))))");
        }
        sql.push(" ORDER BY t.name, m.name, m.id LIMIT ").bind(limit + 1);
        let rows = self.db.fetch_all(&sql).await?;
        let rows: Vec<&AnyRow> = rows.iter().collect();
        let more = rows.len() as i64 > limit;
        let page = &rows[..rows.len().min(limit as usize)];
        let ids: Vec<String> = page.iter().map(|r| col(r, "id")).collect::<Result<_>>()?;
        let mut tags = self.tags_of(&ids).await?;
        let items: Vec<Model> = page
            .iter()
            .zip(&ids)
            .map(|(r, id)| model_from_row(r, tags.remove(id).unwrap_or_default()))
            .collect::<Result<_>>()?;
        let next_cursor = more.then(|| {
            let last = items.last().expect("non-empty");
            encode_cursor(&[&last.team, &last.name, &last.id])
        });
        Ok(Page { items, next_cursor })
    }

    pub async fn get_model(&self, who: &Principal, team: &str, model: &str) -> Result<Model> {
        let m = self.model_ref(who, team, model).await?;
        self.load_model(&m.id).await
    }

    pub async fn update_model(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        req: UpdateModel,
    ) -> Result<Model> {
        let m = self.model_ref(who, team, model).await?;
        who.require(&m.team, TeamRole::Developer, "updating a model")?;
        if m.archived {
            return Err(Error::conflict(format!("model '{}/{}' is archived", m.team.name, m.name)));
        }
        if let Some(d) = &req.description {
            check_text("description", d, 10_000)?;
        }
        if let Some(tags) = &req.tags {
            check_tags("tags", tags)?;
        }
        if let Some(owners) = &req.owners {
            check_owners("owners", owners)?;
        }
        let mut tx = self.db.begin().await?;
        if let Some(d) = &req.description {
            Sql::with(
                "UPDATE models SET description = $1 WHERE id = $2",
                [d.into(), m.id.clone().into()],
            )
            .execute(&mut tx)
            .await?;
        }
        if let Some(owners) = &req.owners {
            Sql::with(
                "UPDATE models SET owners = $1 WHERE id = $2",
                [serde_json::to_string(owners)?.into(), m.id.clone().into()],
            )
            .execute(&mut tx)
            .await?;
        }
        if let Some(tags) = &req.tags {
            Sql::with("DELETE FROM model_tags WHERE model_id = $1", [m.id.clone().into()])
                .execute(&mut tx)
                .await?;
            for (k, v) in tags {
                Sql::with(
                    "INSERT INTO model_tags (model_id, key, value) VALUES ($1, $2, $3)",
                    [m.id.clone().into(), k.into(), v.into()],
                )
                .execute(&mut tx)
                .await?;
            }
        }
        Sql::with(
            "UPDATE models SET updated_at = $1 WHERE id = $2",
            [now_micros().into(), m.id.clone().into()],
        )
        .execute(&mut tx)
        .await?;
        let t = Target {
            team_id: Some(&m.team.id),
            object_type: "model",
            object_id: &m.id,
            object_name: &m.name,
        };
        audit::record(&mut tx, who, "model.update", t, serde_json::to_value(&req)?).await?;
        tx.commit().await?;
        self.load_model(&m.id).await
    }

    pub async fn archive_model(&self, who: &Principal, team: &str, model: &str) -> Result<Model> {
        let m = self.model_ref(who, team, model).await?;
        who.require(&m.team, TeamRole::Maintainer, "archiving a model")?;
        if !m.archived {
            let now = now_micros();
            let mut tx = self.db.begin().await?;
            lock_model(&mut tx, &self.db, &m.id).await?;
            if let Some(env) = serves(&mut tx, &m.id, None).await? {
                return Err(Error::conflict(format!(
                    "model '{}' is deployed in {env}: remove its deployments before archiving it",
                    m.name
                )));
            }
            Sql::with(
                "UPDATE models SET archived_at = $1, updated_at = $1 WHERE id = $2",
                [now.into(), m.id.clone().into()],
            )
            .execute(&mut tx)
            .await?;
            let t = Target {
                team_id: Some(&m.team.id),
                object_type: "model",
                object_id: &m.id,
                object_name: &m.name,
            };
            audit::record(&mut tx, who, "model.archive", t, json!({})).await?;
            tx.commit().await?;
        }
        self.load_model(&m.id).await
    }

    /// Checks, before an upload streams in, that the caller may add a version to the model.
    pub async fn authorize_version_upload(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
    ) -> Result<ModelRef> {
        let m = self.model_ref(who, team, model).await?;
        who.require(&m.team, TeamRole::Developer, "registering a version")?;
        if m.archived {
            return Err(Error::conflict(format!(
                "model '{}/{}' is archived: it takes no new versions",
                m.team.name, m.name
            )));
        }
        Ok(m)
    }

    /// Registers a new version from a staged upload: validates the artifact completely, then
    /// publishes it and records the version. On any failure nothing is stored.
    pub async fn create_version(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        req: CreateVersion,
        filename: Option<String>,
        staged: StagedFile,
    ) -> Result<ModelVersion> {
        let m = self.authorize_version_upload(who, team, model).await?;
        self.check_storage_quota(&m.team.id, staged.size).await?;
        let description = req.description.unwrap_or_default();
        check_text("metadata.description", &description, 10_000)?;
        let path = staged.path().to_path_buf();
        let backend = self.engine.backend_arc();
        let inspected =
            tokio::task::spawn_blocking(move || -> Result<plinth_formats::Inspected> {
                let bytes = std::fs::read(&path)?;
                let invalid = |m: String| Error::new(Code::InvalidModel, m).with_field("artifact");
                let inspected =
                    plinth_formats::inspect(&bytes).map_err(|e| invalid(e.to_string()))?;
                // The runtime loads it now, or it is refused: a version that cannot be served
                // is not registered.
                backend.check(inspected.format, &bytes).map_err(|reason| {
                    invalid(format!("the runtime cannot load this model: {reason}"))
                })?;
                Ok(inspected)
            })
            .await
            .map_err(Error::internal)??;
        if let Some(expected) = req.format
            && expected != inspected.format
        {
            return Err(Error::new(
                Code::InvalidModel,
                format!(
                    "the artifact is a {} model, but metadata.format says {}",
                    inspected.format.as_str(),
                    expected.as_str()
                ),
            )
            .with_field("metadata.format"));
        }
        if let Some((implied, why)) = artifact_task(inspected.format, &inspected.details)
            && !task_matches(m.task, implied, inspected.format)
        {
            return Err(Error::new(
                Code::InvalidModel,
                format!(
                    "model '{}' is registered for {}, but the artifact ({why}) is for {}",
                    m.name,
                    m.task.as_str(),
                    implied.as_str()
                ),
            )
            .with_field("artifact"));
        }
        let (signature, signature_source) = merge_signature(inspected.signature, req.signature)?;
        let card = req.card.unwrap_or_default();
        crate::card::check_card(&card)?;
        let lineage = req.lineage.unwrap_or_default();
        crate::card::check_lineage(&lineage)?;
        let feature_service = req.feature_service.clone();
        if let Some(svc) = &feature_service {
            self.check_feature_service(&m.team.id, svc, &signature).await?;
        }
        let ext = match inspected.format {
            ModelFormat::Onnx => "onnx",
            ModelFormat::Lightgbm => "txt",
            ModelFormat::Xgboost => "json",
        };
        let filename = filename
            .map(|f| f.rsplit(['/', '\\']).next().unwrap_or("").to_string())
            .filter(|f| {
                !f.is_empty()
                    && f.len() <= 200
                    && !f.starts_with('.')
                    && f.chars().all(|c| !c.is_control())
            })
            .unwrap_or_else(|| format!("model.{ext}"));

        let version_id = new_id("mv");
        let key = format!("models/{}/{}/{}/model.{ext}", m.team.id, m.id, version_id);
        let (sha256, size) = (staged.sha256.clone(), staged.size);
        self.artifacts.put(&key, staged).await?;
        let result = self
            .insert_version(
                who,
                &m,
                &version_id,
                &key,
                &filename,
                size,
                &sha256,
                inspected.format,
                &inspected.details,
                &signature,
                signature_source,
                &card,
                &lineage,
                &description,
                feature_service.as_deref(),
            )
            .await;
        if result.is_err() {
            // The row was not committed: the artifact must not linger.
            if let Err(e) = self.artifacts.delete(&key).await {
                tracing::warn!(error = %e, key, "could not delete the artifact of a failed registration");
            }
        }
        result?;
        self.load_version(&version_id).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert_version(
        &self,
        who: &Principal,
        m: &ModelRef,
        version_id: &str,
        key: &str,
        filename: &str,
        size: u64,
        sha256: &str,
        format: ModelFormat,
        details: &serde_json::Value,
        signature: &Signature,
        signature_source: SignatureSource,
        card: &plinth_api::registry::ModelCard,
        lineage: &plinth_api::registry::Lineage,
        description: &str,
        feature_service: Option<&str>,
    ) -> Result<()> {
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        let row = Sql::with(
            "UPDATE models SET latest_version = latest_version + 1, updated_at = $1 WHERE id = $2 RETURNING latest_version",
            [now.into(), m.id.clone().into()],
        )
        .fetch_optional_tx(&mut tx)
        .await?
        .ok_or_else(|| Error::internal("model vanished"))?;
        let version: i64 = col(&row, "latest_version")?;
        let source = serde_json::to_value(signature_source)?;
        Sql::with(
            "INSERT INTO model_versions (id, model_id, team_id, version, description, format, artifact_key, artifact_filename,
                artifact_size, artifact_sha256, format_details, signature, signature_source, card, lineage, approval_state,
                created_at, created_by, feature_service)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 'none', $16, $17, $18)",
            [
                version_id.into(),
                m.id.clone().into(),
                m.team.id.clone().into(),
                version.into(),
                description.into(),
                format.as_str().into(),
                key.into(),
                filename.into(),
                (size as i64).into(),
                sha256.into(),
                details.to_string().into(),
                serde_json::to_string(signature)?.into(),
                source.as_str().unwrap_or("artifact").into(),
                serde_json::to_string(card)?.into(),
                serde_json::to_string(lineage)?.into(),
                now.into(),
                who.id.clone().into(),
                feature_service.into(),
            ],
        )
        .execute(&mut tx)
        .await?;
        let name = format!("{}@{version}", m.name);
        let t = Target {
            team_id: Some(&m.team.id),
            object_type: "model_version",
            object_id: version_id,
            object_name: &name,
        };
        audit::record(
            &mut tx,
            who,
            "model_version.create",
            t,
            json!({"version": version, "format": format.as_str(), "sha256": sha256, "size_bytes": size, "lineage_source": lineage.source}),
        )
        .await?;
        let event = json!({
            "team": m.team.name, "model": m.name, "version": version, "version_id": version_id,
            "format": format.as_str(), "sha256": sha256, "size_bytes": size, "by": who.name,
        });
        self.emit(&mut tx, &m.team.id, "model_version.registered", &event).await?;
        tx.commit().await?;
        self.wake_webhooks();
        Ok(())
    }

    async fn load_version(&self, id: &str) -> Result<ModelVersion> {
        let row = self
            .db
            .fetch_optional(&Sql::with(&format!("{VERSION_SELECT} WHERE v.id = $1"), [id.into()]))
            .await?
            .ok_or_else(|| Error::internal("version vanished"))?;
        version_from_row(&row)
    }

    pub(crate) async fn version_row(&self, m: &ModelRef, version: u32) -> Result<AnyRow> {
        self.db
            .fetch_optional(&Sql::with(
                &format!("{VERSION_SELECT} WHERE v.model_id = $1 AND v.version = $2"),
                [m.id.clone().into(), i64::from(version).into()],
            ))
            .await?
            .ok_or_else(|| {
                Error::not_found("model version", format!("{}/{}@{version}", m.team.name, m.name))
            })
    }

    pub async fn list_versions(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        q: &VersionQuery,
    ) -> Result<Page<ModelVersion>> {
        let m = self.model_ref(who, team, model).await?;
        let limit = page_limit(q.limit)?;
        let mut sql = Sql::new(&format!("{VERSION_SELECT} WHERE v.model_id = "));
        sql.bind(m.id.clone());
        if !q.include_archived.unwrap_or(false) {
            sql.push(" AND v.archived_at IS NULL");
        }
        if let Some(cursor) = &q.cursor {
            let v: i64 = decode_cursor(cursor, 1)?[0]
                .parse()
                .map_err(|_| Error::invalid("cursor", "not a cursor returned by this endpoint"))?;
            sql.push(" AND v.version < ").bind(v);
        }
        sql.push(" ORDER BY v.version DESC LIMIT ").bind(limit + 1);
        let rows = self.db.fetch_all(&sql).await?;
        let items: Vec<ModelVersion> =
            rows.iter().take(limit as usize).map(version_from_row).collect::<Result<_>>()?;
        let next_cursor = (rows.len() as i64 > limit)
            .then(|| encode_cursor(&[&items.last().expect("non-empty").version.to_string()]));
        Ok(Page { items, next_cursor })
    }

    pub async fn get_version(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        version: u32,
    ) -> Result<ModelVersion> {
        let m = self.model_ref(who, team, model).await?;
        version_from_row(&self.version_row(&m, version).await?)
    }

    pub async fn update_version(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        version: u32,
        req: UpdateVersion,
    ) -> Result<ModelVersion> {
        let m = self.model_ref(who, team, model).await?;
        who.require(&m.team, TeamRole::Developer, "editing a model version")?;
        let current = version_from_row(&self.version_row(&m, version).await?)?;
        if current.archived_at.is_some() {
            return Err(Error::conflict(format!(
                "version {}/{}@{version} is archived",
                m.team.name, m.name
            )));
        }
        if let Some(d) = &req.description {
            check_text("description", d, 10_000)?;
        }
        if let Some(card) = &req.card {
            if current.approval == ApprovalState::ApprovedForProduction {
                return Err(Error::new(
                    Code::Immutable,
                    format!("the model card of {}/{}@{version} is frozen: the version is approved for production", m.team.name, m.name),
                )
                .with_field("card"));
            }
            crate::card::check_card(card)?;
        }
        let mut tx = self.db.begin().await?;
        if let Some(d) = &req.description {
            Sql::with(
                "UPDATE model_versions SET description = $1 WHERE id = $2",
                [d.into(), current.id.clone().into()],
            )
            .execute(&mut tx)
            .await?;
        }
        if let Some(card) = &req.card {
            Sql::with(
                "UPDATE model_versions SET card = $1 WHERE id = $2",
                [serde_json::to_string(card)?.into(), current.id.clone().into()],
            )
            .execute(&mut tx)
            .await?;
        }
        let name = format!("{}@{version}", m.name);
        let t = Target {
            team_id: Some(&m.team.id),
            object_type: "model_version",
            object_id: &current.id,
            object_name: &name,
        };
        audit::record(
            &mut tx,
            who,
            "model_version.update",
            t,
            json!({"changes": req, "previous_card": current.card}),
        )
        .await?;
        tx.commit().await?;
        self.load_version(&current.id).await
    }

    pub async fn archive_version(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        version: u32,
    ) -> Result<ModelVersion> {
        let m = self.model_ref(who, team, model).await?;
        who.require(&m.team, TeamRole::Maintainer, "archiving a model version")?;
        let current = version_from_row(&self.version_row(&m, version).await?)?;
        if current.archived_at.is_none() {
            let mut tx = self.db.begin().await?;
            lock_model(&mut tx, &self.db, &m.id).await?;
            if let Some(env) = serves(&mut tx, &m.id, Some(version)).await? {
                return Err(Error::conflict(format!(
                    "version {version} serves in {env}: take it out of the deployment (traffic, rollback) before archiving it"
                )));
            }
            Sql::with(
                "UPDATE model_versions SET archived_at = $1 WHERE id = $2",
                [now_micros().into(), current.id.clone().into()],
            )
            .execute(&mut tx)
            .await?;
            let name = format!("{}@{version}", m.name);
            let t = Target {
                team_id: Some(&m.team.id),
                object_type: "model_version",
                object_id: &current.id,
                object_name: &name,
            };
            audit::record(&mut tx, who, "model_version.archive", t, json!({})).await?;
            tx.commit().await?;
        }
        self.load_version(&current.id).await
    }

    /// Opens a version's artifact for download.
    pub async fn open_artifact(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        version: u32,
    ) -> Result<(ModelVersion, ArtifactReader)> {
        let m = self.model_ref(who, team, model).await?;
        let row = self.version_row(&m, version).await?;
        let key: String = col(&row, "artifact_key")?;
        let v = version_from_row(&row)?;
        let reader = self.artifacts.open(&key).await?;
        Ok((v, reader))
    }

    /// Marks a version approved for production, freezing its model card. Called by governance
    /// once a promotion is approved; only reviewers and admins may call it.
    pub async fn mark_approved_for_production(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        version: u32,
    ) -> Result<ModelVersion> {
        let m = self.model_ref(who, team, model).await?;
        if !(who.is_admin() || who.is_reviewer()) {
            return Err(Error::forbidden(
                "approving a version for production needs the reviewer or admin platform role",
            ));
        }
        let current = version_from_row(&self.version_row(&m, version).await?)?;
        if current.approval == ApprovalState::ApprovedForProduction {
            return Ok(current);
        }
        let mut tx = self.db.begin().await?;
        let name = format!("{}@{version}", m.name);
        record_production_approval(&mut tx, who, &m.team.id, &current.id, &name).await?;
        tx.commit().await?;
        self.load_version(&current.id).await
    }

    /// Deletes artifacts that no version references and that were written before `before`
    /// (microseconds): left behind when a process died between publishing an artifact and
    /// committing its version. The age bound keeps it off the artifacts of registrations still
    /// in flight on other replicas.
    pub async fn collect_orphan_artifacts(&self, before: i64) -> Result<usize> {
        let mut removed = 0;
        for (prefix, table) in [("models", "model_versions"), ("datasets", "dataset_versions")] {
            let rows =
                self.db.fetch_all(&Sql::new(&format!("SELECT artifact_key FROM {table}"))).await?;
            let referenced: HashSet<String> =
                rows.iter().map(|r| col(r, "artifact_key")).collect::<Result<_>>()?;
            for listed in self.artifacts.list(prefix).await? {
                if listed.modified < before && !referenced.contains(&listed.key) {
                    self.artifacts.delete(&listed.key).await?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// The hourly task that collects unreferenced artifacts older than the grace (see
/// [`Plinth::collect_orphan_artifacts`]).
pub(crate) struct CollectOrphans;

const COLLECT_ORPHANS: &str = "artifacts.collect";

impl crate::tasks::TaskKind for CollectOrphans {
    fn name(&self) -> &'static str {
        COLLECT_ORPHANS
    }

    fn run<'a>(
        &'a self,
        core: &'a Plinth,
        _task: &'a crate::tasks::TaskRun,
    ) -> futures_util::future::BoxFuture<'a, Result<serde_json::Value>> {
        Box::pin(async move {
            let removed = core
                .collect_orphan_artifacts(crate::util::now_micros() - crate::ORPHAN_GRACE_US)
                .await?;
            Ok(json!({ "removed": removed }))
        })
    }
}

/// Creates the hourly collection's schedule unless it exists.
pub(crate) async fn ensure_collection_schedule(core: &Plinth) -> Result<()> {
    core.ensure_schedule(
        COLLECT_ORPHANS,
        COLLECT_ORPHANS,
        crate::tasks::schedule::Every::Interval(3600),
    )
    .await
}
