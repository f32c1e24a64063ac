//! Batch runs from Kafka through the real client and protocol (librdkafka's
//! mock cluster, in process): equal to the reference over exactly the records
//! read, equal to the same records as a file, for several partition and
//! worker counts; time ranges; broker outages; null and huge values.

mod common;

use common::kafka::{assert_range_starts, kafka_batch, produce, read_back, records, TOPIC};
use common::reference::{self, RefConfig, RefRecord};
use common::{harness, output};
use skipflow::broker::EmbeddedKafka;
use skipflow::generate::{GenConfig, GenRecord};
use skipflow::report::InputRange;
use std::time::Duration;

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
        produce(k.bootstrap(), &recs);
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
    produce(k.bootstrap(), &recs[..cut]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let r1 = kafka_batch(k.bootstrap(), &out, Some((day, day)), 2).unwrap();

    // Start offsets: the first message at or after FROM minus the skew (the mock
    // broker cannot answer offsets-for-times; the job must find them anyway).
    let all = read_back(k.bootstrap(), 3);
    assert_range_starts(&r1, &all, from_ms);
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
    produce(k.bootstrap(), &recs[cut..]);
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
    produce(k.bootstrap(), &recs);
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
    produce(k.bootstrap(), &recs);
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
    produce(k.bootstrap(), &recs);
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
