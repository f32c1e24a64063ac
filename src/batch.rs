//! Batch runs: a bounded input, one pass of the two dataflows, every
//! partition written by one owner, then published all together by the
//! committer.
//!
//! The events go into the first dataflow (dedup, the daily tables). Once it
//! is complete the workers tell each other what they counted (an all-gather
//! through a mailbox: every worker gets every worker's tally, and the
//! frontier says when all have arrived), so each knows the day range. The
//! profile's dataflow is built then, fed the window days before the range
//! (read back from the output) and the as-of days. The workers agree on one
//! owner per partition (the same largest-first assignment computed by each
//! from everyone's share sizes) and stage the daily tables in waves: each
//! worker collects its share of a wave's partitions, feeds those rows to the
//! profile, and sends them to their owners, who write each partition to
//! staging. Then the profile is computed (once, from daily aggregates, after
//! the daily traces are gone) and staged the same way; the owners tell the
//! committer (worker 0), which publishes them all and writes the run
//! report. Nothing but the dataflow connects the workers, so they may live
//! in several processes (`cluster::Topology`).

use crate::cluster::Topology;
use crate::dataflow::{self, Listen, RejectRow};
use crate::dates;
use crate::decode;
use crate::error::{self, Abort};
use crate::intern::{Interner, Name};
use crate::mailbox::{self, Mailbox};
use crate::quality;
use crate::report::{Counts, InputRange, RunReport, TableWrite};
use crate::schema::Table;
use crate::sink::{self, PartRows, Staged};
use crate::source::files::{self, FileReader, Split};
use crate::source::kafka::{self, KafkaInput, KafkaReader, PartitionRange, ReadRange};
use crate::source::{Poll, RawRecord};
use crate::store::{Lock, LockMode, Staging, Store};
use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A batch run's settings.
#[derive(Clone, Debug)]
pub struct BatchConfig {
    pub output: PathBuf,
    pub inputs: Vec<String>,
    /// Kafka input instead of files.
    pub kafka: Option<KafkaBatch>,
    /// [FROM, TO] as day numbers; `None` = first..last day of the kept events.
    pub range: Option<(i32, i32)>,
    /// Worker threads of this process.
    pub workers: usize,
    /// Show a progress bar on a terminal.
    pub progress: bool,
    /// This process's place among the run's processes.
    pub topology: Topology,
    /// The job file's `[storage]` table (object-store settings, `lease`).
    pub storage: BTreeMap<String, String>,
    /// The job file's `[quality]` table: the gates judged before publishing.
    pub quality: crate::quality::Quality,
}

/// A bounded read of a Kafka topic.
#[derive(Clone, Debug)]
pub struct KafkaBatch {
    pub input: KafkaInput,
    /// Start reading each partition at FROM 00:00 UTC minus this (ms).
    pub skew_ms: i64,
}

/// The planned input of a run (each process plans; a worker reads its own share).
enum Plan {
    Files(Vec<Split>),
    Kafka(KafkaInput, Vec<PartitionRange>),
}

/// One worker's reader.
enum Reader {
    Files(FileReader),
    Kafka(KafkaReader),
}

/// What a batch run did (the committer's process writes the report).
#[derive(Debug)]
pub struct BatchOutcome {
    pub report: RunReport,
    pub report_path: PathBuf,
}

/// What one worker counted and read, told to every worker after time 0.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Tally {
    counts: Counts,
    kept: i64,
    kept_days: BTreeMap<i32, i64>,
    read: Vec<ReadRange>,
}

/// One worker's shares of the partitions (row counts) and the window days
/// it found missing, told to every worker after time 1.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Shares {
    sizes: Vec<((Table, i32), u64)>,
    missing: Vec<i32>,
}

/// The mailboxes of a batch run, built by every worker in this order.
struct Mail {
    /// Every worker has read its input.
    read: Mailbox<()>,
    tally: Mailbox<Tally>,
    shares: Mailbox<Shares>,
    /// (owner, partition, a share of its rows)
    rows: sink::RowsMail,
    staged: Mailbox<Staged>,
    /// The committer published: every process may end (its staging is done with).
    done: Mailbox<bool>,
}

impl Mail {
    fn build(worker: &mut timely::worker::Worker) -> Mail {
        Mail {
            read: Mailbox::broadcast(worker),
            tally: Mailbox::broadcast(worker),
            shares: Mailbox::broadcast(worker),
            rows: sink::rows_mail(worker),
            staged: Mailbox::routed(worker, |_| 0),
            done: Mailbox::broadcast(worker),
        }
    }
}

/// Decodes one raw record and feeds it to the dataflow's inputs.
pub struct Feeder {
    pub counts: Counts,
    pub range: Option<(i32, i32)>,
    pub run_day: i32,
}

impl Feeder {
    pub fn feed(&mut self, source: Name, rec: RawRecord<'_>, h: &mut dataflow::Daily) {
        self.counts.read += 1;
        match rec.decode() {
            Err(reason) => {
                self.counts.reject(reason);
                h.rejected.update(rec.reject_row(source, reason, self.run_day), 1);
            }
            Ok(e) => {
                let day = e.day();
                if let Some((from, to)) = self.range {
                    if day < from || day > to {
                        self.counts.out_of_range += 1;
                        return;
                    }
                }
                h.listens.update(Listen::keyed(&e), 1);
            }
        }
    }
}

fn run_id(started: &chrono::DateTime<chrono::Utc>) -> String {
    format!("{}-{}", started.format("%Y%m%dT%H%M%S%.3fZ"), std::process::id())
}

/// What every worker of this process shares (read-only, or process-local
/// counters for display).
struct Ctx {
    cfg: BatchConfig,
    plan: Plan,
    /// The output (a directory or a bucket).
    store: Store,
    staging: Staging,
    interner: Arc<Interner>,
    abort: Arc<Abort>,
    /// Bytes read by this process's file readers (the progress bar).
    bytes: Arc<AtomicU64>,
    run_id: String,
    started: chrono::DateTime<chrono::Utc>,
    run_day: i32,
    /// The output's lock (checked before publishing: a lease can be lost).
    lock: Lock,
    /// The committer reported a failed quality gate (processes other than 0).
    gate_failed: AtomicBool,
}

/// Runs a batch in one process, or as the committer's process of a cluster.
pub fn run(cfg: &BatchConfig) -> Result<BatchOutcome> {
    run_process(cfg)?.ok_or_else(|| {
        anyhow!(
            "process {} is not the committer: it writes no report",
            cfg.topology.process()
        )
    })
}

/// Runs this process's part of a batch: the outcome in the committer's
/// process (process 0), `None` in the others.
pub fn run_process(cfg: &BatchConfig) -> Result<Option<BatchOutcome>> {
    let started = chrono::Utc::now();
    let store = Store::open(&cfg.output, &cfg.storage)?;
    let lease = Store::lease_duration(&cfg.storage)?;
    let lock = store.lock(&cfg.topology.lock_name(), LockMode::Fail, lease)?;
    let id = run_id(&started);
    let own = cfg.topology.staging_name();
    store.clean_staging(&own, cfg.topology.process() == 0)?;
    let staging = store.staging(&own, &id)?;
    let workers = cfg.workers.max(1);
    let peers = workers * cfg.topology.processes();
    let plan = match &cfg.kafka {
        None => Plan::Files(files::plan(&cfg.inputs, peers)?),
        Some(k) => {
            let from_ms = cfg.range.map(|(f, _)| f as i64 * decode::MS_PER_DAY - k.skew_ms);
            let ranges = kafka::plan(&k.input, from_ms)?;
            tracing::info!(topic = %k.input.topic, ?ranges, "Kafka offsets to read");
            Plan::Kafka(k.input.clone(), ranges)
        }
    };
    let total = match &plan {
        Plan::Files(_) => files::total_bytes(&cfg.inputs),
        Plan::Kafka(..) => 0,
    };
    let ctx = Arc::new(Ctx {
        cfg: cfg.clone(),
        plan,
        store: store.clone(),
        staging,
        lock,
        interner: Interner::new(),
        abort: Abort::new(),
        bytes: Arc::new(AtomicU64::new(0)),
        run_id: id,
        started,
        run_day: run_day()?,
        gate_failed: AtomicBool::new(false),
    });
    let done = Arc::new(AtomicBool::new(false));
    let bar = cfg
        .progress
        .then(|| progress_thread(total, ctx.bytes.clone(), done.clone()));
    let c = ctx.clone();
    let result = crate::cluster::run_workers(
        &cfg.topology,
        workers,
        &ctx.interner,
        &ctx.abort,
        "no partition was published",
        move |worker| batch_worker(worker, &c),
    )?;
    done.store(true, Ordering::Relaxed);
    if let Some(h) = bar {
        let _ = h.join();
    }
    ctx.staging.finish();
    match result {
        Some(outcomes) => match outcomes.into_iter().flatten().next() {
            None if ctx.gate_failed.load(Ordering::Relaxed) => Err(error::GateFailed(
                "a quality gate failed: nothing was published; process 0's run report says which".into(),
            )
            .into()),
            outcome => Ok(outcome),
        },
        None => {
            // Uploads this process started and nobody completed are aborted.
            let _ = store.clean_staging(&own, false);
            let first = ctx.abort.message().unwrap_or("a worker failed").to_string();
            Err(anyhow!("{first}; no partition was published"))
        }
    }
}

/// `Err(GateFailed)` (exit 4) when the run published nothing because a
/// quality gate failed; the message names the failed checks.
pub fn gate_verdict(out: &BatchOutcome) -> Result<()> {
    match quality::failure(&out.report.quality) {
        Some(why) if !out.report.published => Err(error::GateFailed(format!(
            "a quality gate failed: {why}; nothing was published (run report: {})",
            out.report_path.display()
        ))
        .into()),
        _ => Ok(()),
    }
}

/// The day the run counts as its start day (file records' rejected rows go
/// there): today, UTC, or `SKIPFLOW_RUN_DAY` (YYYY-MM-DD) to reproduce a run.
fn run_day() -> Result<i32> {
    match std::env::var("SKIPFLOW_RUN_DAY") {
        Ok(d) => dates::parse_day(&d).map_err(|e| error::bad(format!("SKIPFLOW_RUN_DAY: {e}"))),
        Err(_) => Ok(dates::today()),
    }
}

/// Writes the run report as `<output>/_runs/<run_id>.json` (atomically);
/// returns where it is.
pub fn write_report(out: &Store, report: &RunReport) -> Result<PathBuf> {
    let key = format!("_runs/{}.json", report.run_id);
    out.write(&key, &serde_json::to_vec_pretty(report)?)?;
    Ok(PathBuf::from(format!("{}/{key}", out.describe().trim_end_matches('/'))))
}

/// Kept listens per day, over every worker's tally.
fn kept_days(tallies: &[Tally]) -> BTreeMap<i32, i64> {
    let mut days = BTreeMap::new();
    for t in tallies {
        for (d, n) in &t.kept_days {
            *days.entry(*d).or_insert(0) += n;
        }
    }
    days
}

/// The run's day range: the given one, or first..last day with kept events.
fn effective_range(given: Option<(i32, i32)>, kept_days: &BTreeMap<i32, i64>) -> Option<(i32, i32)> {
    given.or_else(|| {
        let mut days = kept_days.iter().filter(|(_, n)| **n > 0).map(|(d, _)| *d);
        let first = days.next()?;
        let last = days.next_back().unwrap_or(first);
        Some((first, last))
    })
}

/// The names of the run's sources, by file index (or the topic).
fn source_names(c: &Ctx) -> Vec<Name> {
    match &c.plan {
        Plan::Files(_) => c.cfg.inputs.iter().map(|p| Name::of(p)).collect(),
        Plan::Kafka(k, _) => vec![Name::of(&k.topic)],
    }
}

fn batch_worker(worker: &mut timely::worker::Worker, c: &Ctx) -> Result<Option<BatchOutcome>> {
    let (index, peers) = (worker.index(), worker.peers());
    let probe = timely::dataflow::ProbeHandle::new();
    let mut h = dataflow::build_daily(worker, c.interner.clone(), dataflow::Options::default(), &probe);
    let mut mail = Mail::build(worker);
    let sources = source_names(c);
    let t0 = Instant::now();
    let (feeder, read) = read_input(worker, c, &mut h, &sources)?;
    log_phase(index, t0, "input read", &c.interner);
    // The inputs close: once every worker's are closed, Dedup lets go of
    // the Listens trace (it is freed), and once the daily tables are
    // complete, timely drops the first dataflow with its (day, user)
    // arrangement.
    drop((h.listens, h.rejected));
    seal_event_ids(worker, c, &mut mail)?;
    mailbox::wait(worker, &c.abort, || probe.done())?;
    log_phase(index, t0, "daily tables computed", &c.interner);
    let mine = {
        let k = h.kept.borrow();
        Tally {
            counts: feeder.counts,
            kept: k.count,
            kept_days: k.days.clone(),
            read,
        }
    };
    let tallies = mail.tally.exchange(worker, &c.abort, 0, [mine])?;
    // Every worker is past its daily tables: no event id is read again.
    release_event_ids(&c.interner);
    let range = effective_range(c.cfg.range, &kept_days(&tallies));

    // The profile's dataflow: prior days and as-of markers now, this run's
    // daily rows as they are staged; its arrangement is built once the
    // daily traces are gone.
    let probe = timely::dataflow::ProbeHandle::new();
    let opts = dataflow::Options::default();
    let mut p = dataflow::build_profile(worker, c.interner.clone(), opts, &probe, None, &h.changes);
    let missing = feed_prior(c, index, peers, range, &mut p)?;
    let in_range = |t: Table, d: i32| match t {
        Table::RejectedEvents => true,
        _ => range.is_some_and(|(f, to)| d >= f && d <= to),
    };
    let mut stager = Stager {
        c,
        sources: &sources,
        in_range: &in_range,
        read: tallies.iter().flat_map(|t| t.read.iter().cloned()).collect(),
        round: 1,
        t: 2,
        staged: Vec::new(),
    };
    error::inject("staging", index, peers)?;
    let daily = [
        Table::UserDaily,
        Table::UserTrackDaily,
        Table::UserArtistDaily,
        Table::RejectedEvents,
    ];
    let missing = stager.tables(worker, &mut mail, &mut h.traces, &daily, missing, |b| {
        for ((_, day), rows) in b {
            rows.profile_inputs(*day, |u, r| p.prior.update((u, r), 1));
        }
    })?;
    drop((p.prior, p.seen, p.fin));
    mailbox::wait(worker, &c.abort, || probe.done())?;
    log_phase(index, t0, "profile computed", &c.interner);
    h.traces.user_profile = Some(p.trace);
    let profile = [Table::UserProfile28d];
    stager.tables(worker, &mut mail, &mut h.traces, &profile, vec![], |_| {})?;
    log_phase(index, t0, "partitions staged", &c.interner);
    let staged = stager.staged;
    let staged = mail.staged.exchange(worker, &c.abort, 0, staged)?;
    let outcome = match index {
        0 => Some(commit(c, staged, &tallies, range, missing, &sources)?),
        _ => None,
    };
    let published = mail
        .done
        .exchange(worker, &c.abort, 4, outcome.as_ref().map(|o| o.report.published))?;
    if published.contains(&false) {
        c.gate_failed.store(true, Ordering::Relaxed);
    }
    Ok(outcome)
}

/// Reads this worker's share of the input into the dataflow (time 0).
fn read_input(
    worker: &mut timely::worker::Worker,
    c: &Ctx,
    h: &mut dataflow::Daily,
    sources: &[Name],
) -> Result<(Feeder, Vec<ReadRange>)> {
    let (index, peers) = (worker.index(), worker.peers());
    let mut reader = match &c.plan {
        Plan::Files(splits) => Reader::Files(FileReader::new(
            splits
                .iter()
                .enumerate()
                .filter(|(i, _)| i % peers == index)
                .map(|(_, s)| s.clone())
                .collect(),
            c.bytes.clone(),
        )),
        Plan::Kafka(input, ranges) => {
            let mine: Vec<PartitionRange> = ranges
                .iter()
                .filter(|r| r.partition.rem_euclid(peers as i32) as usize == index)
                .cloned()
                .collect();
            error::inject("reader", index, peers)?;
            Reader::Kafka(KafkaReader::new(input, &mine)?)
        }
    };
    let mut feeder = Feeder {
        counts: Counts::default(),
        range: c.cfg.range,
        run_day: c.run_day,
    };
    loop {
        c.abort.check()?;
        let polled = match &mut reader {
            Reader::Files(r) => r.poll(16 * 1024, &mut |file, rec| feeder.feed(sources[file], rec, h))?,
            Reader::Kafka(r) => r.poll(16 * 1024, &mut |rec| feeder.feed(sources[0], rec, h))?,
        };
        worker.step();
        if polled == Poll::Done {
            break;
        }
    }
    let read = match &reader {
        Reader::Kafka(r) => r.ranges(),
        Reader::Files(_) => vec![],
    };
    Ok((feeder, read))
}

fn log_phase(worker: usize, t0: Instant, what: &str, interner: &Interner) {
    tracing::info!(
        worker,
        secs = t0.elapsed().as_secs_f64(),
        rss_mb = crate::report::rss_mb(),
        names = interner.names_len(),
        event_ids = interner.event_ids_len(),
        "{what}"
    );
}

/// Writes the partitions this worker owns to staging; `rejected_events`
/// partitions keep the published rows of records this run did not read.
fn stage_owned(
    c: &Ctx,
    parts: BTreeMap<(Table, i32), PartRows>,
    sources: &[Name],
    read: &[ReadRange],
) -> Result<Vec<Staged>> {
    let reread = |r: &RejectRow| match &c.plan {
        Plan::Files(_) => sources.contains(&r.source),
        Plan::Kafka(..) => {
            r.source == sources[0]
                && read
                    .iter()
                    .any(|p| p.partition == r.partition && (p.start..p.end).contains(&r.offset))
        }
    };
    let mut staged = Vec::new();
    for ((table, day), rows) in parts {
        c.abort.check()?;
        let rows = match rows {
            PartRows::Rejected(mut all) => {
                let old = sink::read::rejected_rows(&c.store, day, &c.interner)?;
                all.extend(old.into_iter().filter(|r| !reread(r)));
                all.sort_by_key(|r| (r.source, r.partition, r.offset));
                all.dedup_by_key(|r| (r.source, r.partition, r.offset));
                PartRows::Rejected(all)
            }
            rows => rows,
        };
        debug_assert_eq!(rows.table(), table);
        staged.push(sink::stage_partition(&c.staging, day, rows, &c.interner)?);
    }
    Ok(staged)
}

/// The committer: judges the quality gates, then publishes every staged
/// partition, removes the partitions of the range left without rows, and
/// writes the run report. A failed gate publishes nothing (the report says
/// why and the process exits 4).
fn commit(
    c: &Ctx,
    mut staged: Vec<Staged>,
    tallies: &[Tally],
    range: Option<(i32, i32)>,
    missing: Vec<i32>,
    sources: &[Name],
) -> Result<BatchOutcome> {
    let counts = total_counts(tallies);
    let checks = quality::evaluate(
        &c.store,
        &c.cfg.quality,
        &gate_facts(&counts, &staged, tallies, range, c.cfg.range.is_some()),
    )?;
    let mut tables = BTreeMap::new();
    let published = quality::failure(&checks).is_none();
    if published {
        tables = publish(c, &mut staged, range, sources)?;
    } else {
        let files: Vec<_> = staged.into_iter().map(|s| s.file).collect();
        c.staging.discard(&files);
    }
    let report = RunReport {
        run_id: c.run_id.clone(),
        mode: "batch".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at: c.started.to_rfc3339(),
        finished_at: chrono::Utc::now().to_rfc3339(),
        elapsed_s: (chrono::Utc::now() - c.started).num_milliseconds() as f64 / 1000.0,
        workers: c.cfg.workers * c.cfg.topology.processes(),
        range: range.map(|(f, t)| (dates::day_to_string(f), dates::day_to_string(t))),
        inputs: inputs(c, tallies),
        counts,
        tables,
        missing_window_days: missing.into_iter().map(dates::day_to_string).collect(),
        published,
        quality: checks,
    };
    let report_path = write_report(&c.store, &report)?;
    Ok(BatchOutcome { report, report_path })
}

fn total_counts(tallies: &[Tally]) -> Counts {
    let mut counts = Counts::default();
    let mut kept = 0;
    for t in tallies {
        counts.add(&t.counts);
        kept += t.kept;
    }
    counts.kept = kept as u64;
    counts.duplicates = counts.read - counts.rejected - counts.out_of_range - counts.kept;
    counts
}

/// What the gates need of this run: its counts, the days it judges, and the
/// kept events and rows per table of every day it publishes.
fn gate_facts(
    counts: &Counts,
    staged: &[Staged],
    tallies: &[Tally],
    range: Option<(i32, i32)>,
    explicit: bool,
) -> quality::Facts {
    let mut written = BTreeMap::new();
    for s in staged
        .iter()
        .filter(|s| s.rows > 0 && quality::VOLUME_TABLES.contains(&s.table))
    {
        written.insert((quality::Measure::Rows(s.table), s.day), s.rows as f64);
    }
    let in_range = |d: i32| range.is_some_and(|(f, t)| d >= f && d <= t);
    for (d, n) in tallies.iter().flat_map(|t| &t.kept_days) {
        if in_range(*d) && *n > 0 {
            *written.entry((quality::Measure::Kept, *d)).or_insert(0.0) += *n as f64;
        }
    }
    // An explicit range is judged day by day (a day without data in it is
    // news); a range taken from the data, by the days that have data.
    let days = match (explicit, range) {
        (true, Some((f, t))) => (f..=t).collect(),
        _ => written
            .keys()
            .filter(|(m, _)| *m == quality::Measure::Kept)
            .map(|(_, d)| *d)
            .collect(),
    };
    quality::Facts {
        counts: counts.clone(),
        days,
        written,
        replaced: range,
    }
}

/// Publishes the staged partitions and removes the range's partitions left
/// without rows: what each table got.
fn publish(
    c: &Ctx,
    staged: &mut Vec<Staged>,
    range: Option<(i32, i32)>,
    sources: &[Name],
) -> Result<BTreeMap<String, TableWrite>> {
    let mut emptied = Vec::new();
    if let Plan::Files(_) = &c.plan {
        emptied = restage_file_rejects(c, staged, sources)?;
    }
    let mut tables: BTreeMap<String, TableWrite> = BTreeMap::new();
    let mut written: HashSet<(Table, i32)> = HashSet::new();
    staged.sort_by_key(|s| (s.table == Table::RejectedEvents, s.table, s.day));
    for s in staged.iter() {
        c.lock.check()?;
        c.store.publish(s.table, s.day, &s.file, true)?;
        written.insert((s.table, s.day));
        let t = tables.entry(s.table.name().to_string()).or_default();
        t.partitions_written += 1;
        t.rows += s.rows as u64;
        t.bytes += s.bytes;
        t.days.push(dates::day_to_string(s.day));
    }
    let mut removed = |table: Table, day: i32| -> Result<()> {
        if c.store.remove(table, day)? {
            tables.entry(table.name().to_string()).or_default().partitions_removed += 1;
        }
        Ok(())
    };
    if let Some((from, to)) = range {
        for table in quality::VOLUME_TABLES {
            for day in c.store.published_days(table)? {
                if day >= from && day <= to && !written.contains(&(table, day)) {
                    removed(table, day)?;
                }
            }
        }
    }
    for day in emptied {
        removed(Table::RejectedEvents, day)?;
    }
    for t in tables.values_mut() {
        t.days.sort();
    }
    Ok(tables)
}

/// What the run read, for its report.
fn inputs(c: &Ctx, tallies: &[Tally]) -> Vec<InputRange> {
    match &c.plan {
        Plan::Files(_) => c
            .cfg
            .inputs
            .iter()
            .map(|p| InputRange::File { path: p.clone() })
            .collect(),
        Plan::Kafka(k, _) => {
            let mut read: Vec<&ReadRange> = tallies.iter().flat_map(|t| &t.read).collect();
            read.sort_by_key(|r| r.partition);
            read.into_iter()
                .map(|r| InputRange::Kafka {
                    topic: k.topic.clone(),
                    partition: r.partition,
                    start_offset: r.start,
                    end_offset: r.end,
                })
                .collect()
        }
    }
}

/// File records without a message timestamp go to the run's day: rows of
/// these files that an earlier run put on another day are replaced too, so
/// a rerun on another day does not repeat them. Returns the days left with
/// no rows (to remove).
fn restage_file_rejects(c: &Ctx, staged: &mut Vec<Staged>, sources: &[Name]) -> Result<Vec<i32>> {
    let days: HashSet<i32> = staged
        .iter()
        .filter(|s| s.table == Table::RejectedEvents)
        .map(|s| s.day)
        .collect();
    let sources: HashSet<Name> = sources.iter().copied().collect();
    let mut emptied = Vec::new();
    for day in c.store.published_days(Table::RejectedEvents)? {
        if days.contains(&day) {
            continue;
        }
        let old = sink::read::rejected_rows(&c.store, day, &c.interner)?;
        let n = old.len();
        let kept: Vec<RejectRow> = old.into_iter().filter(|r| !sources.contains(&r.source)).collect();
        if kept.len() == n {
            continue;
        }
        if kept.is_empty() {
            emptied.push(day);
        } else {
            staged.push(sink::stage_partition(
                &c.staging,
                day,
                PartRows::Rejected(kept),
                &c.interner,
            )?);
        }
    }
    Ok(emptied)
}

/// Feeds the profile the window days before the range (read back from the
/// output; this worker's share of them) and, on worker 0, the as-of days;
/// returns the window days that were not published.
fn feed_prior(
    c: &Ctx,
    index: usize,
    peers: usize,
    range: Option<(i32, i32)>,
    p: &mut dataflow::Profile,
) -> Result<Vec<i32>> {
    let mut missing = Vec::new();
    let Some((from, to)) = range else {
        return Ok(missing);
    };
    error::inject("prior", index, peers)?;
    for day in (from - dataflow::WINDOW_DAYS + 1..from).filter(|d| d.rem_euclid(peers as i32) as usize == index) {
        let present = sink::read::prior_day(&c.store, day, &c.interner, &mut |u, r| p.prior.update((u, r), 1))
            .with_context(|| format!("reading the published day {}", dates::day_to_string(day)))?;
        if !present {
            missing.push(day);
        }
    }
    if index == 0 {
        // As-of days from..=to: the first and last day, nothing final before `from`.
        p.seen.update(from, 1);
        p.seen.update(to, 1);
        p.fin.update(from - 1, 1);
    }
    Ok(missing)
}

/// Stages a batch's partitions, a wave at a time (`sink::waves`: at most
/// one partition per owner, so memory holds about one partition's rows a
/// worker, not a table's).
struct Stager<'a> {
    c: &'a Ctx,
    sources: &'a [Name],
    /// The partitions of the run (the range; rejects of any day).
    in_range: &'a dyn Fn(Table, i32) -> bool,
    read: Vec<ReadRange>,
    /// The next time of the shares mailbox, and of the rows mailbox.
    round: dataflow::Time,
    t: dataflow::Time,
    staged: Vec<Staged>,
}

impl Stager<'_> {
    /// Stages `tables` (their traces are released after): every worker
    /// tells its shares' sizes (and the window days it found `missing`),
    /// from which every worker computes the same owners and waves; `each`
    /// sees this worker's share of each wave first. Returns every worker's
    /// missing days, sorted.
    fn tables(
        &mut self,
        worker: &mut timely::worker::Worker,
        mail: &mut Mail,
        traces: &mut dataflow::SinkTraces,
        tables: &[Table],
        missing: Vec<i32>,
        mut each: impl FnMut(&sink::Buckets),
    ) -> Result<Vec<i32>> {
        let (c, peers) = (self.c, worker.peers());
        let sizes = sink::sizes(traces, tables, self.in_range).into_iter().collect();
        let shares = mail
            .shares
            .exchange(worker, &c.abort, self.round, [Shares { sizes, missing }])?;
        self.round += 1;
        let total = sink::summed(shares.iter().flat_map(|s| s.sizes.iter().copied()));
        let owners = sink::owners(&total, peers);
        let mut waves = sink::waves(tables, &owners, &total).into_iter().peekable();
        for &table in tables {
            while let Some((_, days)) = waves.next_if(|w| w.0 == table) {
                let keep = |tb: Table, d: i32| tb == table && days.binary_search(&d).is_ok();
                let buckets = sink::collect_table(traces, table, &keep, dataflow::Time::MAX, Some(&days));
                each(&buckets);
                let parts = sink::to_owners(&mut mail.rows, worker, &c.abort, self.t, buckets, &owners, &total)?;
                self.t += 1;
                self.staged.extend(stage_owned(c, parts, self.sources, &self.read)?);
            }
            traces.release(table);
            tracing::debug!(
                worker = worker.index(),
                table = table.name(),
                rss_mb = crate::report::rss_mb(),
                "table staged"
            );
        }
        let mut missing: Vec<i32> = shares.iter().flat_map(|s| s.missing.iter().copied()).collect();
        missing.sort_unstable();
        Ok(missing)
    }
}

/// In a batch of one process, once every worker has read its input no event
/// id is interned again (records reach other workers without serialization):
/// the ids' lookup tables go before the daily tables are computed, the
/// batch's memory peak, and every id still resolves. Where records go
/// through bytes (a cluster, `ProcessBinary`) the tables stay: kept listens
/// arrive until the (day, user) arrangement is complete, and are interned
/// on arrival.
fn seal_event_ids(worker: &mut timely::worker::Worker, c: &Ctx, mail: &mut Mail) -> Result<()> {
    if c.cfg.topology.serializes() {
        return Ok(());
    }
    mail.read.exchange(worker, &c.abort, 0, [()])?;
    if worker.index() == 0 {
        c.interner.seal_event_ids();
    }
    Ok(())
}

/// Forgets the event ids of every day: this process's workers are all
/// past the dataflow that reads them.
fn release_event_ids(interner: &Interner) {
    for day in interner.event_day_list() {
        interner.release_day(day);
    }
    crate::intern::forget_days();
}

fn progress_thread(total: u64, bytes: Arc<AtomicU64>, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} reading {bytes}/{total_bytes} {wide_bar} {bytes_per_sec} eta {eta}",
            )
            .expect("template"),
        );
        while !done.load(Ordering::Relaxed) {
            bar.set_position(bytes.load(Ordering::Relaxed));
            std::thread::sleep(Duration::from_millis(100));
        }
        bar.finish_and_clear();
    })
}
