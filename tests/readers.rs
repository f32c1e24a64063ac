//! Other readers (pyarrow, DuckDB) read the job's output as tables.md says:
//! generated dirty data through the real binary, then `tests/py/check_outputs.py`
//! checks every table's schema, nulls, partition values, key order, row counts
//! (against the Rust reader and the run report) and a few row rules.
//!
//! Needs a Python with pyarrow and duckdb: `$SKIPFLOW_PYTHON` (set by
//! `make test`), else `python3` if it has both; otherwise the test fails.

mod common;

use common::{harness, output};
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
    let (_, out) =
        harness::generate_and_batch(dir.path(), &["--users", "200", "--days", "3", "--seed", "7", "--dirty"]);

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

    check_with_python(&python, &out, dir.path(), &expected_tables, &report_rows, None);
}

/// Runs `tests/py/check_outputs.py` over `out` against what the Rust reader read.
fn check_with_python(
    python: &str,
    out: &Path,
    dir: &Path,
    expected_tables: &BTreeMap<String, BTreeMap<String, usize>>,
    report_rows: &BTreeMap<String, u64>,
    final_parts: Option<Vec<String>>,
) {
    let expected_path = dir.join("expected.json");
    std::fs::write(
        &expected_path,
        serde_json::to_vec_pretty(
            &json!({"tables": expected_tables, "report_rows": report_rows, "final": final_parts}),
        )
        .unwrap(),
    )
    .unwrap();

    let res = Command::new(python)
        .arg(manifest().join("tests/py/check_outputs.py"))
        .arg(out)
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

/// The continuous mode's outputs, `late_events` included, read the same way.
#[test]
fn pyarrow_and_duckdb_read_continuous_outputs_with_late_events() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use skipflow::continuous::{self, RunConfig, StartAt};
    let python = python();
    let k = skipflow::broker::EmbeddedKafka::start(None).unwrap();
    k.create_topic("listen-events", 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = RunConfig {
        output: out.clone(),
        kafka: skipflow::source::kafka::KafkaInput::new(k.bootstrap(), "listen-events"),
        start: StartAt::Earliest,
        commit_interval: std::time::Duration::from_millis(200),
        finalize_after: std::time::Duration::from_secs(3600),
        workers: 2,
        epoch: std::time::Duration::from_millis(20),
        metrics_addr: None,
        discovery_interval: std::time::Duration::from_secs(30),
        topology: Default::default(),
        storage: Default::default(),
        quality: Default::default(),
        standby: false,
        health: Default::default(),
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (c2, s2) = (cfg.clone(), stop.clone());
    let job = std::thread::spawn(move || continuous::run(&c2, s2));
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", k.bootstrap())
        .create()
        .unwrap();
    let (day, hour) = (86_400_000i64, 3_600_000i64);
    let d = 20_400 * day;
    let ev = |id: &str, ts: i64, extra: &str| {
        format!(
            r#"{{"event_id":"{id}","event_type":"skip","user_id":"u-{}","track_id":"t1","artist_id":"a1","ts":{ts},"ms_played":100,"track_duration_ms":2000{extra}}}"#,
            ts % 3
        )
    };
    let mut sent = 0;
    let mut send = |batch: Vec<(String, i64)>| {
        for (v, ts) in batch {
            p.send(BaseRecord::<[u8], str>::to("listen-events").payload(&v).timestamp(ts))
                .map_err(|(e, _)| e)
                .unwrap();
            sent += 1;
        }
        p.flush(std::time::Duration::from_secs(30)).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let c = continuous::read_checkpoint(&out).unwrap();
            if c.is_some_and(|c| c.offsets.values().sum::<i64>() >= sent) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no checkpoint");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    // Day D, then a listen two days later (D final), then late listens for D.
    send(
        (0..20)
            .map(|i| (ev(&format!("e{i}"), d + i * hour, ""), d + i * hour))
            .collect(),
    );
    send(vec![(ev("next", d + 2 * day, ""), d + 2 * day)]);
    send(vec![
        (
            ev("late-a", d + 5 * hour, r#","context":"radio","country":"SE""#),
            d + 2 * day + hour,
        ),
        (ev("late-b", d + 6 * hour, ""), d + 2 * day + hour),
        ("not json".to_string(), d + 2 * day + hour),
    ]);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    job.join().unwrap().unwrap();

    let tables = output::read_tables(&out);
    assert_eq!(tables["late_events"].values().map(|r| r.len()).sum::<usize>(), 2);
    let expected_tables: BTreeMap<String, BTreeMap<String, usize>> = tables
        .iter()
        .map(|(t, parts)| {
            (
                t.clone(),
                parts.iter().map(|(dt, rows)| (dt.clone(), rows.len())).collect(),
            )
        })
        .collect();
    // Day D (2025-11-08) is final in every table but late_events; D+2 is open.
    let final_parts: Vec<String> = [
        "user_daily",
        "user_track_daily",
        "user_artist_daily",
        "user_profile_28d",
    ]
    .iter()
    .map(|t| format!("{t}/dt=2025-11-08"))
    .collect();
    check_with_python(
        &python,
        &out,
        dir.path(),
        &expected_tables,
        &BTreeMap::new(),
        Some(final_parts),
    );
}

/// DuckDB's `parquet_metadata` of one file, as JSON rows.
fn duckdb_parquet_metadata(python: &str, file: &str) -> Vec<Value> {
    let script = r#"
import duckdb, json, sys
rows = duckdb.sql("""select row_group_id, row_group_num_rows, path_in_schema, total_compressed_size,
  total_uncompressed_size, stats_null_count, coalesce(stats_min_value, stats_min), coalesce(stats_max_value, stats_max)
  from parquet_metadata(?) order by row_group_id, column_id""", params=[sys.argv[1]]).fetchall()
keys = ["rg", "rows", "path", "compressed", "uncompressed", "nulls", "min", "max"]
print(json.dumps([dict(zip(keys, [str(v) if k in ("min", "max") and v is not None else v for k, v in zip(keys, r)])) for r in rows]))
"#;
    let out = run(Command::new(python).args(["-c", script, file]));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn inspect_json_parquet_view_matches_duckdbs_parquet_metadata() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let (_, out) = harness::generate_and_batch(dir.path(), &["--users", "100", "--days", "2", "--seed", "5"]);
    let tables = output::read_tables(&out);
    for table in ["user_daily", "user_profile_28d"] {
        let (day, rows) = tables[table].iter().next().map(|(d, r)| (d.clone(), r.len())).unwrap();
        let text = run(Command::new(BIN)
            .arg("inspect")
            .arg(&out)
            .args(["--table", table, "--day", &day, "--json"]));
        let v: Value = serde_json::from_slice(&text.stdout).unwrap();
        let part = &v["tables"][0]["days"][0];
        assert_eq!(part["day"], day.as_str(), "{v}");
        assert_eq!(part["rows"], rows, "{v}");
        let file = &part["files"][0];
        let ours: Vec<(i64, String, i64, i64, Option<u64>)> = file["row_groups"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .flat_map(|(i, rg)| {
                rg["columns"].as_array().unwrap().iter().map(move |c| {
                    (
                        i as i64,
                        c["column"].as_str().unwrap().to_string(),
                        c["compressed_bytes"].as_i64().unwrap(),
                        c["uncompressed_bytes"].as_i64().unwrap(),
                        c["nulls"].as_u64(),
                    )
                })
            })
            .collect();
        let duck = duckdb_parquet_metadata(&python, file["file"].as_str().unwrap());
        let theirs: Vec<(i64, String, i64, i64, Option<u64>)> = duck
            .iter()
            .map(|r| {
                (
                    r["rg"].as_i64().unwrap(),
                    r["path"].as_str().unwrap().replace(", ", "."),
                    r["compressed"].as_i64().unwrap(),
                    r["uncompressed"].as_i64().unwrap(),
                    r["nulls"].as_u64(),
                )
            })
            .collect();
        assert_eq!(ours, theirs, "{table}: inspect vs DuckDB's parquet_metadata");
        let group_rows: i64 = file["row_groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["rows"].as_i64().unwrap())
            .sum();
        assert_eq!(group_rows, rows as i64);
        // Min and max of the plain columns, as DuckDB reads them.
        for col in ["user_id", "listens", "active_days"] {
            let Some(c) = file["row_groups"][0]["columns"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["column"] == col)
            else {
                continue;
            };
            let d = duck.iter().find(|r| r["rg"] == 0 && r["path"] == col).unwrap();
            assert_eq!((&c["min"], &c["max"]), (&d["min"], &d["max"]), "{table}.{col}");
        }
    }
    // The text view shows the same row groups and statistics.
    let (day, _) = tables["user_daily"].iter().next().unwrap();
    let text = run(Command::new(BIN)
        .arg("inspect")
        .arg(&out)
        .args(["--table", "user_daily", "--day", day]));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("row group 0:") && text.contains("uncompressed"), "{text}");
    assert!(text.contains("listens_by_hour.list.item"), "{text}");
}
