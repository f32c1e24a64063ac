//! Batch runs: a bounded input, one pass of the shared dataflow, every
//! partition staged, then published all together.
//!
//! Time 0 carries the events. Once it is complete the day range is known
//! (given, or the first and last day of the kept events); time 1 then adds
//! the window days before the range (read back from the output directory) and
//! the as-of days, so the profile is computed once, from daily aggregates.

use crate::dataflow::{self, Listen, RejectRow};
use crate::dates;
use crate::decode;
use crate::error::{self, Abort, Barrier};
use crate::intern::{EventIdCache, Id, Interner};
use crate::report::{Counts, InputRange, RunReport, TableWrite};
use crate::schema::Table;
use crate::sink::{self, publish, PartRows, Staged};
use crate::source::files::{self, FileReader, Split};
use crate::source::kafka::{self, KafkaInput, KafkaReader, PartitionRange};
use crate::source::{Poll, RawRecord};
use anyhow::{anyhow, Context, Result};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    pub workers: usize,
    /// Show a progress bar on a terminal.
    pub progress: bool,
}

/// A bounded read of a Kafka topic.
#[derive(Clone, Debug)]
pub struct KafkaBatch {
    pub input: KafkaInput,
    /// Start reading each partition at FROM 00:00 UTC minus this (ms).
    pub skew_ms: i64,
}

/// The planned input of a run, shared by the workers.
enum Plan {
    Files(Vec<Split>),
    Kafka(KafkaInput, Vec<PartitionRange>),
}

/// One worker's reader.
enum Reader {
    Files(FileReader),
    Kafka(KafkaReader, Id),
}

impl Reader {
    fn poll(&mut self, budget: usize, sources: &[Id], f: &mut dyn FnMut(Id, RawRecord<'_>)) -> Result<Poll> {
        match self {
            Reader::Files(r) => r.poll(budget, &mut |file, rec| f(sources[file], rec)),
            Reader::Kafka(r, topic) => {
                let topic = *topic;
                r.poll(budget, &mut |rec| f(topic, rec))
            }
        }
    }
}

/// What a batch run did.
#[derive(Debug)]
pub struct BatchOutcome {
    pub report: RunReport,
    pub report_path: PathBuf,
}

/// Everything the workers share.
struct Shared {
    interner: Arc<Interner>,
    counts: Mutex<Counts>,
    kept_days: Mutex<BTreeMap<i32, i64>>,
    kept: Mutex<i64>,
    barrier: Barrier,
    staged: Mutex<Vec<Staged>>,
    parts: sink::Exchange,
    /// The first failure of any worker: the others stop waiting and nothing is published.
    abort: Arc<Abort>,
    /// What the Kafka readers read, per partition.
    read: Mutex<Vec<kafka::ReadRange>>,
    missing: Mutex<Vec<i32>>,
    bytes: Arc<AtomicU64>,
    sources: Vec<Id>,
    run_day: i32,
}

/// Decodes one raw record and feeds it to the dataflow's inputs.
pub struct Feeder {
    pub interner: Arc<Interner>,
    pub cache: EventIdCache,
    pub counts: Counts,
    pub range: Option<(i32, i32)>,
    pub run_day: i32,
}

impl Feeder {
    pub fn feed(&mut self, source: Id, rec: RawRecord<'_>, h: &mut dataflow::Handles) {
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
                h.listens.update(Listen::keyed(&e, &self.interner, &mut self.cache), 1);
            }
        }
    }
}

fn run_id(started: &chrono::DateTime<chrono::Utc>) -> String {
    format!("{}-{}", started.format("%Y%m%dT%H%M%S%.3fZ"), std::process::id())
}

/// Runs a batch over files.
pub fn run(cfg: &BatchConfig) -> Result<BatchOutcome> {
    let started = chrono::Utc::now();
    let t0 = Instant::now();
    std::fs::create_dir_all(&cfg.output)
        .with_context(|| format!("cannot create output directory {}", cfg.output.display()))?;
    let _lock = publish::OutputLock::acquire(&cfg.output)?;
    publish::clean_staging(&cfg.output)?;
    let id = run_id(&started);
    let staging = publish::staging_dir(&cfg.output, &id)?;
    let workers = cfg.workers.max(1);

    let interner = Interner::new();
    let (plan, sources): (Plan, Vec<Id>) = match &cfg.kafka {
        None => (
            Plan::Files(files::plan(&cfg.inputs, workers)?),
            cfg.inputs.iter().map(|p| interner.name(p)).collect(),
        ),
        Some(k) => {
            let from_ms = cfg.range.map(|(f, _)| f as i64 * decode::MS_PER_DAY - k.skew_ms);
            let ranges = kafka::plan(&k.input, from_ms)?;
            tracing::info!(topic = %k.input.topic, ?ranges, "Kafka offsets to read");
            (
                Plan::Kafka(k.input.clone(), ranges),
                vec![interner.name(&k.input.topic)],
            )
        }
    };
    let shared = Arc::new(Shared {
        interner: interner.clone(),
        counts: Mutex::new(Counts::default()),
        kept_days: Mutex::new(BTreeMap::new()),
        kept: Mutex::new(0),
        barrier: Barrier::new(workers),
        staged: Mutex::new(Vec::new()),
        parts: Mutex::new(HashMap::new()),
        abort: Abort::new(),
        read: Mutex::new(Vec::new()),
        missing: Mutex::new(Vec::new()),
        bytes: Arc::new(AtomicU64::new(0)),
        sources,
        run_day: run_day()?,
    });

    let total = match &plan {
        Plan::Files(_) => files::total_bytes(&cfg.inputs),
        Plan::Kafka(..) => 0,
    };
    let done = Arc::new(AtomicBool::new(false));
    let bar = cfg
        .progress
        .then(|| progress_thread(total, shared.bytes.clone(), done.clone()));

    let cfg2 = cfg.clone();
    let sh = shared.clone();
    let staging2 = staging.clone();
    let plan = Arc::new(plan);
    let plan_for_report = plan.clone();
    error::install_panic_hook();
    let abort = shared.abort.clone();
    let result = timely::execute(timely::Config::process(workers), move |worker| {
        sh.abort.enter(worker.index());
        let r = batch_worker(worker, &cfg2, &sh, &plan, &staging2);
        if let Err(e) = &r {
            // The others stop waiting for this one (barriers and progress give up).
            sh.abort.fail(format!("{e:#}"));
            dataflow::abandon(worker);
        }
        r.map_err(|e| format!("{e:#}"))
    })
    .map_err(|e| anyhow!("starting workers: {e}"))?
    .join();
    done.store(true, Ordering::Relaxed);
    if let Some(h) = bar {
        let _ = h.join();
    }
    let failed = result.iter().any(|r| !matches!(r, Ok(Ok(()))));
    if let (true, Some(first)) = (failed || abort.is_set(), abort.message()) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(anyhow!("{first}; no partition was published"));
    }

    // Publish: every staged partition, then remove partitions of the range left without rows.
    let shared = Arc::try_unwrap(shared).map_err(|_| anyhow!("workers still hold shared state"))?;
    let staged = shared.staged.into_inner().expect("staged");
    let mut counts = shared.counts.into_inner().expect("counts");
    let kept = shared.kept.into_inner().expect("kept") as u64;
    counts.kept = kept;
    counts.duplicates = counts.read - counts.rejected - counts.out_of_range - kept;
    let range = effective_range(cfg.range, &shared.kept_days.into_inner().expect("days"));

    let mut staged = staged;
    let mut emptied = Vec::new();
    if let Plan::Files(_) = &*plan_for_report {
        // File records without a message timestamp go to the run's day: rows
        // of these files that an earlier run put on another day are replaced
        // too, so a rerun on another day does not repeat them.
        let days: HashSet<i32> = staged
            .iter()
            .filter(|s| s.table == Table::RejectedEvents)
            .map(|s| s.day)
            .collect();
        let sources: HashSet<Id> = shared.sources.iter().copied().collect();
        for day in publish::published_days(&cfg.output, Table::RejectedEvents)? {
            if days.contains(&day) {
                continue;
            }
            let old = sink::read::rejected_rows(&cfg.output, day, &shared.interner)?;
            let n = old.len();
            let kept: Vec<RejectRow> = old.into_iter().filter(|r| !sources.contains(&r.source)).collect();
            if kept.len() == n {
                continue;
            }
            if kept.is_empty() {
                emptied.push(day);
            } else {
                staged.push(sink::stage_partition(
                    &staging,
                    day,
                    PartRows::Rejected(kept),
                    &shared.interner,
                )?);
            }
        }
    }
    let mut tables: BTreeMap<String, TableWrite> = BTreeMap::new();
    let mut written: HashSet<(Table, i32)> = HashSet::new();
    for s in staged
        .iter()
        .filter(|s| s.table != Table::RejectedEvents)
        .chain(staged.iter().filter(|s| s.table == Table::RejectedEvents))
    {
        publish::publish(&cfg.output, s, true)?;
        written.insert((s.table, s.day));
        let t = tables.entry(s.table.name().to_string()).or_default();
        t.partitions_written += 1;
        t.rows += s.rows as u64;
        t.bytes += s.bytes;
        t.days.push(dates::day_to_string(s.day));
    }
    if let Some((from, to)) = range {
        for table in [
            Table::UserDaily,
            Table::UserTrackDaily,
            Table::UserArtistDaily,
            Table::UserProfile28d,
        ] {
            for day in publish::published_days(&cfg.output, table)? {
                if day >= from
                    && day <= to
                    && !written.contains(&(table, day))
                    && publish::remove(&cfg.output, table, day)?
                {
                    tables.entry(table.name().to_string()).or_default().partitions_removed += 1;
                }
            }
        }
    }
    for day in emptied {
        if publish::remove(&cfg.output, Table::RejectedEvents, day)? {
            tables
                .entry(Table::RejectedEvents.name().to_string())
                .or_default()
                .partitions_removed += 1;
        }
    }
    for t in tables.values_mut() {
        t.days.sort();
    }
    let _ = std::fs::remove_dir_all(&staging);

    let inputs = match &*plan_for_report {
        Plan::Files(_) => cfg
            .inputs
            .iter()
            .map(|p| InputRange::File { path: p.clone() })
            .collect(),
        Plan::Kafka(k, _) => {
            let mut read = shared.read.into_inner().expect("read ranges");
            read.sort_by_key(|r| r.partition);
            read.into_iter()
                .map(|r| InputRange::Kafka {
                    topic: k.topic.clone(),
                    partition: r.partition,
                    start_offset: r.start,
                    end_offset: r.end,
                })
                .collect::<Vec<_>>()
        }
    };
    let mut missing = shared.missing.into_inner().expect("missing");
    missing.sort_unstable();
    let finished = chrono::Utc::now();
    let report = RunReport {
        run_id: id.clone(),
        mode: "batch".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at: started.to_rfc3339(),
        finished_at: finished.to_rfc3339(),
        elapsed_s: t0.elapsed().as_secs_f64(),
        workers,
        range: range.map(|(f, t)| (dates::day_to_string(f), dates::day_to_string(t))),
        inputs,
        counts,
        tables,
        missing_window_days: missing.into_iter().map(dates::day_to_string).collect(),
    };
    let report_path = write_report(&cfg.output, &report)?;
    Ok(BatchOutcome { report, report_path })
}

/// The day the run counts as its start day (file records' rejected rows go
/// there): today, UTC, or `SKIPFLOW_RUN_DAY` (YYYY-MM-DD) to reproduce a run.
fn run_day() -> Result<i32> {
    match std::env::var("SKIPFLOW_RUN_DAY") {
        Ok(d) => dates::parse_day(&d).map_err(|e| crate::error::ConfigError(format!("SKIPFLOW_RUN_DAY: {e}")).into()),
        Err(_) => Ok(dates::today()),
    }
}

/// Writes the run report as `<output>/_runs/<run_id>.json` (atomically).
pub fn write_report(out: &std::path::Path, report: &RunReport) -> Result<PathBuf> {
    let dir = out.join("_runs");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{}.json", report.run_id));
    let tmp = dir.join(format!(".{}.json.tmp", report.run_id));
    std::fs::write(&tmp, serde_json::to_vec_pretty(report)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
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

fn batch_worker(
    worker: &mut timely::worker::Worker,
    cfg: &BatchConfig,
    sh: &Shared,
    plan: &Plan,
    staging: &std::path::Path,
) -> Result<()> {
    let index = worker.index();
    let peers = worker.peers();
    let mut h = dataflow::build(worker, sh.interner.clone());
    let mut reader = match plan {
        Plan::Files(splits) => Reader::Files(FileReader::new(
            splits
                .iter()
                .enumerate()
                .filter(|(i, _)| i % peers == index)
                .map(|(_, s)| s.clone())
                .collect(),
            sh.bytes.clone(),
        )),
        Plan::Kafka(input, ranges) => {
            let mine: Vec<PartitionRange> = ranges
                .iter()
                .enumerate()
                .filter(|(i, _)| i % peers == index)
                .map(|(_, r)| r.clone())
                .collect();
            error::inject("reader", index, peers)?;
            Reader::Kafka(KafkaReader::new(input, &mine)?, sh.sources[0])
        }
    };
    let mut feeder = Feeder {
        interner: sh.interner.clone(),
        cache: EventIdCache::default(),
        counts: Counts::default(),
        range: cfg.range,
        run_day: sh.run_day,
    };
    let abort = sh.abort.clone();
    let t0 = Instant::now();
    loop {
        abort.check()?;
        let polled = reader.poll(16 * 1024, &sh.sources, &mut |source, rec| {
            feeder.feed(source, rec, &mut h)
        })?;
        worker.step();
        if polled == Poll::Done {
            break;
        }
    }
    if let Reader::Kafka(r, _) = &reader {
        sh.read.lock().expect("read ranges").extend(r.ranges());
    }
    // Time 0 is complete once every worker's events are through.
    for t in [
        &mut h.listens as &mut dyn Advance,
        &mut h.rejected,
        &mut h.prior,
        &mut h.as_of,
    ] {
        t.advance(1);
    }
    tracing::info!(
        worker = index,
        secs = t0.elapsed().as_secs_f64(),
        rss_mb = crate::report::rss_mb(),
        "input read"
    );
    worker.step_while(|| !abort.is_set() && h.probe.less_than(&1));
    abort.check()?;
    tracing::info!(
        worker = index,
        secs = t0.elapsed().as_secs_f64(),
        rss_mb = crate::report::rss_mb(),
        "daily tables computed"
    );
    {
        let k = h.kept.borrow();
        *sh.kept.lock().expect("kept") += k.count;
        let mut days = sh.kept_days.lock().expect("days");
        for (d, n) in &k.days {
            *days.entry(*d).or_insert(0) += n;
        }
        sh.counts.lock().expect("counts").add(&feeder.counts);
    }
    sh.barrier.wait(&abort)?;
    let range = effective_range(cfg.range, &sh.kept_days.lock().expect("days"));

    // Time 1: window days before the range, and the as-of days.
    if let Some((from, to)) = range {
        error::inject("prior", index, peers)?;
        for day in from - dataflow::WINDOW_DAYS + 1..from {
            if day.rem_euclid(peers as i32) as usize != index {
                continue;
            }
            let present = sink::read::prior_day(&cfg.output, day, &sh.interner, &mut |u, p| h.prior.update((u, p), 1))
                .with_context(|| format!("reading the published day {}", dates::day_to_string(day)))?;
            if !present {
                sh.missing.lock().expect("missing").push(day);
            }
        }
        if index == 0 {
            for d in from..=to {
                h.as_of.update(d, 1);
            }
        }
    }
    let probe = h.probe.clone();
    drop(h.listens);
    drop(h.rejected);
    drop(h.prior);
    drop(h.as_of);
    worker.step_while(|| !abort.is_set() && !probe.done());
    abort.check()?;
    tracing::info!(
        worker = index,
        secs = t0.elapsed().as_secs_f64(),
        rss_mb = crate::report::rss_mb(),
        "profile computed"
    );

    // Gather this worker's share of every partition, hand each to its owner, stage what we own.
    let in_range = |t: Table, d: i32| match t {
        Table::RejectedEvents => true,
        _ => range.is_some_and(|(f, to)| d >= f && d <= to),
    };
    let buckets = sink::collect(&mut h.traces, &in_range);
    drop(h.traces);
    tracing::info!(
        worker = index,
        secs = t0.elapsed().as_secs_f64(),
        rss_mb = crate::report::rss_mb(),
        "rows collected"
    );
    sink::hand_over(&sh.parts, buckets);
    sh.barrier.wait(&abort)?;
    // Rows of rejected_events this run re-read (and so replaces).
    let read = sh.read.lock().expect("read ranges").clone();
    let reread = |r: &RejectRow| match plan {
        Plan::Files(_) => sh.sources.contains(&r.source),
        Plan::Kafka(..) => {
            r.source == sh.sources[0]
                && read
                    .iter()
                    .any(|p| p.partition == r.partition && (p.start..p.end).contains(&r.offset))
        }
    };
    let mut staged = Vec::new();
    error::inject("staging", index, peers)?;
    while let Some(((table, day), mut rows)) = sink::take_next(&sh.parts) {
        if let PartRows::Rejected(new) = rows {
            // Keep published rows of sources this run did not read.
            let mut all = new;
            let old = sink::read::rejected_rows(&cfg.output, day, &sh.interner)?;
            all.extend(old.into_iter().filter(|r| !reread(r)));
            all.sort_by_key(|r| (r.source, r.partition, r.offset));
            all.dedup_by_key(|r| (r.source, r.partition, r.offset));
            rows = PartRows::Rejected(all);
        }
        debug_assert_eq!(rows.table(), table);
        abort.check()?;
        staged.push(sink::stage_partition(staging, day, rows, &sh.interner)?);
    }
    tracing::info!(
        worker = index,
        secs = t0.elapsed().as_secs_f64(),
        rss_mb = crate::report::rss_mb(),
        partitions = staged.len(),
        "partitions staged"
    );
    sh.staged.lock().expect("staged").extend(staged);
    Ok(())
}

/// Advancing the time of any input session.
trait Advance {
    fn advance(&mut self, t: dataflow::Time);
}
impl<D: differential_dataflow::Data> Advance
    for differential_dataflow::input::InputSession<dataflow::Time, D, dataflow::Diff>
{
    fn advance(&mut self, t: dataflow::Time) {
        self.advance_to(t);
        self.flush();
    }
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
