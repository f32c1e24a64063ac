//! Continuous runs (`skipflow run`): the same dataflow as batch, fed from a
//! Kafka topic in small epochs; every commit interval the output partitions
//! that changed are replaced with their full contents as of the commit
//! boundary, read from the arranged outputs, then the checkpoint is written.
//!
//! Time: each process has a clock that advances the input epoch every
//! `epoch`; commit boundaries are the multiples of `commit_interval`. A
//! worker records its reader positions when its input crosses a boundary B,
//! and commits right away, before it reads anything more, so the checkpoint
//! of B names exactly the records reflected in the outputs of times before
//! B, and what the commit decides (which days are final) applies to exactly
//! the records after those positions.
//!
//! The commit is coordinated by the dataflow (`commit.rs`), not by shared
//! memory, so the workers may live in several processes: every worker tells
//! every other what it knows at B (an all-gather through a mailbox whose
//! frontier says when all have spoken); the owner of each changed partition
//! receives every worker's share of its rows and writes it to staging; the
//! committer (worker 0) publishes once every owner has staged, decides the
//! final days and writes the checkpoint; its decision reaches every worker
//! as data, and each releases its share of the final days' state.
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

mod checkpoint;
mod commit;
mod committer;
mod feeder;
mod release;

pub use checkpoint::{accept, final_day, load as load_checkpoint, read_checkpoint, watermark, Checkpoint};

use crate::cluster::Topology;
use crate::dataflow::{self, Time};
use crate::error::{self, Abort};
use crate::intern::{Interner, Name};
use crate::mailbox;
use crate::source::kafka::{Discovery, KafkaInput, KafkaReader};
use crate::store::{Lock, LockMode, Store};
use anyhow::{anyhow, Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Worker threads of this process.
    pub workers: usize,
    /// Length of one epoch (input time step).
    pub epoch: Duration,
    /// Where to serve metrics, health, readiness and status (process 0 of a cluster).
    pub metrics_addr: Option<String>,
    /// When `/healthz` turns unhealthy and `/readyz` ready.
    pub health: crate::service::Thresholds,
    /// How often the topic is checked for partitions added to it.
    pub discovery_interval: Duration,
    /// This process's place among the run's processes.
    pub topology: Topology,
    /// The job file's `[storage]` table (object-store settings, `lease`).
    pub storage: BTreeMap<String, String>,
    /// The job file's `[quality]` table: judged when a day is finalized.
    pub quality: crate::quality::Quality,
    /// Wait while another run holds the output, and take over when it
    /// stops, dies or loses its lease (a hot standby).
    pub standby: bool,
}

/// What the workers of this process share: settings, the clock, and
/// process-local caches. Nothing here decides anything: decisions travel
/// through the dataflow.
struct Ctx {
    cfg: RunConfig,
    /// The output (a directory or a bucket).
    store: Store,
    /// The output's lock (checked before publishing: a lease can be lost).
    lock: Lock,
    interner: Arc<Interner>,
    abort: Arc<Abort>,
    /// The input epoch this process's clock has reached.
    epoch: AtomicU32,
    /// SIGINT/SIGTERM here, or a stop signal from another process.
    stop: Arc<AtomicBool>,
    /// Epochs per commit interval.
    per_commit: Time,
    /// The checkpoint as of the start.
    ck: Checkpoint,
    /// Where each partition's reading starts.
    replay: BTreeMap<i32, i64>,
    run_day: i32,
    started: chrono::DateTime<chrono::Utc>,
    /// Served by process 0, updated by the committer.
    metrics: Arc<crate::metrics::Metrics>,
    status: Arc<crate::service::Status>,
    /// Partitions of the topic, new ones included (a process-local cache).
    discovery: Discovery,
    /// Commits published (counted by the committer, in process 0).
    commits: AtomicU32,
}

/// Runs until SIGINT/SIGTERM (or `stop` is set), then commits and returns
/// the number of commits (0 in processes other than the committer's).
pub fn run(cfg: &RunConfig, stop: Arc<AtomicBool>) -> Result<u64> {
    let store = Store::open(&cfg.output, &cfg.storage)?;
    let mode = if cfg.standby { LockMode::Wait } else { LockMode::Fail };
    let lock = store.lock(&cfg.topology.lock_name(), mode, Store::lease_duration(&cfg.storage)?)?;
    if cfg.standby {
        tracing::info!("standby: took over {}", store.describe());
    }
    let first = cfg.topology.process() == 0;
    store.clean_staging(&cfg.topology.staging_name(), first)?;
    let ck = checkpoint::load(&store)?;
    let replay = checkpoint::starts(cfg, &ck)?;
    let ck = ck.unwrap_or(Checkpoint {
        topic: cfg.kafka.topic.clone(),
        replay_from: replay.clone(),
        ..Default::default()
    });
    if let (true, Some(f)) = (first, ck.final_through) {
        // A crash may have come between the checkpoint and the markers.
        checkpoint::mark_final(&store, i32::MIN, f, &ck.held)?;
    }
    let metrics = crate::metrics::Metrics::new()?;
    let status = crate::service::Status::new(&cfg.kafka.topic, &store.describe(), cfg.health);
    if let (true, Some(addr)) = (first, &cfg.metrics_addr) {
        status.serve(addr, metrics.clone())?;
        tracing::info!(%addr, "serving /metrics, /healthz, /readyz and /status");
    }
    tracing::info!(
        topic = %cfg.kafka.topic,
        ?replay,
        final_through = ?ck.final_through.map(crate::dates::day_to_string),
        "continuous run starting"
    );
    let ctx = Arc::new(Ctx {
        store,
        lock,
        per_commit: (cfg.commit_interval.as_millis() / cfg.epoch.as_millis().max(1)).max(1) as Time,
        discovery: Discovery::start(&cfg.kafka, replay.clone(), cfg.discovery_interval),
        cfg: cfg.clone(),
        interner: Interner::new(),
        abort: Abort::new(),
        epoch: AtomicU32::new(1),
        stop,
        ck,
        replay,
        run_day: crate::dates::today(),
        started: chrono::Utc::now(),
        metrics,
        status,
        commits: AtomicU32::new(0),
    });
    let done = Arc::new(AtomicBool::new(false));
    let clock = clock_thread(ctx.clone(), done.clone());
    let c = ctx.clone();
    let result = crate::cluster::run_workers(
        &cfg.topology,
        cfg.workers.max(1),
        &ctx.interner,
        &ctx.abort,
        "nothing after the last checkpoint was published (a restart of every process resumes from it)",
        move |worker| run_worker(worker, &c),
    )?;
    done.store(true, Ordering::SeqCst);
    let _ = clock.join();
    match result {
        Some(_) => Ok(ctx.commits.load(Ordering::SeqCst) as u64),
        None => Err(anyhow!(
            "{}; nothing after the last checkpoint was published (a restart resumes from it)",
            ctx.abort.message().unwrap_or("a worker failed")
        )),
    }
}

/// The clock of this process: epoch k >= 2 starts k epochs after the start
/// (epoch 1 runs until then), so boundary k * per_commit is crossed exactly
/// k commit intervals after the start. On a stop it jumps to the next
/// boundary, which becomes the last commit.
fn clock_thread(ctx: Arc<Ctx>, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let len = ctx.cfg.epoch.as_millis().max(1);
        while !done.load(Ordering::SeqCst) && !ctx.abort.is_set() {
            std::thread::sleep(Duration::from_millis(5));
            let mut e = (t0.elapsed().as_millis() / len).max(1) as u32;
            if ctx.stop.load(Ordering::SeqCst) {
                let now = ctx.epoch.load(Ordering::SeqCst);
                e = e.max((now / ctx.per_commit + 1) * ctx.per_commit);
            }
            ctx.epoch.fetch_max(e, Ordering::SeqCst);
        }
    })
}

/// Window days before the first open day come from the published tables
/// (this worker's share of them).
fn load_prior(
    out: &Store,
    days: std::ops::RangeInclusive<i32>,
    (index, peers): (usize, usize),
    sign: dataflow::Diff,
    interner: &Interner,
    h: &mut dataflow::Handles,
) -> Result<()> {
    error::inject("prior", index, peers)?;
    for day in days.filter(|d| d.rem_euclid(peers as i32) as usize == index) {
        crate::sink::read::prior_day(out, day, interner, &mut |u, p| h.prior.update((u, p), sign))
            .with_context(|| format!("reading the final day {} back", crate::dates::day_to_string(day)))?;
    }
    Ok(())
}

fn run_worker(worker: &mut timely::worker::Worker, c: &Ctx) -> Result<()> {
    let (index, peers) = (worker.index(), worker.peers());
    let mut h = dataflow::build_with(worker, c.interner.clone(), dataflow::Options { continuous: true });
    let mut mail = commit::Mail::build(worker);
    let owns = |p: i32| p.rem_euclid(peers as i32) as usize == index;
    let mine: Vec<(i32, i64)> = c
        .replay
        .iter()
        .filter(|(p, _)| owns(**p))
        .map(|(p, o)| (*p, *o))
        .collect();
    error::inject("reader", index, peers)?;
    let reader = KafkaReader::follow(&c.cfg.kafka, &mine)?;
    let final_through = c.ck.final_through;
    let feeder = feeder::Feeder {
        source: Name::of(&c.cfg.kafka.topic),
        run_day: c.run_day,
        resume: c.ck.offsets.iter().map(|(p, o)| (*p, *o)).collect(),
        final_through: final_through.unwrap_or(i32::MIN),
        counts: Default::default(),
        rejected: Vec::new(),
        late: Vec::new(),
        first_off: BTreeMap::new(),
        arrivals: BTreeMap::new(),
        seen: Default::default(),
    };
    // Time 0: the final days an open day's window still needs, and the as-of range.
    if let Some(f) = final_through {
        let need = f - dataflow::WINDOW_DAYS + 2..=f;
        load_prior(&c.store, need, (index, peers), 1, &c.interner, &mut h)?;
    }
    if index == 0 {
        if let Some((lo, hi)) = c.ck.first_day.zip(c.ck.last_day) {
            h.seen.update(lo, 1);
            h.seen.update(hi, 1);
        }
        if let Some(f) = final_through {
            h.fin.update(f, 1);
        }
    }
    let mut w = commit::WorkerState {
        h,
        feeder,
        reader,
        final_through,
        as_of: c.ck.first_day.zip(c.ck.last_day),
        pending: Default::default(),
        releasing: Vec::new(),
        committer: (index == 0).then(|| committer::Committer::new(c)),
    };
    follow(worker, c, &mut w, &mut mail)
}

/// The worker loop: read, step, advance the input time, commit at boundaries.
fn follow(
    worker: &mut timely::worker::Worker,
    c: &Ctx,
    w: &mut commit::WorkerState,
    mail: &mut commit::Mail,
) -> Result<()> {
    let (index, peers) = (worker.index(), worker.peers());
    let owns = |p: i32| p.rem_euclid(peers as i32) as usize == index;
    let mut time: Time = 0;
    let mut next_boundary: Time = c.per_commit;
    // Reader positions each time the input time advanced: the positions of a
    // boundary are those of the first advance to it or past it.
    let mut crossings: BTreeMap<Time, Vec<(i32, i64)>> = BTreeMap::new();
    let mut looked = Instant::now();
    let mut signalled = false;
    loop {
        c.abort.check()?;
        if looked.elapsed() >= Duration::from_secs(1) {
            looked = Instant::now();
            // Partitions added to the topic: the owner starts at their log start.
            for (p, low) in c.discovery.partitions() {
                if owns(p) {
                    w.reader.add(p, low)?;
                }
            }
        }
        // A stop here reaches every process (their clocks jump to the next boundary).
        if mail.signal.any() {
            c.stop.store(true, Ordering::SeqCst);
        }
        let stopping = c.stop.load(Ordering::SeqCst);
        if stopping && !signalled {
            signalled = true;
            mail.signal.send(0, true);
            mail.signal.flush();
        }
        // Backpressure: read only while the dataflow has finished every epoch
        // before the previous one; otherwise unprocessed input (and the
        // reduces' work per distinct time) would pile up without bound.
        let behind = w.h.probe.less_than(&time.saturating_sub(1));
        if !stopping && !behind {
            let (feeder, h) = (&mut w.feeder, &mut w.h);
            w.reader.poll(8 * 1024, &mut |rec| feeder.feed(rec, h))?;
        }
        worker.step();
        let target = c.epoch.load(Ordering::SeqCst);
        if target > time {
            crossings.insert(target, w.reader.positions());
            time = target;
            advance(&mut w.h, time);
            // Every boundary to come is at or past `next_boundary`.
            commit::compact_all(&mut w.h, time.min(next_boundary - 1));
        }
        if time >= next_boundary {
            let b = next_boundary;
            let probe = w.h.probe.clone();
            mailbox::wait(worker, &c.abort, || !probe.less_than(&b))?;
            let at = crossings.range(b..).next().map(|(_, p)| p.clone()).unwrap_or_default();
            crossings = crossings.split_off(&b);
            let decision = commit::commit(worker, c, w, mail, b, time, at)?;
            if decision.last {
                return Ok(());
            }
            next_boundary = (b / c.per_commit + 1) * c.per_commit;
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
    h.seen.advance_to(time);
    h.seen.flush();
    h.fin.advance_to(time);
    h.fin.flush();
}
