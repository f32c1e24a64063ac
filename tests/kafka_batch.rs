//! Batch runs from Kafka through the real client and protocol (librdkafka's
//! mock cluster, in process): equal to the reference over exactly the records
//! read, equal to the same records as a file, for several partition and
//! worker counts; time ranges; broker outages; null and huge values.

mod common;

use common::reference::{self, RefConfig, RefRecord};
use common::{harness, output};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use skipflow::batch::{self, BatchConfig, KafkaBatch};
use skipflow::broker::EmbeddedKafka;
use skipflow::generate::{generate, GenConfig, GenRecord};
use skipflow::report::{InputRange, RunReport};
use skipflow::source::kafka::{EventProducer, KafkaInput};
use std::path::Path;
use std::time::Duration;

const TOPIC: &str = "listen-events";

fn records(users: u32, days: u32, seed: u64) -> Vec<GenRecord> {
    let mut v = Vec::new();
    generate(
        &GenConfig {
            users,
            days,
            seed,
            dirty: true,
            ..GenConfig::default()
        },
        &mut |r| v.push(r),
    );
    v
}

fn produce(k: &EmbeddedKafka, recs: &[GenRecord]) {
    let mut p = EventProducer::new(k.bootstrap(), TOPIC, &Default::default()).unwrap();
    for r in recs {
        p.send(&r.key, r.value.as_deref(), r.arrival_ms).unwrap();
    }
    p.finish().unwrap();
}

/// Every message of the topic, as the reference takes them.
fn read_back(bootstrap: &str, partitions: i32) -> Vec<RefRecord> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut eof = 0;
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while eof < partitions && std::time::Instant::now() < deadline {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(RefRecord {
                source: TOPIC.into(),
                partition: m.partition(),
                offset: m.offset(),
                message_ts: m.timestamp().to_millis(),
                value: m.payload().map(|p| p.to_vec()),
            }),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => eof += 1,
            _ => {}
        }
    }
    assert_eq!(eof, partitions, "read the whole topic back");
    out
}

fn kafka_batch(bootstrap: &str, out: &Path, range: Option<(i32, i32)>, workers: usize) -> anyhow::Result<RunReport> {
    let cfg = BatchConfig {
        output: out.to_path_buf(),
        inputs: vec![],
        kafka: Some(KafkaBatch {
            input: KafkaInput::new(bootstrap, TOPIC),
            skew_ms: 3_600_000,
        }),
        range,
        workers,
        progress: false,
    };
    batch::run(&cfg).map(|o| o.report)
}

fn today() -> i32 {
    skipflow::dates::today()
}

#[test]
fn kafka_equals_reference_and_file_input_for_partitions_and_workers() {
    let recs = records(120, 3, 21);
    let dir = tempfile::tempdir().unwrap();
    // The same records as a file (null and empty values are not lines).
    let lines: Vec<Vec<u8>> = recs
        .iter()
        .filter_map(|r| r.value.clone())
        .filter(|v| !v.is_empty())
        .collect();
    let file = dir.path().join("events.ndjson");
    harness::write_lines(&file, &lines);
    let file_out = dir.path().join("file-out");
    harness::batch(std::slice::from_ref(&file), &file_out, None, 2);
    let file_tables = harness::feature_tables(&file_out);

    for (partitions, workers) in [(1, 1), (3, 4), (8, 1), (8, 4)] {
        let k = EmbeddedKafka::start(None).unwrap();
        k.create_topic(TOPIC, partitions).unwrap();
        produce(&k, &recs);
        let out = dir.path().join(format!("kafka-{partitions}-{workers}"));
        let report = kafka_batch(k.bootstrap(), &out, None, workers).unwrap();
        let read = read_back(k.bootstrap(), partitions);
        assert_eq!(read.len(), recs.len());
        let expected = reference::reference(
            &read,
            &RefConfig {
                range: None,
                run_day: today(),
            },
        );
        harness::assert_counts(&report, &expected);
        harness::assert_tables(&out, &expected.tables);
        let kt = harness::feature_tables(&out);
        if let Some(d) = output::diff("kafka", &kt, "file", &file_tables) {
            panic!("{partitions} partitions, {workers} workers: {d}");
        }
        // The report names every partition's offset range.
        let ranges: Vec<&InputRange> = report.inputs.iter().collect();
        assert_eq!(ranges.len(), partitions as usize);
    }
}

#[test]
fn ranges_start_at_from_minus_skew_and_reruns_pick_up_late_events() {
    let recs = records(100, 4, 5);
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 3).unwrap();
    let start = GenConfig::default().start_day;
    let day = start + 2;
    let from_ms = day as i64 * 86_400_000 - 3_600_000;
    // Produce all but the late arrivals for `day` that come after the others.
    let cut = recs
        .iter()
        .position(|r| r.arrival_ms >= (day as i64 + 1) * 86_400_000 + 3_600_000)
        .unwrap();
    produce(&k, &recs[..cut]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let r1 = kafka_batch(k.bootstrap(), &out, Some((day, day)), 2).unwrap();

    // Start offsets: the first message at or after FROM minus the skew (the mock
    // broker cannot answer offsets-for-times; the job must find them anyway).
    let all = read_back(k.bootstrap(), 3);
    for input in &r1.inputs {
        let InputRange::Kafka {
            partition,
            start_offset,
            ..
        } = input
        else {
            panic!("kafka input")
        };
        let first = all
            .iter()
            .filter(|m| m.partition == *partition && m.message_ts.unwrap() >= from_ms)
            .map(|m| m.offset)
            .min()
            .unwrap_or_else(|| all.iter().filter(|m| m.partition == *partition).count() as i64);
        assert_eq!(*start_offset, first, "partition {partition}");
    }
    let read: Vec<RefRecord> = all.into_iter().filter(|m| m.message_ts.unwrap() >= from_ms).collect();
    let expected = reference::reference(
        &read,
        &RefConfig {
            range: Some((day, day)),
            run_day: today(),
        },
    );
    harness::assert_counts(&r1, &expected);
    assert!(r1.counts.out_of_range > 0);
    let t = output::read_tables(&out);
    for table in [
        "user_daily",
        "user_track_daily",
        "user_artist_daily",
        "user_profile_28d",
    ] {
        assert_eq!(
            t[table].keys().cloned().collect::<Vec<_>>(),
            vec![skipflow::dates::day_to_string(day)]
        );
        assert_eq!(t[table], expected.tables[table], "{table}");
    }

    // Late events arrive; a rerun includes them.
    produce(&k, &recs[cut..]);
    let r2 = kafka_batch(k.bootstrap(), &out, Some((day, day)), 2).unwrap();
    let read: Vec<RefRecord> = read_back(k.bootstrap(), 3)
        .into_iter()
        .filter(|m| m.message_ts.unwrap() >= from_ms)
        .collect();
    let expected = reference::reference(
        &read,
        &RefConfig {
            range: Some((day, day)),
            run_day: today(),
        },
    );
    harness::assert_counts(&r2, &expected);
    assert!(r2.counts.kept > r1.counts.kept, "late events for the day were added");
    let t = output::read_tables(&out);
    assert_eq!(t["user_daily"], expected.tables["user_daily"]);
}

#[test]
fn null_and_one_megabyte_values_are_rejected_and_the_run_goes_on() {
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 2).unwrap();
    let mut recs = records(20, 1, 3);
    let t = recs[0].arrival_ms;
    recs.insert(
        1,
        GenRecord {
            key: b"u".to_vec(),
            value: None,
            arrival_ms: t,
        },
    );
    recs.insert(
        2,
        GenRecord {
            key: b"u".to_vec(),
            value: Some(vec![b'{'; 1 << 20]),
            arrival_ms: t,
        },
    );
    produce(&k, &recs);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let report = kafka_batch(k.bootstrap(), &out, None, 2).unwrap();
    let expected = reference::reference(
        &read_back(k.bootstrap(), 2),
        &RefConfig {
            range: None,
            run_day: today(),
        },
    );
    harness::assert_counts(&report, &expected);
    harness::assert_tables(&out, &expected.tables);
    let rej = output::read_tables(&out);
    let rows: Vec<&serde_json::Value> = rej["rejected_events"].values().flatten().collect();
    assert!(rows
        .iter()
        .any(|r| r[4] == "too_large" && r[5].as_str().unwrap().len() == 2 * 65536));
    assert!(rows.iter().any(|r| r[4] == "invalid_json" && r[5] == ""));
    assert!(report.counts.kept > 0);
}

#[test]
fn a_broker_down_at_start_and_back_later_gives_the_same_tables() {
    let recs = records(400, 2, 9);
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 4).unwrap();
    produce(&k, &recs);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let bootstrap = k.bootstrap().to_string();
    let o2 = out.clone();
    // Down before the run starts reading, back two seconds later: the run waits and retries.
    k.set_broker_up(false).unwrap();
    let started = std::time::Instant::now();
    let run = std::thread::spawn(move || kafka_batch(&bootstrap, &o2, None, 2));
    std::thread::sleep(Duration::from_secs(2));
    k.set_broker_up(true).unwrap();
    let report = run.join().unwrap().expect("the run retries and finishes");
    assert!(started.elapsed() >= Duration::from_secs(2));
    let expected = reference::reference(
        &read_back(k.bootstrap(), 4),
        &RefConfig {
            range: None,
            run_day: today(),
        },
    );
    harness::assert_counts(&report, &expected);
    harness::assert_tables(&out, &expected.tables);
}

#[test]
fn a_broker_dropping_while_reading_either_finishes_correctly_or_publishes_nothing() {
    let recs = records(1500, 2, 13);
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 8).unwrap();
    produce(&k, &recs);
    let expected = reference::reference(
        &read_back(k.bootstrap(), 8),
        &RefConfig {
            range: None,
            run_day: today(),
        },
    );
    for (i, delay_ms) in [5u64, 40, 120].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let (bootstrap, o2) = (k.bootstrap().to_string(), out.clone());
        let run = std::thread::spawn(move || kafka_batch(&bootstrap, &o2, None, 1 + i % 2));
        std::thread::sleep(Duration::from_millis(delay_ms));
        k.set_broker_up(false).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        k.set_broker_up(true).unwrap();
        match run.join().unwrap() {
            Ok(report) => {
                harness::assert_counts(&report, &expected);
                harness::assert_tables(&out, &expected.tables);
            }
            Err(e) => {
                let t = output::read_tables(&out);
                assert!(t.is_empty(), "a failed run ({e:#}) published {:?}", t.keys());
            }
        }
    }
}

#[test]
fn unreachable_broker_fails_with_one_line_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let started = std::time::Instant::now();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_skipflow"))
        .args([
            "batch",
            "--brokers",
            "127.0.0.1:1",
            "--topic",
            TOPIC,
            "--quiet",
            "--output",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("skipflow: error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("cannot reach Kafka at 127.0.0.1:1"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60));
    for t in ["user_daily", "rejected_events", "_runs"] {
        assert!(!out.join(t).exists(), "{t} must not exist");
    }
}
