//! Cluster mode (cli.md, semantics.md "Cluster mode"): several `skipflow`
//! processes on localhost run one job and give the same tables as one
//! process and as the reference; ids stay exact across processes; a process
//! that dies ends the run everywhere with nothing published.

mod common;

use common::cluster::Cluster;
use common::kafka::{produce, read_back, records, TOPIC};
use common::reference::{self, RefConfig};
use common::{harness, output, proc};
use skipflow::batch::{self, BatchConfig};
use skipflow::broker::EmbeddedKafka;
use skipflow::cluster::Topology;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(180);

fn one_process(inputs: &[PathBuf], out: &Path, workers: usize, topology: Topology) {
    batch::run(&BatchConfig {
        output: out.to_path_buf(),
        inputs: inputs.iter().map(|p| p.to_string_lossy().to_string()).collect(),
        kafka: None,
        range: None,
        workers,
        progress: false,
        topology,
        storage: Default::default(),
        quality: Default::default(),
    })
    .expect("batch run");
}

fn assert_same(a: &Path, b: &Path, what: &str) {
    if let Some(d) = output::diff(
        "cluster",
        &output::read_tables(a),
        "one process",
        &output::read_tables(b),
    ) {
        panic!("{what}: {d}");
    }
}

#[test]
fn batch_from_files_on_three_processes_equals_one_process_and_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let file = harness::dirty_file(dir.path(), 150, 4, 61);
    std::env::set_var("SKIPFLOW_RUN_DAY", "2026-11-30");
    let out3 = dir.path().join("three");
    let o = out3.to_str().unwrap().to_string();
    let f = file.to_str().unwrap().to_string();
    let args = ["batch", "--input", &f, "--output", &o, "--workers", "1", "--quiet"];
    let mut c = Cluster::start(dir.path(), 3, &args, &[("SKIPFLOW_RUN_DAY", "2026-11-30")]);
    assert_eq!(c.wait(LIMIT), vec![0, 0, 0], "{}", c.stderr());
    let out1 = dir.path().join("one");
    one_process(std::slice::from_ref(&file), &out1, 2, Topology::Process);
    assert_same(&out3, &out1, "3 processes x 1 worker vs 1 x 2");
    let expected = reference::reference(
        &reference::records_from_ndjson(&f, &std::fs::read(&file).unwrap()),
        &RefConfig {
            range: None,
            run_day: skipflow::dates::parse_day("2026-11-30").unwrap(),
        },
    );
    harness::assert_tables(&out3, &expected.tables);
}

#[test]
fn batch_from_kafka_on_three_processes_equals_the_reference() {
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 5).unwrap();
    let recs = records(120, 3, 62);
    produce(k.bootstrap(), &recs);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = out.to_str().unwrap().to_string();
    let args = [
        "batch",
        "--brokers",
        k.bootstrap(),
        "--topic",
        TOPIC,
        "--output",
        &o,
        "--workers",
        "1",
        "--quiet",
    ];
    let mut c = Cluster::start(dir.path(), 3, &args, &[]);
    assert_eq!(c.wait(LIMIT), vec![0, 0, 0], "{}", c.stderr());
    let read = read_back(k.bootstrap(), 5);
    let expected = reference::reference(
        &read,
        &RefConfig {
            range: None,
            run_day: skipflow::dates::today(),
        },
    );
    harness::assert_tables(&out, &expected.tables);
    let report = common::cont::last_report(&out);
    assert_eq!(report["workers"], 3);
    assert_eq!(report["counts"]["read"].as_u64().unwrap(), expected.read);
}

#[test]
fn names_cross_processes_as_strings_and_colliding_routes_merge_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = harness::dirty_file(dir.path(), 80, 3, 63);
    let plain = dir.path().join("plain");
    one_process(std::slice::from_ref(&file), &plain, 1, Topology::Process);
    // Every exchange through bytes, as between processes: names and event
    // keys travel as strings and are interned again where they arrive.
    let binary = dir.path().join("binary");
    one_process(std::slice::from_ref(&file), &binary, 3, Topology::ProcessBinary);
    assert_same(&binary, &plain, "serialized exchanges");
    // Every string routed by the same hash (a test hook in a child process):
    // all keys meet on one worker, and no two strings are merged.
    let collide = dir.path().join("collide");
    let (f, o) = (file.to_str().unwrap(), collide.to_str().unwrap());
    let (code, _, err) = proc::run(
        &["batch", "--input", f, "--output", o, "--workers", "3", "--quiet"],
        dir.path(),
        &[
            ("SKIPFLOW_ROUTE_HASH", "constant"),
            ("SKIPFLOW_LOG", "skipflow::intern=info"),
        ],
        LIMIT,
    );
    assert_eq!(code, 0, "{err}");
    // One process: its event ids were sealed once every worker had read its
    // input (and the outputs show none was interned after).
    assert_eq!(err.matches("event ids sealed").count(), 1, "{err}");
    assert_same(&collide, &plain, "colliding routes");
}

#[test]
fn a_process_killed_mid_batch_ends_every_process_with_nothing_published() {
    let dir = tempfile::tempdir().unwrap();
    let file = harness::dirty_file(dir.path(), 60, 2, 64);
    let out = dir.path().join("out");
    let (f, o) = (file.to_str().unwrap().to_string(), out.to_str().unwrap().to_string());
    let args = ["batch", "--input", &f, "--output", &o, "--workers", "1", "--quiet"];
    // The last process stops answering when it starts staging; then it is killed.
    let mut c = Cluster::start(dir.path(), 3, &args, &[("SKIPFLOW_FAULT", "staging:hang")]);
    let deadline = Instant::now() + LIMIT;
    while !std::fs::read_to_string(&c.logs[2]).unwrap().contains("stops answering") {
        assert!(
            Instant::now() < deadline,
            "process 2 never got to staging\n{}",
            c.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c.kill9(2);
    let killed = Instant::now();
    let codes = c.wait(Duration::from_secs(60));
    assert!(codes[0] != 0 && codes[1] != 0, "{codes:?}\n{}", c.stderr());
    assert!(killed.elapsed() < Duration::from_secs(60));
    let err = c.stderr();
    assert!(err.contains("skipflow: error:"), "{err}");
    assert!(proc::nothing_published(&out), "{err}");
}

/// Checkpointed records (sum of next offsets) of a continuous output.
fn covered(out: &Path) -> i64 {
    common::cont::checkpointed(out)
}

#[test]
fn continuous_on_three_processes_survives_a_kill_9_and_equals_one_batch() {
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 4).unwrap();
    let recs = records(90, 3, 65);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = out.to_str().unwrap().to_string();
    let args = [
        "run",
        "--brokers",
        k.bootstrap(),
        "--topic",
        TOPIC,
        "--output",
        &o,
        "--workers",
        "1",
        "--commit-interval",
        "400ms",
        "--finalize-after",
        "1000000h",
    ];
    // Bursts while the cluster runs; then one process is killed mid-run.
    let third = recs.len() / 3;
    produce(k.bootstrap(), &recs[..third]);
    let mut c = Cluster::start(dir.path(), 3, &args, &[]);
    let deadline = Instant::now() + LIMIT;
    while covered(&out) < third as i64 {
        assert!(
            Instant::now() < deadline,
            "the first third was never committed\n{}",
            c.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    produce(k.bootstrap(), &recs[third..2 * third]);
    std::thread::sleep(Duration::from_millis(300));
    c.kill9(1);
    let codes = c.wait(Duration::from_secs(60));
    assert!(codes[0] != 0 && codes[2] != 0, "{codes:?}\n{}", c.stderr());
    assert!(
        c.stderr().contains("lost the connection to another process"),
        "{}",
        c.stderr()
    );
    drop(c);

    // A restart of every process resumes from the checkpoint.
    produce(k.bootstrap(), &recs[2 * third..]);
    let mut c = Cluster::start(dir.path(), 3, &args, &[]);
    while covered(&out) < recs.len() as i64 {
        assert!(Instant::now() < deadline, "the restart never caught up\n{}", c.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGTERM to one process stops them all, each after a final commit.
    common::cont::sigterm(&c.children[2]);
    assert_eq!(c.wait(Duration::from_secs(60)), vec![0, 0, 0], "{}", c.stderr());
    let (expected, _) = common::cont::batch_run(k.bootstrap(), &dir.path().join("batch"));
    let got = output::read_tables(&out);
    if let Some(d) = output::diff("cluster run", &got, "one batch", &expected) {
        panic!("{d}");
    }
}

#[test]
fn a_failed_quality_gate_exits_4_on_every_process_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = harness::dirty_file(dir.path(), 60, 2, 64);
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        "[quality]\nrejected_share = { max = 0.001, severity = \"fail\" }\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let (o, f, j) = (out.to_str().unwrap(), file.to_str().unwrap(), job.to_str().unwrap());
    let args = [
        "batch",
        "--input",
        f,
        "--output",
        o,
        "--workers",
        "1",
        "--quiet",
        "--job",
        j,
    ];
    let mut c = Cluster::start(dir.path(), 2, &args, &[]);
    assert_eq!(c.wait(LIMIT), vec![4, 4], "{}", c.stderr());
    assert!(c.stderr().contains("a quality gate failed"), "{}", c.stderr());
    for t in ["user_daily", "user_profile_28d", "rejected_events"] {
        assert!(!out.join(t).exists(), "{t} published");
    }
}
