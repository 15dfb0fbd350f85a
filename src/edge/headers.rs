//! Security headers on every response, after the OWASP REST Security and HTTP
//! Headers cheat sheets.
//!
//! The API answers JSON to scripts, never pages to browse, so its responses may
//! not be sniffed, framed, cached or run as a document: `default-src 'none'`
//! makes a JSON body opened as a page inert. The interactive docs at `/docs` are
//! a page, and get a policy of their own ([`DOCS_CSP`]) that lets Swagger UI
//! load from this origin only.
//!
//! Every response is `Cache-Control: no-store`, a public read included: the
//! answers depend on the caller (`following`, `favorited`), and the auth
//! endpoints and authenticated reads must never sit in a shared cache. A handler
//! that sets its own `Cache-Control` keeps it. Nothing names the server's
//! software (hyper sends no `Server` header, and we add none).

use std::time::Duration;

use axum::{
    Router,
    http::{HeaderName, HeaderValue, header},
};
use tower_http::set_header::SetResponseHeaderLayer;

/// The API's policy: nothing may load, and no page may frame it.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// Swagger UI's policy: scripts, styles, fonts and the OpenAPI document from this
/// origin only, images from this origin or inline (`data:`, Swagger UI's icons),
/// try-it-out requests to this origin only. Swagger UI sets `style` attributes
/// from its scripts, which a policy does not govern (CSSOM), and adds one
/// `<style>` element of its own, allowed by its hash rather than by
/// `'unsafe-inline'`. `scripts/docs-browser` fails on any violation, so a Swagger
/// UI upgrade that changes that element is caught.
pub const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='; img-src 'self' data:; \
     font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Wraps the whole router: every answer, errors and CORS preflights included,
/// gets the headers. `hsts`, when set, adds `Strict-Transport-Security` with that
/// `max-age` (behind TLS only: see `HSTS_MAX_AGE` in docs/operations.md).
pub fn secure(router: Router, hsts: Option<Duration>) -> Router {
    let set = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    let router = router
        .layer(set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(set(header::CACHE_CONTROL, "no-store"))
        .layer(set(header::REFERRER_POLICY, "no-referrer"))
        .layer(set(header::X_FRAME_OPTIONS, "DENY"))
        .layer(set(header::CONTENT_SECURITY_POLICY, API_CSP))
        .layer(set(HeaderName::from_static("cross-origin-opener-policy"), "same-origin"));
    match hsts {
        Some(max_age) => {
            router.layer(SetResponseHeaderLayer::if_not_present(header::STRICT_TRANSPORT_SECURITY, hsts_value(max_age)))
        }
        None => router,
    }
}

/// The docs' own policy, set inside [`secure`]'s layers so theirs stays off the page.
pub fn docs<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .layer(SetResponseHeaderLayer::overriding(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DOCS_CSP)))
}

fn hsts_value(max_age: Duration) -> HeaderValue {
    let mut value = String::from("max-age=");
    value.push_str(itoa::Buffer::new().format(max_age.as_secs()));
    value.push_str("; includeSubDomains");
    // Digits and ASCII only: always a valid header value.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("max-age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsts_names_its_max_age_in_seconds_and_covers_subdomains() {
        assert_eq!(hsts_value(Duration::from_secs(31_536_000)), "max-age=31536000; includeSubDomains");
    }
}
