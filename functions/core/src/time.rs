//! The one timestamp format the product stores and shows: ISO-8601 UTC to the
//! second (`2026-11-24T10:15:30Z`), the seed's `%Y-%m-%dT%H:%M:%SZ`.

use chrono::{DateTime, TimeZone, Utc};

/// `strftime` pattern of every stored and displayed timestamp.
pub const ISO_SECONDS: &str = "%Y-%m-%dT%H:%M:%SZ";

/// Formats `at` as `2026-11-24T10:15:30Z`.
pub fn format_iso(at: &DateTime<Utc>) -> String {
    at.format(ISO_SECONDS).to_string()
}

/// Parses any RFC 3339 time (with or without fractions or offset) into UTC.
pub fn parse_iso(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

/// Converts the epoch milliseconds API Gateway puts in its events.
pub fn from_epoch_millis(millis: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(millis).single()
}

/// Serde adapter that stores a `DateTime<Utc>` as an [`ISO_SECONDS`] string.
pub mod iso_seconds {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_iso(at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_iso(&text).ok_or_else(|| D::Error::custom(format!("not an ISO-8601 time: {text}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_to_the_second_in_utc() {
        let at = from_epoch_millis(1_795_515_330_123).unwrap();
        assert_eq!(format_iso(&at), "2026-11-24T10:15:30Z");
    }

    #[test]
    fn parses_offsets_into_utc() {
        let at = parse_iso("2026-11-24T12:15:30+02:00").unwrap();
        assert_eq!(format_iso(&at), "2026-11-24T10:15:30Z");
        assert!(parse_iso("yesterday").is_none());
    }
}
