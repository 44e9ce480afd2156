//! The Open Inference Protocol v2 (KServe / Triton) over REST, with Triton's binary-tensor,
//! model-configuration and statistics extensions, so `tritonclient` and `perf_analyzer` work
//! unchanged.
//!
//! A model is named `team.model` (its production deployment) or `team.model.environment`;
//! `/versions/{v}` targets one served version. Errors use the protocol's `{"error": "..."}`.

mod json;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use plinth_api::Code;
use plinth_api::registry::{DataType, TensorSpec};
use plinth_core::Error;
use plinth_core::serving::engine::Live;
use plinth_core::serving::tensor::{Data, Tensor};
use plinth_core::util::{push_int, push_int_array, push_json_str};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::status_of;
use crate::extract::MaybeCaller;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(server_metadata))
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(all_stats))
        .routes(routes!(repository_index))
        .routes(routes!(model_metadata))
        .routes(routes!(model_ready))
        .routes(routes!(model_config))
        .routes(routes!(model_stats))
        .routes(routes!(infer))
        .routes(routes!(model_metadata_v))
        .routes(routes!(model_ready_v))
        .routes(routes!(model_config_v))
        .routes(routes!(model_stats_v))
        .routes(routes!(infer_v))
        .layer(DefaultBodyLimit::max(super::serving::PREDICT_BODY_LIMIT))
}

/// An error in the protocol's shape.
struct OipError(Error);

impl From<Error> for OipError {
    fn from(e: Error) -> Self {
        OipError(e)
    }
}

impl From<crate::error::ApiError> for OipError {
    fn from(e: crate::error::ApiError) -> Self {
        OipError(e.0)
    }
}

impl IntoResponse for OipError {
    fn into_response(self) -> Response {
        let e = self.0;
        let message = match &e.field {
            Some(f) if !e.message.starts_with(f.as_str()) => format!("{f}: {}", e.message),
            _ => e.message.clone(),
        };
        if e.code == Code::Internal {
            tracing::error!(error = %e, source = ?e.source, "internal error");
        }
        let message = crate::error::bounded(message);
        let mut r =
            (status_of(e.code), Json(json!({"error": message, "code": e.code}))).into_response();
        if matches!(e.code, Code::Overloaded | Code::Unavailable) {
            r.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
        }
        if let Some(limit) = &e.limit {
            crate::error::rate_limit_headers(limit, r.headers_mut());
        }
        r
    }
}

type OipResult<T> = Result<T, OipError>;

#[utoipa::path(get, path = "/v2", tag = "inference", security((), ("api_key" = [])), responses((status = 200, body = plinth_api::oip::ServerMetadata)))]
async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "plinth",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "model_configuration", "statistics", "model_repository"],
    }))
}

#[utoipa::path(get, path = "/v2/health/live", tag = "inference", security((), ("api_key" = [])), responses((status = 200, body = plinth_api::oip::Health)))]
async fn live() -> Json<Value> {
    Json(json!({"live": true}))
}

#[utoipa::path(get, path = "/v2/health/ready", tag = "inference", security((), ("api_key" = [])), responses((status = 200, body = plinth_api::oip::Health), (status = 503, body = plinth_api::oip::Health)))]
async fn ready(State(s): State<AppState>) -> Response {
    if s.core.ready().await {
        Json(json!({"ready": true})).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false}))).into_response()
    }
}

/// `team.model[.environment]`: the deployment an OIP model name stands for.
fn target(name: &str) -> OipResult<(&str, &str, &str)> {
    let mut parts = name.splitn(3, '.');
    let (Some(team), Some(model)) = (parts.next(), parts.next()) else {
        return Err(Error::not_found(
            "model",
            format!("{name} (name models as team.model or team.model.environment)"),
        )
        .into());
    };
    Ok((team, model, parts.next().unwrap_or("production")))
}

/// `team.model[.environment]` → the live deployment the caller may call.
fn resolve(
    s: &AppState,
    who: Option<&plinth_core::auth::Principal>,
    name: &str,
) -> OipResult<Arc<Live>> {
    let (team, model, env) = target(name)?;
    Ok(s.core.callable(who, team, model, env)?)
}

fn runner_version(live: &Live, version: Option<&str>) -> OipResult<Option<u32>> {
    match version {
        None => Ok(None),
        Some(v) => {
            let n: u32 = v.parse().map_err(|_| Error::not_found("model version", v))?;
            if live.runner_for(n).is_none() {
                return Err(Error::not_found(
                    "model version",
                    format!("{n} (served versions: {})", served(live).join(", ")),
                )
                .into());
            }
            Ok(Some(n))
        }
    }
}

fn served(live: &Live) -> Vec<String> {
    live.runners().map(|r| r.source.version.to_string()).collect()
}

fn datatype(d: DataType) -> &'static str {
    match d {
        DataType::Bool => "BOOL",
        DataType::Uint8 => "UINT8",
        DataType::Uint16 => "UINT16",
        DataType::Uint32 => "UINT32",
        DataType::Uint64 => "UINT64",
        DataType::Int8 => "INT8",
        DataType::Int16 => "INT16",
        DataType::Int32 => "INT32",
        DataType::Int64 => "INT64",
        DataType::Fp16 => "FP16",
        DataType::Fp32 => "FP32",
        DataType::Fp64 => "FP64",
        DataType::Bytes => "BYTES",
    }
}

fn tensor_meta(t: &TensorSpec) -> Value {
    json!({"name": t.name, "datatype": datatype(t.datatype), "shape": t.shape})
}

fn platform(live: &Live, version: Option<u32>) -> String {
    let r = version.and_then(|v| live.runner_for(v)).unwrap_or_else(|| live.route(Some("")));
    format!("plinth_{}", r.source.format.as_str())
}

fn metadata(
    s: &AppState,
    who: Option<&plinth_core::auth::Principal>,
    name: &str,
    version: Option<&str>,
) -> OipResult<Json<Value>> {
    let live = resolve(s, who, name)?;
    let v = runner_version(&live, version)?;
    let sig = match v {
        Some(v) => &live.runner_for(v).expect("checked").source.signature,
        None => live.signature(),
    };
    Ok(Json(json!({
        "name": name,
        "versions": served(&live),
        "platform": platform(&live, v),
        "inputs": sig.inputs.iter().map(tensor_meta).collect::<Vec<_>>(),
        "outputs": sig.outputs.iter().map(tensor_meta).collect::<Vec<_>>(),
    })))
}

#[utoipa::path(get, path = "/v2/models/{name}", tag = "inference", security((), ("api_key" = [])), params(("name" = String, Path, description = "team.model (production) or team.model.environment")), responses((status = 200, body = plinth_api::oip::ModelMetadata), (status = 404, description = "No such deployment, or not one the caller may call", body = plinth_api::oip::OipError), (status = 401, description = "An invalid API key", body = plinth_api::oip::OipError), (status = 400, description = "A bad path", body = plinth_api::oip::OipError)))]
async fn model_metadata(
    State(s): State<AppState>,
    MaybeCaller(who): MaybeCaller,
    Path(name): Path<String>,
) -> OipResult<Json<Value>> {
    metadata(&s, who.as_ref(), &name, None)
}

#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}", tag = "inference", security((), ("api_key" = [])), params(("name" = String, Path, description = "team.model (production) or team.model.environment"), ("version" = String, Path, description = "a served version")), responses((status = 200, body = plinth_api::oip::ModelMetadata), (status = 404, description = "No such deployment, or not one the caller may call", body = plinth_api::oip::OipError), (status = 401, description = "An invalid API key", body = plinth_api::oip::OipError), (status = 400, description = "A bad path", body = plinth_api::oip::OipError)))]
async fn model_metadata_v(
    State(s): State<AppState>,
    MaybeCaller(who): MaybeCaller,
    Path((name, v)): Path<(String, String)>,
) -> OipResult<Json<Value>> {
    metadata(&s, who.as_ref(), &name, Some(&v))
}

fn readiness(
    s: &AppState,
    who: Option<&plinth_core::auth::Principal>,
    name: &str,
    version: Option<&str>,
) -> OipResult<Json<Value>> {
    let live = resolve(s, who, name)?;
    runner_version(&live, version)?;
    // Scaled-to-zero versions load on the next request: they are ready to serve.
    Ok(Json(json!({"name": name, "ready": true})))
}

#[utoipa::path(get, path = "/v2/models/{name}/ready", tag = "inference", security((), ("api_key" = [])), params(("name" = String, Path, description = "team.model (production) or team.model.environment")), responses((status = 200, body = plinth_api::oip::ModelReady), (status = 404, description = "No such deployment, or not one the caller may call", body = plinth_api::oip::OipError), (status = 401, description = "An invalid API key", body = plinth_api::oip::OipError), (status = 400, description = "A bad path", body = plinth_api::oip::OipError)))]
async fn model_ready(
    State(s): State<AppState>,
    MaybeCaller(who): MaybeCaller,
    Path(name): Path<String>,
) -> OipResult<Json<Value>> {
    readiness(&s, who.as_ref(), &name, None)
}

#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}/ready", tag = "inference", security((), ("api_key" = [])), params(("name" = String, Path, description = "team.model (production) or team.model.environment"), ("version" = String, Path, description = "a served version")), responses((status = 200, body = plinth_api::oip::ModelReady), (status = 404, description = "No such deployment, or not one the caller may call", body = plinth_api::oip::OipError), (status = 401, description = "An invalid API key", body = plinth_api::oip::OipError), (status = 400, description = "A bad path", body = plinth_api::oip::OipError)))]
async fn model_ready_v(
    State(s): State<AppState>,
    MaybeCaller(who): MaybeCaller,
    Path((name, v)): Path<(String, String)>,
) -> OipResult<Json<Value>> {
    readiness(&s, who.as_ref(), &name, Some(&v))
}

fn triton_type(d: DataType) -> &'static str {
    match d {
        DataType::Bool => "TYPE_BOOL",
        DataType::Uint8 => "TYPE_UINT8",
        DataType::Uint16 => "TYPE_UINT16",
        DataType::Uint32 => "TYPE_UINT32",
        DataType::Uint64 => "TYPE_UINT64",
        DataType::Int8 => "TYPE_INT8",
        DataType::Int16 => "TYPE_INT16",
        DataType::Int32 => "TYPE_INT32",
        DataType::Int64 => "TYPE_INT64",
        DataType::Fp16 => "TYPE_FP16",
        DataType::Fp32 => "TYPE_FP32",
        DataType::Fp64 => "TYPE_FP64",
        DataType::Bytes => "TYPE_STRING",
    }
}

/// Triton's model configuration. Batching is Plinth's own (across requests), so the model is
/// described with full shapes and `max_batch_size` 0: clients send `[N, features]` tensors.
fn config(
    s: &AppState,
    who: Option<&plinth_core::auth::Principal>,
    name: &str,
    version: Option<&str>,
) -> OipResult<Json<Value>> {
    let live = resolve(s, who, name)?;
    let v = runner_version(&live, version)?;
    let sig = match v {
        Some(v) => &live.runner_for(v).expect("checked").source.signature,
        None => live.signature(),
    };
    let io = |t: &TensorSpec| json!({"name": t.name, "data_type": triton_type(t.datatype), "dims": t.shape});
    Ok(Json(json!({
        "name": name,
        "platform": platform(&live, v),
        "backend": "plinth",
        "max_batch_size": 0,
        "input": sig.inputs.iter().map(io).collect::<Vec<_>>(),
        "output": sig.outputs.iter().map(io).collect::<Vec<_>>(),
        "version_policy": {"specific": {"versions": served(&live)}},
        "parameters": {
            "plinth_max_batch_rows": {"string_value": live.spec.batching.max_batch_size.to_string()},
            "plinth_max_wait_us": {"string_value": live.spec.batching.max_wait_us.to_string()},
        },
    })))
}

#[utoipa::path(get, path = "/v2/models/{name}/config", tag = "inference", security((), ("api_key" = [])), params(("name" = String, Path, description = "team.model (production) or team.model.environment")), responses((status = 200, body = plinth_api::oip::ModelConfig), (status = 404, description = "No such deployment, or not one the caller may call", body = plinth_api::oip::OipError), (status = 401, description = "An invalid API key", body = plinth_api::oip::OipError), (status = 400, description = "A bad path", body = plinth_api::oip::OipError)))]
async fn model_config(
    State(s): State<AppState>,
    MaybeCaller(who): MaybeCaller,
    Path(name): Path<String>,
) -> OipResult<Json<Value>> {
    config(&s, who.as_ref(), &name, None)
}

#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}/config", tag = "inference", security((), ("api_key" = [])), params(("name" = String, Path, description = "team.model (production) or team.model.environment"), ("version" = String, Path, description = "a served version")), responses((status = 200, body = plinth_api::oip::ModelConfig), (status = 404, description = "No such deployment, or not one the caller may call", body = plinth_api::oip::OipError), (status = 401, description = "An invalid API key", body = plinth_api::oip::OipError), (status = 400, description = "A bad path", body = plinth_api::oip::OipError)))]
async fn model_config_v(
    State(s): State<AppState>,
    MaybeCaller(who): MaybeCaller,
    Path((name, v)): Path<(String, String)>,
) -> OipResult<Json<Value>> {
    config(&s, who.as_ref(), &name, Some(&v))
}

fn stats_of(live: &Live, name: &str, version: Option<u32>) -> Vec<Value> {
    live.runners()
        .filter(|r| version.is_none_or(|v| r.source.version == v))
        .map(|r| {
            let st = &r.stats;
            let c = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            json!({
                "name": name,
                "version": r.source.version.to_string(),
                "last_inference": c(&st.last_inference_ms),
                "inference_count": c(&st.rows),
                "execution_count": c(&st.batches),
                "inference_stats": {
                    "success": {"count": c(&st.success), "ns": c(&st.success_ns)},
                    "fail": {"count": c(&st.fail), "ns": c(&st.fail_ns)},
                    "queue": {"count": c(&st.success) + c(&st.fail), "ns": c(&st.queue_ns)},
                    "compute_input": {"count": c(&st.batches), "ns": 0},
                    "compute_infer": {"count": c(&st.batches), "ns": c(&st.compute_ns)},
                    "compute_output": {"count": c(&st.batches), "ns": 0},
                    "cache_hit": {"count": 0, "ns": 0},
                    "cache_miss": {"count": 0, "ns": 0},
                },
                "batch_stats": [],
            })
        })
        .collect()
}

#[utoipa::path(get, path = "/v2/models/{name}/stats", tag = "inference", security((), ("api_key" = [])), params(("name" = String, Path, description = "team.model (production) or team.model.environment")), responses((status = 200, body = plinth_api::oip::ModelStats), (status = 404, description = "No such deployment, or not one the caller may call", body = plinth_api::oip::OipError), (status = 401, description = "An invalid API key", body = plinth_api::oip::OipError), (status = 400, description = "A bad path", body = plinth_api::oip::OipError)))]
async fn model_stats(
    State(s): State<AppState>,
    MaybeCaller(who): MaybeCaller,
    Path(name): Path<String>,
) -> OipResult<Json<Value>> {
    let live = resolve(&s, who.as_ref(), &name)?;
    Ok(Json(json!({"model_stats": stats_of(&live, &name, None)})))
}

#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}/stats", tag = "inference", security((), ("api_key" = [])), params(("name" = String, Path, description = "team.model (production) or team.model.environment"), ("version" = String, Path, description = "a served version")), responses((status = 200, body = plinth_api::oip::ModelStats), (status = 404, description = "No such deployment, or not one the caller may call", body = plinth_api::oip::OipError), (status = 401, description = "An invalid API key", body = plinth_api::oip::OipError), (status = 400, description = "A bad path", body = plinth_api::oip::OipError)))]
async fn model_stats_v(
    State(s): State<AppState>,
    MaybeCaller(who): MaybeCaller,
    Path((name, v)): Path<(String, String)>,
) -> OipResult<Json<Value>> {
    let live = resolve(&s, who.as_ref(), &name)?;
    let v = runner_version(&live, Some(&v))?;
    Ok(Json(json!({"model_stats": stats_of(&live, &name, v)})))
}

fn oip_name(l: &Live) -> String {
    if l.environment == "production" {
        format!("{}.{}", l.team, l.model)
    } else {
        format!("{}.{}.{}", l.team, l.model, l.environment)
    }
}

/// The deployments the caller may call.
fn visible(s: &AppState, who: Option<&plinth_core::auth::Principal>) -> Vec<Arc<Live>> {
    s.core.callable_deployments(who)
}

#[utoipa::path(get, path = "/v2/models/stats", tag = "inference", security((), ("api_key" = [])), responses((status = 200, body = plinth_api::oip::ModelStats), (status = 401, body = plinth_api::oip::OipError)))]
async fn all_stats(State(s): State<AppState>, MaybeCaller(who): MaybeCaller) -> Json<Value> {
    let stats: Vec<Value> =
        visible(&s, who.as_ref()).iter().flat_map(|l| stats_of(l, &oip_name(l), None)).collect();
    Json(json!({"model_stats": stats}))
}

#[utoipa::path(post, path = "/v2/repository/index", tag = "inference", security((), ("api_key" = [])), responses((status = 200, body = Vec<plinth_api::oip::RepositoryModel>), (status = 401, body = plinth_api::oip::OipError)))]
async fn repository_index(State(s): State<AppState>, MaybeCaller(who): MaybeCaller) -> Json<Value> {
    let models: Vec<Value> = visible(&s, who.as_ref())
        .iter()
        .flat_map(|l| {
            let name = oip_name(l);
            l.runners().map(move |r| json!({"name": name, "version": r.source.version.to_string(), "state": "READY"})).collect::<Vec<_>>()
        })
        .collect();
    Json(Value::Array(models))
}

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<InferInput>,
    #[serde(default)]
    outputs: Vec<RequestedOutput>,
}

#[derive(Deserialize)]
struct InferInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default)]
    data: Option<Flat>,
}

/// A tensor's `data`, flattened while it is parsed (no intermediate JSON tree: this is the hot
/// path of JSON inference).
#[derive(Default)]
struct Flat {
    nums: Vec<Num>,
    bools: Vec<bool>,
    strings: Vec<String>,
}

#[derive(Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

impl Flat {
    fn len(&self) -> usize {
        self.nums.len() + self.bools.len() + self.strings.len()
    }
}

impl<'de> Deserialize<'de> for Flat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut flat = Flat::default();
        d.deserialize_any(FlatVisitor(&mut flat))?;
        Ok(flat)
    }
}

struct FlatVisitor<'a>(&'a mut Flat);

impl<'de> serde::de::Visitor<'de> for FlatVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("numbers, booleans or strings, in (nested) arrays")
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.nums.push(Num::Int(v));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.nums.push(if let Ok(i) = i64::try_from(v) {
            Num::Int(i)
        } else {
            Num::Float(v as f64)
        });
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.nums.push(Num::Float(v));
        Ok(())
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.bools.push(v);
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.strings.push(v.to_string());
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(FlatSeed(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

struct FlatSeed<'a>(&'a mut Flat);

impl<'de> serde::de::DeserializeSeed<'de> for FlatSeed<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(FlatVisitor(self.0))
    }
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

fn invalid(field: impl Into<String>, reason: impl std::fmt::Display) -> OipError {
    OipError(Error::invalid(field, reason))
}

/// Decodes one input from JSON data or from its slice of the binary section.
fn decode_input(i: usize, input: &InferInput, binary: &mut &[u8]) -> OipResult<Tensor> {
    // The error's field, built only when there is an error.
    let field = |rest: &str| format!("inputs[{i}]{rest}");
    let shape: Vec<usize> = input
        .shape
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| invalid(field(".shape"), "dimensions must be non-negative"))
        })
        .collect::<Result<_, _>>()?;
    let n = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| {
        invalid(field(".shape"), format!("{shape:?} holds more elements than any request can"))
    })?;
    if let Some(size) = input.parameters.get("binary_data_size") {
        let size = size.as_u64().ok_or_else(|| {
            invalid(field(".parameters.binary_data_size"), "must be a non-negative integer")
        })? as usize;
        if size > binary.len() {
            return Err(invalid(
                field(".parameters.binary_data_size"),
                format!("{size} bytes, but only {} follow the JSON header", binary.len()),
            ));
        }
        let (bytes, rest) = binary.split_at(size);
        *binary = rest;
        let width = Data::element_size(&input.datatype).ok_or_else(|| {
            invalid(field(".datatype"), format!("unknown datatype '{}'", input.datatype))
        })?;
        // n * width is at most the body's size when it matches, and saturates otherwise.
        let expected = n.saturating_mul(width);
        if width > 0 && bytes.len() != expected {
            return Err(invalid(
                field(".parameters.binary_data_size"),
                format!(
                    "{} bytes for shape {shape:?} of {} ({expected} expected)",
                    bytes.len(),
                    input.datatype,
                ),
            ));
        }
        let data = Data::from_le(&input.datatype, bytes)
            .map_err(|reason| invalid(field(".data"), reason))?;
        if data.len() != n {
            return Err(invalid(
                field(".data"),
                format!("{} elements for shape {shape:?}", data.len()),
            ));
        }
        return Ok(Tensor::new(shape, data));
    }
    let data = input.data.as_ref().ok_or_else(|| {
        invalid(
            field(".data"),
            "missing (send data, or binary_data_size with the binary extension)",
        )
    })?;
    if data.len() != n {
        return Err(invalid(
            field(".data"),
            format!("{} values for shape {shape:?} ({n} expected)", data.len()),
        ));
    }
    let kinds = [!data.nums.is_empty(), !data.bools.is_empty(), !data.strings.is_empty()]
        .iter()
        .filter(|k| **k)
        .count();
    let wrong =
        |what: &str| invalid(field(".data"), format!("expected {what} for {}", input.datatype));
    let all_numbers = data.len() == data.nums.len();
    let data = match input.datatype.as_str() {
        "FP32" | "FP16" | "BF16" if kinds <= 1 && all_numbers => {
            Data::F32(data.nums.iter().map(|x| x.f64() as f32).collect())
        }
        "FP64" if kinds <= 1 && all_numbers => {
            Data::F64(data.nums.iter().map(|x| x.f64()).collect())
        }
        "INT64" | "UINT64" | "UINT32" if all_numbers => Data::I64(
            data.nums
                .iter()
                .map(|x| if let Num::Int(i) = x { Ok(*i) } else { Err(wrong("integers")) })
                .collect::<Result<_, _>>()?,
        ),
        "INT32" | "INT16" | "INT8" | "UINT16" | "UINT8" if all_numbers => Data::I32(
            data.nums
                .iter()
                .map(|x| if let Num::Int(i) = x { Ok(*i as i32) } else { Err(wrong("integers")) })
                .collect::<Result<_, _>>()?,
        ),
        "BOOL" if data.len() == data.bools.len() => Data::Bool(data.bools.clone()),
        "BYTES" if data.len() == data.strings.len() => Data::Str(data.strings.clone()),
        "FP32" | "FP16" | "BF16" | "FP64" => return Err(wrong("a number")),
        "INT64" | "UINT64" | "UINT32" | "INT32" | "INT16" | "INT8" | "UINT16" | "UINT8" => {
            return Err(wrong("integers"));
        }
        "BOOL" => return Err(wrong("true or false")),
        "BYTES" => return Err(wrong("strings")),
        other => {
            return Err(invalid(field(".datatype"), format!("unknown datatype '{other}'")));
        }
    };
    Ok(Tensor::new(shape, data))
}

/// An output as answered: its data inline, or its byte count in the binary section.
struct OutTensor<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    data: Option<DataRef<'a>>,
    binary_data_size: Option<usize>,
}

/// The answer's JSON, written directly: serde's struct machinery cost more than the values.
fn write_answer(name: &str, version: u32, id: Option<&str>, outputs: &[OutTensor<'_>]) -> Vec<u8> {
    let values: usize = outputs.iter().filter_map(|o| o.data.as_ref()).map(|d| d.0.len()).sum();
    let mut out = Vec::with_capacity(160 + 12 * values);
    out.extend_from_slice(b"{\"model_name\":");
    push_json_str(&mut out, name);
    out.extend_from_slice(b",\"model_version\":\"");
    push_int(&mut out, version);
    out.push(b'"');
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        push_json_str(&mut out, id);
    }
    out.extend_from_slice(b",\"outputs\":[");
    for (k, o) in outputs.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        push_json_str(&mut out, o.name);
        out.extend_from_slice(b",\"datatype\":\"");
        out.extend_from_slice(o.datatype.as_bytes());
        out.extend_from_slice(b"\",\"shape\":");
        push_int_array(&mut out, o.shape);
        if let Some(data) = &o.data {
            out.extend_from_slice(b",\"data\":");
            // Writing to a Vec cannot fail, and the values are plain numbers and strings.
            let _ = serde_json::to_writer(&mut out, data);
        }
        if let Some(size) = o.binary_data_size {
            out.extend_from_slice(b",\"parameters\":{\"binary_data_size\":");
            push_int(&mut out, size);
            out.push(b'}');
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

/// Serializes tensor data as a flat JSON array straight from the typed buffer (non-finite
/// floats become null).
struct DataRef<'a>(&'a Data);

impl serde::Serialize for DataRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Data::F32(v) => v.serialize(s),
            Data::F64(v) => v.serialize(s),
            Data::I64(v) => v.serialize(s),
            Data::I32(v) => v.serialize(s),
            Data::Bool(v) => v.serialize(s),
            Data::Str(v) => v.serialize(s),
        }
    }
}

/// Triton's `Inference-Header-Content-Length`, as sent (read without copying the other headers).
struct HeaderLength(Option<Bytes>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for HeaderLength {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        const NAME: header::HeaderName =
            header::HeaderName::from_static("inference-header-content-length");
        let v = parts.headers.get(&NAME);
        Ok(HeaderLength(v.map(|v| Bytes::copy_from_slice(v.as_bytes()))))
    }
}

#[utoipa::path(post, path = "/v2/models/{name}/infer", tag = "inference", security((), ("api_key" = [])), params(("name" = String, Path, description = "team.model (production) or team.model.environment")), request_body = plinth_api::oip::InferRequest, responses((status = 200, description = "The outputs: JSON, or (binary outputs asked for) the JSON then a binary section, its length in Inference-Header-Content-Length", content((plinth_api::oip::InferResponse = "application/json"), (plinth_api::Binary = "application/octet-stream"))), (status = 400, description = "A request that does not fit the model", body = plinth_api::oip::OipError), (status = 401, body = plinth_api::oip::OipError), (status = 404, body = plinth_api::oip::OipError), (status = 413, body = plinth_api::oip::OipError), (status = 503, description = "Overloaded: retry after Retry-After", body = plinth_api::oip::OipError), (status = 504, body = plinth_api::oip::OipError)))]
async fn infer(
    State(s): State<AppState>,
    MaybeCaller(who): MaybeCaller,
    Path(name): Path<String>,
    header_len: HeaderLength,
    body: Bytes,
) -> OipResult<InferAnswer> {
    run_infer(s, who, name, None, header_len, body).await
}

/// The model named by the path of `POST /v2/models/{name}/infer` (no query), when the name
/// needs no percent-decoding and holds only characters a URI path takes as they are: the
/// requests the connection's own reader answers ([`crate::h1`]).
pub(crate) fn infer_path_name(path: &[u8]) -> Option<&str> {
    let name = path.strip_prefix(b"/v2/models/")?.strip_suffix(b"/infer")?;
    let plain = |b: &u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(b);
    if name.is_empty() || !name.iter().all(plain) {
        return None;
    }
    std::str::from_utf8(name).ok()
}

/// `POST /v2/models/{name}/infer` as the connection's own reader serves it: the routed
/// [`infer`]'s work on what its extractors would have read; a refusal as its response.
pub(crate) async fn infer_read(
    s: AppState,
    who: Option<plinth_core::auth::Principal>,
    name: String,
    header_len: Option<&[u8]>,
    body: Bytes,
) -> Result<InferAnswer, Response> {
    let header_len = HeaderLength(header_len.map(Bytes::copy_from_slice));
    run_infer(s, who, name, None, header_len, body).await.map_err(IntoResponse::into_response)
}

#[utoipa::path(post, path = "/v2/models/{name}/versions/{version}/infer", tag = "inference", security((), ("api_key" = [])), params(("name" = String, Path, description = "team.model (production) or team.model.environment"), ("version" = String, Path, description = "a served version")), request_body = plinth_api::oip::InferRequest, responses((status = 200, description = "The outputs: JSON, or (binary outputs asked for) the JSON then a binary section, its length in Inference-Header-Content-Length", content((plinth_api::oip::InferResponse = "application/json"), (plinth_api::Binary = "application/octet-stream"))), (status = 400, description = "A request that does not fit the model", body = plinth_api::oip::OipError), (status = 401, body = plinth_api::oip::OipError), (status = 404, body = plinth_api::oip::OipError), (status = 413, body = plinth_api::oip::OipError), (status = 503, description = "Overloaded: retry after Retry-After", body = plinth_api::oip::OipError), (status = 504, body = plinth_api::oip::OipError)))]
async fn infer_v(
    State(s): State<AppState>,
    MaybeCaller(who): MaybeCaller,
    Path((name, v)): Path<(String, String)>,
    header_len: HeaderLength,
    body: Bytes,
) -> OipResult<InferAnswer> {
    run_infer(s, who, name, Some(v), header_len, body).await
}

/// An inference request as read: the version it pins, the request, its decoded inputs.
struct Decoded {
    pinned: Option<u32>,
    req: InferRequest,
    inputs: Vec<(String, Tensor)>,
}

async fn run_infer(
    s: AppState,
    who: Option<plinth_core::auth::Principal>,
    name: String,
    version: Option<String>,
    HeaderLength(header_len): HeaderLength,
    body: Bytes,
) -> OipResult<InferAnswer> {
    let (team, model, env) = target(&name)?;
    let request_id = crate::current_request_id().unwrap_or_default();
    let p = s.core.prediction(who.as_ref(), team, model, env, &request_id)?;
    // Everything up to the core's call is the protocol's: refusals are counted all the same.
    let read = || -> OipResult<Decoded> {
        let pinned = match version.as_deref() {
            None => None,
            Some(v) => Some(v.parse::<u32>().map_err(|_| Error::not_found("model version", v))?),
        };
        let header_len = header_len.map(|v| {
            std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| invalid("Inference-Header-Content-Length", "must be a byte count"))
        });
        let (json_part, mut binary) = match header_len {
            Some(len) => {
                let len = len?;
                if len > body.len() {
                    return Err(invalid(
                        "Inference-Header-Content-Length",
                        format!("{len} is longer than the body ({} bytes)", body.len()),
                    ));
                }
                (&body[..len], &body[len..])
            }
            None => (&body[..], &[][..]),
        };
        let req: InferRequest = match json::read(json_part) {
            Some(req) => req,
            // Another shape, or an error to name.
            None => crate::extract::parse_json("", json_part)?,
        };
        let mut inputs = Vec::with_capacity(req.inputs.len());
        for (i, input) in req.inputs.iter().enumerate() {
            inputs.push((input.name.clone(), decode_input(i, input, &mut binary)?));
        }
        if !binary.is_empty() {
            return Err(invalid(
                "body",
                format!("{} bytes of binary data follow the inputs unused", binary.len()),
            ));
        }
        let sig = p.signature(pinned)?;
        for o in &req.outputs {
            if !sig.outputs.iter().any(|s| s.name == o.name) && !sig.outputs.is_empty() {
                return Err(invalid(
                    "outputs",
                    format!("'{}' is not an output of this model", o.name),
                ));
            }
        }
        Ok(Decoded { pinned, req, inputs })
    };
    let Decoded { pinned, req, inputs } = read().map_err(|OipError(e)| OipError(p.failed(e)))?;
    let answer = p.tensors(inputs, pinned).await?;

    let all_binary =
        req.parameters.get("binary_data_output").and_then(Value::as_bool).unwrap_or(false);
    let selected: Vec<(&(String, Tensor), bool)> = if req.outputs.is_empty() {
        answer.outputs.iter().map(|o| (o, all_binary)).collect()
    } else {
        req.outputs
            .iter()
            .filter_map(|r| {
                let bin =
                    r.parameters.get("binary_data").and_then(Value::as_bool).unwrap_or(all_binary);
                answer.outputs.iter().find(|(n, _)| n == &r.name).map(|o| (o, bin))
            })
            .collect()
    };
    let mut tail: Vec<u8> = Vec::new();
    let outputs: Vec<OutTensor<'_>> = selected
        .iter()
        .map(|((n, t), bin)| {
            let (data, binary_data_size) = if *bin {
                let start = tail.len();
                t.data.write_le(&mut tail);
                (None, Some(tail.len() - start))
            } else {
                (Some(DataRef(&t.data)), None)
            };
            OutTensor {
                name: n,
                datatype: t.data.type_name(),
                shape: &t.shape,
                data,
                binary_data_size,
            }
        })
        .collect();
    let mut body = write_answer(&name, answer.version, req.id.as_deref(), &outputs);
    if tail.is_empty() {
        return Ok(InferAnswer { body, json_len: None });
    }
    let json_len = Some(body.len());
    body.extend_from_slice(&tail);
    Ok(InferAnswer { body, json_len })
}

/// A successful inference's answer before it is an HTTP response: the routed handlers make one
/// of it, the connection's own reader writes it as it is ([`crate::h1`]).
pub(crate) struct InferAnswer {
    /// The JSON answer, then any binary outputs.
    pub body: Vec<u8>,
    /// Where binary outputs follow the JSON: its length (`Inference-Header-Content-Length`).
    pub json_len: Option<usize>,
}

impl InferAnswer {
    pub fn content_type(&self) -> &'static str {
        if self.json_len.is_some() { "application/octet-stream" } else { "application/json" }
    }
}

impl IntoResponse for InferAnswer {
    fn into_response(self) -> Response {
        let content_type = HeaderValue::from_static(self.content_type());
        let mut r = Body::from(self.body).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, content_type);
        if let Some(len) = self.json_len {
            r.headers_mut().insert("inference-header-content-length", HeaderValue::from(len));
        }
        r
    }
}
