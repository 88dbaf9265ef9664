//! The admin API under `/api/v1` and its OpenAPI document, generated from the handlers'
//! `#[utoipa::path]` annotations so the document cannot drift from the code.
//!
//! Every `/api/v1` endpoint is registered in [`api_routes`] through utoipa-axum's
//! `routes!`; a concept's API module contributes an `OpenApiRouter<AppState>` that is
//! merged there. The document is served without authentication at
//! `GET /api/v1/openapi.json`.

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::{ErrorBody, ErrorDetail};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// The name handlers use in `security(("bearer" = []))`.
pub const BEARER_SCHEME: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "qunfa admin API",
        description = "Administration of a qunfa deployment. Authenticate with \
            `Authorization: Bearer <token>` (QUNFA_ADMIN_TOKEN, or a token whose SHA-256 is \
            listed in an [[api_token]] rule). Errors are `{\"error\": {\"code\", \"message\"}}`."
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerScheme),
    tags(
        (name = "auth", description = "Who is calling"),
        (name = "outbox", description = "Queued, failed and dead deliveries"),
        (name = "messages", description = "Messages to people over routes of channels"),
    )
)]
struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some(
            "QUNFA_ADMIN_TOKEN, or a token whose SHA-256 is listed in an [[api_token]] rule"
                .to_string(),
        );
        components.add_security_scheme(BEARER_SCHEME, SecurityScheme::Http(scheme));
    }
}

/// Every `/api/v1` route together with its OpenAPI description.
pub fn api_openapi_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(super::auth::whoami))
        .merge(super::outbox::routes())
        .merge(super::messages::routes())
}

/// The `/api/v1` routes plus `GET /api/v1/openapi.json` describing them.
pub fn api_routes() -> Router<AppState> {
    let (router, document) = api_openapi_router().split_for_parts();
    let json = match serde_json::to_vec_pretty(&document) {
        Ok(bytes) => Bytes::from(bytes),
        Err(error) => {
            // Serialising a document built from our own types cannot fail in practice;
            // an empty object still lets the rest of the API run.
            tracing::error!(error.chain = %error, "cannot serialise the OpenAPI document");
            Bytes::from_static(b"{}")
        }
    };
    router.route(OPENAPI_PATH, get(move || serve_document(json.clone())))
}

async fn serve_document(json: Bytes) -> Response {
    let mut response = json.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The document as served, for tests and tooling.
pub fn document() -> utoipa::openapi::OpenApi {
    api_openapi_router().into_openapi()
}
