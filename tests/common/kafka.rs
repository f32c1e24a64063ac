#![allow(dead_code)]
//! Kafka helpers shared by the tests: generated records, producing them,
//! reading a topic back as the reference takes it, and batch runs from it.

use super::reference::RefRecord;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use skipflow::batch::{self, BatchConfig, KafkaBatch};
use skipflow::generate::{generate, GenConfig, GenRecord};
use skipflow::report::RunReport;
use skipflow::source::kafka::{EventProducer, KafkaInput};
use std::path::Path;
use std::time::{Duration, Instant};

pub const TOPIC: &str = "listen-events";

/// The generator's dirty records, in arrival order.
pub fn records(users: u32, days: u32, seed: u64) -> Vec<GenRecord> {
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

/// Produces `recs` to `TOPIC` and waits for every delivery.
pub fn produce(addr: &str, recs: &[GenRecord]) {
    let mut p = EventProducer::new(addr, TOPIC, &Default::default()).unwrap();
    for r in recs {
        p.send(&r.key, r.value.as_deref(), r.arrival_ms).unwrap();
    }
    p.finish().unwrap();
}

/// Every message of the topic, as the reference takes them.
pub fn read_back(addr: &str, partitions: i32) -> Vec<RefRecord> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "test")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let (mut eof, mut out) = (0, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(120);
    while eof < partitions && Instant::now() < deadline {
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

/// One batch run from `TOPIC` (skew one hour).
pub fn kafka_batch(addr: &str, out: &Path, range: Option<(i32, i32)>, workers: usize) -> anyhow::Result<RunReport> {
    let cfg = BatchConfig {
        output: out.to_path_buf(),
        inputs: vec![],
        kafka: Some(KafkaBatch {
            input: KafkaInput::new(addr, TOPIC),
            skew_ms: 3_600_000,
        }),
        range,
        workers,
        progress: false,
        topology: Default::default(),
        storage: Default::default(),
        quality: Default::default(),
    };
    batch::run(&cfg).map(|o| o.report)
}

/// Asserts each partition's reported start offset is the first message at or
/// after `from_ms` (or the partition's end when there is none).
pub fn assert_range_starts(report: &RunReport, all: &[RefRecord], from_ms: i64) {
    for input in &report.inputs {
        let skipflow::report::InputRange::Kafka {
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
}

/// Produces `recs` to `topic` with extra producer settings (compression, TLS, SASL).
pub fn produce_to(addr: &str, topic: &str, recs: &[GenRecord], settings: &[(&str, &str)]) {
    let settings = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut p = EventProducer::new(addr, topic, &settings).unwrap();
    for r in recs {
        p.send(&r.key, r.value.as_deref(), r.arrival_ms).unwrap();
    }
    p.finish().unwrap();
}

/// Every message of `topic` (its partitions found from metadata), as the
/// reference takes them, read with extra client settings.
pub fn read_all(addr: &str, topic: &str, settings: &[(&str, &str)]) -> Vec<RefRecord> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", addr)
        .set("group.id", "test")
        .set("enable.partition.eof", "true");
    for (k, v) in settings {
        cfg.set(*k, *v);
    }
    let c: BaseConsumer = cfg.create().unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let partitions = md.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let (mut eof, mut out) = (std::collections::HashSet::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(120);
    while (eof.len() as i32) < partitions && Instant::now() < deadline {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(RefRecord {
                source: topic.into(),
                partition: m.partition(),
                offset: m.offset(),
                message_ts: m.timestamp().to_millis(),
                value: m.payload().map(|p| p.to_vec()),
            }),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            _ => {}
        }
    }
    assert_eq!(eof.len() as i32, partitions, "read the whole topic back");
    out
}

/// (log start, end) of each partition of `topic`.
pub fn watermarks(addr: &str, topic: &str) -> std::collections::BTreeMap<i32, (i64, i64)> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", addr).create().unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    md.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            (
                p.id(),
                c.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).unwrap(),
            )
        })
        .collect()
}
