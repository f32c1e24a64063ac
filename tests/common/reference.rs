#![allow(
    clippy::explicit_counter_loop,
    clippy::field_reassign_with_default,
    clippy::type_complexity
)]
#![allow(dead_code)]
//! Test-side reference implementation of the skipflow batch job.
//!
//! Written from /work/shared/spec only (events.md, tables.md, semantics.md),
//! independently of src/. Deliberately simple: Vecs, BTreeMaps and loops.
//!
//! Output rows are in the "canonical row form": one `serde_json::Value::Array`
//! per row, columns in the spec's order (see the module-level notes on
//! `reference`).

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

pub const MS_PER_DAY: i64 = 86_400_000;
pub const MS_PER_HOUR: i64 = 3_600_000;
pub const SESSION_GAP_MS: i64 = 1_800_000;
pub const EARLY_SKIP_MS: i64 = 30_000;
pub const MAX_VALUE_BYTES: usize = 65_536;
pub const TS_MIN: i64 = 946_684_800_000; // 2000-01-01T00:00:00Z, inclusive
pub const TS_MAX: i64 = 4_102_444_800_000; // 2100-01-01T00:00:00Z, exclusive
pub const PROFILE_WINDOW_DAYS: i64 = 28;
pub const TOP_N: usize = 10;

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefRecord {
    /// topic name or file path as given
    pub source: String,
    /// Kafka partition; 0 for files
    pub partition: i32,
    /// Kafka offset; line number (from 1) for files
    pub offset: i64,
    /// Kafka message timestamp (ms); None for files
    pub message_ts: Option<i64>,
    /// None = Kafka message with null value
    pub value: Option<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefConfig {
    /// [FROM, TO] as days since 1970-01-01; None = [first, last] day of kept events
    pub range: Option<(i32, i32)>,
    /// day the run started (rejected records without message_ts go there)
    pub run_day: i32,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RefOutput {
    /// table name -> partition value "YYYY-MM-DD" -> rows in the spec's order (sorted by the table key).
    pub tables: BTreeMap<String, BTreeMap<String, Vec<Value>>>,
    pub read: u64,
    pub kept: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub out_of_range: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
}

/// File helper: NDJSON bytes of one file -> records.
///
/// Split on '\n'; line numbers count physical lines from 1; blank lines (empty
/// or only spaces, tabs and '\r') are not records (skipped, not counted, but
/// they still advance the line number). A CRLF line ending is a line ending:
/// one trailing '\r' is not part of the value.
pub fn records_from_ndjson(path: &str, bytes: &[u8]) -> Vec<RefRecord> {
    let mut out = Vec::new();
    let mut line_no: i64 = 0;
    for line in bytes.split(|b| *b == b'\n') {
        line_no += 1;
        let blank = line.iter().all(|b| *b == b' ' || *b == b'\t' || *b == b'\r');
        if blank {
            continue;
        }
        out.push(RefRecord {
            source: path.to_string(),
            partition: 0,
            offset: line_no,
            message_ts: None,
            value: Some(line.strip_suffix(b"\r").unwrap_or(line).to_vec()),
        });
    }
    out
}

// ---------------------------------------------------------------------------
// Small helpers: days, hex
// ---------------------------------------------------------------------------

/// UTC day (days since 1970-01-01) of an epoch-ms instant (floor division).
pub fn day_of_ms(ms: i64) -> i64 {
    ms.div_euclid(MS_PER_DAY)
}

/// UTC hour 0..=23 of an epoch-ms instant.
pub fn hour_of_ms(ms: i64) -> i64 {
    ms.rem_euclid(MS_PER_DAY) / MS_PER_HOUR
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian
/// (Howard Hinnant's civil_from_days).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 -> "YYYY-MM-DD".
pub fn day_string(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{:04}-{:02}-{:02}", y, m, d)
}

/// "YYYY-MM-DD" -> days since 1970-01-01 (test convenience; uses chrono).
pub fn parse_day(s: &str) -> i32 {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("bad day");
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
    (d - epoch).num_days() as i32
}

pub fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn ratio(a: i64, b: i64) -> Value {
    Value::from((a as f64) / (b as f64))
}

// ---------------------------------------------------------------------------
// A strict, minimal JSON parser (RFC 8259 grammar)
// ---------------------------------------------------------------------------
//
// Why not serde_json::Value: it silently keeps the last of duplicated keys,
// and its number handling is not the contract's "integer" (it turns `-0` into
// a float and rejects `1e400` as invalid JSON). This parser is iterative (no
// recursion on nesting depth), checks duplicate keys (after unescaping) in
// every object at every level, and reports the kind of each top-level member.

/// What a top-level member's value is, as far as the contract cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JKind {
    Null,
    Bool,
    Str(String),
    /// a number with no fraction and no exponent that fits in i64
    Int(i64),
    /// any other number (fraction, exponent, or not fitting in i64)
    OtherNumber,
    Array,
    Object,
}

enum Ctx {
    Arr,
    Obj(BTreeSet<String>),
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if c == b' ' || c == b'\t' || c == b'\n' || c == b'\r' {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), ()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(())
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), ()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(())
        }
    }

    fn hex4(&mut self) -> Result<u32, ()> {
        let mut v: u32 = 0;
        for _ in 0..4 {
            let c = self.peek().ok_or(())?;
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(()),
            } as u32;
            v = v * 16 + d;
            self.i += 1;
        }
        Ok(v)
    }

    /// At a '"': parse a string, return its decoded value.
    fn string(&mut self) -> Result<String, ()> {
        self.expect(b'"')?;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let c = self.peek().ok_or(())?;
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let e = self.peek().ok_or(())?;
                    self.i += 1;
                    match e {
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        b'/' => out.push(b'/'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let u = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&u) {
                                // high surrogate: must be followed by \u low surrogate
                                self.expect(b'\\')?;
                                self.expect(b'u')?;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(());
                                }
                                0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&u) {
                                return Err(()); // lone low surrogate
                            } else {
                                u
                            };
                            let ch = char::from_u32(cp).ok_or(())?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return Err(()),
                    }
                }
                0x00..=0x1F => return Err(()), // unescaped control character
                _ => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| ())
    }

    /// At '-' or a digit: parse a number.
    fn number(&mut self) -> Result<JKind, ()> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                while let Some(b'0'..=b'9') = self.peek() {
                    self.i += 1;
                }
            }
            _ => return Err(()),
        }
        let mut integral = true;
        if self.peek() == Some(b'.') {
            integral = false;
            self.i += 1;
            let digits_start = self.i;
            while let Some(b'0'..=b'9') = self.peek() {
                self.i += 1;
            }
            if self.i == digits_start {
                return Err(());
            }
        }
        if let Some(b'e') | Some(b'E') = self.peek() {
            integral = false;
            self.i += 1;
            if let Some(b'+') | Some(b'-') = self.peek() {
                self.i += 1;
            }
            let digits_start = self.i;
            while let Some(b'0'..=b'9') = self.peek() {
                self.i += 1;
            }
            if self.i == digits_start {
                return Err(());
            }
        }
        if !integral {
            return Ok(JKind::OtherNumber);
        }
        let text = std::str::from_utf8(&self.b[start..self.i]).map_err(|_| ())?;
        match text.parse::<i64>() {
            Ok(v) => Ok(JKind::Int(v)),
            Err(_) => Ok(JKind::OtherNumber), // integer that does not fit in i64
        }
    }

    /// In an object, before a key (whitespace allowed): parse `"key" :`,
    /// checking that the key is new in this object.
    fn key(&mut self, seen: &mut BTreeSet<String>) -> Result<String, ()> {
        self.skip_ws();
        if self.peek() != Some(b'"') {
            return Err(());
        }
        let k = self.string()?;
        if !seen.insert(k.clone()) {
            return Err(()); // duplicated key
        }
        self.skip_ws();
        self.expect(b':')?;
        Ok(k)
    }
}

/// Parse a complete JSON text that must be an object. Returns its members in
/// order (keys are unique). Err(()) = invalid_json.
pub fn parse_top_object(bytes: &[u8]) -> Result<Vec<(String, JKind)>, ()> {
    // Not UTF-8 anywhere -> invalid_json.
    if std::str::from_utf8(bytes).is_err() {
        return Err(());
    }
    let mut p = Parser { b: bytes, i: 0 };
    p.skip_ws();
    if p.peek() != Some(b'{') {
        return Err(()); // not a JSON object (or not JSON)
    }
    let mut stack: Vec<Ctx> = Vec::new();
    let mut members: Vec<(String, JKind)> = Vec::new();
    let mut top_key: Option<String> = None;

    'value: loop {
        // Parse one value (or open a container and go parse its first element).
        p.skip_ws();
        let mut kind = match p.peek() {
            Some(b'{') => {
                p.i += 1;
                p.skip_ws();
                if p.peek() == Some(b'}') {
                    p.i += 1;
                    JKind::Object
                } else {
                    let mut seen = BTreeSet::new();
                    let k = p.key(&mut seen)?;
                    stack.push(Ctx::Obj(seen));
                    if stack.len() == 1 {
                        top_key = Some(k);
                    }
                    continue 'value;
                }
            }
            Some(b'[') => {
                p.i += 1;
                p.skip_ws();
                if p.peek() == Some(b']') {
                    p.i += 1;
                    JKind::Array
                } else {
                    stack.push(Ctx::Arr);
                    continue 'value;
                }
            }
            Some(b'"') => JKind::Str(p.string()?),
            Some(b't') => {
                p.literal(b"true")?;
                JKind::Bool
            }
            Some(b'f') => {
                p.literal(b"false")?;
                JKind::Bool
            }
            Some(b'n') => {
                p.literal(b"null")?;
                JKind::Null
            }
            Some(b'-') | Some(b'0'..=b'9') => p.number()?,
            _ => return Err(()),
        };

        // A value is complete: attach it to its container; close containers.
        loop {
            if stack.is_empty() {
                // The whole text's value is complete.
                p.skip_ws();
                if p.i != p.b.len() {
                    return Err(()); // trailing garbage
                }
                return match kind {
                    JKind::Object => Ok(members),
                    _ => Err(()),
                };
            }
            if stack.len() == 1 {
                // `kind` is a member of the top-level object.
                let k = top_key.take().ok_or(())?;
                members.push((k, kind.clone()));
            }
            p.skip_ws();
            let c = p.peek().ok_or(())?;
            let depth = stack.len();
            match stack.last_mut().unwrap() {
                Ctx::Obj(seen) => {
                    if c == b',' {
                        p.i += 1;
                        let k = p.key(seen)?;
                        if depth == 1 {
                            top_key = Some(k);
                        }
                        continue 'value;
                    } else if c == b'}' {
                        p.i += 1;
                        stack.pop();
                        kind = JKind::Object;
                    } else {
                        return Err(());
                    }
                }
                Ctx::Arr => {
                    if c == b',' {
                        p.i += 1;
                        continue 'value;
                    } else if c == b']' {
                        p.i += 1;
                        stack.pop();
                        kind = JKind::Array;
                    } else {
                        return Err(());
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefEvent {
    pub event_id: String,
    pub event_type: String,
    pub user_id: String,
    pub track_id: String,
    pub artist_id: String,
    pub ts: i64,
    pub ms_played: i64,
    pub track_duration_ms: i64,
    pub context: Option<String>,
    pub device: Option<String>,
    pub country: Option<String>,
}

impl RefEvent {
    pub fn is_play(&self) -> bool {
        self.event_type == "play"
    }
    pub fn is_skip(&self) -> bool {
        self.event_type == "skip"
    }
    pub fn day(&self) -> i64 {
        day_of_ms(self.ts)
    }
    /// The dedup tuple of events.md (strings compare byte-wise: Rust's String Ord).
    pub fn dedup_tuple(&self) -> (i64, &str, &str, &str, &str, i64, i64) {
        (
            self.ts,
            &self.event_type,
            &self.user_id,
            &self.track_id,
            &self.artist_id,
            self.ms_played,
            self.track_duration_ms,
        )
    }
}

fn valid_string_len(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64
}

/// The member named `name`, with `null` counting as absent.
fn field<'m>(m: &'m BTreeMap<String, JKind>, name: &str) -> Option<&'m JKind> {
    match m.get(name) {
        None | Some(JKind::Null) => None,
        Some(k) => Some(k),
    }
}

fn req_string(m: &BTreeMap<String, JKind>, name: &str) -> Result<String, String> {
    match field(m, name) {
        None => Err(format!("missing_field:{}", name)),
        Some(JKind::Str(s)) => {
            if valid_string_len(s) {
                Ok(s.clone())
            } else {
                Err(format!("out_of_range:{}", name))
            }
        }
        Some(_) => Err(format!("wrong_type:{}", name)),
    }
}

fn req_int(m: &BTreeMap<String, JKind>, name: &str, lo: i64, hi_incl: i64) -> Result<i64, String> {
    match field(m, name) {
        None => Err(format!("missing_field:{}", name)),
        Some(JKind::Int(v)) => {
            if *v >= lo && *v <= hi_incl {
                Ok(*v)
            } else {
                Err(format!("out_of_range:{}", name))
            }
        }
        Some(_) => Err(format!("wrong_type:{}", name)),
    }
}

fn opt_string(m: &BTreeMap<String, JKind>, name: &str) -> Result<Option<String>, String> {
    match field(m, name) {
        None => Ok(None),
        Some(JKind::Str(s)) => {
            if valid_string_len(s) {
                Ok(Some(s.clone()))
            } else {
                Err(format!("out_of_range:{}", name))
            }
        }
        Some(_) => Err(format!("wrong_type:{}", name)),
    }
}

/// Validate one record value. Ok(event) or Err(reason) per events.md.
pub fn validate(value: Option<&[u8]>) -> Result<RefEvent, String> {
    let bytes = match value {
        None => return Err("invalid_json".to_string()),
        Some(b) => b,
    };
    // 1. too_large
    if bytes.len() > MAX_VALUE_BYTES {
        return Err("too_large".to_string());
    }
    // 2. invalid_json
    if bytes.is_empty() {
        return Err("invalid_json".to_string());
    }
    let members = match parse_top_object(bytes) {
        Ok(m) => m,
        Err(()) => return Err("invalid_json".to_string()),
    };
    let m: BTreeMap<String, JKind> = members.into_iter().collect();
    // 3. field by field, in contract order
    let event_id = req_string(&m, "event_id")?;
    let event_type = req_string(&m, "event_type")?;
    if event_type != "play" && event_type != "skip" {
        return Err("out_of_range:event_type".to_string());
    }
    let user_id = req_string(&m, "user_id")?;
    let track_id = req_string(&m, "track_id")?;
    let artist_id = req_string(&m, "artist_id")?;
    let ts = req_int(&m, "ts", TS_MIN, TS_MAX - 1)?;
    let ms_played = req_int(&m, "ms_played", 0, MS_PER_DAY)?;
    let track_duration_ms = req_int(&m, "track_duration_ms", 1, MS_PER_DAY)?;
    let context = opt_string(&m, "context")?;
    let device = opt_string(&m, "device")?;
    let country = opt_string(&m, "country")?;
    Ok(RefEvent {
        event_id,
        event_type,
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

// ---------------------------------------------------------------------------
// The batch job
// ---------------------------------------------------------------------------

/// Per (user, day) totals used for the 28-day profile.
#[derive(Default)]
struct DayTotals {
    listens: i64,
    plays: i64,
    skips: i64,
    ms_played: i64,
    /// track_id -> (plays, skips)
    tracks: BTreeMap<String, (i64, i64)>,
    /// artist_id -> (plays, skips)
    artists: BTreeMap<String, (i64, i64)>,
}

#[derive(Default)]
struct ProfileAcc {
    active_days: i64,
    listens: i64,
    plays: i64,
    skips: i64,
    ms_played: i64,
    tracks: BTreeMap<String, (i64, i64)>,
    artists: BTreeMap<String, (i64, i64)>,
}

/// Items with at least one play, by plays desc, skips asc, id asc; first 10.
fn top_list(items: &BTreeMap<String, (i64, i64)>) -> Value {
    let mut v: Vec<(&String, i64, i64)> = items
        .iter()
        .filter(|(_, (plays, _))| *plays >= 1)
        .map(|(id, (plays, skips))| (id, *plays, *skips))
        .collect();
    v.sort_by(|a, b| {
        b.1.cmp(&a.1) // plays descending
            .then(a.2.cmp(&b.2)) // skips ascending
            .then(a.0.as_bytes().cmp(b.0.as_bytes())) // id ascending, byte-wise
    });
    v.truncate(TOP_N);
    Value::Array(
        v.into_iter()
            .map(|(id, plays, skips)| {
                Value::Array(vec![Value::from(id.clone()), Value::from(plays), Value::from(skips)])
            })
            .collect(),
    )
}

/// Add (sign = 1) or take away (sign = -1) one day's per-user totals to/from
/// the window accumulators. Entries that drop to nothing are removed, so
/// `len()` of the maps are distinct counts over the window.
fn apply_day(accs: &mut BTreeMap<String, ProfileAcc>, day: Option<&BTreeMap<String, DayTotals>>, sign: i64) {
    let users = match day {
        None => return,
        Some(u) => u,
    };
    for (user, t) in users {
        let a = accs.entry(user.clone()).or_default();
        a.active_days += sign;
        a.listens += sign * t.listens;
        a.plays += sign * t.plays;
        a.skips += sign * t.skips;
        a.ms_played += sign * t.ms_played;
        for (id, (p, s)) in &t.tracks {
            let x = a.tracks.entry(id.clone()).or_insert((0, 0));
            x.0 += sign * p;
            x.1 += sign * s;
            assert!(x.0 >= 0 && x.1 >= 0);
            if *x == (0, 0) {
                a.tracks.remove(id);
            }
        }
        for (id, (p, s)) in &t.artists {
            let x = a.artists.entry(id.clone()).or_insert((0, 0));
            x.0 += sign * p;
            x.1 += sign * s;
            assert!(x.0 >= 0 && x.1 >= 0);
            if *x == (0, 0) {
                a.artists.remove(id);
            }
        }
        assert!(a.active_days >= 0);
        if a.active_days == 0 {
            assert!(a.listens == 0 && a.tracks.is_empty() && a.artists.is_empty());
            accs.remove(user);
        }
    }
}

fn profile_row(user: &str, as_of: i64, a: &ProfileAcc) -> Vec<Value> {
    vec![
        Value::from(user.to_string()),
        Value::from(day_string(as_of)),
        Value::from(a.active_days),
        Value::from(a.listens),
        Value::from(a.plays),
        Value::from(a.skips),
        ratio(a.skips, a.listens),
        Value::from(a.ms_played),
        Value::from(a.tracks.len() as i64),
        Value::from(a.artists.len() as i64),
        top_list(&a.artists),
        top_list(&a.tracks),
    ]
}

/// as_of -> rows (sorted by user), building each 28-day window from scratch.
fn profile_rows_naive(
    totals: &BTreeMap<i64, BTreeMap<String, DayTotals>>,
    from: i64,
    to: i64,
) -> BTreeMap<i64, Vec<Vec<Value>>> {
    let mut out = BTreeMap::new();
    let mut as_of = from;
    while as_of <= to {
        let mut accs: BTreeMap<String, ProfileAcc> = BTreeMap::new();
        // window: as_of-27 ..= as_of
        for d in (as_of - (PROFILE_WINDOW_DAYS - 1))..=as_of {
            apply_day(&mut accs, totals.get(&d), 1);
        }
        let rows: Vec<Vec<Value>> = accs.iter().map(|(u, a)| profile_row(u, as_of, a)).collect();
        if !rows.is_empty() {
            out.insert(as_of, rows);
        }
        as_of += 1;
    }
    out
}

/// as_of -> rows (sorted by user), sliding the window one day at a time.
fn profile_rows_sliding(
    totals: &BTreeMap<i64, BTreeMap<String, DayTotals>>,
    from: i64,
    to: i64,
) -> BTreeMap<i64, Vec<Vec<Value>>> {
    let mut out = BTreeMap::new();
    let mut accs: BTreeMap<String, ProfileAcc> = BTreeMap::new();
    // before the first as_of, the window holds days from-28 ..= from-1
    for d in (from - PROFILE_WINDOW_DAYS)..from {
        apply_day(&mut accs, totals.get(&d), 1);
    }
    let mut as_of = from;
    while as_of <= to {
        apply_day(&mut accs, totals.get(&as_of), 1); // enters the window
        apply_day(&mut accs, totals.get(&(as_of - PROFILE_WINDOW_DAYS)), -1); // leaves it
        let rows: Vec<Vec<Value>> = accs.iter().map(|(u, a)| profile_row(u, as_of, a)).collect();
        if !rows.is_empty() {
            out.insert(as_of, rows);
        }
        as_of += 1;
    }
    out
}

fn push_row(tables: &mut BTreeMap<String, BTreeMap<String, Vec<Value>>>, table: &str, dt: String, row: Vec<Value>) {
    tables
        .entry(table.to_string())
        .or_default()
        .entry(dt)
        .or_default()
        .push(Value::Array(row));
}

/// Run the batch job over `records` (one run, no prior output directory).
pub fn reference(records: &[RefRecord], cfg: &RefConfig) -> RefOutput {
    reference_impl(records, cfg, false)
}

/// Same as `reference`, but builds every profile window from scratch (slow;
/// used by the self-test to check the sliding-window version).
pub fn reference_naive_profile(records: &[RefRecord], cfg: &RefConfig) -> RefOutput {
    reference_impl(records, cfg, true)
}

fn reference_impl(records: &[RefRecord], cfg: &RefConfig, naive_profile: bool) -> RefOutput {
    let mut out = RefOutput::default();
    out.read = records.len() as u64;

    // ---- validation; rejected_events --------------------------------------
    let mut valid: Vec<RefEvent> = Vec::new();
    // (dt day, source, partition, offset, message_ts, reason, raw)
    let mut rejected: Vec<(i64, String, i32, i64, Option<i64>, String, Vec<u8>)> = Vec::new();
    for r in records {
        match validate(r.value.as_deref()) {
            Ok(e) => valid.push(e),
            Err(reason) => {
                let raw: Vec<u8> = match &r.value {
                    None => Vec::new(),
                    Some(v) => v[..v.len().min(MAX_VALUE_BYTES)].to_vec(),
                };
                let dt = match r.message_ts {
                    Some(ms) => day_of_ms(ms),
                    None => cfg.run_day as i64,
                };
                *out.rejected_by_reason.entry(reason.clone()).or_insert(0) += 1;
                out.rejected += 1;
                rejected.push((dt, r.source.clone(), r.partition, r.offset, r.message_ts, reason, raw));
            }
        }
    }
    // sort by partition day, then the key (source byte-wise, partition, offset)
    rejected.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(a.1.as_bytes().cmp(b.1.as_bytes()))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    for (dt, source, partition, offset, message_ts, reason, raw) in rejected {
        let row = vec![
            Value::from(source),
            Value::from(partition),
            Value::from(offset),
            match message_ts {
                Some(ms) => Value::from(ms),
                None => Value::Null,
            },
            Value::from(reason),
            Value::from(hex_lower(&raw)),
        ];
        push_row(&mut out.tables, "rejected_events", day_string(dt), row);
    }

    // ---- range filter (explicit range only) -------------------------------
    let mut in_range: Vec<RefEvent> = Vec::new();
    for e in valid {
        match cfg.range {
            Some((from, to)) => {
                let d = e.day();
                if d < from as i64 || d > to as i64 {
                    out.out_of_range += 1;
                } else {
                    in_range.push(e);
                }
            }
            None => in_range.push(e),
        }
    }
    let valid_in_range = in_range.len() as u64;

    // ---- dedup: (event_id, day) -> smallest tuple -------------------------
    let mut winners: BTreeMap<(String, i64), RefEvent> = BTreeMap::new();
    for e in in_range {
        let key = (e.event_id.clone(), e.day());
        let replace = match winners.get(&key) {
            None => true,
            Some(cur) => e.dedup_tuple() < cur.dedup_tuple(),
        };
        if replace {
            winners.insert(key, e);
        }
    }
    let kept: Vec<RefEvent> = winners.into_values().collect();
    out.kept = kept.len() as u64;
    out.duplicates = valid_in_range - out.kept;

    // ---- the as-of range --------------------------------------------------
    let (from, to): (i64, i64) = match cfg.range {
        Some((f, t)) => (f as i64, t as i64),
        None => {
            if kept.is_empty() {
                (1, 0) // empty range
            } else {
                let first = kept.iter().map(|e| e.day()).min().unwrap();
                let last = kept.iter().map(|e| e.day()).max().unwrap();
                (first, last)
            }
        }
    };

    // ---- group listens by (day, user) --------------------------------------
    let mut by_day_user: BTreeMap<(i64, String), Vec<&RefEvent>> = BTreeMap::new();
    for e in &kept {
        by_day_user.entry((e.day(), e.user_id.clone())).or_default().push(e);
    }

    // ---- user_daily ---------------------------------------------------------
    for ((day, user), evs) in &by_day_user {
        let mut evs: Vec<&RefEvent> = evs.clone();
        evs.sort_by(|a, b| a.ts.cmp(&b.ts).then(a.event_id.as_bytes().cmp(b.event_id.as_bytes())));
        let listens = evs.len() as i64;
        let mut plays = 0i64;
        let mut skips = 0i64;
        let mut early_skips = 0i64;
        let mut ms_played = 0i64;
        let mut capped = 0i64;
        let mut duration = 0i64;
        let mut tracks: BTreeSet<&str> = BTreeSet::new();
        let mut artists: BTreeMap<&str, i64> = BTreeMap::new();
        let mut by_hour = [0i64; 24];
        let mut first = i64::MAX;
        let mut last = i64::MIN;
        for e in &evs {
            if e.is_play() {
                plays += 1;
            }
            if e.is_skip() {
                skips += 1;
                if e.ms_played < EARLY_SKIP_MS {
                    early_skips += 1;
                }
            }
            ms_played += e.ms_played;
            capped += e.ms_played.min(e.track_duration_ms);
            duration += e.track_duration_ms;
            tracks.insert(&e.track_id);
            *artists.entry(&e.artist_id).or_insert(0) += 1;
            by_hour[hour_of_ms(e.ts) as usize] += 1;
            first = first.min(e.ts);
            last = last.max(e.ts);
        }
        // sessions and skip streaks, in (ts, event_id) order
        let mut sessions = 0i64;
        let mut longest = 0i64;
        let mut cur_len = 0i64;
        let mut streak = 0i64;
        let mut max_streak = 0i64;
        let mut prev_ts: Option<i64> = None;
        for e in &evs {
            let new_session = match prev_ts {
                None => true,
                Some(p) => e.ts - p > SESSION_GAP_MS,
            };
            if new_session {
                sessions += 1;
                cur_len = 0;
            }
            cur_len += 1;
            longest = longest.max(cur_len);
            prev_ts = Some(e.ts);
            if e.is_skip() {
                streak += 1;
                max_streak = max_streak.max(streak);
            } else {
                streak = 0;
            }
        }
        // top artist: most listens, ties -> smallest artist_id (BTreeMap iterates ascending)
        let mut top_artist: &str = "";
        let mut top_listens = 0i64;
        for (a, n) in &artists {
            if *n > top_listens {
                top_artist = a;
                top_listens = *n;
            }
        }
        let row = vec![
            Value::from(user.clone()),
            Value::from(day_string(*day)),
            Value::from(listens),
            Value::from(plays),
            Value::from(skips),
            Value::from(early_skips),
            ratio(skips, listens),
            Value::from(ms_played),
            ratio(capped, duration),
            Value::from(tracks.len() as i64),
            Value::from(artists.len() as i64),
            Value::from(sessions),
            Value::from(longest),
            Value::from(max_streak),
            Value::from(first),
            Value::from(last),
            Value::Array(by_hour.iter().map(|n| Value::from(*n)).collect()),
            Value::from(top_artist.to_string()),
            Value::from(top_listens),
        ];
        push_row(&mut out.tables, "user_daily", day_string(*day), row);
    }

    // ---- user_track_daily ---------------------------------------------------
    let mut by_track: BTreeMap<(i64, String, String), Vec<&RefEvent>> = BTreeMap::new();
    for e in &kept {
        by_track
            .entry((e.day(), e.user_id.clone(), e.track_id.clone()))
            .or_default()
            .push(e);
    }
    for ((day, user, track), evs) in &by_track {
        let mut artist: Option<&str> = None;
        let mut plays = 0i64;
        let mut skips = 0i64;
        let mut early_skips = 0i64;
        let mut ms_played = 0i64;
        let mut capped = 0i64;
        let mut duration = 0i64;
        let mut first = i64::MAX;
        let mut last = i64::MIN;
        for e in evs {
            artist = match artist {
                None => Some(&e.artist_id),
                Some(a) => Some(if e.artist_id.as_bytes() < a.as_bytes() {
                    &e.artist_id
                } else {
                    a
                }),
            };
            if e.is_play() {
                plays += 1;
            }
            if e.is_skip() {
                skips += 1;
                if e.ms_played < EARLY_SKIP_MS {
                    early_skips += 1;
                }
            }
            ms_played += e.ms_played;
            capped += e.ms_played.min(e.track_duration_ms);
            duration += e.track_duration_ms;
            first = first.min(e.ts);
            last = last.max(e.ts);
        }
        let row = vec![
            Value::from(user.clone()),
            Value::from(track.clone()),
            Value::from(day_string(*day)),
            Value::from(artist.unwrap().to_string()),
            Value::from(evs.len() as i64),
            Value::from(plays),
            Value::from(skips),
            Value::from(early_skips),
            Value::from(ms_played),
            ratio(capped, duration),
            Value::from(first),
            Value::from(last),
        ];
        push_row(&mut out.tables, "user_track_daily", day_string(*day), row);
    }

    // ---- user_artist_daily --------------------------------------------------
    let mut by_artist: BTreeMap<(i64, String, String), Vec<&RefEvent>> = BTreeMap::new();
    for e in &kept {
        by_artist
            .entry((e.day(), e.user_id.clone(), e.artist_id.clone()))
            .or_default()
            .push(e);
    }
    for ((day, user, artist), evs) in &by_artist {
        let mut plays = 0i64;
        let mut skips = 0i64;
        let mut ms_played = 0i64;
        let mut tracks: BTreeSet<&str> = BTreeSet::new();
        for e in evs {
            if e.is_play() {
                plays += 1;
            }
            if e.is_skip() {
                skips += 1;
            }
            ms_played += e.ms_played;
            tracks.insert(&e.track_id);
        }
        let row = vec![
            Value::from(user.clone()),
            Value::from(artist.clone()),
            Value::from(day_string(*day)),
            Value::from(evs.len() as i64),
            Value::from(plays),
            Value::from(skips),
            Value::from(ms_played),
            Value::from(tracks.len() as i64),
        ];
        push_row(&mut out.tables, "user_artist_daily", day_string(*day), row);
    }

    // ---- user_profile_28d ---------------------------------------------------
    // day -> user -> totals of that user's listens on that day
    let mut totals: BTreeMap<i64, BTreeMap<String, DayTotals>> = BTreeMap::new();
    for e in &kept {
        let t = totals.entry(e.day()).or_default().entry(e.user_id.clone()).or_default();
        t.listens += 1;
        t.ms_played += e.ms_played;
        let (p, s) = if e.is_play() { (1, 0) } else { (0, 1) };
        t.plays += p;
        t.skips += s;
        let tr = t.tracks.entry(e.track_id.clone()).or_insert((0, 0));
        tr.0 += p;
        tr.1 += s;
        let ar = t.artists.entry(e.artist_id.clone()).or_insert((0, 0));
        ar.0 += p;
        ar.1 += s;
    }
    let profile = if naive_profile {
        profile_rows_naive(&totals, from, to)
    } else {
        profile_rows_sliding(&totals, from, to)
    };
    for (as_of, rows) in profile {
        for row in rows {
            push_row(&mut out.tables, "user_profile_28d", day_string(as_of), row);
        }
    }

    out
}
