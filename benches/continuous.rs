//! Continuous-mode benchmark (issue 4, "Speed"): `make bench-continuous`, or
//! `cargo bench --bench continuous -- [--rate 167000] [--live-secs 120] ...`
//! (`--help` lists the options).
//!
//! 1. Starts tansu 0.6 (memory engine) on a free port; creates the topic
//!    (8 partitions).
//! 2. Calibration: produces at the live rate for a few seconds to a second
//!    topic nobody reads: what the producer and the broker reach on these
//!    cores without skipflow.
//! 3. Backlog: a generated dirty week (20,000 users, 7 days ending
//!    yesterday, about 3.4M records; arrivals after "now" are dropped so that
//!    the watermark stays at the present) is produced, then `skipflow run`
//!    (the release binary, 2 workers, 30 s commits) starts from earliest: the
//!    time until `.skipflow/checkpoint.json` covers every record gives the
//!    catch-up rate.
//! 4. Live: produces at a fixed rate (default 167,000/s) for a fixed time
//!    (default 120 s), message timestamp = send time. Values come from a
//!    generated day whose event ids, user ids and `ts` are rewritten on every
//!    pass over it (every pass is new listens of new users; `ts` keeps the
//!    generator's arrival lag, so late arrivals stay late). Delivery reports
//!    give each record's partition and offset; the checkpoint is polled
//!    every 100 ms and a record is visible once its partition's checkpoint
//!    offset passes it: freshness = first seen visible - message timestamp.
//! 5. CPU (utime + stime from /proc) of skipflow, tansu, this process and
//!    the whole machine per phase, peak RSS (VmHWM); per commit the latency
//!    from its boundary and the Parquet rows it rewrote (from `_runs/`); a
//!    summary table. Producing stops early when the machine's MemAvailable
//!    falls under `--min-free-mb`, and skipflow is killed under half of it
//!    (the live phase's state grows with every event of the open days).

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use skipflow::generate::{generate, GenConfig, GenRecord};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOPIC: &str = "listen-events";
const CALIBRATION_TOPIC: &str = "calibration";
const MS_PER_DAY: i64 = 86_400_000;

#[derive(Parser, Debug, Clone)]
#[command(about = "skipflow continuous-mode benchmark against tansu (memory engine)")]
struct Args {
    /// Backlog: generated users.
    #[arg(long, default_value_t = 20_000)]
    users: u32,
    /// Backlog: generated days (ending yesterday, UTC).
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// Backlog: produce at most this many records (default: all generated).
    #[arg(long)]
    events: Option<usize>,
    /// Generator seed (the live pool uses seed + 1).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Live: target produce rate, records per second.
    #[arg(long, default_value_t = 167_000)]
    rate: u64,
    /// Live: how long to produce, seconds (0: no live phase).
    #[arg(long, default_value_t = 120)]
    live_secs: u64,
    /// Live: users of the generated day the live records are taken from.
    #[arg(long, default_value_t = 50_000)]
    live_users: u32,
    /// Live: keep the pool's user ids on every pass (the same users listen
    /// again) instead of new users per pass.
    #[arg(long)]
    same_users: bool,
    /// skipflow --epoch (its input time step; empty: skipflow's default).
    #[arg(long, default_value = "")]
    epoch: String,
    /// Backlog and live pool: drop the generator's far-future listens (ts 2099-12-31). By the
    /// spec it stretches the profile's as-of range to 2099, so every later
    /// commit rewrites 28 `user_profile_28d` partitions (as-of today ..
    /// today + 27) instead of one.
    #[arg(long)]
    no_far_future: bool,
    /// Producer-only calibration at the live rate before skipflow starts, seconds (0: none).
    #[arg(long, default_value_t = 15)]
    calibrate_secs: u64,
    /// Producer linger.ms (tansu 0.6 acknowledges 167k/s of small batches seconds late at 5 ms;
    /// 20 ms and more keep acks within tens of ms).
    #[arg(long, default_value_t = 50)]
    linger_ms: u64,
    /// skipflow --commit-interval.
    #[arg(long, default_value = "30s")]
    commit_interval: String,
    /// skipflow --workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// skipflow --log (its stderr is scanned for warnings and errors).
    #[arg(long, default_value = "warn")]
    log: String,
    /// Topic partitions.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Stop producing when the machine's MemAvailable falls under this (MB).
    #[arg(long, default_value_t = 3072)]
    min_free_mb: u64,
    /// Catch-up: give up waiting for a checkpoint covering the backlog after this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout_secs: u64,
    /// Live: after the last acknowledgement, wait at most this long for the
    /// checkpoint to cover every live record.
    #[arg(long, default_value_t = 300)]
    drain_secs: u64,
    /// Keep the temporary directory (output, skipflow.log, tansu.log; its path is printed).
    #[arg(long)]
    keep: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    // `cargo test --all-targets` runs bench targets as tests (no `--bench`):
    // nothing to check there; the benchmark runs under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("bench-continuous: run it with `make bench-continuous` or `cargo bench --bench continuous`");
        return;
    }
    let args = Args::parse();
    // SIGINT/SIGTERM: stop skipflow and tansu and remove the temporary
    // directory (the children and the directory are registered as they come).
    let _ = ctrlc::set_handler(|| {
        eprintln!("bench-continuous: interrupted; stopping skipflow and tansu");
        cleanup();
        std::process::exit(130);
    });
    if let Err(e) = run(&args) {
        eprintln!("bench-continuous: error: {e:#}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------- processes

/// Child pids (skipflow first gets SIGTERM, then everything SIGKILL) and the
/// temporary directory, for the signal handler.
static CLEANUP: Mutex<(Vec<u32>, Option<PathBuf>)> = Mutex::new((Vec::new(), None));

fn register_child(pid: u32) {
    if let Ok(mut c) = CLEANUP.lock() {
        c.0.push(pid);
    }
}

fn register_dir(dir: &Path) {
    if let Ok(mut c) = CLEANUP.lock() {
        c.1 = Some(dir.to_path_buf());
    }
}

fn cleanup() {
    let Ok(mut c) = CLEANUP.lock() else { return };
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
    let kill = |sig: &str, pid: u32| {
        let _ = Command::new("kill")
            .args([sig, &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    };
    for &pid in &c.0 {
        kill("-TERM", pid);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.0.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for &pid in &c.0 {
        kill("-KILL", pid);
    }
    if let Some(d) = c.1.take() {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A child process, killed (SIGKILL) when dropped unless already reaped.
struct Proc {
    name: &'static str,
    child: Option<Child>,
    pid: u32,
}

impl Proc {
    fn new(name: &'static str, child: Child) -> Proc {
        let pid = child.id();
        register_child(pid);
        Proc {
            name,
            child: Some(child),
            pid,
        }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, then waits up to `patience` (SIGKILL after it).
    fn terminate(&mut self, patience: Duration) -> Result<std::process::ExitStatus> {
        let mut c = self
            .child
            .take()
            .ok_or_else(|| anyhow!("{} already stopped", self.name))?;
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + patience;
        loop {
            if let Some(s) = c.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let s = c.wait()?;
                bail!(
                    "{} did not stop within {patience:?} of SIGTERM (killed: {s})",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// A `/proc/PID/status` field in kB (VmRSS, VmHWM).
fn status_kb(pid: &str, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Machine-wide CPU from /proc/stat, in ticks: (busy, steal).
fn machine_ticks() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is in user)
    let g = |i: usize| f.get(i).copied().unwrap_or(0);
    (g(0) + g(1) + g(2) + g(5) + g(6), g(7))
}

/// MemAvailable of the machine, MB.
fn mem_available_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("MemAvailable:"))?.to_string();
            l.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(u64::MAX, |kb| kb / 1024)
}

/// The git commit of the measured source, "+ uncommitted changes" when src/ differs.
fn source_version() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["log", "-1", "--format=%h %s"]) {
        Some(head) => {
            let dirty = git(&["status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"]).unwrap_or_default();
            if dirty.is_empty() {
                head
            } else {
                format!("{head} + uncommitted changes under src/")
            }
        }
        None => "unknown (no git)".into(),
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn tansu_binary() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("SKIPFLOW_TANSU") {
        return Ok(PathBuf::from(p));
    }
    let p = PathBuf::from(std::env::var("HOME")?).join(".cache/skipflow/tansu/bin/tansu");
    if !p.exists() {
        bail!("tansu is not installed: `make tansu` installs 0.6.0 into ~/.cache/skipflow (or set SKIPFLOW_TANSU)");
    }
    Ok(p)
}

fn start_tansu(addr: &str, log: &Path) -> Result<Proc> {
    let url = format!("tcp://{addr}");
    let log = std::fs::File::create(log)?;
    let child = Command::new(tansu_binary()?)
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", "memory://tansu/"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting tansu")?;
    let mut p = Proc::new("tansu", child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        if let Some(s) = p.exited() {
            bail!("tansu exited ({s}) before listening on {addr}");
        }
        if Instant::now() > deadline {
            bail!("tansu did not listen on {addr} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(p)
}

fn create_topic(addr: &str, name: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", addr).create()?;
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for r in futures_executor::block_on(admin.create_topics([&topic], &AdminOptions::new()))? {
        r.map_err(|(t, e)| anyhow!("creating topic {t}: {e}"))?;
    }
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("log_level", "0")
        .create()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(md) = c.fetch_metadata(Some(name), Duration::from_secs(2)) {
            if md.topics().first().map_or(0, |t| t.partitions().len()) == partitions as usize {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("tansu never showed {name} with {partitions} partitions");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Deletes a topic (frees the broker's memory); failures only print.
fn delete_topic(addr: &str, name: &str) {
    let r = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create::<AdminClient<DefaultClientContext>>()
        .map_err(|e| e.to_string())
        .and_then(|admin| {
            futures_executor::block_on(admin.delete_topics(&[name], &AdminOptions::new())).map_err(|e| e.to_string())
        });
    match r {
        Ok(v) => {
            for x in v {
                if let Err((t, e)) = x {
                    println!("  note: deleting topic {t}: {e}");
                }
            }
        }
        Err(e) => println!("  note: deleting topic {name}: {e}"),
    }
}

/// GET /metrics (plain HTTP/1.0, no client library).
fn scrape(addr: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or(body))
}

/// Bytes of resident memory per listen held in the dataflow (the listens
/// arrangement's updates: the open days' kept and duplicate records), and
/// the updates of every exported arrangement per such listen.
fn state_per_listen(metrics: &str) -> String {
    let rss = metric(metrics, "skipflow_resident_memory_bytes");
    let records = |a: &str| metric(metrics, &format!("skipflow_arrangement_records{{arrangement=\"{a}\"}}"));
    let all: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("skipflow_arrangement_records{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    match (rss, records("listens")) {
        (Some(rss), Some(n)) if n > 0.0 => format!(
            "{:.0} B ({:.2} GB / {} listens; {:.2} arrangement updates per listen)",
            rss / n,
            rss / 1e9,
            thousands(n),
            all / n
        ),
        _ => "-".into(),
    }
}

/// Parquet rows a live commit wrote per record published since the commit
/// before (flat when commits write what changed; growing when every commit
/// rewrites whole days).
fn write_amplification(rows: &[(u64, u64)], between: &[f64], interval_s: f64) -> String {
    let ratios: Vec<String> = rows
        .iter()
        .skip(1)
        .zip(between)
        .map(|((r, _), per_s)| {
            let published = per_s * interval_s;
            if published > 0.0 {
                format!("{:.1}", *r as f64 / published)
            } else {
                "-".into()
            }
        })
        .collect();
    if ratios.is_empty() {
        "-".into()
    } else {
        ratios.join(" ")
    }
}

/// The value of the first sample line of `name` (the bare name, or the name with its labels).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

// ---------------------------------------------------------------- producer

/// A run of consecutive offsets of one partition with the same message timestamp.
#[derive(Clone, Copy, Debug)]
struct Run {
    offset: i64,
    count: u32,
    /// Message timestamp (= when the record was handed to the producer).
    ts: i64,
    /// When the broker acknowledged the run's last record.
    acked: i64,
}

#[derive(Default)]
struct Delivered {
    /// Next offset per partition (last delivered + 1).
    ends: BTreeMap<i32, i64>,
    /// When `timed`: the delivered offsets with their message timestamps.
    runs: BTreeMap<i32, Vec<Run>>,
    /// When `timed`: delivery latency (ack - message timestamp), 1 ms buckets.
    ack_ms: Vec<u64>,
    failed: u64,
    first_error: Option<String>,
}

struct Ctx {
    delivered: Arc<Mutex<Delivered>>,
    count: Arc<AtomicU64>,
    /// Record runs and latencies (the message timestamps are wall-clock).
    timed: AtomicBool,
}

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        let mut d = self.delivered.lock().unwrap();
        match r {
            Ok(m) => {
                self.count.fetch_add(1, Ordering::Relaxed);
                let (p, o) = (m.partition(), m.offset());
                let e = d.ends.entry(p).or_insert(0);
                *e = (*e).max(o + 1);
                if self.timed.load(Ordering::Relaxed) {
                    let ts = m.timestamp().to_millis().unwrap_or(0);
                    let now = now_ms();
                    let lat = (now - ts).clamp(0, 600_000) as usize;
                    if d.ack_ms.len() <= lat {
                        d.ack_ms.resize(lat + 1, 0);
                    }
                    d.ack_ms[lat] += 1;
                    let runs = d.runs.entry(p).or_default();
                    match runs.last_mut() {
                        Some(l) if l.ts == ts && l.offset + l.count as i64 == o => {
                            l.count += 1;
                            l.acked = now;
                        }
                        _ => runs.push(Run {
                            offset: o,
                            count: 1,
                            ts,
                            acked: now,
                        }),
                    }
                }
            }
            Err((e, _)) => {
                d.failed += 1;
                d.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// A producer with its delivery bookkeeping.
struct Prod {
    p: BaseProducer<Ctx>,
    delivered: Arc<Mutex<Delivered>>,
    count: Arc<AtomicU64>,
}

fn producer(addr: &str, linger_ms: u64, timed: bool) -> Result<Prod> {
    let delivered = Arc::new(Mutex::new(Delivered::default()));
    let count = Arc::new(AtomicU64::new(0));
    let p = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("linger.ms", linger_ms.to_string())
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "2097151")
        .set("message.max.bytes", "2000000")
        .set("log_level", "3")
        .create_with_context(Ctx {
            delivered: delivered.clone(),
            count: count.clone(),
            timed: AtomicBool::new(timed),
        })?;
    Ok(Prod { p, delivered, count })
}

/// Queues one record; when the local queue is full, serves delivery reports
/// and retries. Returns whether it had to wait.
fn send(p: &BaseProducer<Ctx>, topic: &str, key: &[u8], value: Option<&[u8]>, ts: i64) -> Result<bool> {
    let mut waited = false;
    loop {
        let mut rec = BaseRecord::to(topic).key(key).timestamp(ts);
        if let Some(v) = value {
            rec = rec.payload(v);
        }
        match p.send(rec) {
            Ok(()) => return Ok(waited),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                waited = true;
                p.poll(Duration::from_millis(1));
            }
            Err((e, _)) => bail!("producing to {topic}: {e}"),
        }
    }
}

/// What a paced run of the producer achieved.
struct Paced {
    start_ms: i64,
    sent: u64,
    send_secs: f64,
    /// Records behind the target when sending stopped.
    behind: u64,
    /// Sends that found the producer's queue full.
    waits: u64,
    delivered: u64,
    /// From the first send to the last acknowledgement.
    delivered_secs: f64,
    /// When the last record was acknowledged.
    flushed_ms: i64,
    /// Stopped early for lack of memory.
    low_memory: Option<u64>,
    ack_p50: i64,
    ack_p99: i64,
}

/// Sends records from the pool at `rate`/s for `secs` (in 2 ms steps, each
/// step's records stamped with the step's wall clock), then waits for every
/// delivery.
fn produce_paced(prod: &Prod, topic: &str, pool: &[PoolRec], args: &Args, secs: u64, label: &str) -> Result<Paced> {
    let rate = args.rate;
    let before = prod.count.load(Ordering::Relaxed);
    let start_ms = now_ms();
    let t0 = Instant::now();
    let end = Duration::from_secs(secs);
    let (mut sent, mut i, mut waits) = (0u64, 0usize, 0u64);
    let (mut key, mut value) = (Vec::new(), Vec::new());
    let mut next_report = Duration::from_secs(10);
    let mut low_memory = None;
    loop {
        let el = t0.elapsed();
        if el >= end {
            break;
        }
        let target = (rate as f64 * el.as_secs_f64()) as u64;
        let ts = now_ms();
        while sent < target {
            let r = &pool[i % pool.len()];
            let pass = (i / pool.len()) as u64;
            i += 1;
            let has = r.patched(pass, args.same_users, ts, &mut key, &mut value);
            if send(&prod.p, topic, &key, has.then_some(&value[..]), ts)? {
                waits += 1;
            }
            sent += 1;
            if sent.is_multiple_of(1000) {
                prod.p.poll(Duration::ZERO);
                if t0.elapsed() >= end {
                    break;
                }
            }
        }
        prod.p.poll(Duration::ZERO);
        if el >= next_report {
            next_report += Duration::from_secs(10);
            let free = mem_available_mb();
            println!(
                "  {label} t={:>5.1}s sent {} ({} behind target), delivered {}, MemAvailable {} MB",
                el.as_secs_f64(),
                thousands(sent as f64),
                thousands(target.saturating_sub(sent) as f64),
                thousands((prod.count.load(Ordering::Relaxed) - before) as f64),
                free
            );
            if free < args.min_free_mb {
                println!(
                    "  {label}: MemAvailable {free} MB < {} MB: stopping early",
                    args.min_free_mb
                );
                low_memory = Some(free);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let send_secs = t0.elapsed().as_secs_f64();
    let behind = ((rate as f64 * send_secs.min(secs as f64)) as u64).saturating_sub(sent);
    prod.p
        .flush(Duration::from_secs(600))
        .map_err(|e| anyhow!("flushing {topic}: {e}"))?;
    let flushed_ms = now_ms();
    let delivered = prod.count.load(Ordering::Relaxed) - before;
    let d = prod.delivered.lock().unwrap();
    if d.failed > 0 {
        println!(
            "WARNING: {} records not delivered to {topic}: {:?}",
            d.failed, d.first_error
        );
    }
    let ack: Vec<(i64, u64)> = d.ack_ms.iter().enumerate().map(|(i, &n)| (i as i64, n)).collect();
    Ok(Paced {
        start_ms,
        sent,
        send_secs,
        behind,
        waits,
        delivered,
        delivered_secs: (flushed_ms - start_ms) as f64 / 1000.0,
        flushed_ms,
        low_memory,
        ack_p50: quantile(&ack, 0.5).unwrap_or(-1),
        ack_p99: quantile(&ack, 0.99).unwrap_or(-1),
    })
}

// ---------------------------------------------------------------- live pool

/// A generated record and where its event id, user id and `ts` sit in the value.
struct PoolRec {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    /// arrival - ts of the generated record (kept in the live stream).
    lag_ms: i64,
    eid: Option<(usize, usize)>,
    uid: Option<(usize, usize)>,
    ts: Option<(usize, usize)>,
}

/// The contents span of a plain (no escapes) JSON string field, if any.
fn str_span(v: &[u8], field: &str) -> Option<(usize, usize)> {
    let pat = format!("\"{field}\":\"");
    let s = memchr::memmem::find(v, pat.as_bytes())? + pat.len();
    let e = s + memchr::memchr(b'"', &v[s..])?;
    (e > s && !v[s..e].contains(&b'\\')).then_some((s, e))
}

fn ts_span(v: &[u8]) -> Option<(usize, usize, i64)> {
    let s = memchr::memmem::find(v, b"\"ts\":")? + 5;
    let e = s + v[s..].iter().take_while(|b| b.is_ascii_digit()).count();
    let ts = std::str::from_utf8(&v[s..e]).ok()?.parse().ok()?;
    Some((s, e, ts))
}

impl PoolRec {
    fn new(r: GenRecord) -> PoolRec {
        let (mut eid, mut uid, mut ts, mut lag_ms) = (None, None, None, 0);
        if let Some(v) = &r.value {
            eid = str_span(v, "event_id").filter(|&(s, e)| e - s >= 8 && v[s..s + 8].iter().all(u8::is_ascii_hexdigit));
            uid = str_span(v, "user_id").filter(|&(s, e)| e - s <= 52 && v[s..e] == r.key[..]);
            if let Some((s, e, t)) = ts_span(v) {
                ts = Some((s, e));
                lag_ms = r.arrival_ms - t;
            }
        }
        PoolRec {
            key: r.key,
            value: r.value,
            lag_ms,
            eid,
            uid,
            ts,
        }
    }

    /// Key and value for pass `pass` sent at `now`: a new event id (first 8 hex
    /// digits xor a per-pass constant: distinct across passes, duplicates stay
    /// duplicates within one), user id + "-<pass>", `ts` = now - lag.
    /// Returns false for a null value.
    fn patched(&self, pass: u64, same_users: bool, now: i64, key: &mut Vec<u8>, out: &mut Vec<u8>) -> bool {
        key.clear();
        out.clear();
        let Some(v) = &self.value else {
            key.extend_from_slice(&self.key);
            return false;
        };
        let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::with_capacity(3);
        if let Some((s, _)) = self.eid {
            let x = u32::from_str_radix(std::str::from_utf8(&v[s..s + 8]).unwrap_or("0"), 16).unwrap_or(0);
            let y = x ^ (pass as u32).wrapping_mul(0x9E37_79B1);
            edits.push((s, s + 8, format!("{y:08x}").into_bytes()));
        }
        if let Some((s, e)) = self.uid.filter(|_| !same_users) {
            let mut u = v[s..e].to_vec();
            u.extend_from_slice(format!("-{pass}").as_bytes());
            key.extend_from_slice(&u);
            edits.push((s, e, u));
        } else {
            key.extend_from_slice(&self.key);
        }
        if let Some((s, e)) = self.ts {
            edits.push((s, e, (now - self.lag_ms).max(0).to_string().into_bytes()));
        }
        edits.sort_by_key(|e| e.0);
        let mut at = 0;
        for (s, e, b) in edits {
            out.extend_from_slice(&v[at..s]);
            out.extend_from_slice(&b);
            at = e;
        }
        out.extend_from_slice(&v[at..]);
        true
    }
}

/// The generator's far-future listens (ts in 2099): `ts` more than a day
/// after the record's arrival.
fn is_far_future(r: &GenRecord) -> bool {
    r.value
        .as_deref()
        .and_then(ts_span)
        .is_some_and(|(_, _, ts)| ts > r.arrival_ms + MS_PER_DAY)
}

// ---------------------------------------------------------------- monitor

#[derive(Clone, Debug)]
struct Snap {
    /// Wall-clock ms when this checkpoint was first seen.
    seen_ms: i64,
    commits: u64,
    offsets: BTreeMap<i32, i64>,
    /// Records delivered (acknowledged) by then and not in this checkpoint.
    pending: i64,
    /// From the commit's boundary (process start + k intervals) to its run
    /// report being written, s.
    latency: Option<f64>,
    /// Rows and bytes of the partitions this commit rewrote (its run report).
    rows: u64,
    bytes: u64,
}

/// The run report of commit `k` under `out/_runs`: (boundary-to-finished
/// seconds, rows rewritten, bytes rewritten). skipflow's clock starts at
/// epoch 1 (1 s epochs) when the run starts, boundary k is epoch
/// k * interval, reached (k * interval - 1 s) after the start.
fn commit_report(out: &Path, k: u64, interval_s: f64) -> Option<(Option<f64>, u64, u64)> {
    let suffix = format!("-commit-{k:06}.json");
    let path = std::fs::read_dir(out.join("_runs"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(&suffix))?;
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let t = |f: &str| {
        chrono::DateTime::parse_from_rfc3339(v.get(f)?.as_str()?)
            .ok()
            .map(|d| d.timestamp_millis())
    };
    let latency = t("started_at")
        .zip(t("finished_at"))
        .map(|(s, f)| (f - s) as f64 / 1000.0 - (k as f64 * interval_s - 1.0));
    let (mut rows, mut bytes) = (0, 0);
    for w in v.get("tables")?.as_object()?.values() {
        rows += w.get("rows").and_then(|x| x.as_u64()).unwrap_or(0);
        bytes += w.get("bytes").and_then(|x| x.as_u64()).unwrap_or(0);
    }
    Some((latency, rows, bytes))
}

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    t_ms: i64,
    sf_ticks: u64,
    tansu_ticks: u64,
    me_ticks: u64,
    sf_rss_kb: u64,
    sf_hwm_kb: u64,
    tansu_rss_kb: u64,
    /// All processes (busy, not idle or iowait), and time stolen by the hypervisor.
    machine_ticks: u64,
    steal_ticks: u64,
}

#[derive(Default)]
struct Monitor {
    snaps: Vec<Snap>,
    samples: Vec<Sample>,
    /// When skipflow's metrics endpoint first answered (its start-up done).
    ready_ms: Option<i64>,
    /// skipflow was killed because the machine was about to run out of memory.
    killed_low_memory: Option<u64>,
}

struct Pids {
    skipflow: String,
    tansu: String,
}

fn sample(p: &Pids) -> Sample {
    let (machine_ticks, steal_ticks) = machine_ticks();
    Sample {
        machine_ticks,
        steal_ticks,
        t_ms: now_ms(),
        sf_ticks: cpu_ticks(&p.skipflow).unwrap_or(0),
        tansu_ticks: cpu_ticks(&p.tansu).unwrap_or(0),
        me_ticks: cpu_ticks("self").unwrap_or(0),
        sf_rss_kb: status_kb(&p.skipflow, "VmRSS:").unwrap_or(0),
        sf_hwm_kb: status_kb(&p.skipflow, "VmHWM:").unwrap_or(0),
        tansu_rss_kb: status_kb(&p.tansu, "VmRSS:").unwrap_or(0),
    }
}

fn read_checkpoint(out: &Path) -> Option<(u64, BTreeMap<i32, i64>)> {
    let s = std::fs::read_to_string(out.join(".skipflow/checkpoint.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&s).ok()?;
    let commits = v.get("commits")?.as_u64()?;
    let offsets = v
        .get("offsets")?
        .as_object()?
        .iter()
        .filter_map(|(k, o)| Some((k.parse().ok()?, o.as_i64()?)))
        .collect();
    Some((commits, offsets))
}

fn covered(offsets: &BTreeMap<i32, i64>) -> i64 {
    offsets.values().sum()
}

/// Whether `offsets` reaches every partition end of `ends`.
fn covers(offsets: &BTreeMap<i32, i64>, ends: &BTreeMap<i32, i64>) -> bool {
    ends.iter().all(|(p, e)| offsets.get(p).copied().unwrap_or(0) >= *e)
}

struct MonitorCfg {
    out: PathBuf,
    pids: Pids,
    metrics_addr: String,
    delivered: Arc<Mutex<Delivered>>,
    start_ms: i64,
    tck: f64,
    /// SIGKILL skipflow when MemAvailable falls under this (MB).
    kill_below_mb: u64,
    machine_ticks0: u64,
    interval_s: f64,
}

/// Polls the checkpoint and /proc every 100 ms; prints a line per commit;
/// kills skipflow (SIGKILL) before the machine runs out of memory.
fn spawn_monitor(c: MonitorCfg, mon: Arc<Mutex<Monitor>>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut last_commits = None;
        let mut last: Option<(Sample, i64)> = None;
        let mut ready = false;
        while !stop.load(Ordering::Relaxed) {
            let s = sample(&c.pids);
            let free = mem_available_mb();
            if free < c.kill_below_mb && mon.lock().unwrap().killed_low_memory.is_none() {
                println!(
                    "  MemAvailable {free} MB < {} MB: killing skipflow {} (SIGKILL) to protect the machine",
                    c.kill_below_mb, c.pids.skipflow
                );
                let _ = Command::new("kill")
                    .args(["-KILL", &c.pids.skipflow])
                    .stderr(Stdio::null())
                    .status();
                mon.lock().unwrap().killed_low_memory = Some(free);
            }
            if !ready && std::net::TcpStream::connect(&c.metrics_addr).is_ok() {
                ready = true;
                mon.lock().unwrap().ready_ms = Some(s.t_ms);
                println!(
                    "  t={:>7.1}s skipflow ready (metrics endpoint answers)",
                    (s.t_ms - c.start_ms) as f64 / 1000.0
                );
            }
            let ck = read_checkpoint(&c.out);
            mon.lock().unwrap().samples.push(s);
            if let Some((commits, offsets)) = ck {
                if last_commits != Some(commits) {
                    last_commits = Some(commits);
                    let cov = covered(&offsets);
                    let ends = c.delivered.lock().unwrap().ends.clone();
                    let lag: i64 = ends
                        .iter()
                        .map(|(p, e)| (e - offsets.get(p).copied().unwrap_or(0)).max(0))
                        .sum();
                    let (rate, cores, machine) = match &last {
                        Some((ls, lc)) => {
                            let dt = (s.t_ms - ls.t_ms).max(1) as f64 / 1000.0;
                            (
                                (cov - lc) as f64 / dt,
                                (s.sf_ticks - ls.sf_ticks) as f64 / c.tck / dt,
                                (s.machine_ticks - ls.machine_ticks) as f64 / c.tck / dt,
                            )
                        }
                        None => {
                            let dt = (s.t_ms - c.start_ms).max(1) as f64 / 1000.0;
                            (
                                cov as f64 / dt,
                                s.sf_ticks as f64 / c.tck / dt,
                                (s.machine_ticks - c.machine_ticks0) as f64 / c.tck / dt,
                            )
                        }
                    };
                    // The metrics are set right after the checkpoint is written.
                    std::thread::sleep(Duration::from_millis(20));
                    let text = scrape(&c.metrics_addr).unwrap_or_default();
                    let dur = metric(&text, "skipflow_last_commit_duration_seconds").unwrap_or(f64::NAN);
                    let mut report = None;
                    for _ in 0..20 {
                        report = commit_report(&c.out, commits, c.interval_s);
                        if report.is_some() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    let (latency, rows, bytes) = report.unwrap_or((None, 0, 0));
                    println!(
                        "  t={:>7.1}s commit {:>3}: covered {:>11} (+{:>9}/s) delivered-not-covered {:>10}  skipflow {:.2} cores (machine {:.2}), RSS {:>6.0} MB; boundary+{} s, rewrote {} rows {:.0} MB, commit took {:.2} s (skipflow metric)",
                        (s.t_ms - c.start_ms) as f64 / 1000.0,
                        commits,
                        thousands(cov as f64),
                        thousands(rate),
                        thousands(lag as f64),
                        cores,
                        machine,
                        s.sf_rss_kb as f64 / 1024.0,
                        latency.map_or("?".into(), |l| format!("{l:.1}")),
                        thousands(rows as f64),
                        bytes as f64 / 1e6,
                        dur
                    );
                    last = Some((s, cov));
                    mon.lock().unwrap().snaps.push(Snap {
                        seen_ms: s.t_ms,
                        commits,
                        offsets,
                        pending: lag,
                        latency,
                        rows,
                        bytes,
                    });
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

// ---------------------------------------------------------------- helpers

fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let n = x.round() as i64;
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Quantile of a weighted sample sorted by value.
fn quantile(sorted: &[(i64, u64)], q: f64) -> Option<i64> {
    let total: u64 = sorted.iter().map(|x| x.1).sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut acc = 0;
    for &(v, n) in sorted {
        acc += n;
        if acc >= rank {
            return Some(v);
        }
    }
    sorted.last().map(|x| x.0)
}

/// The monitor sample nearest to (at or after) `t_ms`.
fn sample_at(samples: &[Sample], t_ms: i64) -> Sample {
    let i = samples.partition_point(|s| s.t_ms < t_ms);
    samples.get(i).or(samples.last()).copied().unwrap_or_default()
}

enum Wait {
    Covered(Snap),
    TimedOut,
    Exited(String),
}

/// Waits until a checkpoint covers `ends`.
fn wait_covered(mon: &Mutex<Monitor>, ends: &BTreeMap<i32, i64>, sf: &mut Proc, timeout: Duration) -> Wait {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = mon.lock().unwrap().snaps.iter().find(|s| covers(&s.offsets, ends)) {
            return Wait::Covered(s.clone());
        }
        if let Some(st) = sf.exited() {
            println!("skipflow exited ({st}) before a checkpoint covered what was produced");
            return Wait::Exited(st.to_string());
        }
        if Instant::now() > deadline {
            println!("timeout: no checkpoint covered what was produced within {timeout:?}");
            return Wait::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct PhaseCpu {
    secs: f64,
    sf: f64,
    tansu: f64,
    me: f64,
    /// Every process on the machine, and steal.
    machine: f64,
    steal: f64,
}

impl PhaseCpu {
    /// Cores used by processes other than skipflow, tansu and this one.
    fn other_cores(&self) -> f64 {
        (self.machine - self.sf - self.tansu - self.me).max(0.0) / self.secs.max(1e-9)
    }

    /// "x.xx sf + x.xx tansu + x.xx producer + x.xx other of N cores; steal x.xx".
    fn cores(&self, n: usize) -> String {
        let c = |x: f64| x / self.secs.max(1e-9);
        let other = (self.machine - self.sf - self.tansu - self.me).max(0.0);
        format!(
            "{:.2} skipflow + {:.2} tansu + {:.2} producer + {:.2} other = {:.2} of {n}; steal {:.2}",
            c(self.sf),
            c(self.tansu),
            c(self.me),
            c(other),
            c(self.machine),
            c(self.steal)
        )
    }
}

fn phase_cpu(a: &Sample, b: &Sample, tck: f64) -> PhaseCpu {
    PhaseCpu {
        secs: (b.t_ms - a.t_ms) as f64 / 1000.0,
        sf: b.sf_ticks.saturating_sub(a.sf_ticks) as f64 / tck,
        tansu: b.tansu_ticks.saturating_sub(a.tansu_ticks) as f64 / tck,
        me: b.me_ticks.saturating_sub(a.me_ticks) as f64 / tck,
        machine: b.machine_ticks.saturating_sub(a.machine_ticks) as f64 / tck,
        steal: b.steal_ticks.saturating_sub(a.steal_ticks) as f64 / tck,
    }
}

fn per_m(cpu: f64, n: u64) -> f64 {
    cpu / (n.max(1) as f64 / 1e6)
}

// ---------------------------------------------------------------- the run

struct Calibration {
    paced: Paced,
    cpu: PhaseCpu,
}

struct CatchUp {
    /// Process start to the first covering checkpoint.
    secs: f64,
    /// Process start to ready (metrics endpoint answers).
    startup_secs: Option<f64>,
    commits: u64,
    mid_rate: Option<(f64, u64, u64)>,
    /// Ready to skipflow going idle (waiting for the commit boundary).
    busy: Option<f64>,
    busy_cpu: Option<PhaseCpu>,
    cpu: PhaseCpu,
}

struct Live {
    paced: Paced,
    lag_at_stop: i64,
    /// Why not every live record became visible.
    not_done: Option<String>,
    /// Records published per second between consecutive commits of the live phase.
    between: Vec<f64>,
    /// Records delivered by then but not in the checkpoint, at each live
    /// commit, and whether producing was still going on.
    lags: Vec<(i64, bool)>,
    latencies: Vec<Option<f64>>,
    rows: Vec<(u64, u64)>,
    sf_work: Option<SfWork>,
    drain_secs: Option<f64>,
    invisible: u64,
    fresh: Vec<(i64, u64)>,
    fresh_ack: Vec<(i64, u64)>,
    cpu: PhaseCpu,
}

/// skipflow's CPU between two checkpoints and the records published between them.
struct SfWork {
    records: u64,
    cpu: PhaseCpu,
}

struct Measured {
    catch_up: Option<CatchUp>,
    catch_up_failed: Option<String>,
    live: Option<Live>,
}

fn run(args: &Args) -> Result<()> {
    let tck = clk_tck();
    let interval_s = humantime::parse_duration(&args.commit_interval)
        .with_context(|| format!("--commit-interval {}", args.commit_interval))?
        .as_secs_f64();
    let skipflow_bin = PathBuf::from(env!("CARGO_BIN_EXE_skipflow"));
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let today = now_ms().div_euclid(MS_PER_DAY) as i32;
    let opts: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let command = format!("cargo bench --bench continuous -- {}", opts.join(" "));
    println!(
        "bench-continuous: {cores} cores, {} MB available; skipflow = {}; tansu = {}",
        mem_available_mb(),
        skipflow_bin.display(),
        tansu_binary()?.display()
    );
    println!("command: {command}");
    println!("skipflow source: {}", source_version());

    // Generate everything first: the generator's CPU stays out of the phases.
    let t = Instant::now();
    let cutoff = now_ms();
    let mut backlog = Vec::new();
    let mut dropped_future = 0u64;
    let mut dropped_far_future = 0u64;
    generate(
        &GenConfig {
            users: args.users,
            days: args.days,
            seed: args.seed,
            dirty: true,
            start_day: today - args.days as i32,
        },
        &mut |r: GenRecord| {
            if r.arrival_ms > cutoff {
                dropped_future += 1;
            } else if args.no_far_future && is_far_future(&r) {
                dropped_far_future += 1;
            } else {
                backlog.push(r);
            }
        },
    );
    if let Some(n) = args.events {
        backlog.truncate(n);
    }
    let n_backlog = backlog.len() as u64;
    println!(
        "generated backlog: {} records ({} users, {} days ending yesterday, dirty; {} arriving after now dropped, {} far-future listens dropped) in {:.1} s",
        thousands(n_backlog as f64),
        args.users,
        args.days,
        dropped_future,
        dropped_far_future,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut pool = Vec::new();
    if args.live_secs > 0 || args.calibrate_secs > 0 {
        generate(
            &GenConfig {
                users: args.live_users,
                days: 1,
                seed: args.seed + 1,
                dirty: true,
                start_day: today,
            },
            &mut |r: GenRecord| {
                if args.no_far_future && is_far_future(&r) {
                    dropped_far_future += 1;
                } else {
                    pool.push(PoolRec::new(r))
                }
            },
        );
        println!(
            "generated live pool: {} records ({} users, one day; {} with event id, user id and ts rewritten per pass; far-future listens dropped so far: {}) in {:.1} s",
            thousands(pool.len() as f64),
            args.live_users,
            thousands(pool.iter().filter(|p| p.eid.is_some() && p.uid.is_some() && p.ts.is_some()).count() as f64),
            dropped_far_future,
            t.elapsed().as_secs_f64()
        );
    }

    let dir = tempfile::Builder::new()
        .prefix("skipflow-bench-continuous.")
        .tempdir()?;
    register_dir(dir.path());
    let out = dir.path().join("out");
    let addr = format!("127.0.0.1:{}", free_port()?);
    let mut tansu = start_tansu(&addr, &dir.path().join("tansu.log"))?;
    create_topic(&addr, TOPIC, args.partitions)?;
    println!(
        "tansu {} (memory engine) on {addr}, topic {TOPIC} with {} partitions",
        tansu.pid, args.partitions
    );
    let tansu_pid = tansu.pid.to_string();
    let pre = Pids {
        skipflow: "0".into(),
        tansu: tansu_pid.clone(),
    };

    // ---- calibration: producer and broker alone
    let calibration = if args.calibrate_secs > 0 {
        create_topic(&addr, CALIBRATION_TOPIC, args.partitions)?;
        println!(
            "calibration: {} rec/s for {} s to topic {CALIBRATION_TOPIC} (producer and tansu only)",
            thousands(args.rate as f64),
            args.calibrate_secs
        );
        let prod = producer(&addr, args.linger_ms, true)?;
        let a = sample(&pre);
        let paced = produce_paced(
            &prod,
            CALIBRATION_TOPIC,
            &pool,
            args,
            args.calibrate_secs,
            "calibration",
        )?;
        let b = sample(&pre);
        let cpu = phase_cpu(&a, &b, tck);
        println!(
            "calibration: sent {} rec/s, delivered {} rec/s, ack p50/p99 {}/{} ms; tansu {:.2} cores, producer {:.2} cores",
            thousands(paced.sent as f64 / paced.send_secs),
            thousands(paced.delivered as f64 / paced.delivered_secs),
            paced.ack_p50,
            paced.ack_p99,
            cpu.tansu / cpu.secs,
            cpu.me / cpu.secs
        );
        delete_topic(&addr, CALIBRATION_TOPIC);
        Some(Calibration { paced, cpu })
    } else {
        None
    };

    // ---- backlog: produce everything
    let prod = producer(&addr, args.linger_ms, false)?;
    let s0 = sample(&pre);
    let t = Instant::now();
    for (i, r) in backlog.iter().enumerate() {
        send(&prod.p, TOPIC, &r.key, r.value.as_deref(), r.arrival_ms)?;
        if i % 10_000 == 0 {
            prod.p.poll(Duration::ZERO);
        }
    }
    prod.p
        .flush(Duration::from_secs(600))
        .map_err(|e| anyhow!("flushing the backlog: {e}"))?;
    let produce_secs = t.elapsed().as_secs_f64();
    let s1 = sample(&pre);
    let backlog_ends = {
        let d = prod.delivered.lock().unwrap();
        if d.failed > 0 {
            bail!("{} backlog records not delivered: {:?}", d.failed, d.first_error);
        }
        d.ends.clone()
    };
    drop(backlog);
    let produce_cpu = phase_cpu(&s0, &s1, tck);
    let backlog_produce_rate = n_backlog as f64 / produce_secs;
    println!(
        "backlog produced: {} records in {:.1} s = {} records/s (tansu {:.1} CPU s, producer {:.1} CPU s); tansu RSS {:.0} MB",
        thousands(n_backlog as f64),
        produce_secs,
        thousands(backlog_produce_rate),
        produce_cpu.tansu,
        produce_cpu.me,
        s1.tansu_rss_kb as f64 / 1024.0
    );

    // ---- start skipflow
    let metrics_addr = format!("127.0.0.1:{}", free_port()?);
    let sf_log = dir.path().join("skipflow.log");
    let log = std::fs::File::create(&sf_log)?;
    let out_s = out.display().to_string();
    let workers = args.workers.to_string();
    let sf_args = [
        "run",
        "--brokers",
        &addr,
        "--topic",
        TOPIC,
        "--output",
        &out_s,
        "--commit-interval",
        &args.commit_interval,
        "--workers",
        &workers,
        "--metrics-addr",
        &metrics_addr,
        "--start",
        "earliest",
        "--log",
        &args.log,
    ];
    let epoch = ["--epoch", args.epoch.as_str()];
    let start_ms = now_ms();
    let child = Command::new(&skipflow_bin)
        .args(sf_args)
        .args(if args.epoch.is_empty() { &[][..] } else { &epoch[..] })
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting skipflow")?;
    let mut sf = Proc::new("skipflow", child);
    println!(
        "skipflow {} started: {} {}",
        sf.pid,
        skipflow_bin.display(),
        sf_args.join(" ")
    );
    let mon = Arc::new(Mutex::new(Monitor::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = spawn_monitor(
        MonitorCfg {
            out: out.clone(),
            pids: Pids {
                skipflow: sf.pid.to_string(),
                tansu: tansu_pid.clone(),
            },
            metrics_addr: metrics_addr.clone(),
            delivered: prod.delivered.clone(),
            start_ms,
            tck,
            kill_below_mb: args.min_free_mb / 2,
            machine_ticks0: machine_ticks().0,
            interval_s,
        },
        mon.clone(),
        stop.clone(),
    );
    let result = measure(
        args,
        &mon,
        &mut sf,
        &prod,
        &pool,
        &backlog_ends,
        n_backlog,
        start_ms,
        tck,
    );

    // ---- stop everything
    std::thread::sleep(Duration::from_secs(1));
    let final_text = scrape(&metrics_addr).unwrap_or_default();
    let stopping = Instant::now();
    let status = sf.terminate(Duration::from_secs(300));
    let stop_secs = stopping.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let _ = monitor.join();
    let tansu_exited = tansu.exited();
    drop(tansu);
    let log_text = std::fs::read_to_string(&sf_log).unwrap_or_default();
    let m = mon.lock().unwrap();
    let peak_kb = m.samples.iter().map(|s| s.sf_hwm_kb).max().unwrap_or(0);
    let tansu_peak_kb = m.samples.iter().map(|s| s.tansu_rss_kb).max().unwrap_or(0);
    let killed = m.killed_low_memory;
    let r = result?;

    // ---- report
    println!();
    match &status {
        Ok(s) => println!("skipflow stopped after SIGTERM in {stop_secs:.1} s: {s}"),
        Err(e) => println!("WARNING: skipflow stop: {e:#}"),
    }
    if let Some(free) = killed {
        println!("WARNING: skipflow was killed (SIGKILL) at MemAvailable {free} MB: out of memory");
    }
    if let Some(s) = tansu_exited {
        println!("WARNING: tansu had exited during the run ({s})");
    }
    let problems: Vec<&str> = log_text
        .lines()
        .filter(|l| {
            let u = l.to_ascii_uppercase();
            u.contains("WARN") || u.contains("ERROR") || u.contains("PANICK")
        })
        .collect();
    println!(
        "skipflow stderr: {} lines, {} warnings/errors{}",
        log_text.lines().count(),
        problems.len(),
        if problems.is_empty() { "" } else { ":" }
    );
    for l in problems.iter().take(15) {
        println!("  | {}", &l[..l.len().min(300)]);
    }
    println!("skipflow metrics before the stop:");
    for l in final_text.lines().filter(|l| {
        [
            "skipflow_events",
            "skipflow_commits_total",
            "skipflow_open_days",
            "skipflow_kafka_errors_total",
            "skipflow_arrangement_records",
            "skipflow_last_commit_duration_seconds",
            "skipflow_resident_memory_bytes",
        ]
        .iter()
        .any(|p| l.starts_with(p))
    }) {
        println!("  {l}");
    }

    let row = |k: &str, v: String| println!("| {k:<64} | {v} |");
    println!();
    println!("| {:<64} | value |", "measure");
    println!("|{}|---|", "-".repeat(66));
    row(
        "machine: cores / skipflow workers / commit interval",
        format!("{cores} / {} / {}", args.workers, args.commit_interval),
    );
    if let Some(c) = &calibration {
        let p = &c.paced;
        row(
            "calibration (no skipflow): target rate",
            format!("{} rec/s for {} s", thousands(args.rate as f64), args.calibrate_secs),
        );
        row(
            "  sent / delivered rate",
            format!(
                "{} / {} rec/s",
                thousands(p.sent as f64 / p.send_secs),
                thousands(p.delivered as f64 / p.delivered_secs)
            ),
        );
        row("  ack latency p50 / p99", format!("{} / {} ms", p.ack_p50, p.ack_p99));
        row("  cores", c.cpu.cores(cores));
    }
    row("backlog records (all partitions)", thousands(n_backlog as f64));
    row(
        "backlog produce rate, as fast as possible",
        format!("{} rec/s", thousands(backlog_produce_rate)),
    );
    row("  cores", produce_cpu.cores(cores));
    row(
        "  CPU s per M records: tansu / producer",
        format!(
            "{:.2} / {:.2}",
            per_m(produce_cpu.tansu, n_backlog),
            per_m(produce_cpu.me, n_backlog)
        ),
    );
    match &r.catch_up {
        Some(c) => {
            row(
                "catch-up: skipflow start-up (start to metrics up)",
                c.startup_secs.map_or("-".into(), |s| format!("{s:.1} s")),
            );
            row(
                "catch-up: start to first checkpoint covering the backlog",
                format!("{:.1} s (commit {})", c.secs, c.commits),
            );
            row(
                "catch-up rate, start to covering checkpoint",
                format!("{} ev/s", thousands(n_backlog as f64 / c.secs)),
            );
            if let Some(s) = c.startup_secs {
                row(
                    "catch-up rate, ready to covering checkpoint",
                    format!("{} ev/s", thousands(n_backlog as f64 / (c.secs - s))),
                );
            }
            row(
                "catch-up rate, between commits mid-backlog",
                c.mid_rate
                    .map_or("n/a (fewer than 2 partial commits)".into(), |(r, a, b)| {
                        format!("{} ev/s (commits {a}-{b})", thousands(r))
                    }),
            );
            row(
                "catch-up rate, ready to skipflow idle (estimate)",
                c.busy.map_or("n/a".into(), |s| {
                    format!("{} ev/s ({s:.1} s)", thousands(n_backlog as f64 / s))
                }),
            );
            if let Some(b) = &c.busy_cpu {
                row("  cores while busy", b.cores(cores));
            }
            row(
                "catch-up CPU s per M events: skipflow",
                format!("{:.2} ({:.1} CPU s)", per_m(c.cpu.sf, n_backlog), c.cpu.sf),
            );
            row(
                "catch-up CPU s per M events: tansu (serving the reads)",
                format!("{:.2} ({:.1} CPU s)", per_m(c.cpu.tansu, n_backlog), c.cpu.tansu),
            );
        }
        None => row(
            "catch-up",
            format!("NOT covered: {}", r.catch_up_failed.as_deref().unwrap_or("?")),
        ),
    }
    if let Some(l) = &r.live {
        let p = &l.paced;
        row(
            "live: target rate",
            format!("{} rec/s for {} s", thousands(args.rate as f64), args.live_secs),
        );
        if let Some(free) = p.low_memory {
            row("live: STOPPED EARLY, MemAvailable (MB)", free.to_string());
        }
        row(
            "live: sent / delivered rate",
            format!(
                "{} / {} rec/s",
                thousands(p.sent as f64 / p.send_secs),
                thousands(p.delivered as f64 / p.delivered_secs)
            ),
        );
        row(
            "live: records delivered (sent in / all acked after)",
            format!(
                "{} ({:.1} s / {:.1} s)",
                thousands(p.delivered as f64),
                p.send_secs,
                p.delivered_secs
            ),
        );
        row(
            "live: producer behind the target at the end",
            format!("{} records ({} queue-full waits)", thousands(p.behind as f64), p.waits),
        );
        row(
            "live: ack latency p50 / p99",
            format!("{} / {} ms", p.ack_p50, p.ack_p99),
        );
        row(
            "live: delivered, not in a checkpoint, when sending ended",
            thousands(l.lag_at_stop as f64),
        );
        row(
            "live: all records visible",
            match l.drain_secs {
                Some(d) => format!("yes, {d:.1} s after the last ack"),
                None => format!(
                    "NO ({}): {} never visible",
                    l.not_done.as_deref().unwrap_or("?"),
                    thousands(l.invisible as f64)
                ),
            },
        );
        let mut b = l.between.clone();
        b.sort_by(f64::total_cmp);
        row(
            "live: skipflow published per s between commits min/med/max",
            if b.is_empty() {
                "-".into()
            } else {
                format!(
                    "{} / {} / {}",
                    thousands(b[0]),
                    thousands(b[b.len() / 2]),
                    thousands(b[b.len() - 1])
                )
            },
        );
        row(
            "live: delivered, not yet visible, at each commit (in s of input)",
            l.lags
                .iter()
                .map(|(x, during)| format!("{:.1}{}", *x as f64 / args.rate as f64, if *during { "" } else { "*" }))
                .collect::<Vec<_>>()
                .join(" ")
                + " (* after producing stopped)",
        );
        row(
            "live: commit latency, boundary to checkpoint, per commit (s)",
            l.latencies
                .iter()
                .map(|x| x.map_or("?".into(), |v| format!("{v:.1}")))
                .collect::<Vec<_>>()
                .join(" "),
        );
        row(
            "live: Parquet rewritten per commit (M rows/MB)",
            l.rows
                .iter()
                .map(|(r, b)| format!("{:.1}/{:.0}", *r as f64 / 1e6, *b as f64 / 1e6))
                .collect::<Vec<_>>()
                .join(" "),
        );
        let ci = humantime::parse_duration(&args.commit_interval).map_or(30.0, |d| d.as_secs_f64());
        row(
            "live: Parquet rows written per record published, per commit",
            write_amplification(&l.rows, &l.between, ci),
        );
        let during: Vec<i64> = l.lags.iter().filter(|x| x.1).map(|x| x.0).collect();
        let growth = match (during.first(), during.last()) {
            (Some(a), Some(b)) if during.len() >= 2 => (b - a) as f64 / args.rate as f64,
            _ => 0.0,
        };
        let kept_up = l.drain_secs.is_some_and(|d| d <= ci + 10.0) && p.behind < args.rate && growth <= 5.0;
        row(
            "live: backlog growth over the live commits (s of input)",
            format!("{growth:+.1}"),
        );
        row(
            "live: kept up (no growing backlog; drained within interval+10 s)",
            if kept_up { "yes" } else { "NO" }.into(),
        );
        let q = |v: &[(i64, u64)], x: f64| quantile(v, x).map_or("-".into(), |ms| format!("{:.1}", ms as f64 / 1000.0));
        row(
            &format!(
                "freshness p50/p99/max, message ts to visible (s; {} rec)",
                thousands(l.fresh.iter().map(|x| x.1).sum::<u64>() as f64)
            ),
            format!("{} / {} / {}", q(&l.fresh, 0.5), q(&l.fresh, 0.99), q(&l.fresh, 1.0)),
        );
        row(
            "freshness p50/p99/max, broker ack to visible (s)",
            format!(
                "{} / {} / {}",
                q(&l.fresh_ack, 0.5),
                q(&l.fresh_ack, 0.99),
                q(&l.fresh_ack, 1.0)
            ),
        );
        row(
            "live CPU s per M events published: skipflow",
            l.sf_work.as_ref().map_or("-".into(), |w| {
                format!(
                    "{:.2} ({:.2} cores; {} in {:.0} s)",
                    per_m(w.cpu.sf, w.records),
                    w.cpu.sf / w.cpu.secs,
                    thousands(w.records as f64),
                    w.cpu.secs
                )
            }),
        );
        if let Some(w) = &l.sf_work {
            row("  cores (skipflow window)", w.cpu.cores(cores));
        }
        for (who, cpu) in [("tansu", l.cpu.tansu), ("producer (this process)", l.cpu.me)] {
            row(
                &format!("live CPU s per M events delivered: {who}"),
                format!("{:.2} ({:.2} cores)", per_m(cpu, p.delivered), cpu / l.cpu.secs),
            );
        }
    }
    row(
        "state per open-day listen: RSS at the last commit / listens held",
        state_per_listen(&final_text),
    );
    row(
        "skipflow peak RSS (VmHWM)",
        format!("{:.0} MB", peak_kb as f64 / 1024.0),
    );
    row("tansu peak RSS", format!("{:.0} MB", tansu_peak_kb as f64 / 1024.0));
    println!();
    println!("command: {command}");
    let mut phases: Vec<(&str, &PhaseCpu)> = vec![("backlog produce", &produce_cpu)];
    if let Some(c) = &calibration {
        phases.push(("calibration", &c.cpu));
    }
    if let Some(b) = r.catch_up.as_ref().and_then(|c| c.busy_cpu.as_ref()) {
        phases.push(("catch-up", b));
    }
    if let Some(w) = r.live.as_ref().and_then(|l| l.sf_work.as_ref()) {
        phases.push(("live", &w.cpu));
    }
    for (name, c) in phases {
        if c.other_cores() > 0.2 {
            println!(
                "WARNING: other processes used {:.2} cores during the {name} phase: the machine was not quiet, \
                 the numbers are pessimistic; rerun on a quiet machine",
                c.other_cores()
            );
        }
    }
    if args.keep {
        let kept = dir.keep();
        println!("kept: {}", kept.display());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn measure(
    args: &Args,
    mon: &Mutex<Monitor>,
    sf: &mut Proc,
    prod: &Prod,
    pool: &[PoolRec],
    backlog_ends: &BTreeMap<i32, i64>,
    n_backlog: u64,
    start_ms: i64,
    tck: f64,
) -> Result<Measured> {
    let timeout = Duration::from_secs(args.timeout_secs);
    println!("catch-up: waiting for a checkpoint covering the backlog");
    let cover = match wait_covered(mon, backlog_ends, sf, timeout) {
        Wait::Covered(s) => s,
        w => {
            return Ok(Measured {
                catch_up: None,
                catch_up_failed: Some(match w {
                    Wait::Exited(s) => format!("skipflow exited ({s})"),
                    _ => "timeout".into(),
                }),
                live: None,
            })
        }
    };
    let catch_up = {
        let m = mon.lock().unwrap();
        let secs = (cover.seen_ms - start_ms) as f64 / 1000.0;
        let partial: Vec<&Snap> = m
            .snaps
            .iter()
            .filter(|s| s.commits < cover.commits && covered(&s.offsets) > 0)
            .collect();
        let mid_rate = match (partial.first(), partial.last()) {
            (Some(a), Some(b)) if b.seen_ms > a.seen_ms => Some((
                (covered(&b.offsets) - covered(&a.offsets)) as f64 / ((b.seen_ms - a.seen_ms) as f64 / 1000.0),
                a.commits,
                b.commits,
            )),
            _ => None,
        };
        // skipflow idle: where the last stretch of 1 s windows under 0.15
        // cores before the covering checkpoint begins (it waits for the boundary).
        let ready = m.ready_ms.unwrap_or(start_ms);
        let w: Vec<&Sample> = m.samples.iter().filter(|s| s.t_ms <= cover.seen_ms).collect();
        let mut idle_from = None;
        for i in (10..w.len()).rev() {
            let (a, b) = (w[i - 10], w[i]);
            let cores = (b.sf_ticks - a.sf_ticks) as f64 / tck / ((b.t_ms - a.t_ms).max(1) as f64 / 1000.0);
            if cores < 0.15 {
                idle_from = Some(a.t_ms);
            } else if idle_from.is_some() {
                break;
            }
        }
        let busy = idle_from.filter(|&t| t > ready).map(|t| (t - ready) as f64 / 1000.0);
        let busy_cpu = idle_from
            .filter(|&t| t > ready)
            .map(|t| phase_cpu(&sample_at(&m.samples, ready), &sample_at(&m.samples, t), tck));
        let a = Sample {
            t_ms: start_ms,
            sf_ticks: 0,
            ..sample_at(&m.samples, start_ms)
        };
        let b = sample_at(&m.samples, cover.seen_ms);
        CatchUp {
            secs,
            startup_secs: m.ready_ms.map(|r| (r - start_ms) as f64 / 1000.0),
            commits: cover.commits,
            mid_rate,
            busy,
            busy_cpu,
            cpu: phase_cpu(&a, &b, tck),
        }
    };
    println!(
        "catch-up: {} events covered {:.1} s after start ({} ev/s)",
        thousands(n_backlog as f64),
        catch_up.secs,
        thousands(n_backlog as f64 / catch_up.secs)
    );
    if args.live_secs == 0 {
        return Ok(Measured {
            catch_up: Some(catch_up),
            catch_up_failed: None,
            live: None,
        });
    }

    // ---- live phase
    println!(
        "live: producing {} rec/s for {} s from a pool of {} records",
        thousands(args.rate as f64),
        args.live_secs,
        thousands(pool.len() as f64)
    );
    prod.p.context().timed.store(true, Ordering::Relaxed);
    let paced = produce_paced(prod, TOPIC, pool, args, args.live_secs, "live")?;
    let (live_ends, runs) = {
        let d = prod.delivered.lock().unwrap();
        (d.ends.clone(), d.runs.clone())
    };
    println!(
        "live: sent {} in {:.1} s, all acknowledged {:.1} s after the first send",
        thousands(paced.sent as f64),
        paced.send_secs,
        paced.delivered_secs
    );
    let lag_at_stop = {
        let m = mon.lock().unwrap();
        let last = m.snaps.last().map(|s| s.offsets.clone()).unwrap_or_default();
        live_ends
            .iter()
            .map(|(p, e)| (e - last.get(p).copied().unwrap_or(0)).max(0))
            .sum::<i64>()
    };
    let wait = wait_covered(mon, &live_ends, sf, Duration::from_secs(args.drain_secs));
    let done = match &wait {
        Wait::Covered(s) => Some(s.clone()),
        _ => None,
    };
    let not_done = match wait {
        Wait::Covered(_) => None,
        Wait::TimedOut => Some("timeout".to_string()),
        Wait::Exited(s) => Some(format!("skipflow exited ({s})")),
    };
    let drain_secs = done.as_ref().map(|s| (s.seen_ms - paced.flushed_ms) as f64 / 1000.0);

    // Freshness: the first checkpoint seen whose offset passes each record.
    let m = mon.lock().unwrap();
    let (mut fresh, mut fresh_ack) = (Vec::new(), Vec::new());
    let mut invisible = 0u64;
    for (p, rs) in &runs {
        let snaps: Vec<(i64, i64)> = m
            .snaps
            .iter()
            .filter(|s| s.seen_ms >= paced.start_ms)
            .map(|s| (s.seen_ms, s.offsets.get(p).copied().unwrap_or(0)))
            .collect();
        let mut k = 0;
        for r in rs {
            let mut o = r.offset;
            let end = r.offset + r.count as i64;
            while o < end {
                while k < snaps.len() && snaps[k].1 <= o {
                    k += 1;
                }
                if k == snaps.len() {
                    invisible += (end - o) as u64;
                    break;
                }
                let upto = end.min(snaps[k].1);
                fresh.push((snaps[k].0 - r.ts, (upto - o) as u64));
                fresh_ack.push((snaps[k].0 - r.acked, (upto - o) as u64));
                o = upto;
            }
        }
    }
    fresh.sort_unstable();
    fresh_ack.sort_unstable();
    // Commit-to-commit throughput while records were pending: what skipflow
    // published per second (its capacity when it falls behind).
    let live_snaps: Vec<&Snap> = m.snaps.iter().filter(|s| s.seen_ms >= paced.start_ms).collect();
    let mut between: Vec<f64> = Vec::new();
    let mut prev = m.snaps.iter().rev().find(|s| s.seen_ms < paced.start_ms);
    for s in &live_snaps {
        if let Some(p) = prev {
            let dt = (s.seen_ms - p.seen_ms) as f64 / 1000.0;
            let d = covered(&s.offsets) - covered(&p.offsets);
            if dt > 1.0 && d > 0 {
                between.push(d as f64 / dt);
            }
        }
        prev = Some(s);
    }
    // (The stop commit comes after this: not in these lists.)
    let latencies: Vec<Option<f64>> = live_snaps.iter().map(|s| s.latency).collect();
    let rows: Vec<(u64, u64)> = live_snaps.iter().map(|s| (s.rows, s.bytes)).collect();
    let lags: Vec<(i64, bool)> = live_snaps
        .iter()
        .map(|s| (s.pending, s.seen_ms <= paced.flushed_ms))
        .collect();
    // skipflow: from the checkpoint before the live phase to the last one
    // seen, CPU per record published in between (right also when it fell behind).
    let from = m.snaps.iter().rev().find(|s| s.seen_ms < paced.start_ms);
    let to = done.as_ref().or(m.snaps.last());
    let sf_work = match (from, to) {
        (Some(f), Some(t)) if t.seen_ms > f.seen_ms => {
            let (a, b) = (sample_at(&m.samples, f.seen_ms), sample_at(&m.samples, t.seen_ms));
            Some(SfWork {
                records: (covered(&t.offsets) - covered(&f.offsets)) as u64,
                cpu: phase_cpu(&a, &b, tck),
            })
        }
        _ => None,
    };
    // tansu and the producer: while producing.
    let a = sample_at(&m.samples, paced.start_ms);
    let b = sample_at(&m.samples, paced.flushed_ms);
    Ok(Measured {
        catch_up: Some(catch_up),
        catch_up_failed: None,
        live: Some(Live {
            paced,
            lag_at_stop,
            not_done,
            between,
            lags,
            latencies,
            rows,
            sf_work,
            drain_secs,
            invisible,
            fresh,
            fresh_ack,
            cpu: phase_cpu(&a, &b, tck),
        }),
    })
}
