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
        (name = "governance", description = "Datasets, evaluations with fairness, policies, promotions and reviews, history, webhooks"),
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

/// The REST routes with their OpenAPI description.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest(
        plinth_api::API_PREFIX,
        routes::identity::router()
            .merge(routes::audit::router())
            .merge(routes::registry::router())
            .merge(routes::serving::router())
            .merge(routes::governance::router())
            .merge(routes::features::router()),
    )
}

/// The OpenAPI document as pretty JSON.
pub fn document() -> String {
    let (_, api) = router().split_for_parts();
    let mut json = api.to_pretty_json().expect("the OpenAPI document serializes");
    json.push('\n');
    json
}
