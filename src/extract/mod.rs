//! Request extractors: authentication (with the layer that checks a token once
//! per request), JSON bodies, paths and list parameters, each rejecting bad input
//! in the API's error format.

mod auth;
mod json;
mod list;
mod path;

pub use auth::{AuthUser, AuthenticateLayer, caller_id};
pub use json::{JSON_UTF8, Json};
pub use list::{ArticleFilters, Page};
pub use path::Path;
