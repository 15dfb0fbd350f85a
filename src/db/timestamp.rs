//! `timestamptz` as PostgreSQL sends it: a count of microseconds.
//!
//! sqlx's chrono decoding turns those microseconds into a `DateTime<Utc>` through
//! calendar arithmetic, and the API then takes the date apart again to print it:
//! about 500 instructions a timestamp, two per article in a page (callgrind).
//! Kept as the count, a timestamp is read with one addition and printed straight
//! from it (`routes::timestamp`).

use chrono::{DateTime, Utc};
use sqlx::{
    Decode, Postgres,
    error::BoxDynError,
    postgres::{PgTypeInfo, PgValueFormat, PgValueRef},
};

/// An instant to the microsecond, as the database holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    /// Since 1970-01-01T00:00:00Z, within chrono's range.
    unix_micros: i64,
}

/// PostgreSQL counts from 2000-01-01T00:00:00Z.
const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// chrono's range (about 262,000 years either side of year 0), narrower than
/// PostgreSQL's at the top; `infinity` and `-infinity` are outside it too.
const CHRONO_UNIX_MICROS: std::ops::RangeInclusive<i64> =
    DateTime::<Utc>::MIN_UTC.timestamp_micros()..=DateTime::<Utc>::MAX_UTC.timestamp_micros();

impl Timestamp {
    pub fn unix_micros(self) -> i64 {
        self.unix_micros
    }

    /// The same instant as chrono's type.
    pub fn to_chrono(self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.unix_micros).expect("a `Timestamp` is within chrono's range")
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(at: DateTime<Utc>) -> Self {
        Self { unix_micros: at.timestamp_micros() }
    }
}

impl sqlx::Type<Postgres> for Timestamp {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for Timestamp {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        if value.format() == PgValueFormat::Text {
            // Not what sqlx asks for; parsed as chrono does, to be complete.
            return Ok(<DateTime<Utc> as Decode<Postgres>>::decode(value)?.into());
        }
        let micros = i64::from_be_bytes(value.as_bytes()?.try_into()?);
        micros
            .checked_add(POSTGRES_EPOCH_UNIX_MICROS)
            .filter(|unix| CHRONO_UNIX_MICROS.contains(unix))
            .map(|unix_micros| Self { unix_micros })
            .ok_or_else(|| format!("timestamp {micros} µs from 2000 is outside the supported range").into())
    }
}

#[cfg(test)]
mod tests {
    use super::{CHRONO_UNIX_MICROS, Timestamp};

    #[test]
    fn every_timestamp_decode_accepts_is_one_chrono_can_hold() {
        for unix_micros in [*CHRONO_UNIX_MICROS.start(), -1, 0, 1, *CHRONO_UNIX_MICROS.end()] {
            let at = Timestamp { unix_micros };
            assert_eq!(Timestamp::from(at.to_chrono()), at);
        }
    }
}
