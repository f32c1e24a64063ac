//! Continuous runs (`skipflow run`): the same dataflow as batch, fed from a
//! Kafka topic in small epochs; every commit interval the output partitions
//! that changed are replaced with their full contents as of the commit
//! epoch, read from the arranged outputs, then the checkpoint is written.
//!
//! Time: a clock thread advances a shared epoch every `epoch`; commit
//! boundaries are every `commit_interval` and, on SIGINT/SIGTERM, one final
//! boundary. A worker records its reader positions when its input crosses
//! a boundary, and commits right away, before it reads anything more: the
//! checkpoint of boundary E names exactly the records reflected in the
//! outputs of times before E, and a decision taken in the commit (which days
//! are final) applies to exactly the records after those positions.
//!
//! Finalization (semantics.md): the watermark is the smallest, over the
//! partitions that are not caught up, of the largest message timestamp read
//! (never below what it was). Day D is final once the watermark passes
//! end(D) + `finalize_after`; the commit that decides it publishes D's last
//! changes, writes the checkpoint, then `_SUCCESS` into D's partitions. Then
//! D's state is released: its listens are retracted from the dataflow, and
//! its daily aggregates, while a 28-day window of an open day still needs
//! them, come back from its published Parquet as `prior` input, which makes
//! the retraction invisible to the profile. A listen for a final day goes to
//! `late_events` (merged by event id) and changes nothing else.
//!
//! Recovery: the checkpoint holds the offsets the outputs reflect, the last
//! final day, and `replay_from`, the earliest offsets the open days' state
//! needs. A restart loads the window days before the open ones from Parquet
//! and replays from `replay_from`; records before the checkpoint offsets are
//! neither counted again nor re-published, records of final days before them
//! are skipped (they are in the published tables or in `late_events`), and
//! nothing is published until the checkpoint offsets are reached again.

use crate::dataflow::{self, LateRow, ListenTrace, RejectRow, Time};
use crate::decode;
use crate::error::{self, Abort, Barrier};
use crate::intern::{EventIdCache, Id, Interner};
use crate::report::Counts;
use crate::schema::Table;
use crate::sink::{self, publish, PartRows, Staged};
use crate::source::kafka::{Ctx, Discovery, KafkaInput, KafkaReader, PartitionState};
use crate::source::RawRecord;
use anyhow::{anyhow, Context, Result};
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::cursor::{cursor_list, Cursor};
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::trace::TraceReader;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use timely::progress::frontier::{Antichain, AntichainRef};

/// Where a first start begins reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
    /// The first message at or after this instant (epoch ms).
    Timestamp(i64),
}

/// A continuous run's settings.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub output: PathBuf,
    pub kafka: KafkaInput,
    pub start: StartAt,
    pub commit_interval: Duration,
    pub finalize_after: Duration,
    pub workers: usize,
    /// Length of one epoch (input time step).
    pub epoch: Duration,
    /// Where to serve Prometheus metrics.
    pub metrics_addr: Option<String>,
    /// How often the topic is checked for partitions added to it.
    pub discovery_interval: Duration,
}

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
}

fn checkpoint_path(out: &Path) -> PathBuf {
    publish::state_dir(out).join("checkpoint.json")
}

/// Reads the checkpoint of an output directory, if any.
pub fn read_checkpoint(out: &Path) -> Result<Option<Checkpoint>> {
    let p = checkpoint_path(out);
    match std::fs::read(&p) {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b).with_context(|| format!("reading {}", p.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

fn write_checkpoint(out: &Path, c: &Checkpoint) -> Result<()> {
    let p = checkpoint_path(out);
    let tmp = p.with_extension("json.tmp");
    let f = std::fs::File::create(&tmp)?;
    serde_json::to_writer_pretty(&f, c)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &p)?;
    std::fs::File::open(publish::state_dir(out))?.sync_all()?;
    Ok(())
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
fn crash_point(name: &str) {
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

/// What a commit gathers from every worker.
#[derive(Default)]
struct Gathered {
    changed: HashSet<(Table, i32)>,
    counts: Counts,
    /// Kept listens per day, as of the boundary.
    kept_days: BTreeMap<i32, i64>,
    states: Vec<PartitionState>,
    /// First offset of a listen of an open day, per (day, partition).
    first_off: BTreeMap<(i32, i32), i64>,
    /// Records counted, per second of message timestamp (freshness).
    arrivals: BTreeMap<i64, u64>,
    sizes: BTreeMap<&'static str, i64>,
    kafka_errors: u64,
}

/// Shared by the workers and the clock.
struct Shared {
    interner: Arc<Interner>,
    epoch: AtomicU32,
    /// Set on stop: the last boundary.
    final_epoch: AtomicU32,
    stop: AtomicBool,
    barrier: Barrier,
    /// The first failure of any worker: every wait gives up, nothing more is published.
    abort: Arc<Abort>,
    /// Reader positions per worker at each boundary epoch.
    positions: Mutex<BTreeMap<Time, BTreeMap<i32, i64>>>,
    /// Partitions changed since the last published commit.
    changed: Mutex<HashSet<(Table, i32)>>,
    gathered: Mutex<Gathered>,
    parts: sink::Exchange,
    staged: Mutex<Vec<Staged>>,
    /// Offsets the published outputs reflected when this process started.
    resume: BTreeMap<i32, i64>,
    checkpoint: Mutex<Checkpoint>,
    /// The last final day (`i32::MIN`: none), read by the feeders.
    final_through: AtomicI32,
    /// The as-of range (first, last day), and its bounds for a lock-free check.
    as_of: Mutex<Option<(i32, i32)>>,
    as_of_lo: AtomicI32,
    as_of_hi: AtomicI32,
    source: Id,
    run_day: i32,
    commits: AtomicU32,
    kafka_errors_reported: AtomicU64,
    started: chrono::DateTime<chrono::Utc>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Commits consumer-group offsets after each checkpoint (lag dashboards).
    committer: BaseConsumer<Ctx>,
    /// Partitions of the topic, new ones included (a process-local cache).
    discovery: Discovery,
}

impl Shared {
    fn final_through(&self) -> Option<i32> {
        Some(self.final_through.load(Ordering::SeqCst)).filter(|d| *d != i32::MIN)
    }
}

/// Turns one worker's records into dataflow input, `rejected_events` rows
/// and `late_events` rows, counting what the checkpoint does not yet reflect.
struct Feeder {
    interner: Arc<Interner>,
    cache: EventIdCache,
    source: Id,
    run_day: i32,
    /// The checkpoint offsets at start: records before them were counted
    /// and published by an earlier process.
    resume: HashMap<i32, i64>,
    final_through: i32,
    counts: Counts,
    rejected: Vec<(i32, RejectRow)>,
    late: Vec<(i32, LateRow)>,
    first_off: BTreeMap<(i32, i32), i64>,
    arrivals: BTreeMap<i64, u64>,
}

impl Feeder {
    fn feed(&mut self, rec: RawRecord<'_>, h: &mut dataflow::Handles, sh: &Shared) {
        let fresh = rec.offset >= self.resume.get(&rec.partition).copied().unwrap_or(i64::MIN);
        if fresh {
            self.counts.read += 1;
            if let Some(ts) = rec.message_ts {
                *self.arrivals.entry(ts.div_euclid(1000)).or_insert(0) += 1;
            }
        }
        match rec.decode() {
            Err(reason) => {
                if fresh {
                    self.counts.reject(reason);
                    self.rejected.push(rec.reject_row(self.source, reason, self.run_day));
                }
            }
            Ok(e) => {
                let day = e.day();
                if day <= self.final_through {
                    if fresh {
                        self.counts.late += 1;
                        self.late.push((day, LateRow::new(&e, rec.message_ts)));
                    }
                    return;
                }
                self.first_off.entry((day, rec.partition)).or_insert(rec.offset);
                if day < sh.as_of_lo.load(Ordering::Relaxed) || day > sh.as_of_hi.load(Ordering::Relaxed) {
                    extend_as_of(sh, day, self.final_through, &mut |d| h.as_of.update(d, 1));
                }
                h.listens
                    .update(dataflow::Listen::keyed(&e, &self.interner, &mut self.cache), 1);
            }
        }
    }
}

/// Widens the as-of range to `day`, adding each new open as-of day exactly once.
fn extend_as_of(sh: &Shared, day: i32, final_through: i32, add: &mut dyn FnMut(i32)) {
    let mut r = sh.as_of.lock().expect("as-of range");
    let (lo, hi) = match *r {
        None => {
            add(day);
            (day, day)
        }
        Some((lo, hi)) => {
            for d in day..lo {
                add(d);
            }
            for d in (hi + 1).max(final_through.saturating_add(1))..=day {
                add(d);
            }
            (lo.min(day), hi.max(day))
        }
    };
    *r = Some((lo, hi));
    sh.as_of_lo.store(lo, Ordering::Relaxed);
    sh.as_of_hi.store(hi, Ordering::Relaxed);
}

/// Updates held by an arrangement (this worker's share).
fn trace_len<K, V>(t: &TraceAgent<ValSpine<K, V, Time, dataflow::Diff>>) -> i64
where
    K: Ord + Clone + 'static,
    V: Ord + Clone + 'static,
{
    use differential_dataflow::trace::implementations::spine_fueled::SpineBatch;
    let mut n = 0i64;
    t.map_spans(|s| {
        if let Some(b) = &s.inner {
            n += b.len() as i64;
        }
    });
    n
}

/// Lets an arrangement forget the distinctions between times before `at`.
fn compact<Tr: TraceReader<Time = Time>>(t: &mut Tr, at: Time) {
    t.set_logical_compaction(AntichainRef::new(&[at]));
    t.set_physical_compaction(AntichainRef::new(&[at]));
}

/// Compacts every held trace to `at`: a commit reads as of a boundary B
/// (updates at times before B), so `at` must stay below every boundary still
/// to come. Without this, each epoch's version of every changed row would be
/// kept until the next commit.
fn compact_all(h: &mut dataflow::Handles, at: Time) {
    let t = &mut h.traces;
    compact(&mut t.user_daily, at);
    compact(&mut t.user_track_daily, at);
    compact(&mut t.user_artist_daily, at);
    compact(&mut t.user_profile, at);
    compact(&mut t.rejected, at);
    if let Some(l) = h.listens_trace.as_mut() {
        compact(l, at);
    }
}

/// Retracts every listen of days `from..=to` held in this worker's share of
/// the arranged input.
fn retract_listens(
    trace: &mut ListenTrace,
    from: i32,
    to: i32,
    input: &mut differential_dataflow::input::InputSession<Time, ((i32, Id), dataflow::Listen), dataflow::Diff>,
) -> usize {
    let Some(batches) = trace.batches_through(Antichain::<Time>::new().borrow()) else {
        return 0;
    };
    let (mut cursor, storage) = cursor_list(batches);
    cursor.seek_key(&storage, &(from, 0));
    let mut n = 0;
    while cursor.key_valid(&storage) {
        let k = *cursor.key(&storage);
        if k.0 > to {
            break;
        }
        while cursor.val_valid(&storage) {
            let mut c: dataflow::Diff = 0;
            cursor.map_times(&storage, |_, d| c += *d);
            if c != 0 {
                input.update((k, *cursor.val(&storage)), -c);
                n += 1;
            }
            cursor.step_val(&storage);
        }
        cursor.step_key(&storage);
    }
    n
}

/// Consumer-group offsets (for lag dashboards only: the checkpoint is the
/// truth) and metrics, once a checkpoint is written.
fn after_checkpoint(sh: &Shared, cfg: &RunConfig, ck: &Checkpoint, g: &Gathered, published: usize, started: Instant) {
    let m = &sh.metrics;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (p, o) in &ck.offsets {
        let _ = tpl.add_partition_offset(&cfg.kafka.topic, *p, rdkafka::Offset::Offset(*o));
    }
    for s in &g.states {
        // From the reader's last fetch: no broker call (commits go on during an outage).
        let lag = if s.caught_up {
            Some(0)
        } else {
            s.high.map(|high| (high - s.position).max(0))
        };
        if let Some(l) = lag {
            m.lag.with_label_values(&[&s.partition.to_string()]).set(l);
        }
    }
    // Serve the committer's queued events (commit results, logs) now, not at shutdown.
    let _ = sh.committer.poll(Duration::ZERO);
    if let Err(e) = sh.committer.commit(&tpl, CommitMode::Async) {
        tracing::debug!("committing consumer-group offsets: {e}");
        m.kafka_errors.with_label_values(&["offset_commit"]).inc();
    }
    let c = &ck.counts;
    for (class, v) in [
        ("read", c.read),
        ("kept", c.kept),
        ("duplicates", c.duplicates),
        ("rejected", c.rejected),
        ("late", c.late),
    ] {
        m.events.with_label_values(&[class]).set(v as i64);
    }
    let last_final = ck.final_through.unwrap_or(i32::MIN);
    m.open_days
        .set(g.kept_days.iter().filter(|(d, n)| **d > last_final && **n > 0).count() as i64);
    for (name, n) in &g.sizes {
        m.arrangement_records.with_label_values(&[name]).set(*n);
    }
    if let Some(w) = ck.watermark_ms {
        m.watermark.set(w as f64 / 1000.0);
    }
    if let Some(d) = ck.final_through {
        m.final_through.set((d as i64 + 1) as f64 * 86_400.0);
    }
    let prev = sh.kafka_errors_reported.swap(g.kafka_errors, Ordering::SeqCst);
    if g.kafka_errors > prev {
        m.kafka_errors
            .with_label_values(&["consumer"])
            .inc_by(g.kafka_errors - prev);
    }
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
}

/// The run report of one commit: counts since the output's first start, the
/// accounting identity, and the partitions this commit replaced.
fn write_commit_report(sh: &Shared, cfg: &RunConfig, ck: &Checkpoint, staged: &[Staged], t: Instant) -> Result<()> {
    use crate::report::{InputRange, RunReport, TableWrite};
    let mut tables: BTreeMap<String, TableWrite> = BTreeMap::new();
    for s in staged {
        let w = tables.entry(s.table.name().to_string()).or_default();
        w.partitions_written += 1;
        w.rows += s.rows as u64;
        w.bytes += s.bytes;
        w.days.push(crate::dates::day_to_string(s.day));
    }
    let report = RunReport {
        run_id: format!("{}-commit-{:06}", sh.started.format("%Y%m%dT%H%M%S%.3fZ"), ck.commits),
        mode: "continuous".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at: sh.started.to_rfc3339(),
        finished_at: chrono::Utc::now().to_rfc3339(),
        elapsed_s: t.elapsed().as_secs_f64(),
        workers: cfg.workers,
        range: None,
        inputs: ck
            .offsets
            .iter()
            .map(|(p, o)| crate::report::InputRange::Kafka {
                topic: ck.topic.clone(),
                partition: *p,
                start_offset: ck.replay_from.get(p).copied().unwrap_or(0),
                end_offset: *o,
            })
            .collect::<Vec<InputRange>>(),
        counts: ck.counts.clone(),
        tables,
        missing_window_days: vec![],
    };
    crate::batch::write_report(&cfg.output, &report)?;
    Ok(())
}

/// Starting positions: the checkpoint's replay start (partitions added to
/// the topic since: their log start), or `start` on a first run.
fn starts(cfg: &RunConfig, ck: &Option<Checkpoint>) -> Result<BTreeMap<i32, i64>> {
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

/// Adds `_SUCCESS` to every published partition of days `from..=to` that lacks it.
fn mark_final(out: &Path, from: i32, to: i32) -> Result<usize> {
    let mut n = 0;
    for t in FINAL_TABLES {
        for d in publish::published_days(out, t)? {
            if d < from || d > to {
                continue;
            }
            let dir = out.join(t.name()).join(sink::partition_dir(d));
            let marker = dir.join("_SUCCESS");
            if !marker.exists() {
                std::fs::File::create(&marker)?.sync_all()?;
                std::fs::File::open(&dir)?.sync_all()?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Runs until SIGINT/SIGTERM (or `stop` is set), then commits and returns.
pub fn run(cfg: &RunConfig, stop: Arc<AtomicBool>) -> Result<u64> {
    std::fs::create_dir_all(&cfg.output)
        .with_context(|| format!("cannot create output directory {}", cfg.output.display()))?;
    let _lock = publish::OutputLock::acquire(&cfg.output)?;
    publish::clean_staging(&cfg.output)?;
    let ck = read_checkpoint(&cfg.output)?;
    let replay_from = starts(cfg, &ck)?;
    let ck = ck.unwrap_or(Checkpoint {
        topic: cfg.kafka.topic.clone(),
        replay_from: replay_from.clone(),
        ..Default::default()
    });
    if let Some(f) = ck.final_through {
        // A crash may have come between the checkpoint and the markers.
        mark_final(&cfg.output, i32::MIN, f)?;
    }
    let workers = cfg.workers.max(1);
    let interner = Interner::new();
    let source = interner.name(&cfg.kafka.topic);
    let metrics = crate::metrics::Metrics::new()?;
    if let Some(addr) = &cfg.metrics_addr {
        metrics.serve(addr)?;
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    }
    let as_of = ck.first_day.zip(ck.last_day);
    let shared = Arc::new(Shared {
        interner,
        epoch: AtomicU32::new(1),
        final_epoch: AtomicU32::new(u32::MAX),
        stop: AtomicBool::new(false),
        barrier: Barrier::new(workers),
        abort: Abort::new(),
        positions: Mutex::new(BTreeMap::new()),
        changed: Mutex::new(HashSet::new()),
        gathered: Mutex::new(Gathered::default()),
        parts: Mutex::new(HashMap::new()),
        staged: Mutex::new(Vec::new()),
        resume: ck.offsets.clone(),
        final_through: AtomicI32::new(ck.final_through.unwrap_or(i32::MIN)),
        as_of: Mutex::new(as_of),
        as_of_lo: AtomicI32::new(as_of.map_or(i32::MAX, |r| r.0)),
        as_of_hi: AtomicI32::new(as_of.map_or(i32::MIN, |r| r.1)),
        checkpoint: Mutex::new(ck),
        source,
        run_day: crate::dates::today(),
        commits: AtomicU32::new(0),
        kafka_errors_reported: AtomicU64::new(0),
        started: chrono::Utc::now(),
        metrics,
        committer: {
            let c = cfg.kafka.consumer()?;
            c.context().errors.silent.store(true, Ordering::Relaxed);
            c
        },
        discovery: Discovery::start(&cfg.kafka, replay_from.clone(), cfg.discovery_interval),
    });
    tracing::info!(
        topic = %cfg.kafka.topic,
        ?replay_from,
        final_through = ?shared.final_through().map(crate::dates::day_to_string),
        "continuous run starting"
    );

    // The clock: epochs, and the final boundary on stop.
    let clock = {
        let sh = shared.clone();
        let epoch_len = cfg.epoch;
        std::thread::spawn(move || {
            let t0 = Instant::now();
            loop {
                if sh.abort.is_set() {
                    return;
                }
                if stop.load(Ordering::SeqCst) || sh.stop.load(Ordering::SeqCst) {
                    let e = sh.epoch.load(Ordering::SeqCst);
                    sh.final_epoch.store(e + 1, Ordering::SeqCst);
                    sh.epoch.store(e + 1, Ordering::SeqCst);
                    sh.stop.store(true, Ordering::SeqCst);
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
                // Epoch k >= 2 starts k epochs after the start (epoch 1 runs
                // until then), so boundary k * per_commit is crossed exactly
                // k commit intervals after the start.
                let e = (t0.elapsed().as_millis() / epoch_len.as_millis().max(1)).max(1) as u32;
                sh.epoch.fetch_max(e, Ordering::SeqCst);
            }
        })
    };

    let per_commit = (cfg.commit_interval.as_millis() / cfg.epoch.as_millis().max(1)).max(1) as Time;
    let cfg2 = cfg.clone();
    let sh = shared.clone();
    let replay: Vec<(i32, i64)> = replay_from.into_iter().collect();
    // Arrangements merge their batches while idle too: the versions a row goes
    // through within a commit interval (compacted to one time) consolidate
    // away instead of waiting for the next merge that new data would trigger.
    let mut config = timely::Config::process(workers);
    differential_dataflow::configure(
        &mut config.worker,
        &differential_dataflow::Config::default().idle_merge_effort(Some(100_000)),
    );
    error::install_panic_hook();
    let guards = timely::execute(config, move |worker| {
        sh.abort.enter(worker.index());
        let r = run_worker(worker, &cfg2, &sh, &replay, per_commit);
        if let Err(e) = &r {
            // The others stop waiting for this one.
            sh.abort.fail(format!("{e:#}"));
            dataflow::abandon(worker);
        }
        r.map_err(|e| format!("{e:#}"))
    })
    .map_err(|e| anyhow!("starting workers: {e}"))?;
    let results = guards.join();
    shared.stop.store(true, Ordering::SeqCst);
    let _ = clock.join();
    let failed = results.iter().any(|r| !matches!(r, Ok(Ok(()))));
    if let (true, Some(first)) = (failed || shared.abort.is_set(), shared.abort.message()) {
        return Err(anyhow!(
            "{first}; nothing after the last checkpoint was published (a restart resumes from it)"
        ));
    }
    Ok(shared.commits.load(Ordering::SeqCst) as u64)
}

/// Window days before the first open day come from the published tables.
fn load_prior(
    out: &Path,
    days: std::ops::RangeInclusive<i32>,
    index: usize,
    peers: usize,
    sign: dataflow::Diff,
    sh: &Shared,
    h: &mut dataflow::Handles,
) -> Result<()> {
    error::inject("prior", index, peers)?;
    for day in days {
        if day.rem_euclid(peers as i32) as usize != index {
            continue;
        }
        sink::read::prior_day(out, day, &sh.interner, &mut |u, p| h.prior.update((u, p), sign))
            .with_context(|| format!("reading the final day {} back", crate::dates::day_to_string(day)))?;
    }
    Ok(())
}

fn run_worker(
    worker: &mut timely::worker::Worker,
    cfg: &RunConfig,
    sh: &Shared,
    replay: &[(i32, i64)],
    per_commit: Time,
) -> Result<()> {
    let index = worker.index();
    let peers = worker.peers();
    let mut h = dataflow::build_with(worker, sh.interner.clone(), dataflow::Options { continuous: true });
    let owns = |p: i32| p.rem_euclid(peers as i32) as usize == index;
    let mine: Vec<(i32, i64)> = replay.iter().filter(|(p, _)| owns(*p)).copied().collect();
    error::inject("reader", index, peers)?;
    let mut reader = KafkaReader::follow(&cfg.kafka, &mine)?;
    let final_through = sh.final_through.load(Ordering::SeqCst);
    let mut feeder = Feeder {
        interner: sh.interner.clone(),
        cache: EventIdCache::default(),
        source: sh.source,
        run_day: sh.run_day,
        resume: sh.resume.iter().map(|(p, o)| (*p, *o)).collect(),
        final_through,
        counts: Counts::default(),
        rejected: Vec::new(),
        late: Vec::new(),
        first_off: BTreeMap::new(),
        arrivals: BTreeMap::new(),
    };
    // Time 0: the final days an open day's window still needs, and the open as-of days.
    if let Some(f) = sh.final_through() {
        load_prior(
            &cfg.output,
            f - dataflow::WINDOW_DAYS + 2..=f,
            index,
            peers,
            1,
            sh,
            &mut h,
        )?;
    }
    if index == 0 {
        if let Some((lo, hi)) = *sh.as_of.lock().expect("as-of range") {
            for d in lo.max(final_through.saturating_add(1))..=hi {
                h.as_of.update(d, 1);
            }
        }
    }
    let mut time: Time = 0;
    let mut next_boundary: Time = per_commit;
    // Reader positions each time the input time advanced: the positions of a
    // boundary are those of the first advance to it or past it.
    let mut crossings: BTreeMap<Time, Vec<(i32, i64)>> = BTreeMap::new();
    // Days whose retraction was input at a time, to forget once it is done.
    let mut releasing: Vec<(Time, i32, i32)> = Vec::new();
    let mut looked = Instant::now();
    loop {
        sh.abort.check()?;
        if looked.elapsed() >= Duration::from_secs(1) {
            looked = Instant::now();
            // Partitions added to the topic: the owner starts at their log start.
            for (p, low) in sh.discovery.partitions() {
                if owns(p) {
                    reader.add(p, low)?;
                }
            }
        }
        let stopping = sh.stop.load(Ordering::SeqCst);
        // Backpressure: read only while the dataflow has finished every epoch
        // before the previous one; otherwise unprocessed input (and the
        // reduces' work per distinct time) would pile up without bound.
        let behind = h.probe.less_than(&time.saturating_sub(1));
        if !stopping && !behind {
            reader.poll(8 * 1024, &mut |rec| feeder.feed(rec, &mut h, sh))?;
        }
        worker.step();
        let target = sh
            .epoch
            .load(Ordering::SeqCst)
            .min(sh.final_epoch.load(Ordering::SeqCst));
        if target > time {
            crossings.insert(target, reader.positions());
            time = target;
            advance(&mut h, time);
            // Every boundary to come is at or past `next_boundary`, and the
            // final one (once set, it may equal `time`) is above every time
            // reached before it was set.
            let last = sh.final_epoch.load(Ordering::SeqCst);
            compact_all(&mut h, time.min(next_boundary - 1).min(last.saturating_sub(1)));
        }
        let last = sh.final_epoch.load(Ordering::SeqCst);
        let boundary = next_boundary.min(last);
        if time >= boundary {
            let probe = h.probe.clone();
            worker.step_while(|| !sh.abort.is_set() && probe.less_than(&boundary));
            sh.abort.check()?;
            let at = crossings
                .range(boundary..)
                .next()
                .map(|(_, p)| p.clone())
                .unwrap_or_default();
            sh.positions
                .lock()
                .expect("positions")
                .entry(boundary)
                .or_default()
                .extend(at);
            crossings = crossings.split_off(&boundary);
            let mut ctx = CommitCtx {
                h: &mut h,
                sh,
                cfg,
                boundary,
                time,
                index,
                peers,
                feeder: &mut feeder,
                reader: &reader,
                releasing: &mut releasing,
            };
            commit(&mut ctx)?;
            if boundary == last {
                return Ok(());
            }
            next_boundary = (boundary / per_commit + 1) * per_commit;
        }
    }
}

fn advance(h: &mut dataflow::Handles, time: Time) {
    h.listens.advance_to(time);
    h.listens.flush();
    h.rejected.advance_to(time);
    h.rejected.flush();
    h.prior.advance_to(time);
    h.prior.flush();
    h.as_of.advance_to(time);
    h.as_of.flush();
}

struct CommitCtx<'a> {
    h: &'a mut dataflow::Handles,
    sh: &'a Shared,
    cfg: &'a RunConfig,
    boundary: Time,
    /// This worker's input time (at or after the boundary).
    time: Time,
    index: usize,
    peers: usize,
    feeder: &'a mut Feeder,
    reader: &'a KafkaReader,
    releasing: &'a mut Vec<(Time, i32, i32)>,
}

/// One commit: changed partitions as of `boundary`, staged by their owners,
/// published by worker 0, then the checkpoint, `_SUCCESS` of newly final
/// days, and the release of their state.
fn commit(c: &mut CommitCtx<'_>) -> Result<()> {
    // The commit's duration runs from here (the input crossed the boundary)
    // to the checkpoint: gathering, collecting, staging and publishing.
    let begun = Instant::now();
    let (sh, boundary, index) = (c.sh, c.boundary, c.index);
    // 1. What every worker knows at the boundary.
    {
        let mut g = sh.gathered.lock().expect("gathered");
        {
            let mut mine = c.h.changes.borrow_mut();
            let later = mine.split_off(&boundary);
            for (_, set) in std::mem::replace(&mut *mine, later) {
                g.changed.extend(set);
            }
        }
        g.counts.add(&std::mem::take(&mut c.feeder.counts));
        for (d, n) in c.h.kept.borrow_mut().settle(boundary) {
            *g.kept_days.entry(*d).or_insert(0) += n;
        }
        g.states.extend(c.reader.states());
        g.first_off.extend(c.feeder.first_off.iter().map(|(k, v)| (*k, *v)));
        for (s, n) in std::mem::take(&mut c.feeder.arrivals) {
            *g.arrivals.entry(s).or_insert(0) += n;
        }
        let t = &c.h.traces;
        for (name, n) in [
            ("listens", c.h.listens_trace.as_ref().map_or(0, trace_len)),
            ("user_daily", trace_len(&t.user_daily)),
            ("user_track_daily", trace_len(&t.user_track_daily)),
            ("user_artist_daily", trace_len(&t.user_artist_daily)),
            ("user_profile_28d", trace_len(&t.user_profile)),
        ] {
            *g.sizes.entry(name).or_insert(0) += n;
        }
        g.kafka_errors += c.reader.errors();
    }
    sh.barrier.wait(&sh.abort)?;
    // Replaying after a restart: publish nothing until the checkpoint's offsets are reached.
    let positions = sh
        .positions
        .lock()
        .expect("positions")
        .get(&boundary)
        .cloned()
        .unwrap_or_default();
    let replaying = sh.resume.iter().any(|(p, o)| positions.get(p).is_some_and(|at| at < o));
    let old_final = sh.final_through();
    if index == 0 {
        let g = sh.gathered.lock().expect("gathered");
        sh.changed.lock().expect("changed").extend(g.changed.iter().copied());
    }
    sh.barrier.wait(&sh.abort)?;
    let staging = publish::state_dir(&c.cfg.output)
        .join("staging")
        .join(format!("commit-{boundary}"));
    if !replaying {
        // 2. Changed partitions of open days, from the arrangements, plus the
        // rejected and late rows read since the last commit.
        let changed = sh.changed.lock().expect("changed").clone();
        let is_final = |d: i32| old_final.is_some_and(|f| d <= f);
        let keep = |t: Table, d: i32| changed.contains(&(t, d)) && !is_final(d);
        let mut buckets = sink::collect_before(&mut c.h.traces, &keep, boundary);
        for (day, row) in std::mem::take(&mut c.feeder.rejected) {
            if let PartRows::Rejected(v) = buckets
                .entry((Table::RejectedEvents, day))
                .or_insert_with(|| PartRows::Rejected(vec![]))
            {
                v.push(row);
            }
        }
        for (day, row) in std::mem::take(&mut c.feeder.late) {
            if let PartRows::Late(v) = buckets
                .entry((Table::LateEvents, day))
                .or_insert_with(|| PartRows::Late(vec![]))
            {
                v.push(row);
            }
        }
        // A changed partition with no rows left is removed (an empty share stands for it).
        if index == 0 {
            for &(t, d) in changed.iter().filter(|(_, d)| !is_final(*d)) {
                buckets.entry((t, d)).or_insert_with(|| empty_rows(t));
            }
        }
        sink::hand_over(&sh.parts, buckets);
    }
    sh.barrier.wait(&sh.abort)?;
    if !replaying {
        // 3. Each owner stages its partitions; rejected and late rows merge
        // with what is published.
        let mut staged = Vec::new();
        error::inject("staging", index, c.peers)?;
        while let Some(((table, day), rows)) = sink::take_next(&sh.parts) {
            let rows = match rows {
                PartRows::Rejected(mut new) => {
                    new.extend(sink::read::rejected_rows(&c.cfg.output, day, &sh.interner)?);
                    new.sort_by_key(|r| (r.source, r.partition, r.offset));
                    new.dedup_by_key(|r| (r.source, r.partition, r.offset));
                    PartRows::Rejected(new)
                }
                PartRows::Late(mut new) => {
                    new.extend(sink::read::late_rows(&c.cfg.output, day)?);
                    PartRows::Late(new)
                }
                rows => rows,
            };
            if rows.is_empty() {
                staged.push(Staged {
                    table,
                    day,
                    dir: PathBuf::new(),
                    rows: 0,
                    bytes: 0,
                });
                continue;
            }
            sh.abort.check()?;
            staged.push(sink::stage_partition(&staging, day, rows, &sh.interner)?);
        }
        if !staged.is_empty() {
            crash_point("staged");
        }
        sh.staged.lock().expect("staged").extend(staged);
    }
    sh.barrier.wait(&sh.abort)?;
    if index == 0 {
        publish_and_checkpoint(c, replaying, &positions, old_final, &staging, begun)?;
        sh.positions.lock().expect("positions").retain(|t, _| *t > boundary);
    }
    sh.barrier.wait(&sh.abort)?;
    // 4. Newly final days: release their state.
    let new_final = sh.final_through();
    if !replaying {
        c.feeder.final_through = new_final.unwrap_or(i32::MIN);
        if new_final != old_final {
            let f = new_final.expect("a final day");
            let from = old_final.map_or(i32::MIN, |o| o + 1);
            c.feeder.first_off = c.feeder.first_off.split_off(&(f + 1, i32::MIN));
            release(c, old_final, f)?;
            c.releasing.push((c.time, from, f));
            c.feeder.cache.clear();
        }
    }
    // 5. Forget what no read needs any more.
    compact_all(c.h, boundary);
    let (done, pending): (Vec<_>, Vec<_>) = c.releasing.drain(..).partition(|(t, _, _)| *t < boundary);
    *c.releasing = pending;
    if index == 0 {
        // Their retractions went through: the event ids of those days are unused.
        for (_, from, to) in done {
            for d in sh
                .interner
                .event_day_list()
                .into_iter()
                .filter(|d| *d >= from && *d <= to)
            {
                sh.interner.release_day(d);
            }
        }
    }
    sh.barrier.wait(&sh.abort)?;
    Ok(())
}

fn empty_rows(t: Table) -> PartRows {
    match t {
        Table::UserDaily => PartRows::UserDaily(vec![]),
        Table::UserTrackDaily => PartRows::UserTrackDaily(vec![]),
        Table::UserArtistDaily => PartRows::UserArtistDaily(vec![]),
        Table::UserProfile28d => PartRows::UserProfile(vec![]),
        Table::RejectedEvents => PartRows::Rejected(vec![]),
        Table::LateEvents => PartRows::Late(vec![]),
    }
}

/// Worker 0: publishes the staged partitions, decides the final days, writes
/// the checkpoint, marks the newly final partitions, reports.
fn publish_and_checkpoint(
    c: &mut CommitCtx<'_>,
    replaying: bool,
    positions: &BTreeMap<i32, i64>,
    old_final: Option<i32>,
    staging: &Path,
    started: Instant,
) -> Result<()> {
    let (sh, cfg) = (c.sh, c.cfg);
    let g = std::mem::take(&mut *sh.gathered.lock().expect("gathered"));
    if replaying {
        // Counts and arrivals wait for the first published commit.
        let mut keep = sh.gathered.lock().expect("gathered");
        keep.counts = g.counts;
        keep.arrivals = g.arrivals;
        tracing::info!(boundary = c.boundary, "replaying to the checkpoint; nothing published");
        return Ok(());
    }
    let staged = std::mem::take(&mut *sh.staged.lock().expect("staged"));
    for (i, s) in staged.iter().enumerate() {
        if s.rows == 0 {
            publish::remove(&cfg.output, s.table, s.day)?;
        } else {
            let success = s.table == Table::RejectedEvents && old_final.is_some_and(|f| s.day <= f);
            publish::publish(&cfg.output, s, success)?;
        }
        if i == 0 && staged.len() > 1 {
            crash_point("published-one");
        }
    }
    if !staged.is_empty() {
        crash_point("published");
    }
    let _ = std::fs::remove_dir_all(staging);

    let mut ck = sh.checkpoint.lock().expect("checkpoint");
    // Finalization: the watermark of the partitions at the boundary.
    let wm = watermark(&g.states).max(ck.watermark_ms);
    ck.watermark_ms = wm;
    let fa = cfg.finalize_after.as_millis().min(i64::MAX as u128) as i64;
    let decided = wm.map(|w| final_day(w, fa));
    let new_final = match (old_final, decided) {
        (Some(o), Some(d)) => Some(o.max(d)),
        (o, d) => o.or(d),
    };
    let newly = |d: i32| new_final.is_some_and(|f| d <= f) && old_final.is_none_or(|o| d > o);
    let released: i64 = g.kept_days.iter().filter(|(d, _)| newly(**d)).map(|(_, n)| *n).sum();
    let open: i64 = g
        .kept_days
        .iter()
        .filter(|(d, _)| new_final.is_none_or(|f| **d > f))
        .map(|(_, n)| *n)
        .sum();

    let mut counts = std::mem::take(&mut ck.counts);
    let mut released_kept = counts.kept;
    released_kept += released.max(0) as u64;
    let mut gc = g.counts.clone();
    gc.kept = 0;
    counts.add(&gc);
    counts.kept = released_kept;
    ck.counts = counts;
    let mut report_counts = ck.counts.clone();
    report_counts.kept += open.max(0) as u64;
    report_counts.duplicates = report_counts
        .read
        .saturating_sub(report_counts.kept + report_counts.rejected + report_counts.late + report_counts.out_of_range);

    ck.offsets.extend(positions.iter().map(|(p, o)| (*p, *o)));
    // A restart needs the open days' listens: from the first offset of any of them.
    let mut replay_from = ck.offsets.clone();
    for (&(day, p), &o) in &g.first_off {
        if new_final.is_none_or(|f| day > f) {
            let e = replay_from.entry(p).or_insert(o);
            *e = (*e).min(o);
        }
    }
    ck.replay_from = replay_from;
    ck.final_through = new_final;
    if let Some((lo, hi)) = *sh.as_of.lock().expect("as-of range") {
        ck.first_day = Some(lo);
        ck.last_day = Some(hi);
    }
    ck.commits += 1;
    ck.committed_at = chrono::Utc::now().to_rfc3339();
    write_checkpoint(&cfg.output, &ck)?;
    if new_final != old_final {
        crash_point("checkpointed");
    }
    sh.final_through.store(new_final.unwrap_or(i32::MIN), Ordering::SeqCst);
    if new_final != old_final {
        let f = new_final.expect("final");
        let from = old_final.map_or(i32::MIN, |o| o + 1);
        let marked = mark_final(&cfg.output, from, f)?;
        tracing::info!(
            through = %crate::dates::day_to_string(f),
            watermark = ?wm.map(|w| chrono::DateTime::from_timestamp_millis(w).map(|t| t.to_rfc3339())),
            partitions = marked,
            "days finalized"
        );
    }
    sh.commits.fetch_add(1, Ordering::SeqCst);
    sh.changed.lock().expect("changed").clear();
    let mut report_ck = ck.clone();
    report_ck.counts = report_counts;
    drop(ck);
    write_commit_report(sh, cfg, &report_ck, &staged, started)?;
    after_checkpoint(sh, cfg, &report_ck, &g, staged.len(), started);
    tracing::info!(
        boundary = c.boundary,
        partitions = staged.len(),
        secs = started.elapsed().as_secs_f64(),
        "commit"
    );
    Ok(())
}

/// Releases the state of days after `old_final` up to `f` (all workers).
fn release(c: &mut CommitCtx<'_>, old_final: Option<i32>, f: i32) -> Result<()> {
    let (sh, index, peers) = (c.sh, c.index, c.peers);
    let from = old_final.map_or(i32::MIN, |o| o + 1);
    let h = &mut *c.h;
    let n = match h.listens_trace.as_mut() {
        Some(t) => retract_listens(t, from, f, &mut h.listens),
        None => 0,
    };
    // The window of the first open day (f + 1) reaches back to f - 26.
    let need_from = f - dataflow::WINDOW_DAYS + 2;
    load_prior(&c.cfg.output, from.max(need_from)..=f, index, peers, 1, sh, h)?;
    if let Some(o) = old_final {
        // Days that were prior input and left every open window.
        load_prior(
            &c.cfg.output,
            o - dataflow::WINDOW_DAYS + 2..=o.min(need_from - 1),
            index,
            peers,
            -1,
            sh,
            h,
        )?;
    }
    if index == 0 {
        if let Some((lo, hi)) = *sh.as_of.lock().expect("as-of range") {
            for d in lo.max(from)..=hi.min(f) {
                h.as_of.update(d, -1);
            }
        }
    }
    h.listens.flush();
    h.prior.flush();
    h.as_of.flush();
    tracing::debug!(worker = index, retracted = n, "state of final days released");
    Ok(())
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
