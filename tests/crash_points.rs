//! Crash anywhere: the job aborts (no unwinding, like `kill -9`) at each step
//! of a commit in turn: after staging partitions, after the first partition
//! is renamed into place, after all are renamed but before the checkpoint,
//! and after the checkpoint but before `_SUCCESS`; each time a restart
//! continues. Meanwhile a reader polls the output: every partition it lists
//! is a complete Parquet file, and a partition with `_SUCCESS` never changes
//! again. At the end the tables equal one batch run over the topic.

mod common;

use common::cont::{balanced, batch_run, days_of_records, last_report, sigterm, skipflow_run};
use common::kafka::{produce, TOPIC};
use common::output;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use skipflow::broker::EmbeddedKafka;
use skipflow::continuous;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn spawn(addr: &str, out: &Path, crash_at: Option<&str>) -> std::process::Child {
    let mut c = skipflow_run(addr, out);
    c.args([
        "--commit-interval",
        "100ms",
        "--epoch",
        "20ms",
        "--finalize-after",
        "1h",
    ]);
    match crash_at {
        Some(p) => c.env("SKIPFLOW_CRASH_AT", p),
        None => c.env_remove("SKIPFLOW_CRASH_AT"),
    };
    c.spawn().unwrap()
}

/// What a reader saw that it must not have.
#[derive(Default)]
struct Seen {
    /// Final partitions' file contents when first seen with `_SUCCESS`.
    finals: HashMap<PathBuf, Vec<u8>>,
    reads: u64,
    problems: Vec<String>,
}

/// Lists and reads every partition of `out`, as a reader would.
fn poll_once(out: &Path, seen: &mut Seen) {
    let Ok(tables) = std::fs::read_dir(out) else { return };
    for t in tables.flatten() {
        let name = t.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || name.starts_with('_') || !t.path().is_dir() {
            continue;
        }
        let Ok(parts) = std::fs::read_dir(t.path()) else {
            continue;
        };
        for p in parts.flatten() {
            let dir = p.path();
            let final_before = dir.join("_SUCCESS").exists();
            let file = dir.join("part-00000.parquet");
            let bytes = match std::fs::read(&file) {
                Ok(b) => b,
                Err(e) => {
                    seen.problems
                        .push(format!("{}: listed but unreadable: {e}", dir.display()));
                    continue;
                }
            };
            seen.reads += 1;
            let Ok(f) = std::fs::File::open(&file) else {
                seen.problems
                    .push(format!("{}: vanished after it was read", dir.display()));
                continue;
            };
            match ParquetRecordBatchReaderBuilder::try_new(f) {
                Ok(b) if b.metadata().file_metadata().num_rows() > 0 => {}
                Ok(_) => seen.problems.push(format!("{}: an empty partition", dir.display())),
                Err(e) => seen
                    .problems
                    .push(format!("{}: not a complete Parquet file: {e}", dir.display())),
            }
            if final_before && name != "late_events" && name != "rejected_events" {
                let first = seen.finals.entry(dir.clone()).or_insert_with(|| bytes.clone());
                if *first != bytes {
                    seen.problems.push(format!("{}: changed after _SUCCESS", dir.display()));
                }
            }
        }
    }
}

#[test]
fn abort_at_every_commit_step_then_restart_reaches_the_batch_tables() {
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 3).unwrap();
    let addr = k.bootstrap().to_string();
    let days = days_of_records(50, 6, 17);
    let total: usize = days.iter().map(|d| d.len()).sum();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cont");

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let reader = {
        let (out, stop, seen) = (out.clone(), stop.clone(), seen.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                poll_once(&out, &mut seen.lock().unwrap());
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };

    // One day of data more before each run; each run aborts at its step.
    let points = [
        "checkpointed:1",
        "staged:1",
        "published-one:1",
        "published:1",
        "staged:2",
    ];
    for (i, point) in points.iter().enumerate() {
        produce(&addr, &days[i]);
        let mut child = spawn(&addr, &out, Some(point));
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "the run never reached {point}");
            std::thread::sleep(Duration::from_millis(20));
        };
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(6), "{point}: expected an abort, got {status}");
    }
    for d in &days[points.len()..] {
        produce(&addr, d);
    }
    let before = continuous::read_checkpoint(&out).unwrap().expect("a checkpoint");
    let child = spawn(&addr, &out, None);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let c = continuous::read_checkpoint(&out).unwrap().unwrap();
        if c.offsets.values().sum::<i64>() >= total as i64 && c.commits > before.commits + 1 {
            break;
        }
        assert!(Instant::now() < deadline, "never caught up: {c:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    sigterm(&child);
    let mut child = child;
    assert_eq!(child.wait().unwrap().code(), Some(0));
    stop.store(true, Ordering::SeqCst);
    reader.join().unwrap();

    let seen = seen.lock().unwrap();
    assert!(seen.problems.is_empty(), "a reader saw:\n{}", seen.problems.join("\n"));
    assert!(
        seen.reads > 100 && !seen.finals.is_empty(),
        "{} reads, {} final",
        seen.reads,
        seen.finals.len()
    );

    let (expected, report) = batch_run(&addr, &dir.path().join("batch"));
    if let Some(d) = output::diff(
        "continuous after aborts",
        &output::read_tables(&out),
        "batch",
        &expected,
    ) {
        panic!("{d}");
    }
    let c = last_report(&out)["counts"].clone();
    assert_eq!(c["read"], total as u64, "{c}");
    assert_eq!(c["kept"], report.counts.kept, "{c}");
    assert!(balanced(&c), "{c}");
    let ck = continuous::read_checkpoint(&out).unwrap().unwrap();
    assert!(ck.final_through.is_some(), "{ck:?}");
}
