//! Kafka as it runs in production (semantics.md), through the real client
//! and protocol against librdkafka's mock cluster: every compression codec,
//! a batch on a topic producers keep writing to, and the errors waiting
//! cannot fix (exit 1, one line, nothing published, in bounded time).

mod common;

use common::cont::{self, checkpoint, run_to_end};
use common::kafka::{kafka_batch, produce_to, read_all, records, watermarks, TOPIC};
use common::reference::{self, RefRecord};
use common::{harness, proc, rawkafka};
use skipflow::broker::EmbeddedKafka;
use skipflow::report::InputRange;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(90);

fn expected(read: &[RefRecord]) -> reference::RefOutput {
    harness::reference_of_records(read)
}

#[test]
fn crc32c_of_the_hand_written_batches_is_right() {
    assert_eq!(rawkafka::crc32c(b"123456789"), 0xE306_9283);
}

#[test]
fn every_codec_producers_use_is_read_by_batch_and_run() {
    let recs = records(60, 2, 91);
    let dir = tempfile::tempdir().unwrap();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let k = EmbeddedKafka::start(None).unwrap();
        k.create_topic(TOPIC, 3).unwrap();
        produce_to(k.bootstrap(), TOPIC, &recs, &[("compression.type", codec)]);
        let read = read_all(k.bootstrap(), TOPIC, &[]);
        assert_eq!(read.len(), recs.len());
        let exp = expected(&read);

        let out = dir.path().join(format!("batch-{codec}"));
        let report = kafka_batch(k.bootstrap(), &out, None, 2).unwrap_or_else(|e| panic!("{codec}: {e:#}"));
        harness::assert_counts(&report, &exp);
        harness::assert_tables(&out, &exp.tables);

        let out = dir.path().join(format!("run-{codec}"));
        run_to_end(k.bootstrap(), &out, read.len(), &[]);
        harness::assert_tables(&out, &exp.tables);
    }
}

#[test]
fn a_batch_on_a_live_topic_reads_exactly_to_the_ends_as_of_its_start() {
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 8).unwrap();
    let addr = k.bootstrap().to_string();
    // A backlog that takes the run a while to read, and more that keeps coming.
    let before = records(500, 3, 77);
    let during = records(400, 3, 78);
    produce_to(&addr, TOPIC, &before, &[]);
    let marks = Watermarks::new(&addr);
    let w0 = marks.now();

    // A producer that keeps writing for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (stop, addr) = (stop.clone(), addr.clone());
        std::thread::spawn(move || {
            let mut p = skipflow::source::kafka::EventProducer::new(&addr, TOPIC, &Default::default()).unwrap();
            for chunk in during.chunks(20) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                for r in chunk {
                    p.send(&r.key, r.value.as_deref(), r.arrival_ms).unwrap();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            p.finish().unwrap();
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let log = dir.path().join("batch.log");
    let mut child = proc::spawn(
        &[
            "batch",
            "--brokers",
            &addr,
            "--topic",
            TOPIC,
            "--workers",
            "2",
            "--quiet",
            "--log",
            "info",
            "--output",
            out.to_str().unwrap(),
        ],
        &log,
        &[],
    );
    // The ends as of the start: taken the moment the run has planned them.
    let deadline = Instant::now() + LIMIT;
    while !std::fs::read_to_string(&log).unwrap().contains("Kafka offsets to read") {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    let w1 = marks.now();
    let status = proc::wait(&mut child, LIMIT, &log);
    assert!(status.success(), "{}", std::fs::read_to_string(&log).unwrap());
    let w2 = marks.now();
    stop.store(true, Ordering::SeqCst);
    producer.join().unwrap();

    let report = cont::last_report(&out);
    let ends: BTreeMap<i32, i64> = report["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["partition"].as_i64().unwrap() as i32,
                i["end_offset"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ends.len(), 8);
    for (p, e) in &ends {
        assert!(
            w0[p].1 <= *e && *e <= w1[p].1,
            "partition {p}: end {e} outside [{}, {}]",
            w0[p].1,
            w1[p].1
        );
    }
    assert!(
        w2.values().map(|w| w.1).sum::<i64>() > ends.values().sum::<i64>(),
        "the producer kept writing while the run read"
    );
    let all = read_all(&addr, TOPIC, &[]);
    let mine: Vec<RefRecord> = all.into_iter().filter(|r| r.offset < ends[&r.partition]).collect();
    let exp = expected(&mine);
    harness::assert_tables(&out, &exp.tables);
    let c = &report["counts"];
    assert_eq!(c["read"].as_u64().unwrap(), exp.read);
    assert_eq!(c["kept"].as_u64().unwrap(), exp.kept);
}

/// End offsets of every partition of `TOPIC`, from a client connected
/// beforehand (so that a snapshot takes milliseconds).
struct Watermarks {
    c: rdkafka::consumer::BaseConsumer,
    partitions: i32,
}

impl Watermarks {
    fn new(addr: &str) -> Watermarks {
        use rdkafka::consumer::Consumer;
        let c: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", addr)
            .create()
            .unwrap();
        let md = c.fetch_metadata(Some(TOPIC), Duration::from_secs(10)).unwrap();
        let partitions = md.topics()[0].partitions().len() as i32;
        let w = Watermarks { c, partitions };
        w.now();
        w
    }

    fn now(&self) -> BTreeMap<i32, (i64, i64)> {
        use rdkafka::consumer::Consumer;
        (0..self.partitions)
            .map(|p| (p, self.c.fetch_watermarks(TOPIC, p, Duration::from_secs(10)).unwrap()))
            .collect()
    }
}

/// Runs `skipflow ARGS`, expecting exit 1 with an error line containing every one of `want`.
fn fails_with(args: &[&str], dir: &std::path::Path, envs: &[(&str, &str)], want: &[&str]) {
    let (code, line, stderr) = proc::run(args, dir, envs, LIMIT);
    assert_eq!(code, 1, "exit code of {args:?}; stderr:\n{stderr}");
    for w in want {
        assert!(
            line.contains(w),
            "{args:?}: {line:?} does not say {w:?}; stderr:\n{stderr}"
        );
    }
}

fn batch_args<'a>(addr: &'a str, topic: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "batch",
        "--brokers",
        addr,
        "--topic",
        topic,
        "--workers",
        "2",
        "--quiet",
        "--output",
        out,
    ]
}

fn run_args<'a>(addr: &'a str, topic: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "--brokers",
        addr,
        "--topic",
        topic,
        "--workers",
        "2",
        "--commit-interval",
        "60s",
        "--output",
        out,
    ]
}

#[test]
fn an_unknown_topic_ends_batch_and_run() {
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    fails_with(
        &batch_args(k.bootstrap(), "no-such-topic", o),
        dir.path(),
        &[],
        &["no-such-topic"],
    );
    fails_with(
        &run_args(k.bootstrap(), "no-such-topic", o),
        dir.path(),
        &[],
        &["no-such-topic"],
    );
    assert!(proc::nothing_published(&out));
}

#[test]
fn an_undecodable_message_ends_batch_and_run_naming_its_partition() {
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 2).unwrap();
    let recs = records(30, 1, 5);
    produce_to(k.bootstrap(), TOPIC, &recs[..recs.len() / 2], &[]);
    // A zstd batch whose payload is not zstd.
    let batch = rawkafka::record_batch(4, 3, 1_790_000_000_000, b"this is not zstd data at all");
    assert_eq!(rawkafka::produce_batch(k.bootstrap(), TOPIC, 1, &batch), 0);
    produce_to(k.bootstrap(), TOPIC, &recs[recs.len() / 2..], &[]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    fails_with(
        &batch_args(k.bootstrap(), TOPIC, o),
        dir.path(),
        &[],
        &["cannot decode", "partition 1"],
    );
    assert!(proc::nothing_published(&out));
    fails_with(
        &run_args(k.bootstrap(), TOPIC, o),
        dir.path(),
        &[],
        &["cannot decode", "partition 1"],
    );
    assert!(proc::nothing_published(&out));
}

#[test]
fn a_checkpoint_below_the_log_start_stops_the_run_unless_the_job_allows_it() {
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 1).unwrap();
    let recs = records(20, 2, 8);
    produce_to(k.bootstrap(), TOPIC, &recs, &[]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run_to_end(k.bootstrap(), &out, recs.len(), &[]);
    let before = checkpoint(&out).unwrap();

    // Retention: the mock cluster keeps about 5 MiB per partition and drops the oldest batches.
    let pad = "x".repeat(4000);
    let filler: Vec<skipflow::generate::GenRecord> = (0..2000)
        .map(|i| skipflow::generate::GenRecord {
            key: b"filler".to_vec(),
            value: Some(format!("{{\"pad\":\"{pad}\",\"i\":{i}}}").into_bytes()),
            arrival_ms: 1_790_000_000_000,
        })
        .collect();
    produce_to(k.bootstrap(), TOPIC, &filler, &[]);
    let low = watermarks(k.bootstrap(), TOPIC)[&0].0;
    assert!(
        low > recs.len() as i64,
        "the broker dropped the first records (log start {low})"
    );

    let o = out.to_str().unwrap();
    fails_with(
        &run_args(k.bootstrap(), TOPIC, o),
        dir.path(),
        &[],
        &["partition 0", "deleted by retention", "allow_data_loss"],
    );
    assert_eq!(checkpoint(&out).unwrap(), before, "nothing was published");

    // Allowed: the run goes on from the log start.
    let job = dir.path().join("job.toml");
    std::fs::write(&job, "allow_data_loss = true\n").unwrap();
    let total = watermarks(k.bootstrap(), TOPIC)[&0].1;
    let mut c = cont::skipflow_run(k.bootstrap(), &out);
    c.args([
        "--job",
        job.to_str().unwrap(),
        "--commit-interval",
        "300ms",
        "--workers",
        "2",
    ]);
    let mut child = c.spawn().unwrap();
    let deadline = Instant::now() + LIMIT;
    while cont::checkpointed(&out) < total {
        assert!(child.try_wait().unwrap().is_none(), "the allowed run ended early");
        assert!(Instant::now() < deadline, "the allowed run never caught up");
        std::thread::sleep(Duration::from_millis(100));
    }
    cont::sigterm(&child);
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_failing_or_panicking_worker_ends_batch_and_run_with_nothing_published() {
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 4).unwrap();
    let recs = records(40, 3, 12);
    produce_to(k.bootstrap(), TOPIC, &recs, &[]);
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("batch", "reader", "error", "injected failure at reader"),
        (
            "batch",
            "reader",
            "panic",
            "worker 1 panicked: injected panic at reader",
        ),
        ("batch", "prior", "error", "injected failure at prior"),
        (
            "batch",
            "staging",
            "panic",
            "worker 1 panicked: injected panic at staging",
        ),
        ("run", "reader", "error", "injected failure at reader"),
        ("run", "reader", "panic", "worker 1 panicked: injected panic at reader"),
    ];
    for (mode, point, kind, says) in cases {
        let fault = format!("{point}:{kind}");
        let out = dir.path().join(format!("{mode}-{point}-{kind}"));
        let o = out.to_str().unwrap();
        let args = match mode {
            "batch" => batch_args(k.bootstrap(), TOPIC, o),
            _ => run_args(k.bootstrap(), TOPIC, o),
        };
        fails_with(&args, dir.path(), &[("SKIPFLOW_FAULT", &fault)], &[says]);
        assert!(proc::nothing_published(&out), "{mode} {fault}");
    }
    // Reading the final days back on a restart, and staging a commit.
    let out = dir.path().join("run-restart");
    let mut c = cont::skipflow_run(k.bootstrap(), &out);
    c.args(["--commit-interval", "300ms", "--finalize-after", "1h", "--workers", "2"]);
    let mut child = c.spawn().unwrap();
    let deadline = Instant::now() + LIMIT;
    while checkpoint(&out).is_none_or(|c| c["final_through"].is_null()) {
        assert!(Instant::now() < deadline, "no day was finalized");
        std::thread::sleep(Duration::from_millis(100));
    }
    cont::sigterm(&child);
    assert!(child.wait().unwrap().success());
    let before = checkpoint(&out).unwrap();
    let o = out.to_str().unwrap();
    fails_with(
        &run_args(k.bootstrap(), TOPIC, o),
        dir.path(),
        &[("SKIPFLOW_FAULT", "prior:error")],
        &["injected failure at prior"],
    );
    assert_eq!(checkpoint(&out).unwrap(), before, "nothing was published");
}

#[test]
fn report_inputs_name_every_partition() {
    // The live-topic test reads `inputs`; keep their shape checked here too.
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 3).unwrap();
    produce_to(k.bootstrap(), TOPIC, &records(10, 1, 3), &[]);
    let dir = tempfile::tempdir().unwrap();
    let r = kafka_batch(k.bootstrap(), dir.path(), None, 2).unwrap();
    let w = watermarks(k.bootstrap(), TOPIC);
    for i in &r.inputs {
        let InputRange::Kafka {
            partition, end_offset, ..
        } = i
        else {
            panic!("kafka input")
        };
        assert_eq!(*end_offset, w[partition].1);
    }
}
