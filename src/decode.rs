//! Decode and validate one record value against the input contract (events.md).
//!
//! The value is parsed once, straight into borrowed fields (no `serde_json::Value`
//! tree), with duplicate keys detected at every nesting level. The first rule that
//! fails gives the reject reason, in the contract's order:
//! `too_large`, `invalid_json`, then field 1..11: `missing_field:`, `wrong_type:`,
//! `out_of_range:`. Never panics, whatever the bytes.

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// Values longer than this are rejected as `too_large` without parsing.
pub const MAX_VALUE_BYTES: usize = 65536;
/// Smallest valid `ts` (2000-01-01T00:00:00Z).
pub const TS_MIN: i64 = 946_684_800_000;
/// First invalid `ts` (2100-01-01T00:00:00Z).
pub const TS_END: i64 = 4_102_444_800_000;
pub const MS_PER_DAY: i64 = 86_400_000;
const MAX_STR: usize = 64;

/// The contract's fields, in contract order.
pub const FIELDS: [&str; 11] = [
    "event_id",
    "event_type",
    "user_id",
    "track_id",
    "artist_id",
    "ts",
    "ms_played",
    "track_duration_ms",
    "context",
    "device",
    "country",
];

/// Why a record was rejected. `Display` gives the exact reason string of events.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Reject {
    TooLarge,
    InvalidJson,
    MissingField(u8),
    WrongType(u8),
    OutOfRange(u8),
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reject::TooLarge => f.write_str("too_large"),
            Reject::InvalidJson => f.write_str("invalid_json"),
            Reject::MissingField(i) => write!(f, "missing_field:{}", FIELDS[*i as usize]),
            Reject::WrongType(i) => write!(f, "wrong_type:{}", FIELDS[*i as usize]),
            Reject::OutOfRange(i) => write!(f, "out_of_range:{}", FIELDS[*i as usize]),
        }
    }
}

impl Reject {
    /// Parses a reason string written by `Display`.
    pub fn parse(s: &str) -> Option<Reject> {
        match s {
            "too_large" => return Some(Reject::TooLarge),
            "invalid_json" => return Some(Reject::InvalidJson),
            _ => {}
        }
        let (kind, field) = s.split_once(':')?;
        let i = FIELDS.iter().position(|f| *f == field)? as u8;
        match kind {
            "missing_field" => Some(Reject::MissingField(i)),
            "wrong_type" => Some(Reject::WrongType(i)),
            "out_of_range" => Some(Reject::OutOfRange(i)),
            _ => None,
        }
    }
}

/// A valid event, borrowing from the input bytes where it can.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    pub event_id: Cow<'a, str>,
    pub skip: bool,
    pub user_id: Cow<'a, str>,
    pub track_id: Cow<'a, str>,
    pub artist_id: Cow<'a, str>,
    pub ts: i64,
    pub ms_played: i64,
    pub track_duration_ms: i64,
    pub context: Option<Cow<'a, str>>,
    pub device: Option<Cow<'a, str>>,
    pub country: Option<Cow<'a, str>>,
}

impl Event<'_> {
    /// UTC day of `ts`, as days since 1970-01-01.
    pub fn day(&self) -> i32 {
        day_of(self.ts)
    }
}

/// UTC day (days since 1970-01-01) of an epoch-millisecond instant.
pub fn day_of(ts: i64) -> i32 {
    ts.div_euclid(MS_PER_DAY) as i32
}

/// One field's JSON value as far as the contract cares.
#[derive(Debug, Default)]
enum Slot<'a> {
    #[default]
    Absent,
    Str(Cow<'a, str>),
    Int(i64),
    /// Present with a type no field accepts (bool, float, huge integer, array, object).
    Other,
}

/// Parses and validates `value`.
pub fn decode(value: &[u8]) -> Result<Event<'_>, Reject> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Reject::TooLarge);
    }
    // One UTF-8 check of the whole value (word at a time), then a parser
    // that trusts it: checking each string and key on its own costs more.
    let Ok(text) = std::str::from_utf8(value) else {
        return Err(Reject::InvalidJson);
    };
    let mut slots: [Slot<'_>; 11] = Default::default();
    {
        let mut de = serde_json::Deserializer::from_str(text);
        if (TopLevel { slots: &mut slots }).deserialize(&mut de).is_err() || de.end().is_err() {
            return Err(Reject::InvalidJson);
        }
    }
    validate(slots)
}

fn validate(slots: [Slot<'_>; 11]) -> Result<Event<'_>, Reject> {
    let [event_id, event_type, user_id, track_id, artist_id, ts, ms_played, duration, context, device, country] = slots;
    let event_id = req_str(event_id, 0)?;
    let skip = match req_str(event_type, 1)? {
        s if s == "play" => false,
        s if s == "skip" => true,
        _ => return Err(Reject::OutOfRange(1)),
    };
    let user_id = req_str(user_id, 2)?;
    let track_id = req_str(track_id, 3)?;
    let artist_id = req_str(artist_id, 4)?;
    let ts = req_int(ts, 5, TS_MIN, TS_END - 1)?;
    let ms_played = req_int(ms_played, 6, 0, MS_PER_DAY)?;
    let track_duration_ms = req_int(duration, 7, 1, MS_PER_DAY)?;
    let context = opt_str(context, 8)?;
    let device = opt_str(device, 9)?;
    let country = opt_str(country, 10)?;
    Ok(Event {
        event_id,
        skip,
        user_id,
        track_id,
        artist_id,
        ts,
        ms_played,
        track_duration_ms,
        context,
        device,
        country,
    })
}

fn str_in_range<'a>(s: Cow<'a, str>, i: u8) -> Result<Cow<'a, str>, Reject> {
    if s.is_empty() || s.len() > MAX_STR {
        Err(Reject::OutOfRange(i))
    } else {
        Ok(s)
    }
}

fn req_str(slot: Slot<'_>, i: u8) -> Result<Cow<'_, str>, Reject> {
    match slot {
        Slot::Absent => Err(Reject::MissingField(i)),
        Slot::Str(s) => str_in_range(s, i),
        _ => Err(Reject::WrongType(i)),
    }
}

fn opt_str(slot: Slot<'_>, i: u8) -> Result<Option<Cow<'_, str>>, Reject> {
    match slot {
        Slot::Absent => Ok(None),
        Slot::Str(s) => str_in_range(s, i).map(Some),
        _ => Err(Reject::WrongType(i)),
    }
}

fn req_int(slot: Slot<'_>, i: u8, lo: i64, hi: i64) -> Result<i64, Reject> {
    match slot {
        Slot::Absent => Err(Reject::MissingField(i)),
        Slot::Int(v) if (lo..=hi).contains(&v) => Ok(v),
        Slot::Int(_) => Err(Reject::OutOfRange(i)),
        _ => Err(Reject::WrongType(i)),
    }
}

/// The top-level object: fills the slots of known fields, checks every other
/// value for duplicated keys, rejects duplicated keys at this level.
struct TopLevel<'s, 'a> {
    slots: &'s mut [Slot<'a>; 11],
}

impl<'de, 's> DeserializeSeed<'de> for TopLevel<'s, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 's> Visitor<'de> for TopLevel<'s, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        let mut seen: u16 = 0;
        let mut others: Vec<Key<'de>> = Vec::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match FIELDS.iter().position(|f| *f == key.0) {
                Some(i) => {
                    if seen & (1 << i) != 0 {
                        return Err(de::Error::custom("duplicated key"));
                    }
                    seen |= 1 << i;
                    self.slots[i] = if (5..=7).contains(&i) {
                        int_slot(map.next_value::<&'de RawValue>()?.get())?
                    } else {
                        map.next_value_seed(SlotSeed)?
                    };
                }
                None => {
                    if others.contains(&key) {
                        return Err(de::Error::custom("duplicated key"));
                    }
                    others.push(key);
                    map.next_value_seed(Checked)?;
                }
            }
        }
        Ok(())
    }
}

/// Reads an integer field from its raw JSON text, so that exactly the
/// literals without fraction or exponent that fit in i64 are integers (`-0`
/// is 0; `1e400` or `1e3` is a number of the wrong type, not invalid JSON).
fn int_slot<'a, E: de::Error>(raw: &str) -> Result<Slot<'a>, E> {
    let b = raw.as_bytes();
    match b.first() {
        Some(b'n') => Ok(Slot::Absent),
        Some(b'-' | b'0'..=b'9') => {
            if b.iter().any(|c| matches!(c, b'.' | b'e' | b'E')) {
                Ok(Slot::Other)
            } else {
                Ok(raw.parse::<i64>().map(Slot::Int).unwrap_or(Slot::Other))
            }
        }
        Some(b'{' | b'[') => {
            // Still reject duplicated keys inside.
            let mut de = serde_json::Deserializer::from_str(raw);
            Checked.deserialize(&mut de).map_err(|_| E::custom("duplicated key"))?;
            Ok(Slot::Other)
        }
        _ => Ok(Slot::Other),
    }
}

/// Reads one field value into a `Slot`.
struct SlotSeed;

impl<'de> DeserializeSeed<'de> for SlotSeed {
    type Value = Slot<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Slot<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SlotSeed {
    type Value = Slot<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Slot<'de>, E> {
        Ok(Slot::Absent)
    }
    fn visit_none<E>(self) -> Result<Slot<'de>, E> {
        Ok(Slot::Absent)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Slot<'de>, E> {
        Ok(Slot::Other)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Slot<'de>, E> {
        Ok(Slot::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Slot<'de>, E> {
        Ok(i64::try_from(v).map(Slot::Int).unwrap_or(Slot::Other))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Slot<'de>, E> {
        Ok(Slot::Other)
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Slot<'de>, E> {
        Ok(Slot::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Slot<'de>, E> {
        Ok(Slot::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Slot<'de>, E> {
        Ok(Slot::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Slot<'de>, A::Error> {
        Checked.visit_seq(seq)?;
        Ok(Slot::Other)
    }
    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Slot<'de>, M::Error> {
        Checked.visit_map(map)?;
        Ok(Slot::Other)
    }
}

/// An object key, borrowed from the input unless it holds escapes (serde's
/// own `Cow<str>` always copies: an allocation per key of every record).
#[derive(PartialEq)]
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key<'de>, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }
}

/// Skips any JSON value, failing on a duplicated key in any nested object.
/// Nesting depth is bounded by serde_json's recursion limit (128).
struct Checked;

impl<'de> DeserializeSeed<'de> for Checked {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Checked)?.is_some() {}
        Ok(())
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        let mut keys: Vec<Key<'de>> = Vec::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if keys.contains(&key) {
                return Err(de::Error::custom("duplicated key"));
            }
            keys.push(key);
            map.next_value_seed(Checked)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Map<String, serde_json::Value> {
        let v = serde_json::json!({
            "event_id": "e1", "event_type": "play", "user_id": "u1", "track_id": "t1",
            "artist_id": "a1", "ts": 1_700_000_000_000i64, "ms_played": 1000,
            "track_duration_ms": 2000
        });
        v.as_object().unwrap().clone()
    }

    fn reason(bytes: &[u8]) -> String {
        match decode(bytes) {
            Ok(_) => "ok".into(),
            Err(r) => r.to_string(),
        }
    }

    /// The reason for `base()` without `field` and with the raw bytes
    /// `tail` as its last members.
    fn ending(field: &str, tail: &[u8]) -> String {
        let mut m = base();
        m.remove(field);
        let mut v = serde_json::to_vec(&m).unwrap();
        v.pop();
        v.extend_from_slice(tail);
        v.push(b'}');
        reason(&v)
    }

    fn with(field: &str, raw: &str) -> String {
        ending(field, format!(",\"{field}\":{raw}").as_bytes())
    }

    #[test]
    fn valid_event_decodes() {
        let s = serde_json::to_vec(&base()).unwrap();
        let e = decode(&s).unwrap();
        assert_eq!(e.event_id, "e1");
        assert!(!e.skip);
        assert_eq!(e.ts, 1_700_000_000_000);
        assert_eq!(e.context, None);
    }

    #[test]
    fn reasons_in_order() {
        assert_eq!(reason(br#"{"event_id": "", "ts": "x"}"#), "out_of_range:event_id");
        assert_eq!(reason(b"{}"), "missing_field:event_id");
        assert_eq!(reason(b""), "invalid_json");
        assert_eq!(reason(b"[1]"), "invalid_json");
        assert_eq!(reason(b"\"x\""), "invalid_json");
        assert_eq!(reason(b"{\"a\":1} x"), "invalid_json");
        assert_eq!(reason(b"{\"a\":1,\"a\":2}"), "invalid_json");
        assert_eq!(reason(b"{\"x\":{\"a\":1,\"a\":2}}"), "invalid_json");
        assert_eq!(reason(b"{\"event_id\":\"\xff\"}"), "invalid_json");
        assert_eq!(reason(&vec![b' '; 65537]), "too_large");
    }

    /// The whole value is checked for UTF-8 once: invalid bytes in a key or
    /// in an ignored field's value make it `invalid_json` too. A key with
    /// escapes (copied, not borrowed) still names its field, and still
    /// counts as a duplicate of the same key written plainly.
    #[test]
    fn utf8_and_escaped_keys() {
        let extra = |tail: &[u8]| ending("", tail);
        assert_eq!(extra(b",\"x\":\"\xff\""), "invalid_json");
        assert_eq!(extra(b",\"x\":{\"y\":[\"\xfe\"]}"), "invalid_json");
        assert_eq!(extra(b",\"\xff\":1"), "invalid_json");
        assert_eq!(extra(b",\"event\\u005fid\":\"e2\""), "invalid_json");
        assert_eq!(extra(b",\"\\u0078\":1,\"x\":2"), "invalid_json");
        assert_eq!(extra(b",\"\\u0078\":1"), "ok");
        assert_eq!(ending("user_id", b",\"user\\u005fid\":\"u1\""), "ok");
    }

    #[test]
    fn integers() {
        assert_eq!(with("ts", "\"1700000000000\""), "wrong_type:ts");
        assert_eq!(with("ts", "1700000000000.0"), "wrong_type:ts");
        assert_eq!(with("ts", "1.7e12"), "wrong_type:ts");
        assert_eq!(with("ts", "946684800000"), "ok");
        assert_eq!(with("ts", "946684799999"), "out_of_range:ts");
        assert_eq!(with("ts", "4102444799999"), "ok");
        assert_eq!(with("ts", "4102444800000"), "out_of_range:ts");
        assert_eq!(with("ts", "9223372036854775808"), "wrong_type:ts");
        assert_eq!(with("ts", "1e400"), "wrong_type:ts");
        assert_eq!(with("ts", "{\"a\":1,\"a\":1}"), "invalid_json");
        assert_eq!(with("ts", "[1,{}]"), "wrong_type:ts");
        assert_eq!(with("ts", "null"), "missing_field:ts");
        assert_eq!(with("ms_played", "-1"), "out_of_range:ms_played");
        assert_eq!(with("ms_played", "-0"), "ok");
        assert_eq!(with("ms_played", "86400001"), "out_of_range:ms_played");
        assert_eq!(with("track_duration_ms", "0"), "out_of_range:track_duration_ms");
        assert_eq!(with("track_duration_ms", "true"), "wrong_type:track_duration_ms");
    }

    #[test]
    fn strings() {
        let s64 = format!("\"{}\"", "x".repeat(64));
        let s65 = format!("\"{}\"", "x".repeat(65));
        assert_eq!(with("user_id", &s64), "ok");
        assert_eq!(with("user_id", &s65), "out_of_range:user_id");
        // 22 x 3-byte chars = 66 bytes.
        assert_eq!(
            with("user_id", &format!("\"{}\"", "日".repeat(22))),
            "out_of_range:user_id"
        );
        assert_eq!(with("user_id", &format!("\"{}\"", "日".repeat(21))), "ok");
        assert_eq!(with("user_id", "5"), "wrong_type:user_id");
        assert_eq!(with("event_type", "\"pause\""), "out_of_range:event_type");
        assert_eq!(with("context", "null"), "ok");
        assert_eq!(with("context", "\"\""), "out_of_range:context");
        assert_eq!(with("context", "7"), "wrong_type:context");
        assert_eq!(with("country", "[]"), "wrong_type:country");
        assert_eq!(with("extra", "{\"a\":[1,{\"b\":2}]}"), "ok");
        // escapes decode before length checks and comparisons
        assert_eq!(with("user_id", "\"\\u0075\""), "ok");
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn never_panics_on_json_like_text(s in r#"[{}\[\]":,0-9a-z_. eE+\-\\ntrufals]{0,120}"#) {
            let _ = decode(s.as_bytes());
        }

        #[test]
        fn a_valid_event_with_any_extra_field_stays_valid(key in "[a-z]{1,8}", v in "[a-z0-9]{0,10}") {
            let mut m = base();
            if crate::decode::FIELDS.contains(&key.as_str()) { return Ok(()); }
            m.insert(key, serde_json::Value::String(v));
            proptest::prop_assert!(decode(&serde_json::to_vec(&m).unwrap()).is_ok());
        }
    }

    #[test]
    fn never_panics_on_prefixes() {
        let s = serde_json::to_vec(&base()).unwrap();
        for i in 0..s.len() {
            let _ = decode(&s[..i]);
        }
    }
}
