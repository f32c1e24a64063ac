#![allow(dead_code)]
//! Helpers of the continuous-mode tests: the reference batch run over a
//! topic, run reports, metrics over HTTP, signals, day-ordered data.

use super::kafka::TOPIC;
use super::output::{self, Tables};
use skipflow::batch::{self, BatchConfig, KafkaBatch};
use skipflow::generate::{generate, GenConfig, GenRecord};
use skipflow::report::RunReport;
use skipflow::source::kafka::KafkaInput;
use std::path::Path;

pub const DAY: i64 = 86_400_000;

/// `skipflow run` on `TOPIC` at `addr` into `out`, output silenced: callers
/// add the flags of their test and spawn it.
pub fn skipflow_run(addr: &str, out: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_skipflow"));
    c.args(["run", "--brokers", addr, "--topic", TOPIC])
        .arg("--output")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}

/// One batch run over the whole topic into `out`: the tables continuous mode must reach.
pub fn batch_run(addr: &str, out: &Path) -> (Tables, RunReport) {
    let r = batch::run(&BatchConfig {
        output: out.to_path_buf(),
        inputs: vec![],
        kafka: Some(KafkaBatch {
            input: KafkaInput::new(addr, TOPIC),
            skew_ms: 3_600_000,
        }),
        range: None,
        workers: 2,
        progress: false,
        topology: Default::default(),
        storage: Default::default(),
        quality: Default::default(),
    })
    .expect("batch run over the topic");
    (output::read_tables(out), r.report)
}

/// The newest per-commit run report of a continuous output directory.
pub fn last_report(out: &Path) -> serde_json::Value {
    let mut names: Vec<_> = std::fs::read_dir(out.join("_runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    serde_json::from_slice(&std::fs::read(names.last().unwrap()).unwrap()).unwrap()
}

/// The accounting identity of a report's counts.
pub fn balanced(c: &serde_json::Value) -> bool {
    let n = |k: &str| c[k].as_u64().unwrap();
    n("read") == n("kept") + n("duplicates") + n("rejected") + n("out_of_range") + n("late")
}

/// A plain HTTP GET (the metrics endpoint); empty when nothing listens.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// Sends SIGTERM (a graceful stop: final commit, exit 0).
pub fn sigterm(child: &std::process::Child) {
    // SAFETY: kill(2) on a child we own.
    unsafe { kill(child.id() as i32, 15) };
}

/// Clean generated records (arrival within seconds of `ts`), grouped by
/// arrival day: produced day by day, no listen is ever late.
pub fn days_of_records(users: u32, days: u32, seed: u64) -> Vec<Vec<GenRecord>> {
    let mut by_day: Vec<Vec<GenRecord>> = vec![Vec::new(); days as usize + 1];
    let start = GenConfig::default().start_day as i64;
    generate(
        &GenConfig {
            users,
            days,
            seed,
            dirty: false,
            ..GenConfig::default()
        },
        &mut |r| {
            let d = (r.arrival_ms.div_euclid(DAY) - start).clamp(0, days as i64) as usize;
            by_day[d].push(r)
        },
    );
    by_day
}

/// The checkpoint of a continuous output directory, if written.
pub fn checkpoint(out: &Path) -> Option<serde_json::Value> {
    let b = std::fs::read(out.join(".skipflow/checkpoint.json")).ok()?;
    serde_json::from_slice(&b).ok()
}

/// Records the checkpoint covers: the sum of its next offsets (partitions
/// whose log starts at 0).
pub fn checkpointed(out: &Path) -> i64 {
    checkpoint(out).map_or(0, |c| {
        c["offsets"]
            .as_object()
            .map_or(0, |o| o.values().map(|v| v.as_i64().unwrap()).sum())
    })
}

/// `skipflow run` (2 workers, 300 ms commits, days never final) until its
/// checkpoint covers `total` records, then SIGTERM; asserts exit 0.
pub fn run_to_end(addr: &str, out: &Path, total: usize, extra: &[&str]) {
    let mut c = skipflow_run(addr, out);
    c.args([
        "--commit-interval",
        "300ms",
        "--finalize-after",
        "1000000h",
        "--workers",
        "2",
    ])
    .args(extra);
    let mut child = c.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while checkpointed(out) < total as i64 {
        if let Some(s) = child.try_wait().unwrap() {
            panic!("skipflow run ended early: {s}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run never covered {total} records"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    sigterm(&child);
    let s = child.wait().unwrap();
    assert!(s.success(), "skipflow run exited with {s}");
}
