#![allow(dead_code)]
//! Running the real job in tests, and building inputs for it.

use super::output::{self, Tables};
use super::reference::{self, RefConfig, RefOutput, RefRecord};
use skipflow::batch::{self, BatchConfig};
use skipflow::report::RunReport;
use std::path::{Path, PathBuf};

/// Runs one batch over `inputs` into `out`; returns the run report.
pub fn batch(inputs: &[PathBuf], out: &Path, range: Option<(i32, i32)>, workers: usize) -> RunReport {
    let cfg = BatchConfig {
        output: out.to_path_buf(),
        inputs: inputs.iter().map(|p| p.to_string_lossy().to_string()).collect(),
        kafka: None,
        range,
        workers,
        progress: false,
        topology: Default::default(),
        storage: Default::default(),
        quality: Default::default(),
    };
    batch::run(&cfg).expect("batch run").report
}

/// Writes lines as one NDJSON file.
pub fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    let mut buf = Vec::new();
    for l in lines {
        buf.extend_from_slice(l);
        buf.push(b'\n');
    }
    std::fs::write(path, buf).unwrap();
}

/// The reference over the same files (each read as the job reads it).
pub fn reference_of(inputs: &[PathBuf], range: Option<(i32, i32)>) -> RefOutput {
    let mut recs: Vec<RefRecord> = Vec::new();
    for p in inputs {
        let bytes = std::fs::read(p).unwrap();
        recs.extend(reference::records_from_ndjson(&p.to_string_lossy(), &bytes));
    }
    reference::reference(
        &recs,
        &RefConfig {
            range,
            run_day: skipflow::dates::today(),
        },
    )
}

/// Asserts the job's tables in `out` equal `expected`, with a readable first difference.
pub fn assert_tables(out: &Path, expected: &Tables) {
    let got = output::read_tables(out);
    if let Some(d) = output::diff("job", &got, "reference", expected) {
        panic!("tables differ: {d}");
    }
}

/// Asserts the run report's counts equal the reference's, and the accounting identity.
pub fn assert_counts(r: &RunReport, e: &RefOutput) {
    let c = &r.counts;
    assert!(c.balanced(), "accounting identity broken: {c:?}");
    assert_eq!(
        (c.read, c.kept, c.duplicates, c.rejected, c.out_of_range),
        (e.read, e.kept, e.duplicates, e.rejected, e.out_of_range),
        "counts (read, kept, duplicates, rejected, out_of_range)"
    );
    assert_eq!(c.rejected_by_reason, e.rejected_by_reason, "rejected per reason");
}

/// The tables of `out` without `rejected_events` (whose `source` names the file).
pub fn feature_tables(out: &Path) -> Tables {
    let mut t = output::read_tables(out);
    t.remove("rejected_events");
    t
}

/// The reference over records read from Kafka (rejected rows of records
/// without a message timestamp, none here, would go to today).
pub fn reference_of_records(read: &[reference::RefRecord]) -> RefOutput {
    reference::reference(
        read,
        &RefConfig {
            range: None,
            run_day: skipflow::dates::today(),
        },
    )
}

/// The generator's dirty data (`users`, `days`, `seed`) as one NDJSON file in `dir`.
pub fn dirty_file(dir: &Path, users: u32, days: u32, seed: u64) -> PathBuf {
    let lines: Vec<Vec<u8>> = super::kafka::records(users, days, seed)
        .into_iter()
        .filter_map(|r| r.value)
        .filter(|v| !v.is_empty())
        .collect();
    let file = dir.join(format!("events-{seed}.ndjson"));
    write_lines(&file, &lines);
    file
}

/// `skipflow generate GENERATE --output DIR/events.ndjson`, then `skipflow
/// batch` of it (2 workers) into DIR/out, through the binary: (events, out).
pub fn generate_and_batch(dir: &Path, generate: &[&str]) -> (PathBuf, PathBuf) {
    use std::process::Command;
    let bin = env!("CARGO_BIN_EXE_skipflow");
    let (events, out) = (dir.join("events.ndjson"), dir.join("out"));
    for c in [
        Command::new(bin)
            .arg("generate")
            .args(generate)
            .arg("--output")
            .arg(&events),
        Command::new(bin)
            .args(["batch", "--quiet", "--workers", "2", "--input"])
            .arg(&events)
            .arg("--output")
            .arg(&out),
    ] {
        let o = c.output().unwrap();
        assert!(o.status.success(), "{c:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    (events, out)
}
