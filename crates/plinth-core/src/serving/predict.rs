//! The one path every prediction takes, whatever protocol it came by: find the deployment,
//! authorize the caller, pick the version (weights, sticky key, or one pinned), build and check
//! its inputs (rows, columns, entity keys read through the version's feature service, or named
//! tensors), run it with its shadows and log it; and count every outcome, refusals included,
//! against the deployment, by error code.
//!
//! REST predict and OIP infer are adapters over [`Prediction`]: they parse their protocol's
//! body and shape its answer, nothing else. What metering, quotas and monitoring need hangs
//! here, as [`PredictionHook`]s: each may refuse a prediction once it is routed and its rows
//! are known, before the model runs (a quota), and sees every outcome once (metering,
//! monitoring). With no hook registered the path costs nothing more.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use plinth_api::Code;
use plinth_api::registry::{DataType, Signature};
use plinth_api::serving::PredictRequest;

use super::engine::{Answer, Call, Live, Runner};
use super::input;
use super::tensor::{Data, Tensor};
use crate::Plinth;
use crate::auth::Principal;
use crate::error::{Error, Result};

/// A prediction on its way: the deployment it targets, the caller authorized for it.
pub struct Prediction<'a> {
    core: &'a Plinth,
    pub live: Arc<Live>,
    caller: Option<&'a Principal>,
    request_id: &'a str,
    /// The answering version once routed (0 before), and its rows once read.
    version: AtomicU32,
    rows: AtomicUsize,
}

/// What a [`PredictionHook`] sees of a prediction.
pub struct PredictionFacts<'a> {
    pub deployment_id: &'a str,
    pub team_id: &'a str,
    pub team: &'a str,
    pub model: &'a str,
    pub environment: &'a str,
    /// `None` for an anonymous call of a public deployment.
    pub caller: Option<&'a Principal>,
    pub request_id: &'a str,
    /// The answering version, once routed; a refusal before routing has none.
    pub version: Option<u32>,
    /// Rows in the request, once read (0 before).
    pub rows: usize,
}

/// A concern that hangs on every prediction: quotas, metering, monitoring. Hooks run on the
/// request's own task, so they must be quick and must not block (count, or hand off).
pub trait PredictionHook: Send + Sync + 'static {
    /// Called once the version is routed and the rows are read, before the model runs: an
    /// error refuses the prediction, and is counted and answered like any refusal.
    fn admit(&self, _prediction: &PredictionFacts<'_>) -> Result<()> {
        Ok(())
    }

    /// Called once for every outcome, answered or refused (authorization refusals included).
    fn finished(
        &self,
        _prediction: &PredictionFacts<'_>,
        _outcome: std::result::Result<(), &Error>,
    ) {
    }
}

/// A prediction from rows, columns or entity keys, answered.
pub struct RowsAnswer {
    pub answer: Answer,
    pub rows: usize,
}

impl Plinth {
    /// The live deployment of `team/model` in `environment`, if `caller` may call it (no key
    /// is needed for a public one). Others get `not_found`.
    pub fn callable(
        &self,
        caller: Option<&Principal>,
        team: &str,
        model: &str,
        environment: &str,
    ) -> Result<Arc<Live>> {
        let live = self.engine.resolve(team, model, environment).ok_or_else(|| {
            Error::not_found("deployment", format!("{team}/{model}@{environment}"))
        })?;
        live.authorize(caller)?;
        Ok(live)
    }

    /// Every live deployment `caller` may call (the Open Inference Protocol's listings).
    pub fn callable_deployments(&self, caller: Option<&Principal>) -> Vec<Arc<Live>> {
        self.engine.all().into_iter().filter(|l| l.authorize(caller).is_ok()).collect()
    }

    /// A deployment's live figures, for anyone who may see the deployment.
    pub async fn deployment_metrics(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        environment: &str,
    ) -> Result<plinth_api::serving::DeploymentMetrics> {
        let d = self.get_deployment(who, team, model, environment).await?;
        let live = self
            .engine
            .resolve(&d.team, &d.model, &d.environment)
            .ok_or_else(|| Error::not_found("deployment", &d.id))?;
        self.figures_everywhere(&live).await
    }

    /// Logged predictions of a deployment in `[since, until)` (microseconds), oldest first, for
    /// anyone who may see the deployment.
    #[allow(clippy::too_many_arguments)]
    pub async fn prediction_log(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        environment: &str,
        since: i64,
        until: i64,
        shadow: Option<bool>,
        limit: usize,
    ) -> Result<Vec<plinth_api::serving::PredictionRecord>> {
        let d = self.get_deployment(who, team, model, environment).await?;
        self.engine.log.read(&d.id, since, until, shadow, limit).await
    }

    /// Starts a prediction on `team/model` in `environment`. A caller the deployment refuses
    /// is counted against it (its owners see who knocks), and refused.
    pub fn prediction<'a>(
        &'a self,
        caller: Option<&'a Principal>,
        team: &str,
        model: &str,
        environment: &str,
        request_id: &'a str,
    ) -> Result<Prediction<'a>> {
        let live = self.engine.resolve(team, model, environment).ok_or_else(|| {
            Error::not_found("deployment", format!("{team}/{model}@{environment}"))
        })?;
        let p = Prediction {
            core: self,
            live,
            caller,
            request_id,
            version: AtomicU32::new(0),
            rows: AtomicUsize::new(0),
        };
        if let Err(e) = p.live.authorize(caller) {
            return Err(p.finish_err(e));
        }
        Ok(p)
    }
}

impl Prediction<'_> {
    /// Counts a failure found outside the core (a body the adapter could not read) against the
    /// deployment, and answers it.
    pub fn failed(&self, e: Error) -> Error {
        self.finish_err(e)
    }

    /// Every outcome passes here once: the request and, when it failed, its error code; then
    /// the hooks.
    fn finish<T>(&self, outcome: Result<T>) -> Result<T> {
        let stats = &self.live.stats;
        stats.requests.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &outcome {
            stats.record_error(e.code.as_str());
        }
        if !self.core.prediction_hooks.is_empty() {
            let facts = self.facts();
            let seen = outcome.as_ref().map(|_| ());
            for hook in &self.core.prediction_hooks {
                hook.finished(&facts, seen);
            }
        }
        outcome
    }

    fn facts(&self) -> PredictionFacts<'_> {
        let live = &self.live;
        PredictionFacts {
            deployment_id: &live.deployment_id,
            team_id: &live.team_id,
            team: &live.team,
            model: &live.model,
            environment: &live.environment,
            caller: self.caller,
            request_id: self.request_id,
            version: Some(self.version.load(Ordering::Relaxed)).filter(|v| *v != 0),
            rows: self.rows.load(Ordering::Relaxed),
        }
    }

    fn finish_err(&self, e: Error) -> Error {
        match self.finish::<()>(Err(e)) {
            Err(e) => e,
            Ok(()) => unreachable!("an error stays an error"),
        }
    }

    fn caller_name(&self) -> &str {
        self.caller.map_or("anonymous", |p| p.name.as_str())
    }

    /// The version that would answer: the one pinned, or routed by weight or sticky key.
    fn runner(&self, version: Option<u32>, routing_key: Option<&str>) -> Result<Arc<Runner>> {
        let runner = self.pick(version, routing_key)?;
        if !self.core.prediction_hooks.is_empty() {
            self.version.store(runner.source.version, Ordering::Relaxed);
        }
        Ok(runner)
    }

    fn pick(&self, version: Option<u32>, routing_key: Option<&str>) -> Result<Arc<Runner>> {
        match version {
            None => Ok(self.live.route(routing_key).clone()),
            Some(v) => self.live.runner_for(v).cloned().ok_or_else(|| {
                let served: Vec<String> =
                    self.live.runners().map(|r| r.source.version.to_string()).collect();
                Error::not_found(
                    "model version",
                    format!("{v} (served versions: {})", served.join(", ")),
                )
            }),
        }
    }

    /// The signature requests are checked against: the pinned version's, else the first served
    /// version's.
    pub fn signature(&self, version: Option<u32>) -> Result<&Signature> {
        match version {
            None => Ok(self.live.signature()),
            Some(v) => self
                .live
                .runner_for(v)
                .map(|r| &r.source.signature)
                .ok_or_else(|| Error::not_found("model version", v)),
        }
    }

    /// Plinth's own payload: rows (objects by feature name, or arrays in feature order) or
    /// columns, or entity keys whose features come from the online store through the version's
    /// feature service. The version is picked first: a canary may read other features than the
    /// version it replaces.
    pub async fn rows(self, mut req: PredictRequest) -> Result<RowsAnswer> {
        let outcome = async {
            let runner = self.runner(None, req.routing_key.as_deref())?;
            if let Some(entities) = &req.entities {
                if req.rows.is_some() || req.columns.is_some() {
                    return Err(Error::invalid(
                        "entities",
                        "send entities, rows or columns: one of them",
                    ));
                }
                let columns =
                    self.core.prediction_features(&self.live, &runner.source, entities).await?;
                req.columns = Some(columns);
            }
            let live = &self.live;
            // A feature another served version reads is left out, not refused.
            let other_feature = |k: &str| {
                live.runners().chain(&live.shadows).any(|r| {
                    r.source
                        .signature
                        .feature_names
                        .as_ref()
                        .is_some_and(|n| n.iter().any(|f| f == k))
                })
            };
            let (name, tensor, rows) = input::tensor_from_request(
                &runner.source.signature,
                &other_feature,
                req.rows.as_deref(),
                req.columns.as_ref(),
                live.spec.limits.max_rows as usize,
            )?;
            if let Some(ids) = &req.ids {
                check_ids(ids, rows)?;
            }
            let answer = self.run(vec![(name, tensor)], rows, &runner, req.ids.as_deref()).await?;
            Ok(RowsAnswer { answer, rows })
        }
        .await;
        self.finish(outcome)
    }

    /// Named tensors (the Open Inference Protocol), answered by the routed version or, when
    /// `version` is given, by that served version. The tensors are checked against the
    /// answering version's signature: every input present, by name, of a fitting type and shape.
    pub async fn tensors(
        self,
        inputs: Vec<(String, Tensor)>,
        version: Option<u32>,
    ) -> Result<Answer> {
        let outcome = async {
            let runner = self.runner(version, None)?;
            let sig = match version {
                Some(_) => &runner.source.signature,
                None => self.live.signature(),
            };
            let rows = check_tensors(sig, &inputs, self.live.spec.limits.max_rows)?;
            self.run(inputs, rows, &runner, None).await
        }
        .await;
        self.finish(outcome)
    }

    async fn run(
        &self,
        inputs: Vec<(String, Tensor)>,
        rows: usize,
        runner: &Arc<Runner>,
        ids: Option<&[String]>,
    ) -> Result<Answer> {
        if !self.core.prediction_hooks.is_empty() {
            self.rows.store(rows, Ordering::Relaxed);
            let facts = self.facts();
            for hook in &self.core.prediction_hooks {
                hook.admit(&facts)?;
            }
        }
        let call = Call {
            caller: self.caller_name(),
            request_id: self.request_id,
            ids,
            inputs,
            rows,
            routing_key: None,
            runner: Some(runner),
        };
        self.core.engine.predict(&self.live, call).await
    }
}

/// The caller's prediction ids: one per row, each 1-200 characters.
fn check_ids(ids: &[String], rows: usize) -> Result<()> {
    if ids.len() != rows {
        return Err(Error::invalid(
            "ids",
            format!("give one id per row: {} ids for {rows} rows", ids.len()),
        ));
    }
    if let Some(i) = ids.iter().position(|id| id.is_empty() || id.len() > 200) {
        return Err(Error::invalid(format!("ids[{i}]"), "an id is 1 to 200 characters"));
    }
    Ok(())
}

fn datatype_name(d: DataType) -> &'static str {
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

/// Checks named tensors against a signature and answers the row count (the first input's first
/// dimension), within the deployment's `max_rows`.
fn check_tensors(sig: &Signature, inputs: &[(String, Tensor)], max_rows: u32) -> Result<usize> {
    if inputs.is_empty() {
        return Err(Error::invalid("inputs", "at least one input is required"));
    }
    for (i, (n, t)) in inputs.iter().enumerate() {
        let Some(spec) = sig.inputs.iter().find(|s| &s.name == n) else {
            let names: Vec<&str> = sig.inputs.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::invalid(
                format!("inputs[{i}].name"),
                format!("'{n}' is not an input of this model (inputs: {})", names.join(", ")),
            ));
        };
        let fits = spec.shape.is_empty()
            || (spec.shape.len() == t.shape.len()
                && spec.shape.iter().zip(&t.shape).all(|(&d, &n)| d < 0 || d as usize == n));
        if !fits {
            return Err(Error::invalid(
                format!("inputs[{i}].shape"),
                format!("{:?} does not fit {:?} (-1 = any)", t.shape, spec.shape),
            ));
        }
        let strings = matches!(t.data, Data::Str(_));
        if strings != matches!(spec.datatype, DataType::Bytes) {
            return Err(Error::invalid(
                format!("inputs[{i}].datatype"),
                format!("the model takes {} for '{n}'", datatype_name(spec.datatype)),
            ));
        }
    }
    if let Some(missing) = sig.inputs.iter().find(|s| !inputs.iter().any(|(n, _)| n == &s.name)) {
        return Err(Error::invalid("inputs", format!("input '{}' is missing", missing.name)));
    }
    let rows = inputs[0].1.shape.first().copied().unwrap_or(1);
    if rows > max_rows as usize {
        return Err(Error::new(
            Code::InvalidField,
            format!(
                "inputs[0].shape: {rows} rows is more than this deployment's limit of {max_rows}"
            ),
        )
        .with_field("inputs[0].shape"));
    }
    Ok(rows)
}
