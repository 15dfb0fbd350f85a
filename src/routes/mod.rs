//! HTTP handlers, one module per resource: request DTOs in, response DTOs out.
//! The DTOs here are shared by several resources.

pub mod articles;
pub mod comments;
pub mod health;
pub mod profiles;
pub mod tags;
pub mod users;

mod json_writer;

use chrono::{DateTime, Datelike as _, SecondsFormat, Timelike as _, Utc};
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

impl Profile {
    fn write_json(&self, out: &mut json_writer::JsonWriter) {
        out.object(|o| {
            o.key("username").string(&self.username);
            o.key("bio").string(&self.bio);
            o.key("image").string(&self.image);
            o.key("following").bool(self.following);
        });
    }
}

impl From<ProfileRow> for Profile {
    fn from(row: ProfileRow) -> Self {
        Self { username: row.username, bio: row.bio, image: row.image, following: row.following }
    }
}

/// RFC 3339 in UTC with exactly three fractional digits, e.g.
/// `2026-11-27T16:17:39.120Z`: a fixed width that clients can parse and sort.
pub fn timestamp<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    match rfc3339_millis(at) {
        Some(text) => serializer.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?),
        None => serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true)),
    }
}

/// The text of [`timestamp`] in a fixed buffer, for years 0 to 9999 and no leap
/// second (anything else is `None`): a list writes two per article, and chrono's
/// general formatter builds a `String` for each through `fmt`.
fn rfc3339_millis(at: &DateTime<Utc>) -> Option<[u8; 24]> {
    let year = u32::try_from(at.year()).ok().filter(|year| *year <= 9999)?;
    let nanos = Some(at.nanosecond()).filter(|nanos| *nanos < 1_000_000_000)?;
    let mut text = *b"0000-00-00T00:00:00.000Z";
    let fields = [
        (0..4, year),
        (5..7, at.month()),
        (8..10, at.day()),
        (11..13, at.hour()),
        (14..16, at.minute()),
        (17..19, at.second()),
        (20..23, nanos / 1_000_000),
    ];
    for (digits, mut value) in fields {
        for digit in text[digits].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    Some(text)
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

    /// A timestamp as the API serialises it.
    #[derive(serde::Serialize)]
    struct T(#[serde(serialize_with = "super::timestamp")] chrono::DateTime<chrono::Utc>);

    #[test]
    fn timestamps_always_carry_three_fractional_digits_in_utc() {
        let at = chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("valid date");
        assert_eq!(serde_json::to_value(T(at)).expect("serialises"), "2026-01-02T03:04:05.000Z");
    }

    #[test]
    fn the_fixed_width_timestamp_writer_agrees_with_chrono_from_year_0_to_9999() {
        let chrono_text = |at: &chrono::DateTime<chrono::Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let first = chrono::Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).single().expect("valid date").timestamp();
        let last = chrono::Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).single().expect("valid date").timestamp();
        // A fixed LCG walk over the whole range, with every kind of sub-second part.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut samples = vec![(first, 0), (last, 999_999_999), (0, 0), (951_782_400, 1_000_000)]; // 2000-02-29
        for _ in 0..100_000 {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let span = u64::try_from(last - first).expect("positive span");
            let secs = first + i64::try_from((state >> 11) % span).expect("in range");
            samples.push((secs, u32::try_from((state >> 3) % 1_000_000_000).expect("in range")));
        }
        for (secs, nanos) in samples {
            let at = chrono::DateTime::from_timestamp(secs, nanos).expect("in chrono's range");
            let text = super::rfc3339_millis(&at).expect("a year from 0 to 9999");
            assert_eq!(std::str::from_utf8(&text).expect("ASCII"), chrono_text(&at), "at {secs} s {nanos} ns");
        }
    }

    #[test]
    fn years_past_9999_and_leap_seconds_are_left_to_chrono() {
        let far = chrono::Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).single().expect("valid date");
        assert_eq!(super::rfc3339_millis(&far), None);
        let before_zero = chrono::Utc.with_ymd_and_hms(-1, 12, 31, 0, 0, 0).single().expect("valid date");
        assert_eq!(super::rfc3339_millis(&before_zero), None);
        let leap = chrono::DateTime::from_timestamp(1_483_228_799, 1_500_000_000).expect("a leap second");
        assert_eq!(super::rfc3339_millis(&leap), None);
        assert_eq!(serde_json::to_value(T(far)).expect("serialises"), "+10000-01-01T00:00:00.000Z");
    }
}
