//! `Path`: axum's path extractor with rejections in the API's error format.

use axum::extract::{FromRequestParts, rejection::PathRejection};

use crate::error::Error;

#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Error))]
pub struct Path<T>(pub T);

impl From<PathRejection> for Error {
    fn from(rejection: PathRejection) -> Self {
        Error::request(rejection.status(), rejection.body_text())
    }
}
