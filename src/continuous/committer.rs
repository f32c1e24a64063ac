//! The committer (worker 0): once every owner has staged the partitions of
//! a boundary, it publishes them, decides the final days from the
//! watermark, writes the checkpoint, marks the final partitions, and
//! reports (run report, metrics, consumer-group offsets). What it decides
//! goes back to every worker as a `Decision`.

use super::checkpoint::{accepted_key, crash_point, final_day, mark_final, watermark, write_checkpoint, Checkpoint};
use super::commit::{Decision, Gather};
use super::Ctx;
use crate::dataflow::Time;
use crate::quality::{self, Check, Outcome};
use crate::report::{Counts, InputRange, RunReport, TableWrite};
use crate::schema::Table;
use crate::service::{LastCommit, PartitionStatus, Snapshot};
use crate::sink::Staged;
use crate::source::kafka::PartitionState;
use anyhow::Result;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub(super) struct Committer {
    ck: Checkpoint,
    /// Counts and arrivals of commits that published nothing (replay).
    carry: Counts,
    carry_arrivals: BTreeMap<i64, u64>,
    kafka_errors_reported: u64,
    /// Commits consumer-group offsets after each checkpoint (lag dashboards).
    offsets: Option<BaseConsumer<crate::source::kafka::Ctx>>,
}

/// Every worker's gathered knowledge, merged.
#[derive(Default)]
struct Merged {
    counts: Counts,
    kept_days: BTreeMap<i32, i64>,
    states: Vec<PartitionState>,
    positions: BTreeMap<i32, i64>,
    first_off: BTreeMap<(i32, i32), i64>,
    arrivals: BTreeMap<i64, u64>,
    sizes: BTreeMap<String, i64>,
    kafka_errors: u64,
    failing_since: Option<i64>,
    seen: Option<(i32, i32)>,
}

fn merge(all: &[Gather]) -> Merged {
    let mut m = Merged::default();
    for g in all {
        m.counts.add(&g.counts);
        for (d, n) in &g.kept_days {
            *m.kept_days.entry(*d).or_insert(0) += n;
        }
        m.states.extend(g.states.iter().copied());
        m.positions.extend(g.positions.iter().copied());
        for (k, o) in &g.first_off {
            let e = m.first_off.entry(*k).or_insert(*o);
            *e = (*e).min(*o);
        }
        for (s, n) in &g.arrivals {
            *m.arrivals.entry(*s).or_insert(0) += n;
        }
        for (name, n) in &g.sizes {
            *m.sizes.entry(name.clone()).or_insert(0) += n;
        }
        m.kafka_errors += g.kafka_errors;
        m.failing_since = match (m.failing_since, g.failing_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        m.seen = match (m.seen, g.seen) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (x, y) => x.or(y),
        };
    }
    m.states.sort_by_key(|s| s.partition);
    m
}

impl Committer {
    pub fn new(c: &Ctx) -> Committer {
        let offsets = c.cfg.kafka.consumer().ok();
        if let Some(o) = &offsets {
            o.context().errors.silent.store(true, Ordering::Relaxed);
        }
        Committer {
            ck: c.ck.clone(),
            carry: Counts::default(),
            carry_arrivals: BTreeMap::new(),
            kafka_errors_reported: 0,
            offsets,
        }
    }

    /// Publishes boundary `b`'s staged partitions and writes its checkpoint.
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &mut self,
        c: &Ctx,
        all: &[Gather],
        staged: Vec<Staged>,
        old_final: Option<i32>,
        replaying: bool,
        b: Time,
        started: Instant,
    ) -> Result<Decision> {
        let last = all.iter().any(|g| g.stop);
        let mut m = merge(all);
        if replaying {
            // Counts and arrivals wait for the first published commit.
            self.carry.add(&m.counts);
            for (s, n) in m.arrivals {
                *self.carry_arrivals.entry(s).or_insert(0) += n;
            }
            tracing::info!(boundary = b, "replaying to the checkpoint; nothing published");
            c.status.record(Snapshot {
                replaying: true,
                stopping: last,
                kafka_failing_since_ms: m.failing_since,
                ..Default::default()
            });
            let as_of = self.ck.first_day.zip(self.ck.last_day);
            return Ok(Decision {
                final_through: old_final,
                as_of,
                replaying: true,
                last,
            });
        }
        m.counts.add(&std::mem::take(&mut self.carry));
        for (s, n) in std::mem::take(&mut self.carry_arrivals) {
            *m.arrivals.entry(s).or_insert(0) += n;
        }
        publish_staged(c, &staged, old_final, &self.ck.held)?;
        let (new_final, report_counts, checks, accepted) = self.checkpoint(c, &m, old_final)?;
        for day in accepted {
            let marked = mark_final(&c.store, day, day, &self.ck.held)?;
            tracing::info!(day = %crate::dates::day_to_string(day), partitions = marked, "held day accepted");
        }
        if new_final != old_final {
            let f = new_final.expect("final");
            let from = old_final.map_or(i32::MIN, |o| o + 1);
            let marked = mark_final(&c.store, from, f, &self.ck.held)?;
            tracing::info!(
                through = %crate::dates::day_to_string(f),
                watermark = ?self.ck.watermark_ms.map(|w| chrono::DateTime::from_timestamp_millis(w).map(|t| t.to_rfc3339())),
                partitions = marked,
                "days finalized"
            );
        }
        c.commits.fetch_add(1, Ordering::SeqCst);
        let mut report_ck = self.ck.clone();
        report_ck.counts = report_counts;
        for (outcome, n) in quality::tally(&checks) {
            c.metrics.quality_checks.with_label_values(&[outcome]).inc_by(n as u64);
        }
        let report = write_commit_report(c, &report_ck, &staged, checks, started)?;
        self.after_checkpoint(c, &report_ck, &m, staged.len(), started);
        c.status.record(Snapshot {
            replaying: false,
            stopping: last,
            last_commit: Some(LastCommit {
                number: report_ck.commits,
                at: report_ck.committed_at.clone(),
                duration_s: started.elapsed().as_secs_f64(),
                partitions_published: staged.len(),
            }),
            partitions: partitions(&report_ck, &m.states),
            watermark_ms: report_ck.watermark_ms,
            final_through: report_ck.final_through,
            open_days: open_days(&m, report_ck.final_through),
            held_days: report_ck.held.clone(),
            kafka_failing_since_ms: m.failing_since,
            kafka_errors: m.kafka_errors,
            last_report: serde_json::to_value(&report).ok(),
        });
        tracing::info!(
            boundary = b,
            partitions = staged.len(),
            secs = started.elapsed().as_secs_f64(),
            "commit"
        );
        Ok(Decision {
            final_through: new_final,
            as_of: self.ck.first_day.zip(self.ck.last_day),
            replaying: false,
            last,
        })
    }

    /// Decides the final days, judges the quality gates on them (a failed
    /// day is held), takes the held days operators accepted, and writes the
    /// checkpoint; returns the new last final day, the counts of the run
    /// report (open days' kept listens in), the checks, and the days accepted.
    #[allow(clippy::type_complexity)]
    fn checkpoint(
        &mut self,
        c: &Ctx,
        m: &Merged,
        old_final: Option<i32>,
    ) -> Result<(Option<i32>, Counts, Vec<Check>, Vec<i32>)> {
        let ck = &mut self.ck;
        // Finalization: the watermark of the partitions at the boundary.
        let wm = watermark(&m.states).max(ck.watermark_ms);
        ck.watermark_ms = wm;
        let fa = c.cfg.finalize_after.as_millis().min(i64::MAX as u128) as i64;
        let new_final = match (old_final, wm.map(|w| final_day(w, fa))) {
            (Some(o), Some(d)) => Some(o.max(d)),
            (o, d) => o.or(d),
        };
        let newly = |d: i32| new_final.is_some_and(|f| d <= f) && old_final.is_none_or(|o| d > o);
        let released: i64 = m.kept_days.iter().filter(|(d, _)| newly(**d)).map(|(_, n)| *n).sum();
        let open: i64 = m
            .kept_days
            .iter()
            .filter(|(d, _)| new_final.is_none_or(|f| **d > f))
            .map(|(_, n)| *n)
            .sum();
        // `kept` holds the listens of final days; the open days' come from the state.
        let kept = ck.counts.kept + released.max(0) as u64;
        let mut gc = m.counts.clone();
        gc.kept = 0;
        ck.counts.add(&gc);
        ck.counts.kept = kept;
        let mut report = ck.counts.clone();
        report.kept += open.max(0) as u64;
        report.duplicates = report
            .read
            .saturating_sub(report.kept + report.rejected + report.late + report.out_of_range);
        ck.offsets.extend(m.positions.iter().map(|(p, o)| (*p, *o)));
        // A restart needs the open days' listens: from the first offset of any of them.
        let mut replay_from = ck.offsets.clone();
        for (&(day, p), &o) in &m.first_off {
            if new_final.is_none_or(|f| day > f) {
                let e = replay_from.entry(p).or_insert(o);
                *e = (*e).min(o);
            }
        }
        ck.replay_from = replay_from;
        ck.final_through = new_final;
        let range = match (ck.first_day.zip(ck.last_day), m.seen) {
            (Some((a, b)), Some((x, y))) => Some((a.min(x), b.max(y))),
            (k, s) => k.or(s),
        };
        ck.first_day = range.map(|r| r.0);
        ck.last_day = range.map(|r| r.1);
        let checks = match new_final {
            Some(f) if new_final != old_final => judge(c, ck, old_final.map_or(i32::MIN, |o| o + 1), f, &report)?,
            _ => Vec::new(),
        };
        let accepted = take_accepted(c, ck)?;
        ck.commits += 1;
        ck.committed_at = chrono::Utc::now().to_rfc3339();
        c.lock.check()?;
        write_checkpoint(&c.store, ck)?;
        if new_final != old_final {
            crash_point("checkpointed");
        }
        Ok((new_final, report, checks, accepted))
    }

    /// Consumer-group offsets (for lag dashboards only: the checkpoint is the
    /// truth) and metrics, once a checkpoint is written.
    fn after_checkpoint(&mut self, c: &Ctx, ck: &Checkpoint, g: &Merged, published: usize, started: Instant) {
        let m = &c.metrics;
        if let Some(consumer) = &self.offsets {
            let mut tpl = rdkafka::TopicPartitionList::new();
            for (p, o) in &ck.offsets {
                let _ = tpl.add_partition_offset(&c.cfg.kafka.topic, *p, rdkafka::Offset::Offset(*o));
            }
            // Serve the queued events (commit results, logs) now, not at shutdown.
            let _ = consumer.poll(Duration::ZERO);
            if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!("committing consumer-group offsets: {e}");
                m.kafka_errors.with_label_values(&["offset_commit"]).inc();
            }
        }
        let n = &ck.counts;
        for (class, v) in [
            ("read", n.read),
            ("kept", n.kept),
            ("duplicates", n.duplicates),
            ("rejected", n.rejected),
            ("late", n.late),
        ] {
            m.events.with_label_values(&[class]).set(v as i64);
        }
        m.open_days.set(open_days(g, ck.final_through).len() as i64);
        m.days_held.set(ck.held.len() as i64);
        for (name, n) in &g.sizes {
            m.arrangement_records.with_label_values(&[name]).set(*n);
        }
        if let Some(w) = ck.watermark_ms {
            m.watermark.set(w as f64 / 1000.0);
        }
        if let Some(d) = ck.final_through {
            m.final_through.set((d as i64 + 1) as f64 * 86_400.0);
        }
        if g.kafka_errors > self.kafka_errors_reported {
            m.kafka_errors
                .with_label_values(&["consumer"])
                .inc_by(g.kafka_errors - self.kafka_errors_reported);
        }
        self.kafka_errors_reported = self.kafka_errors_reported.max(g.kafka_errors);
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        for (sec, n) in &g.arrivals {
            let f = (now - *sec as f64 - 0.5).max(0.0);
            for _ in 0..*n {
                m.freshness.observe(f);
            }
        }
        m.rss.set((crate::report::rss_mb() << 20) as i64);
        m.commits.inc();
        m.partitions_published.inc_by(published as u64);
        m.last_commit_timestamp.set(now);
        m.last_commit_duration.set(started.elapsed().as_secs_f64());
        // Lag last: a scrape that shows a partition's lag shows the rest of
        // the commit's metrics too (the lag series exist only once a commit
        // set them).
        for p in partitions(ck, &g.states) {
            if let Some(l) = p.lag {
                m.lag.with_label_values(&[&p.partition.to_string()]).set(l);
            }
        }
    }
}

/// Each partition as of a commit: the checkpoint's offset, the reader's
/// position, and the lag from the reader's last fetch (no broker call:
/// commits go on during an outage).
fn partitions(ck: &Checkpoint, states: &[PartitionState]) -> Vec<PartitionStatus> {
    let mut v: Vec<PartitionStatus> = states
        .iter()
        .map(|s| PartitionStatus {
            partition: s.partition,
            offset: ck.offsets.get(&s.partition).copied().unwrap_or(s.position),
            position: s.position,
            high: s.high,
            lag: match s.caught_up {
                true => Some(0),
                false => s.high.map(|high| (high - s.position).max(0)),
            },
            caught_up: s.caught_up,
            latest_ms: s.latest_ts,
        })
        .collect();
    v.sort_by_key(|p| p.partition);
    v
}

/// The days with kept listens that are not final.
fn open_days(g: &Merged, final_through: Option<i32>) -> Vec<String> {
    g.kept_days
        .iter()
        .filter(|(d, n)| final_through.is_none_or(|f| **d > f) && **n > 0)
        .map(|(d, _)| crate::dates::day_to_string(*d))
        .collect()
}

/// Makes the staged partitions visible (a partition staged without rows is
/// removed); `rejected_events` partitions of final days keep `_SUCCESS`.
fn publish_staged(c: &Ctx, staged: &[Staged], old_final: Option<i32>, held: &BTreeMap<String, String>) -> Result<()> {
    for (i, s) in staged.iter().enumerate() {
        // A lease lost (a pause, another run took over): publish nothing more.
        c.lock.check()?;
        let success = s.table == Table::RejectedEvents
            && old_final.is_some_and(|f| s.day <= f)
            && !held.contains_key(&crate::dates::day_to_string(s.day));
        c.store.publish(s.table, s.day, &s.file, success)?;
        if i == 0 && staged.len() > 1 {
            crash_point("published-one");
        }
    }
    if !staged.is_empty() {
        crash_point("published");
    }
    Ok(())
}

/// The run report of one commit: counts since the output's first start, the
/// accounting identity, and the partitions this commit replaced.
fn write_commit_report(
    c: &Ctx,
    ck: &Checkpoint,
    staged: &[Staged],
    checks: Vec<Check>,
    t: Instant,
) -> Result<RunReport> {
    let mut tables: BTreeMap<String, TableWrite> = BTreeMap::new();
    for s in staged {
        let w = tables.entry(s.table.name().to_string()).or_default();
        w.partitions_written += 1;
        w.rows += s.rows as u64;
        w.bytes += s.bytes;
        w.days.push(crate::dates::day_to_string(s.day));
    }
    let report = RunReport {
        run_id: format!("{}-commit-{:06}", c.started.format("%Y%m%dT%H%M%S%.3fZ"), ck.commits),
        mode: "continuous".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at: c.started.to_rfc3339(),
        finished_at: chrono::Utc::now().to_rfc3339(),
        elapsed_s: t.elapsed().as_secs_f64(),
        workers: c.cfg.workers * c.cfg.topology.processes(),
        range: None,
        inputs: ck
            .offsets
            .iter()
            .map(|(p, o)| InputRange::Kafka {
                topic: ck.topic.clone(),
                partition: *p,
                start_offset: ck.replay_from.get(p).copied().unwrap_or(0),
                end_offset: *o,
            })
            .collect(),
        counts: ck.counts.clone(),
        tables,
        missing_window_days: vec![],
        published: true,
        quality: checks,
    };
    crate::batch::write_report(&c.store, &report)?;
    Ok(report)
}

/// Judges the quality gates on the days `from..=to` this commit finalizes
/// (those with a `user_daily` partition), the shares on what was read since
/// the last finalization. A day with a failed check is held: it gets no
/// `_SUCCESS` until an operator accepts it.
fn judge(c: &Ctx, ck: &mut Checkpoint, from: i32, to: i32, report: &Counts) -> Result<Vec<Check>> {
    let days: Vec<i32> = c
        .store
        .published_days(Table::UserDaily)?
        .into_iter()
        .filter(|d| *d >= from && *d <= to)
        .collect();
    let facts = quality::Facts {
        counts: since(report, &ck.gate_counts),
        days: days.clone(),
        ..Default::default()
    };
    let checks = quality::evaluate(&c.store, &c.cfg.quality, &facts)?;
    ck.gate_counts = report.clone();
    for day in days.into_iter().map(crate::dates::day_to_string) {
        let failed: Vec<String> = checks
            .iter()
            .filter(|k| k.outcome == Outcome::Fail && k.day.as_ref().is_none_or(|d| *d == day))
            .map(Check::line)
            .collect();
        if !failed.is_empty() {
            let why = failed.join("; ");
            tracing::warn!(%day, "a quality gate failed: the day is held (no _SUCCESS) until `skipflow accept --day {day}`: {why}");
            ck.held.insert(day, why);
        }
    }
    for k in checks.iter().filter(|k| k.outcome == Outcome::Warn) {
        tracing::warn!("quality gate warning: {}", k.line());
    }
    Ok(checks)
}

/// Counts read since `before` (the classes the share gates use).
fn since(now: &Counts, before: &Counts) -> Counts {
    Counts {
        read: now.read.saturating_sub(before.read),
        kept: now.kept.saturating_sub(before.kept),
        duplicates: now.duplicates.saturating_sub(before.duplicates),
        rejected: now.rejected.saturating_sub(before.rejected),
        out_of_range: now.out_of_range.saturating_sub(before.out_of_range),
        late: now.late.saturating_sub(before.late),
        rejected_by_reason: BTreeMap::new(),
    }
}

/// Held days an operator accepted (`skipflow accept` left a marker): no
/// longer held; the caller marks them final once the checkpoint is written.
fn take_accepted(c: &Ctx, ck: &mut Checkpoint) -> Result<Vec<i32>> {
    let mut days = Vec::new();
    for day in ck.held.keys().cloned().collect::<Vec<_>>() {
        if c.store.read(&accepted_key(&day))?.is_some() {
            ck.held.remove(&day);
            days.push(crate::dates::parse_day(&day).map_err(|e| anyhow::anyhow!("held day {day}: {e}"))?);
        }
    }
    Ok(days)
}
