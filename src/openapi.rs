//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! annotations and the DTOs' `ToSchema` derives as the router is built (see
//! `app::router`), so the document cannot drift from the code.

use utoipa::{
    Modify, OpenApi, ToResponse,
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::error::ErrorBody;

/// Names of the security schemes, for `security(...)` in the annotations.
pub const TOKEN: &str = "Token";
pub const BEARER: &str = "Bearer";
/// The refresh token's cookie (`auth::session::REFRESH_COOKIE`).
pub const REFRESH_COOKIE: &str = "RefreshCookie";

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Conduit API",
        description = "The RealWorld \"Conduit\" API, version 2.0.0 of its spec. Errors always have the shape \
                       `{\"errors\": {\"<field>\": [\"<message>\"]}}`. \
                       Where the RealWorld spec is ambiguous, see docs/api-decisions.md.",
        license(name = "MIT", identifier = "MIT")
    ),
    modifiers(&SecuritySchemes),
    components(
        schemas(ErrorBody),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            PayloadTooLarge,
            UnsupportedMediaType,
            ValidationFailed,
            InternalError,
            Unavailable,
            RefreshRefused,
            OriginRefused
        )
    ),
    tags(
        (name = "User and Authentication"),
        (name = "Profile"),
        (name = "Articles"),
        (name = "Comments"),
        (name = "Favorites"),
        (name = "Tags"),
        (name = "OpenID Connect sign-in", description = "Sign-in with an OpenID Provider (docs/auth.md)"),
        (name = "Health", description = "Probes for load balancers and orchestrators")
    )
)]
pub struct ApiDoc;

/// `Authorization: Token <jwt>` (the RealWorld scheme) and `Authorization: Bearer <jwt>`.
#[derive(Debug)]
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            TOKEN,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`Token <jwt>`, with the token from registration or login",
            ))),
        );
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        components.add_security_scheme(
            REFRESH_COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::session::REFRESH_COOKIE,
                "The refresh token, set by register, login and refresh (`HttpOnly; Secure; SameSite=Strict; Path=/`); \
                 a request carrying it must come from an allowed `Origin`",
            ))),
        );
    }
}

/// Adds the answers any operation may give to each one: an internal error, and a
/// 503 when no database connection could be had in time or the request took
/// longer than `REQUEST_TIMEOUT_SECONDS`; and, on the `200` of every public read
/// (a `GET` that may be called with or without a token), the challenge that
/// `extract::authenticate` adds when the token was refused. Runs on the finished
/// document, once the router has added the operations.
pub fn add_common_responses(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{Ref, RefOr, header::HeaderBuilder, security::SecurityRequirement};
    let anonymous = SecurityRequirement::default();
    for item in openapi.paths.paths.values_mut() {
        let public_read = item.get.as_ref().and_then(|get| get.security.as_ref()).is_some_and(|security| {
            security.contains(&anonymous) && security.iter().any(|requirement| *requirement != anonymous)
        });
        if let Some(RefOr::T(ok)) = item.get.as_mut().and_then(|get| get.responses.responses.get_mut("200"))
            && public_read
        {
            let challenge = HeaderBuilder::new()
                .description(Some("When the token was refused: `Token error=\"invalid_token\", ...`"))
                .build();
            ok.headers.insert("WWW-Authenticate".to_owned(), RefOr::T(challenge));
        }
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            let responses = &mut operation.responses.responses;
            for (status, name) in [("500", "InternalError"), ("503", "Unavailable")] {
                responses.entry(status.to_owned()).or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
            }
        }
    }
}

#[derive(Debug, ToResponse)]
#[response(description = "An internal error; the body says no more")]
pub struct InternalError(pub ErrorBody);

#[derive(Debug, ToResponse)]
#[response(
    description = "No database connection could be had in time (all busy, or the database does not answer), or the request took longer than the server's time limit; retry later"
)]
pub struct Unavailable(pub ErrorBody);

/// Malformed request: invalid JSON, query string or characters (such as NUL).
#[derive(Debug, ToResponse)]
#[response(description = "Malformed request: invalid JSON, query string or characters")]
pub struct BadRequest(pub ErrorBody);

/// A token is required, or the one given is malformed, expired, forged or revoked.
#[derive(Debug, ToResponse)]
#[response(
    description = "Token missing (`{\"errors\": {\"token\": [\"is missing\"]}}`), or refused: malformed, forged, expired or revoked (`is invalid`, `has expired`, `has been revoked`); wrong credentials on login (`{\"errors\": {\"credentials\": [\"invalid\"]}}`)",
    headers(("WWW-Authenticate" = String, description = "`Token`, or `Token error=\"invalid_token\", ...` for a refused token"))
)]
pub struct Unauthorized(pub ErrorBody);

/// The key names the kind of resource: `{"errors": {"article": ["forbidden"]}}`.
#[derive(Debug, ToResponse)]
#[response(description = "The caller does not own the resource; the key names its kind (`article`, `comment`)")]
pub struct Forbidden(pub ErrorBody);

/// The key names the kind of resource: `{"errors": {"profile": ["not found"]}}`.
#[derive(Debug, ToResponse)]
#[response(description = "No such resource; the key names its kind (`article`, `profile`, `comment`)")]
pub struct NotFound(pub ErrorBody);

/// A unique value is taken: `{"errors": {"username": ["has already been taken"]}}`.
#[derive(Debug, ToResponse)]
#[response(description = "A unique value is taken by another resource; the key names the field")]
pub struct Conflict(pub ErrorBody);

#[derive(Debug, ToResponse)]
#[response(description = "The request body is larger than 1 MiB")]
pub struct PayloadTooLarge(pub ErrorBody);

#[derive(Debug, ToResponse)]
#[response(description = "The request body is not `application/json`")]
pub struct UnsupportedMediaType(pub ErrorBody);

#[derive(Debug, ToResponse)]
#[response(description = "Validation failed: messages by field")]
pub struct ValidationFailed(pub ErrorBody);

#[derive(Debug, ToResponse)]
#[response(
    description = "The refresh token is unknown, expired, already used (which revokes its session) or of an ended session (`{\"errors\": {\"refresh_token\": [\"is invalid\"]}}`)"
)]
pub struct RefreshRefused(pub ErrorBody);

#[derive(Debug, ToResponse)]
#[response(
    description = "The refresh cookie came from an origin not allowed to use it (`{\"errors\": {\"origin\": [\"is not allowed\"]}}`)"
)]
pub struct OriginRefused(pub ErrorBody);
