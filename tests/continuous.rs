//! Continuous mode (first slice): batch equals continuous after bursts over
//! several commits, and kill -9 at random moments with restarts reaches the
//! same tables as one batch run.

mod common;

use common::cont::{batch_run, http_get, last_report, sigterm, skipflow_run};
use common::kafka::{produce, records, TOPIC};
use common::output;
use rand::{Rng, SeedableRng};
use skipflow::broker::EmbeddedKafka;
use skipflow::continuous::{self, RunConfig, StartAt};
use skipflow::source::kafka::KafkaInput;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Waits until the checkpoint reflects `total` records of the topic, after
/// more than `after` commits.
fn wait_for_checkpoint(out: &Path, total: i64, after: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(c)) = continuous::read_checkpoint(out) {
            if c.offsets.values().sum::<i64>() >= total && c.commits > after {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the checkpoint never reached {total} records"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn batch_equals_continuous_after_bursts_across_commits() {
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 3).unwrap();
    let recs = records(120, 3, 31);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cont");
    let cfg = RunConfig {
        output: out.clone(),
        kafka: KafkaInput::new(k.bootstrap(), TOPIC),
        start: StartAt::Earliest,
        commit_interval: Duration::from_millis(300),
        finalize_after: Duration::from_secs(3600 * 24 * 365 * 200),
        workers: 2,
        epoch: Duration::from_millis(50),
        metrics_addr: Some("127.0.0.1:0".into()),
        discovery_interval: Duration::from_secs(30),
        topology: Default::default(),
        storage: Default::default(),
        quality: Default::default(),
        standby: false,
        health: Default::default(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (c2, s2) = (cfg.clone(), stop.clone());
    let run = std::thread::spawn(move || continuous::run(&c2, s2));

    // Bursts of random size with pauses: several commits see partial data.
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let mut at = 0;
    while at < recs.len() {
        let n = rng.random_range(1..recs.len() / 3);
        let end = (at + n).min(recs.len());
        produce(k.bootstrap(), &recs[at..end]);
        at = end;
        std::thread::sleep(Duration::from_millis(rng.random_range(100..700)));
    }
    wait_for_checkpoint(&out, recs.len() as i64, 0);
    stop.store(true, Ordering::SeqCst);
    let commits = run.join().unwrap().unwrap();
    assert!(commits >= 3, "{commits} commits");

    let (expected, report) = batch_run(k.bootstrap(), &dir.path().join("batch"));
    let got = output::read_tables(&out);
    let c = &last_report(&out)["counts"];
    assert_eq!(c["read"], recs.len() as u64);
    for k in ["read", "kept", "duplicates", "rejected"] {
        assert_eq!(c[k], serde_json::to_value(&report.counts).unwrap()[k], "{k}");
    }
    assert!(expected.contains_key("user_profile_28d") && expected.contains_key("rejected_events"));
    if let Some(d) = output::diff("continuous", &got, "batch", &expected) {
        panic!("{d}");
    }
}

#[test]
fn kill_9_at_random_moments_then_restart_reaches_the_batch_tables() {
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 4).unwrap();
    let recs = records(150, 3, 77);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cont");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let spawn = || {
        skipflow_run(k.bootstrap(), &out)
            .args(["--commit-interval", "200ms", "--epoch", "40ms"])
            // The dirty data arrives up to 3 days late: no day may finalize
            // mid-test, or when it does would depend on timing.
            .args(["--finalize-after", "1000000h"])
            .args(["--metrics-addr", &metrics_addr])
            .spawn()
            .unwrap()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let chunks = 5;
    let per = recs.len() / chunks + 1;
    for (i, chunk) in recs.chunks(per).enumerate() {
        produce(k.bootstrap(), chunk);
        let mut child = spawn();
        std::thread::sleep(Duration::from_millis(rng.random_range(400..2500)));
        child.kill().unwrap(); // SIGKILL: no final commit
        child.wait().unwrap();
        eprintln!("killed run {i}");
    }
    // The killed runs committed something: the restarts below replay from a checkpoint.
    let ck = continuous::read_checkpoint(&out)
        .unwrap()
        .expect("a killed run left a checkpoint");
    assert!(ck.commits > 0 && ck.offsets.values().sum::<i64>() > 0, "{ck:?}");
    // A last run catches up, then stops on SIGTERM after its final commit.
    let mut child = spawn();
    wait_for_checkpoint(&out, recs.len() as i64, ck.commits);
    // Metrics: caught up, so no lag; every record read once by this process.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let t = http_get(&metrics_addr, "/metrics");
        if t.lines().filter(|l| l.starts_with("skipflow_consumer_lag{")).count() == 4 || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.contains("skipflow_commits_total"), "{text}");
    let gauge = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    let took = gauge("skipflow_last_commit_duration_seconds");
    assert!(took > 0.0 && took < 60.0, "last commit took {took} s");
    assert!(gauge("skipflow_last_commit_timestamp_seconds") > 1.7e9);
    for l in text.lines().filter(|l| l.starts_with("skipflow_consumer_lag{")) {
        assert!(l.ends_with(" 0"), "caught up, yet {l}");
    }
    assert!(
        text.contains(&format!("skipflow_events{{class=\"read\"}} {}", recs.len())),
        "{text}"
    );
    sigterm(&child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));

    let expected = batch_run(k.bootstrap(), &dir.path().join("batch")).0;
    if let Some(d) = output::diff("continuous after kills", &output::read_tables(&out), "batch", &expected) {
        panic!("{d}");
    }
}

/// A stop before the first commit interval ends: the final commit alone
/// publishes everything read so far (its checkpoint names those records), and
/// a restart completes the rest: the tables equal one batch run.
#[test]
fn the_final_commit_on_stop_publishes_everything_it_read() {
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 2).unwrap();
    let recs = records(80, 2, 5);
    produce(k.bootstrap(), &recs);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cont");
    let cfg = |interval_ms: u64| RunConfig {
        output: out.clone(),
        kafka: KafkaInput::new(k.bootstrap(), TOPIC),
        start: StartAt::Earliest,
        commit_interval: Duration::from_millis(interval_ms),
        finalize_after: Duration::from_secs(3600 * 24 * 365 * 200),
        workers: 2,
        epoch: Duration::from_millis(10),
        metrics_addr: None,
        discovery_interval: Duration::from_secs(30),
        topology: Default::default(),
        storage: Default::default(),
        quality: Default::default(),
        standby: false,
        health: Default::default(),
    };
    // Only the final commit: the interval is far away.
    let stop = Arc::new(AtomicBool::new(false));
    let (c1, s1) = (cfg(600_000), stop.clone());
    let run = std::thread::spawn(move || continuous::run(&c1, s1));
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::SeqCst);
    assert_eq!(run.join().unwrap().unwrap(), 1, "one commit: the final one");
    let ck = continuous::read_checkpoint(&out).unwrap().unwrap();
    assert!(ck.offsets.values().sum::<i64>() > 0, "{ck:?}");
    let first = output::read_tables(&out);
    assert!(
        first.contains_key("user_daily"),
        "the final commit published the listens it read"
    );
    // The restart reads the rest.
    let stop = Arc::new(AtomicBool::new(false));
    let (c2, s2) = (cfg(100), stop.clone());
    let run = std::thread::spawn(move || continuous::run(&c2, s2));
    wait_for_checkpoint(&out, recs.len() as i64, ck.commits);
    stop.store(true, Ordering::SeqCst);
    run.join().unwrap().unwrap();
    let (expected, _) = batch_run(k.bootstrap(), &dir.path().join("batch"));
    if let Some(d) = output::diff("continuous", &output::read_tables(&out), "batch", &expected) {
        panic!("{d}");
    }
}

/// semantics.md: two runs must not write the same output directory at once;
/// a second continuous run fails at start with a clear message (exit 3).
#[test]
fn a_second_run_on_the_same_output_fails_at_start() {
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cont");
    let mut first = skipflow_run(k.bootstrap(), &out)
        .args(["--commit-interval", "200ms"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while continuous::read_checkpoint(&out).ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "the first run never committed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut child = skipflow_run(k.bootstrap(), &out)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a second run on a locked output directory kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = child.wait_with_output().unwrap();
    let msg = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(3), "{msg}");
    assert!(msg.contains("locked"), "{msg}");
    sigterm(&first);
    assert_eq!(first.wait().unwrap().code(), Some(0));
}

#[test]
fn a_standby_on_a_local_output_takes_over_when_the_primary_dies() {
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 3).unwrap();
    let recs = records(60, 2, 37);
    let half = recs.len() / 2;
    produce(k.bootstrap(), &recs[..half]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cont");
    let flags = [
        "--commit-interval",
        "300ms",
        "--finalize-after",
        "1000000h",
        "--workers",
        "2",
    ];
    let mut primary = skipflow_run(k.bootstrap(), &out).args(flags).spawn().unwrap();
    wait_for_checkpoint(&out, half as i64, 0);
    let log = dir.path().join("standby.log");
    let mut standby = skipflow_run(k.bootstrap(), &out)
        .args(flags)
        .args(["--standby", "--log", "info"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(standby.try_wait().unwrap().is_none(), "the standby waits for the lock");
    primary.kill().unwrap();
    primary.wait().unwrap();
    produce(k.bootstrap(), &recs[half..]);
    wait_for_checkpoint(&out, recs.len() as i64, 0);
    assert!(std::fs::read_to_string(&log).unwrap().contains("took over"));
    sigterm(&standby);
    assert!(standby.wait().unwrap().success());
    let (expected, _) = batch_run(k.bootstrap(), &dir.path().join("batch"));
    if let Some(d) = output::diff("standby", &output::read_tables(&out), "batch", &expected) {
        panic!("{d}");
    }
}
