//! Object-store output (semantics.md "Object stores") against a real S3
//! server, moto's: a batch of the dirty data read back with pyarrow's S3
//! filesystem equals the reference; continuous mode with bursts and a kill
//! -9 converges; a reader polling a partition never sees it missing or
//! partial; the lease keeps a second run out and is taken over once it
//! expires; a standby takes over from a dead primary, and a paused primary
//! publishes nothing after that; failed writes leave no partial output and
//! no open uploads; files uploaded in parts publish whole, and the uploads
//! of a run killed -9 are aborted by the next; usage errors are one line
//! and exit 2.

mod common;

use common::cluster::Cluster;
use common::kafka::{produce, records, TOPIC};
use common::proc;
use common::reference::{self, RefConfig};
use common::s3::Moto;
use common::{cont, harness, output};
use skipflow::broker::EmbeddedKafka;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

/// `skipflow ARGS` with the server's environment; exit code, error line, stderr.
fn skipflow(m: &Moto, dir: &Path, args: &[&str], extra: &[(&str, &str)]) -> (i32, String, String) {
    let env: Vec<(&str, String)> = m.env();
    let mut envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    envs.extend_from_slice(extra);
    proc::run(args, dir, &envs, LIMIT)
}

/// A `skipflow run` child on the server, stderr in `log`.
fn spawn_run(m: &Moto, url: &str, brokers: &str, log: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_skipflow"))
        .args([
            "run",
            "--brokers",
            brokers,
            "--topic",
            TOPIC,
            "--output",
            url,
            "--workers",
            "2",
        ])
        .args([
            "--commit-interval",
            "300ms",
            "--finalize-after",
            "1000000h",
            "--log",
            "info",
        ])
        .args(extra)
        .envs(m.env())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// A job file with a `[storage]` lease.
fn lease_job(dir: &Path, lease: &str) -> String {
    let p = dir.join(format!("lease-{lease}.toml"));
    std::fs::write(&p, format!("[storage]\nlease = \"{lease}\"\n")).unwrap();
    p.to_string_lossy().to_string()
}

fn wait_covered(m: &Moto, bucket: &str, prefix: &str, total: i64, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + LIMIT;
    while m.checkpointed(bucket, prefix) < total {
        if let Some(s) = child.try_wait().unwrap() {
            panic!(
                "skipflow run ended ({s}) before covering {total}\n{}",
                std::fs::read_to_string(log).unwrap()
            );
        }
        assert!(
            Instant::now() < deadline,
            "never covered {total}\n{}",
            std::fs::read_to_string(log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The tables at `bucket/prefix`, downloaded with pyarrow's S3 filesystem.
fn tables(m: &Moto, bucket: &str, prefix: &str, dir: &Path) -> output::Tables {
    let local = dir.join(format!("download-{}", common::tansu::free_port()));
    m.download(bucket, prefix, &local);
    output::read_tables(&local)
}

#[test]
fn batch_to_s3_read_back_with_pyarrow_equals_the_reference() {
    let m = Moto::start();
    m.bucket("features");
    let dir = tempfile::tempdir().unwrap();
    let file = harness::dirty_file(dir.path(), 120, 4, 71);
    let f = file.to_str().unwrap();
    let args = [
        "batch",
        "--input",
        f,
        "--output",
        "s3://features/daily/v1",
        "--workers",
        "2",
        "--quiet",
    ];
    let (code, _, err) = skipflow(&m, dir.path(), &args, &[("SKIPFLOW_RUN_DAY", "2026-11-30")]);
    assert_eq!(code, 0, "{err}");
    let expected = reference::reference(
        &reference::records_from_ndjson(f, &std::fs::read(&file).unwrap()),
        &RefConfig {
            range: None,
            run_day: skipflow::dates::parse_day("2026-11-30").unwrap(),
        },
    );
    let got = tables(&m, "features", "daily/v1", dir.path());
    if let Some(d) = output::diff("s3", &got, "reference", &expected.tables) {
        panic!("{d}");
    }
    // Nothing left behind: no open upload, no staging manifest, every partition final.
    assert!(m.uploads("features").is_empty(), "{:?}", m.uploads("features"));
    let keys = m.keys("features", "daily/v1/");
    assert!(!keys.iter().any(|k| k.contains("/.skipflow/staging/")), "{keys:?}");
    let parts = keys.iter().filter(|k| k.ends_with("/part-00000.parquet")).count();
    let done = keys.iter().filter(|k| k.ends_with("/_SUCCESS")).count();
    assert_eq!(parts, done);
    // A rerun replaces the same objects: the same tables.
    let (code, _, err) = skipflow(&m, dir.path(), &args, &[("SKIPFLOW_RUN_DAY", "2026-11-30")]);
    assert_eq!(code, 0, "{err}");
    assert!(output::diff("rerun", &tables(&m, "features", "daily/v1", dir.path()), "first", &got).is_none());
    // The HTML report and inspect read the same bucket (run reports listed there).
    let page = dir.path().join("s3-report.html");
    let report = ["report", "s3://features/daily/v1", "--html", page.to_str().unwrap()];
    let (code, _, err) = skipflow(&m, dir.path(), &report, &[]);
    assert_eq!(code, 0, "{err}");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("2 run reports") && html.contains("user_track_daily"),
        "{html}"
    );
    let day = got["user_daily"].keys().next().unwrap().clone();
    let inspect = [
        "inspect",
        "s3://features/daily/v1",
        "--table",
        "user_daily",
        "--day",
        &day,
        "--json",
    ];
    let (code, _, err) = skipflow(&m, dir.path(), &inspect, &[]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn three_processes_write_one_s3_output() {
    let m = Moto::start();
    m.bucket("cluster");
    let dir = tempfile::tempdir().unwrap();
    let file = harness::dirty_file(dir.path(), 80, 3, 72);
    let f = file.to_str().unwrap();
    let args = [
        "batch",
        "--input",
        f,
        "--output",
        "s3://cluster/out",
        "--workers",
        "1",
        "--quiet",
    ];
    let env = m.env();
    let mut envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    envs.push(("SKIPFLOW_RUN_DAY", "2026-11-30"));
    let mut c = Cluster::start(dir.path(), 3, &args, &envs);
    assert_eq!(c.wait(LIMIT), vec![0, 0, 0], "{}", c.stderr());
    let one = dir.path().join("one");
    let (code, _, err) = proc::run(
        &[
            "batch",
            "--input",
            f,
            "--output",
            one.to_str().unwrap(),
            "--workers",
            "2",
            "--quiet",
        ],
        dir.path(),
        &[("SKIPFLOW_RUN_DAY", "2026-11-30")],
        LIMIT,
    );
    assert_eq!(code, 0, "{err}");
    let got = tables(&m, "cluster", "out", dir.path());
    if let Some(d) = output::diff(
        "3 processes on s3",
        &got,
        "1 process locally",
        &output::read_tables(&one),
    ) {
        panic!("{d}");
    }
    assert!(m.uploads("cluster").is_empty());
}

#[test]
fn usage_errors_are_one_line_and_exit_2() {
    let m = Moto::start();
    m.bucket("there");
    let dir = tempfile::tempdir().unwrap();
    let file = harness::dirty_file(dir.path(), 5, 1, 73);
    let f = file.to_str().unwrap();
    fn batch<'a>(f: &'a str, out: &'a str) -> Vec<&'a str> {
        vec!["batch", "--input", f, "--output", out, "--quiet"]
    }
    // A bucket that does not exist.
    let (code, line, err) = skipflow(&m, dir.path(), &batch(f, "s3://nowhere/x"), &[]);
    assert_eq!(
        (code, line.contains("bucket nowhere does not exist")),
        (2, true),
        "{err}"
    );
    // No credentials (and no instance metadata service to ask).
    let (code, line, err) = proc::run(
        &batch(f, "s3://there/x"),
        dir.path(),
        &[
            ("AWS_ENDPOINT", &m.endpoint),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "us-east-1"),
        ],
        LIMIT,
    );
    assert_eq!((code, line.contains("no credentials")), (2, true), "{err}");
    // GCS without credentials: the same code path, its own hint.
    let (code, line, err) = proc::run(&batch(f, "gs://some-bucket/x"), dir.path(), &[], LIMIT);
    assert_eq!((code, line.contains("GOOGLE_SERVICE_ACCOUNT")), (2, true), "{err}");
    // A scheme that is not supported; no local directory named after it.
    let (code, line, err) = proc::run(&batch(f, "ftp://host/x"), dir.path(), &[], LIMIT);
    assert_eq!(
        (code, line.contains("unsupported output URL scheme ftp://")),
        (2, true),
        "{err}"
    );
    assert!(!dir.path().join("ftp:").exists() && !Path::new("ftp:").exists());
    // A [storage] key object_store does not know.
    let job = dir.path().join("bad.toml");
    std::fs::write(&job, "[storage]\nendpont = \"http://x\"\n").unwrap();
    let mut args = batch(f, "s3://there/x");
    args.extend(["--job", job.to_str().unwrap()]);
    let (code, line, err) = skipflow(&m, dir.path(), &args, &[]);
    assert_eq!((code, line.contains("endpont")), (2, true), "{err}");
    assert!(!line.contains('\n'));
}

#[test]
fn failed_writes_leave_no_partial_output_and_no_open_uploads() {
    let m = Moto::start();
    m.bucket("fail");
    let dir = tempfile::tempdir().unwrap();
    let file = harness::dirty_file(dir.path(), 40, 3, 74);
    let f = file.to_str().unwrap();
    let args = [
        "batch",
        "--input",
        f,
        "--output",
        "s3://fail/out",
        "--workers",
        "2",
        "--quiet",
    ];
    // The second upload fails after its parts are up; the first was staged.
    let (code, line, err) = skipflow(&m, dir.path(), &args, &[("SKIPFLOW_FAULT", "upload:error")]);
    assert_eq!(code, 1, "{err}");
    assert!(
        line.contains("injected failure at upload") && line.contains("no partition was published"),
        "{line}"
    );
    assert!(
        m.uploads("fail").is_empty(),
        "open uploads left: {:?}",
        m.uploads("fail")
    );
    let keys = m.keys("fail", "out/");
    assert!(
        keys.iter().all(|k| k.contains("/.skipflow/") || k.contains("/_runs/"))
            && !keys.iter().any(|k| k.contains("/_runs/")),
        "published objects after a failed run: {keys:?}"
    );
    assert!(!keys.iter().any(|k| k.contains("/uploads/")), "{keys:?}");
}

#[test]
fn continuous_to_s3_with_bursts_and_a_kill_9_converges_and_readers_never_see_a_gap() {
    let m = Moto::start();
    m.bucket("live");
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 3).unwrap();
    let recs = records(60, 2, 75);
    let dir = tempfile::tempdir().unwrap();
    let url = "s3://live/features";
    let job = lease_job(dir.path(), "2s");
    let third = recs.len() / 3;
    produce(k.bootstrap(), &recs[..third]);
    let log = dir.path().join("run1.log");
    let mut a = spawn_run(&m, url, k.bootstrap(), &log, &["--job", &job]);
    wait_covered(&m, "live", "features", third as i64, &mut a, &log);
    // A reader polls one partition's file while bursts keep rewriting it.
    let day = skipflow::generate::GenConfig::default().start_day;
    let key = format!(
        "features/user_daily/dt={}/part-00000.parquet",
        skipflow::dates::day_to_string(day)
    );
    let poller = {
        let (py, tool, endpoint, key) = (
            common::s3::python(),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/s3_tool.py"),
            m.endpoint.clone(),
            key.clone(),
        );
        std::thread::spawn(move || {
            Command::new(py)
                .arg(tool)
                .args([endpoint.as_str(), "poll", "live", &key, "6"])
                .output()
                .unwrap()
        })
    };
    for chunk in recs[third..2 * third].chunks(200) {
        produce(k.bootstrap(), chunk);
        std::thread::sleep(Duration::from_millis(400));
    }
    let polled = poller.join().unwrap();
    let said = String::from_utf8_lossy(&polled.stdout).to_string();
    assert!(
        polled.status.success(),
        "{said} ({}; {})",
        polled.status,
        String::from_utf8_lossy(&polled.stderr)
    );
    assert!(
        !said.contains("versions 0") && !said.contains("versions 1\n"),
        "the partition was rewritten while polled: {said}"
    );
    a.kill().unwrap();
    a.wait().unwrap();
    // A restart right away finds the dead run's lease live (exit 3); after it expires it resumes.
    let o = [
        "run",
        "--brokers",
        k.bootstrap(),
        "--topic",
        TOPIC,
        "--output",
        url,
        "--job",
        &job,
    ];
    let (code, line, err) = skipflow(&m, dir.path(), &o, &[]);
    assert_eq!(code, 3, "{err}");
    assert!(line.contains("locked by another skipflow run"), "{line}");
    produce(k.bootstrap(), &recs[2 * third..]);
    std::thread::sleep(Duration::from_secs(2));
    let log = dir.path().join("run2.log");
    let mut b = spawn_run(&m, url, k.bootstrap(), &log, &["--job", &job]);
    wait_covered(&m, "live", "features", recs.len() as i64, &mut b, &log);
    cont::sigterm(&b);
    assert!(
        b.wait().unwrap().success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let (expected, _) = cont::batch_run(k.bootstrap(), &dir.path().join("batch"));
    let got = tables(&m, "live", "features", dir.path());
    if let Some(d) = output::diff("continuous on s3", &got, "one batch", &expected) {
        panic!("{d}");
    }
    assert!(m.uploads("live").is_empty());
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

fn signal(c: &Child, sig: i32) {
    // SAFETY: kill(2) on a child we own.
    unsafe { kill(c.id() as i32, sig) };
}

#[test]
fn a_standby_takes_over_from_a_dead_primary_and_a_paused_primary_publishes_nothing() {
    let m = Moto::start();
    m.bucket("hotstandby");
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 3).unwrap();
    let recs = records(50, 2, 76);
    let dir = tempfile::tempdir().unwrap();
    let url = "s3://hotstandby/features";
    let job = lease_job(dir.path(), "2s");
    let half = recs.len() / 2;
    produce(k.bootstrap(), &recs[..half]);
    let (la, lb, lc) = (
        dir.path().join("a.log"),
        dir.path().join("b.log"),
        dir.path().join("c.log"),
    );
    let mut a = spawn_run(&m, url, k.bootstrap(), &la, &["--job", &job]);
    wait_covered(&m, "hotstandby", "features", half as i64, &mut a, &la);
    let mut b = spawn_run(&m, url, k.bootstrap(), &lb, &["--job", &job, "--standby"]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(b.try_wait().unwrap().is_none(), "the standby waits");
    // The primary dies; the standby takes over once its lease expires.
    a.kill().unwrap();
    a.wait().unwrap();
    produce(k.bootstrap(), &recs[half..]);
    wait_covered(&m, "hotstandby", "features", recs.len() as i64, &mut b, &lb);
    assert!(std::fs::read_to_string(&lb).unwrap().contains("took over"));
    // A second standby; the active run is paused past its lease (SIGSTOP).
    let mut c = spawn_run(&m, url, k.bootstrap(), &lc, &["--job", &job, "--standby"]);
    std::thread::sleep(Duration::from_millis(500));
    signal(&b, 19);
    // The paused run's commit reports, by their run id (its start time).
    let reports = |prefix: &str| {
        m.keys("hotstandby", "features/_runs/")
            .into_iter()
            .filter(|k| k.contains(prefix))
            .count()
    };
    let newest = m.keys("hotstandby", "features/_runs/").into_iter().max().unwrap();
    let b_run = newest
        .rsplit('/')
        .next()
        .unwrap()
        .split("-commit-")
        .next()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + LIMIT;
    while !std::fs::read_to_string(&lc).unwrap().contains("took over") {
        assert!(Instant::now() < deadline, "the second standby never took over");
        std::thread::sleep(Duration::from_millis(100));
    }
    let b_reports = reports(&b_run);
    signal(&b, 18);
    // The resumed run finds its lease lost and stops without publishing.
    let status = proc::wait(&mut b, LIMIT, &lb);
    let said = std::fs::read_to_string(&lb).unwrap();
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(said.contains("lease"), "{said}");
    assert_eq!(
        reports(&b_run),
        b_reports,
        "the paused run published after the takeover"
    );
    cont::sigterm(&c);
    assert!(c.wait().unwrap().success(), "{}", std::fs::read_to_string(&lc).unwrap());
    let (expected, _) = cont::batch_run(k.bootstrap(), &dir.path().join("batch"));
    let got = tables(&m, "hotstandby", "features", dir.path());
    if let Some(d) = output::diff("after the takeovers", &got, "one batch", &expected) {
        panic!("{d}");
    }
}

#[test]
fn files_uploaded_in_parts_publish_whole_and_a_killed_run_leaves_no_open_upload() {
    // Small parts (a test hook and moto's setting) send every file larger
    // than 2 KiB through the multipart path.
    let m = Moto::start_with(&[("S3_UPLOAD_PART_MIN_SIZE", "1024")]);
    m.bucket("parts");
    let dir = tempfile::tempdir().unwrap();
    let file = harness::dirty_file(dir.path(), 120, 4, 76);
    let f = file.to_str().unwrap();
    let job = lease_job(dir.path(), "2s");
    let args = [
        "batch",
        "--job",
        &job,
        "--input",
        f,
        "--output",
        "s3://parts/out",
        "--workers",
        "2",
        "--quiet",
    ];
    let env = m.env();
    let mut envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    envs.extend([("SKIPFLOW_PART_BYTES", "2048"), ("SKIPFLOW_RUN_DAY", "2026-11-30")]);
    // A run that stops answering with uploads open, then is killed -9.
    let log = dir.path().join("hung.log");
    let mut hung_env = envs.clone();
    hung_env.push(("SKIPFLOW_FAULT", "upload:hang"));
    let mut hung = proc::spawn(&args, &log, &hung_env);
    let deadline = Instant::now() + LIMIT;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("stops answering")
    {
        assert!(Instant::now() < deadline, "{}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!m.uploads("parts").is_empty(), "the hung run has no open upload");
    hung.kill().unwrap();
    hung.wait().unwrap();
    // The next run, once the dead run's lease expired, aborts them and
    // publishes files whole.
    std::thread::sleep(Duration::from_millis(2500));
    let (code, _, err) = proc::run(&args, dir.path(), &envs, LIMIT);
    assert_eq!(code, 0, "{err}");
    assert!(m.uploads("parts").is_empty(), "{:?}", m.uploads("parts"));
    let keys = m.keys("parts", "out/");
    assert!(!keys.iter().any(|k| k.contains("/.skipflow/staging/")), "{keys:?}");
    let expected = reference::reference(
        &reference::records_from_ndjson(f, &std::fs::read(&file).unwrap()),
        &RefConfig {
            range: None,
            run_day: skipflow::dates::parse_day("2026-11-30").unwrap(),
        },
    );
    if let Some(d) = output::diff(
        "s3",
        &tables(&m, "parts", "out", dir.path()),
        "reference",
        &expected.tables,
    ) {
        panic!("{d}");
    }
}
