//! Quality gates (semantics.md, "Quality gates"): checks on what a run read
//! and wrote, each `warn` or `fail`, configured by a job file's `[quality]`
//! table. [`gates`] judges numbers; [`evaluate`] gathers them from the run
//! ([`Facts`]) and the output's published days. The drivers decide what a
//! failure holds back: batch everything (exit 4), continuous the day's
//! `_SUCCESS` until `skipflow accept`.

pub mod gates;

pub use gates::{failure, tally, Check, Outcome, Quality, Severity};

use crate::report::Counts;
use crate::schema::Table;
use crate::sink::read::day_listens;
use crate::store::Store;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};

/// What a volume check measures on a day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Measure {
    /// Kept events (the sum of `user_daily.listens`).
    Kept,
    /// Rows of a table's partition.
    Rows(Table),
}

/// The tables whose rows per day are checked.
pub const VOLUME_TABLES: [Table; 4] = [
    Table::UserDaily,
    Table::UserTrackDaily,
    Table::UserArtistDaily,
    Table::UserProfile28d,
];

impl Measure {
    fn table(self) -> Table {
        match self {
            Measure::Kept => Table::UserDaily,
            Measure::Rows(t) => t,
        }
    }
}

/// What a run knows about itself, for the gates.
#[derive(Debug, Default)]
pub struct Facts {
    /// Records read, by class (for the shares).
    pub counts: Counts,
    /// The days whose volume is checked.
    pub days: Vec<i32>,
    /// What the run publishes (batch): (measure, day) -> value, for days
    /// that will have a partition.
    pub written: BTreeMap<(Measure, i32), f64>,
    /// Days the run replaces: their published partitions do not count.
    pub replaced: Option<(i32, i32)>,
}

/// Every check of `q` on a run: the shares, then per measure and checked
/// day the volume against the previous published days, then schema drift
/// over the partitions read for it.
pub fn evaluate(store: &Store, q: &Quality, f: &Facts) -> Result<Vec<Check>> {
    let c = &f.counts;
    let mut checks = vec![
        gates::share("rejected_share", c.rejected, c.read, q.rejected_share),
        gates::share("duplicate_share", c.duplicates, c.read, q.duplicate_share),
        gates::share("late_share", c.late, c.read, q.late_share),
    ];
    let mut drift = Drift::default();
    let measures = std::iter::once(Measure::Kept).chain(VOLUME_TABLES.map(Measure::Rows));
    for m in measures {
        let (name, gate) = match m {
            Measure::Kept => ("kept_volume", q.kept_volume),
            Measure::Rows(_) => ("table_rows", q.table_rows),
        };
        let series = series(store, m, f, &mut drift)?;
        let table = matches!(m, Measure::Rows(_)).then_some(m.table());
        for &day in &f.days {
            let value = series.get(&day).copied().unwrap_or(0.0);
            checks.push(gates::band(name, table, day, value, &series, gate));
        }
    }
    let found: Vec<String> = drift
        .found
        .iter()
        .map(|((t, d), what)| format!("{}: {what}", crate::store::partition_key(*t, *d)))
        .collect();
    checks.push(gates::schema(drift.checked.len(), &found, q.schema_drift));
    Ok(checks)
}

/// Partitions whose schema was compared, and how those that differ do.
#[derive(Default)]
struct Drift {
    checked: BTreeSet<(Table, i32)>,
    found: BTreeMap<(Table, i32), String>,
}

/// `m` per day over the days a check needs: the run's own values, and the
/// published ones (outside the replaced days) of the baseline days. A
/// published day whose schema drifted is left out (the schema check reports it).
fn series(store: &Store, m: Measure, f: &Facts, drift: &mut Drift) -> Result<BTreeMap<i32, f64>> {
    let table = m.table();
    let replaced = |d: i32| f.replaced.is_some_and(|(a, b)| d >= a && d <= b);
    let mut available: BTreeMap<i32, Option<f64>> = BTreeMap::new();
    for d in store.published_days(table)? {
        if !replaced(d) {
            available.insert(d, None);
        }
    }
    for (&(wm, d), &v) in &f.written {
        if wm == m {
            available.insert(d, Some(v));
        }
    }
    let mut needed = BTreeSet::new();
    for &day in &f.days {
        needed.extend(
            available
                .range(..=day)
                .rev()
                .take(gates::BASELINE_DAYS + 1)
                .map(|(d, _)| *d),
        );
    }
    let mut series = BTreeMap::new();
    for d in needed {
        let v = match available[&d] {
            Some(v) => Some(v),
            None => published(store, m, d, drift)?,
        };
        if let Some(v) = v {
            series.insert(d, v);
        }
    }
    Ok(series)
}

/// `m` of a published day, from its partition, after comparing its schema
/// with `schemas/` (None: it differs).
fn published(store: &Store, m: Measure, day: i32, drift: &mut Drift) -> Result<Option<f64>> {
    let table = m.table();
    let what = || {
        format!(
            "reading {} {} for the quality gates",
            table.name(),
            crate::dates::day_to_string(day)
        )
    };
    let footer = store.partition_footer(table, day).with_context(what)?;
    if drift.checked.insert((table, day)) {
        if let Some(d) = footer.schema.as_ref().and_then(|s| gates::schema_difference(table, s)) {
            drift.found.insert((table, day), d);
        }
    }
    if drift.found.contains_key(&(table, day)) {
        return Ok(None);
    }
    Ok(Some(match (m, footer.kept_events) {
        (Measure::Kept, Some(n)) => n as f64,
        // Files without the footer key (written by something else): summed.
        (Measure::Kept, None) => day_listens(store, day).with_context(what)? as f64,
        (Measure::Rows(_), _) => footer.rows as f64,
    }))
}
