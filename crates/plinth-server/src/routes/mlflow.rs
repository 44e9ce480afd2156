//! MLflow's REST API — the subset the `mlflow` client calls to track runs, log and register
//! models, set aliases and load models back — and its artifact proxy, over the core's `mlflow`
//! module. Served under `/api/2.0` and under `/teams/{team}/api/2.0` (a tracking URI that names
//! the team); requests and answers in MLflow's shapes, errors as `{"error_code", "message"}`
//! with MLflow's statuses. MLflow's protocol is not Plinth's API: it stays out of the OpenAPI
//! document (docs/mlflow.md has the mapping).

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::TryStreamExt;
use plinth_api::Code;
use plinth_core::auth::{Principal, TeamRef};
use plinth_core::error::Error;
use plinth_core::mlflow::KeyValue;
use plinth_core::mlflow::tracking::NewMetric;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::AppState;
use crate::extract::{api_key, authenticate, parse_json};

pub fn router() -> Router<AppState> {
    let api = Router::new()
        .route("/mlflow/experiments/get-by-name", get(experiment_by_name))
        .route("/mlflow/experiments/get", get(experiment))
        .route("/mlflow/experiments/create", post(create_experiment))
        .route("/mlflow/experiments/search", get(search_experiments).post(search_experiments))
        .route("/mlflow/experiments/delete", post(delete_experiment))
        .route("/mlflow/experiments/restore", post(restore_experiment))
        .route("/mlflow/experiments/update", post(update_experiment))
        .route("/mlflow/experiments/set-experiment-tag", post(set_experiment_tag))
        .route("/mlflow/runs/create", post(create_run))
        .route("/mlflow/runs/update", post(update_run))
        .route("/mlflow/runs/get", get(run))
        .route("/mlflow/runs/search", post(search_runs))
        .route("/mlflow/runs/delete", post(delete_run))
        .route("/mlflow/runs/restore", post(restore_run))
        .route("/mlflow/runs/log-metric", post(log_metric))
        .route("/mlflow/runs/log-parameter", post(log_param))
        .route("/mlflow/runs/set-tag", post(set_tag))
        .route("/mlflow/runs/delete-tag", post(delete_tag))
        .route("/mlflow/runs/log-batch", post(log_batch))
        .route("/mlflow/runs/log-model", post(log_model))
        .route("/mlflow/runs/log-inputs", post(log_inputs))
        .route("/mlflow/runs/outputs", post(log_outputs))
        .route("/mlflow/metrics/get-history", get(metric_history))
        .route("/mlflow/artifacts/list", get(list_run_artifacts))
        .route("/mlflow/logged-models", post(create_logged_model))
        .route("/mlflow/logged-models/search", post(search_logged_models))
        .route("/mlflow/logged-models/{id}", get(logged_model).patch(finalize_logged_model))
        .route("/mlflow/logged-models/{id}/tags", axum::routing::patch(set_logged_model_tags))
        .route("/mlflow/logged-models/{id}/params", post(log_logged_model_params))
        .route("/mlflow/registered-models/create", post(create_registered_model))
        .route("/mlflow/registered-models/get", get(registered_model))
        .route("/mlflow/registered-models/search", get(search_registered_models))
        .route("/mlflow/registered-models/update", axum::routing::patch(update_registered_model))
        .route("/mlflow/registered-models/set-tag", post(set_registered_model_tag))
        .route(
            "/mlflow/registered-models/get-latest-versions",
            get(latest_versions).post(latest_versions),
        )
        .route("/mlflow/registered-models/alias", get(alias).post(set_alias).delete(delete_alias))
        .route("/mlflow/registered-models/rename", post(unsupported))
        .route("/mlflow/registered-models/delete", axum::routing::delete(unsupported))
        .route("/mlflow/model-versions/create", post(create_model_version))
        .route("/mlflow/model-versions/get", get(model_version))
        .route("/mlflow/model-versions/update", axum::routing::patch(update_model_version))
        .route("/mlflow/model-versions/search", get(search_model_versions))
        .route("/mlflow/model-versions/get-download-uri", get(download_uri))
        .route("/mlflow/model-versions/transition-stage", post(unsupported))
        .route("/mlflow/model-versions/delete", axum::routing::delete(unsupported))
        .route("/mlflow/model-versions/set-tag", post(unsupported))
        .route("/mlflow-artifacts/artifacts", get(list_artifacts))
        .route(
            "/mlflow-artifacts/artifacts/{*path}",
            get(download).put(upload).delete(delete_artifact),
        )
        .fallback(endpoint_not_found);
    Router::new().nest("/api/2.0", api.clone()).nest("/teams/{team}/api/2.0", api)
}

/// An error in MLflow's shape: the client reads `error_code`.
pub struct MlError(Error);

impl From<Error> for MlError {
    fn from(e: Error) -> Self {
        MlError(e)
    }
}

impl IntoResponse for MlError {
    fn into_response(self) -> Response {
        let e = self.0;
        let (status, code) = match e.code {
            Code::NotFound => (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST"),
            Code::RouteNotFound => (StatusCode::NOT_FOUND, "ENDPOINT_NOT_FOUND"),
            Code::AlreadyExists => (StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS"),
            Code::Conflict | Code::Immutable => (StatusCode::CONFLICT, "RESOURCE_CONFLICT"),
            Code::Unauthenticated | Code::KeyExpired | Code::KeyRevoked => {
                (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED")
            }
            Code::Forbidden | Code::ApprovalRequired => {
                (StatusCode::FORBIDDEN, "PERMISSION_DENIED")
            }
            Code::QuotaExceeded => (StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED"),
            Code::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "INVALID_PARAMETER_VALUE"),
            Code::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "ENDPOINT_NOT_FOUND"),
            Code::FeatureDisabled => (StatusCode::NOT_IMPLEMENTED, "NOT_IMPLEMENTED"),
            Code::Unavailable | Code::Overloaded => {
                (StatusCode::SERVICE_UNAVAILABLE, "TEMPORARILY_UNAVAILABLE")
            }
            Code::Timeout => (StatusCode::GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED"),
            Code::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
            _ => (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE"),
        };
        let message = match &e.field {
            Some(f) if !e.message.starts_with(f.as_str()) => format!("{f}: {}", e.message),
            _ => e.message.clone(),
        };
        (status, axum::Json(json!({"error_code": code, "message": message}))).into_response()
    }
}

type Answer = Result<axum::Json<Value>, MlError>;

fn answer(v: Value) -> Answer {
    Ok(axum::Json(v))
}

/// The caller and the team the call acts in.
pub struct Ml {
    who: Principal,
    team: TeamRef,
    core: std::sync::Arc<plinth_core::Plinth>,
}

impl FromRequestParts<AppState> for Ml {
    type Rejection = MlError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let key = api_key(header(header::AUTHORIZATION.as_str()), header("x-api-key"));
        let who = authenticate(state, key).await.map_err(|e| MlError(e.0))?;
        let params = RawPathParams::from_request_parts(parts, state).await.ok();
        let named = params
            .as_ref()
            .and_then(|p| p.iter().find(|(k, _)| *k == "team").map(|(_, v)| v.to_string()));
        let team = state.core.mlflow_team(&who, named.as_deref()).await?;
        Ok(Ml { who, team, core: state.core.clone() })
    }
}

/// A request message: the query string of a GET, the JSON body otherwise (MLflow's encoding).
pub struct Msg<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Msg<T> {
    type Rejection = MlError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if req.method() == Method::GET {
            let query = req.uri().query().unwrap_or("").to_string();
            return serde_urlencoded::from_str(&query)
                .map(Msg)
                .map_err(|e| MlError(Error::invalid("query", e.to_string())));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            MlError(Error::new(Code::InvalidRequest, format!("could not read the body: {e}")))
        })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        parse_json("", bytes).map(Msg).map_err(MlError)
    }
}

async fn endpoint_not_found(req: Request) -> MlError {
    MlError(Error::new(
        Code::RouteNotFound,
        format!("Plinth's MLflow API has no endpoint {} {}", req.method(), req.uri().path()),
    ))
}

async fn unsupported(req: Request) -> MlError {
    let path = req.uri().path().to_string();
    let why = if path.ends_with("transition-stage") {
        "stages are deprecated in MLflow and not kept by Plinth: promote with `plinth promote`, or set an alias"
    } else if path.ends_with("set-tag") {
        "Plinth versions carry no tags: put what you would tag in the model card or the run"
    } else if path.ends_with("rename") {
        "Plinth model names do not change: they are how deployments and audits name them"
    } else {
        "Plinth keeps every model and version: archive them with `plinth model archive` / `plinth version archive`"
    };
    MlError(Error::new(Code::FeatureDisabled, why))
}

// ---- tracking ----

#[derive(Deserialize, Default)]
#[serde(default)]
struct ExperimentReq {
    experiment_id: Option<String>,
    experiment_name: Option<String>,
    name: Option<String>,
    new_name: Option<String>,
    key: Option<String>,
    value: Option<String>,
    tags: Vec<KeyValue>,
    max_results: Option<i64>,
    page_token: Option<String>,
    view_type: Option<Value>,
    filter: Option<String>,
}

fn required<'a>(v: &'a Option<String>, field: &str) -> Result<&'a str, MlError> {
    v.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| {
        MlError(Error::new(Code::MissingField, format!("{field} is required")).with_field(field))
    })
}

/// MLflow's view type, as a number or its name.
fn view_type(v: &Option<Value>) -> Option<i64> {
    match v {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => Some(match s.as_str() {
            "ACTIVE_ONLY" | "1" => 1,
            "DELETED_ONLY" | "2" => 2,
            "ALL" | "3" => 3,
            _ => 0,
        }),
        _ => None,
    }
}

async fn experiment_by_name(ml: Ml, Msg(r): Msg<ExperimentReq>) -> Answer {
    let e = ml
        .core
        .mlflow_experiment_by_name(
            &ml.who,
            &ml.team,
            required(&r.experiment_name, "experiment_name")?,
        )
        .await?;
    answer(json!({ "experiment": e }))
}

async fn experiment(ml: Ml, Msg(r): Msg<ExperimentReq>) -> Answer {
    let e = ml
        .core
        .mlflow_experiment(&ml.who, &ml.team, required(&r.experiment_id, "experiment_id")?)
        .await?;
    answer(json!({ "experiment": e }))
}

async fn create_experiment(ml: Ml, Msg(r): Msg<ExperimentReq>) -> Answer {
    let id = ml
        .core
        .mlflow_create_experiment(&ml.who, &ml.team, required(&r.name, "name")?, &r.tags)
        .await?;
    answer(json!({ "experiment_id": id }))
}

async fn search_experiments(ml: Ml, Msg(r): Msg<ExperimentReq>) -> Answer {
    if r.filter.as_deref().is_some_and(|f| !f.trim().is_empty()) {
        return Err(MlError(Error::invalid(
            "filter",
            "experiment filters are not supported: search without one",
        )));
    }
    let (items, next) = ml
        .core
        .mlflow_search_experiments(
            &ml.who,
            &ml.team,
            view_type(&r.view_type),
            r.max_results,
            r.page_token.as_deref(),
        )
        .await?;
    answer(page(json!({ "experiments": items }), next))
}

fn page(mut v: Value, next: Option<String>) -> Value {
    if let Some(n) = next {
        v["next_page_token"] = json!(n);
    }
    v
}

async fn delete_experiment(ml: Ml, Msg(r): Msg<ExperimentReq>) -> Answer {
    ml.core
        .mlflow_set_experiment_lifecycle(
            &ml.who,
            &ml.team,
            required(&r.experiment_id, "experiment_id")?,
            "deleted",
        )
        .await?;
    answer(json!({}))
}

async fn restore_experiment(ml: Ml, Msg(r): Msg<ExperimentReq>) -> Answer {
    ml.core
        .mlflow_set_experiment_lifecycle(
            &ml.who,
            &ml.team,
            required(&r.experiment_id, "experiment_id")?,
            "active",
        )
        .await?;
    answer(json!({}))
}

async fn update_experiment(ml: Ml, Msg(r): Msg<ExperimentReq>) -> Answer {
    ml.core
        .mlflow_update_experiment(
            &ml.who,
            &ml.team,
            required(&r.experiment_id, "experiment_id")?,
            Some(required(&r.new_name, "new_name")?),
            None,
        )
        .await?;
    answer(json!({}))
}

async fn set_experiment_tag(ml: Ml, Msg(r): Msg<ExperimentReq>) -> Answer {
    let key = required(&r.key, "key")?;
    ml.core
        .mlflow_update_experiment(
            &ml.who,
            &ml.team,
            required(&r.experiment_id, "experiment_id")?,
            None,
            Some((key, Some(r.value.as_deref().unwrap_or("")))),
        )
        .await?;
    answer(json!({}))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RunReq {
    run_id: Option<String>,
    run_uuid: Option<String>,
    experiment_id: Option<String>,
    run_name: Option<String>,
    start_time: Option<i64>,
    end_time: Option<i64>,
    status: Option<String>,
    tags: Vec<KeyValue>,
    key: Option<String>,
    value: Option<Value>,
    timestamp: Option<i64>,
    step: Option<i64>,
    model_id: Option<String>,
    metrics: Vec<MetricReq>,
    params: Vec<KeyValue>,
    model_json: Option<String>,
    datasets: Vec<Value>,
    models: Vec<Value>,
    experiment_ids: Vec<String>,
    filter: Option<String>,
    run_view_type: Option<Value>,
    max_results: Option<i64>,
    page_token: Option<String>,
    metric_key: Option<String>,
    path: Option<String>,
}

#[derive(Deserialize)]
struct MetricReq {
    key: String,
    value: Value,
    timestamp: Option<i64>,
    #[serde(default)]
    step: Option<i64>,
    #[serde(default)]
    model_id: Option<String>,
}

impl RunReq {
    fn run_id(&self) -> Result<&str, MlError> {
        if let Some(r) = self.run_id.as_deref().filter(|r| !r.is_empty()) {
            return Ok(r);
        }
        required(&self.run_uuid, "run_id")
    }
}

/// A metric value: a number, or MLflow's spelled-out non-finite values.
fn metric_value(v: &Value, field: &str) -> Result<f64, MlError> {
    match v {
        Value::Number(n) => {
            n.as_f64().ok_or_else(|| MlError(Error::invalid(field, "not a number")))
        }
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" | "inf" => Ok(f64::INFINITY),
            "-Infinity" | "-inf" => Ok(f64::NEG_INFINITY),
            _ => s
                .parse()
                .map_err(|_| MlError(Error::invalid(field, format!("{s:?} is not a number")))),
        },
        _ => Err(MlError(Error::invalid(field, "a metric value is a number"))),
    }
}

fn text_value(v: &Option<Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn now_ms() -> i64 {
    plinth_core::util::now_micros() / 1000
}

async fn create_run(ml: Ml, Msg(r): Msg<RunReq>) -> Answer {
    let run = ml
        .core
        .mlflow_create_run(
            &ml.who,
            &ml.team,
            r.experiment_id.as_deref().unwrap_or("0"),
            r.run_name.as_deref(),
            r.start_time,
            &r.tags,
        )
        .await?;
    answer(json!({ "run": run }))
}

async fn update_run(ml: Ml, Msg(r): Msg<RunReq>) -> Answer {
    let info = ml
        .core
        .mlflow_update_run(
            &ml.who,
            &ml.team,
            r.run_id()?,
            r.status.as_deref(),
            r.end_time,
            r.run_name.as_deref(),
        )
        .await?;
    answer(json!({ "run_info": info }))
}

async fn run(ml: Ml, Msg(r): Msg<RunReq>) -> Answer {
    answer(json!({ "run": ml.core.mlflow_run(&ml.who, &ml.team, r.run_id()?).await? }))
}

async fn search_runs(ml: Ml, Msg(r): Msg<RunReq>) -> Answer {
    let (runs, next) = ml
        .core
        .mlflow_search_runs(
            &ml.who,
            &ml.team,
            &r.experiment_ids,
            r.filter.as_deref(),
            view_type(&r.run_view_type),
            r.max_results,
            r.page_token.as_deref(),
        )
        .await?;
    answer(page(json!({ "runs": runs }), next))
}

async fn delete_run(ml: Ml, Msg(r): Msg<RunReq>) -> Answer {
    ml.core.mlflow_set_run_lifecycle(&ml.who, &ml.team, r.run_id()?, "deleted").await?;
    answer(json!({}))
}

async fn restore_run(ml: Ml, Msg(r): Msg<RunReq>) -> Answer {
    ml.core.mlflow_set_run_lifecycle(&ml.who, &ml.team, r.run_id()?, "active").await?;
    answer(json!({}))
}

async fn log_metric(ml: Ml, Msg(r): Msg<RunReq>) -> Answer {
    let key = required(&r.key, "key")?.to_string();
    let value = metric_value(r.value.as_ref().unwrap_or(&Value::Null), "value")?;
    let m = NewMetric {
        key,
        value,
        timestamp: r.timestamp.unwrap_or_else(now_ms),
        step: r.step.unwrap_or(0),
        model_id: r.model_id.clone(),
    };
    ml.core.mlflow_log_batch(&ml.who, &ml.team, r.run_id()?, &[m], &[], &[]).await?;
    answer(json!({}))
}

async fn log_param(ml: Ml, Msg(r): Msg<RunReq>) -> Answer {
    let p = KeyValue { key: required(&r.key, "key")?.to_string(), value: text_value(&r.value) };
    ml.core.mlflow_log_batch(&ml.who, &ml.team, r.run_id()?, &[], &[p], &[]).await?;
    answer(json!({}))
}

async fn set_tag(ml: Ml, Msg(r): Msg<RunReq>) -> Answer {
    let t = KeyValue { key: required(&r.key, "key")?.to_string(), value: text_value(&r.value) };
    ml.core.mlflow_log_batch(&ml.who, &ml.team, r.run_id()?, &[], &[], &[t]).await?;
    answer(json!({}))
}

async fn delete_tag(ml: Ml, Msg(r): Msg<RunReq>) -> Answer {
    ml.core.mlflow_delete_run_tag(&ml.who, &ml.team, r.run_id()?, required(&r.key, "key")?).await?;
    answer(json!({}))
}

async fn log_batch(ml: Ml, Msg(r): Msg<RunReq>) -> Answer {
    let metrics = r
        .metrics
        .iter()
        .enumerate()
        .map(|(i, m)| {
            Ok(NewMetric {
                key: m.key.clone(),
                value: metric_value(&m.value, &format!("metrics[{i}].value"))?,
                timestamp: m.timestamp.unwrap_or_else(now_ms),
                step: m.step.unwrap_or(0),
                model_id: m.model_id.clone(),
            })
        })
        .collect::<Result<Vec<_>, MlError>>()?;
    ml.core.mlflow_log_batch(&ml.who, &ml.team, r.run_id()?, &metrics, &r.params, &r.tags).await?;
    answer(json!({}))
}

/// MLflow 2's record of a logged model: kept where MLflow keeps it, in the run's
/// `mlflow.log-model.history` tag.
async fn log_model(ml: Ml, Msg(r): Msg<RunReq>) -> Answer {
    let run_id = r.run_id()?;
    let model: Value = serde_json::from_str(required(&r.model_json, "model_json")?)
        .map_err(|e| MlError(Error::invalid("model_json", format!("not JSON: {e}"))))?;
    let run = ml.core.mlflow_run(&ml.who, &ml.team, run_id).await?;
    let mut history: Vec<Value> = run
        .data
        .tags
        .iter()
        .find(|t| t.key == "mlflow.log-model.history")
        .and_then(|t| serde_json::from_str(&t.value).ok())
        .unwrap_or_default();
    history.push(model);
    let tag = KeyValue {
        key: "mlflow.log-model.history".into(),
        value: Value::from(history).to_string(),
    };
    ml.core.mlflow_log_batch(&ml.who, &ml.team, run_id, &[], &[], &[tag]).await?;
    answer(json!({}))
}

async fn log_inputs(ml: Ml, Msg(r): Msg<RunReq>) -> Answer {
    let run_id = r.run_id()?;
    ml.core
        .mlflow_append_run_io(
            &ml.who,
            &ml.team,
            run_id,
            "inputs",
            "dataset_inputs",
            r.datasets.clone(),
        )
        .await?;
    ml.core
        .mlflow_append_run_io(&ml.who, &ml.team, run_id, "inputs", "model_inputs", r.models.clone())
        .await?;
    answer(json!({}))
}

async fn log_outputs(ml: Ml, Msg(r): Msg<RunReq>) -> Answer {
    ml.core
        .mlflow_append_run_io(
            &ml.who,
            &ml.team,
            r.run_id()?,
            "outputs",
            "model_outputs",
            r.models.clone(),
        )
        .await?;
    answer(json!({}))
}

async fn metric_history(ml: Ml, Msg(r): Msg<RunReq>) -> Answer {
    let metrics = ml
        .core
        .mlflow_metric_history(
            &ml.who,
            &ml.team,
            r.run_id()?,
            required(&r.metric_key, "metric_key")?,
        )
        .await?;
    answer(json!({ "metrics": metrics }))
}

/// A run's artifacts by the tracking API: paths relative to the run's artifact root.
async fn list_run_artifacts(ml: Ml, Msg(r): Msg<RunReq>) -> Answer {
    let run = ml.core.mlflow_run(&ml.who, &ml.team, r.run_id()?).await?;
    let root = run.info.artifact_uri.trim_start_matches("mlflow-artifacts:/").to_string();
    let sub = r.path.as_deref().unwrap_or("").trim_matches('/');
    let dir = if sub.is_empty() { root.clone() } else { format!("{root}/{sub}") };
    let files: Vec<Value> = ml
        .core
        .mlflow_list_artifacts(&ml.who, &ml.team, &dir)
        .await?
        .into_iter()
        .map(|f| {
            let path = if sub.is_empty() { f.path } else { format!("{sub}/{}", f.path) };
            json!({"path": path, "is_dir": f.is_dir, "file_size": f.file_size})
        })
        .collect();
    answer(json!({ "root_uri": run.info.artifact_uri, "files": files }))
}

// ---- logged models (MLflow 3) ----

#[derive(Deserialize, Default)]
#[serde(default)]
struct LoggedModelReq {
    experiment_id: Option<String>,
    experiment_ids: Vec<String>,
    name: Option<String>,
    model_type: Option<String>,
    source_run_id: Option<String>,
    params: Vec<KeyValue>,
    tags: Vec<KeyValue>,
    status: Option<Value>,
    max_results: Option<i64>,
    page_token: Option<String>,
}

/// A logged model's status, by name or by its number in MLflow's enum.
fn model_status(v: &Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(match n.as_i64() {
            Some(1) => "LOGGED_MODEL_PENDING".into(),
            Some(2) => "LOGGED_MODEL_READY".into(),
            Some(3) => "LOGGED_MODEL_UPLOAD_FAILED".into(),
            _ => n.to_string(),
        }),
        _ => None,
    }
}

async fn create_logged_model(ml: Ml, Msg(r): Msg<LoggedModelReq>) -> Answer {
    let m = ml
        .core
        .mlflow_create_logged_model(
            &ml.who,
            &ml.team,
            required(&r.experiment_id, "experiment_id")?,
            r.name.as_deref(),
            r.model_type.as_deref(),
            r.source_run_id.as_deref(),
            &r.params,
            &r.tags,
        )
        .await?;
    answer(json!({ "model": m }))
}

async fn logged_model(ml: Ml, Path(params): Path<Vec<(String, String)>>) -> Answer {
    let id = path_param(&params, "id")?;
    answer(json!({ "model": ml.core.mlflow_logged_model(&ml.who, &ml.team, id).await? }))
}

fn path_param<'a>(params: &'a [(String, String)], name: &str) -> Result<&'a str, MlError> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| MlError(Error::internal(format!("no {name} in the path"))))
}

async fn finalize_logged_model(
    ml: Ml,
    Path(params): Path<Vec<(String, String)>>,
    Msg(r): Msg<LoggedModelReq>,
) -> Answer {
    let id = path_param(&params, "id")?;
    let m = ml
        .core
        .mlflow_update_logged_model(
            &ml.who,
            &ml.team,
            id,
            model_status(&r.status).as_deref(),
            &[],
            &[],
        )
        .await?;
    answer(json!({ "model": m }))
}

async fn set_logged_model_tags(
    ml: Ml,
    Path(params): Path<Vec<(String, String)>>,
    Msg(r): Msg<LoggedModelReq>,
) -> Answer {
    let id = path_param(&params, "id")?;
    let m = ml.core.mlflow_update_logged_model(&ml.who, &ml.team, id, None, &[], &r.tags).await?;
    answer(json!({ "model": m }))
}

async fn log_logged_model_params(
    ml: Ml,
    Path(params): Path<Vec<(String, String)>>,
    Msg(r): Msg<LoggedModelReq>,
) -> Answer {
    let id = path_param(&params, "id")?;
    ml.core.mlflow_update_logged_model(&ml.who, &ml.team, id, None, &r.params, &[]).await?;
    answer(json!({}))
}

async fn search_logged_models(ml: Ml, Msg(r): Msg<LoggedModelReq>) -> Answer {
    let (models, next) = ml
        .core
        .mlflow_search_logged_models(
            &ml.who,
            &ml.team,
            &r.experiment_ids,
            r.max_results,
            r.page_token.as_deref(),
        )
        .await?;
    answer(page(json!({ "models": models }), next))
}

// ---- model registry ----

#[derive(Deserialize, Default)]
#[serde(default)]
struct RegistryReq {
    name: Option<String>,
    description: Option<String>,
    tags: Vec<KeyValue>,
    key: Option<String>,
    value: Option<String>,
    version: Option<Value>,
    alias: Option<String>,
    source: Option<String>,
    run_id: Option<String>,
    filter: Option<String>,
    max_results: Option<i64>,
    page_token: Option<String>,
}

impl RegistryReq {
    fn version(&self) -> Result<String, MlError> {
        match &self.version {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(MlError(
                Error::new(Code::MissingField, "version is required").with_field("version"),
            )),
        }
    }
}

async fn create_registered_model(ml: Ml, Msg(r): Msg<RegistryReq>) -> Answer {
    let m = ml
        .core
        .mlflow_create_registered_model(
            &ml.who,
            &ml.team,
            required(&r.name, "name")?,
            r.description.as_deref(),
            &r.tags,
        )
        .await?;
    answer(json!({ "registered_model": m }))
}

async fn registered_model(ml: Ml, Msg(r): Msg<RegistryReq>) -> Answer {
    answer(
        json!({ "registered_model": ml.core.mlflow_registered_model(&ml.who, &ml.team, required(&r.name, "name")?).await? }),
    )
}

async fn search_registered_models(ml: Ml, Msg(r): Msg<RegistryReq>) -> Answer {
    let (items, next) = ml
        .core
        .mlflow_search_registered_models(
            &ml.who,
            &ml.team,
            r.filter.as_deref(),
            r.max_results,
            r.page_token.as_deref(),
        )
        .await?;
    answer(page(json!({ "registered_models": items }), next))
}

async fn update_registered_model(ml: Ml, Msg(r): Msg<RegistryReq>) -> Answer {
    let m = ml
        .core
        .mlflow_update_registered_model(
            &ml.who,
            &ml.team,
            required(&r.name, "name")?,
            r.description.as_deref(),
            None,
        )
        .await?;
    answer(json!({ "registered_model": m }))
}

async fn set_registered_model_tag(ml: Ml, Msg(r): Msg<RegistryReq>) -> Answer {
    let tag = (required(&r.key, "key")?, r.value.as_deref().unwrap_or(""));
    ml.core
        .mlflow_update_registered_model(
            &ml.who,
            &ml.team,
            required(&r.name, "name")?,
            None,
            Some(tag),
        )
        .await?;
    answer(json!({}))
}

async fn latest_versions(ml: Ml, Msg(r): Msg<RegistryReq>) -> Answer {
    let m = ml.core.mlflow_registered_model(&ml.who, &ml.team, required(&r.name, "name")?).await?;
    answer(json!({ "model_versions": m.latest_versions }))
}

async fn create_model_version(ml: Ml, Msg(r): Msg<RegistryReq>) -> Answer {
    let v = ml
        .core
        .mlflow_create_model_version(
            &ml.who,
            &ml.team,
            required(&r.name, "name")?,
            required(&r.source, "source")?,
            r.run_id.as_deref(),
            r.description.as_deref(),
        )
        .await?;
    answer(json!({ "model_version": v }))
}

async fn model_version(ml: Ml, Msg(r): Msg<RegistryReq>) -> Answer {
    answer(
        json!({ "model_version": ml.core.mlflow_model_version(&ml.who, &ml.team, required(&r.name, "name")?, &r.version()?).await? }),
    )
}

async fn update_model_version(ml: Ml, Msg(r): Msg<RegistryReq>) -> Answer {
    let v = ml
        .core
        .mlflow_update_model_version(
            &ml.who,
            &ml.team,
            required(&r.name, "name")?,
            &r.version()?,
            r.description.as_deref(),
        )
        .await?;
    answer(json!({ "model_version": v }))
}

async fn search_model_versions(ml: Ml, Msg(r): Msg<RegistryReq>) -> Answer {
    let (items, next) = ml
        .core
        .mlflow_search_model_versions(
            &ml.who,
            &ml.team,
            r.filter.as_deref(),
            r.max_results,
            r.page_token.as_deref(),
        )
        .await?;
    answer(page(json!({ "model_versions": items }), next))
}

async fn download_uri(ml: Ml, Msg(r): Msg<RegistryReq>) -> Answer {
    let uri = ml
        .core
        .mlflow_download_uri(&ml.who, &ml.team, required(&r.name, "name")?, &r.version()?)
        .await?;
    answer(json!({ "artifact_uri": uri }))
}

async fn alias(ml: Ml, Msg(r): Msg<RegistryReq>) -> Answer {
    let v = ml
        .core
        .mlflow_version_by_alias(
            &ml.who,
            &ml.team,
            required(&r.name, "name")?,
            required(&r.alias, "alias")?,
        )
        .await?;
    answer(json!({ "model_version": v }))
}

async fn set_alias(ml: Ml, Msg(r): Msg<RegistryReq>) -> Answer {
    ml.core
        .mlflow_set_alias(
            &ml.who,
            &ml.team,
            required(&r.name, "name")?,
            required(&r.alias, "alias")?,
            &r.version()?,
        )
        .await?;
    answer(json!({}))
}

async fn delete_alias(ml: Ml, Msg(r): Msg<RegistryReq>) -> Answer {
    ml.core
        .mlflow_delete_alias(
            &ml.who,
            &ml.team,
            required(&r.name, "name")?,
            required(&r.alias, "alias")?,
        )
        .await?;
    answer(json!({}))
}

// ---- artifact proxy ----

#[derive(Deserialize, Default)]
#[serde(default)]
struct ListReq {
    path: Option<String>,
}

async fn list_artifacts(ml: Ml, Msg(r): Msg<ListReq>) -> Answer {
    let path = r.path.unwrap_or_default();
    if path.trim_matches('/').is_empty() {
        return answer(json!({ "files": [] }));
    }
    let files = ml.core.mlflow_list_artifacts(&ml.who, &ml.team, &path).await?;
    answer(json!({ "files": files }))
}

async fn download(ml: Ml, Path(params): Path<Vec<(String, String)>>) -> Result<Response, MlError> {
    let path = path_param(&params, "path")?;
    let artifact = ml.core.mlflow_open_artifact(&ml.who, &ml.team, path).await?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(artifact.reader));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CONTENT_LENGTH, &artifact.size.to_string()),
        ],
        body,
    )
        .into_response())
}

async fn upload(ml: Ml, Path(params): Path<Vec<(String, String)>>, body: Body) -> Answer {
    let path = path_param(&params, "path")?.to_string();
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let mut reader = tokio_util::io::StreamReader::new(stream);
    let staged = ml.core.staging().receive(&mut reader, ml.core.max_upload_bytes()).await?;
    ml.core.mlflow_put_artifact(&ml.who, &ml.team, &path, staged).await?;
    answer(json!({}))
}

async fn delete_artifact(ml: Ml, Path(params): Path<Vec<(String, String)>>) -> Answer {
    ml.core.mlflow_delete_artifact(&ml.who, &ml.team, path_param(&params, "path")?).await?;
    answer(json!({}))
}
