//! The command line as cli.md promises it to operators' scripts: exit codes
//! (0, 2 with a one-line message, 3 while locked, 1 otherwise), job files
//! (flags win), `--help`, and `generate` + `batch` + `inspect` end to end.

use serde_json::Value;
use skipflow::store::{LockMode, Store};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_skipflow");

/// Longest any one command may take; a hung run fails the test instead of hanging it.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the binary with a clean log setting, killing it after [`TIMEOUT`].
fn skipflow<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("SKIPFLOW_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = format!("{cmd:?}");
    let mut child = cmd.spawn().expect("run skipflow");
    let mut pipe_out = child.stdout.take().unwrap();
    let mut pipe_err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = pipe_out.read_to_end(&mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = pipe_err.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for skipflow") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = t_err.join().unwrap();
            panic!(
                "{shown} did not finish within {TIMEOUT:?} (killed); stderr so far:\n{}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> Output {
    assert_eq!(o.status.code(), Some(0), "expected success\n{}", show(&o));
    o
}

/// Asserts exit code `code` and exactly one line on stderr, starting with
/// `skipflow: error:` and containing every one of `needles`; returns the line.
fn fails_with(o: &Output, code: i32, needles: &[&str]) -> String {
    assert_eq!(o.status.code(), Some(code), "expected exit code {code}\n{}", show(o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    assert_eq!(lines.len(), 1, "expected a one-line message on stderr\n{}", show(o));
    let line = lines[0];
    assert!(
        line.starts_with("skipflow: error: "),
        "message does not start with `skipflow: error:`: {line}"
    );
    for n in needles {
        assert!(line.contains(n), "message should mention {n:?}: {line}");
    }
    line.to_string()
}

fn p(path: &Path) -> String {
    path.to_string_lossy().to_string()
}

/// `skipflow generate` into `dir/name` (clean unless `dirty`).
fn generate(dir: &Path, name: &str, users: u32, days: u32, seed: u64, dirty: bool) -> PathBuf {
    let path = dir.join(name);
    let (u, d, s) = (users.to_string(), days.to_string(), seed.to_string());
    let mut args = vec!["generate", "--users", &u, "--days", &d, "--seed", &s, "--output"];
    let out = p(&path);
    args.push(&out);
    if dirty {
        args.push("--dirty");
    }
    ok(skipflow(&args));
    path
}

/// Every file under `out` except skipflow's private `.skipflow/`, with its bytes.
fn snapshot(out: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, acc: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries {
            let path = e.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().to_string();
            if rel == ".skipflow" {
                continue;
            }
            if path.is_dir() {
                acc.insert(format!("{rel}/"), Vec::new());
                walk(root, &path, acc);
            } else {
                acc.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut acc = BTreeMap::new();
    walk(out, out, &mut acc);
    acc
}

/// The run reports in `<out>/_runs/`.
fn reports(out: &Path) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(out.join("_runs")) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

fn partitions(out: &Path, table: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(out.join(table)) else {
        return Vec::new();
    };
    let mut v: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn usage_errors_exit_2_with_a_one_line_message() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    std::fs::write(
        &input,
        concat!(
            r#"{"event_id":"e1","event_type":"play","user_id":"u1","track_id":"t1","artist_id":"a1","#,
            r#""ts":1793577600000,"ms_played":1000,"track_duration_ms":1000}"#,
            "\n"
        ),
    )
    .unwrap();
    let (input, out) = (p(&input), p(&dir.path().join("out")));

    let o = skipflow(["batch", "--input", &input]);
    fails_with(&o, 2, &["--output"]);

    let o = skipflow(["batch", "--input", &input, "--output", &out, "--from", "2026-11-01"]);
    fails_with(&o, 2, &["--from", "--to"]);
    let o = skipflow(["batch", "--input", &input, "--output", &out, "--to", "2026-11-01"]);
    fails_with(&o, 2, &["--from", "--to"]);

    let o = skipflow([
        "batch",
        "--input",
        &input,
        "--output",
        &out,
        "--from",
        "2026-11-03",
        "--to",
        "2026-11-02",
    ]);
    fails_with(&o, 2, &["--from", "--to"]);

    let o = skipflow([
        "batch",
        "--input",
        &input,
        "--output",
        &out,
        "--from",
        "2026-13-01",
        "--to",
        "2026-12-01",
    ]);
    fails_with(&o, 2, &["--from", "2026-13-01", "YYYY-MM-DD"]);
    let o = skipflow([
        "batch",
        "--input",
        &input,
        "--output",
        &out,
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-31",
    ]);
    fails_with(&o, 2, &["--to", "2026-11-31"]);

    let missing = p(&dir.path().join("no-such-file.ndjson"));
    let o = skipflow(["batch", "--input", &missing, "--output", &out]);
    fails_with(&o, 2, &["no-such-file.ndjson"]);

    let o = skipflow(["batch", "--input", &input, "--output", &out, "--workers", "0"]);
    fails_with(&o, 2, &["--workers"]);

    // Nothing was written by any of these.
    assert!(
        !dir.path().join("out").exists(),
        "a usage error created the output directory"
    );

    // clap's own usage errors also exit 2.
    let o = skipflow(["batch", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let o = skipflow(["no-such-command"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
}

#[test]
fn inspect_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = p(dir.path());
    let o = skipflow(["inspect", &d, "--table", "no_such_table"]);
    fails_with(&o, 2, &["no_such_table", "user_daily"]);
}

#[test]
fn inspect_bad_day_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = p(dir.path());
    let o = skipflow(["inspect", &d, "--day", "2026-13-01"]);
    fails_with(&o, 2, &["2026-13-01"]);
}

#[test]
fn invalid_job_files_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("bad.toml");
    std::fs::write(&job, "outptu = \"/tmp/x\"\ninput = [\"a.ndjson\"]\n").unwrap();
    let o = skipflow(["batch", "--job", &p(&job)]);
    fails_with(&o, 2, &["bad.toml", "outptu"]);

    std::fs::write(&job, "output = [1, 2\n").unwrap();
    let o = skipflow(["batch", "--job", &p(&job)]);
    fails_with(&o, 2, &["bad.toml"]);

    std::fs::write(&job, "workers = \"two\"\n").unwrap();
    let o = skipflow(["batch", "--job", &p(&job)]);
    fails_with(&o, 2, &["bad.toml", "workers"]);

    let o = skipflow(["batch", "--job", &p(&dir.path().join("absent.toml"))]);
    fails_with(&o, 2, &["absent.toml"]);
}

#[test]
fn job_file_settings_apply_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let events = generate(dir.path(), "events.ndjson", 60, 3, 5, false);
    let job_out = dir.path().join("job-out");
    let flag_out = dir.path().join("flag-out");
    let job = dir.path().join("daily.toml");
    std::fs::write(
        &job,
        format!(
            "# a daily job\noutput = {:?}\ninput = [{:?}]\nworkers = 1\nfrom = \"2026-11-01\"\nto = \"2026-11-01\"\n",
            p(&job_out),
            p(&events)
        ),
    )
    .unwrap();

    // The job file alone.
    ok(skipflow(["batch", "--quiet", "--job", &p(&job)]));
    let r = reports(&job_out);
    assert_eq!(r.len(), 1, "one run report in the job file's output");
    assert_eq!(r[0]["range"], serde_json::json!(["2026-11-01", "2026-11-01"]));
    assert_eq!(r[0]["workers"], 1);
    assert_eq!(partitions(&job_out, "user_daily"), vec!["dt=2026-11-01"]);

    // Flags win over the job file: output, range and workers.
    let o = ok(skipflow([
        "batch",
        "--quiet",
        "--job",
        &p(&job),
        "--output",
        &p(&flag_out),
        "--from",
        "2026-11-02",
        "--to",
        "2026-11-03",
        "--workers",
        "2",
    ]));
    let r = reports(&flag_out);
    assert_eq!(r.len(), 1, "one run report in the flag's output\n{}", show(&o));
    assert_eq!(r[0]["range"], serde_json::json!(["2026-11-02", "2026-11-03"]));
    assert_eq!(r[0]["workers"], 2);
    assert_eq!(
        partitions(&flag_out, "user_daily"),
        vec!["dt=2026-11-02", "dt=2026-11-03"]
    );
    assert_eq!(
        reports(&job_out).len(),
        1,
        "the job file's output must not be written when --output is given"
    );

    // A flag given as --input wins over the job file's input list.
    let other = generate(dir.path(), "other.ndjson", 10, 1, 9, false);
    let flag_out2 = dir.path().join("flag-out2");
    ok(skipflow([
        "batch",
        "--quiet",
        "--job",
        &p(&job),
        "--output",
        &p(&flag_out2),
        "--input",
        &p(&other),
    ]));
    let r = reports(&flag_out2);
    assert_eq!(r[0]["inputs"][0]["path"], p(&other), "inputs: {}", r[0]["inputs"]);
    assert_eq!(
        r[0]["inputs"].as_array().unwrap().len(),
        1,
        "inputs: {}",
        r[0]["inputs"]
    );
}

#[test]
fn locked_output_exits_3_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = generate(dir.path(), "a.ndjson", 40, 2, 1, false);
    let b = generate(dir.path(), "b.ndjson", 40, 2, 2, true);

    // A fresh directory held by another run.
    let fresh = dir.path().join("fresh");
    {
        let _lock = Store::local(&fresh)
            .lock("lock", LockMode::Fail, skipflow::store::LEASE_DEFAULT)
            .expect("take the lock");
        let o = skipflow(["batch", "--quiet", "--input", &p(&a), "--output", &p(&fresh)]);
        fails_with(&o, 3, &["locked", "fresh"]);
        assert!(
            snapshot(&fresh).is_empty(),
            "published while locked: {:?}",
            snapshot(&fresh).keys()
        );
    }
    // Once released, the same command works.
    ok(skipflow([
        "batch",
        "--quiet",
        "--input",
        &p(&a),
        "--output",
        &p(&fresh),
    ]));
    assert!(!partitions(&fresh, "user_daily").is_empty());

    // A directory with earlier output: unchanged while another run holds it.
    let before = snapshot(&fresh);
    {
        let _lock = Store::local(&fresh)
            .lock("lock", LockMode::Fail, skipflow::store::LEASE_DEFAULT)
            .expect("take the lock");
        let o = skipflow([
            "batch",
            "--quiet",
            "--input",
            &p(&b),
            "--output",
            &p(&fresh),
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-02",
        ]);
        fails_with(&o, 3, &["locked"]);
        let after = snapshot(&fresh);
        assert_eq!(
            before.keys().collect::<Vec<_>>(),
            after.keys().collect::<Vec<_>>(),
            "files changed while locked"
        );
        assert!(before == after, "file contents changed while locked");
    }
}

#[test]
fn failed_run_exits_1_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let good = generate(dir.path(), "good.ndjson", 30, 2, 3, false);
    let out = dir.path().join("out");
    ok(skipflow([
        "batch",
        "--quiet",
        "--input",
        &p(&good),
        "--output",
        &p(&out),
    ]));
    let before = snapshot(&out);

    // Not gzip at all, but named .gz: reading fails mid-run.
    let broken = dir.path().join("broken.ndjson.gz");
    std::fs::write(&broken, b"this is not gzip data\n".repeat(100)).unwrap();
    let o = skipflow([
        "batch",
        "--quiet",
        "--input",
        &p(&good),
        &p(&broken),
        "--output",
        &p(&out),
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-02",
    ]);
    assert_eq!(o.status.code(), Some(1), "expected exit code 1\n{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let line = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        line.starts_with("skipflow: error: "),
        "last line should be the error:\n{}",
        show(&o)
    );
    assert!(
        line.contains("broken.ndjson.gz"),
        "the message should name the file that failed: {line}"
    );
    assert!(
        line.contains("no partition was published"),
        "the message should say nothing was published: {line}"
    );
    assert!(snapshot(&out) == before, "a failed run changed the output directory");
}

#[test]
fn help_documents_batch_flags_and_exit_codes() {
    let o = ok(skipflow(["--help"]));
    let top = String::from_utf8_lossy(&o.stdout).to_lowercase();
    for w in ["batch", "generate", "inspect", "exit codes"] {
        assert!(top.contains(w), "`skipflow --help` should mention {w:?}:\n{top}");
    }

    let o = ok(skipflow(["batch", "--help"]));
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in ["--input", "--output", "--from", "--to", "--workers", "--job"] {
        assert!(
            help.contains(flag),
            "`skipflow batch --help` should mention {flag}:\n{help}"
        );
    }
    let lower = help.to_lowercase();
    assert!(
        lower.contains("exit code") && lower.contains('3') && lower.contains("lock"),
        "`skipflow batch --help` should document the exit codes (0, 1, 2, 3 = locked):\n{help}"
    );
}

/// The number after `label` on the summary line that starts with it.
fn summary_number(stdout: &str, label: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(label))
        .unwrap_or_else(|| panic!("no {label:?} line in the batch summary:\n{stdout}"));
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number on the {label:?} line: {line}"))
}

#[test]
fn generate_batch_inspect_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let events = generate(dir.path(), "events.ndjson", 80, 3, 21, true);
    let out = dir.path().join("out");

    let o = ok(skipflow([
        "batch",
        "--quiet",
        "--workers",
        "2",
        "--input",
        &p(&events),
        "--output",
        &p(&out),
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-03",
    ]));
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();

    // The run report the summary points at.
    let path = stdout
        .lines()
        .find_map(|l| l.strip_prefix("run report: "))
        .unwrap_or_else(|| panic!("no `run report:` line:\n{stdout}"));
    let report: Value = serde_json::from_slice(&std::fs::read(path.trim()).unwrap()).unwrap();
    assert!(
        Path::new(path.trim()).starts_with(out.join("_runs")),
        "run report outside _runs: {path}"
    );
    let c = &report["counts"];
    let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("counts.{k} missing: {c}"));
    assert_eq!(
        n("read"),
        n("kept") + n("duplicates") + n("rejected") + n("out_of_range") + n("late"),
        "accounting identity in the run report: {c}"
    );
    assert_eq!(n("late"), 0, "batch has no late events");
    let by_reason: u64 = c["rejected_by_reason"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(by_reason, n("rejected"), "rejected_by_reason sums to rejected: {c}");
    assert!(n("duplicates") > 0 && n("rejected") > 0 && n("out_of_range") > 0, "{c}");

    // The printed summary agrees with the report.
    for label in ["read", "kept", "duplicates", "rejected", "out_of_range"] {
        assert_eq!(summary_number(&stdout, label), n(label), "summary {label}:\n{stdout}");
    }
    for table in [
        "user_daily",
        "user_track_daily",
        "user_artist_daily",
        "user_profile_28d",
        "rejected_events",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(table)),
            "summary should list {table}:\n{stdout}"
        );
    }

    // Every daily table has the range's partitions, each final.
    for table in [
        "user_daily",
        "user_track_daily",
        "user_artist_daily",
        "user_profile_28d",
    ] {
        assert_eq!(
            partitions(&out, table),
            vec!["dt=2026-11-01", "dt=2026-11-02", "dt=2026-11-03"],
            "{table}"
        );
        for dt in partitions(&out, table) {
            let pd = out.join(table).join(&dt);
            assert!(pd.join("_SUCCESS").is_file(), "{} has no _SUCCESS", pd.display());
            assert!(
                pd.join("part-00000.parquet").is_file(),
                "{} has no data file",
                pd.display()
            );
        }
    }

    // inspect: every table with its partitions and rows, as the report counted them.
    let o = ok(skipflow(["inspect", &p(&out)]));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    for (table, w) in report["tables"].as_object().unwrap() {
        let (parts, rows) = (w["partitions_written"].as_u64().unwrap(), w["rows"].as_u64().unwrap());
        let want = format!("{table}  ({parts} partitions, {rows} rows)");
        assert!(
            text.lines().any(|l| l.trim() == want),
            "inspect should show {want:?}:\n{text}"
        );
    }
    assert!(
        text.contains("user_id: string"),
        "inspect should show the columns:\n{text}"
    );
    assert!(
        text.contains("dt=2026-11-02"),
        "inspect should list partitions:\n{text}"
    );

    // inspect one table and day: its rows.
    let o = ok(skipflow([
        "inspect",
        &p(&out),
        "--table",
        "user_daily",
        "--day",
        "2026-11-02",
        "--limit",
        "3",
    ]));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let shown = text.lines().filter(|l| l.trim_start().starts_with("user_id=")).count();
    assert_eq!(shown, 3, "inspect --day --limit 3 should show 3 rows:\n{text}");
    assert!(
        !text.contains("user_track_daily"),
        "inspect --table shows only that table:\n{text}"
    );
}

#[test]
fn shipped_job_files_parse_and_flags_override_them() {
    let dir = tempfile::tempdir().unwrap();
    let events = generate(dir.path(), "events.ndjson", 30, 2, 13, false);
    let jobs = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&jobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no job files in {}", jobs.display());
    for job in names {
        let name = job.file_stem().unwrap().to_string_lossy().to_string();
        let out = dir.path().join(format!("out-{name}"));
        let o = skipflow([
            "batch",
            "--quiet",
            "--job",
            &p(&job),
            "--output",
            &p(&out),
            "--input",
            &p(&events),
            "--from",
            "2026-11-02",
            "--to",
            "2026-11-02",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}:\n{}", job.display(), show(&o));
        let r = reports(&out);
        assert_eq!(r.len(), 1, "{}", job.display());
        assert_eq!(
            r[0]["range"],
            serde_json::json!(["2026-11-02", "2026-11-02"]),
            "{}",
            job.display()
        );
        assert_eq!(
            partitions(&out, "user_daily"),
            vec!["dt=2026-11-02"],
            "{}",
            job.display()
        );
    }
}
