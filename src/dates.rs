//! Days as the job counts them: UTC calendar dates as days since 1970-01-01.

use anyhow::{anyhow, Result};
use chrono::{Days, NaiveDate, Utc};

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")
}

/// `YYYY-MM-DD` of a day number.
pub fn day_to_string(day: i32) -> String {
    day_to_date(day).format("%Y-%m-%d").to_string()
}

pub fn day_to_date(day: i32) -> NaiveDate {
    if day >= 0 {
        epoch() + Days::new(day as u64)
    } else {
        epoch() - Days::new(day.unsigned_abs() as u64)
    }
}

/// Parses `YYYY-MM-DD` into a day number.
pub fn parse_day(s: &str) -> Result<i32> {
    let d =
        NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| anyhow!("{s:?} is not a date (expected YYYY-MM-DD)"))?;
    Ok(d.signed_duration_since(epoch()).num_days() as i32)
}

/// Today (UTC) as a day number.
pub fn today() -> i32 {
    Utc::now().date_naive().signed_duration_since(epoch()).num_days() as i32
}

/// Now as epoch milliseconds.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Serde for an optional day as `"YYYY-MM-DD"` (or null).
pub mod opt_day {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<i32>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::day_to_string(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| super::parse_day(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn round_trip() {
        assert_eq!(day_to_string(0), "1970-01-01");
        assert_eq!(parse_day("2000-01-01").unwrap(), 10957);
        assert_eq!(day_to_string(10957), "2000-01-01");
        assert_eq!(day_to_string(47481), "2099-12-31");
        assert!(parse_day("2026-13-01").is_err());
    }
}
