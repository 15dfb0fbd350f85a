//! `Json`: the JSON body extractor and response type of the API.
//!
//! Axum's own `Json` answers malformed bodies in plain text and labels responses
//! `application/json` without a charset. This one keeps the API's error format for
//! every rejection (400 syntax, 415 media type, 413 size, 422 shape) and always says
//! `application/json; charset=utf-8`.

use axum::{
    extract::{FromRequest, Request, rejection::JsonRejection},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::error::Error;

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
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(rejection_to_error(&rejection)),
        }
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

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let mut response = axum::Json(self.0).into_response();
        if response.status().is_success() || response.status().is_client_error() {
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
        }
        response
    }
}
