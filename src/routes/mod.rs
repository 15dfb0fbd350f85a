//! HTTP handlers, one module per resource: request DTOs in, response DTOs out.
//! The DTOs here are shared by several resources.

pub mod articles;
pub mod comments;
pub mod health;
pub mod profiles;
pub mod tags;
pub mod users;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use sqlx::PgPool;

use crate::{
    db::{self, profiles::ProfileRow},
    error::{Error, Result},
    extract::AuthUser,
};

/// 401 when the caller's account is gone: for writes that no foreign key guards
/// (removing a follow, a favorite, an article or a comment).
pub async fn ensure_caller_exists(db: &PgPool, user: &AuthUser) -> Result<()> {
    if db::users::exists(db, user.id).await? { Ok(()) } else { Err(Error::Unauthorized) }
}

/// A user as others see them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Profile {
    pub username: String,
    pub bio: String,
    pub image: String,
    pub following: bool,
}

impl From<ProfileRow> for Profile {
    fn from(row: ProfileRow) -> Self {
        Self { username: row.username, bio: row.bio, image: row.image, following: row.following }
    }
}

/// RFC 3339 in UTC with exactly three fractional digits, e.g.
/// `2026-11-27T16:17:39.120Z`: a fixed width that clients can parse and sort.
pub fn timestamp<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// For optional fields that may not be `null`: absent is `None`, and `null` is
/// rejected (a 422) instead of being read as "absent", as the document says.
pub fn non_null<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// For optional fields that may be cleared: absent is `None`, `null` is `Some(None)`.
pub fn nullable<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    #[test]
    fn timestamps_always_carry_three_fractional_digits_in_utc() {
        let at = chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("valid date");
        #[derive(serde::Serialize)]
        struct T(#[serde(serialize_with = "super::timestamp")] chrono::DateTime<chrono::Utc>);
        assert_eq!(serde_json::to_value(T(at)).expect("serialises"), "2026-01-02T03:04:05.000Z");
    }
}
