//! HTTP handlers, one module per resource: request DTOs in, response DTOs out.
//! The DTOs here are shared by several resources.

pub mod articles;
pub mod auth;
pub mod comments;
pub mod health;
pub mod oidc;
pub mod profiles;
pub mod tags;
pub mod users;

mod json_writer;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::db::profiles::ProfileRow;

/// A user as others see them. `bio` and `image` are `null` when unset.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Profile {
    pub username: String,
    #[schema(required = true)]
    pub bio: Option<String>,
    #[schema(required = true)]
    pub image: Option<String>,
    pub following: bool,
}

impl Profile {
    fn write_json(&self, out: &mut json_writer::JsonWriter) {
        let Self { username, bio, image, following } = self;
        ProfileRef { username, bio: bio.as_deref(), image: image.as_deref(), following: *following }.write_json(out);
    }
}

/// A [`Profile`] borrowed from the row it was read from.
#[derive(Debug, Serialize)]
pub struct ProfileRef<'a> {
    pub username: &'a str,
    pub bio: Option<&'a str>,
    pub image: Option<&'a str>,
    pub following: bool,
}

impl ProfileRef<'_> {
    fn write_json(&self, out: &mut json_writer::JsonWriter) {
        out.object(|o| {
            o.key("username").string(self.username);
            o.key("bio").optional_string(self.bio);
            o.key("image").optional_string(self.image);
            o.key("following").bool(self.following);
        });
    }
}

impl From<ProfileRow> for Profile {
    fn from(row: ProfileRow) -> Self {
        Self {
            username: row.username,
            bio: unset_if_empty(row.bio),
            image: unset_if_empty(row.image),
            following: row.following,
        }
    }
}

/// An unset `bio` or `image` (owned or borrowed): stored as `""` (the columns are
/// `NOT NULL`, so "unset" has one spelling in the database), answered as `null`,
/// as RealWorld 2.0 says.
pub fn unset_if_empty<T: AsRef<str>>(text: T) -> Option<T> {
    (!text.as_ref().is_empty()).then_some(text)
}

/// RFC 3339 in UTC with exactly three fractional digits, e.g.
/// `2026-11-27T16:17:39.120Z`: a fixed width that clients can parse and sort.
pub fn timestamp<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    with_timestamp_text(*at, |text| {
        serializer.serialize_str(std::str::from_utf8(text).map_err(serde::ser::Error::custom)?)
    })
}

/// Hands [`timestamp`]'s text to `write`: the fixed-width fast path where it
/// applies, chrono's formatter otherwise (the years it leaves out).
fn with_timestamp_text<R>(at: DateTime<Utc>, write: impl FnOnce(&[u8]) -> R) -> R {
    match rfc3339_millis(at) {
        Some(text) => write(&text),
        None => write(at.to_rfc3339_opts(SecondsFormat::Millis, true).as_bytes()),
    }
}

/// The text of [`timestamp`] in a fixed buffer, for 0000-03-01 to 9999-12-31
/// (anything else is `None`), straight from the count of microseconds: a page
/// writes two per article, and chrono would take the date apart field by field.
/// The civil date is Howard Hinnant's `civil_from_days`, on days counted from
/// 0000-03-01 so that every quantity is unsigned and a year ends with February.
fn rfc3339_millis(at: DateTime<Utc>) -> Option<[u8; 24]> {
    /// 0000-03-01T00:00:00Z, in microseconds before 1970.
    const FROM_MARCH_0000: i64 = 719_468 * 86_400 * 1_000_000;
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819202122232425262728293031323334353637383940414243444546474849\
                                5051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";
    let micros = u64::try_from(at.timestamp_micros().checked_add(FROM_MARCH_0000)?).ok()?;
    let (seconds, millis) = (micros / 1_000_000, micros % 1_000_000 / 1000);
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    // Eras of 400 years, 146,097 days each.
    let (era, day_of_era) = (days / 146_097, days % 146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = Some(era * 400 + year_of_era + u64::from(month <= 2)).filter(|year| *year <= 9999)?;

    let mut text = *b"0000-00-00T00:00:00.000Z";
    let pairs = [
        (0, year / 100),
        (2, year % 100),
        (5, month),
        (8, day),
        (11, second_of_day / 3600),
        (14, second_of_day / 60 % 60),
        (17, second_of_day % 60),
        (21, millis % 100),
    ];
    for (at, pair) in pairs {
        let pair = usize::try_from(pair).ok()? * 2;
        text[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    text[20] = b'0' + u8::try_from(millis / 100).ok()?;
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
    fn the_fixed_width_timestamp_writer_agrees_with_chrono_from_march_of_year_0_to_9999() {
        let chrono_text = |at: &chrono::DateTime<chrono::Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let first = chrono::Utc.with_ymd_and_hms(0, 3, 1, 0, 0, 0).single().expect("valid date").timestamp();
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
            let text = super::rfc3339_millis(at).expect("from 0000-03-01 to 9999-12-31");
            assert_eq!(std::str::from_utf8(&text).expect("ASCII"), chrono_text(&at), "at {secs} s {nanos} ns");
        }
    }

    #[test]
    fn dates_before_march_of_year_0_or_after_9999_are_left_to_chrono() {
        let far = chrono::Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).single().expect("valid date");
        assert_eq!(super::rfc3339_millis(far), None);
        let before_zero = chrono::Utc.with_ymd_and_hms(-1, 12, 31, 23, 59, 59).single().expect("valid date");
        assert_eq!(super::rfc3339_millis(before_zero), None);
        let leap_day_0 = chrono::Utc.with_ymd_and_hms(0, 2, 29, 23, 59, 59).single().expect("valid date");
        assert_eq!(super::rfc3339_millis(leap_day_0), None);
        assert_eq!(serde_json::to_value(T(leap_day_0)).expect("serialises"), "0000-02-29T23:59:59.000Z");
        assert_eq!(serde_json::to_value(T(far)).expect("serialises"), "+10000-01-01T00:00:00.000Z");
        assert_eq!(serde_json::to_value(T(before_zero)).expect("serialises"), "-0001-12-31T23:59:59.000Z");
    }
}
