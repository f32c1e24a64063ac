//! The Kafka batch path against tansu, an independent Kafka-API broker
//! (installed once by `make test` under ~/.cache/skipflow/tansu; see
//! `common::tansu`). tansu answers offsets-for-times with 0 for every partition:
//! the job must verify that and still start each range at the right offset.

mod common;

use common::kafka::{assert_range_starts, kafka_batch, produce, read_back, records};
use common::reference::{self, RefConfig, RefRecord};
use common::tansu::Tansu;
use common::{harness, output};
use skipflow::generate::GenConfig;

#[test]
fn batch_from_tansu_equals_reference_file_input_and_finds_range_starts() {
    let t = Tansu::memory();
    t.create_topic(3);
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
