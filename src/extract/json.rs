//! `Json`: the JSON body extractor and response type of the API.
//!
//! Axum's own `Json` answers malformed bodies in plain text and labels responses
//! `application/json` without a charset. This one keeps the API's error format for
//! every rejection (400 syntax, 415 media type, 413 size, 422 shape) and always says
//! `application/json; charset=utf-8`.

use axum::{
    body::Body,
    extract::{FromRequest, Request, rejection::JsonRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::error::{Error, ValidationErrors};

pub const JSON_UTF8: &str = "application/json; charset=utf-8";

#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<serde_json::Value>::from_request(req, state)
            .await
            .map_err(|rejection| rejection_to_error(&rejection))?;
        // serde would also read a struct from an array of its fields. Every body of
        // this API is an object wrapping an object (`{"user": {...}}`), so arrays
        // there are refused before serde sees them.
        let Some(members) = value.as_object() else {
            return Err(Error::request(StatusCode::UNPROCESSABLE_ENTITY, "the request body must be a JSON object"));
        };
        if let Some((key, _)) = members.iter().find(|(_, member)| member.is_array()) {
            return Err(Error::Validation(ValidationErrors::single(key, "must be a JSON object")));
        }
        serde_path_to_error::deserialize(value).map(Self).map_err(|err| {
            // Name the field at fault, as validation errors do: `{"email": [...]}`.
            let field = err.path().iter().rev().find_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                _ => None,
            });
            let message = err.inner().to_string();
            let field = field.filter(|f| !f.is_empty()).unwrap_or_else(|| "body".to_owned());
            Error::Validation(ValidationErrors::single(&field, message))
        })
    }
}

fn rejection_to_error(rejection: &JsonRejection) -> Error {
    let message = match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "expected a request with `Content-Type: application/json`".to_owned()
        }
        other => other.body_text(),
    };
    Error::request(rejection.status(), message)
}

/// The capacity a response body starts with. axum's `Json` starts at 128 bytes
/// and copies the body at each doubling: six times for a page of 20 articles
/// (about 8 kB), against once from here.
const BODY_START_BYTES: usize = 4096;

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let mut body = Vec::with_capacity(BODY_START_BYTES);
        match serde_json::to_writer(&mut body, &self.0) {
            Ok(()) => {
                let mut response = Response::new(Body::from(body));
                response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
                response
            }
            Err(err) => Error::Internal(anyhow::Error::new(err).context("serialising a response")).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::{
        http::{StatusCode, header},
        response::IntoResponse as _,
    };
    use http_body_util::BodyExt as _;

    use super::{JSON_UTF8, Json};

    struct Unserialisable;

    impl serde::Serialize for Unserialisable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("cannot"))
        }
    }

    async fn parts(response: axum::response::Response) -> (StatusCode, String, String) {
        let status = response.status();
        let kind = response.headers()[header::CONTENT_TYPE].to_str().expect("ASCII").to_owned();
        let body = response.into_body().collect().await.expect("a body").to_bytes();
        (status, kind, String::from_utf8(body.to_vec()).expect("UTF-8"))
    }

    #[tokio::test]
    async fn a_response_is_json_with_a_charset() {
        let (status, kind, body) = parts(Json(serde_json::json!({"a": [1, "é"]})).into_response()).await;
        assert_eq!((status, kind.as_str(), body.as_str()), (StatusCode::OK, JSON_UTF8, r#"{"a":[1,"é"]}"#));
    }

    #[tokio::test]
    async fn a_body_that_fails_to_serialise_is_a_500_in_the_error_format() {
        let (status, kind, body) = parts(Json(Unserialisable).into_response()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(kind, JSON_UTF8);
        assert_eq!(body, r#"{"errors":{"server":["internal error, please try again later"]}}"#);
    }
}
