//! The Kafka batch path against tansu, an independent Kafka-API broker
//! (installed once by `make test` under ~/.cache/skipflow/tansu), started and
//! stopped here. tansu answers offsets-for-times with 0 for every partition:
//! the job must verify that and still start each range at the right offset.

mod common;

use common::kafka::{assert_range_starts, kafka_batch, produce, read_back, records, TOPIC};
use common::reference::{self, RefConfig, RefRecord};
use common::{harness, output};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use skipflow::generate::GenConfig;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("SKIPFLOW_TANSU") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/skipflow/tansu/bin/tansu");
    assert!(
        p.exists(),
        "tansu is not installed: run `make test` (it installs tansu 0.6.0 once into ~/.cache/skipflow)"
    );
    p
}

struct Tansu {
    child: Child,
    addr: String,
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_tansu() -> Tansu {
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(tansu_binary())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting tansu");
    let t = Tansu {
        child,
        addr: format!("127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&t.addr).is_err() {
        assert!(Instant::now() < deadline, "tansu did not listen on {}", t.addr);
        std::thread::sleep(Duration::from_millis(100));
    }
    t
}

fn create_topic(addr: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", addr).create().unwrap();
    let topic = NewTopic::new(TOPIC, partitions, TopicReplication::Fixed(1));
    let r = futures_executor::block_on(admin.create_topics([&topic], &AdminOptions::new())).unwrap();
    for x in r {
        x.unwrap_or_else(|e| panic!("creating the topic: {e:?}"));
    }
}

#[test]
fn batch_from_tansu_equals_reference_file_input_and_finds_range_starts() {
    let t = start_tansu();
    create_topic(&t.addr, 3);
    let recs = records(100, 3, 17);
    produce(&t.addr, &recs);
    let all = read_back(&t.addr, 3);
    assert_eq!(all.len(), recs.len());
    let today = skipflow::dates::today();
    let dir = tempfile::tempdir().unwrap();

    // Whole topic, 1 and 4 workers: equal to the reference and to the same records as a file.
    let lines: Vec<Vec<u8>> = recs
        .iter()
        .filter_map(|r| r.value.clone())
        .filter(|v| !v.is_empty())
        .collect();
    let file = dir.path().join("events.ndjson");
    harness::write_lines(&file, &lines);
    let file_out = dir.path().join("file-out");
    harness::batch(std::slice::from_ref(&file), &file_out, None, 2);
    let expected = reference::reference(
        &all,
        &RefConfig {
            range: None,
            run_day: today,
        },
    );
    for workers in [1, 4] {
        let out = dir.path().join(format!("tansu-{workers}"));
        let report = kafka_batch(&t.addr, &out, None, workers).expect("batch from tansu");
        harness::assert_counts(&report, &expected);
        harness::assert_tables(&out, &expected.tables);
        if let Some(d) = output::diff(
            "tansu",
            &harness::feature_tables(&out),
            "file",
            &harness::feature_tables(&file_out),
        ) {
            panic!("{workers} workers: {d}");
        }
    }

    // A range: tansu's offsets-for-times answer (0) is wrong past the first day; the
    // run must still start at the first message at or after FROM minus the skew.
    let day = GenConfig::default().start_day + 1;
    let from_ms = day as i64 * 86_400_000 - 3_600_000;
    let out = dir.path().join("range");
    let report = kafka_batch(&t.addr, &out, Some((day, day)), 2).expect("batch from tansu");
    assert_range_starts(&report, &all, from_ms);
    let read: Vec<RefRecord> = all.into_iter().filter(|m| m.message_ts.unwrap() >= from_ms).collect();
    let expected = reference::reference(
        &read,
        &RefConfig {
            range: Some((day, day)),
            run_day: today,
        },
    );
    harness::assert_counts(&report, &expected);
    harness::assert_tables(&out, &expected.tables);
}
