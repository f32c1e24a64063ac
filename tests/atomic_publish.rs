//! semantics.md, *Commits and recovery*: "A partition is replaced atomically:
//! a reader that lists and reads it at any moment sees either the complete old
//! contents or the complete new ones, never a mix, a partial file or an empty
//! directory in between."
//!
//! Batch runs over two inputs A and B alternate on one output directory while
//! a reader thread keeps listing and reading `user_daily/dt=D/` (whose
//! contents differ between A and B) and `user_daily/dt=E/` (a day with
//! listens only in A, so B's runs remove it). Every observation must be A's
//! complete rows or B's, and E must be absent or complete.

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DAY_MS: i64 = 86_400_000;

/// (user_id, listens) rows of a partition, in file order.
type Rows = Vec<(String, i64)>;

fn event(id: &str, user: &str, ts: i64, skip: bool) -> String {
    format!(
        r#"{{"event_id":"{id}","event_type":"{}","user_id":"{user}","track_id":"t{}","artist_id":"a{}","ts":{ts},"ms_played":{},"track_duration_ms":200000}}"#,
        if skip { "skip" } else { "play" },
        ts % 7,
        ts % 3,
        if skip { 12_000 } else { 200_000 },
    )
}

/// Events of `users` users on `day`, user i with `1 + (i + salt) % 3` listens.
fn day_events(prefix: &str, day: i32, users: usize, salt: usize, lines: &mut Vec<String>) -> Rows {
    let mut rows = Vec::new();
    for i in 0..users {
        let user = format!("user-{i:03}");
        let n = 1 + (i + salt) % 3;
        for k in 0..n {
            let ts = day as i64 * DAY_MS + 3_600_000 + (i as i64) * 60_000 + (k as i64) * 1_000;
            lines.push(event(&format!("{prefix}-{day}-{i}-{k}"), &user, ts, k % 2 == 1));
        }
        rows.push((user, n as i64));
    }
    rows
}

fn write(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

/// What a reader sees in one partition directory: `None` when it does not
/// exist, else the rows of every data file listed in it.
fn observe(dir: &Path) -> Result<Option<Rows>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("listing {}: {e}", dir.display())),
    };
    let mut names = Vec::new();
    for e in entries {
        match e {
            Ok(e) => names.push(e.file_name().to_string_lossy().to_string()),
            // The directory was renamed away while listing: as if absent.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("listing {}: {e}", dir.display())),
        }
    }
    names.sort();
    let files: Vec<&String> = names.iter().filter(|n| n.ends_with(".parquet")).collect();
    if files.is_empty() {
        return Err(format!("{} listed without a data file: {names:?}", dir.display()));
    }
    if !names.iter().any(|n| n == "_SUCCESS") {
        return Err(format!("{} listed without _SUCCESS: {names:?}", dir.display()));
    }
    let mut rows = Vec::new();
    for f in files {
        let path = dir.join(f);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            // Listed, then the whole partition was removed (renamed away) before the open:
            // the reader sees the new state, no partition. A file missing from a directory
            // that still exists would be a violation.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !dir.exists() => return Ok(None),
            Err(e) => return Err(format!("opening listed file {}: {e}", path.display())),
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| format!("reading {} (listed {names:?}): {e}", path.display()))?;
        for b in reader {
            let b = b.map_err(|e| format!("reading {}: {e}", path.display()))?;
            let users = b
                .column_by_name("user_id")
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| format!("{}: no string user_id column", path.display()))?;
            let listens = b
                .column_by_name("listens")
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
                .ok_or_else(|| format!("{}: no int64 listens column", path.display()))?;
            for i in 0..b.num_rows() {
                rows.push((users.value(i).to_string(), listens.value(i)));
            }
        }
    }
    Ok(Some(rows))
}

#[derive(Default, Debug)]
struct Seen {
    d_old_or_new: [u64; 2],
    e_absent: u64,
    e_complete: u64,
    violations: Vec<String>,
}

/// One `skipflow batch` run over `input` for the days `range` (the real binary, so the
/// test does not depend on the library's configuration type).
fn run_batch(out: &Path, input: &Path, range: (&str, &str)) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_skipflow"))
        .args(["batch", "--quiet", "--workers", "1", "--input"])
        .arg(input)
        .arg("--output")
        .arg(out)
        .args(["--from", range.0, "--to", range.1])
        .env_remove("SKIPFLOW_LOG")
        .output()
        .expect("run skipflow");
    assert!(
        o.status.success(),
        "batch over {} failed ({}):\n{}",
        input.display(),
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn readers_see_whole_partitions_while_runs_replace_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = skipflow::dates::parse_day("2026-11-02").unwrap();
    let e = d + 1;
    let range = ("2026-11-02", "2026-11-03");
    let mut a_lines = Vec::new();
    let a_d = day_events("a", d, 60, 0, &mut a_lines);
    let a_e = day_events("a", e, 15, 1, &mut a_lines);
    let mut b_lines = Vec::new();
    let b_d = day_events("b", d, 35, 2, &mut b_lines);
    let (a, b) = (dir.path().join("a.ndjson"), dir.path().join("b.ndjson"));
    write(&a, &a_lines);
    write(&b, &b_lines);
    let out = dir.path().join("out");
    let part_d: PathBuf = out.join("user_daily").join("dt=2026-11-02");
    let part_e: PathBuf = out.join("user_daily").join("dt=2026-11-03");

    // What each run publishes, read when nothing else runs.
    run_batch(&out, &a, range);
    let a_d_read = observe(&part_d).unwrap().expect("A writes day D");
    let a_e_read = observe(&part_e).unwrap().expect("A writes day E");
    assert_eq!(a_d_read, a_d, "A's rows of day D");
    assert_eq!(a_e_read, a_e, "A's rows of day E");
    run_batch(&out, &b, range);
    let b_d_read = observe(&part_d).unwrap().expect("B writes day D");
    assert_eq!(b_d_read, b_d, "B's rows of day D");
    assert_eq!(
        observe(&part_e).unwrap(),
        None,
        "B's run removes day E, which has no listens in B"
    );
    assert_ne!(a_d_read.len(), b_d_read.len());

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let (part_d, part_e) = (part_d.clone(), part_e.clone());
        let (a_d, b_d, a_e) = (a_d_read.clone(), b_d_read.clone(), a_e_read.clone());
        std::thread::spawn(move || {
            let mut seen = Seen::default();
            let flag = |seen: &mut Seen, v: String| {
                if seen.violations.len() < 20 {
                    seen.violations.push(v);
                }
            };
            while !stop.load(Ordering::Relaxed) {
                match observe(&part_d) {
                    Ok(Some(rows)) if rows == a_d => seen.d_old_or_new[0] += 1,
                    Ok(Some(rows)) if rows == b_d => seen.d_old_or_new[1] += 1,
                    Ok(Some(rows)) => flag(
                        &mut seen,
                        format!(
                            "day D: {} rows that are neither A's {} nor B's {}",
                            rows.len(),
                            a_d.len(),
                            b_d.len()
                        ),
                    ),
                    Ok(None) => flag(&mut seen, "day D: partition missing between runs".into()),
                    Err(e) => flag(&mut seen, format!("day D: {e}")),
                }
                match observe(&part_e) {
                    Ok(None) => seen.e_absent += 1,
                    Ok(Some(rows)) if rows == a_e => seen.e_complete += 1,
                    Ok(Some(rows)) => flag(&mut seen, format!("day E: {} rows, not A's {}", rows.len(), a_e.len())),
                    Err(e) => flag(&mut seen, format!("day E: {e}")),
                }
            }
            seen
        })
    };

    // Alternate A and B: at least 30 runs, bounded in time.
    let t0 = Instant::now();
    let mut runs = 0;
    while runs < 30 && t0.elapsed() < Duration::from_secs(30) {
        run_batch(&out, if runs % 2 == 0 { &a } else { &b }, range);
        runs += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let seen = reader.join().expect("reader thread");
    let observations = seen.d_old_or_new[0] + seen.d_old_or_new[1];
    eprintln!(
        "{runs} runs in {:.1} s; day D seen as A {} times, as B {} times; day E absent {} times, complete {} times",
        t0.elapsed().as_secs_f64(),
        seen.d_old_or_new[0],
        seen.d_old_or_new[1],
        seen.e_absent,
        seen.e_complete
    );
    assert!(
        seen.violations.is_empty(),
        "a reader saw a partition that was not whole ({} violations, first ones):\n{}",
        seen.violations.len(),
        seen.violations.join("\n")
    );
    assert!(runs >= 10, "only {runs} runs in 30 s: too few to test anything");
    assert!(
        observations >= 100,
        "only {observations} observations of day D: {seen:?}"
    );
    assert!(
        seen.d_old_or_new[0] > 0 && seen.d_old_or_new[1] > 0,
        "the reader should have seen both A's and B's day D: {seen:?}"
    );
    assert!(
        seen.e_absent > 0 && seen.e_complete > 0,
        "the reader should have seen day E both absent and present: {seen:?}"
    );
    // The last run's contents are in place (runs alternate A, B, A, ...).
    let last = observe(&part_d).unwrap().expect("day D");
    assert_eq!(last, if runs % 2 == 0 { b_d_read } else { a_d_read });
}
