//! Continuous runs (`skipflow run`): the same dataflow as batch, fed from a
//! Kafka topic in small epochs; every commit interval the output partitions
//! that changed are replaced with their full contents as of the commit
//! epoch, read from the arranged outputs, then the checkpoint is written.
//!
//! First slice of issue 4: commits, checkpoint and recovery by replay from
//! the first start position, graceful stop. Not yet: finalization
//! (`_SUCCESS`, released state, `late_events`), metrics, consumer-group
//! offset commits.
//!
//! Time: a clock thread advances a shared epoch every `epoch`; commit
//! boundaries are every `commit_interval` and, on SIGINT/SIGTERM, one final
//! boundary. A worker records its reader positions when its input crosses
//! a boundary, so the checkpoint of boundary E names exactly the records
//! reflected in the outputs of times before E.

use crate::batch::Feeder;
use crate::dataflow::{self, Time};
use crate::intern::{EventIdCache, Id, Interner};
use crate::report::Counts;
use crate::schema::Table;
use crate::sink::{self, publish, Staged};
use crate::source::kafka::{KafkaInput, KafkaReader, Quiet};
use anyhow::{anyhow, Context, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Barrier, Mutex};
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
    pub workers: usize,
    /// Length of one epoch (input time step).
    pub epoch: Duration,
    /// Where to serve Prometheus metrics.
    pub metrics_addr: Option<String>,
}

/// The checkpoint: what the published outputs reflect.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checkpoint {
    pub topic: String,
    /// Next offset per partition that the published outputs reflect.
    pub offsets: BTreeMap<i32, i64>,
    /// Where this output directory's state starts: a restart replays from here.
    pub replay_from: BTreeMap<i32, i64>,
    pub commits: u64,
    pub committed_at: String,
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

/// Shared by the workers and the clock.
struct Shared {
    interner: Arc<Interner>,
    epoch: AtomicU32,
    /// Set on stop: the last boundary.
    final_epoch: AtomicU32,
    stop: AtomicBool,
    barrier: Barrier,
    /// Reader positions per worker at each boundary epoch.
    positions: Mutex<BTreeMap<Time, BTreeMap<i32, i64>>>,
    changed: Mutex<HashSet<(Table, i32)>>,
    parts: sink::Exchange,
    staged: Mutex<Vec<Staged>>,
    failed: Mutex<Option<String>>,
    counts: Mutex<Counts>,
    /// Offsets a restart must reach before publishing again (replay).
    resume: BTreeMap<i32, i64>,
    checkpoint: Mutex<Checkpoint>,
    source: Id,
    run_day: i32,
    commits: AtomicU32,
    /// Kept listens over all workers (current state).
    kept: Mutex<i64>,
    /// Kept listens per day, per worker (for the open-days metric).
    kept_days: Mutex<HashMap<usize, BTreeMap<i32, i64>>>,
    started: chrono::DateTime<chrono::Utc>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Commits consumer-group offsets after each checkpoint (lag dashboards).
    committer: BaseConsumer<Quiet>,
}

/// Consumer-group offsets (for lag dashboards only: the checkpoint is the
/// truth) and metrics, once a checkpoint is written.
fn after_checkpoint(sh: &Shared, cfg: &RunConfig, ck: &Checkpoint, published: usize, started: Instant) {
    let m = &sh.metrics;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (p, o) in &ck.offsets {
        let _ = tpl.add_partition_offset(&cfg.kafka.topic, *p, rdkafka::Offset::Offset(*o));
        if let Ok((_, high)) = sh
            .committer
            .fetch_watermarks(&cfg.kafka.topic, *p, Duration::from_secs(2))
        {
            m.lag.with_label_values(&[&p.to_string()]).set((high - o).max(0));
        }
    }
    if let Err(e) = sh.committer.commit(&tpl, CommitMode::Async) {
        tracing::debug!("committing consumer-group offsets: {e}");
        m.kafka_errors.with_label_values(&["offset_commit"]).inc();
    }
    let c = sh.counts.lock().expect("counts").clone();
    let kept = (*sh.kept.lock().expect("kept")).max(0);
    for (class, v) in [
        ("read", c.read as i64),
        ("kept", kept),
        ("duplicates", c.read as i64 - c.rejected as i64 - c.late as i64 - kept),
        ("rejected", c.rejected as i64),
        ("late", c.late as i64),
    ] {
        m.events.with_label_values(&[class]).set(v);
    }
    let mut days: BTreeMap<i32, i64> = BTreeMap::new();
    for per in sh.kept_days.lock().expect("kept days").values() {
        for (d, n) in per {
            *days.entry(*d).or_insert(0) += n;
        }
    }
    m.open_days.set(days.values().filter(|n| **n > 0).count() as i64);
    m.commits.inc();
    m.partitions_published.inc_by(published as u64);
    m.last_commit_timestamp
        .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
    m.last_commit_duration.set(started.elapsed().as_secs_f64());
}

/// The run report of one commit: what this process read since it started,
/// the accounting identity, and the partitions this commit replaced.
fn write_commit_report(sh: &Shared, cfg: &RunConfig, ck: &Checkpoint, staged: &[Staged], t: Instant) -> Result<()> {
    use crate::report::{InputRange, RunReport, TableWrite};
    let mut counts = sh.counts.lock().expect("counts").clone();
    counts.kept = (*sh.kept.lock().expect("kept")).max(0) as u64;
    counts.duplicates = counts
        .read
        .saturating_sub(counts.rejected + counts.out_of_range + counts.late + counts.kept);
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
            .map(|(p, o)| InputRange::Kafka {
                topic: ck.topic.clone(),
                partition: *p,
                start_offset: ck.replay_from.get(p).copied().unwrap_or(0),
                end_offset: *o,
            })
            .collect(),
        counts,
        tables,
        missing_window_days: vec![],
    };
    crate::batch::write_report(&cfg.output, &report)?;
    Ok(())
}

/// Starting positions: the checkpoint's replay start, or `start` on a first run.
fn starts(cfg: &RunConfig, ck: &Option<Checkpoint>) -> Result<BTreeMap<i32, i64>> {
    if let Some(c) = ck {
        if c.topic != cfg.kafka.topic {
            return Err(crate::cli::ConfigError(format!(
                "{} holds the checkpoint of topic {}, not {}; use another --output",
                cfg.output.display(),
                c.topic,
                cfg.kafka.topic
            ))
            .into());
        }
        return Ok(c.replay_from.clone());
    }
    let from_ms = match cfg.start {
        StartAt::Timestamp(t) => Some(t),
        _ => None,
    };
    let plan = crate::source::kafka::plan(&cfg.kafka, from_ms)?;
    Ok(plan
        .into_iter()
        .map(|r| {
            let at = match cfg.start {
                StartAt::Latest => r.end.unwrap_or(r.start),
                _ => r.start,
            };
            (r.partition, at)
        })
        .collect())
}

/// Runs until SIGINT/SIGTERM (or `stop` is set), then commits and returns.
pub fn run(cfg: &RunConfig, stop: Arc<AtomicBool>) -> Result<u64> {
    std::fs::create_dir_all(&cfg.output)
        .with_context(|| format!("cannot create output directory {}", cfg.output.display()))?;
    let _lock = publish::OutputLock::acquire(&cfg.output)?;
    publish::clean_staging(&cfg.output)?;
    let ck = read_checkpoint(&cfg.output)?;
    let replay_from = starts(cfg, &ck)?;
    let resume = ck.as_ref().map(|c| c.offsets.clone()).unwrap_or_default();
    let workers = cfg.workers.max(1);
    let interner = Interner::new();
    let source = interner.name(&cfg.kafka.topic);
    let metrics = crate::metrics::Metrics::new()?;
    if let Some(addr) = &cfg.metrics_addr {
        metrics.serve(addr)?;
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    }
    let shared = Arc::new(Shared {
        interner,
        epoch: AtomicU32::new(1),
        final_epoch: AtomicU32::new(u32::MAX),
        stop: AtomicBool::new(false),
        barrier: Barrier::new(workers),
        positions: Mutex::new(BTreeMap::new()),
        changed: Mutex::new(HashSet::new()),
        parts: Mutex::new(HashMap::new()),
        staged: Mutex::new(Vec::new()),
        failed: Mutex::new(None),
        counts: Mutex::new(Counts::default()),
        resume,
        checkpoint: Mutex::new(ck.unwrap_or(Checkpoint {
            topic: cfg.kafka.topic.clone(),
            replay_from: replay_from.clone(),
            ..Default::default()
        })),
        source,
        run_day: crate::dates::today(),
        commits: AtomicU32::new(0),
        kept: Mutex::new(0),
        kept_days: Mutex::new(HashMap::new()),
        started: chrono::Utc::now(),
        metrics,
        committer: cfg.kafka.consumer()?,
    });
    tracing::info!(topic = %cfg.kafka.topic, ?replay_from, "continuous run starting");

    // The clock: epochs, and the final boundary on stop.
    let clock = {
        let sh = shared.clone();
        let epoch_len = cfg.epoch;
        std::thread::spawn(move || {
            let t0 = Instant::now();
            loop {
                if stop.load(Ordering::SeqCst) || sh.stop.load(Ordering::SeqCst) {
                    let e = sh.epoch.load(Ordering::SeqCst);
                    sh.final_epoch.store(e + 1, Ordering::SeqCst);
                    sh.epoch.store(e + 1, Ordering::SeqCst);
                    sh.stop.store(true, Ordering::SeqCst);
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
                let e = 1 + (t0.elapsed().as_millis() / epoch_len.as_millis().max(1)) as u32;
                sh.epoch.fetch_max(e, Ordering::SeqCst);
            }
        })
    };

    let per_commit = (cfg.commit_interval.as_millis() / cfg.epoch.as_millis().max(1)).max(1) as Time;
    let cfg2 = cfg.clone();
    let sh = shared.clone();
    let replay: Vec<(i32, i64)> = replay_from.into_iter().collect();
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let r = run_worker(worker, &cfg2, &sh, &replay, per_commit);
        if let Err(e) = &r {
            sh.failed
                .lock()
                .expect("failed")
                .get_or_insert_with(|| format!("{e:#}"));
            sh.stop.store(true, Ordering::SeqCst);
        }
        r.map_err(|e| format!("{e:#}"))
    })
    .map_err(|e| anyhow!("starting workers: {e}"))?;
    let results = guards.join();
    shared.stop.store(true, Ordering::SeqCst);
    let _ = clock.join();
    for r in results {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(anyhow!("{e}")),
            Err(e) => return Err(anyhow!("worker panicked: {e}")),
        }
    }
    Ok(shared.commits.load(Ordering::SeqCst) as u64)
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
    let opts = dataflow::Options {
        derive_as_of: true,
        track_changes: true,
    };
    let mut h = dataflow::build_with(worker, sh.interner.clone(), opts);
    let mine: Vec<(i32, i64)> = replay
        .iter()
        .enumerate()
        .filter(|(i, _)| i % peers == index)
        .map(|(_, p)| *p)
        .collect();
    let mut reader = KafkaReader::follow(&cfg.kafka, &mine)?;
    let mut feeder = Feeder {
        interner: sh.interner.clone(),
        cache: EventIdCache::default(),
        counts: Counts::default(),
        range: None,
        run_day: sh.run_day,
    };
    let mut time: Time = 0;
    let mut next_boundary: Time = per_commit;
    // Reader positions each time the input time advanced: the positions of a
    // boundary are those of the first advance to it or past it.
    let mut crossings: BTreeMap<Time, Vec<(i32, i64)>> = BTreeMap::new();
    loop {
        let stopping = sh.stop.load(Ordering::SeqCst);
        if !stopping {
            let source = sh.source;
            reader.poll(8 * 1024, &mut |rec| feeder.feed(source, rec, &mut h))?;
        }
        worker.step();
        let target = sh
            .epoch
            .load(Ordering::SeqCst)
            .min(sh.final_epoch.load(Ordering::SeqCst));
        if target > time {
            crossings.insert(target, reader.positions());
            time = target;
            h.listens.advance_to(time);
            h.listens.flush();
            h.rejected.advance_to(time);
            h.rejected.flush();
            h.prior.advance_to(time);
            h.prior.flush();
            h.as_of.advance_to(time);
            h.as_of.flush();
        }
        let last = sh.final_epoch.load(Ordering::SeqCst);
        let boundary = next_boundary.min(last);
        if time >= boundary {
            let probe = h.probe.clone();
            worker.step_while(|| probe.less_than(&boundary));
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
            commit(&mut h, sh, cfg, boundary, index, peers, &mut feeder.counts)?;
            if boundary == last {
                return Ok(());
            }
            next_boundary = (boundary / per_commit + 1) * per_commit;
        }
    }
}

/// One commit: changed partitions as of `boundary`, staged by their owners,
/// published by worker 0, then the checkpoint.
fn commit(
    h: &mut dataflow::Handles,
    sh: &Shared,
    cfg: &RunConfig,
    boundary: Time,
    index: usize,
    peers: usize,
    counts: &mut Counts,
) -> Result<()> {
    // Changes before the boundary, from every worker.
    {
        let mut mine = h.changes.borrow_mut();
        let later = mine.split_off(&boundary);
        let before = std::mem::replace(&mut *mine, later);
        let mut all = sh.changed.lock().expect("changed");
        for (_, set) in before {
            all.extend(set);
        }
        let mut c = sh.counts.lock().expect("counts");
        c.add(counts);
        *counts = Counts::default();
        let delta = {
            let mut k = h.kept.borrow_mut();
            let d = k.count - k.reported;
            k.reported = k.count;
            d
        };
        *sh.kept.lock().expect("kept") += delta;
        sh.kept_days
            .lock()
            .expect("kept days")
            .insert(index, h.kept.borrow().days.clone());
    }
    sh.barrier.wait();
    // Replaying after a restart: publish nothing until the checkpoint's offsets are reached.
    let positions = sh
        .positions
        .lock()
        .expect("positions")
        .get(&boundary)
        .cloned()
        .unwrap_or_default();
    let replaying = sh.resume.iter().any(|(p, o)| positions.get(p).is_some_and(|at| at < o));
    let changed: HashSet<(Table, i32)> = sh.changed.lock().expect("changed").clone();
    if !replaying {
        let keep = |t: Table, d: i32| changed.contains(&(t, d));
        sink::hand_over(&sh.parts, sink::collect_before(&mut h.traces, &keep, boundary));
    }
    sh.barrier.wait();
    if !replaying {
        let mine = sink::take_owned(&sh.parts, index, peers);
        let staging = publish::state_dir(&cfg.output)
            .join("staging")
            .join(format!("commit-{boundary}"));
        let mut staged = Vec::new();
        for ((_, day), rows) in mine {
            staged.push(sink::stage_partition(&staging, day, rows, &sh.interner)?);
        }
        sh.staged.lock().expect("staged").extend(staged);
    }
    sh.barrier.wait();
    if index == 0 {
        let staged = std::mem::take(&mut *sh.staged.lock().expect("staged"));
        let started = Instant::now();
        for s in &staged {
            publish::publish(&cfg.output, s, false)?;
        }
        let staging = publish::state_dir(&cfg.output)
            .join("staging")
            .join(format!("commit-{boundary}"));
        let _ = std::fs::remove_dir_all(&staging);
        if !replaying {
            let mut ck = sh.checkpoint.lock().expect("checkpoint");
            ck.offsets.extend(positions.iter().map(|(p, o)| (*p, *o)));
            ck.commits += 1;
            ck.committed_at = chrono::Utc::now().to_rfc3339();
            write_checkpoint(&cfg.output, &ck)?;
            sh.commits.fetch_add(1, Ordering::SeqCst);
            sh.changed.lock().expect("changed").clear();
            write_commit_report(sh, cfg, &ck, &staged, started)?;
            after_checkpoint(sh, cfg, &ck, staged.len(), started);
        }
        tracing::info!(
            boundary,
            partitions = staged.len(),
            replaying,
            secs = started.elapsed().as_secs_f64(),
            "commit"
        );
    }
    sh.barrier.wait();
    Ok(())
}
