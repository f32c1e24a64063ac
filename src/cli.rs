//! The command line (cli.md) and job files (`jobs/*.toml`): every flag may also
//! come from a job file; flags given on the command line win.

use crate::dates;
pub use crate::error::{bad, ConfigError};
use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(
    name = "skipflow",
    version,
    about = "Per-user listening features from play/skip events, as Hive-partitioned Parquet",
    long_about = "skipflow reads listen events (NDJSON files or a Kafka topic), validates them, \
drops duplicates, and writes per-user daily features and a rolling 28-day profile as Parquet \
tables partitioned by day (<output>/<table>/dt=YYYY-MM-DD/part-00000.parquet).\n\n\
Exit codes: 0 success; 2 bad usage or configuration; 3 output directory locked by another run; \
4 a quality gate failed (batch: nothing was published); 1 any other failure (nothing partial is \
published)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `skipflow=debug`.
    #[arg(long, global = true, env = "SKIPFLOW_LOG", default_value = "warn")]
    pub log: String,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Bounded run over files or a Kafka topic for a range of days; replaces
    /// every partition of the range as a whole.
    #[command(after_help = "Exit codes: 0 every partition written; 2 bad usage or configuration; \
3 the output directory is locked by another run; 4 a quality gate of the job file's [quality] \
failed (nothing was published; the summary and the run report say which check); 1 any other \
failure (nothing was published).")]
    Batch(BatchArgs),
    /// Continuous incremental run following a Kafka topic (and partitions
    /// added to it): publishes changed partitions every commit interval,
    /// finalizes days by the watermark (`_SUCCESS`, late_events), resumes from
    /// its checkpoint; stops on SIGINT/SIGTERM after a final commit.
    #[command(
        after_help = "Exit codes: 0 stopped by SIGINT/SIGTERM after a final commit; 2 bad usage or \
configuration; 3 the output directory is locked by another run; 1 an error waiting cannot fix \
(authentication, authorization, unknown topic, undecodable messages, offsets deleted by retention, \
the output disk): nothing after the last checkpoint was published, a restart resumes from it. \
A broker that is down or unreachable is waited for, not an error."
    )]
    Run(RunArgs),
    /// Embedded Kafka (librdkafka's mock cluster) on 127.0.0.1 with the topic
    /// created; prints its bootstrap address first; serves until Ctrl-C/SIGTERM.
    /// For demos, tests and local development (about 5 MiB kept per partition).
    Broker(BrokerArgs),
    /// Writes realistic synthetic listen events: NDJSON to a file, or produced to Kafka.
    Generate(GenerateArgs),
    /// Shows tables, partitions, row counts and schemas of an output (and a
    /// continuous output's commits and days held by a quality gate); with
    /// --day, each partition's Parquet metadata (row groups, compressed and
    /// uncompressed sizes, min/max and null counts per column) and its first
    /// rows; --json for scripts.
    Inspect(InspectArgs),
    /// One self-contained HTML page about an output (no network needed to
    /// view it): records per day by class, reject reasons, quality gates and
    /// their history, feature distributions, top artists, partitions and
    /// their sizes, run history.
    Report(ReportArgs),
    /// Releases a final day that a failed quality gate holds (continuous
    /// mode): writes its `_SUCCESS` markers and records the acceptance; a
    /// running `skipflow run` drops it from its held days at its next commit.
    #[command(after_help = "Exit codes: 0 accepted; 2 the day is not held (or bad usage); 1 any other failure.")]
    Accept(AcceptArgs),
    /// The whole tour: an in-process Kafka filled with a generated dirty week,
    /// the batch job from it into ./out, what it wrote and how to open it, and
    /// the HTML report (./out/report.html).
    Demo,
}

#[derive(Args, Debug, Default)]
pub struct BatchArgs {
    /// Output: a local directory (created if missing), s3://BUCKET/PREFIX or
    /// gs://BUCKET/PREFIX (credentials from the cloud's environment
    /// variables or the job file's [storage] table).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// NDJSON input files (`.gz` and `.zst` are decompressed by extension).
    #[arg(long, num_args = 1..)]
    pub input: Vec<String>,
    /// Kafka bootstrap servers, HOST:PORT (instead of --input).
    #[arg(long)]
    pub brokers: Option<String>,
    /// Kafka topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// Kafka: start each partition at FROM 00:00 UTC minus this much.
    #[arg(long, value_name = "DURATION")]
    pub skew: Option<String>,
    /// First day of the range, YYYY-MM-DD (with --to). Default: first day of the kept events.
    #[arg(long)]
    pub from: Option<String>,
    /// Last day of the range, YYYY-MM-DD (with --from). Default: last day of the kept events.
    #[arg(long)]
    pub to: Option<String>,
    /// Worker threads (default: number of cores).
    #[arg(long, short = 'w')]
    pub workers: Option<usize>,
    /// Job file (TOML) with defaults for these flags.
    #[arg(long)]
    pub job: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Cluster mode: timely's arguments after `--`: `-n N` processes, `-p I`
    /// this process (0..N-1), `-h HOSTFILE` (`host:port` a line, process 0
    /// first). Every process runs the same command with the same --workers.
    #[arg(last = true, value_name = "CLUSTER")]
    pub cluster: Vec<String>,
}

#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// Output: a local directory, s3://BUCKET/PREFIX or gs://BUCKET/PREFIX
    /// (holds the checkpoint; a restart continues from it).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Kafka bootstrap servers, HOST:PORT.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Kafka topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// First start only: earliest, latest, or an epoch-millisecond instant. Default earliest.
    #[arg(long)]
    pub start: Option<String>,
    /// How often changed partitions are published and the checkpoint written. Default 30s.
    #[arg(long, value_name = "DURATION")]
    pub commit_interval: Option<String>,
    /// A day is final this long after its end (by the watermark). Default 48h.
    #[arg(long, value_name = "DURATION")]
    pub finalize_after: Option<String>,
    /// Serve http://ADDR/metrics (Prometheus), /healthz, /readyz and /status
    /// (JSON), e.g. 127.0.0.1:9898.
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// Worker threads (default: number of cores).
    #[arg(long, short = 'w')]
    pub workers: Option<usize>,
    /// Input time step (advanced). Default: the commit interval in equal
    /// steps of at most 5s.
    #[arg(long, value_name = "DURATION", hide = true)]
    pub epoch: Option<String>,
    /// Job file (TOML) with defaults for these flags.
    #[arg(long)]
    pub job: Option<PathBuf>,
    /// Hot standby: wait while another run holds the output, then take over
    /// (from the checkpoint) when it stops, dies or loses its lease.
    #[arg(long)]
    pub standby: bool,
    /// Cluster mode: timely's arguments after `--`: `-n N` processes, `-p I`
    /// this process (0..N-1), `-h HOSTFILE` (`host:port` a line, process 0
    /// first). Every process runs the same command with the same --workers.
    #[arg(last = true, value_name = "CLUSTER")]
    pub cluster: Vec<String>,
}

fn duration(flag: &str, v: Option<String>, default: &str) -> Result<std::time::Duration> {
    parse_duration(flag, v.as_deref().unwrap_or(default))
}

fn parse_duration(flag: &str, v: &str) -> Result<std::time::Duration> {
    humantime::parse_duration(v).map_err(|e| bad(format!("--{flag} {v:?}: {e}")))
}

/// The default input time step of a continuous run: the commit interval cut
/// into equal steps of at most 5 s (30 s: six steps of 5 s; 1 s: one step).
/// Each step is a unit of incremental work: every user touched in a step has
/// its day recomputed once, so longer steps cost less CPU (measured: 10.95 ->
/// 7.51 CPU s per million events at 167k events/s going from 1 s to 5 s),
/// while outputs only become visible at commits anyway.
pub fn default_epoch(commit_interval: std::time::Duration) -> std::time::Duration {
    let steps = commit_interval.as_millis().div_ceil(5_000).max(1) as u32;
    (commit_interval / steps).max(std::time::Duration::from_millis(1))
}

/// Resolves `run` flags and job file into a continuous-run configuration.
pub fn run_config(a: &RunArgs) -> Result<crate::continuous::RunConfig> {
    use crate::continuous::{RunConfig, StartAt};
    let job = JobFile::load_opt(a.job.as_deref())?;
    let output = a
        .output
        .clone()
        .or(job.output)
        .ok_or_else(|| bad("run needs --output DIR"))?;
    let brokers = a
        .brokers
        .clone()
        .or(job.brokers)
        .ok_or_else(|| bad("run needs --brokers HOST:PORT"))?;
    let topic = a
        .topic
        .clone()
        .or(job.topic)
        .ok_or_else(|| bad("run needs --topic T"))?;
    let start = match a.start.clone().or(job.start).as_deref().unwrap_or("earliest") {
        "earliest" => StartAt::Earliest,
        "latest" => StartAt::Latest,
        ms => StartAt::Timestamp(ms.parse().map_err(|_| {
            bad(format!(
                "--start {ms:?}: expected earliest, latest or epoch milliseconds"
            ))
        })?),
    };
    let mut kafka = crate::source::kafka::KafkaInput::new(&brokers, &topic);
    kafka.settings = job.kafka.clone();
    kafka.allow_data_loss = job.allow_data_loss.unwrap_or(false);
    let commit_interval = duration(
        "commit-interval",
        a.commit_interval.clone().or(job.commit_interval),
        "30s",
    )?;
    let epoch = match &a.epoch {
        Some(e) => parse_duration("epoch", e)?.min(commit_interval),
        None => default_epoch(commit_interval),
    };
    Ok(RunConfig {
        output,
        kafka,
        start,
        commit_interval,
        finalize_after: duration("finalize-after", a.finalize_after.clone().or(job.finalize_after), "48h")?,
        workers: default_workers(a.workers.or(job.workers))?,
        epoch,
        metrics_addr: a.metrics_addr.clone().or(job.metrics_addr),
        health: crate::service::Thresholds {
            unhealthy_after: match job.unhealthy_after {
                Some(d) => parse_duration("unhealthy_after", &d)?,
                None => (3 * commit_interval).max(std::time::Duration::from_secs(60)),
            },
            ready_max_lag: job.ready_max_lag.unwrap_or(100_000),
        },
        discovery_interval: duration("partition_discovery_interval", job.partition_discovery_interval, "30s")?,
        topology: crate::cluster::Topology::parse(&a.cluster)?,
        storage: job.storage.clone(),
        quality: job.quality.clone(),
        standby: a.standby,
    })
}

#[derive(Args, Debug, Default)]
pub struct BrokerArgs {
    #[arg(long, default_value_t = 9092)]
    pub port: u16,
    #[arg(long, default_value_t = 16)]
    pub partitions: i32,
    #[arg(long, default_value = "listen-events")]
    pub topic: String,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Output file (NDJSON; `.gz` or `.zst` compresses).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Produce to Kafka instead (keyed by user_id, message timestamp = arrival time).
    #[arg(long)]
    pub brokers: Option<String>,
    /// Kafka topic (default listen-events).
    #[arg(long)]
    pub topic: Option<String>,
    /// Number of users.
    #[arg(long, default_value_t = 2000)]
    pub users: u32,
    /// Number of days.
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// Random seed (same seed, same bytes).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// First day, YYYY-MM-DD.
    #[arg(long, default_value = "2026-11-01")]
    pub start: String,
    /// Add duplicates, malformed records, late arrivals and boundary cases.
    #[arg(long)]
    pub dirty: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Output directory of a run.
    pub dir: PathBuf,
    /// Only this table.
    #[arg(long)]
    pub table: Option<String>,
    /// Only this day (shows its rows).
    #[arg(long)]
    pub day: Option<String>,
    /// Rows to show with --day.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    /// JSON for scripts: tables, partitions (day, rows, bytes, final) and,
    /// with --day, each file's row groups and column statistics.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Output of a run: a local directory, s3://... or gs://...
    pub dir: PathBuf,
    /// Where to write the page. Default: DIR/report.html for a local
    /// directory, ./report.html for an object store.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Days shown (the last ones with data).
    #[arg(long, default_value_t = 28)]
    pub days: usize,
}

/// `skipflow report`: writes the page; where it is.
pub fn report(a: &ReportArgs) -> Result<String> {
    let url = a.dir.to_string_lossy().contains("://");
    if !url && !a.dir.is_dir() {
        return Err(bad(format!("{} is not a directory", a.dir.display())));
    }
    if a.days == 0 {
        return Err(bad("--days must be at least 1"));
    }
    let store = crate::store::Store::open(&a.dir, &Default::default())?;
    let page = crate::report::html::write_page(&store, a.days)?;
    let path = match (&a.html, url) {
        (Some(p), _) => p.clone(),
        (None, false) => a.dir.join("report.html"),
        (None, true) => PathBuf::from("report.html"),
    };
    std::fs::write(&path, page).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    Ok(format!(
        "report: {} (open it in a browser; it needs no network)\n",
        path.display()
    ))
}

#[derive(Args, Debug)]
pub struct AcceptArgs {
    /// Output of a continuous run: a local directory, s3://... or gs://...
    pub dir: PathBuf,
    /// The held day to release (YYYY-MM-DD; `skipflow inspect` and /status list them).
    #[arg(long)]
    pub day: String,
    /// A job file for its [storage] settings (object stores).
    #[arg(long)]
    pub job: Option<PathBuf>,
}

/// `skipflow accept`: releases a held day; what it did, for the operator.
pub fn accept(a: &AcceptArgs) -> Result<String> {
    let job = JobFile::load_opt(a.job.as_deref())?;
    let store = crate::store::Store::open(&a.dir, &job.storage)?;
    let (why, marked) = crate::continuous::accept(&store, &a.day)?;
    Ok(format!(
        "accepted {}: _SUCCESS written to {marked} partitions (it was held for: {why})\n",
        a.day
    ))
}

/// A job file: the same settings as the flags, documented in `jobs/*.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    pub output: Option<PathBuf>,
    pub input: Option<Vec<String>>,
    pub brokers: Option<String>,
    pub topic: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub workers: Option<usize>,
    pub skew: Option<String>,
    pub start: Option<String>,
    pub commit_interval: Option<String>,
    pub finalize_after: Option<String>,
    pub metrics_addr: Option<String>,
    /// `/healthz` fails after this long without a commit, or with Kafka
    /// not answering. Default: 3 commit intervals, at least 60s.
    pub unhealthy_after: Option<String>,
    /// `/readyz` succeeds once at most this many messages are unread. Default 100000.
    pub ready_max_lag: Option<i64>,
    /// Offsets deleted by retention before they were read: go on without
    /// them (counted and logged) instead of failing. Default false.
    pub allow_data_loss: Option<bool>,
    /// How often `run` checks the topic for added partitions. Default 30s.
    pub partition_discovery_interval: Option<String>,
    /// librdkafka settings passed through to the consumer.
    #[serde(default)]
    pub kafka: std::collections::BTreeMap<String, String>,
    /// Object-store settings (object_store's keys: endpoint, region,
    /// access_key_id, ...) and `lease`, the lock's lease duration.
    #[serde(default)]
    pub storage: std::collections::BTreeMap<String, String>,
    /// Quality gates (keys left out keep their defaults; see jobs/daily.toml).
    #[serde(default)]
    pub quality: crate::quality::Quality,
}

impl JobFile {
    /// The job file given with `--job`, or an empty one.
    pub fn load_opt(path: Option<&Path>) -> Result<JobFile> {
        path.map_or_else(|| Ok(JobFile::default()), JobFile::load)
    }

    pub fn load(path: &Path) -> Result<JobFile> {
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read job file {}: {e}", path.display())))?;
        toml::from_str(&text)
            .map_err(|e| {
                let line = e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1));
                let at = line
                    .map(|l| format!(" at line {l} ({})", text.lines().nth(l - 1).unwrap_or("").trim()))
                    .unwrap_or_default();
                bad(format!("job file {} is invalid{at}: {}", path.display(), e.message()))
            })
            .and_then(|job: JobFile| {
                job.quality
                    .validate()
                    .map_err(|e| bad(format!("job file {}: {e}", path.display())))?;
                Ok(job)
            })
    }
}

/// Worker threads: given, or the number of cores.
pub fn default_workers(w: Option<usize>) -> Result<usize> {
    match w {
        Some(0) => Err(bad("--workers must be at least 1")),
        Some(n) => Ok(n),
        None => Ok(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
    }
}

/// Resolves `batch` flags and job file into a batch configuration.
pub fn batch_config(a: &BatchArgs) -> Result<crate::batch::BatchConfig> {
    let job = JobFile::load_opt(a.job.as_deref())?;
    let output = a
        .output
        .clone()
        .or(job.output)
        .ok_or_else(|| bad("batch needs --output DIR"))?;
    if !a.input.is_empty() && a.brokers.is_some() {
        return Err(bad("give either --input or --brokers, not both"));
    }
    // The input chosen on the command line replaces the job file's, of either kind.
    let (inputs, brokers) = if !a.input.is_empty() {
        (a.input.clone(), None)
    } else if a.brokers.is_some() {
        (vec![], a.brokers.clone())
    } else {
        (job.input.unwrap_or_default(), job.brokers)
    };
    if inputs.is_empty() && brokers.is_none() {
        return Err(bad("batch needs --input FILE... or --brokers HOST:PORT --topic T"));
    }
    if !inputs.is_empty() && brokers.is_some() {
        return Err(bad("give either --input or --brokers, not both"));
    }
    let kafka = match brokers {
        None => None,
        Some(b) => {
            let topic = a
                .topic
                .clone()
                .or(job.topic)
                .ok_or_else(|| bad("--brokers needs --topic T"))?;
            let skew = a.skew.clone().or(job.skew).unwrap_or_else(|| "1h".into());
            let skew = humantime::parse_duration(&skew).map_err(|e| bad(format!("--skew {skew:?}: {e}")))?;
            let mut input = crate::source::kafka::KafkaInput::new(&b, &topic);
            input.settings = job.kafka.clone();
            input.allow_data_loss = job.allow_data_loss.unwrap_or(false);
            Some(crate::batch::KafkaBatch {
                input,
                skew_ms: skew.as_millis() as i64,
            })
        }
    };
    for f in &inputs {
        if !Path::new(f).is_file() {
            return Err(bad(format!("input file {f} does not exist")));
        }
    }
    let from = a.from.clone().or(job.from);
    let to = a.to.clone().or(job.to);
    let range = match (from, to) {
        (None, None) => None,
        (Some(f), Some(t)) => {
            let f = dates::parse_day(&f).map_err(|e| bad(format!("--from: {e}")))?;
            let t = dates::parse_day(&t).map_err(|e| bad(format!("--to: {e}")))?;
            if f > t {
                return Err(bad("--from must not be after --to"));
            }
            Some((f, t))
        }
        _ => return Err(bad("give both --from and --to, or neither")),
    };
    Ok(crate::batch::BatchConfig {
        output,
        inputs,
        kafka,
        range,
        workers: default_workers(a.workers.or(job.workers))?,
        progress: !a.quiet,
        topology: crate::cluster::Topology::parse(&a.cluster)?,
        storage: job.storage.clone(),
        quality: job.quality.clone(),
    })
}

/// `skipflow generate`: NDJSON to a file (compressed by extension), or
/// records produced to Kafka keyed by user id with arrival time stamps.
pub fn generate(a: &GenerateArgs) -> Result<()> {
    use crate::generate::{self as g, GenConfig};
    use std::io::Write;
    let cfg = GenConfig {
        users: a.users,
        days: a.days,
        seed: a.seed,
        dirty: a.dirty,
        start_day: dates::parse_day(&a.start).map_err(|e| bad(format!("--start: {e}")))?,
    };
    if let Some(brokers) = &a.brokers {
        if a.output.is_some() {
            return Err(bad("give either --output or --brokers, not both"));
        }
        let topic = a.topic.clone().unwrap_or_else(|| "listen-events".into());
        let stats = produce_generated(&cfg, brokers, &topic)?;
        eprintln!(
            "produced {} records ({} valid events, {} duplicates, {} malformed, {} late) to {topic} on {brokers}",
            stats.records, stats.valid_events, stats.duplicates, stats.malformed, stats.late
        );
        return Ok(());
    }
    let path = a.output.clone().ok_or_else(|| bad("generate needs --output FILE"))?;
    let file = std::fs::File::create(&path).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    let name = path.to_string_lossy().to_string();
    let mut w: Box<dyn Write> = match crate::source::files::Compression::of(&name) {
        crate::source::files::Compression::Gzip => Box::new(flate2::write::GzEncoder::new(
            std::io::BufWriter::new(file),
            flate2::Compression::fast(),
        )),
        crate::source::files::Compression::Zstd => Box::new(zstd::Encoder::new(file, 3)?.auto_finish()),
        crate::source::files::Compression::None => Box::new(std::io::BufWriter::with_capacity(1 << 20, file)),
    };
    let mut err: Option<std::io::Error> = None;
    let mut lines = 0u64;
    let stats = g::generate(&cfg, &mut |r| {
        if err.is_some() {
            return;
        }
        // Null and empty values exist only on Kafka: a file has no such line.
        if let Some(v) = r.value.filter(|v| !v.is_empty()) {
            lines += 1;
            if let Err(e) = w.write_all(&v).and_then(|_| w.write_all(b"\n")) {
                err = Some(e);
            }
        }
    });
    if let Some(e) = err {
        return Err(anyhow::anyhow!("writing {}: {e}", path.display()));
    }
    w.flush()?;
    drop(w);
    eprintln!(
        "wrote {} lines ({} valid events, {} duplicates, {} malformed, {} late) to {}",
        lines,
        stats.valid_events,
        stats.duplicates,
        stats.malformed,
        stats.late,
        path.display()
    );
    Ok(())
}

/// Produces the generator's records to `topic`, then checks that the broker
/// kept them all (the embedded broker drops old data past ~5 MiB per partition).
pub fn produce_generated(
    cfg: &crate::generate::GenConfig,
    brokers: &str,
    topic: &str,
) -> Result<crate::generate::GenStats> {
    let mut p = crate::source::kafka::EventProducer::new(brokers, topic, &Default::default())?;
    let mut err = None;
    let stats = crate::generate::generate(cfg, &mut |r| {
        if err.is_none() {
            if let Err(e) = p.send(&r.key, r.value.as_deref(), r.arrival_ms) {
                err = Some(e);
            }
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    p.finish()?;
    let evicted = crate::broker::evicted_partitions(brokers, topic)?;
    if !evicted.is_empty() {
        anyhow::bail!(
            "the broker dropped the oldest messages of {} partition(s) of {topic} (first kept offsets: {:?}); \
             the embedded broker keeps about 5 MiB per partition: produce fewer events, use more partitions, or a real broker",
            evicted.len(),
            evicted
        );
    }
    Ok(stats)
}

/// `skipflow broker`: the embedded Kafka as a standalone process.
pub fn broker(a: &BrokerArgs) -> Result<()> {
    if a.partitions < 1 {
        return Err(bad("--partitions must be at least 1"));
    }
    let k = crate::broker::EmbeddedKafka::start(Some(a.port))?;
    k.create_topic(&a.topic, a.partitions)?;
    println!("{}", k.bootstrap());
    use std::io::Write;
    std::io::stdout().flush()?;
    eprintln!(
        "skipflow broker: librdkafka mock cluster on {} with topic {} ({} partitions); keeps about 5 MiB per partition; Ctrl-C stops it",
        k.bootstrap(),
        a.topic,
        a.partitions
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, std::sync::atomic::Ordering::SeqCst))
        .map_err(|e| anyhow::anyhow!("installing the signal handler: {e}"))?;
    let mut last_check = std::time::Instant::now();
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if last_check.elapsed() >= std::time::Duration::from_secs(2) {
            last_check = std::time::Instant::now();
            if let Ok(ev) = crate::broker::evicted_partitions(k.bootstrap(), &a.topic) {
                if !ev.is_empty() {
                    anyhow::bail!(
                        "data lost: the embedded broker dropped the oldest messages of partitions {:?} of {} \
                         (it keeps about 5 MiB per partition); use more partitions or a real broker",
                        ev,
                        a.topic
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_epoch_divides_the_commit_interval_in_steps_of_at_most_5s() {
        let ms = std::time::Duration::from_millis;
        for (interval, epoch) in [
            (30_000, 5_000),
            (60_000, 5_000),
            (7_000, 3_500),
            (1_000, 1_000),
            (200, 200),
            (12_000, 4_000),
        ] {
            let e = default_epoch(ms(interval));
            assert_eq!(e, ms(epoch), "interval {interval} ms");
            assert!(e <= ms(5_000));
        }
    }

    #[test]
    fn shipped_job_files_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                JobFile::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 2);
    }

    #[test]
    fn flags_win_over_the_job_file() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("e.ndjson");
        std::fs::write(&input, "").unwrap();
        let job = dir.path().join("j.toml");
        std::fs::write(
            &job,
            format!(
                "output = \"from-job\"\ninput = [\"{}\"]\nworkers = 3\nfrom = \"2026-01-01\"\nto = \"2026-01-02\"\n",
                input.display()
            ),
        )
        .unwrap();
        let a = BatchArgs {
            job: Some(job),
            workers: Some(1),
            output: Some("from-flag".into()),
            ..Default::default()
        };
        let c = batch_config(&a).unwrap();
        assert_eq!(c.output, PathBuf::from("from-flag"));
        assert_eq!(c.workers, 1);
        assert_eq!(
            c.range,
            Some((
                dates::parse_day("2026-01-01").unwrap(),
                dates::parse_day("2026-01-02").unwrap()
            ))
        );
        let bad = BatchArgs {
            from: Some("2026-01-02".into()),
            to: Some("2026-01-01".into()),
            ..a
        };
        assert!(batch_config(&bad).unwrap_err().downcast_ref::<ConfigError>().is_some());
    }
}
