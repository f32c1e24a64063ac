//! Edge cases of the spec run through the real job, with expected values
//! worked out by hand (or by a closed formula), not copied from a run.

mod common;

use common::{harness, output};
use serde_json::{json, Value};
use std::path::Path;

const DAY: i64 = 20393; // 2025-11-01
const MS: i64 = 86_400_000;

#[allow(clippy::too_many_arguments)]
fn ev(eid: &str, kind: &str, user: &str, track: &str, artist: &str, ts: i64, ms: i64, dur: i64) -> Vec<u8> {
    json!({"event_id": eid, "event_type": kind, "user_id": user, "track_id": track, "artist_id": artist,
           "ts": ts, "ms_played": ms, "track_duration_ms": dur})
    .to_string()
    .into_bytes()
}

fn run(dir: &Path, lines: &[Vec<u8>]) -> output::Tables {
    let input = dir.join("in.ndjson");
    harness::write_lines(&input, lines);
    let out = dir.join("out");
    harness::batch(&[input], &out, None, 2);
    output::read_tables(&out)
}

fn col(table: &str, name: &str) -> usize {
    output::declared(table).iter().position(|c| c.0 == name).unwrap()
}

fn row<'a>(t: &'a output::Tables, table: &str, day: &str, user: &str) -> &'a Vec<Value> {
    t[table][day]
        .iter()
        .find(|r| r[0] == user)
        .and_then(|r| r.as_array())
        .unwrap_or_else(|| panic!("{table} {day} {user}"))
}

#[test]
fn session_gap_midnight_ties_and_streaks() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = DAY * MS + 10 * 3_600_000;
    let lines = vec![
        // gaps of exactly 1800000 (same session) and 1800001 (new session)
        ev("g1", "play", "gap", "t1", "a1", t0, 1000, 2000),
        ev("g2", "play", "gap", "t1", "a1", t0 + 1_800_000, 1000, 2000),
        ev("g3", "play", "gap", "t1", "a1", t0 + 3_600_001, 1000, 2000),
        // midnight: the first millisecond of a day belongs to it, the last one to the day before
        ev("m1", "play", "mid", "t1", "a1", (DAY + 1) * MS, 1000, 2000),
        ev("m2", "play", "mid", "t1", "a1", (DAY + 1) * MS - 1, 1000, 2000),
        // equal ts: order by event_id bytes: "e1" < "e10" < "e2" -> skip, skip, play
        ev("e2", "play", "tie", "t1", "B", t0, 1000, 2000),
        ev("e10", "skip", "tie", "t2", "a", t0, 1000, 2000),
        ev("e1", "skip", "tie", "t3", "é", t0, 1000, 2000),
    ];
    let t = run(dir.path(), &lines);
    let (d0, d1) = ("2025-11-01", "2025-11-02");
    let g = row(&t, "user_daily", d0, "gap");
    assert_eq!(g[col("user_daily", "sessions")], 2);
    assert_eq!(g[col("user_daily", "longest_session")], 2);
    let m0 = row(&t, "user_daily", d0, "mid");
    let m1 = row(&t, "user_daily", d1, "mid");
    assert_eq!(
        (
            m0[col("user_daily", "listens")].clone(),
            m1[col("user_daily", "listens")].clone()
        ),
        (json!(1), json!(1))
    );
    assert_eq!(m0[col("user_daily", "listens_by_hour")][23], 1);
    assert_eq!(m1[col("user_daily", "listens_by_hour")][0], 1);
    let tie = row(&t, "user_daily", d0, "tie");
    assert_eq!(tie[col("user_daily", "max_skip_streak")], 2);
    assert_eq!(tie[col("user_daily", "sessions")], 1);
    // top artist: one listen each; "B" (0x42) < "a" (0x61) < "é" (0xc3 0xa9)
    assert_eq!(tie[col("user_daily", "top_artist_id")], "B");
    // rows sorted byte-wise by user: "gap" < "mid" < "tie"
    let users: Vec<&Value> = t["user_daily"][d0].iter().map(|r| &r[0]).collect();
    assert_eq!(users, vec!["gap", "mid", "tie"]);
}

#[test]
fn conflicting_duplicates_keep_the_smallest_tuple() {
    let dir = tempfile::tempdir().unwrap();
    let ts = DAY * MS + 5_000;
    let lines = vec![
        // same event id and day: the smallest (ts, event_type, user, ...) wins: ts ties, "play" < "skip"
        ev("d", "skip", "u1", "t1", "a1", ts, 1000, 2000),
        ev("d", "play", "u2", "t1", "a1", ts, 1000, 2000),
        ev("d", "play", "u3", "t1", "a1", ts + 1, 1000, 2000),
        ev("d", "play", "u2", "t1", "a1", ts, 1000, 2000), // identical retry
        // same event id on another day: not a duplicate
        ev("d", "play", "u1", "t1", "a1", ts + MS, 1000, 2000),
        // ts, type and user tie: "t0" < "t1"
        ev("x", "play", "u9", "t1", "a1", ts, 1000, 2000),
        ev("x", "play", "u9", "t0", "a1", ts, 5, 2000),
    ];
    let t = run(dir.path(), &lines);
    let users: Vec<&Value> = t["user_daily"]["2025-11-01"].iter().map(|r| &r[0]).collect();
    assert_eq!(users, vec!["u2", "u9"]);
    assert_eq!(
        t["user_track_daily"]["2025-11-01"]
            .iter()
            .filter(|r| r[0] == "u9")
            .map(|r| &r[1])
            .collect::<Vec<_>>(),
        vec!["t0"]
    );
    assert_eq!(t["user_daily"]["2025-11-02"].len(), 1);
}

#[test]
fn every_reject_reason_is_written_with_its_raw_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let good = ev("ok", "play", "u1", "t1", "a1", DAY * MS, 1, 2);
    let mut lines: Vec<Vec<u8>> = vec![
        good.clone(),
        b"{\"event_id\": \"\", \"ts\": \"x\"}".to_vec(),
        b"nope".to_vec(),
    ];
    let mut big = b"{\"pad\":\"".to_vec();
    big.extend(std::iter::repeat_n(b'x', 70_000));
    big.extend_from_slice(b"\"}");
    lines.push(big);
    let fields = [
        "event_id",
        "event_type",
        "user_id",
        "track_id",
        "artist_id",
        "ts",
        "ms_played",
        "track_duration_ms",
    ];
    let mut expected: Vec<String> = vec![
        "out_of_range:event_id".into(),
        "invalid_json".into(),
        "too_large".into(),
    ];
    for f in fields {
        let mut v: serde_json::Map<String, Value> = serde_json::from_slice(&good).unwrap();
        v.remove(f);
        lines.push(Value::Object(v.clone()).to_string().into_bytes());
        expected.push(format!("missing_field:{f}"));
        v.insert(f.into(), json!(true));
        lines.push(Value::Object(v).to_string().into_bytes());
        expected.push(format!("wrong_type:{f}"));
    }
    for (f, bad) in [
        ("event_type", json!("pause")),
        ("ts", json!(946_684_799_999i64)),
        ("ms_played", json!(-1)),
        ("context", json!("")),
    ] {
        let mut v: serde_json::Map<String, Value> = serde_json::from_slice(&good).unwrap();
        v.insert(f.into(), bad);
        lines.push(Value::Object(v).to_string().into_bytes());
        expected.push(format!("out_of_range:{f}"));
    }
    let t = run(dir.path(), &lines);
    let rows: Vec<&Value> = t["rejected_events"].values().flatten().collect();
    let reasons: Vec<String> = rows.iter().map(|r| r[4].as_str().unwrap().to_string()).collect();
    assert_eq!(
        reasons, expected,
        "one row per bad line, in line order, with the first failing rule"
    );
    // raw keeps the bytes (the first 65536 of a too large value); offsets are line numbers
    assert_eq!(rows[1][5], "6e6f7065");
    assert_eq!(rows[2][5].as_str().unwrap().len(), 2 * 65536);
    assert_eq!(
        rows.iter().map(|r| r[2].as_i64().unwrap()).collect::<Vec<_>>(),
        (2..=lines.len() as i64).collect::<Vec<_>>()
    );
    assert!(rows.iter().all(|r| r[1] == 0 && r[3].is_null()));
}

/// One user with a million listens in a day: no recursion, no blow-up, exact values.
#[test]
fn a_user_with_a_million_listens_in_a_day() {
    const N: i64 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("heavy.ndjson");
    let mut buf = Vec::with_capacity(150 * N as usize);
    let ts_of = |i: i64| DAY * MS + i * 80 + (i / 250_000) * 1_800_001;
    let mut hours = [0i64; 24];
    let mut artist_plays = [0i64; 7];
    for i in 0..N {
        let skip = i % 1000 < 500;
        let (kind, ms) = if skip { ("skip", 10_000) } else { ("play", 200_000) };
        let ts = ts_of(i);
        hours[((ts % MS) / 3_600_000) as usize] += 1;
        if !skip {
            artist_plays[(i % 7) as usize] += 1;
        }
        use std::io::Write;
        writeln!(
            buf,
            r#"{{"event_id":"h{i}","event_type":"{kind}","user_id":"heavy","track_id":"t{}","artist_id":"a{}","ts":{ts},"ms_played":{ms},"track_duration_ms":200000}}"#,
            i % 1000,
            i % 7
        )
        .unwrap();
    }
    std::fs::write(&input, buf).unwrap();
    let out = dir.path().join("out");
    let report = harness::batch(&[input], &out, None, 2);
    assert_eq!(report.counts.kept, N as u64);
    let t = output::read_tables(&out);
    let d = "2025-11-01";
    let r = row(&t, "user_daily", d, "heavy");
    let c = |n| &r[col("user_daily", n)];
    assert_eq!(c("listens"), N);
    assert_eq!(
        (c("plays"), c("skips"), c("early_skips")),
        (&json!(N / 2), &json!(N / 2), &json!(N / 2))
    );
    assert_eq!(c("ms_played"), (N / 2) * 10_000 + (N / 2) * 200_000);
    assert_eq!(
        c("completion").as_f64().unwrap(),
        ((N / 2) * 210_000) as f64 / (N * 200_000) as f64
    );
    assert_eq!((c("distinct_tracks"), c("distinct_artists")), (&json!(1000), &json!(7)));
    assert_eq!((c("sessions"), c("longest_session")), (&json!(4), &json!(250_000)));
    assert_eq!(c("max_skip_streak"), 500);
    assert_eq!(
        (c("first_listen_at"), c("last_listen_at")),
        (&json!(ts_of(0)), &json!(ts_of(N - 1)))
    );
    assert_eq!(c("listens_by_hour"), &json!(hours.to_vec()));
    // 1,000,000 = 7 * 142857 + 1: artist a0 has one listen more
    assert_eq!(
        (c("top_artist_id"), c("top_artist_listens")),
        (&json!("a0"), &json!(142_858))
    );
    assert_eq!(t["user_track_daily"][d].len(), 1000);
    assert_eq!(t["user_artist_daily"][d].len(), 7);

    let p = row(&t, "user_profile_28d", d, "heavy");
    let pc = |n| &p[col("user_profile_28d", n)];
    assert_eq!(
        (pc("active_days"), pc("listens"), pc("distinct_tracks")),
        (&json!(1), &json!(N), &json!(1000))
    );
    // tracks t500..t999 have 1000 plays and no skips each: ties go to the smallest ids byte-wise
    let top_tracks: Vec<Value> = (500..510).map(|k| json!([format!("t{k}"), 1000, 0])).collect();
    assert_eq!(pc("top_tracks"), &json!(top_tracks));
    let skips_of = |a: usize| (0..N).filter(|i| i % 1000 < 500 && (i % 7) as usize == a).count() as i64;
    // plays descending, skips ascending, id ascending
    let mut artists: Vec<(i64, i64, String)> = (0..7)
        .map(|a| (-artist_plays[a], skips_of(a), format!("a{a}")))
        .collect();
    artists.sort();
    let top_artists: Vec<Value> = artists.iter().map(|(p, s, a)| json!([a, -p, s])).collect();
    assert_eq!(pc("top_artists"), &json!(top_artists));
}
