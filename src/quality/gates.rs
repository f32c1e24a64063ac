//! The gates and their checks: configuration and judgement of numbers only
//! (nothing here reads the output).
//!
//! - Shares: rejected, duplicate and late records over records read. A share
//!   gate fires when the share reaches its `max`.
//! - Volume: kept events of a day, and rows per table and day, against the
//!   median of the previous 7 published days (fewer on a young output; none:
//!   the check is skipped). A band gate fires when value / median reaches
//!   `min_ratio` or `max_ratio`.
//! - Schema drift: a published partition whose Parquet schema differs from
//!   `schemas/tables.json` (column names, types, nullability).

use crate::dates;
use crate::schema::Table;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How many previous published days make a volume baseline.
pub const BASELINE_DAYS: usize = 7;

/// What a gate that fires does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Not checked.
    Off,
    /// Reported and counted.
    Warn,
    /// Batch: nothing is published, exit 4. Continuous: the day is held.
    Fail,
}

/// A share of records read: fires when `share >= max`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareGate {
    pub max: f64,
    pub severity: Severity,
}

/// A value against its baseline median: fires when the ratio is at or
/// below `min_ratio`, or at or above `max_ratio`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandGate {
    pub min_ratio: f64,
    pub max_ratio: f64,
    pub severity: Severity,
}

/// Fires when any checked partition's schema differs from `schemas/`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaGate {
    pub severity: Severity,
}

/// The `[quality]` table of a job file; keys left out keep their defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quality {
    pub rejected_share: ShareGate,
    pub duplicate_share: ShareGate,
    pub late_share: ShareGate,
    pub kept_volume: BandGate,
    pub table_rows: BandGate,
    pub schema_drift: SchemaGate,
}

impl Default for Quality {
    fn default() -> Quality {
        let warn = Severity::Warn;
        Quality {
            rejected_share: ShareGate {
                max: 0.05,
                severity: warn,
            },
            duplicate_share: ShareGate {
                max: 0.2,
                severity: warn,
            },
            late_share: ShareGate {
                max: 0.05,
                severity: warn,
            },
            kept_volume: BandGate {
                min_ratio: 0.5,
                max_ratio: 2.0,
                severity: warn,
            },
            table_rows: BandGate {
                min_ratio: 0.5,
                max_ratio: 2.0,
                severity: warn,
            },
            schema_drift: SchemaGate {
                severity: Severity::Fail,
            },
        }
    }
}

impl Quality {
    /// Checks the thresholds make sense; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        for (k, g) in [
            ("rejected_share", self.rejected_share),
            ("duplicate_share", self.duplicate_share),
            ("late_share", self.late_share),
        ] {
            if !(g.max > 0.0 && g.max <= 1.0) {
                return Err(format!("[quality] {k}.max must be in (0, 1], not {}", g.max));
            }
        }
        for (k, g) in [("kept_volume", self.kept_volume), ("table_rows", self.table_rows)] {
            if !(g.min_ratio >= 0.0 && g.min_ratio < 1.0 && g.max_ratio > 1.0) {
                return Err(format!(
                    "[quality] {k} needs 0 <= min_ratio < 1 < max_ratio, not {}..{}",
                    g.min_ratio, g.max_ratio
                ));
            }
        }
        Ok(())
    }
}

/// What a check concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Warn,
    Fail,
    /// Not evaluated (no baseline, nothing read).
    Skipped,
}

/// One check, as the run report and the summary show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// The `[quality]` key.
    pub gate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    /// The share, the day's count, or the number of partitions that drifted.
    pub value: f64,
    /// The median of the baseline days (volume checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baseline_days: Vec<String>,
    /// value / baseline (volume checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// Human form of when it fires, e.g. `share >= 0.05`.
    pub threshold: String,
    pub severity: Severity,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Check {
    /// One line for logs and the summary.
    pub fn line(&self) -> String {
        let mut s = self.gate.clone();
        for part in [&self.table, &self.day].into_iter().flatten() {
            s.push(' ');
            s.push_str(part);
        }
        match (self.ratio, self.baseline) {
            (Some(r), Some(b)) => s.push_str(&format!(": {} = {r:.2} x median {b}", self.value)),
            _ if self.gate == "schema_drift" => s.push_str(&format!(": {} partitions", self.value)),
            _ => s.push_str(&format!(": {:.4}", self.value)),
        }
        s.push_str(&format!(" (fires at {})", self.threshold));
        if !self.detail.is_empty() {
            s.push_str(&format!("; {}", self.detail));
        }
        s
    }
}

/// The failed checks, as one line for an error message (None: none failed).
pub fn failure(checks: &[Check]) -> Option<String> {
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c.outcome == Outcome::Fail)
        .map(Check::line)
        .collect();
    (!failed.is_empty()).then(|| failed.join("; "))
}

fn outcome(fires: bool, severity: Severity) -> Outcome {
    match (fires, severity) {
        (_, Severity::Off) => Outcome::Skipped,
        (false, _) => Outcome::Pass,
        (true, Severity::Warn) => Outcome::Warn,
        (true, Severity::Fail) => Outcome::Fail,
    }
}

/// A share check: `part / read` against `g`.
pub fn share(name: &str, part: u64, read: u64, g: ShareGate) -> Check {
    let value = if read == 0 { 0.0 } else { part as f64 / read as f64 };
    Check {
        gate: name.into(),
        table: None,
        day: None,
        value,
        baseline: None,
        baseline_days: Vec::new(),
        ratio: None,
        threshold: format!("share >= {}", g.max),
        severity: g.severity,
        outcome: if read == 0 {
            Outcome::Skipped
        } else {
            outcome(value >= g.max, g.severity)
        },
        detail: format!("{part} of {read} records read"),
    }
}

/// The median of `v` (the mean of the middle two for an even count).
pub fn median(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(s[n / 2]),
        _ => Some((s[n / 2 - 1] + s[n / 2]) / 2.0),
    }
}

/// The previous published days of `day` that make its baseline: the latest
/// [`BASELINE_DAYS`] days before it in `published` (day -> value).
pub fn baseline(published: &BTreeMap<i32, f64>, day: i32) -> Vec<(i32, f64)> {
    let mut b: Vec<(i32, f64)> = published
        .range(..day)
        .rev()
        .take(BASELINE_DAYS)
        .map(|(d, v)| (*d, *v))
        .collect();
    b.reverse();
    b
}

/// A volume check of `value` on `day` against the previous published days
/// in `published` (day -> value; `day` itself and later days are ignored).
pub fn band(
    name: &str,
    table: Option<Table>,
    day: i32,
    value: f64,
    published: &BTreeMap<i32, f64>,
    g: BandGate,
) -> Check {
    let base = baseline(published, day);
    let values: Vec<f64> = base.iter().map(|(_, v)| *v).collect();
    let med = median(&values);
    let ratio = med.map(|m| match (m == 0.0, value == 0.0) {
        (true, true) => 1.0,
        (true, false) => f64::INFINITY,
        _ => value / m,
    });
    let fires = ratio.is_some_and(|r| r <= g.min_ratio || r >= g.max_ratio);
    Check {
        gate: name.into(),
        table: table.map(|t| t.name().to_string()),
        day: Some(dates::day_to_string(day)),
        value,
        baseline: med,
        baseline_days: base.iter().map(|(d, _)| dates::day_to_string(*d)).collect(),
        ratio: ratio.filter(|r| r.is_finite()),
        threshold: format!("ratio <= {} or >= {}", g.min_ratio, g.max_ratio),
        severity: g.severity,
        outcome: match med {
            None if g.severity != Severity::Off => Outcome::Skipped,
            _ => outcome(fires, g.severity),
        },
        detail: match med {
            None => "no published day before it yet".into(),
            Some(_) if base.len() < BASELINE_DAYS => format!("baseline of {} days (young output)", base.len()),
            Some(_) => String::new(),
        },
    }
}

/// The schema check over the partitions looked at: `drifted` lists each
/// differing partition with what differs.
pub fn schema(checked: usize, drifted: &[String], g: SchemaGate) -> Check {
    Check {
        gate: "schema_drift".into(),
        table: None,
        day: None,
        value: drifted.len() as f64,
        baseline: None,
        baseline_days: Vec::new(),
        ratio: None,
        threshold: "any partition differs from schemas/".into(),
        severity: g.severity,
        outcome: outcome(!drifted.is_empty(), g.severity),
        detail: match drifted {
            [] => format!("{checked} partitions checked"),
            _ => drifted.join("; "),
        },
    }
}

/// How `found` differs from `table`'s schema in `schemas/` (None: it does not).
pub fn schema_difference(table: Table, found: &arrow_schema::Schema) -> Option<String> {
    let want = table.schema();
    let mut diffs = Vec::new();
    for f in want.fields() {
        match found.field_with_name(f.name()) {
            Err(_) => diffs.push(format!("column {} missing", f.name())),
            Ok(g) if !g.data_type().equals_datatype(f.data_type()) => diffs.push(format!(
                "column {} is {}, schemas/ says {}",
                f.name(),
                g.data_type(),
                f.data_type()
            )),
            Ok(g) if g.is_nullable() != f.is_nullable() => {
                diffs.push(format!("column {} nullable is {}", f.name(), g.is_nullable()))
            }
            Ok(_) => {}
        }
    }
    for g in found.fields() {
        if want.field_with_name(g.name()).is_err() {
            diffs.push(format!("column {} is not in schemas/", g.name()));
        }
    }
    (!diffs.is_empty()).then(|| diffs.join(", "))
}

/// Counts of the checks by outcome, for the summary and metrics.
pub fn tally(checks: &[Check]) -> BTreeMap<&'static str, usize> {
    let mut t = BTreeMap::new();
    for c in checks {
        let k = match c.outcome {
            Outcome::Pass => "pass",
            Outcome::Warn => "warn",
            Outcome::Fail => "fail",
            Outcome::Skipped => "skipped",
        };
        *t.entry(k).or_insert(0) += 1;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_none() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn baseline_takes_the_latest_seven_days_before() {
        let published: BTreeMap<i32, f64> = (1..=12).map(|d| (d, d as f64)).collect();
        let b = baseline(&published, 10);
        assert_eq!(b.iter().map(|x| x.0).collect::<Vec<_>>(), vec![3, 4, 5, 6, 7, 8, 9]);
    }
}
