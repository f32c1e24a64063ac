//! semantics.md invariants on generated dirty data: determinism (order, files,
//! workers), day by day equals all at once, idempotent reruns; and the
//! generator's realistic data against the reference.

mod common;

use common::{harness, output};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use skipflow::generate::{generate, GenConfig};
use std::path::{Path, PathBuf};

fn dirty_lines(users: u32, days: u32, seed: u64) -> (Vec<Vec<u8>>, i32) {
    let cfg = GenConfig {
        users,
        days,
        seed,
        dirty: true,
        ..GenConfig::default()
    };
    let mut lines = Vec::new();
    generate(&cfg, &mut |r| {
        if let Some(v) = r.value {
            // Blank values are not records in files; keep the rest.
            if !v.is_empty() && !v.contains(&b'\n') {
                lines.push(v);
            }
        }
    });
    (lines, cfg.start_day)
}

fn write(dir: &Path, name: &str, lines: &[Vec<u8>]) -> PathBuf {
    let p = dir.join(name);
    harness::write_lines(&p, lines);
    p
}

/// Rejected rows without their file-specific `source` and `offset`, sorted.
fn rejected_content(out: &Path) -> Vec<String> {
    let t = output::read_tables(out);
    let mut v: Vec<String> = t
        .get("rejected_events")
        .map(|parts| {
            parts
                .values()
                .flatten()
                .map(|r| format!("{} {} {}", r[2].is_null(), r[4], r[5]))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn generated_dirty_data_equals_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = dirty_lines(300, 4, 11);
    let input = write(dir.path(), "events.ndjson", &lines);
    let out = dir.path().join("out");
    let report = harness::batch(std::slice::from_ref(&input), &out, None, 2);
    let expected = harness::reference_of(&[input], None);
    harness::assert_counts(&report, &expected);
    assert!(
        report.counts.duplicates > 0 && report.counts.rejected > 0,
        "dirty data has duplicates and rejects"
    );
    harness::assert_tables(&out, &expected.tables);
}

#[test]
fn determinism_order_files_workers() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = dirty_lines(200, 3, 5);
    let one = write(dir.path(), "all.ndjson", &lines);
    let out1 = dir.path().join("out1");
    harness::batch(std::slice::from_ref(&one), &out1, None, 1);

    // Shuffled, split across three files (one compressed), four workers.
    let mut shuffled = lines.clone();
    shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(99));
    let third = shuffled.len() / 3;
    let a = write(dir.path(), "a.ndjson", &shuffled[..third]);
    let b = write(dir.path(), "b.ndjson", &shuffled[third..2 * third]);
    let c_plain = write(dir.path(), "c.ndjson", &shuffled[2 * third..]);
    let c = dir.path().join("c.ndjson.zst");
    std::fs::write(&c, zstd::encode_all(&std::fs::read(&c_plain).unwrap()[..], 3).unwrap()).unwrap();
    let out2 = dir.path().join("out2");
    harness::batch(&[a, b, c], &out2, None, 4);

    let (t1, t2) = (harness::feature_tables(&out1), harness::feature_tables(&out2));
    assert!(!t1.is_empty());
    if let Some(d) = output::diff("1 file, 1 worker", &t1, "3 files shuffled, 4 workers", &t2) {
        panic!("{d}");
    }
    assert_eq!(rejected_content(&out1), rejected_content(&out2));
}

#[test]
fn day_by_day_equals_all_at_once_and_reruns_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, start) = dirty_lines(150, 5, 3);
    let input = write(dir.path(), "events.ndjson", &lines);
    let (from, to) = (start, start + 4);

    let daily = dir.path().join("daily");
    for d in from..=to {
        harness::batch(std::slice::from_ref(&input), &daily, Some((d, d)), 2);
    }
    let whole = dir.path().join("whole");
    let r1 = harness::batch(std::slice::from_ref(&input), &whole, Some((from, to)), 2);
    let (a, b) = (output::read_tables(&daily), output::read_tables(&whole));
    assert!(b.contains_key("user_profile_28d"));
    if let Some(d) = output::diff("day by day", &a, "all at once", &b) {
        panic!("{d}");
    }

    // Rerunning the range gives the same rows, and the same counts.
    let r2 = harness::batch(std::slice::from_ref(&input), &whole, Some((from, to)), 3);
    if let Some(d) = output::diff("first run", &b, "rerun", &output::read_tables(&whole)) {
        panic!("{d}");
    }
    assert_eq!(r1.counts, r2.counts);
}

#[test]
fn range_counts_out_of_range_and_removes_emptied_days() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, start) = dirty_lines(100, 3, 8);
    let input = write(dir.path(), "events.ndjson", &lines);
    let out = dir.path().join("out");
    let all = harness::batch(std::slice::from_ref(&input), &out, Some((start, start + 2)), 2);
    let one = harness::batch(std::slice::from_ref(&input), &out, Some((start + 1, start + 1)), 2);
    let expected = harness::reference_of(std::slice::from_ref(&input), Some((start + 1, start + 1)));
    harness::assert_counts(&one, &expected);
    assert!(one.counts.out_of_range > all.counts.out_of_range);

    // An input with no events for day start+1: its partitions disappear, others stay.
    let empty = write(dir.path(), "none.ndjson", &[]);
    harness::batch(&[empty], &out, Some((start + 1, start + 1)), 1);
    let t = output::read_tables(&out);
    let day = skipflow::dates::day_to_string(start + 1);
    for table in ["user_daily", "user_track_daily", "user_artist_daily"] {
        assert!(!t[table].contains_key(&day), "{table} {day} should be gone");
        assert!(
            t[table].contains_key(&skipflow::dates::day_to_string(start)),
            "{table} day 1 stays"
        );
    }
    // The profile as of that day still has the users of the day before (read back from disk).
    let prof = &t["user_profile_28d"][&day];
    let before = &t["user_daily"][&skipflow::dates::day_to_string(start)];
    assert_eq!(prof.len(), before.len());
    assert!(prof.iter().all(|r| r[2] == 1), "one active day in the window");
}

/// File records without a message timestamp land on the run's day; a rerun
/// on another day moves them instead of repeating them.
#[test]
fn rerun_on_another_day_keeps_each_rejected_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = dirty_lines(60, 2, 4);
    let input = write(dir.path(), "events.ndjson", &lines);
    let other = write(dir.path(), "other.ndjson", &[b"not json".to_vec()]);
    let out = dir.path().join("out");
    let run = |day: &str, files: &[&PathBuf]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_skipflow"));
        c.env("SKIPFLOW_RUN_DAY", day)
            .args(["batch", "--quiet", "--output"])
            .arg(&out)
            .arg("--input");
        for f in files {
            c.arg(f);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run("2026-01-01", &[&input]);
    run("2026-01-01", &[&other]);
    let before = rejected_content(&out);
    run("2026-01-05", &[&input]);
    let t = output::read_tables(&out);
    let parts = &t["rejected_events"];
    // The rerun's rows moved to its day; the other file's row stayed where it was.
    assert_eq!(parts["2026-01-01"].len(), 1);
    assert!(parts["2026-01-01"][0][0].as_str().unwrap().ends_with("other.ndjson"));
    assert!(parts["2026-01-05"]
        .iter()
        .all(|r| r[0].as_str().unwrap().ends_with("events.ndjson")));
    assert_eq!(rejected_content(&out), before, "each rejected record exactly once");
}
