#![allow(dead_code)]
//! Hand-worked unit tests of the test-side reference implementation
//! (tests/common/reference.rs). Every expected value below was derived by
//! hand from /work/shared/spec, not by running the reference.

mod common;

use common::reference::*;
use serde_json::{json, Value};

// 2024-03-10 = day 19792 since 1970-01-01 (2024-01-01 = 19723, + 31 + 29 + 9).
const D: i64 = 19792;
const T: i64 = D * 86_400_000; // 2024-03-10T00:00:00Z = 1710028800000
const H: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

#[allow(clippy::too_many_arguments)]
fn ev(id: &str, ty: &str, user: &str, track: &str, artist: &str, ts: i64, ms: i64, dur: i64) -> String {
    json!({
        "event_id": id, "event_type": ty, "user_id": user, "track_id": track,
        "artist_id": artist, "ts": ts, "ms_played": ms, "track_duration_ms": dur
    })
    .to_string()
}

fn kafka(offset: i64, value: &str) -> RefRecord {
    RefRecord {
        source: "listen-events".to_string(),
        partition: 0,
        offset,
        message_ts: Some(T),
        value: Some(value.as_bytes().to_vec()),
    }
}

fn recs(values: &[String]) -> Vec<RefRecord> {
    values.iter().enumerate().map(|(i, v)| kafka(i as i64, v)).collect()
}

fn run(records: &[RefRecord], range: Option<(i64, i64)>) -> RefOutput {
    reference(
        records,
        &RefConfig {
            range: range.map(|(a, b)| (a as i32, b as i32)),
            run_day: (D + 100) as i32,
        },
    )
}

fn part<'a>(out: &'a RefOutput, table: &str, day: i64) -> &'a Vec<Value> {
    out.tables
        .get(table)
        .unwrap_or_else(|| panic!("no table {}", table))
        .get(&day_string(day))
        .unwrap_or_else(|| panic!("no partition {} of {}", day_string(day), table))
}

fn reason(value: &str) -> String {
    match validate(Some(value.as_bytes())) {
        Ok(_) => "valid".to_string(),
        Err(r) => r,
    }
}

fn reason_bytes(value: &[u8]) -> String {
    match validate(Some(value)) {
        Ok(_) => "valid".to_string(),
        Err(r) => r,
    }
}

/// A valid event's members as raw JSON texts, in contract order (plus optional fields).
fn base_fields() -> Vec<(&'static str, String)> {
    vec![
        ("event_id", r#""e1""#.to_string()),
        ("event_type", r#""play""#.to_string()),
        ("user_id", r#""u1""#.to_string()),
        ("track_id", r#""t1""#.to_string()),
        ("artist_id", r#""a1""#.to_string()),
        ("ts", "1710028800000".to_string()),
        ("ms_played", "1000".to_string()),
        ("track_duration_ms", "2000".to_string()),
        ("context", r#""playlist""#.to_string()),
        ("device", r#""ios""#.to_string()),
        ("country", r#""FR""#.to_string()),
    ]
}

/// base_fields with some members replaced (Some(raw)) or removed (None).
fn obj_with(changes: &[(&str, Option<&str>)]) -> String {
    let mut parts = Vec::new();
    for (k, v) in base_fields() {
        let mut val = Some(v);
        for (ck, cv) in changes {
            if *ck == k {
                val = cv.map(|s| s.to_string());
            }
        }
        if let Some(v) = val {
            parts.push(format!("\"{}\": {}", k, v));
        }
    }
    for (ck, cv) in changes {
        if !base_fields().iter().any(|(k, _)| k == ck) {
            if let Some(v) = cv {
                parts.push(format!("\"{}\": {}", ck, v));
            }
        }
    }
    format!("{{{}}}", parts.join(", "))
}

fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

// ---------------------------------------------------------------------------
// days
// ---------------------------------------------------------------------------

#[test]
fn day_helpers() {
    assert_eq!(day_string(0), "1970-01-01");
    assert_eq!(day_string(10957), "2000-01-01");
    assert_eq!(day_string(47482), "2100-01-01");
    assert_eq!(day_string(D), "2024-03-10");
    assert_eq!(day_string(19723 + 59), "2024-02-29");
    assert_eq!(day_string(-1), "1969-12-31");
    assert_eq!(parse_day("2024-03-10") as i64, D);
    assert_eq!(T, 1_710_028_800_000);
    assert_eq!(day_of_ms(T), D);
    assert_eq!(day_of_ms(T - 1), D - 1);
    assert_eq!(day_of_ms(-1), -1);
    assert_eq!(hour_of_ms(T), 0);
    assert_eq!(hour_of_ms(T - 1), 23);
    assert_eq!(hour_of_ms(T + 13 * H + 59 * 60_000), 13);
    assert_eq!(hex_lower(&[0x00, 0xab, 0x7f, 0xff]), "00ab7fff");
}

// ---------------------------------------------------------------------------
// validation
// ---------------------------------------------------------------------------

#[test]
fn base_event_is_valid() {
    assert_eq!(reason(&obj_with(&[])), "valid");
    let e = validate(Some(obj_with(&[]).as_bytes())).unwrap();
    assert_eq!(e.event_id, "e1");
    assert_eq!(e.ts, T);
    assert_eq!(e.context.as_deref(), Some("playlist"));
    assert_eq!(e.country.as_deref(), Some("FR"));
    // optional fields absent or null
    let e = validate(Some(
        obj_with(&[("context", None), ("device", Some("null")), ("country", None)]).as_bytes(),
    ))
    .unwrap();
    assert_eq!(e.context, None);
    assert_eq!(e.device, None);
    assert_eq!(e.country, None);
}

#[test]
fn spec_example_reason() {
    assert_eq!(reason(r#"{"event_id": "", "ts": "x"}"#), "out_of_range:event_id");
    assert_eq!(reason(r#"{}"#), "missing_field:event_id");
    assert_eq!(reason(r#"{"event_id": null}"#), "missing_field:event_id");
    assert_eq!(reason(r#"{"event_id": 5}"#), "wrong_type:event_id");
    assert_eq!(reason(r#"{"event_id": "x"}"#), "missing_field:event_type");
}

#[test]
fn every_field_missing_wrong_type_out_of_range() {
    let required_strings = ["event_id", "event_type", "user_id", "track_id", "artist_id"];
    for f in required_strings {
        assert_eq!(reason(&obj_with(&[(f, None)])), format!("missing_field:{}", f));
        assert_eq!(reason(&obj_with(&[(f, Some("null"))])), format!("missing_field:{}", f));
        assert_eq!(reason(&obj_with(&[(f, Some("12"))])), format!("wrong_type:{}", f));
        assert_eq!(reason(&obj_with(&[(f, Some("true"))])), format!("wrong_type:{}", f));
        assert_eq!(reason(&obj_with(&[(f, Some("[\"a\"]"))])), format!("wrong_type:{}", f));
        assert_eq!(reason(&obj_with(&[(f, Some("{}"))])), format!("wrong_type:{}", f));
        assert_eq!(reason(&obj_with(&[(f, Some("\"\""))])), format!("out_of_range:{}", f));
    }
    let ints = ["ts", "ms_played", "track_duration_ms"];
    for f in ints {
        assert_eq!(reason(&obj_with(&[(f, None)])), format!("missing_field:{}", f));
        assert_eq!(reason(&obj_with(&[(f, Some("null"))])), format!("missing_field:{}", f));
        assert_eq!(reason(&obj_with(&[(f, Some("\"12\""))])), format!("wrong_type:{}", f));
        assert_eq!(reason(&obj_with(&[(f, Some("12.0"))])), format!("wrong_type:{}", f));
        assert_eq!(reason(&obj_with(&[(f, Some("1e3"))])), format!("wrong_type:{}", f));
        assert_eq!(reason(&obj_with(&[(f, Some("1E3"))])), format!("wrong_type:{}", f));
        assert_eq!(reason(&obj_with(&[(f, Some("true"))])), format!("wrong_type:{}", f));
        assert_eq!(reason(&obj_with(&[(f, Some("[1]"))])), format!("wrong_type:{}", f));
        // does not fit in i64
        assert_eq!(
            reason(&obj_with(&[(f, Some("9223372036854775808"))])),
            format!("wrong_type:{}", f)
        );
        assert_eq!(
            reason(&obj_with(&[(f, Some("-9223372036854775809"))])),
            format!("wrong_type:{}", f)
        );
        // fits in i64 but out of range
        assert_eq!(
            reason(&obj_with(&[(f, Some("9223372036854775807"))])),
            format!("out_of_range:{}", f)
        );
        assert_eq!(
            reason(&obj_with(&[(f, Some("-9223372036854775808"))])),
            format!("out_of_range:{}", f)
        );
        assert_eq!(reason(&obj_with(&[(f, Some("-1"))])), format!("out_of_range:{}", f));
    }
    for f in ["context", "device", "country"] {
        assert_eq!(reason(&obj_with(&[(f, None)])), "valid");
        assert_eq!(reason(&obj_with(&[(f, Some("null"))])), "valid");
        assert_eq!(reason(&obj_with(&[(f, Some("1"))])), format!("wrong_type:{}", f));
        assert_eq!(reason(&obj_with(&[(f, Some("false"))])), format!("wrong_type:{}", f));
        assert_eq!(reason(&obj_with(&[(f, Some("\"\""))])), format!("out_of_range:{}", f));
        let s65 = js(&"c".repeat(65));
        assert_eq!(reason(&obj_with(&[(f, Some(&s65))])), format!("out_of_range:{}", f));
        let s64 = js(&"c".repeat(64));
        assert_eq!(reason(&obj_with(&[(f, Some(&s64))])), "valid");
    }
}

#[test]
fn event_type_values() {
    assert_eq!(reason(&obj_with(&[("event_type", Some("\"skip\""))])), "valid");
    assert_eq!(reason(&obj_with(&[("event_type", Some("\"play\""))])), "valid");
    assert_eq!(
        reason(&obj_with(&[("event_type", Some("\"PLAY\""))])),
        "out_of_range:event_type"
    );
    assert_eq!(
        reason(&obj_with(&[("event_type", Some("\"play \""))])),
        "out_of_range:event_type"
    );
    assert_eq!(
        reason(&obj_with(&[("event_type", Some("\"pause\""))])),
        "out_of_range:event_type"
    );
}

#[test]
fn reject_reason_order() {
    // earlier field wins, whatever the kinds of failure
    assert_eq!(
        reason(&obj_with(&[("user_id", None), ("ts", Some("\"x\""))])),
        "missing_field:user_id"
    );
    assert_eq!(
        reason(&obj_with(&[("event_type", Some("\"x\"")), ("user_id", None)])),
        "out_of_range:event_type"
    );
    assert_eq!(
        reason(&obj_with(&[("track_id", Some("1")), ("artist_id", None)])),
        "wrong_type:track_id"
    );
    assert_eq!(
        reason(&obj_with(&[("artist_id", Some("\"\"")), ("ts", None)])),
        "out_of_range:artist_id"
    );
    assert_eq!(
        reason(&obj_with(&[("ts", Some("1")), ("ms_played", Some("1.5"))])),
        "out_of_range:ts"
    );
    assert_eq!(
        reason(&obj_with(&[("ms_played", Some("-1")), ("track_duration_ms", None)])),
        "out_of_range:ms_played"
    );
    assert_eq!(
        reason(&obj_with(&[("track_duration_ms", Some("0")), ("context", Some("3"))])),
        "out_of_range:track_duration_ms"
    );
    assert_eq!(
        reason(&obj_with(&[("context", Some("\"\"")), ("device", Some("1"))])),
        "out_of_range:context"
    );
    assert_eq!(
        reason(&obj_with(&[("device", Some("[]")), ("country", Some("\"\""))])),
        "wrong_type:device"
    );
    // member order in the text does not matter
    let txt = r#"{"ts": "x", "country": 1, "track_duration_ms": 5, "ms_played": 1, "artist_id": "a",
                  "track_id": "t", "user_id": "u", "event_type": "play", "event_id": "e"}"#;
    assert_eq!(reason(txt), "wrong_type:ts");
    // invalid_json beats field rules, too_large beats invalid_json
    assert_eq!(reason(r#"{"event_id": "", "event_id": ""}"#), "invalid_json");
    let mut big = b"{\"event_id\": \"\"".to_vec();
    big.resize(65537, b' ');
    assert_eq!(reason_bytes(&big), "too_large");
}

#[test]
fn ts_bounds() {
    assert_eq!(reason(&obj_with(&[("ts", Some("946684800000"))])), "valid");
    assert_eq!(reason(&obj_with(&[("ts", Some("946684799999"))])), "out_of_range:ts");
    assert_eq!(reason(&obj_with(&[("ts", Some("4102444799999"))])), "valid");
    assert_eq!(reason(&obj_with(&[("ts", Some("4102444800000"))])), "out_of_range:ts");
    assert_eq!(reason(&obj_with(&[("ts", Some("0"))])), "out_of_range:ts");
    assert_eq!(reason(&obj_with(&[("ts", Some("946684800000.0"))])), "wrong_type:ts");
    assert_eq!(reason(&obj_with(&[("ts", Some("9.466848e11"))])), "wrong_type:ts");
    assert_eq!(reason(&obj_with(&[("ts", Some("1e400"))])), "wrong_type:ts");
}

#[test]
fn ms_played_and_duration_bounds() {
    assert_eq!(reason(&obj_with(&[("ms_played", Some("0"))])), "valid");
    assert_eq!(reason(&obj_with(&[("ms_played", Some("-0"))])), "valid");
    assert_eq!(
        validate(Some(obj_with(&[("ms_played", Some("-0"))]).as_bytes()))
            .unwrap()
            .ms_played,
        0
    );
    assert_eq!(reason(&obj_with(&[("ms_played", Some("86400000"))])), "valid");
    assert_eq!(
        reason(&obj_with(&[("ms_played", Some("86400001"))])),
        "out_of_range:ms_played"
    );
    assert_eq!(
        reason(&obj_with(&[("ms_played", Some("-1"))])),
        "out_of_range:ms_played"
    );
    assert_eq!(reason(&obj_with(&[("track_duration_ms", Some("1"))])), "valid");
    assert_eq!(
        reason(&obj_with(&[("track_duration_ms", Some("0"))])),
        "out_of_range:track_duration_ms"
    );
    assert_eq!(reason(&obj_with(&[("track_duration_ms", Some("86400000"))])), "valid");
    assert_eq!(
        reason(&obj_with(&[("track_duration_ms", Some("86400001"))])),
        "out_of_range:track_duration_ms"
    );
    // ms_played > track_duration_ms is valid
    assert_eq!(
        reason(&obj_with(&[
            ("ms_played", Some("5000")),
            ("track_duration_ms", Some("10"))
        ])),
        "valid"
    );
}

#[test]
fn string_lengths_in_bytes() {
    let ok64 = js(&"a".repeat(64));
    let bad65 = js(&"a".repeat(65));
    assert_eq!(reason(&obj_with(&[("user_id", Some(&ok64))])), "valid");
    assert_eq!(reason(&obj_with(&[("user_id", Some(&bad65))])), "out_of_range:user_id");
    // é is 2 bytes: 32 of them = 64 bytes ok, 33 = 66 bytes too long
    let e32 = js(&"é".repeat(32));
    let e33 = js(&"é".repeat(33));
    assert_eq!(reason(&obj_with(&[("track_id", Some(&e32))])), "valid");
    assert_eq!(reason(&obj_with(&[("track_id", Some(&e33))])), "out_of_range:track_id");
    // € is 3 bytes: 21 of them + "a" = 64 bytes; 22 = 66 bytes (only 22 chars)
    let euro_ok = js(&format!("{}a", "€".repeat(21)));
    let euro_bad = js(&"€".repeat(22));
    assert_eq!(reason(&obj_with(&[("artist_id", Some(&euro_ok))])), "valid");
    assert_eq!(
        reason(&obj_with(&[("artist_id", Some(&euro_bad))])),
        "out_of_range:artist_id"
    );
    // 😀 is 4 bytes: 16 = 64 ok, 17 = 68 bad
    let emo16 = js(&"😀".repeat(16));
    let emo17 = js(&"😀".repeat(17));
    assert_eq!(reason(&obj_with(&[("event_id", Some(&emo16))])), "valid");
    assert_eq!(
        reason(&obj_with(&[("event_id", Some(&emo17))])),
        "out_of_range:event_id"
    );
    // escapes count by decoded bytes: \u00e9 x 32 = 64 bytes; \\ is one byte
    let esc32 = format!("\"{}\"", "\\u00e9".repeat(32));
    let esc33 = format!("\"{}\"", "\\u00e9".repeat(33));
    assert_eq!(reason(&obj_with(&[("event_id", Some(&esc32))])), "valid");
    assert_eq!(
        reason(&obj_with(&[("event_id", Some(&esc33))])),
        "out_of_range:event_id"
    );
    let bs64 = format!("\"{}\"", "\\\\".repeat(64));
    assert_eq!(reason(&obj_with(&[("event_id", Some(&bs64))])), "valid");
    assert_eq!(
        validate(Some(obj_with(&[("event_id", Some(&bs64))]).as_bytes()))
            .unwrap()
            .event_id,
        "\\".repeat(64)
    );
    // surrogate pair for 😀 decodes to 4 bytes
    let pair = "\"\\ud83d\\ude00\"";
    assert_eq!(
        validate(Some(obj_with(&[("user_id", Some(pair))]).as_bytes()))
            .unwrap()
            .user_id,
        "😀"
    );
}

#[test]
fn invalid_json_cases() {
    let cases: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        b"{".to_vec(),
        b"[]".to_vec(),
        b"[1,2]".to_vec(),
        b"\"x\"".to_vec(),
        b"null".to_vec(),
        b"12".to_vec(),
        b" ".to_vec(),
        b"{} {}".to_vec(),
        format!("{} x", obj_with(&[])).into_bytes(),
        format!("{},", obj_with(&[])).into_bytes(),
        // duplicated keys, at any level, even with equal values or different escapes
        obj_with(&[("x", Some("1, \"x\": 1"))]).into_bytes(),
        obj_with(&[("event_id", Some("\"e1\", \"event_id\": \"e1\""))]).into_bytes(),
        obj_with(&[("x", Some("{\"a\": 1, \"a\": 2}"))]).into_bytes(),
        obj_with(&[("x", Some("[{\"b\": {\"a\": 1, \"a\": null}}]"))]).into_bytes(),
        obj_with(&[("x", Some("{\"a\": 1, \"\\u0061\": 2}"))]).into_bytes(),
        obj_with(&[("x", Some("1, \"\\u0078\": 2"))]).into_bytes(),
        // grammar errors
        obj_with(&[("x", Some("01"))]).into_bytes(),
        obj_with(&[("x", Some("1."))]).into_bytes(),
        obj_with(&[("x", Some(".5"))]).into_bytes(),
        obj_with(&[("x", Some("1e"))]).into_bytes(),
        obj_with(&[("x", Some("+1"))]).into_bytes(),
        obj_with(&[("x", Some("-"))]).into_bytes(),
        obj_with(&[("x", Some("tru"))]).into_bytes(),
        obj_with(&[("x", Some("NaN"))]).into_bytes(),
        obj_with(&[("x", Some("[1 2]"))]).into_bytes(),
        obj_with(&[("x", Some("[1,]"))]).into_bytes(),
        obj_with(&[("x", Some("\"\\q\""))]).into_bytes(),
        obj_with(&[("x", Some("\"\\ud800\""))]).into_bytes(),
        obj_with(&[("x", Some("'a'"))]).into_bytes(),
        b"{\"a\": 1,}".to_vec(),
        b"{\"a\" 1}".to_vec(),
        b"{a: 1}".to_vec(),
        b"{\"a\": \"tab\there\"}".to_vec(),
        // not UTF-8, even in an ignored member
        {
            let mut v = b"{\"x\": \"".to_vec();
            v.push(0xff);
            v.extend_from_slice(b"\"}");
            v
        },
        {
            let mut v = obj_with(&[("x", Some("\"ok\""))]).into_bytes();
            v.push(0xc3); // truncated 2-byte sequence at the end
            v
        },
        // BOM is not JSON whitespace
        {
            let mut v = vec![0xef, 0xbb, 0xbf];
            v.extend_from_slice(obj_with(&[]).as_bytes());
            v
        },
    ];
    for c in &cases {
        assert_eq!(
            reason_bytes(c),
            "invalid_json",
            "input: {:?}",
            String::from_utf8_lossy(c)
        );
    }
    assert_eq!(validate(None), Err("invalid_json".to_string()));
    assert_eq!(validate(Some(b"")), Err("invalid_json".to_string()));
}

#[test]
fn accepted_json_shapes() {
    // whitespace around (including a trailing \r from a CRLF file), unknown
    // members of any type, deep nesting in an ignored member
    let base = obj_with(&[]);
    assert_eq!(reason(&format!(" \t\r\n{}\r\n ", base)), "valid");
    assert_eq!(reason(&format!("{}\r", base)), "valid");
    assert_eq!(
        reason(&obj_with(&[(
            "extra",
            Some(r#"{"deep": [1, -2.5e-3, {"z": null, "y": [true, false]}], "s": "\"\\/\b\f\n\r\t\u00e9"}"#)
        )])),
        "valid"
    );
    // same key in different objects is fine
    assert_eq!(
        reason(&obj_with(&[("x", Some(r#"{"event_id": 1, "o": {"event_id": 2}}"#))])),
        "valid"
    );
    let deep = format!("{}{}", "[".repeat(20000), "]".repeat(20000));
    assert_eq!(reason(&obj_with(&[("x", Some(&deep))])), "valid");
    let deep_obj = format!("{}1{}", "{\"a\":".repeat(5000), "}".repeat(5000));
    assert_eq!(reason(&obj_with(&[("x", Some(&deep_obj))])), "valid");
    // non-ASCII ids, "\u0000" inside a string is fine
    assert_eq!(
        reason(&obj_with(&[
            ("user_id", Some("\"ユーザー\"")),
            ("x", Some("\"\\u0000\""))
        ])),
        "valid"
    );
}

#[test]
fn parser_agrees_with_serde_json_without_duplicates() {
    let cases = [
        r#"{"a":[1,2,{"b":"c"}],"d":true,"e":null,"f":-1.5E+3}"#,
        r#"{"a":01}"#,
        r#"{"a":1,}"#,
        r#"{"a":"\u00e9\uD83D\uDE00"}"#,
        r#"{"a" 1}"#,
        r#"{"a":tru}"#,
        r#"{"a":-}"#,
        r#"{"a":1.}"#,
        r#"{"a":.5}"#,
        r#"{"a":1e}"#,
        r#"{"a":"\q"}"#,
        r#" {"a":1} "#,
        r#"{"a":[1 2]}"#,
        r#"{"a":{"b":1}}}"#,
        r#"{"a":[[],{},[{}]]}"#,
        r#"{"":0}"#,
        r#"{"a":"x"  ,  "b"  :  [ 1 , 2 ] }"#,
        r#"{"a":[}"#,
        r#"{"a":{]}"#,
        r#"{"a":"unterminated}"#,
        r#"{"a":0.0e-0}"#,
        r#"{"a":-0.1}"#,
    ];
    for c in cases {
        let mine = parse_top_object(c.as_bytes()).is_ok();
        let theirs = serde_json::from_str::<Value>(c).map(|v| v.is_object()).unwrap_or(false);
        assert_eq!(mine, theirs, "input {}", c);
    }
    let members = parse_top_object(br#"{"s":"x","i":-42,"f":1.0,"b":false,"n":null,"a":[],"o":{}}"#).unwrap();
    assert_eq!(
        members,
        vec![
            ("s".to_string(), JKind::Str("x".to_string())),
            ("i".to_string(), JKind::Int(-42)),
            ("f".to_string(), JKind::OtherNumber),
            ("b".to_string(), JKind::Bool),
            ("n".to_string(), JKind::Null),
            ("a".to_string(), JKind::Array),
            ("o".to_string(), JKind::Object),
        ]
    );
}

#[test]
fn too_large_boundary() {
    // exactly 65536 bytes: parsed (valid event padded with spaces)
    let mut v = obj_with(&[]).into_bytes();
    v.resize(65536, b' ');
    assert_eq!(reason_bytes(&v), "valid");
    // 65537 bytes: too_large even though it is valid JSON
    v.push(b' ');
    assert_eq!(reason_bytes(&v), "too_large");
    // garbage of 65537 bytes: too_large, not invalid_json
    assert_eq!(reason_bytes(&vec![0xffu8; 65537]), "too_large");
}

// ---------------------------------------------------------------------------
// files
// ---------------------------------------------------------------------------

#[test]
fn ndjson_lines() {
    let bytes = b"a\n\n  \t\r\n{\"x\":1}\r\n\r\nlast";
    let r = records_from_ndjson("in/f.ndjson", bytes);
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].offset, 1);
    assert_eq!(r[0].value.as_deref(), Some(&b"a"[..]));
    assert_eq!(r[1].offset, 4);
    assert_eq!(r[1].value.as_deref(), Some(&b"{\"x\":1}"[..]));
    assert_eq!(r[2].offset, 6);
    assert_eq!(r[2].value.as_deref(), Some(&b"last"[..]));
    for x in &r {
        assert_eq!(x.source, "in/f.ndjson");
        assert_eq!(x.partition, 0);
        assert_eq!(x.message_ts, None);
    }
    // trailing newline: no extra record
    let r = records_from_ndjson("f", b"x\ny\n");
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].offset, 2);
    // a line of only a form feed is not blank
    assert_eq!(records_from_ndjson("f", b"\x0c\n").len(), 1);
    assert_eq!(records_from_ndjson("f", b"").len(), 0);
}

// ---------------------------------------------------------------------------
// rejected_events and accounting
// ---------------------------------------------------------------------------

#[test]
fn rejected_events_table_and_counts() {
    let k = |partition: i32, offset: i64, ts: i64, value: Option<&[u8]>| RefRecord {
        source: "listen-events".to_string(),
        partition,
        offset,
        message_ts: Some(ts),
        value: value.map(|v| v.to_vec()),
    };
    let big = vec![b'x'; 65537];
    let valid = ev("ok", "play", "u", "t", "a", T + 10, 1, 2);
    let mut records = vec![
        k(1, 7, T + 5, Some(br#"{"event_id": "", "ts": "x"}"#)),
        k(0, 9, T - 1, None),
        k(0, 3, T + 100, Some(b"")),
        k(0, 10, T + 1, Some(&big)),
        k(0, 11, T + 2, Some(valid.as_bytes())),
    ];
    records.extend(records_from_ndjson("b.ndjson", b"not json\n\n{\"a\":1,\"a\":2}\n"));
    records.extend(records_from_ndjson("a.ndjson", b"[1]"));
    let out = reference(
        &records,
        &RefConfig {
            range: None,
            run_day: (D + 5) as i32,
        },
    );

    assert_eq!(out.read, 8);
    assert_eq!(out.rejected, 7);
    assert_eq!(out.kept, 1);
    assert_eq!(out.duplicates, 0);
    assert_eq!(out.out_of_range, 0);
    let mut by_reason = std::collections::BTreeMap::new();
    by_reason.insert("invalid_json".to_string(), 5u64);
    by_reason.insert("too_large".to_string(), 1u64);
    by_reason.insert("out_of_range:event_id".to_string(), 1u64);
    assert_eq!(out.rejected_by_reason, by_reason);

    let rej = &out.tables["rejected_events"];
    assert_eq!(rej.len(), 3);
    assert_eq!(
        rej["2024-03-09"],
        vec![json!(["listen-events", 0, 9, T - 1, "invalid_json", ""])]
    );
    assert_eq!(
        rej["2024-03-10"],
        vec![
            json!(["listen-events", 0, 3, T + 100, "invalid_json", ""]),
            json!(["listen-events", 0, 10, T + 1, "too_large", "78".repeat(65536)]),
            json!([
                "listen-events",
                1,
                7,
                T + 5,
                "out_of_range:event_id",
                hex_lower(br#"{"event_id": "", "ts": "x"}"#)
            ]),
        ]
    );
    assert_eq!(
        rej["2024-03-15"],
        vec![
            json!(["a.ndjson", 0, 1, null, "invalid_json", "5b315d"]),
            json!(["b.ndjson", 0, 1, null, "invalid_json", "6e6f74206a736f6e"]),
            json!(["b.ndjson", 0, 3, null, "invalid_json", hex_lower(br#"{"a":1,"a":2}"#)]),
        ]
    );
    // the one valid event makes the range [D, D]
    assert_eq!(out.tables["user_daily"].len(), 1);
    assert!(out.tables["user_daily"].contains_key("2024-03-10"));
    assert_eq!(out.tables["user_profile_28d"].len(), 1);
}

#[test]
fn only_rejects_gives_only_rejected_table() {
    let records = recs(&["{".to_string(), "[]".to_string()]);
    let out = run(&records, None);
    assert_eq!(out.tables.keys().collect::<Vec<_>>(), vec!["rejected_events"]);
    assert_eq!(out.read, 2);
    assert_eq!(out.rejected, 2);
    // nothing at all: no tables
    let out = run(&[], Some((D, D + 3)));
    assert!(out.tables.is_empty());
    assert_eq!(out.read, 0);
}

#[test]
fn out_of_range_counted_before_dedup() {
    let records = recs(&[
        ev("a", "play", "u", "t", "art", T + 1000, 1, 2),
        // two copies of one event the day before the range: both out_of_range
        ev("b", "play", "u", "t", "art", T - 1000, 1, 2),
        ev("b", "play", "u", "t", "art", T - 1000, 1, 2),
        // the day after
        ev("c", "play", "u", "t", "art", T + DAY_MS, 1, 2),
        // far future, far past (valid ts)
        ev("d", "play", "u", "t", "art", 4_102_444_799_999, 1, 2),
        ev("e", "play", "u", "t", "art", 946_684_800_000, 1, 2),
        // in-range duplicate
        ev("a", "play", "u", "t", "art", T + 1000, 1, 2),
    ]);
    let out = run(&records, Some((D, D)));
    assert_eq!(out.read, 7);
    assert_eq!(out.out_of_range, 5);
    assert_eq!(out.kept, 1);
    assert_eq!(out.duplicates, 1);
    assert_eq!(out.rejected, 0);
    assert_eq!(out.tables["user_daily"].len(), 1);
    assert_eq!(out.tables["user_profile_28d"].len(), 1);
    // no range: range = [first, last] day of kept events, far days included
    let out = run(&records, None);
    assert_eq!(out.out_of_range, 0);
    assert_eq!(out.kept, 5);
    assert_eq!(out.duplicates, 2);
    let ud = &out.tables["user_daily"];
    assert_eq!(
        ud.keys().cloned().collect::<Vec<_>>(),
        vec!["2000-01-01", "2024-03-09", "2024-03-10", "2024-03-11", "2099-12-31"]
    );
    // profile as-of days: every day of the range that has a listen in its window
    let prof = &out.tables["user_profile_28d"];
    assert!(prof.contains_key("2000-01-01"));
    assert!(prof.contains_key("2000-01-28"));
    assert!(!prof.contains_key("2000-01-29"));
    assert!(prof.contains_key("2099-12-31"));
    assert!(prof.contains_key("2024-04-07")); // D+1+27 = D+28
    assert!(!prof.contains_key("2024-04-08"));
    assert!(!prof.contains_key("2024-03-08"));
    // 2000-01-01..=2000-01-28 (28), 2024-03-09..=2024-04-07 (30), 2099-12-31 (1)
    assert_eq!(prof.len(), 28 + 30 + 1);
}

// ---------------------------------------------------------------------------
// a full worked day
// ---------------------------------------------------------------------------

#[test]
fn full_rows_worked_by_hand() {
    let e1 = T + H; // 01:00:00.000
    let e2 = e1 + 60_000; // 01:01:00.000
    let e3 = e2 + 1_800_000; // exactly 30 min later: same session, 01:31
    let e4 = e3 + 1_800_001; // 30 min + 1 ms later: new session, 02:01:00.001
    let e5 = T + DAY_MS - 1; // 23:59:59.999: new session
    let e6 = T + DAY_MS; // next day's midnight
    let records = recs(&[
        ev("e5", "play", "u1", "t1", "a1", e5, 200_000, 200_000),
        ev("e1", "play", "u1", "t1", "a1", e1, 200_000, 200_000),
        ev("e4", "play", "u1", "t3", "a2", e4, 250_000, 240_000),
        ev("e2", "skip", "u1", "t2", "a2", e2, 10_000, 180_000),
        ev("e6", "skip", "u1", "t2", "a2", e6, 5_000, 180_000),
        ev("e3", "skip", "u1", "t1", "a1", e3, 40_000, 200_000),
    ]);
    let out = run(&records, None);
    assert_eq!(
        (out.read, out.kept, out.duplicates, out.rejected, out.out_of_range),
        (6, 6, 0, 0, 0)
    );

    let mut hours = vec![0i64; 24];
    hours[1] = 3;
    hours[2] = 1;
    hours[23] = 1;
    assert_eq!(
        part(&out, "user_daily", D),
        &vec![json!([
            "u1",
            "2024-03-10",
            5,
            3,
            2,
            1,
            2.0f64 / 5.0,
            700_000,
            690_000f64 / 1_020_000f64,
            3,
            2,
            3,
            3,
            2,
            e1,
            e5,
            hours,
            "a1",
            3
        ])]
    );
    let mut hours2 = vec![0i64; 24];
    hours2[0] = 1;
    assert_eq!(
        part(&out, "user_daily", D + 1),
        &vec![json!([
            "u1",
            "2024-03-11",
            1,
            0,
            1,
            1,
            1.0,
            5_000,
            5_000f64 / 180_000f64,
            1,
            1,
            1,
            1,
            1,
            e6,
            e6,
            hours2,
            "a2",
            1
        ])]
    );
    assert_eq!(
        part(&out, "user_track_daily", D),
        &vec![
            json!([
                "u1",
                "t1",
                "2024-03-10",
                "a1",
                3,
                2,
                1,
                0,
                440_000,
                440_000f64 / 600_000f64,
                e1,
                e5
            ]),
            json!([
                "u1",
                "t2",
                "2024-03-10",
                "a2",
                1,
                0,
                1,
                1,
                10_000,
                10_000f64 / 180_000f64,
                e2,
                e2
            ]),
            json!(["u1", "t3", "2024-03-10", "a2", 1, 1, 0, 0, 250_000, 1.0, e4, e4]),
        ]
    );
    assert_eq!(
        part(&out, "user_track_daily", D + 1),
        &vec![json!([
            "u1",
            "t2",
            "2024-03-11",
            "a2",
            1,
            0,
            1,
            1,
            5_000,
            5_000f64 / 180_000f64,
            e6,
            e6
        ])]
    );
    assert_eq!(
        part(&out, "user_artist_daily", D),
        &vec![
            json!(["u1", "a1", "2024-03-10", 3, 2, 1, 440_000, 1]),
            json!(["u1", "a2", "2024-03-10", 2, 1, 1, 260_000, 2]),
        ]
    );
    assert_eq!(
        part(&out, "user_artist_daily", D + 1),
        &vec![json!(["u1", "a2", "2024-03-11", 1, 0, 1, 5_000, 1])]
    );
    assert_eq!(
        part(&out, "user_profile_28d", D),
        &vec![json!([
            "u1",
            "2024-03-10",
            1,
            5,
            3,
            2,
            0.4,
            700_000,
            3,
            2,
            [["a1", 2, 1], ["a2", 1, 1]],
            [["t1", 2, 1], ["t3", 1, 0]]
        ])]
    );
    assert_eq!(
        part(&out, "user_profile_28d", D + 1),
        &vec![json!([
            "u1",
            "2024-03-11",
            2,
            6,
            3,
            3,
            0.5,
            705_000,
            3,
            2,
            [["a1", 2, 1], ["a2", 1, 2]],
            [["t1", 2, 1], ["t3", 1, 0]]
        ])]
    );
    for t in [
        "user_daily",
        "user_track_daily",
        "user_artist_daily",
        "user_profile_28d",
    ] {
        assert_eq!(out.tables[t].len(), 2, "{}", t);
    }
    assert!(!out.tables.contains_key("rejected_events"));
}

// ---------------------------------------------------------------------------
// dedup
// ---------------------------------------------------------------------------

#[test]
fn dedup_keeps_smallest_tuple() {
    let values = vec![
        // dup1: ts first, then event_type ("play" < "skip"), ms_played last
        ev("dup1", "play", "u", "t", "a", T + 5000, 1000, 2000),
        ev("dup1", "skip", "u", "t", "a", T + 4000, 1000, 2000),
        ev("dup1", "play", "u", "t", "a", T + 4000, 9999, 20000), // kept
        // dup2: user_id byte-wise: "uB" < "ub"
        ev("dup2", "play", "ub", "t", "a", T + 7000, 100, 200),
        ev("dup2", "play", "uB", "t", "a", T + 7000, 100, 200), // kept
        // dup3: track_id compared before ms_played: "t1" < "t2"
        ev("dup3", "skip", "u", "t2", "a", T + 9000, 500, 3000),
        ev("dup3", "skip", "u", "t2", "a", T + 9000, 400, 3000),
        ev("dup3", "skip", "u", "t1", "a", T + 9000, 999, 3000), // kept
        // dup4: same id on two days: both kept
        ev("dup4", "play", "u", "t", "a", T + DAY_MS - 1, 1000, 2000),
        ev("dup4", "play", "u", "t", "a", T + DAY_MS, 1000, 2000),
    ];
    let records = recs(&values);
    let out = run(&records, None);
    assert_eq!((out.read, out.kept, out.duplicates), (10, 5, 5));
    assert_eq!(
        part(&out, "user_track_daily", D),
        &vec![
            json!([
                "u",
                "t",
                "2024-03-10",
                "a",
                2,
                2,
                0,
                0,
                10_999,
                10_999f64 / 22_000f64,
                T + 4000,
                T + DAY_MS - 1
            ]),
            json!([
                "u",
                "t1",
                "2024-03-10",
                "a",
                1,
                0,
                1,
                1,
                999,
                999f64 / 3000f64,
                T + 9000,
                T + 9000
            ]),
            json!(["uB", "t", "2024-03-10", "a", 1, 1, 0, 0, 100, 0.5, T + 7000, T + 7000]),
        ]
    );
    assert_eq!(
        part(&out, "user_track_daily", D + 1),
        &vec![json!([
            "u",
            "t",
            "2024-03-11",
            "a",
            1,
            1,
            0,
            0,
            1000,
            0.5,
            T + DAY_MS,
            T + DAY_MS
        ])]
    );

    // independent of arrival order, partition and offset
    let mut rev: Vec<RefRecord> = records.iter().rev().cloned().collect();
    for (i, r) in rev.iter_mut().enumerate() {
        r.partition = (i % 3) as i32;
        r.offset = 1000 - i as i64;
    }
    let out2 = run(&rev, None);
    assert_eq!(out2.tables, out.tables);
    assert_eq!((out2.kept, out2.duplicates), (5, 5));

    // dedup key includes only event_id and day: different users collide
    let out3 = run(
        &recs(&[
            ev("x", "play", "u2", "t", "a", T, 1, 2),
            ev("x", "play", "u1", "t", "a", T + 1, 1, 2),
        ]),
        None,
    );
    assert_eq!((out3.kept, out3.duplicates), (1, 1));
    assert_eq!(part(&out3, "user_daily", D)[0][0], json!("u2"));
    // an exact copy (retry) is one listen
    let retry = ev("r", "skip", "u", "t", "a", T, 1, 2);
    let out4 = run(&recs(&[retry.clone(), retry.clone(), retry]), None);
    assert_eq!((out4.read, out4.kept, out4.duplicates), (3, 1, 2));
}

// ---------------------------------------------------------------------------
// sessions, streaks, midnight
// ---------------------------------------------------------------------------

#[test]
fn session_gaps_to_the_millisecond() {
    let records = recs(&[
        ev("1", "play", "s", "t", "a", T + H, 1, 1),
        ev("2", "play", "s", "t", "a", T + H + 1_800_000, 1, 1), // same session
        ev("3", "play", "s", "t", "a", T + H + 3_600_000, 1, 1), // same (exactly 30 min again)
        ev("4", "play", "s", "t", "a", T + H + 5_400_001, 1, 1), // new
        ev("5", "play", "s", "t", "a", T + H + 7_200_002, 1, 1), // new (30 min + 1 ms)
        ev("6", "play", "s", "t", "a", T + H + 7_200_002, 1, 1), // same ts: same session
    ]);
    let out = run(&records, None);
    let row = &part(&out, "user_daily", D)[0];
    assert_eq!(row[11], json!(3)); // sessions
    assert_eq!(row[12], json!(3)); // longest_session
    assert_eq!(row[13], json!(0)); // max_skip_streak
}

#[test]
fn skip_streak_orders_ts_ties_by_event_id() {
    // Arrival order c, b, z, a would give skip,skip,skip,play (streak 3);
    // order by event_id alone a,b,c,z gives play,skip,skip,skip (3);
    // the spec's (ts, event_id) order is z(T+500), a, b, c -> skip, play, skip, skip = 2.
    let records = recs(&[
        ev("c", "skip", "s", "t", "a", T + 1000, 1, 1),
        ev("b", "skip", "s", "t", "a", T + 1000, 1, 1),
        ev("z", "skip", "s", "t", "a", T + 500, 1, 1),
        ev("a", "play", "s", "t", "a", T + 1000, 1, 1),
    ]);
    let out = run(&records, None);
    let row = &part(&out, "user_daily", D)[0];
    assert_eq!(row[13], json!(2));
    assert_eq!(row[11], json!(1));

    // streaks run across session boundaries; ids compare byte-wise ("B" < "a")
    let records = recs(&[
        ev("a", "play", "s", "t", "a", T, 1, 1),
        ev("B", "skip", "s", "t", "a", T, 1, 1),
        ev("x", "skip", "s", "t", "a", T + 10 * H, 1, 1),
        ev("y", "skip", "s", "t", "a", T + 20 * H, 1, 1),
    ]);
    // order: B(skip), a(play), x(skip), y(skip) -> 2; sessions: {B,a}, {x}, {y}
    let out = run(&records, None);
    let row = &part(&out, "user_daily", D)[0];
    assert_eq!(row[11], json!(3));
    assert_eq!(row[12], json!(2));
    assert_eq!(row[13], json!(2));
}

#[test]
fn midnight_belongs_to_the_new_day() {
    let records = recs(&[
        ev("1", "play", "m", "t", "a", T - 1, 1, 1), // D-1 23:59:59.999
        ev("2", "play", "m", "t", "a", T, 1, 1),     // D 00:00:00.000
        ev("3", "play", "m", "t", "a", T + DAY_MS - 1, 1, 1),
        ev("4", "play", "m", "t", "a", T + DAY_MS, 1, 1), // D+1
    ]);
    let out = run(&records, None);
    let ud = &out.tables["user_daily"];
    assert_eq!(
        ud.keys().cloned().collect::<Vec<_>>(),
        vec!["2024-03-09", "2024-03-10", "2024-03-11"]
    );
    let prev = &ud["2024-03-09"][0];
    assert_eq!(prev[2], json!(1));
    assert_eq!(prev[11], json!(1)); // sessions never span two days
    let mut h = vec![0i64; 24];
    h[23] = 1;
    assert_eq!(prev[16], json!(h));
    let mid = &ud["2024-03-10"][0];
    assert_eq!(mid[2], json!(2));
    assert_eq!(mid[11], json!(2));
    assert_eq!(mid[14], json!(T));
    assert_eq!(mid[15], json!(T + DAY_MS - 1));
    let mut h = vec![0i64; 24];
    h[0] = 1;
    h[23] = 1;
    assert_eq!(mid[16], json!(h));
    let next = &ud["2024-03-11"][0];
    assert_eq!(next[14], json!(T + DAY_MS));
    let mut h = vec![0i64; 24];
    h[0] = 1;
    assert_eq!(next[16], json!(h));
}

#[test]
fn listens_by_hour_counts() {
    let records = recs(&[
        ev("1", "play", "h", "t", "a", T, 1, 1),
        ev("2", "skip", "h", "t", "a", T + H - 1, 1, 1),
        ev("3", "play", "h", "t", "a", T + H, 1, 1),
        ev("4", "play", "h", "t", "a", T + 13 * H + 1234, 1, 1),
        ev("5", "play", "h", "t", "a", T + 13 * H + 59 * 60_000, 1, 1),
        ev("6", "play", "h", "t", "a", T + 23 * H, 1, 1),
    ]);
    let out = run(&records, None);
    let row = &part(&out, "user_daily", D)[0];
    let mut h = vec![0i64; 24];
    h[0] = 2;
    h[1] = 1;
    h[13] = 2;
    h[23] = 1;
    assert_eq!(row[16], json!(h));
}

// ---------------------------------------------------------------------------
// ties and orderings
// ---------------------------------------------------------------------------

#[test]
fn top_artist_ties_and_row_order() {
    let records = recs(&[
        ev("1", "play", "u", "t", "b", T + 1, 1, 1),
        ev("2", "play", "u", "t", "b", T + 2, 1, 1),
        ev("3", "skip", "u", "t", "a", T + 3, 1, 1),
        ev("4", "play", "u", "t", "a", T + 4, 1, 1),
        ev("5", "play", "u", "t", "c", T + 5, 1, 1),
        // byte-wise: "B" < "a"
        ev("6", "play", "v", "t", "a", T + 6, 1, 1),
        ev("7", "play", "v", "t", "B", T + 7, 1, 1),
        // "z" < "é" (0x7a < 0xc3)
        ev("8", "play", "é", "t", "é", T + 8, 1, 1),
        ev("9", "play", "é", "t", "z", T + 9, 1, 1),
        ev("10", "play", "B", "t", "x", T + 10, 1, 1),
        ev("11", "play", "a", "t", "x", T + 11, 1, 1),
        ev("12", "play", "z", "t", "x", T + 12, 1, 1),
    ]);
    let out = run(&records, None);
    let rows = part(&out, "user_daily", D);
    let users: Vec<Value> = rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(
        users,
        vec![json!("B"), json!("a"), json!("u"), json!("v"), json!("z"), json!("é")]
    );
    let top = |u: &str| -> (Value, Value) {
        let r = rows.iter().find(|r| r[0] == json!(u)).unwrap();
        (r[17].clone(), r[18].clone())
    };
    assert_eq!(top("u"), (json!("a"), json!(2)));
    assert_eq!(top("v"), (json!("B"), json!(1)));
    assert_eq!(top("é"), (json!("z"), json!(1)));

    // user_track_daily.artist_id: smallest artist among the listens
    let t = part(&out, "user_track_daily", D);
    let r = t.iter().find(|r| r[0] == json!("u")).unwrap();
    assert_eq!(r[3], json!("a"));
    let r = t.iter().find(|r| r[0] == json!("v")).unwrap();
    assert_eq!(r[3], json!("B"));
    let r = t.iter().find(|r| r[0] == json!("é")).unwrap();
    assert_eq!(r[3], json!("z"));
    // user_artist_daily rows sorted by (user, artist)
    let a = part(&out, "user_artist_daily", D);
    let keys: Vec<(Value, Value)> = a.iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    assert_eq!(
        keys,
        vec![
            (json!("B"), json!("x")),
            (json!("a"), json!("x")),
            (json!("u"), json!("a")),
            (json!("u"), json!("b")),
            (json!("u"), json!("c")),
            (json!("v"), json!("B")),
            (json!("v"), json!("a")),
            (json!("z"), json!("x")),
            (json!("é"), json!("z")),
            (json!("é"), json!("é")),
        ]
    );
}

#[test]
fn top_ten_lists() {
    // (artist, plays, skips)
    let spec: Vec<(&str, usize, usize)> = vec![
        ("k01", 3, 0),
        ("k02", 3, 1),
        ("k03", 3, 0),
        ("k04", 5, 2),
        ("k05", 1, 0),
        ("k06", 1, 0),
        ("k07", 1, 1),
        ("k08", 2, 0),
        ("k09", 2, 0),
        ("k10", 1, 0),
        ("k11", 1, 0),
        ("k12", 0, 4),
        ("K13", 1, 0),
    ];
    let mut values = Vec::new();
    let mut n = 0i64;
    for (artist, plays, skips) in &spec {
        for i in 0..(plays + skips) {
            n += 1;
            let ty = if i < *plays { "play" } else { "skip" };
            values.push(ev(
                &format!("id{}", n),
                ty,
                "u",
                &format!("t{}", artist),
                artist,
                T + n * 1000,
                1,
                1,
            ));
        }
    }
    assert_eq!(n, 32);
    let out = run(&recs(&values), None);
    let row = &part(&out, "user_profile_28d", D)[0];
    assert_eq!(row[3], json!(32)); // listens
    assert_eq!(row[4], json!(24)); // plays: 3+3+3+5+1+1+1+2+2+1+1+0+1
    assert_eq!(row[5], json!(8)); // skips: 1 (k02) + 2 (k04) + 1 (k07) + 4 (k12)
    assert_eq!(row[6], json!(8f64 / 32f64));
    assert_eq!(row[8], json!(13));
    assert_eq!(row[9], json!(13));
    assert_eq!(
        row[10],
        json!([
            ["k04", 5, 2],
            ["k01", 3, 0],
            ["k03", 3, 0],
            ["k02", 3, 1],
            ["k08", 2, 0],
            ["k09", 2, 0],
            ["K13", 1, 0],
            ["k05", 1, 0],
            ["k06", 1, 0],
            ["k10", 1, 0]
        ])
    );
    assert_eq!(
        row[11],
        json!([
            ["tk04", 5, 2],
            ["tk01", 3, 0],
            ["tk03", 3, 0],
            ["tk02", 3, 1],
            ["tk08", 2, 0],
            ["tk09", 2, 0],
            ["tK13", 1, 0],
            ["tk05", 1, 0],
            ["tk06", 1, 0],
            ["tk10", 1, 0]
        ])
    );
    // user_daily top artist: k04 with 7 listens
    let ud = &part(&out, "user_daily", D)[0];
    assert_eq!((ud[17].clone(), ud[18].clone()), (json!("k04"), json!(7)));

    // only skips: empty lists
    let out = run(&recs(&[ev("s", "skip", "u", "t", "a", T, 1, 1)]), None);
    let row = &part(&out, "user_profile_28d", D)[0];
    assert_eq!(row[10], json!([]));
    assert_eq!(row[11], json!([]));
    assert_eq!(row[6], json!(1.0));
}

// ---------------------------------------------------------------------------
// profile window
// ---------------------------------------------------------------------------

#[test]
fn profile_window_is_28_days() {
    let records = recs(&[
        ev("1", "play", "w", "t1", "a1", T + 1000, 10, 10),          // day D
        ev("2", "skip", "w", "t2", "a2", T + DAY_MS + 1000, 20, 10), // day D+1
        ev("3", "play", "x", "t1", "a1", T + 2000, 5, 10),           // day D, other user
        ev("4", "play", "w", "t1", "a1", T + 40 * DAY_MS, 1, 1),     // out of range
        ev("5", "play", "w", "t1", "a1", T - 1, 1, 1),               // out of range (D-1)
    ]);
    let out = run(&records, Some((D, D + 28)));
    assert_eq!(out.out_of_range, 2);
    let prof = &out.tables["user_profile_28d"];
    assert_eq!(prof.len(), 29); // as-of D ..= D+28, every one has a listen in its window
                                // as_of D: w has event 1; x has event 3
    assert_eq!(
        part(&out, "user_profile_28d", D),
        &vec![
            json!([
                "w",
                "2024-03-10",
                1,
                1,
                1,
                0,
                0.0,
                10,
                1,
                1,
                [["a1", 1, 0]],
                [["t1", 1, 0]]
            ]),
            json!([
                "x",
                "2024-03-10",
                1,
                1,
                1,
                0,
                0.0,
                5,
                1,
                1,
                [["a1", 1, 0]],
                [["t1", 1, 0]]
            ]),
        ]
    );
    // as_of D+27 (2024-04-06): window D..D+27 holds day D (27 days before): both events of w
    assert_eq!(day_string(D + 27), "2024-04-06");
    assert_eq!(
        part(&out, "user_profile_28d", D + 27),
        &vec![
            json!([
                "w",
                "2024-04-06",
                2,
                2,
                1,
                1,
                0.5,
                30,
                2,
                2,
                [["a1", 1, 0]],
                [["t1", 1, 0]]
            ]),
            json!([
                "x",
                "2024-04-06",
                1,
                1,
                1,
                0,
                0.0,
                5,
                1,
                1,
                [["a1", 1, 0]],
                [["t1", 1, 0]]
            ]),
        ]
    );
    // as_of D+28: day D is 28 days before: out. x has nothing left: no row.
    assert_eq!(
        part(&out, "user_profile_28d", D + 28),
        &vec![json!(["w", "2024-04-07", 1, 1, 0, 1, 1.0, 20, 1, 1, [], []])]
    );
    // daily tables only have the two days with listens
    assert_eq!(out.tables["user_daily"].len(), 2);
    assert_eq!(out.tables["user_track_daily"].len(), 2);
    assert_eq!(out.tables["user_artist_daily"].len(), 2);

    // a range whose later days have no listens in any window: no partitions there
    let out = run(&records[..1], Some((D, D + 40)));
    let prof = &out.tables["user_profile_28d"];
    assert_eq!(prof.len(), 28);
    assert!(prof.contains_key(&day_string(D + 27)));
    assert!(!prof.contains_key(&day_string(D + 28)));
}

#[test]
fn completion_uses_min_of_played_and_duration() {
    let records = recs(&[
        ev("1", "play", "c", "t", "a", T + 1, 300_000, 200_000),
        ev("2", "skip", "c", "t", "a", T + 2, 50_000, 100_000),
    ]);
    let out = run(&records, None);
    let row = &part(&out, "user_daily", D)[0];
    assert_eq!(row[7], json!(350_000)); // ms_played is the raw sum
    assert_eq!(row[8], json!(250_000f64 / 300_000f64));
    assert_eq!(row[5], json!(0)); // 50000 ms is not an early skip
    let t = &part(&out, "user_track_daily", D)[0];
    assert_eq!(t[9], json!(250_000f64 / 300_000f64));
    // early skip boundary: 29999 is early, 30000 is not; plays are never early skips
    let records = recs(&[
        ev("1", "skip", "c", "t", "a", T + 1, 29_999, 200_000),
        ev("2", "skip", "c", "t", "a", T + 2, 30_000, 200_000),
        ev("3", "play", "c", "t", "a", T + 3, 0, 200_000),
    ]);
    let out = run(&records, None);
    let row = &part(&out, "user_daily", D)[0];
    assert_eq!(row[5], json!(1));
    assert_eq!(row[6], json!(2f64 / 3f64));
}

// ---------------------------------------------------------------------------
// volume and determinism
// ---------------------------------------------------------------------------

#[test]
fn volume_and_order_independence() {
    // simple LCG so the test needs no extra crates
    let mut s: u64 = 0x2545F4914F6CDD1D;
    let mut next = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 33) as i64
    };
    let n = 200_000;
    let mut records = Vec::with_capacity(n);
    for i in 0..n {
        let user = format!("user{}", next() % 2000);
        let track = format!("track{}", next() % 5000);
        let artist = format!("artist{}", next() % 500);
        let ts = T + (next() % (30 * DAY_MS));
        let ty = if next() % 3 == 0 { "skip" } else { "play" };
        let id = if i % 50 == 0 && i > 0 {
            format!("ev{}", i - 1)
        } else {
            format!("ev{}", i)
        };
        let v = ev(
            &id,
            ty,
            &user,
            &track,
            &artist,
            ts,
            next() % 400_000,
            1 + next() % 300_000,
        );
        records.push(RefRecord {
            source: "listen-events".into(),
            partition: (i % 8) as i32,
            offset: i as i64,
            message_ts: Some(ts),
            value: Some(v.into_bytes()),
        });
    }
    records.push(kafka(1_000_000, "garbage"));
    let start = std::time::Instant::now();
    let out = run(&records, None);
    eprintln!("reference over {} records: {:?}", records.len(), start.elapsed());
    assert_eq!(out.read, out.kept + out.duplicates + out.rejected + out.out_of_range);
    assert_eq!(out.rejected, 1);
    assert!(out.duplicates > 0);
    let total_listens: i64 = out.tables["user_daily"]
        .values()
        .flat_map(|rows| rows.iter())
        .map(|r| r[2].as_i64().unwrap())
        .sum();
    assert_eq!(total_listens as u64, out.kept);
    let total_track: i64 = out.tables["user_track_daily"]
        .values()
        .flat_map(|rows| rows.iter())
        .map(|r| r[4].as_i64().unwrap())
        .sum();
    assert_eq!(total_track as u64, out.kept);

    let mut shuffled = records.clone();
    shuffled.reverse();
    let mid = shuffled.len() / 2;
    shuffled.rotate_left(mid);
    let out2 = run(&shuffled, None);
    assert_eq!(out2.tables, out.tables);
}

#[test]
fn sliding_profile_equals_naive_profile() {
    let mut s: u64 = 42;
    let mut next = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 33) as i64
    };
    let mut values = Vec::new();
    for i in 0..20_000 {
        // 90 days, but days 20..35 empty, and few users so windows overlap a lot
        let mut day = next() % 90;
        if (20..35).contains(&day) {
            day += 15;
        }
        let ty = if next() % 4 == 0 { "skip" } else { "play" };
        values.push(ev(
            &format!("e{}", i),
            ty,
            &format!("u{}", next() % 40),
            &format!("t{}", next() % 300),
            &format!("a{}", next() % 30),
            T + day * DAY_MS + next() % DAY_MS,
            next() % 100_000,
            1 + next() % 100_000,
        ));
    }
    let records = recs(&values);
    for range in [
        None,
        Some((D - 10, D + 100)),
        Some((D + 30, D + 50)),
        Some((D + 89, D + 89)),
    ] {
        let cfg = RefConfig {
            range: range.map(|(a, b): (i64, i64)| (a as i32, b as i32)),
            run_day: D as i32,
        };
        let fast = reference(&records, &cfg);
        let slow = reference_naive_profile(&records, &cfg);
        assert_eq!(fast, slow, "range {:?}", range);
        assert!(!fast.tables["user_profile_28d"].is_empty());
    }
}
