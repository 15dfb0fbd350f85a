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
    response::Response,
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

/// The headers every answer gets, unless the answer has its own.
///
/// One function over the response, in `app`'s one stack of layers: each
/// `Router::layer` boxes every route once more, and axum clones the boxes of a
/// route for every request, so seven header layers of their own cost more than
/// the headers themselves.
#[derive(Debug, Clone, Default)]
pub struct SecurityHeaders {
    /// `Strict-Transport-Security`, when `HSTS_MAX_AGE` is set.
    hsts: Option<HeaderValue>,
}

/// The headers set on every answer that has none of its own.
const EVERY_ANSWER: [(HeaderName, &str); 6] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::CACHE_CONTROL, "no-store"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::CONTENT_SECURITY_POLICY, API_CSP),
    (HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
];

impl SecurityHeaders {
    /// `hsts`, when set, adds `Strict-Transport-Security` with that `max-age`
    /// (behind TLS only: see `HSTS_MAX_AGE` in docs/operations.md).
    pub fn new(hsts: Option<Duration>) -> Self {
        Self { hsts: hsts.map(hsts_value) }
    }

    /// Adds each header the answer does not have yet.
    pub fn apply(&self, mut response: Response) -> Response {
        let headers = response.headers_mut();
        for (name, value) in &EVERY_ANSWER {
            if !headers.contains_key(name) {
                headers.insert(name.clone(), HeaderValue::from_static(value));
            }
        }
        if let Some(hsts) = &self.hsts
            && !headers.contains_key(header::STRICT_TRANSPORT_SECURITY)
        {
            headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
        response
    }
}

/// The docs' own policy, set inside [`SecurityHeaders`] so the API's stays off the page.
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
