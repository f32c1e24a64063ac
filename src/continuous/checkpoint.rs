//! The checkpoint (what the published outputs reflect), where a run starts
//! reading, when a day is final, and the `_SUCCESS` markers of final days.

use super::{RunConfig, StartAt};
use crate::decode;
use crate::report::Counts;
use crate::schema::Table;
use crate::source::kafka::PartitionState;
use crate::store::Store;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

/// The checkpoint: what the published outputs reflect.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checkpoint {
    pub topic: String,
    /// Next offset per partition that the published outputs reflect.
    pub offsets: BTreeMap<i32, i64>,
    /// Where a restart replays from: the earliest offsets the open days need.
    pub replay_from: BTreeMap<i32, i64>,
    pub commits: u64,
    pub committed_at: String,
    /// The finalization watermark (epoch ms): never decreases.
    #[serde(default)]
    pub watermark_ms: Option<i64>,
    /// Days up to this one are final: `_SUCCESS`, state released, later
    /// listens go to `late_events`.
    #[serde(default, with = "crate::dates::opt_day")]
    pub final_through: Option<i32>,
    /// The as-of days of `user_profile_28d`: first day seen to latest listen day.
    #[serde(default, with = "crate::dates::opt_day")]
    pub first_day: Option<i32>,
    #[serde(default, with = "crate::dates::opt_day")]
    pub last_day: Option<i32>,
    /// Records counted since the output directory's first start (`kept`
    /// holds the listens of final days; the open days' come from the state).
    #[serde(default)]
    pub counts: Counts,
    /// Final days a quality gate failed: no `_SUCCESS` until accepted
    /// (`skipflow accept`). Day -> the failed checks.
    #[serde(default)]
    pub held: BTreeMap<String, String>,
    /// The run-report counts at the last finalization: the shares of the
    /// next one are judged on what was read since.
    #[serde(default)]
    pub gate_counts: Counts,
}

/// Where the checkpoint lives under the output's root.
const CHECKPOINT: &str = ".skipflow/checkpoint.json";

/// Reads the checkpoint of a local output directory, if any.
pub fn read_checkpoint(out: &Path) -> Result<Option<Checkpoint>> {
    load(&Store::local(out))
}

/// Reads the checkpoint of an output, if any.
pub fn load(out: &Store) -> Result<Option<Checkpoint>> {
    match out.read(CHECKPOINT)? {
        None => Ok(None),
        Some(b) => Ok(Some(
            serde_json::from_slice(&b).with_context(|| format!("reading {}/{CHECKPOINT}", out.describe()))?,
        )),
    }
}

/// Replaces the checkpoint (atomically: readers see the old or the new).
pub(super) fn write_checkpoint(out: &Store, c: &Checkpoint) -> Result<()> {
    out.write(CHECKPOINT, &serde_json::to_vec_pretty(c)?)
}

/// The last final day for a watermark: D is final once the watermark is
/// past the end of D (midnight after it) plus `finalize_after`.
pub fn final_day(watermark_ms: i64, finalize_after_ms: i64) -> i32 {
    let x = watermark_ms.saturating_sub(finalize_after_ms);
    // (D + 1) * MS_PER_DAY < x  <=>  D <= floor((x - 1) / MS_PER_DAY) - 1
    ((x - 1).div_euclid(decode::MS_PER_DAY) - 1).clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

/// The watermark of the partitions' states: the smallest latest message
/// timestamp of the partitions that still have unread messages (caught-up
/// partitions do not hold it back; one that has read nothing yet holds it at
/// nothing), and never beyond the largest timestamp read.
pub fn watermark(states: &[PartitionState]) -> Option<i64> {
    let newest = states.iter().filter_map(|s| s.latest_ts).max()?;
    let mut wm = newest;
    for s in states.iter().filter(|s| !s.caught_up) {
        wm = wm.min(s.latest_ts?);
    }
    Some(wm)
}

/// Crash injection for tests of recovery: `SKIPFLOW_CRASH_AT=<point>:<n>`
/// aborts the process (no unwinding, no cleanup: like `kill -9`) the n-th time
/// a commit reaches `<point>`: `staged` (partitions written to staging),
/// `published-one` (after the first partition is renamed into place),
/// `published` (all renamed, no checkpoint yet), `checkpointed` (checkpoint
/// written, `_SUCCESS` of newly final days not yet).
pub(super) fn crash_point(name: &str) {
    static AT: std::sync::OnceLock<Option<(String, u32)>> = std::sync::OnceLock::new();
    static SEEN: AtomicU32 = AtomicU32::new(0);
    let at = AT.get_or_init(|| {
        let v = std::env::var("SKIPFLOW_CRASH_AT").ok()?;
        let (p, n) = v.split_once(':')?;
        Some((p.to_string(), n.parse().ok()?))
    });
    if let Some((p, n)) = at {
        if p == name && SEEN.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("SKIPFLOW_CRASH_AT: aborting at {name}");
            std::process::abort();
        }
    }
}

/// Starting positions: the checkpoint's replay start (partitions added to
/// the topic since: their log start), or `start` on a first run.
pub(super) fn starts(cfg: &RunConfig, ck: &Option<Checkpoint>) -> Result<BTreeMap<i32, i64>> {
    let Some(c) = ck else {
        return match cfg.start {
            // No end offsets needed: the log start, or the end as the broker reports it.
            StartAt::Earliest | StartAt::Latest => {
                crate::source::kafka::log_bounds(&cfg.kafka, matches!(cfg.start, StartAt::Latest))
            }
            StartAt::Timestamp(t) => Ok(crate::source::kafka::plan(&cfg.kafka, Some(t))?
                .into_iter()
                .map(|r| (r.partition, r.start))
                .collect()),
        };
    };
    if c.topic != cfg.kafka.topic {
        return Err(crate::error::bad(format!(
            "{} holds the checkpoint of topic {}, not {}; use another --output",
            cfg.output.display(),
            c.topic,
            cfg.kafka.topic
        )));
    }
    let lows = crate::source::kafka::log_bounds(&cfg.kafka, false)?;
    let mut out = c.replay_from.clone();
    let gone: Vec<(i32, i64, i64)> = c
        .replay_from
        .iter()
        .filter_map(|(p, from)| lows.get(p).filter(|low| *low > from).map(|low| (*p, *from, *low)))
        .collect();
    if let Some(&(p, from, low)) = gone.first() {
        let unread = c.offsets.get(&p).map_or(low - from, |o| (low - o).max(0));
        let line = format!(
            "{} partition {p}: the checkpoint needs offsets from {from} but the log now starts at {low}: \
             {} records were deleted by retention ({unread} of them never read){}",
            cfg.kafka.topic,
            low - from,
            if gone.len() > 1 {
                format!(", and {} more partitions lost records", gone.len() - 1)
            } else {
                String::new()
            },
        );
        if !cfg.kafka.allow_data_loss {
            anyhow::bail!("{line}; set allow_data_loss = true in the job file to go on without them");
        }
        tracing::warn!("{line}; going on from the log start (allow_data_loss)");
        for (p, _, low) in gone {
            out.insert(p, low);
        }
    }
    for (p, low) in lows {
        out.entry(p).or_insert(low);
    }
    Ok(out)
}

/// Tables whose partitions of a final day carry `_SUCCESS`.
const FINAL_TABLES: [Table; 5] = [
    Table::UserDaily,
    Table::UserTrackDaily,
    Table::UserArtistDaily,
    Table::UserProfile28d,
    Table::RejectedEvents,
];

/// Adds `_SUCCESS` to every published partition of days `from..=to` that
/// lacks it, but those of days `held` by a failed quality gate.
pub fn mark_final(out: &Store, from: i32, to: i32, held: &BTreeMap<String, String>) -> Result<usize> {
    let mut n = 0;
    for t in FINAL_TABLES {
        for d in out.published_days(t)? {
            let kept_back = held.contains_key(&crate::dates::day_to_string(d));
            if d >= from && d <= to && !kept_back && out.mark_success(t, d)? {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Where `skipflow accept` records that an operator released a held day.
pub fn accepted_key(day: &str) -> String {
    format!(".skipflow/accepted/{day}")
}

/// Releases `day`, held by a failed quality gate: records the acceptance
/// (the run drops the day from its held days at its next commit) and marks
/// the day's partitions final. Returns why it was held and the partitions marked.
pub fn accept(out: &Store, day: &str) -> Result<(String, usize)> {
    let d = crate::dates::parse_day(day).map_err(|e| crate::error::bad(format!("--day: {e}")))?;
    let Some(ck) = load(out)? else {
        return Err(crate::error::bad(format!(
            "{} has no continuous checkpoint: only days held by `skipflow run` can be accepted",
            out.describe()
        )));
    };
    let Some(why) = ck.held.get(day) else {
        let held: Vec<&String> = ck.held.keys().collect();
        return Err(crate::error::bad(format!(
            "{day} is not held by a quality gate (held days: {})",
            if held.is_empty() {
                "none".to_string()
            } else {
                format!("{held:?}")
            }
        )));
    };
    let marker = serde_json::json!({ "day": day, "accepted_at": chrono::Utc::now().to_rfc3339(), "held_for": why });
    out.write(&accepted_key(day), marker.to_string().as_bytes())?;
    let marked = mark_final(out, d, d, &BTreeMap::new())?;
    Ok((why.clone(), marked))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = decode::MS_PER_DAY;

    fn st(partition: i32, latest_ts: Option<i64>, caught_up: bool) -> PartitionState {
        PartitionState {
            partition,
            position: 0,
            latest_ts,
            caught_up,
            high: None,
        }
    }

    #[test]
    fn a_day_is_final_once_the_watermark_is_past_its_end_plus_the_delay() {
        let h = 3_600_000;
        // end(D) + 1h exactly is not past it; one millisecond later is.
        assert_eq!(final_day(11 * DAY + h, h), 9);
        assert_eq!(final_day(11 * DAY + h + 1, h), 10);
        assert_eq!(final_day(11 * DAY, 0), 9);
        assert_eq!(final_day(11 * DAY + 1, 0), 10);
        assert_eq!(final_day(0, 48 * h), -4);
    }

    #[test]
    fn partitions_with_unread_messages_hold_the_watermark() {
        // Caught-up partitions do not hold it back.
        assert_eq!(watermark(&[st(0, Some(50), true), st(1, Some(90), true)]), Some(90));
        assert_eq!(watermark(&[st(0, Some(50), false), st(1, Some(90), true)]), Some(50));
        assert_eq!(watermark(&[st(0, Some(50), true), st(1, Some(90), false)]), Some(90));
        // One that has read nothing and is not at its end holds it at nothing.
        assert_eq!(watermark(&[st(0, None, false), st(1, Some(90), true)]), None);
        assert_eq!(watermark(&[st(0, None, true), st(1, Some(90), true)]), Some(90));
        assert_eq!(watermark(&[]), None);
    }
}
