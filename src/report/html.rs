//! `skipflow report`: one self-contained HTML page about an output (what
//! was read, kept and rejected per day and reason, quality gates, table
//! sizes, run history, feature distributions). Charts are inline SVG
//! (plotters); the page is a minijinja template with a Content-Security-
//! Policy that forbids every network request.

use super::charts::{bars, short, Series};
use super::gather::{gather, Facts};
use crate::dates;
use crate::store::Store;
use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

const TEMPLATE: &str = include_str!("../../templates/report.html");

/// Runs shown in the run-history and gate-history charts (the latest).
const RUNS_SHOWN: usize = 40;

#[derive(Serialize)]
struct Chart {
    id: &'static str,
    title: &'static str,
    svg: String,
    note: String,
}

#[derive(Serialize)]
struct TableRow {
    name: &'static str,
    partitions: usize,
    rows: i64,
    bytes: u64,
    first: String,
    last: String,
}

/// Writes the page for the output in `store` (its last `days` days).
pub fn write_page(store: &Store, days: usize) -> Result<String> {
    let f = gather(store, days)?;
    let charts = charts(&f)?;
    let latest = f.runs.last();
    let checked = f
        .runs
        .iter()
        .rev()
        .find(|r| r["quality"].as_array().is_some_and(|q| !q.is_empty()));
    let all_checks: Vec<Value> = checked
        .and_then(|r| r["quality"].as_array().cloned())
        .unwrap_or_default();
    let fired = |c: &Value| c["outcome"] == "fail" || c["outcome"] == "warn";
    let mut checks: Vec<Value> = all_checks.iter().filter(|c| fired(c)).cloned().collect();
    checks.sort_by_key(|c| c["outcome"] != "fail");
    let (verdict, class) = verdict(latest, &checks);
    if checks.is_empty() {
        checks = all_checks.iter().take(12).cloned().collect();
    }
    let hidden = all_checks.len() - checks.len();
    let mut env = minijinja::Environment::new();
    env.add_template("report", TEMPLATE)?;
    let ctx = serde_json::json!({
        "output": f.output,
        "generated": chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        "days_shown": f.days.len(),
        "first_day": f.days.first().map(|d| dates::day_to_string(*d)).unwrap_or_default(),
        "last_day": f.days.last().map(|d| dates::day_to_string(*d)).unwrap_or_default(),
        "runs": f.runs.len(),
        "verdict": verdict,
        "verdict_class": class,
        "latest": latest.map(latest_row),
        "charts": charts,
        "checks": checks,
        "checks_hidden": hidden,
        "tables": tables(&f),
    });
    env.get_template("report")?
        .render(minijinja::value::Serde(&ctx))
        .context("rendering the report page")
}

/// One line a person reads first: can the output be trusted?
fn verdict(latest: Option<&Value>, fired: &[Value]) -> (String, &'static str) {
    let Some(r) = latest else {
        return ("No run report yet: nothing to judge.".into(), "warn");
    };
    let fails = fired.iter().filter(|c| c["outcome"] == "fail").count();
    let warns = fired.len() - fails;
    let balanced = serde_json::from_value::<crate::report::Counts>(r["counts"].clone()).is_ok_and(|c| c.balanced());
    match (r["published"] != false, fails, warns, balanced) {
        (false, ..) => (
            format!("The latest run published nothing: {fails} quality checks failed."),
            "fail",
        ),
        (_, f, _, _) if f > 0 => (
            format!("{f} quality checks failed: a day is held or nothing was published."),
            "fail",
        ),
        (_, _, _, false) => (
            "The latest run's counts do not add up: read the run report.".into(),
            "fail",
        ),
        (_, _, w, _) if w > 0 => (format!("Published, with {w} quality warnings to look at."), "warn"),
        _ => (
            "Published; every quality check passed and every record is accounted for.".into(),
            "ok",
        ),
    }
}

fn latest_row(r: &Value) -> Value {
    let c = &r["counts"];
    serde_json::json!({
        "run_id": r["run_id"], "mode": r["mode"], "finished_at": r["finished_at"],
        "elapsed_s": r["elapsed_s"], "read": c["read"], "kept": c["kept"],
        "duplicates": c["duplicates"], "rejected": c["rejected"],
        "out_of_range": c["out_of_range"], "late": c["late"],
        "published": if r["published"] != false { "yes" } else { "no" },
    })
}

fn tables(f: &Facts) -> Vec<TableRow> {
    f.partitions
        .iter()
        .map(|(name, parts)| TableRow {
            name,
            partitions: parts.len(),
            rows: parts.iter().map(|p| p.1).sum(),
            bytes: parts.iter().map(|p| p.2).sum(),
            first: parts.first().map(|p| dates::day_to_string(p.0)).unwrap_or_default(),
            last: parts.last().map(|p| dates::day_to_string(p.0)).unwrap_or_default(),
        })
        .collect()
}

/// The values of `m` on `f.days`.
fn per_day(f: &Facts, m: &BTreeMap<i32, f64>) -> Vec<f64> {
    f.days.iter().map(|d| m.get(d).copied().unwrap_or(0.0)).collect()
}

fn chart(id: &'static str, title: &'static str, svg: String, note: impl Into<String>) -> Chart {
    Chart {
        id,
        title,
        svg,
        note: note.into(),
    }
}

fn charts(f: &Facts) -> Result<Vec<Chart>> {
    let days: Vec<String> = f
        .days
        .iter()
        .map(|d| dates::day_to_string(*d)[5..].to_string())
        .collect();
    let mut out = vec![
        chart(
            "records",
            "Records per day by class",
            bars(
                "records",
                &days,
                &[
                    Series::new("kept", per_day(f, &f.kept)),
                    Series::new("duplicates", per_day(f, &f.duplicates)),
                    Series::new("rejected", per_day(f, &f.rejected)),
                    Series::new("late", per_day(f, &f.late)),
                ],
            )?,
            "kept: user_daily listens; rejected and late: rows of rejected_events and late_events by day; \
             duplicates: batch runs that covered exactly one day.",
        ),
        chart(
            "reasons",
            "Reject reasons over days",
            reasons(f, &days)?,
            "rejected_events rows by reason class",
        ),
    ];
    out.extend(gates_and_runs(f)?);
    out.extend(distributions(f)?);
    out.push(partitions(f, &days)?);
    Ok(out)
}

fn reasons(f: &Facts, days: &[String]) -> Result<String> {
    let mut by: BTreeMap<&str, BTreeMap<i32, f64>> = BTreeMap::new();
    for ((d, reason), n) in &f.reasons {
        *by.entry(reason).or_default().entry(*d).or_insert(0.0) += n;
    }
    let series: Vec<Series> = by.iter().map(|(r, m)| Series::new(*r, per_day(f, m))).collect();
    bars("rejected records", days, &series)
}

/// Gate outcomes per run, and each run's duration and throughput.
fn gates_and_runs(f: &Facts) -> Result<Vec<Chart>> {
    let runs = &f.runs[f.runs.len().saturating_sub(RUNS_SHOWN)..];
    let labels: Vec<String> = runs
        .iter()
        .map(|r| {
            r["finished_at"]
                .as_str()
                .map(|t| t.get(5..16).unwrap_or(t).replace('T', " "))
                .unwrap_or_default()
        })
        .collect();
    let outcome = |o: &str| -> Vec<f64> {
        runs.iter()
            .map(|r| {
                r["quality"]
                    .as_array()
                    .map_or(0, |q| q.iter().filter(|c| c["outcome"] == o).count()) as f64
            })
            .collect()
    };
    let gates = ["pass", "warn", "fail", "skipped"].map(|o| Series::new(o, outcome(o)));
    let secs: Vec<f64> = runs.iter().map(|r| r["elapsed_s"].as_f64().unwrap_or(0.0)).collect();
    let rate: Vec<f64> = runs
        .iter()
        .zip(&secs)
        .map(|(r, s)| {
            if *s > 0.0 {
                r["counts"]["read"].as_f64().unwrap_or(0.0) / s
            } else {
                0.0
            }
        })
        .collect();
    let note = format!(
        "the latest {} runs (continuous mode: one report per commit)",
        runs.len()
    );
    Ok(vec![
        chart(
            "gates",
            "Quality gates: checks per run by outcome",
            bars("checks", &labels, &gates)?,
            note.clone(),
        ),
        chart(
            "duration",
            "Run history: duration",
            bars("seconds", &labels, &[Series::new("seconds", secs)])?,
            note.clone(),
        ),
        chart(
            "throughput",
            "Run history: throughput",
            bars("records read / s", &labels, &[Series::new("records/s", rate)])?,
            note,
        ),
    ])
}

/// The features' distributions over the days shown.
fn distributions(f: &Facts) -> Result<Vec<Chart>> {
    let bins: Vec<String> = (0..20).map(|i| format!("{:.2}", i as f64 / 20.0)).collect();
    let hours: Vec<String> = (0..24).map(|h| format!("{h:02}")).collect();
    let keys = |m: &BTreeMap<i64, f64>| m.keys().map(|k| k.to_string()).collect::<Vec<_>>();
    let vals = |m: &BTreeMap<i64, f64>| m.values().copied().collect::<Vec<_>>();
    let (artists, plays): (Vec<String>, Vec<f64>) = f.top_artists.iter().cloned().unzip();
    let total_listens: f64 = f.kept.values().sum();
    Ok(vec![
        chart(
            "skip_rate",
            "Skip rate per user and day",
            bars("user-days", &bins, &[Series::new("user-days", f.skip_rate.clone())])?,
            "user_daily.skip_rate in bins of 0.05",
        ),
        chart(
            "early_skips",
            "Early skips per user and day (share of listens)",
            bars("user-days", &bins, &[Series::new("user-days", f.early_skip.clone())])?,
            "early_skips / listens (skips with ms_played < 30 s) in bins of 0.05",
        ),
        chart(
            "by_hour",
            "Listens by hour of day (UTC)",
            bars("listens", &hours, &[Series::new("listens", f.by_hour.clone())])?,
            format!("user_daily.listens_by_hour summed: {} listens", short(total_listens)),
        ),
        chart(
            "sessions",
            "Sessions per user and day",
            bars(
                "user-days",
                &keys(&f.sessions),
                &[Series::new("user-days", vals(&f.sessions))],
            )?,
            "user_daily.sessions (30 means 30 or more)",
        ),
        chart(
            "session_length",
            "Longest session per user and day (listens)",
            bars(
                "user-days",
                &keys(&f.longest_session),
                &[Series::new("user-days", vals(&f.longest_session))],
            )?,
            "user_daily.longest_session in power-of-two buckets (the bucket's lower end)",
        ),
        chart(
            "top_artists",
            "Top artists by listens",
            bars("listens", &artists, &[Series::new("listens", plays)])?,
            "user_artist_daily.listens summed over the days shown",
        ),
    ])
}

fn partitions(f: &Facts, days: &[String]) -> Result<Chart> {
    let series: Vec<Series> = f
        .partitions
        .iter()
        .map(|(name, parts)| {
            let m: BTreeMap<i32, f64> = parts.iter().map(|p| (p.0, p.2 as f64)).collect();
            Series::new(*name, per_day(f, &m))
        })
        .collect();
    Ok(chart(
        "partitions",
        "Partitions and their sizes (bytes per day, by table)",
        bars("bytes", days, &series)?,
        "Parquet bytes of each table's partition of the day (all partitions: the Tables list below)",
    ))
}
