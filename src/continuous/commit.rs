//! One commit at boundary B, coordinated by the dataflow:
//!
//! 1. every worker tells every other what it knows as of B (`Gather`: changed
//!    partitions, counts, reader positions and partition states, ...): an
//!    all-gather whose frontier says when all have spoken;
//! 2. each worker sends its share of every changed partition (as of B) to the
//!    partition's owner, who merges the shares and writes the partition to
//!    staging, then tells the committer;
//! 3. the committer (worker 0), once every owner has staged, publishes,
//!    decides the final days and writes the checkpoint (`committer.rs`);
//! 4. its decision reaches every worker as data, and each releases its share
//!    of the newly final days' state (`release.rs`).
//!
//! Owners: every worker tells every other the sizes of its shares, and each
//! computes the same assignment (largest partitions first, to the least
//! loaded worker); a bucketed open day would assign (table, day, bucket).

use super::committer::Committer;
use super::feeder::Feeder;
use super::Ctx;
use crate::dataflow::{self, Diff, Time};
use crate::error;
use crate::mailbox::Mailbox;
use crate::report::Counts;
use crate::schema::Table;
use crate::sink::{self, PartRows, Staged};
use crate::source::kafka::{KafkaReader, PartitionState};
use anyhow::Result;
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::trace::TraceReader;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;
use timely::progress::frontier::AntichainRef;

/// What one worker knows at a boundary, told to every worker.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Gather {
    /// Output partitions whose rows changed before the boundary.
    pub changed: Vec<(Table, i32)>,
    /// Records counted since the last commit.
    pub counts: Counts,
    /// Kept listens per day as of the boundary (this worker's share).
    pub kept_days: BTreeMap<i32, i64>,
    pub states: Vec<PartitionState>,
    /// Reader positions at the boundary.
    pub positions: Vec<(i32, i64)>,
    /// First offset of a listen of an open day, per (day, partition).
    pub first_off: Vec<((i32, i32), i64)>,
    /// Records counted since the last commit, per second of message timestamp.
    pub arrivals: Vec<(i64, u64)>,
    /// Updates held per arrangement (this worker's share).
    pub sizes: Vec<(String, i64)>,
    pub kafka_errors: u64,
    /// Since when (epoch ms) Kafka has not been answering this worker.
    pub failing_since: Option<i64>,
    /// First and last listen day this worker has seen.
    pub seen: Option<(i32, i32)>,
    /// A stop was requested: this boundary is the last one.
    pub stop: bool,
}

/// What the committer decided at a boundary, told to every worker.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Decision {
    /// The last final day after this commit.
    pub final_through: Option<i32>,
    /// The as-of range after this commit.
    pub as_of: Option<(i32, i32)>,
    /// Still replaying to the checkpoint: nothing was published.
    pub replaying: bool,
    /// The run stops after this commit.
    pub last: bool,
}

/// The mailboxes of a continuous run, built by every worker in this order.
pub(super) struct Mail {
    gather: Mailbox<Gather>,
    /// Row counts of this worker's shares of the changed partitions.
    sizes: Mailbox<Vec<((Table, i32), u64)>>,
    /// (owner, partition, a share of its rows)
    rows: sink::RowsMail,
    staged: Mailbox<Staged>,
    decision: Mailbox<Decision>,
    /// Any process was asked to stop (times do not matter).
    pub signal: Mailbox<bool>,
}

impl Mail {
    pub fn build(worker: &mut timely::worker::Worker) -> Mail {
        Mail {
            gather: Mailbox::broadcast(worker),
            sizes: Mailbox::broadcast(worker),
            rows: sink::rows_mail(worker),
            staged: Mailbox::routed(worker, |_| 0),
            decision: Mailbox::broadcast(worker),
            signal: Mailbox::broadcast(worker),
        }
    }
}

/// One worker's part of the run.
pub(super) struct WorkerState {
    pub h: dataflow::Handles,
    pub feeder: Feeder,
    pub reader: KafkaReader,
    /// The last final day, as the last commit decided.
    pub final_through: Option<i32>,
    /// The run's as-of range, as the last commit decided.
    pub as_of: Option<(i32, i32)>,
    /// Partitions changed since the last commit that published (replayed
    /// commits publish nothing, so their changes wait).
    pub pending: BTreeSet<(Table, i32)>,
    /// Days whose retraction was input at a time, to forget once it is done.
    pub releasing: Vec<(Time, i32, i32)>,
    /// Worker 0: the committer.
    pub committer: Option<Committer>,
}

/// Commits boundary `b` (this worker's input is at `time` >= `b`, and its
/// readers were at `positions` when it crossed `b`).
pub(super) fn commit(
    worker: &mut timely::worker::Worker,
    c: &Ctx,
    w: &mut WorkerState,
    mail: &mut Mail,
    b: Time,
    time: Time,
    positions: Vec<(i32, i64)>,
) -> Result<Decision> {
    // The commit's duration runs from here (the input crossed the boundary)
    // to the checkpoint: gathering, collecting, staging and publishing.
    let begun = Instant::now();
    let (index, peers) = (worker.index(), worker.peers());
    let mine = gather_mine(c, w, b, positions);
    let all = mail.gather.exchange(worker, &c.abort, b, [mine])?;
    // Replaying after a restart: publish nothing until the checkpoint's offsets are reached.
    let replaying = all
        .iter()
        .flat_map(|g| &g.positions)
        .any(|(p, at)| c.ck.offsets.get(p).is_some_and(|o| at < o));
    let staging = c
        .store
        .staging(&c.cfg.topology.staging_name(), &format!("commit-{b}"))?;
    let shares = match replaying {
        true => BTreeMap::new(),
        false => collect(w, &all, b, index),
    };
    let sizes: Vec<((Table, i32), u64)> = shares.iter().map(|(k, r)| (*k, r.len() as u64)).collect();
    let all_sizes = mail.sizes.exchange(worker, &c.abort, b, [sizes])?;
    let total = sink::summed(all_sizes.into_iter().flatten());
    let owners = sink::owners(&total, peers);
    let parts = sink::to_owners(&mut mail.rows, worker, &c.abort, b, shares, &owners, &total)?;
    error::inject("staging", index, peers)?;
    let staged = stage(c, parts, &staging)?;
    if !staged.is_empty() {
        super::checkpoint::crash_point("staged");
    }
    let staged = mail.staged.exchange(worker, &c.abort, b, staged)?;
    let decided = match w.committer.as_mut() {
        Some(committer) => Some(committer.publish(c, &all, staged, w.final_through, replaying, b, begun)?),
        None => None,
    };
    let d = mail
        .decision
        .exchange(worker, &c.abort, b, decided)?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no decision from the committer at boundary {b}"))?;
    staging.finish();
    if !d.replaying {
        w.pending.clear();
    }
    super::release::apply(c, w, &d, time, (index, peers))?;
    // Forget what no read needs any more.
    compact_all(&mut w.h, b);
    super::release::forget_released(c, w, b, index);
    Ok(d)
}

/// What this worker knows at boundary `b`.
fn gather_mine(c: &Ctx, w: &mut WorkerState, b: Time, positions: Vec<(i32, i64)>) -> Gather {
    {
        let mut mine = w.h.changes.borrow_mut();
        let later = mine.split_off(&b);
        w.pending
            .extend(std::mem::replace(&mut *mine, later).into_values().flatten());
    }
    let kept_days = w.h.kept.borrow_mut().settle(b).clone();
    let t = &w.h.traces;
    let sizes = [
        ("listens", trace_len(&w.h.listens_trace)),
        ("user_daily", trace_len(&t.user_daily)),
        ("user_track_daily", trace_len(&t.user_track_daily)),
        ("user_artist_daily", trace_len(&t.user_artist_daily)),
        ("user_profile_28d", trace_len(&t.user_profile)),
    ];
    let seen = match (w.feeder.seen.bounds(), w.as_of) {
        (Some((a, b)), Some((x, y))) => Some((a.min(x), b.max(y))),
        (s, k) => s.or(k),
    };
    Gather {
        changed: w.pending.iter().copied().collect(),
        counts: std::mem::take(&mut w.feeder.counts),
        kept_days,
        states: w.reader.states(),
        positions,
        first_off: w.feeder.first_off.iter().map(|(k, v)| (*k, *v)).collect(),
        arrivals: std::mem::take(&mut w.feeder.arrivals).into_iter().collect(),
        sizes: sizes.into_iter().map(|(n, s)| (n.to_string(), s)).collect(),
        kafka_errors: w.reader.errors(),
        failing_since: w.reader.failing_since(),
        seen,
        stop: c.stop.load(std::sync::atomic::Ordering::SeqCst),
    }
}

/// This worker's shares of the changed partitions of open days as of `b`,
/// with the rejected and late rows it read since the last commit. Worker 0
/// adds an empty share of every changed partition, so that one left without
/// rows is removed.
fn collect(w: &mut WorkerState, all: &[Gather], b: Time, index: usize) -> BTreeMap<(Table, i32), PartRows> {
    let changed: BTreeSet<(Table, i32)> = all.iter().flat_map(|g| g.changed.iter().copied()).collect();
    let old_final = w.final_through;
    let is_final = |d: i32| old_final.is_some_and(|f| d <= f);
    let keep = |t: Table, d: i32| changed.contains(&(t, d)) && !is_final(d);
    let mut buckets: BTreeMap<(Table, i32), PartRows> =
        sink::collect_before(&mut w.h.traces, &keep, b).into_iter().collect();
    for (day, row) in std::mem::take(&mut w.feeder.rejected) {
        if let PartRows::Rejected(v) = buckets
            .entry((Table::RejectedEvents, day))
            .or_insert_with(|| PartRows::Rejected(vec![]))
        {
            v.push(row);
        }
    }
    for (day, row) in std::mem::take(&mut w.feeder.late) {
        if let PartRows::Late(v) = buckets
            .entry((Table::LateEvents, day))
            .or_insert_with(|| PartRows::Late(vec![]))
        {
            v.push(row);
        }
    }
    if index == 0 {
        for &(t, d) in changed.iter().filter(|(_, d)| !is_final(*d)) {
            buckets.entry((t, d)).or_insert_with(|| PartRows::empty(t));
        }
    }
    buckets
}

/// Stages the partitions this worker owns; rejected and late rows merge with
/// what is published. A partition left without rows is staged as a removal.
fn stage(c: &Ctx, parts: BTreeMap<(Table, i32), PartRows>, staging: &crate::store::Staging) -> Result<Vec<Staged>> {
    let mut staged = Vec::new();
    for ((table, day), rows) in parts {
        c.abort.check()?;
        let rows = match rows {
            PartRows::Rejected(mut new) => {
                new.extend(sink::read::rejected_rows(&c.store, day, &c.interner)?);
                new.sort_by_key(|r| (r.source, r.partition, r.offset));
                new.dedup_by_key(|r| (r.source, r.partition, r.offset));
                PartRows::Rejected(new)
            }
            PartRows::Late(mut new) => {
                new.extend(sink::read::late_rows(&c.store, day)?);
                PartRows::Late(new)
            }
            rows => rows,
        };
        if rows.is_empty() {
            staged.push(Staged::removal(table, day));
            continue;
        }
        staged.push(sink::stage_partition(staging, day, rows, &c.interner)?);
    }
    Ok(staged)
}

/// Updates held by an arrangement (this worker's share).
fn trace_len<K, V>(t: &Option<TraceAgent<ValSpine<K, V, Time, Diff>>>) -> i64
where
    K: Ord + Clone + 'static,
    V: Ord + Clone + 'static,
{
    use differential_dataflow::trace::implementations::spine_fueled::SpineBatch;
    let Some(t) = t else { return 0 };
    let mut n = 0i64;
    t.map_spans(|s| {
        if let Some(b) = &s.inner {
            n += b.len() as i64;
        }
    });
    n
}

/// Lets an arrangement forget the distinctions between times before `at`.
fn compact<Tr: TraceReader<Time = Time>>(t: &mut Option<Tr>, at: Time) {
    if let Some(t) = t {
        t.set_logical_compaction(AntichainRef::new(&[at]));
        t.set_physical_compaction(AntichainRef::new(&[at]));
    }
}

/// Compacts every held trace to `at`: a commit reads as of a boundary B
/// (updates at times before B), so `at` must stay below every boundary still
/// to come. Without this, each epoch's version of every changed row would be
/// kept until the next commit.
pub(super) fn compact_all(h: &mut dataflow::Handles, at: Time) {
    let t = &mut h.traces;
    compact(&mut t.user_daily, at);
    compact(&mut t.user_track_daily, at);
    compact(&mut t.user_artist_daily, at);
    compact(&mut t.user_profile, at);
    compact(&mut t.rejected, at);
    compact(&mut h.listens_trace, at);
}
