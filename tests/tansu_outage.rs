//! Network outage in continuous mode (issue 4): tansu on SQLite storage is
//! killed with SIGKILL while `skipflow run` follows its topic, and restarted
//! on the same port and database a few seconds later. The job keeps running,
//! says it is retrying (a warning, an error metric), catches up once the
//! broker answers, and its tables equal one batch run over the whole topic:
//! nothing lost, nothing counted twice.

mod common;

use common::cont::{batch_run, http_get, last_report, sigterm, skipflow_run};
use common::kafka::{produce, records};
use common::output;
use common::tansu::{free_port, tail, Tansu};
use skipflow::continuous;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// Deadline of every wait: only there to avoid hanging.
const PATIENCE: Duration = Duration::from_secs(120);

/// The consumers' Kafka errors (summed over the readers, updated at each commit).
const ERRORS: &str = "skipflow_kafka_errors_total{kind=\"consumer\"}";

/// The `skipflow run` subprocess, its stderr in a file; killed when dropped.
struct Job {
    child: Child,
    log: PathBuf,
    metrics_addr: String,
}

impl Job {
    fn spawn(brokers: &str, out: &Path, log: PathBuf) -> Job {
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let child = skipflow_run(brokers, out)
            .args(["--commit-interval", "1s", "--finalize-after", "1000000h"])
            .args(["--workers", "2", "--start", "earliest", "--log", "info"])
            .args(["--metrics-addr", &metrics_addr])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting skipflow run");
        Job {
            child,
            log,
            metrics_addr,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Context for a failure: the job's last log lines.
    fn context(&self) -> String {
        format!("--- skipflow run stderr (tail) ---\n{}", tail(&self.stderr(), 60))
    }

    /// Panics (with the log tail) if the job has exited.
    fn assert_running(&mut self, when: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("skipflow run exited ({status}) {when}\n{}", self.context());
        }
    }

    /// Waits, with the job running, until `done` holds.
    fn wait_until(&mut self, what: &str, t: &Tansu, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done() {
            self.assert_running(&format!("while waiting for {what}"));
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}\n{}",
                self.context(),
                t.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn metrics(&self) -> String {
        http_get(&self.metrics_addr, "/metrics")
    }

    /// SIGTERM, then the exit status (the job commits once more first).
    fn terminate(&mut self) -> std::process::ExitStatus {
        sigterm(&self.child);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "skipflow run did not exit after SIGTERM\n{}",
                self.context()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Records covered by the checkpoint (offsets are next offsets, from 0) and commits.
fn checkpoint(out: &Path) -> (i64, u64) {
    match continuous::read_checkpoint(out) {
        Ok(Some(c)) => (c.offsets.values().sum(), c.commits),
        _ => (0, 0),
    }
}

/// The value of the first sample of `metric` (name with labels) in a Prometheus text.
fn sample(text: &str, metric: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(metric)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The `skipflow_*` lines of a Prometheus text.
fn skipflow_lines(text: &str) -> String {
    text.lines()
        .filter(|l| l.starts_with("skipflow_"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn broker_killed_and_restarted_mid_run_the_job_retries_and_reaches_the_batch_tables() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cont");
    let mut t = Tansu::sqlite(&dir.path().join("tansu"));
    t.create_topic(3);
    let recs = records(60, 3, 23);
    let half = recs.len() / 2;
    produce(&t.addr, &recs[..half]);

    // The job reads the first half.
    let log_path = dir.path().join("job.log");
    let mut job = Job::spawn(&t.addr, &out, log_path.clone());
    job.wait_until("the checkpoint to cover the first half", &t, || {
        checkpoint(&out).0 >= half as i64
    });
    let (_, commits_before) = checkpoint(&out);

    // The outage (a few seconds, and until the error metric shows it): the
    // job keeps running and committing, with nothing new to read.
    t.kill9();
    eprintln!("{} tansu killed", chrono::Utc::now());
    let outage = Instant::now();
    let mut errors_during = None;
    while outage.elapsed() < Duration::from_secs(4) || errors_during.is_none() {
        job.assert_running("during the broker outage");
        if errors_during.is_none() {
            errors_during = sample(&job.metrics(), ERRORS).filter(|v| *v > 0.0);
        }
        assert!(
            outage.elapsed() < PATIENCE,
            "{ERRORS} never rose during the outage; the job's metrics:\n{}\n{}",
            skipflow_lines(&job.metrics()),
            job.context()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (during, commits_during) = checkpoint(&out);
    assert_eq!(during, half as i64, "the checkpoint moved without a broker");
    assert!(
        commits_during > commits_before,
        "no commit during the outage ({commits_before} before, {commits_during} after)\n{}",
        job.context()
    );
    eprintln!("commits: {commits_before} before the outage, {commits_during} at its end; {ERRORS} = {errors_during:?}");
    assert!(
        job_log_contains(&log_path, "retrying until the broker answers"),
        "no warning that the job retries\n{}",
        job.context()
    );

    // The broker is back on the same port and database (the topic and the
    // first half survive a kill -9); the second half follows.
    t.start();
    eprintln!("{} tansu restarted", chrono::Utc::now());
    t.wait_for_topic(3);
    produce(&t.addr, &recs[half..]);
    job.wait_until("the checkpoint to cover every record", &t, || {
        checkpoint(&out).0 >= recs.len() as i64
    });
    eprintln!("{} caught up", chrono::Utc::now());
    job.wait_until("the log line saying reading resumed", &t, || {
        job_log_contains(&log_path, "Kafka answers again; reading resumed")
    });
    let errors = sample(&job.metrics(), ERRORS);
    assert!(
        errors >= errors_during,
        "{ERRORS} went down: {errors:?} after {errors_during:?}"
    );

    let status = job.terminate();
    let log = job.stderr();
    eprintln!(
        "--- skipflow run stderr: {} lines, {} WARN, {} ERROR ---\n{}",
        log.lines().count(),
        log.lines().filter(|l| l.contains(" WARN ")).count(),
        log.lines().filter(|l| l.contains(" ERROR ")).count(),
        tail(&log, 200)
    );
    assert_eq!(status.code(), Some(0), "exit after SIGTERM\n{}", job.context());

    // Nothing lost, nothing counted twice.
    let c = &last_report(&out)["counts"];
    let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("counts.{k} in {c}"));
    assert_eq!(n("read"), recs.len() as u64, "read: {c}");
    assert_eq!(
        n("read"),
        n("kept") + n("duplicates") + n("rejected") + n("out_of_range") + n("late"),
        "accounting identity: {c}"
    );
    let (expected, report) = batch_run(&t.addr, &dir.path().join("batch"));
    assert_eq!(
        report.counts.read,
        recs.len() as u64,
        "the batch run read the whole topic"
    );
    let batch_counts = serde_json::to_value(&report.counts).unwrap();
    for k in ["read", "kept", "duplicates", "rejected"] {
        assert_eq!(c[k], batch_counts[k], "{k}: continuous {c}, batch {batch_counts}");
    }
    assert!(expected.contains_key("user_profile_28d") && expected.contains_key("rejected_events"));
    if let Some(d) = output::diff(
        "continuous through the outage",
        &output::read_tables(&out),
        "batch",
        &expected,
    ) {
        panic!("{d}");
    }
}

fn job_log_contains(log: &Path, s: &str) -> bool {
    std::fs::read_to_string(log).is_ok_and(|l| l.contains(s))
}
