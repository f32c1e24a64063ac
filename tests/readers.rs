//! Other readers (pyarrow, DuckDB) read the job's output as tables.md says:
//! generated dirty data through the real binary, then `tests/py/check_outputs.py`
//! checks every table's schema, nulls, partition values, key order, row counts
//! (against the Rust reader and the run report) and a few row rules.
//!
//! Needs a Python with pyarrow and duckdb: `$SKIPFLOW_PYTHON` (set by
//! `make test`), else `python3` if it has both; otherwise the test fails.

#[path = "common/output.rs"]
mod output;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_skipflow");

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The Python to read outputs with: `$SKIPFLOW_PYTHON`, else `python3` if it
/// can import pyarrow and duckdb. Panics (never skips) when there is none.
fn python() -> String {
    if let Some(p) = std::env::var_os("SKIPFLOW_PYTHON").filter(|p| !p.is_empty()) {
        let p = p.to_string_lossy().to_string();
        let ok = Command::new(&p)
            .args(["-c", "import pyarrow, duckdb"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "SKIPFLOW_PYTHON={p} cannot import pyarrow and duckdb; run `make test` (it installs them)"
        );
        return p;
    }
    let ok = Command::new("python3")
        .args(["-c", "import pyarrow, duckdb"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "this test reads the outputs with pyarrow and DuckDB: set SKIPFLOW_PYTHON to a Python that has both, \
         or run `make test` (it installs them into a venv and sets SKIPFLOW_PYTHON)"
    );
    "python3".into()
}

/// The single run report in `<out>/_runs/`.
fn run_report(out: &Path) -> Value {
    let reports: Vec<PathBuf> = std::fs::read_dir(out.join("_runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(reports.len(), 1, "one run report expected in {}/_runs", out.display());
    serde_json::from_slice(&std::fs::read(&reports[0]).unwrap()).unwrap()
}

#[test]
fn pyarrow_and_duckdb_read_every_table_as_declared() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let out = dir.path().join("out");

    run(Command::new(BIN)
        .args([
            "generate", "--users", "200", "--days", "3", "--seed", "7", "--dirty", "--output",
        ])
        .arg(&events));
    run(Command::new(BIN)
        .args(["batch", "--quiet", "--workers", "2", "--input"])
        .arg(&events)
        .arg("--output")
        .arg(&out));

    // What the Rust side reads (this also checks every file's schema).
    let tables = output::read_tables(&out);
    let mut expected_tables: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for (t, parts) in &tables {
        expected_tables.insert(
            t.clone(),
            parts.iter().map(|(dt, rows)| (dt.clone(), rows.len())).collect(),
        );
    }
    for t in [
        "user_daily",
        "user_track_daily",
        "user_artist_daily",
        "user_profile_28d",
        "rejected_events",
    ] {
        let rows: usize = expected_tables.get(t).map(|p| p.values().sum()).unwrap_or(0);
        assert!(rows > 0, "{t} has no rows: the data set should exercise every table");
    }

    let report = run_report(&out);
    let c = &report["counts"];
    let n = |k: &str| {
        c[k].as_u64()
            .unwrap_or_else(|| panic!("counts.{k} missing in the run report"))
    };
    assert_eq!(
        n("read"),
        n("kept") + n("duplicates") + n("rejected") + n("out_of_range") + n("late"),
        "accounting identity: {c}"
    );
    assert!(
        n("duplicates") > 0 && n("rejected") > 0,
        "dirty data should have duplicates and rejects: {c}"
    );
    let mut report_rows = BTreeMap::new();
    for (t, w) in report["tables"].as_object().unwrap() {
        report_rows.insert(t.clone(), w["rows"].as_u64().unwrap());
    }
    assert_eq!(
        report_rows.get("rejected_events").copied(),
        Some(n("rejected")),
        "rejected_events rows vs counts.rejected"
    );

    let expected_path = dir.path().join("expected.json");
    std::fs::write(
        &expected_path,
        serde_json::to_vec_pretty(&json!({"tables": expected_tables, "report_rows": report_rows})).unwrap(),
    )
    .unwrap();

    let res = Command::new(&python)
        .arg(manifest().join("tests/py/check_outputs.py"))
        .arg(&out)
        .arg(manifest().join("schemas/tables.json"))
        .arg(&expected_path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&res.stdout);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(
        res.status.success(),
        "check_outputs.py failed ({}) on {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        res.status,
        out.display()
    );
    assert!(
        stdout.contains("check_outputs: OK"),
        "no summary line from check_outputs.py:\n{stdout}\n{stderr}"
    );
}
