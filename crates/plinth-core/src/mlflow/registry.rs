//! MLflow's model registry over Plinth's: a registered model is a Plinth model of the team, a
//! model version a Plinth version — registered from the MLflow model directory it points at,
//! validated and loaded by the runtime like any upload, with the run's params and metrics as its
//! lineage. A registered model created before its first version waits in
//! `mlflow_pending_models` (a Plinth model needs its task, which that version's artifact says).
//! Aliases (`@champion`) name versions of a model. Promotion, policies and cards stay Plinth's.

use std::collections::BTreeMap;

use plinth_api::identity::TeamRole;
use plinth_api::registry::{
    CreateModel, CreateVersion, Lineage, LineageSource, ModelQuery, Task, UpdateModel,
    UpdateVersion, VersionQuery,
};
use serde::Serialize;
use serde_json::json;

use super::{KeyValue, ms};
use crate::Plinth;
use crate::audit::{self, Target};
use crate::auth::{Principal, TeamRef};
use crate::error::{Error, Result};
use crate::store::{Sql, col};
use crate::util::{check_name, check_text, now_micros, time_to_micros};

/// The files an MLflow flavor saves its model as, in the order they are looked for.
const MODEL_FILES: [&str; 4] = ["model.lgb", "model.onnx", "model.json", "model.ubj"];

#[derive(Debug, Clone, Serialize)]
pub struct Alias {
    pub alias: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegisteredModel {
    pub name: String,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    pub user_id: String,
    pub description: String,
    pub latest_versions: Vec<MlflowVersion>,
    pub tags: Vec<KeyValue>,
    pub aliases: Vec<Alias>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MlflowVersion {
    pub name: String,
    pub version: String,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    pub user_id: String,
    pub current_stage: String,
    pub description: String,
    pub source: String,
    pub run_id: String,
    pub status: String,
    pub status_message: String,
    pub tags: Vec<KeyValue>,
    pub run_link: String,
    pub aliases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
}

/// Where a version registered through MLflow came from.
struct Origin {
    source: String,
    run_id: Option<String>,
    /// Its MLflow model directory, as an artifact path.
    path: String,
}

/// MLflow sends version numbers as strings.
fn version_number(version: &str) -> Result<u32> {
    version
        .parse()
        .map_err(|_| Error::invalid("version", format!("{version:?} is not a version number")))
}

/// MLflow's alias rule: letters, digits, `_` and `-`, not `latest` nor `v<number>` (those
/// name versions already).
fn check_alias(alias: &str) -> Result<()> {
    let ok = (1..=255).contains(&alias.len())
        && alias.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let reserved = alias.eq_ignore_ascii_case("latest")
        || (alias.len() > 1
            && alias.starts_with(['v', 'V'])
            && alias[1..].bytes().all(|b| b.is_ascii_digit()));
    if !ok {
        return Err(Error::invalid("alias", "1 to 255 letters, digits, '_' or '-'"));
    }
    if reserved {
        return Err(Error::invalid(
            "alias",
            format!("'{alias}' is reserved: it names versions already"),
        ));
    }
    Ok(())
}

/// MLflow's simple filters: `name = 'x'`, `name LIKE 'x%'` / `ILIKE`, `run_id = 'x'`.
#[derive(Debug, PartialEq)]
enum Filter {
    All,
    Name(String),
    NameLike(String, bool),
    RunId(String),
}

fn parse_filter(filter: Option<&str>) -> Result<Filter> {
    let Some(f) = filter.map(str::trim).filter(|f| !f.is_empty()) else { return Ok(Filter::All) };
    let unsupported = || {
        Error::invalid(
            "filter",
            format!(
                "unsupported filter {f:?}: Plinth's MLflow API takes name = '...', name LIKE '...' or run_id = '...'"
            ),
        )
    };
    let at = f.find(|c: char| c.is_whitespace() || c == '=').ok_or_else(unsupported)?;
    let (field, rest) = (&f[..at], f[at..].trim_start());
    let (op, value) = if let Some(v) = rest.strip_prefix('=') {
        ("=", v)
    } else if let Some(v) =
        rest.get(..4).filter(|p| p.eq_ignore_ascii_case("like")).map(|_| &rest[4..])
    {
        ("like", v)
    } else if let Some(v) =
        rest.get(..5).filter(|p| p.eq_ignore_ascii_case("ilike")).map(|_| &rest[5..])
    {
        ("ilike", v)
    } else {
        return Err(unsupported());
    };
    let value = value.trim();
    let value = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .or_else(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
        .ok_or_else(unsupported)?
        .to_string();
    match (field.trim_matches('`'), op) {
        ("name", "=") => Ok(Filter::Name(value)),
        ("name", "like") => Ok(Filter::NameLike(value, false)),
        ("name", "ilike") => Ok(Filter::NameLike(value, true)),
        ("run_id", "=") => Ok(Filter::RunId(value)),
        _ => Err(unsupported()),
    }
}

/// SQL LIKE with `%` and `_`, on one name.
fn like(pattern: &str, name: &str, fold: bool) -> bool {
    fn go(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('%', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some(('_', rest)) => !s.is_empty() && go(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    let (p, s) = if fold {
        (pattern.to_lowercase(), name.to_lowercase())
    } else {
        (pattern.to_string(), name.to_string())
    };
    go(&p.chars().collect::<Vec<_>>(), &s.chars().collect::<Vec<_>>())
}

impl Plinth {
    pub async fn mlflow_create_registered_model(
        &self,
        who: &Principal,
        team: &TeamRef,
        name: &str,
        description: Option<&str>,
        tags: &[KeyValue],
    ) -> Result<RegisteredModel> {
        who.require(team, TeamRole::Developer, "registering a model")?;
        check_name("name", name)?;
        let description = description.unwrap_or_default();
        check_text("description", description, 10_000)?;
        if self.model_ref(who, &team.name, name).await.is_ok() {
            return Err(Error::already_exists("registered model", format!("{}/{name}", team.name))
                .with_field("name"));
        }
        let tags: BTreeMap<&str, &str> =
            tags.iter().map(|t| (t.key.as_str(), t.value.as_str())).collect();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO mlflow_pending_models (team_id, name, description, tags, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6)",
            [team.id.clone().into(), name.into(), description.into(), serde_json::to_string(&tags)?.into(), now_micros().into(), who.name.clone().into()],
        )
        .execute_unique(&mut tx, || Error::already_exists("registered model", format!("{}/{name}", team.name)).with_field("name"))
        .await?;
        let t = Target {
            team_id: Some(&team.id),
            object_type: "registered_model",
            object_id: name,
            object_name: name,
        };
        audit::record(
            &mut tx,
            who,
            "registered_model.create",
            t,
            json!({"description": description}),
        )
        .await?;
        tx.commit().await?;
        self.mlflow_registered_model(who, team, name).await
    }

    async fn pending_model(&self, team: &TeamRef, name: &str) -> Result<Option<sqlx::any::AnyRow>> {
        self.db
            .fetch_optional(&Sql::with(
                "SELECT * FROM mlflow_pending_models WHERE team_id = $1 AND name = $2",
                [team.id.clone().into(), name.into()],
            ))
            .await
    }

    fn pending_view(row: &sqlx::any::AnyRow) -> Result<RegisteredModel> {
        let tags: BTreeMap<String, String> = serde_json::from_str(&col::<String>(row, "tags")?)?;
        let at = ms(col(row, "created_at")?);
        Ok(RegisteredModel {
            name: col(row, "name")?,
            creation_timestamp: at,
            last_updated_timestamp: at,
            user_id: col(row, "created_by")?,
            description: col(row, "description")?,
            latest_versions: Vec::new(),
            tags: tags.into_iter().map(|(key, value)| KeyValue { key, value }).collect(),
            aliases: Vec::new(),
        })
    }

    async fn aliases_of(&self, model_id: &str) -> Result<Vec<(String, u32)>> {
        let rows = self
            .db
            .fetch_all(&Sql::with(
                "SELECT alias, version FROM model_aliases WHERE model_id = $1 ORDER BY alias",
                [model_id.into()],
            ))
            .await?;
        rows.iter()
            .map(|r| Ok((col::<String>(r, "alias")?, col::<i64>(r, "version")? as u32)))
            .collect()
    }

    async fn version_view(
        &self,
        v: &plinth_api::registry::ModelVersion,
        aliases: &[(String, u32)],
    ) -> Result<MlflowVersion> {
        let origin = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT source, run_id FROM mlflow_versions WHERE version_id = $1",
                [v.id.clone().into()],
            ))
            .await?;
        let (source, run_id) = match &origin {
            Some(r) => (
                col::<String>(r, "source")?,
                col::<Option<String>>(r, "run_id")?.unwrap_or_default(),
            ),
            None => (String::new(), String::new()),
        };
        let model_id =
            source.strip_prefix("models:/").filter(|s| s.starts_with("m-")).map(str::to_string);
        let at = ms(time_to_micros(v.created_at));
        Ok(MlflowVersion {
            name: v.model.clone(),
            version: v.version.to_string(),
            creation_timestamp: at,
            last_updated_timestamp: at,
            user_id: v.created_by.clone(),
            current_stage: if v.archived_at.is_some() { "Archived".into() } else { "None".into() },
            description: v.description.clone(),
            status_message: if origin.is_none() {
                "uploaded to Plinth directly: its artifact is at /api/v1/teams/<team>/models/<model>/versions/<version>/artifact".into()
            } else {
                String::new()
            },
            source,
            run_id,
            status: "READY".into(),
            tags: v
                .lineage
                .tags
                .iter()
                .filter(|(k, _)| !k.starts_with("mlflow."))
                .map(|(k, val)| KeyValue { key: k.clone(), value: val.clone() })
                .collect(),
            run_link: String::new(),
            aliases: aliases
                .iter()
                .filter(|(_, n)| *n == v.version)
                .map(|(a, _)| a.clone())
                .collect(),
            model_id,
        })
    }

    async fn all_versions(
        &self,
        who: &Principal,
        team: &TeamRef,
        model: &str,
    ) -> Result<Vec<plinth_api::registry::ModelVersion>> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .list_versions(
                    who,
                    &team.name,
                    model,
                    &VersionQuery {
                        include_archived: Some(true),
                        cursor: cursor.take(),
                        limit: Some(100),
                    },
                )
                .await?;
            out.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    pub async fn mlflow_registered_model(
        &self,
        who: &Principal,
        team: &TeamRef,
        name: &str,
    ) -> Result<RegisteredModel> {
        who.require(team, TeamRole::Viewer, "reading models")?;
        let m = match self.get_model(who, &team.name, name).await {
            Ok(m) => m,
            Err(e) if e.code == plinth_api::Code::NotFound => {
                return match self.pending_model(team, name).await? {
                    Some(row) => Self::pending_view(&row),
                    None => Err(Error::not_found("registered model", name).with_field("name")),
                };
            }
            Err(e) => return Err(e),
        };
        let aliases = self.aliases_of(&m.id).await?;
        let versions = self.all_versions(who, team, name).await?;
        let mut latest = Vec::new();
        if let Some(v) =
            versions.iter().filter(|v| v.archived_at.is_none()).max_by_key(|v| v.version)
        {
            latest.push(self.version_view(v, &aliases).await?);
        }
        Ok(RegisteredModel {
            name: m.name.clone(),
            creation_timestamp: ms(time_to_micros(m.created_at)),
            last_updated_timestamp: ms(time_to_micros(m.updated_at)),
            user_id: m.created_by.clone(),
            description: m.description.clone(),
            latest_versions: latest,
            tags: m
                .tags
                .iter()
                .map(|(k, v)| KeyValue { key: k.clone(), value: v.clone() })
                .collect(),
            aliases: aliases
                .into_iter()
                .map(|(alias, v)| Alias { alias, version: v.to_string() })
                .collect(),
        })
    }

    /// The team's registered models (Plinth's and those waiting for a first version), by name.
    pub async fn mlflow_search_registered_models(
        &self,
        who: &Principal,
        team: &TeamRef,
        filter: Option<&str>,
        max_results: Option<i64>,
        page_token: Option<&str>,
    ) -> Result<(Vec<RegisteredModel>, Option<String>)> {
        who.require(team, TeamRole::Viewer, "reading models")?;
        let filter = parse_filter(filter)?;
        if matches!(filter, Filter::RunId(_)) {
            return Err(Error::invalid("filter", "registered models are filtered by name"));
        }
        let (offset, limit) = super::tracking::page(page_token, max_results, 100, 1000)?;
        let mut names = Vec::new();
        let mut cursor = None;
        loop {
            let q = ModelQuery {
                team: Some(team.name.clone()),
                cursor: cursor.take(),
                limit: Some(100),
                ..ModelQuery::default()
            };
            let page = self.list_models(who, &q).await?;
            names.extend(page.items.into_iter().map(|m| m.name));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        for r in self
            .db
            .fetch_all(&Sql::with(
                "SELECT name FROM mlflow_pending_models WHERE team_id = $1",
                [team.id.clone().into()],
            ))
            .await?
        {
            names.push(col(&r, "name")?);
        }
        names.retain(|n| match &filter {
            Filter::Name(x) => n == x,
            Filter::NameLike(p, fold) => like(p, n, *fold),
            _ => true,
        });
        names.sort();
        names.dedup();
        let next =
            super::tracking::next_token(offset, limit, names.len().saturating_sub(offset as usize));
        let mut out = Vec::new();
        for n in names.iter().skip(offset as usize).take(limit as usize) {
            out.push(self.mlflow_registered_model(who, team, n).await?);
        }
        Ok((out, next))
    }

    pub async fn mlflow_update_registered_model(
        &self,
        who: &Principal,
        team: &TeamRef,
        name: &str,
        description: Option<&str>,
        tag: Option<(&str, &str)>,
    ) -> Result<RegisteredModel> {
        if let Some(row) = self.pending_model(team, name).await? {
            who.require(team, TeamRole::Developer, "changing a model")?;
            let mut tags: BTreeMap<String, String> =
                serde_json::from_str(&col::<String>(&row, "tags")?)?;
            if let Some((k, v)) = tag {
                super::check_key("key", k)?;
                tags.insert(k.to_string(), v.to_string());
            }
            let description = description
                .map_or_else(|| col::<String>(&row, "description"), |d| Ok(d.to_string()))?;
            check_text("description", &description, 10_000)?;
            let mut tx = self.db.begin().await?;
            Sql::with(
                "UPDATE mlflow_pending_models SET description = $1, tags = $2 WHERE team_id = $3 AND name = $4",
                [description.into(), serde_json::to_string(&tags)?.into(), team.id.clone().into(), name.into()],
            )
            .execute(&mut tx)
            .await?;
            tx.commit().await?;
        } else {
            let m = self.get_model(who, &team.name, name).await?;
            let tags = tag.map(|(k, v)| {
                let mut t = m.tags.clone();
                t.insert(k.to_string(), v.to_string());
                t
            });
            self.update_model(
                who,
                &team.name,
                name,
                UpdateModel { description: description.map(str::to_string), tags, owners: None },
            )
            .await?;
        }
        self.mlflow_registered_model(who, team, name).await
    }

    /// Where `source` keeps its MLflow model directory: `models:/<logged model id>` (MLflow 3),
    /// `runs:/<run id>/<path>`, or `mlflow-artifacts:/<path>` (MLflow 2).
    async fn model_directory(
        &self,
        team: &TeamRef,
        source: &str,
        run_id: Option<&str>,
    ) -> Result<Origin> {
        let invalid = |why: String| Error::invalid("source", why);
        let (path, run) = if let Some(id) = source.strip_prefix("models:/") {
            let row = self
                .db
                .fetch_optional(&Sql::with("SELECT experiment_id, source_run_id FROM mlflow_logged_models WHERE id = $1 AND team_id = $2", [id.into(), team.id.clone().into()]))
                .await?
                .ok_or_else(|| invalid(format!("{source}: no logged model {id} in team {}", team.name)))?;
            (
                format!("{}/models/{id}/artifacts", col::<String>(&row, "experiment_id")?),
                col::<Option<String>>(&row, "source_run_id")?,
            )
        } else if let Some(rest) = source.strip_prefix("runs:/") {
            let (run, sub) = rest.split_once('/').unwrap_or((rest, ""));
            let experiment = self
                .mlflow_run_experiment(team, run)
                .await
                .map_err(|_| invalid(format!("{source}: no run {run} in team {}", team.name)))?;
            (format!("{experiment}/{run}/artifacts/{sub}"), Some(run.to_string()))
        } else if let Some(rest) = source.strip_prefix("mlflow-artifacts:") {
            // `mlflow-artifacts:/p`, or with a host: `mlflow-artifacts://host/p`.
            let rest =
                rest.strip_prefix("//").map_or(rest, |r| r.split_once('/').map_or("", |(_, p)| p));
            (rest.to_string(), run_id.map(str::to_string))
        } else {
            return Err(invalid(format!(
                "{source:?} is not where Plinth keeps MLflow models: log the model with this server as the tracking URI (models:/<id>, runs:/<run>/<path> or mlflow-artifacts:/<path>)"
            )));
        };
        let path = super::artifacts::clean_path(&path)?.to_string();
        Ok(Origin {
            source: source.to_string(),
            run_id: run.or_else(|| run_id.map(str::to_string)).filter(|r| !r.is_empty()),
            path,
        })
    }

    /// Registers the MLflow model at `source` as the next version of `name`.
    pub async fn mlflow_create_model_version(
        &self,
        who: &Principal,
        team: &TeamRef,
        name: &str,
        source: &str,
        run_id: Option<&str>,
        description: Option<&str>,
    ) -> Result<MlflowVersion> {
        who.require(team, TeamRole::Developer, "registering a version")?;
        let pending = self.pending_model(team, name).await?;
        if pending.is_none() && self.model_ref(who, &team.name, name).await.is_err() {
            return Err(Error::not_found("registered model", name).with_field("name"));
        }
        let origin = self.model_directory(team, source, run_id).await?;
        let files = self.mlflow_files_under(team, &origin.path).await?;
        if !files.iter().any(|(rel, _)| rel == "MLmodel") {
            return Err(Error::invalid(
                "source",
                format!(
                    "{source}: no MLmodel file there: log the model first (mlflow.<flavor>.log_model)"
                ),
            ));
        }
        let Some((file, key)) =
            MODEL_FILES.iter().find_map(|f| files.iter().find(|(rel, _)| rel == f))
        else {
            return Err(Error::new(plinth_api::Code::InvalidModel, format!(
                "{source}: Plinth serves LightGBM (model.lgb), ONNX (model.onnx) and XGBoost JSON (model.json) models; this directory has {}",
                files.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>().join(", ")
            )).with_field("source"));
        };
        let mut reader = self.artifacts.open(key).await?;
        let staged = self.staging().receive(&mut reader.reader, self.max_upload_bytes()).await?;
        // The run's params and metrics are the version's lineage.
        let mut lineage = Lineage { source: LineageSource::External, ..Lineage::default() };
        if let Some(run) = &origin.run_id {
            if let Ok(r) = self.mlflow_run(who, team, run).await {
                lineage.parameters = r.data.params.into_iter().map(|p| (p.key, p.value)).collect();
                lineage.metrics = r
                    .data
                    .metrics
                    .into_iter()
                    .filter(|m| m.value.is_finite())
                    .map(|m| (m.key, m.value))
                    .collect();
                lineage.code_ref = r
                    .data
                    .tags
                    .iter()
                    .find(|t| t.key == "mlflow.source.git.commit")
                    .map(|t| t.value.clone());
            }
            lineage.tags.insert("mlflow.run_id".into(), run.clone());
        }
        lineage.tags.insert("mlflow.source".into(), source.to_string());
        if let Some(row) = &pending {
            // The first version: the Plinth model is made now, with the task its artifact says.
            let path = staged.path().to_path_buf();
            let inspected = tokio::task::spawn_blocking(move || {
                std::fs::read(&path).map_err(Error::from).and_then(|b| {
                    plinth_formats::inspect(&b).map_err(|e| {
                        Error::new(plinth_api::Code::InvalidModel, e.to_string())
                            .with_field("source")
                    })
                })
            })
            .await
            .map_err(Error::internal)??;
            let tags: BTreeMap<String, String> =
                serde_json::from_str(&col::<String>(row, "tags")?)?;
            let task = match crate::registry::artifact_task(inspected.format, &inspected.details) {
                Some((task, _)) => task,
                None => match tags.get("plinth.task").map(String::as_str) {
                    Some("binary_classification") => Task::BinaryClassification,
                    Some("multiclass_classification") => Task::MulticlassClassification,
                    Some("regression") => Task::Regression,
                    _ => {
                        return Err(Error::invalid(
                            "name",
                            format!(
                                "the {} artifact does not say its task: set tag plinth.task of registered model '{name}' to binary_classification, multiclass_classification or regression",
                                inspected.format.as_str()
                            ),
                        ));
                    }
                },
            };
            let created = self
                .create_model(
                    who,
                    &team.name,
                    CreateModel {
                        name: name.to_string(),
                        task,
                        description: Some(col(row, "description")?),
                        tags: tags.into_iter().filter(|(k, _)| k != "plinth.task").collect(),
                        owners: None,
                    },
                )
                .await;
            match created {
                Ok(_) => {}
                // Another request made it meanwhile.
                Err(e) if e.code == plinth_api::Code::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        let req = CreateVersion {
            description: description.map(str::to_string),
            lineage: Some(lineage),
            ..CreateVersion::default()
        };
        let v =
            self.create_version(who, &team.name, name, req, Some(file.to_string()), staged).await?;
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO mlflow_versions (version_id, source, run_id, artifact_path) VALUES ($1, $2, $3, $4)",
            [v.id.clone().into(), origin.source.clone().into(), origin.run_id.clone().into(), origin.path.clone().into()],
        )
        .execute(&mut tx)
        .await?;
        Sql::with(
            "DELETE FROM mlflow_pending_models WHERE team_id = $1 AND name = $2",
            [team.id.clone().into(), name.into()],
        )
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        self.version_view(&v, &[]).await
    }

    pub async fn mlflow_model_version(
        &self,
        who: &Principal,
        team: &TeamRef,
        name: &str,
        version: &str,
    ) -> Result<MlflowVersion> {
        let n = version_number(version)?;
        let v = self.get_version(who, &team.name, name, n).await?;
        let m = self.model_ref(who, &team.name, name).await?;
        self.version_view(&v, &self.aliases_of(&m.id).await?).await
    }

    pub async fn mlflow_update_model_version(
        &self,
        who: &Principal,
        team: &TeamRef,
        name: &str,
        version: &str,
        description: Option<&str>,
    ) -> Result<MlflowVersion> {
        let n = version_number(version)?;
        self.update_version(
            who,
            &team.name,
            name,
            n,
            UpdateVersion {
                description: description.map(str::to_string),
                ..UpdateVersion::default()
            },
        )
        .await?;
        self.mlflow_model_version(who, team, name, version).await
    }

    /// Versions by `name = '...'` or `run_id = '...'` (all the team's without a filter).
    pub async fn mlflow_search_model_versions(
        &self,
        who: &Principal,
        team: &TeamRef,
        filter: Option<&str>,
        max_results: Option<i64>,
        page_token: Option<&str>,
    ) -> Result<(Vec<MlflowVersion>, Option<String>)> {
        who.require(team, TeamRole::Viewer, "reading models")?;
        let filter = parse_filter(filter)?;
        let (offset, limit) = super::tracking::page(page_token, max_results, 1000, 10_000)?;
        let models: Vec<String> = match &filter {
            Filter::Name(n) => vec![n.clone()],
            _ => self
                .mlflow_search_registered_models(who, team, None, Some(1000), None)
                .await?
                .0
                .into_iter()
                .map(|m| m.name)
                .collect(),
        };
        let mut out = Vec::new();
        for name in models {
            if let Filter::NameLike(p, fold) = &filter
                && !like(p, &name, *fold)
            {
                continue;
            }
            let Ok(m) = self.model_ref(who, &team.name, &name).await else { continue };
            let aliases = self.aliases_of(&m.id).await?;
            for v in self.all_versions(who, team, &name).await? {
                let view = self.version_view(&v, &aliases).await?;
                if let Filter::RunId(r) = &filter
                    && &view.run_id != r
                {
                    continue;
                }
                out.push(view);
            }
        }
        out.sort_by(|a, b| {
            (&a.name, b.version.parse::<u32>().unwrap_or(0))
                .cmp(&(&b.name, a.version.parse::<u32>().unwrap_or(0)))
        });
        let next =
            super::tracking::next_token(offset, limit, out.len().saturating_sub(offset as usize));
        Ok((out.into_iter().skip(offset as usize).take(limit as usize).collect(), next))
    }

    /// Where the client downloads a version from: its MLflow model directory.
    pub async fn mlflow_download_uri(
        &self,
        who: &Principal,
        team: &TeamRef,
        name: &str,
        version: &str,
    ) -> Result<String> {
        let n = version_number(version)?;
        let v = self.get_version(who, &team.name, name, n).await?;
        let row = self
            .db
            .fetch_optional(&Sql::with("SELECT artifact_path FROM mlflow_versions WHERE version_id = $1", [v.id.into()]))
            .await?
            .ok_or_else(|| Error::invalid("version", format!(
                "{name} v{n} was uploaded to Plinth directly, not logged with MLflow: download its artifact from /api/v1/teams/{}/models/{name}/versions/{n}/artifact",
                team.name
            )))?;
        Ok(format!("mlflow-artifacts:/{}", col::<String>(&row, "artifact_path")?))
    }

    pub async fn mlflow_set_alias(
        &self,
        who: &Principal,
        team: &TeamRef,
        name: &str,
        alias: &str,
        version: &str,
    ) -> Result<()> {
        who.require(team, TeamRole::Developer, "setting aliases")?;
        check_alias(alias)?;
        let n = version_number(version)?;
        let m = self.model_ref(who, &team.name, name).await?;
        self.get_version(who, &team.name, name, n).await?;
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO model_aliases (model_id, alias, version, set_at, set_by) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (model_id, alias) DO UPDATE SET version = excluded.version, set_at = excluded.set_at, set_by = excluded.set_by",
            [m.id.clone().into(), alias.into(), i64::from(n).into(), now_micros().into(), who.name.clone().into()],
        )
        .execute(&mut tx)
        .await?;
        let t = Target {
            team_id: Some(&team.id),
            object_type: "model",
            object_id: &m.id,
            object_name: name,
        };
        audit::record(&mut tx, who, "model.alias.set", t, json!({"alias": alias, "version": n}))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn mlflow_delete_alias(
        &self,
        who: &Principal,
        team: &TeamRef,
        name: &str,
        alias: &str,
    ) -> Result<()> {
        who.require(team, TeamRole::Developer, "deleting aliases")?;
        let m = self.model_ref(who, &team.name, name).await?;
        let mut tx = self.db.begin().await?;
        let n = Sql::with(
            "DELETE FROM model_aliases WHERE model_id = $1 AND alias = $2",
            [m.id.clone().into(), alias.into()],
        )
        .execute(&mut tx)
        .await?;
        if n == 0 {
            return Err(Error::not_found("alias", alias).with_field("alias"));
        }
        let t = Target {
            team_id: Some(&team.id),
            object_type: "model",
            object_id: &m.id,
            object_name: name,
        };
        audit::record(&mut tx, who, "model.alias.delete", t, json!({"alias": alias})).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn mlflow_version_by_alias(
        &self,
        who: &Principal,
        team: &TeamRef,
        name: &str,
        alias: &str,
    ) -> Result<MlflowVersion> {
        let m = self.model_ref(who, &team.name, name).await?;
        let aliases = self.aliases_of(&m.id).await?;
        let Some((_, n)) = aliases.iter().find(|(a, _)| a == alias) else {
            return Err(Error::not_found("alias", format!("{name}@{alias}")).with_field("alias"));
        };
        let v = self.get_version(who, &team.name, name, *n).await?;
        self.version_view(&v, &aliases).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_parsed_or_refused() {
        assert_eq!(parse_filter(Some("name='income'")).unwrap(), Filter::Name("income".into()));
        assert_eq!(parse_filter(Some("name = \"income\"")).unwrap(), Filter::Name("income".into()));
        assert_eq!(parse_filter(Some("name='a b'")).unwrap(), Filter::Name("a b".into()));
        assert_eq!(
            parse_filter(Some("name LIKE 'inc%'")).unwrap(),
            Filter::NameLike("inc%".into(), false)
        );
        assert_eq!(parse_filter(Some("run_id = 'abc'")).unwrap(), Filter::RunId("abc".into()));
        assert_eq!(parse_filter(None).unwrap(), Filter::All);
        for bad in ["tags.x = 'y'", "name > 'a'", "name = income"] {
            assert_eq!(
                parse_filter(Some(bad)).unwrap_err().field.as_deref(),
                Some("filter"),
                "{bad}"
            );
        }
        assert!(
            like("inc%", "income", false)
                && like("%COME", "income", true)
                && !like("inc_", "income", false)
        );
    }

    #[test]
    fn aliases_follow_mlflow_rules() {
        assert!(check_alias("champion").is_ok() && check_alias("prod-2").is_ok());
        for bad in ["", "latest", "v3", "a b", "x/y"] {
            assert!(check_alias(bad).is_err(), "{bad}");
        }
    }
}
