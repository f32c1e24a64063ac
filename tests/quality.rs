//! Quality gates in batch (semantics.md, "Quality gates"): each gate fires
//! at its threshold and not below it, `warn` publishes and reports, `fail`
//! publishes nothing and exits 4; the volume baseline is exactly the
//! previous 7 published days and tolerates fewer; schema drift of a
//! published partition is caught.

mod common;

use common::proc;
use skipflow::batch::{self, BatchConfig, BatchOutcome};
use skipflow::quality::{Check, Outcome, Quality, Severity};
use std::path::{Path, PathBuf};

const DAY_MS: i64 = 86_400_000;

/// The tests of this file one at a time: several run batches in this
/// process on one output after another, and a child process forked by a
/// concurrent test between a lock's open and its release would inherit the
/// output's flock and hold it until it execs (the next batch would find the
/// output locked).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
/// 2026-01-05: day numbers in these tests count from it.
const BASE_DAY: i32 = 20458;

fn event(id: &str, user: &str, day: i32, minute: i64) -> String {
    let ts = (BASE_DAY + day) as i64 * DAY_MS + 3_600_000 + minute * 60_000;
    format!(
        r#"{{"event_id":"{id}","event_type":"play","user_id":"{user}","track_id":"t1","artist_id":"a1","ts":{ts},"ms_played":1000,"track_duration_ms":1000}}"#
    )
}

/// `n` listens on `day`, one per user, plus `bad` malformed lines and
/// `dups` resent events.
fn day_file(dir: &Path, day: i32, n: usize, bad: usize, dups: usize) -> PathBuf {
    let mut lines: Vec<String> = (0..n)
        .map(|i| event(&format!("e{day}-{i}"), &format!("u{i}"), day, 0))
        .collect();
    lines.extend((0..dups).map(|i| event(&format!("e{day}-{i}"), &format!("u{i}"), day, 0)));
    lines.extend((0..bad).map(|i| format!("{{not json {i}")));
    let p = dir.join(format!("day{day}.ndjson"));
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

fn run(input: &Path, out: &Path, day: i32, quality: &Quality) -> BatchOutcome {
    batch::run(&BatchConfig {
        output: out.to_path_buf(),
        inputs: vec![input.to_string_lossy().to_string()],
        kafka: None,
        range: Some((BASE_DAY + day, BASE_DAY + day)),
        workers: 2,
        progress: false,
        topology: Default::default(),
        storage: Default::default(),
        quality: quality.clone(),
    })
    .expect("batch run")
}

/// All gates off but the ones a test sets.
fn only(f: impl FnOnce(&mut Quality)) -> Quality {
    let mut q = Quality::default();
    q.rejected_share.severity = Severity::Off;
    q.duplicate_share.severity = Severity::Off;
    q.late_share.severity = Severity::Off;
    q.kept_volume.severity = Severity::Off;
    q.table_rows.severity = Severity::Off;
    q.schema_drift.severity = Severity::Off;
    f(&mut q);
    q
}

fn check<'a>(out: &'a BatchOutcome, gate: &str, table: Option<&str>) -> &'a Check {
    out.report
        .quality
        .iter()
        .find(|c| c.gate == gate && c.table.as_deref() == table)
        .unwrap_or_else(|| panic!("no {gate} {table:?} check in {:#?}", out.report.quality))
}

fn day_published(out: &Path, day: i32) -> bool {
    let d = skipflow::dates::day_to_string(BASE_DAY + day);
    out.join(format!("user_daily/dt={d}/part-00000.parquet")).exists()
}

#[test]
fn share_gates_fire_at_their_threshold_and_not_below() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // 95 good + 5 malformed: rejected share 0.05. 90 good + 10 resent: duplicate share 0.1.
    let rejects = day_file(dir.path(), 0, 95, 5, 0);
    let dups = day_file(dir.path(), 1, 90, 0, 10);
    let cases: [(&Path, &str, f64, Severity, Outcome); 6] = [
        (&rejects, "rejected_share", 0.05, Severity::Fail, Outcome::Fail),
        (&rejects, "rejected_share", 0.0501, Severity::Fail, Outcome::Pass),
        (&rejects, "rejected_share", 0.05, Severity::Warn, Outcome::Warn),
        (&dups, "duplicate_share", 0.1, Severity::Fail, Outcome::Fail),
        (&dups, "duplicate_share", 0.1001, Severity::Fail, Outcome::Pass),
        (&dups, "duplicate_share", 0.1, Severity::Warn, Outcome::Warn),
    ];
    for (i, (input, gate, max, severity, expect)) in cases.into_iter().enumerate() {
        let out = dir.path().join(format!("out{i}"));
        let q = only(|q| {
            let g = match gate {
                "rejected_share" => &mut q.rejected_share,
                _ => &mut q.duplicate_share,
            };
            g.max = max;
            g.severity = severity;
        });
        let day = if gate == "rejected_share" { 0 } else { 1 };
        let o = run(input, &out, day, &q);
        let c = check(&o, gate, None);
        assert_eq!(c.outcome, expect, "case {i}: {c:?}");
        let published = expect != Outcome::Fail;
        assert_eq!(o.report.published, published, "case {i}");
        assert_eq!(day_published(&out, day), published, "case {i}");
        assert_eq!(batch::gate_verdict(&o).is_err(), !published, "case {i}");
        // The late share is 0 in batch and never fires.
        assert_eq!(check(&o, "late_share", None).value, 0.0);
    }
}

/// Daily runs with `counts[d]` listens on day d, every gate of `q` a
/// warning but on the last day; the outcome of the last.
fn daily_runs(dir: &Path, counts: &[usize], q: &Quality) -> BatchOutcome {
    let out = dir.join("out");
    let mut warn = q.clone();
    for s in [&mut warn.kept_volume.severity, &mut warn.table_rows.severity] {
        if *s == Severity::Fail {
            *s = Severity::Warn;
        }
    }
    let mut last = None;
    for (d, n) in counts.iter().enumerate() {
        let input = day_file(dir, d as i32, *n, 0, 0);
        let q = if d + 1 == counts.len() { q } else { &warn };
        last = Some(run(&input, &out, d as i32, q));
    }
    last.unwrap()
}

#[test]
fn the_volume_baseline_is_exactly_the_previous_seven_published_days() {
    let _serial = serial();
    let band = |q: &mut Quality| {
        q.kept_volume.severity = Severity::Fail;
        q.table_rows.severity = Severity::Warn;
    };
    // Days 1..=7 have 10,10,10,10,12,12,12 (median 10); day 0's 100 would
    // make the median of eight days 11. Day 8 has twice the median.
    let mut counts = vec![100, 10, 10, 10, 10, 12, 12, 12, 20];
    let dir = tempfile::tempdir().unwrap();
    let o = daily_runs(dir.path(), &counts, &only(band));
    let c = check(&o, "kept_volume", None);
    assert_eq!(c.baseline, Some(10.0), "{c:?}");
    assert_eq!(c.baseline_days.len(), 7, "{c:?}");
    assert_eq!(c.baseline_days[0], skipflow::dates::day_to_string(BASE_DAY + 1));
    assert_eq!((c.ratio, c.outcome), (Some(2.0), Outcome::Fail), "{c:?}");
    assert!(!day_published(&dir.path().join("out"), 8));
    let rows = check(&o, "table_rows", Some("user_daily"));
    assert_eq!((rows.value, rows.outcome), (20.0, Outcome::Warn), "{rows:?}");
    // Just below twice the median: published.
    counts[8] = 19;
    let dir = tempfile::tempdir().unwrap();
    let o = daily_runs(dir.path(), &counts, &only(band));
    assert_eq!(check(&o, "kept_volume", None).outcome, Outcome::Pass);
    assert_eq!(check(&o, "table_rows", Some("user_daily")).outcome, Outcome::Pass);
    assert!(day_published(&dir.path().join("out"), 8));
    // A drop to half the median fires as well; just above it does not.
    for (n, expect) in [(5, Outcome::Fail), (6, Outcome::Pass)] {
        counts[8] = n;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            check(&daily_runs(dir.path(), &counts, &only(band)), "kept_volume", None).outcome,
            expect
        );
    }
}

#[test]
fn a_young_output_uses_the_days_it_has_and_the_first_day_is_not_judged() {
    let _serial = serial();
    let q = only(|q| q.kept_volume.severity = Severity::Fail);
    let dir = tempfile::tempdir().unwrap();
    let first = daily_runs(dir.path(), &[10], &q);
    let c = check(&first, "kept_volume", None);
    assert_eq!((c.outcome, c.baseline), (Outcome::Skipped, None), "{c:?}");
    assert!(first.report.published);
    // Three days 10, 12, 14 (median 12): 24 fires, 23 does not.
    for (n, expect) in [(24, Outcome::Fail), (23, Outcome::Pass)] {
        let dir = tempfile::tempdir().unwrap();
        let o = daily_runs(dir.path(), &[10, 12, 14, n], &q);
        let c = check(&o, "kept_volume", None);
        assert_eq!(
            (c.baseline, c.baseline_days.len(), c.outcome),
            (Some(12.0), 3, expect),
            "{c:?}"
        );
    }
}

#[test]
fn a_range_is_judged_day_by_day_against_the_days_before_each() {
    let _serial = serial();
    // One run over days 0..=8: each day's baseline includes the range's own
    // earlier days, so it judges like nine daily runs.
    let q = only(|q| q.kept_volume.severity = Severity::Warn);
    let dir = tempfile::tempdir().unwrap();
    let counts = [10, 10, 10, 10, 10, 10, 10, 10, 30];
    let lines: Vec<String> = counts
        .iter()
        .enumerate()
        .flat_map(|(d, n)| (0..*n).map(move |i| event(&format!("e{d}-{i}"), &format!("u{i}"), d as i32, 0)))
        .collect();
    let input = dir.path().join("all.ndjson");
    std::fs::write(&input, lines.join("\n")).unwrap();
    let mut cfg = BatchConfig {
        output: dir.path().join("out"),
        inputs: vec![input.to_string_lossy().to_string()],
        kafka: None,
        range: Some((BASE_DAY, BASE_DAY + 8)),
        workers: 2,
        progress: false,
        topology: Default::default(),
        storage: Default::default(),
        quality: q,
    };
    let o = batch::run(&cfg).unwrap();
    let kept: Vec<&Check> = o.report.quality.iter().filter(|c| c.gate == "kept_volume").collect();
    assert_eq!(kept.len(), 9);
    assert_eq!(kept[0].outcome, Outcome::Skipped);
    assert!(kept[1..8].iter().all(|c| c.outcome == Outcome::Pass), "{kept:#?}");
    assert_eq!((kept[8].baseline_days.len(), kept[8].outcome), (7, Outcome::Warn));
    // A rerun of the range replaces its days: their old partitions are not
    // their own baseline.
    cfg.quality.kept_volume.severity = Severity::Fail;
    cfg.range = Some((BASE_DAY + 8, BASE_DAY + 8));
    let again = batch::run(&cfg).unwrap();
    let c = check(&again, "kept_volume", None);
    assert_eq!((c.baseline, c.outcome), (Some(10.0), Outcome::Fail), "{c:?}");
}

#[test]
fn a_published_partition_with_another_schema_is_schema_drift() {
    let _serial = serial();
    use arrow_array::{Array, Int32Array, RecordBatch};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let q = only(|q| {
        q.schema_drift.severity = Severity::Fail;
        q.table_rows.severity = Severity::Warn;
    });
    let o = daily_runs(dir.path(), &[10, 10], &q);
    assert_eq!(check(&o, "schema_drift", None).outcome, Outcome::Pass);
    // Rewrite day 1's user_daily with `listens` as int32, as another writer might.
    let part = out.join(format!(
        "user_daily/dt={}/part-00000.parquet",
        skipflow::dates::day_to_string(BASE_DAY + 1)
    ));
    let file = std::fs::File::open(&part).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let b = &batches[0];
    let i = b.schema().index_of("listens").unwrap();
    let listens = b.column(i).as_any().downcast_ref::<arrow_array::Int64Array>().unwrap();
    let narrow: Int32Array = listens.iter().map(|v| v.map(|v| v as i32)).collect();
    let mut fields: Vec<arrow_schema::Field> = b.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[i] = arrow_schema::Field::new("listens", arrow_schema::DataType::Int32, narrow.is_nullable());
    let mut cols = b.columns().to_vec();
    cols[i] = std::sync::Arc::new(narrow);
    let drifted = RecordBatch::try_new(std::sync::Arc::new(arrow_schema::Schema::new(fields)), cols).unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&part).unwrap(), drifted.schema(), None).unwrap();
    w.write(&drifted).unwrap();
    w.close().unwrap();

    let input = day_file(dir.path(), 2, 10, 0, 0);
    let o = run(&input, &out, 2, &q);
    let c = check(&o, "schema_drift", None);
    assert_eq!((c.value, c.outcome), (1.0, Outcome::Fail), "{c:?}");
    assert!(c.detail.contains("column listens is Int32"), "{c:?}");
    assert!(!day_published(&out, 2));
}

/// `skipflow ARGS`: exit code, the error line, and stdout + stderr.
fn skipflow(args: &[&str]) -> (i32, String, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_skipflow"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    let log = format!("{}{stderr}", String::from_utf8_lossy(&o.stdout));
    (o.status.code().unwrap_or(-1), proc::error_line(&stderr), log)
}

#[test]
fn cli_exits_4_with_one_line_and_publishes_no_partition_when_a_gate_fails() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let input = day_file(dir.path(), 0, 95, 5, 0);
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        "[quality]\nrejected_share = { max = 0.05, severity = \"fail\" }\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let args = [
        "batch",
        "--output",
        out.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ];
    let job_arg = ["--job", job.to_str().unwrap(), "--quiet"];
    let all: Vec<&str> = args.iter().chain(job_arg.iter()).copied().collect();
    let (code, line, log) = skipflow(&all);
    assert_eq!(code, 4, "{log}");
    assert!(line.contains("a quality gate failed: rejected_share"), "{log}");
    assert!(line.contains("nothing was published"), "{line}");
    assert!(log.contains("FAIL rejected_share"), "{log}");
    for t in [
        "user_daily",
        "user_track_daily",
        "user_artist_daily",
        "user_profile_28d",
        "rejected_events",
    ] {
        assert!(!out.join(t).exists(), "{t} was published");
    }
    // The run report records the checks (and that nothing was published).
    let reports: Vec<_> = std::fs::read_dir(out.join("_runs")).unwrap().collect();
    assert_eq!(reports.len(), 1);
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reports[0].as_ref().unwrap().path()).unwrap()).unwrap();
    assert_eq!(r["published"], false);
    assert!(r["quality"].as_array().unwrap().iter().any(|c| c["outcome"] == "fail"));
    // A warn only: exit 0, published.
    std::fs::write(
        &job,
        "[quality]\nrejected_share = { max = 0.05, severity = \"warn\" }\n",
    )
    .unwrap();
    let (code, _, log) = skipflow(&all);
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("warn rejected_share"), "{log}");
    assert!(out.join("user_daily").exists());
    // A threshold that makes no sense is a usage error.
    std::fs::write(&job, "[quality]\nrejected_share = { max = 2.0, severity = \"fail\" }\n").unwrap();
    let (code, line, log) = skipflow(&all);
    assert_eq!(code, 2, "{log}");
    assert!(line.contains("rejected_share.max"), "{log}");
}

/// Produces `lines` to `TOPIC` with message timestamps `ts`.
fn produce_at(addr: &str, recs: &[(String, i64)]) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let p: BaseProducer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .unwrap();
    for (v, ts) in recs {
        p.send(
            BaseRecord::<[u8], [u8]>::to(common::kafka::TOPIC)
                .payload(v.as_bytes())
                .timestamp(*ts),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    }
    p.flush(std::time::Duration::from_secs(30)).unwrap();
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn continuous_holds_a_day_that_fails_a_gate_until_it_is_accepted() {
    let _serial = serial();
    let k = skipflow::broker::EmbeddedKafka::start(None).unwrap();
    k.create_topic(common::kafka::TOPIC, 2).unwrap();
    // Days 0..=7 with 10 listens, day 8 with 30 (3x the median), one listen
    // on day 10 to move the watermark past day 8's end plus an hour.
    let mut recs = Vec::new();
    for (d, n) in [10, 10, 10, 10, 10, 10, 10, 10, 30].iter().enumerate() {
        for i in 0..*n {
            let e = event(&format!("e{d}-{i}"), &format!("u{i}"), d as i32, i as i64);
            recs.push((e, (BASE_DAY + d as i32) as i64 * DAY_MS + 4_000_000));
        }
    }
    recs.push((
        event("late-mover", "u0", 10, 0),
        (BASE_DAY + 10) as i64 * DAY_MS + 7_200_000,
    ));
    produce_at(k.bootstrap(), &recs);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        "finalize_after = \"1h\"\n[quality]\nkept_volume = { min_ratio = 0.5, max_ratio = 2.0, severity = \"fail\" }\n",
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", common::tansu::free_port());
    let mut child = common::cont::skipflow_run(k.bootstrap(), &out)
        .args(["--commit-interval", "300ms", "--workers", "2", "--metrics-addr", &addr])
        .arg("--job")
        .arg(&job)
        .spawn()
        .unwrap();
    let day = |d: i32| skipflow::dates::day_to_string(BASE_DAY + d);
    let success = |d: i32| out.join(format!("user_daily/dt={}/_SUCCESS", day(d))).exists();
    let status = || -> serde_json::Value {
        let text = common::cont::http_get(&addr, "/status");
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
    };
    wait_until("days 0..=7 final", || (0..8).all(success));
    wait_until("day 8 held in /status", || {
        status()["commit"]["held_days"].get(day(8)).is_some()
    });
    let s = status();
    let why = s["commit"]["held_days"][day(8)].as_str().unwrap().to_string();
    assert!(why.contains("kept_volume"), "{why}");
    assert_eq!(s["commit"]["held_days"].as_object().unwrap().len(), 1, "{s}");
    assert!(!success(8), "a held day has no _SUCCESS");
    assert!(
        out.join(format!("user_daily/dt={}/part-00000.parquet", day(8)))
            .exists(),
        "its rows are published"
    );
    let metrics = common::cont::http_get(&addr, "/metrics");
    assert!(metrics.contains("skipflow_days_held 1"), "{metrics}");
    assert!(
        metrics.contains("skipflow_quality_checks_total{outcome=\"fail\"} 1"),
        "{metrics}"
    );
    // The checkpoint holds it, and the commit's report has the checks.
    let ck = skipflow::continuous::read_checkpoint(&out).unwrap().unwrap();
    assert!(ck.held.contains_key(&day(8)));

    // inspect lists it, in text and JSON.
    let o = out.to_str().unwrap();
    let (_, _, text) = skipflow(&["inspect", o]);
    assert!(text.contains(&format!("HELD {}", day(8))), "{text}");
    let (_, _, json) = skipflow(&["inspect", o, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["held_days"].get(day(8)).is_some(), "{v}");

    // accept: a day that is not held is a usage error; the held one is released.
    let (code, line, _) = skipflow(&["accept", o, "--day", &day(7)]);
    assert_eq!(code, 2, "{line}");
    assert!(line.contains("is not held"), "{line}");
    let (code, line, log) = skipflow(&["accept", o, "--day", &day(8)]);
    assert_eq!(code, 0, "{line}{log}");
    assert!(log.contains(&format!("accepted {}", day(8))), "{log}");
    assert!(success(8));
    wait_until("no held day in /status", || {
        status()["commit"]["held_days"]
            .as_object()
            .is_some_and(|h| h.is_empty())
    });
    assert!(common::cont::http_get(&addr, "/metrics").contains("skipflow_days_held 0"));
    common::cont::sigterm(&child);
    assert!(child.wait().unwrap().success());
    let ck = skipflow::continuous::read_checkpoint(&out).unwrap().unwrap();
    assert!(ck.held.is_empty(), "{:?}", ck.held);
}

/// A continuous run on a one-partition topic with `job` until `done` holds.
fn run_until(job: &str, k: &skipflow::broker::EmbeddedKafka, out: &Path, done: impl Fn() -> bool) {
    let dir = out.parent().unwrap();
    let jobfile = dir.join("late.toml");
    std::fs::write(&jobfile, job).unwrap();
    let mut child = common::cont::skipflow_run(k.bootstrap(), out)
        .args(["--commit-interval", "200ms", "--workers", "2", "--job"])
        .arg(&jobfile)
        .spawn()
        .unwrap();
    wait_until("the run to settle", done);
    common::cont::sigterm(&child);
    assert!(child.wait().unwrap().success());
}

#[test]
fn continuous_late_share_is_judged_on_what_was_read_since_the_last_finalization() {
    let _serial = serial();
    // One partition keeps the order: days 0..=2, then a listen on day 4 that
    // finalizes them. Then one late listen for day 1 and a listen on day 6
    // that finalizes day 4: since the first finalization 2 records were
    // read, 1 late, a late share of exactly 0.5. (Day 4 at 02:00 finalizes
    // through day 3, day 6 at 02:00 through day 5.)
    for (max, held) in [(0.5, true), (0.51, false)] {
        let k = skipflow::broker::EmbeddedKafka::start(None).unwrap();
        k.create_topic(common::kafka::TOPIC, 1).unwrap();
        let at = |d: i32, h: i64| (BASE_DAY + d) as i64 * DAY_MS + h * 3_600_000;
        let mut recs: Vec<(String, i64)> = Vec::new();
        for d in 0..3 {
            recs.extend((0..10).map(|i| (event(&format!("e{d}-{i}"), &format!("u{i}"), d, i), at(d, 2))));
        }
        recs.push((event("d4", "u0", 4, 0), at(4, 2)));
        produce_at(k.bootstrap(), &recs);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let job = format!(
            "finalize_after = \"1h\"\n[quality]\nlate_share = {{ max = {max}, severity = \"fail\" }}\n\
             kept_volume = {{ min_ratio = 0.5, max_ratio = 2.0, severity = \"off\" }}\n\
             table_rows = {{ min_ratio = 0.5, max_ratio = 2.0, severity = \"off\" }}\n"
        );
        let ck = || skipflow::continuous::read_checkpoint(&out).ok().flatten();
        run_until(&job, &k, &out, || {
            ck().is_some_and(|c| c.final_through == Some(BASE_DAY + 3))
        });
        produce_at(
            k.bootstrap(),
            &[
                (event("late", "u1", 1, 30), at(5, 0)),
                (event("d6", "u0", 6, 0), at(6, 2)),
            ],
        );
        run_until(&job, &k, &out, || {
            ck().is_some_and(|c| c.final_through == Some(BASE_DAY + 5))
        });
        let c = ck().unwrap();
        assert_eq!(c.counts.late, 1, "{c:?}");
        let day4 = skipflow::dates::day_to_string(BASE_DAY + 4);
        assert_eq!(c.held.contains_key(&day4), held, "late_share max {max}: {:?}", c.held);
        if held {
            assert!(c.held[&day4].contains("late_share"), "{:?}", c.held);
        }
        let success = out.join(format!("user_daily/dt={day4}/_SUCCESS")).exists();
        assert_eq!(success, !held);
    }
}

/// Rewrites a Parquet file with the same rows, with `kv` as its only
/// key-value metadata (or none).
fn rewrite(path: &Path, kv: Option<(&str, &str)>) {
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::WriterProperties;
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<arrow_array::RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let props = WriterProperties::builder()
        .set_key_value_metadata(kv.map(|(k, v)| vec![KeyValue::new(k.into(), v.to_string())]))
        .build();
    let out = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(out, batches[0].schema(), Some(props)).unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
}

#[test]
fn the_kept_baseline_is_read_from_footers_and_summed_where_a_file_lacks_the_key() {
    let _serial = serial();
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let q = only(|q| q.kept_volume.severity = Severity::Warn);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    daily_runs(dir.path(), &[10, 12, 14], &q);
    let part = |d: i32| {
        let day = skipflow::dates::day_to_string(BASE_DAY + d);
        out.join(format!("user_daily/dt={day}/part-00000.parquet"))
    };
    let footer = SerializedFileReader::new(std::fs::File::open(part(1)).unwrap()).unwrap();
    let kv = footer
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default();
    let kept = kv.iter().find(|k| k.key == skipflow::sink::parquet::KEPT_EVENTS_KEY);
    assert_eq!(kept.and_then(|k| k.value.as_deref()), Some("12"), "{kv:?}");
    // Day 0's footer says 1000 (the footer is what is read: the median of
    // 1000, 12, 14 is 14, of the rows' 10, 12, 14 it would be 12); day 1 has
    // no key (its rows are summed: 12).
    rewrite(&part(0), Some((skipflow::sink::parquet::KEPT_EVENTS_KEY, "1000")));
    rewrite(&part(1), None);
    let input = day_file(dir.path(), 3, 28, 0, 0);
    let o = run(&input, &out, 3, &q);
    let c = check(&o, "kept_volume", None);
    assert_eq!((c.baseline, c.ratio), (Some(14.0), Some(2.0)), "{c:?}");
}
