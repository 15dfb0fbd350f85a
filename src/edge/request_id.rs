//! The request's id (`X-Request-Id`): a client's own id is kept only when it is
//! short and plain, since it is echoed in the response and written to every log
//! line of the request. Anything else is dropped, and a new id is made for the
//! request (`SetRequestIdLayer` in `app`).

use axum::http::{HeaderValue, Request};

use crate::app::X_REQUEST_ID;

/// The longest id kept: a UUID is 36 characters; a trace id 32.
pub const MAX_LEN: usize = 64;

/// Letters, digits and `-`, `_`, `.`, `:`, `/`, `+`, `=`: ids of the usual
/// generators (UUIDs, ULIDs, trace ids, base64) pass, and nothing that could
/// break a log line or a header.
pub fn is_usable(id: &HeaderValue) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'='))
}

/// Drops every `X-Request-Id` of the request unless there is exactly one, and it is usable.
pub fn drop_unusable<B>(mut request: Request<B>) -> Request<B> {
    let mut ids = request.headers().get_all(X_REQUEST_ID).iter();
    let keep = matches!((ids.next(), ids.next()), (Some(id), None) if is_usable(id));
    if !keep {
        request.headers_mut().remove(X_REQUEST_ID);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_plain_ids_are_kept_and_long_or_odd_ones_are_not() {
        for kept in ["0c7d2f5e-8c0e-4d6b-9b1f-2f0d7f3f5a11", "01HZX3Y8Q4V3M2K9", "abc/def+ghi=", "a"] {
            assert!(is_usable(&HeaderValue::from_static(kept)), "{kept}");
        }
        let long = "a".repeat(MAX_LEN + 1);
        for dropped in ["", "has space", "semi;colon", "quote\"", "tab\there", long.as_str()] {
            let value = HeaderValue::from_bytes(dropped.as_bytes()).expect("header value");
            assert!(!is_usable(&value), "{dropped}");
        }
        assert!(!is_usable(&HeaderValue::from_bytes(b"caf\xc3\xa9").expect("header value")));
    }

    #[test]
    fn two_ids_are_both_dropped() {
        let request =
            Request::builder().header(X_REQUEST_ID, "one").header(X_REQUEST_ID, "two").body(()).expect("request");
        assert!(drop_unusable(request).headers().get(X_REQUEST_ID).is_none());
    }
}
