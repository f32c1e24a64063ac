//! The parse floor of `make bench`: the same NDJSON file parsed with
//! serde_json into borrowed fields on W threads, nothing else (no
//! validation, no dataflow, no output). skipflow's batch time over this one
//! says how far the job is from the cost of just reading its input.
//!
//!   cargo bench --bench parse_floor -- FILE WORKERS
//!
//! Prints `parse_floor: <seconds> s <records> records <errors> unparsable`;
//! the file is read into memory first, outside the timing (the job reads it
//! from the page cache, which `make bench` warms).

use serde::Deserialize;
use std::borrow::Cow;
use std::time::Instant;

#[derive(Deserialize)]
#[allow(dead_code)]
struct Event<'a> {
    #[serde(borrow)]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    track_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    artist_id: Option<Cow<'a, str>>,
    ts: Option<i64>,
    ms_played: Option<i64>,
    track_duration_ms: Option<i64>,
    #[serde(borrow)]
    context: Option<Cow<'a, str>>,
    #[serde(borrow)]
    device: Option<Cow<'a, str>>,
    #[serde(borrow)]
    country: Option<Cow<'a, str>>,
}

/// Parses every line of `chunk`: (records, unparsable, a checksum).
fn parse(chunk: &[u8]) -> (u64, u64, i64) {
    let (mut n, mut bad, mut sum) = (0, 0, 0i64);
    for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        n += 1;
        // As skipflow decodes: one UTF-8 check of the line, then a parser
        // that trusts it (faster than checking each string on its own).
        let Ok(text) = std::str::from_utf8(line) else {
            bad += 1;
            continue;
        };
        match serde_json::from_str::<Event>(text) {
            Ok(e) => sum = sum.wrapping_add(e.ms_played.unwrap_or(0) + e.user_id.map_or(0, |u| u.len() as i64)),
            Err(_) => bad += 1,
        }
    }
    (n, bad, sum)
}

/// `data` cut into `k` pieces at line ends.
fn chunks(data: &[u8], k: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=k {
        let mut end = if i == k {
            data.len()
        } else {
            (data.len() * i / k).max(start)
        };
        while end < data.len() && data[end - 1] != b'\n' {
            end += 1;
        }
        out.push(&data[start..end]);
        start = end;
    }
    out
}

fn main() {
    // `cargo test --all-targets` runs bench targets as tests (no `--bench`).
    if !std::env::args().any(|a| a == "--bench") {
        println!("parse_floor: run it with `make bench` or `cargo bench --bench parse_floor -- FILE WORKERS`");
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let (Some(file), workers) = (args.first(), args.get(1).and_then(|w| w.parse().ok()).unwrap_or(2)) else {
        eprintln!("usage: cargo bench --bench parse_floor -- FILE [WORKERS]");
        std::process::exit(2);
    };
    let data = std::fs::read(file).unwrap_or_else(|e| panic!("reading {file}: {e}"));
    let t0 = Instant::now();
    let results: Vec<(u64, u64, i64)> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks(&data, workers)
            .into_iter()
            .map(|c| s.spawn(move || parse(c)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let secs = t0.elapsed().as_secs_f64();
    let (n, bad) = results.iter().fold((0, 0), |a, r| (a.0 + r.0, a.1 + r.1));
    let sum = results.iter().fold(0i64, |a, r| a.wrapping_add(r.2));
    println!("parse_floor: {secs:.3} s {n} records {bad} unparsable (checksum {sum})");
}
