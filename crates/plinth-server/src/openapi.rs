//! The OpenAPI document, generated from the handlers' annotations. `openapi.json` at the
//! repository root is this document, kept in sync by a test.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Plinth",
        description = "The AI platform product teams share: registry, serving, data, features, governance.\n\nAuthenticate with `Authorization: Bearer <API key>`. Errors are `{\"error\": {\"code\", \"type\", \"message\", \"field\"?, \"request_id\"?}}`; the codes are listed in docs/errors.md.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    components(schemas(plinth_api::ErrorBody, plinth_api::Code)),
    tags(
        (name = "identity", description = "Teams, users, service accounts and API keys"),
        (name = "audit", description = "The append-only audit log"),
        (name = "registry", description = "Models, versions, model cards and lineage"),
        (name = "serving", description = "Environments, deployments, predictions, metrics and the prediction log"),
        (name = "features", description = "Entities, feature views, feature services, materialization, online reads and pushes"),
        (name = "data", description = "Datasets and their versions, profiles and grants; governed SQL; data sources"),
        (name = "evaluation", description = "Evaluations of a version on a dataset: metrics, fairness, slices, comparison, the report"),
        (name = "governance", description = "Policies, promotions and reviews, what served when"),
        (name = "webhooks", description = "Subscriptions to the platform's events, signed deliveries and their log"),
        (name = "monitoring", description = "A deployment's health over time (requests, errors, availability, latency), persisted and added up over replicas"),
        (name = "inference", description = "The Open Inference Protocol v2 with Triton's binary-tensor, model-configuration and statistics extensions: a model is `team.model` (production) or `team.model.environment`; a key is needed unless the deployment is public"),
        (name = "tasks", description = "Background tasks (evaluations, materializations, webhook deliveries, ...): state, attempts, progress, log, cancellation"),
        (name = "training", description = "Recipes (a team's versioned training specs), training runs and the triggers that retrain by themselves"),
        (name = "billing", description = "Cost allocation and the platform's own figures: the price book, plans, quotas and budgets, metered usage, monthly statements and the chargeback export, the platform report (adoption, quality, business, DORA) and the satisfaction survey"),
        (name = "probes", description = "Liveness, readiness, Prometheus metrics and this document"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("plk_...").build(),
            ),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "api_key",
            Vec::<String>::new(),
        )]);
    }
}

/// The answers every REST operation can give besides its own, documented on each (a client
/// generated from the document must know them): 400 for a path or query that does not parse,
/// 401 without a valid key, 403 and 404 for what the caller may not do or see; 409 on changes;
/// 413 and 415 for bodies. The inference and probe routes document their own.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with(plinth_api::API_PREFIX) || path.ends_with("/openapi.json") {
                continue;
            }
            let ops = [
                (&mut item.get, false),
                (&mut item.put, true),
                (&mut item.post, true),
                (&mut item.delete, true),
                (&mut item.patch, true),
            ];
            for (op, changes) in ops {
                let Some(op) = op else { continue };
                let mut common = vec![
                    (
                        "400",
                        "A path, query or body that does not parse, or a field that is not valid",
                    ),
                    ("401", "No API key, or one that is not valid, expired or revoked"),
                    ("403", "The caller's role does not allow it"),
                    ("404", "No such object, or one the caller may not see"),
                ];
                if changes {
                    common.push(("409", "It conflicts with the current state"));
                }
                if op.request_body.is_some() {
                    common.push(("413", "The body is larger than the limit"));
                    common.push(("415", "The body is not of the media type the operation takes"));
                }
                for (status, description) in common {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| error(description).into());
                }
            }
        }
    }
}

/// Every route with its OpenAPI description: REST under `/api/v1`, the Open Inference Protocol
/// under `/v2`, the probes and `/metrics`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest(
            plinth_api::API_PREFIX,
            routes::identity::router()
                .merge(routes::audit::router())
                .merge(routes::registry::router())
                .merge(routes::serving::router())
                .merge(routes::data::router())
                .merge(routes::evaluation::router())
                .merge(routes::governance::router())
                .merge(routes::webhooks::router())
                .merge(routes::features::router())
                .merge(routes::monitoring::router())
                .merge(routes::tasks::router())
                .merge(routes::training::router())
                .merge(routes::billing::router()),
        )
        .merge(routes::oip::router())
        .merge(routes::health::router())
}

/// The OpenAPI document as pretty JSON.
pub fn document() -> String {
    let (_, mut api) = router().split_for_parts();
    // After the routes are in: the modifiers of `ApiDoc` run before them.
    CommonErrors.modify(&mut api);
    let mut json = api.to_pretty_json().expect("the OpenAPI document serializes");
    json.push('\n');
    json
}
