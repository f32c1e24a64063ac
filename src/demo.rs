//! `skipflow demo`: the whole tour on the embedded default. Generates a
//! realistic, dirty week of events, runs the batch job into `./out`, and
//! says what it wrote and how to open it.

use crate::batch::{self, BatchConfig};
use crate::generate::{generate, GenConfig};
use crate::schema::Table;
use crate::sink::read;
use anyhow::{Context, Result};
use arrow_array::cast::AsArray;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Runs the demo into `out` (the events file goes to `out/.demo/`).
pub fn run(out: &Path, workers: usize) -> Result<String> {
    let work = out.join(".demo");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let events = work.join("events.ndjson");
    let cfg = GenConfig {
        users: 3000,
        days: 7,
        seed: 2026,
        dirty: true,
        ..GenConfig::default()
    };
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&events)?);
    let mut err = None;
    let stats = generate(&cfg, &mut |r| {
        if let Some(v) = r.value.filter(|v| !v.is_empty()) {
            if let Err(e) = w.write_all(&v).and_then(|_| w.write_all(b"\n")) {
                err.get_or_insert(e);
            }
        }
    });
    if let Some(e) = err {
        return Err(e).context("writing the demo events");
    }
    w.flush()?;
    drop(w);

    let outcome = batch::run(&BatchConfig {
        output: out.to_path_buf(),
        inputs: vec![events.to_string_lossy().to_string()],
        kafka: None,
        range: None,
        workers,
        progress: true,
    })?;
    let r = &outcome.report;
    let mut s = String::new();
    writeln!(
        s,
        "Generated {} records ({} users, 7 days, dirty) into {}",
        stats.records,
        cfg.users,
        events.display()
    )?;
    writeln!(s)?;
    s.push_str(&crate::report::summary(r));
    writeln!(s)?;
    s.push_str(&crate::inspect::inspect(out, None, None, 0)?);
    if let Some(user) = a_user_with_a_profile(out)? {
        writeln!(s, "\n{user}")?;
    }
    let dir = out.display();
    writeln!(s, "\nRun report: {}", outcome.report_path.display())?;
    writeln!(s, "Explore with DuckDB:")?;
    writeln!(
        s,
        "  duckdb -c \"select * from read_parquet('{dir}/user_daily/*/*.parquet', hive_partitioning=true) order by listens desc limit 10\""
    )?;
    writeln!(
        s,
        "  duckdb -c \"select reason, count(*) from read_parquet('{dir}/rejected_events/*/*.parquet') group by 1\""
    )?;
    writeln!(
        s,
        "More: skipflow inspect {dir} --table user_profile_28d --day <YYYY-MM-DD>"
    )?;
    Ok(s)
}

/// The top artists of the busiest user of the fullest profile day, as text.
fn a_user_with_a_profile(out: &Path) -> Result<Option<String>> {
    let mut fullest: Option<(u64, i32)> = None;
    for day in crate::sink::publish::published_days(out, Table::UserProfile28d)? {
        let rows: usize = read::read_partition(out, Table::UserProfile28d, day)?
            .iter()
            .map(|b| b.num_rows())
            .sum();
        if fullest.is_none_or(|(n, _)| rows as u64 > n) {
            fullest = Some((rows as u64, day));
        }
    }
    let Some((_, day)) = fullest else { return Ok(None) };
    let mut best: Option<(i64, String, String)> = None;
    for b in read::read_partition(out, Table::UserProfile28d, day)? {
        let users = b.column(0).as_string::<i32>();
        let listens = b.column(3).as_primitive::<arrow_array::types::Int64Type>();
        for i in 0..b.num_rows() {
            if best.as_ref().is_none_or(|(l, _, _)| listens.value(i) > *l) {
                let top = crate::inspect::fmt_value(b.column(10), i);
                best = Some((listens.value(i), users.value(i).to_string(), top));
            }
        }
    }
    let as_of = crate::dates::day_to_string(day);
    Ok(best.map(|(l, u, top)| {
        format!("Busiest user as of {as_of}: {u} ({l} listens in 28 days); top artists (artist plays skips):\n  {top}")
    }))
}

/// The demo's output directory: `./out`.
pub fn default_output() -> PathBuf {
    PathBuf::from("out")
}
