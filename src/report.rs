//! Run accounting and the run report written under `<output>/_runs/`; the
//! HTML report about an output (`skipflow report`) in [`html`].

pub mod charts;
pub mod gather;
pub mod html;

use crate::decode::Reject;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Record counts of one run; every record read is in exactly one class:
/// `read = kept + duplicates + rejected + out_of_range + late`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Counts {
    pub read: u64,
    pub kept: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub out_of_range: u64,
    pub late: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.read += o.read;
        self.kept += o.kept;
        self.duplicates += o.duplicates;
        self.rejected += o.rejected;
        self.out_of_range += o.out_of_range;
        self.late += o.late;
        for (k, v) in &o.rejected_by_reason {
            *self.rejected_by_reason.entry(k.clone()).or_insert(0) += v;
        }
    }
    pub fn reject(&mut self, r: Reject) {
        self.rejected += 1;
        *self.rejected_by_reason.entry(r.to_string()).or_insert(0) += 1;
    }
    /// Whether the accounting identity holds.
    pub fn balanced(&self) -> bool {
        self.read == self.kept + self.duplicates + self.rejected + self.out_of_range + self.late
    }
}

/// What one input contributed.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputRange {
    File {
        path: String,
    },
    Kafka {
        topic: String,
        partition: i32,
        start_offset: i64,
        end_offset: i64,
    },
}

/// Rows and partitions written to one table.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TableWrite {
    pub partitions_written: u64,
    pub partitions_removed: u64,
    pub rows: u64,
    pub bytes: u64,
    pub days: Vec<String>,
}

/// The JSON run report.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub mode: String,
    pub version: String,
    pub started_at: String,
    pub finished_at: String,
    pub elapsed_s: f64,
    pub workers: usize,
    pub range: Option<(String, String)>,
    pub inputs: Vec<InputRange>,
    pub counts: Counts,
    pub tables: BTreeMap<String, TableWrite>,
    /// Window days before the range that had no `user_daily` partition.
    pub missing_window_days: Vec<String>,
    /// Whether the run's partitions were published (false: a quality gate failed).
    pub published: bool,
    /// Every quality gate check, with its value, threshold, baseline and outcome.
    pub quality: Vec<crate::quality::Check>,
}

/// The run summary table printed after a batch run.
pub fn summary(r: &RunReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let c = &r.counts;
    let _ = writeln!(
        s,
        "skipflow {} run {} ({:.1} s, {} workers)",
        r.mode, r.run_id, r.elapsed_s, r.workers
    );
    if let Some((f, t)) = &r.range {
        let _ = writeln!(s, "range      {f} .. {t}");
    }
    let rate = if r.elapsed_s > 0.0 {
        c.read as f64 / r.elapsed_s
    } else {
        0.0
    };
    let _ = writeln!(s, "read       {:>12}   ({:.0} records/s)", c.read, rate);
    let _ = writeln!(s, "kept       {:>12}", c.kept);
    let _ = writeln!(s, "duplicates {:>12}", c.duplicates);
    let _ = writeln!(s, "rejected   {:>12}", c.rejected);
    for (k, v) in &c.rejected_by_reason {
        let _ = writeln!(s, "  {k:<30} {v:>8}");
    }
    let _ = writeln!(s, "out_of_range {:>10}", c.out_of_range);
    if c.late > 0 {
        let _ = writeln!(s, "late       {:>12}", c.late);
    }
    let _ = writeln!(
        s,
        "\n{:<20} {:>10} {:>8} {:>12} {:>12}",
        "table", "partitions", "removed", "rows", "bytes"
    );
    for (name, t) in &r.tables {
        let _ = writeln!(
            s,
            "{:<20} {:>10} {:>8} {:>12} {:>12}",
            name, t.partitions_written, t.partitions_removed, t.rows, t.bytes
        );
    }
    quality_summary(&mut s, &r.quality, r.published);
    if !r.missing_window_days.is_empty() {
        let _ = writeln!(
            s,
            "\nwindow days with no user_daily partition: {}",
            r.missing_window_days.len()
        );
    }
    s
}

/// The gates in the summary: counts by outcome, then every check that
/// warned or failed.
fn quality_summary(s: &mut String, checks: &[crate::quality::Check], published: bool) {
    use crate::quality::Outcome;
    use std::fmt::Write as _;
    if checks.is_empty() {
        return;
    }
    let counts: Vec<String> = crate::quality::tally(checks)
        .into_iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    let _ = writeln!(s, "\nquality gates: {} checks: {}", checks.len(), counts.join(", "));
    // Failures first; at most SHOWN lines (the run report has them all).
    const SHOWN: usize = 12;
    let mut fired: Vec<&crate::quality::Check> = checks
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Warn | Outcome::Fail))
        .collect();
    fired.sort_by_key(|c| c.outcome != Outcome::Fail);
    for c in fired.iter().take(SHOWN) {
        let tag = if c.outcome == Outcome::Fail { "FAIL" } else { "warn" };
        let _ = writeln!(s, "  {tag} {}", c.line());
    }
    if fired.len() > SHOWN {
        let _ = writeln!(s, "  ... and {} more in the run report", fired.len() - SHOWN);
    }
    if !published {
        let _ = writeln!(s, "a quality gate failed: nothing was published");
    }
}

/// Resident set size of this process in MB (Linux; 0 elsewhere).
pub fn rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map(|pages| pages * 4096 / (1 << 20))
        .unwrap_or(0)
}
