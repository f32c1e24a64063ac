//! What the HTML report shows, read from an output: the run reports under
//! `_runs/`, the partitions and their sizes, and per-day aggregates of the
//! feature tables over the last days (columns read, never whole rows kept).

use crate::dates;
use crate::schema::Table;
use crate::sink::read::{col, i64_col, str_col};
use crate::store::Store;
use anyhow::{anyhow, Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::RecordBatch;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// Run reports read at most (the latest).
const MAX_RUNS: usize = 500;

/// Everything the page plots.
#[derive(Debug, Default)]
pub struct Facts {
    pub output: String,
    /// The run reports, oldest first.
    pub runs: Vec<Value>,
    /// The days shown: the last `days` days with a `user_daily`,
    /// `rejected_events` or `late_events` partition.
    pub days: Vec<i32>,
    /// Per day: kept events, rejected and late rows.
    pub kept: BTreeMap<i32, f64>,
    pub rejected: BTreeMap<i32, f64>,
    pub late: BTreeMap<i32, f64>,
    /// Duplicates per day, from batch runs that covered exactly that day.
    pub duplicates: BTreeMap<i32, f64>,
    /// Rejected rows per (day, reason).
    pub reasons: BTreeMap<(i32, String), f64>,
    /// user_daily distributions over the days shown: skip rate and early-skip
    /// share (of listens) in 20 bins, sessions and longest session counts.
    pub skip_rate: Vec<f64>,
    pub early_skip: Vec<f64>,
    pub sessions: BTreeMap<i64, f64>,
    pub longest_session: BTreeMap<i64, f64>,
    pub by_hour: Vec<f64>,
    /// Listens per artist over the days shown (top ones).
    pub top_artists: Vec<(String, f64)>,
    /// Per table: (day, rows, bytes) of every partition.
    pub partitions: BTreeMap<&'static str, Vec<(i32, i64, u64)>>,
}

/// Reads what the report needs from `store`, the last `days` days.
pub fn gather(store: &Store, days: usize) -> Result<Facts> {
    let mut f = Facts {
        output: store.describe(),
        runs: runs(store)?,
        skip_rate: vec![0.0; 20],
        early_skip: vec![0.0; 20],
        by_hour: vec![0.0; 24],
        ..Default::default()
    };
    for t in Table::ALL {
        let mut parts = Vec::new();
        for d in store.published_days(t)? {
            let (rows, bytes) = store.partition_summary(t, d)?;
            parts.push((d, rows, bytes));
        }
        f.partitions.insert(t.name(), parts);
    }
    let mut published = std::collections::BTreeSet::new();
    for t in [Table::UserDaily, Table::RejectedEvents, Table::LateEvents] {
        published.extend(store.published_days(t)?);
    }
    let published: Vec<i32> = published.into_iter().collect();
    f.days = published[published.len().saturating_sub(days)..].to_vec();
    let mut artists: HashMap<String, f64> = HashMap::new();
    for &d in &f.days.clone() {
        let what = || format!("reading day {} for the report", dates::day_to_string(d));
        let cols = [
            "listens",
            "early_skips",
            "sessions",
            "longest_session",
            "skip_rate",
            "listens_by_hour",
        ];
        for b in &store
            .read_columns(Table::UserDaily, d, Some(&cols))
            .with_context(what)?
        {
            user_daily(&mut f, d, b).with_context(what)?;
        }
        for b in &store
            .read_columns(Table::UserArtistDaily, d, Some(&["artist_id", "listens"]))
            .with_context(what)?
        {
            let (a, n) = (str_col(b, "artist_id")?, i64_col(b, "listens")?);
            for i in 0..b.num_rows() {
                *artists.entry(a.value(i).to_string()).or_insert(0.0) += n.value(i) as f64;
            }
        }
        for b in &store
            .read_columns(Table::RejectedEvents, d, Some(&["reason"]))
            .with_context(what)?
        {
            let r = str_col(b, "reason")?;
            for i in 0..b.num_rows() {
                let reason = r.value(i).split(':').next().unwrap_or_default().to_string();
                *f.reasons.entry((d, reason)).or_insert(0.0) += 1.0;
            }
            *f.rejected.entry(d).or_insert(0.0) += b.num_rows() as f64;
        }
        let late = store.partition_summary(Table::LateEvents, d)?.0;
        f.late.insert(d, late as f64);
    }
    let mut top: Vec<(String, f64)> = artists.into_iter().collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(15);
    f.top_artists = top;
    f.duplicates = daily_duplicates(&f.runs);
    Ok(f)
}

/// Adds one `user_daily` batch of day `d` to the distributions.
fn user_daily(f: &mut Facts, d: i32, b: &RecordBatch) -> Result<()> {
    let (listens, early) = (i64_col(b, "listens")?, i64_col(b, "early_skips")?);
    let (sessions, longest) = (i64_col(b, "sessions")?, i64_col(b, "longest_session")?);
    let rate = col(b, "skip_rate")?
        .as_primitive_opt::<Float64Type>()
        .ok_or_else(|| anyhow!("skip_rate is not a double"))?;
    let hours = col(b, "listens_by_hour")?
        .as_list_opt::<i32>()
        .ok_or_else(|| anyhow!("listens_by_hour is not a list"))?;
    let bin = |x: f64| ((x * 20.0) as usize).min(19);
    for i in 0..b.num_rows() {
        let n = listens.value(i);
        *f.kept.entry(d).or_insert(0.0) += n as f64;
        f.skip_rate[bin(rate.value(i))] += 1.0;
        if n > 0 {
            f.early_skip[bin(early.value(i) as f64 / n as f64)] += 1.0;
        }
        *f.sessions.entry(sessions.value(i).min(30)).or_insert(0.0) += 1.0;
        *f.longest_session.entry(bucket(longest.value(i))).or_insert(0.0) += 1.0;
        let h = hours.value(i);
        let h = h.as_primitive::<Int64Type>();
        for (j, v) in h.iter().enumerate().take(24) {
            f.by_hour[j] += v.unwrap_or(0) as f64;
        }
    }
    Ok(())
}

/// Session lengths in power-of-two buckets: 1, 2, 4, 8, ... (the bucket's lower end).
fn bucket(n: i64) -> i64 {
    if n <= 1 {
        return n.max(0);
    }
    1 << (63 - n.leading_zeros() as i64)
}

/// The run reports under `_runs/`, oldest first (the latest `MAX_RUNS`).
fn runs(store: &Store) -> Result<Vec<Value>> {
    let mut names = store.list_files("_runs")?;
    names.retain(|n| n.ends_with(".json"));
    names.sort();
    let skip = names.len().saturating_sub(MAX_RUNS);
    let mut out = Vec::new();
    for n in &names[skip..] {
        if let Some(b) = store.read(&format!("_runs/{n}"))? {
            if let Ok(v) = serde_json::from_slice::<Value>(&b) {
                out.push(v);
            }
        }
    }
    Ok(out)
}

/// Duplicates per day from batch runs whose range was exactly that day
/// (the latest such run); other runs' duplicates are not per day.
fn daily_duplicates(runs: &[Value]) -> BTreeMap<i32, f64> {
    let mut out = BTreeMap::new();
    for r in runs {
        let (Some(from), Some(to)) = (r["range"][0].as_str(), r["range"][1].as_str()) else {
            continue;
        };
        if from != to || r["mode"] != "batch" || r["published"] == false {
            continue;
        }
        if let (Ok(d), Some(n)) = (dates::parse_day(from), r["counts"]["duplicates"].as_f64()) {
            out.insert(d, n);
        }
    }
    out
}
