//! The endpoints of `skipflow run` (cli.md): `/readyz` turns ready once a
//! commit published and the lag is within the job file's threshold;
//! `/status` matches the checkpoint; `/healthz` turns unhealthy when Kafka
//! stops answering for longer than `unhealthy_after` and healthy again when
//! it answers, and when a worker is stuck (commits stop); unknown paths are
//! 404.

mod common;

use common::cont::{sigterm, skipflow_run};
use common::kafka::{produce, records, TOPIC};
use common::tansu::free_port;
use serde_json::Value;
use skipflow::broker::EmbeddedKafka;
use skipflow::continuous;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

/// `GET path`: status code and body (0 when nothing answers).
fn get(addr: &str, path: &str) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

fn status(addr: &str) -> Value {
    serde_json::from_str(&get(addr, "/status").1).unwrap_or(Value::Null)
}

/// Polls `path` until it answers `code`; the body.
fn wait_for(addr: &str, path: &str, code: u16, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (c, body) = get(addr, path);
        if c == code {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} did not answer {code} (last {c}: {body}); status: {}",
            status(addr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn job(dir: &Path, unhealthy_after: &str, lag: i64) -> String {
    let p = dir.join("job.toml");
    std::fs::write(
        &p,
        format!("unhealthy_after = \"{unhealthy_after}\"\nready_max_lag = {lag}\nfinalize_after = \"1000000h\"\n"),
    )
    .unwrap();
    p.to_string_lossy().to_string()
}

#[test]
fn readiness_status_and_health_follow_the_run_and_kafka() {
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 3).unwrap();
    let recs = records(60, 2, 91);
    produce(k.bootstrap(), &recs);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let addr = format!("127.0.0.1:{}", free_port());
    let job = job(dir.path(), "3s", 0);
    let mut child = skipflow_run(k.bootstrap(), &out)
        .args(["--commit-interval", "300ms", "--metrics-addr", &addr, "--job", &job])
        .spawn()
        .unwrap();
    // Ready once caught up (lag 0 allowed), healthy meanwhile.
    wait_for(&addr, "/readyz", 200, LIMIT);
    assert_eq!(get(&addr, "/healthz").0, 200);
    // /status matches the checkpoint (read between two equal status reads).
    let deadline = Instant::now() + LIMIT;
    let (s, ck) = loop {
        let a = status(&addr);
        let ck = continuous::read_checkpoint(&out).unwrap().expect("a checkpoint");
        let b = status(&addr);
        let n = |v: &Value| v["commit"]["last_commit"]["number"].as_u64();
        if n(&a) == n(&b) && n(&a) == Some(ck.commits) {
            break (b, ck);
        }
        assert!(Instant::now() < deadline, "status never settled: {a} vs {ck:?}");
    };
    assert_eq!(s["state"], "live", "{s}");
    assert_eq!(s["lag"], 0, "{s}");
    let offsets: Vec<(i64, i64)> = s["commit"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["partition"].as_i64().unwrap(), p["offset"].as_i64().unwrap()))
        .collect();
    let expected: Vec<(i64, i64)> = ck.offsets.iter().map(|(p, o)| (*p as i64, *o)).collect();
    assert_eq!(offsets, expected, "{s}");
    assert_eq!(offsets.iter().map(|p| p.1).sum::<i64>(), recs.len() as i64);
    assert_eq!(s["commit"]["watermark_ms"].as_i64(), ck.watermark_ms, "{s}");
    let final_through = ck.final_through.map(skipflow::dates::day_to_string);
    assert_eq!(s["commit"]["final_through"].as_str(), final_through.as_deref(), "{s}");
    assert!(!s["commit"]["open_days"].as_array().unwrap().is_empty(), "{s}");
    assert_eq!(s["commit"]["last_report"]["counts"]["read"], recs.len(), "{s}");
    assert_eq!(get(&addr, "/nope").0, 404);
    assert!(get(&addr, "/metrics").1.contains("skipflow_commits_total"));

    // Kafka gone for longer than unhealthy_after: unhealthy and not ready, saying why.
    k.set_broker_up(false).unwrap();
    let why = wait_for(&addr, "/healthz", 503, LIMIT);
    assert!(why.contains("Kafka has not answered"), "{why}");
    assert_eq!(get(&addr, "/readyz").0, 503);
    assert_eq!(status(&addr)["state"], "unhealthy");
    // Back, and data flows: healthy and ready again.
    k.set_broker_up(true).unwrap();
    produce(k.bootstrap(), &records(5, 1, 92));
    wait_for(&addr, "/healthz", 200, LIMIT);
    wait_for(&addr, "/readyz", 200, LIMIT);
    sigterm(&child);
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_stuck_worker_turns_healthz_unhealthy_and_readyz_never_ready() {
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 2).unwrap();
    produce(k.bootstrap(), &records(20, 1, 93));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let addr = format!("127.0.0.1:{}", free_port());
    let job = job(dir.path(), "4s", 100_000);
    // The last worker stops answering at the first commit's staging.
    let mut child = skipflow_run(k.bootstrap(), &out)
        .args(["--commit-interval", "300ms", "--metrics-addr", &addr, "--job", &job])
        .args(["--workers", "2"])
        .env("SKIPFLOW_FAULT", "staging:hang")
        .spawn()
        .unwrap();
    let first = wait_for(&addr, "/healthz", 200, LIMIT);
    assert_eq!(first, "ok\n");
    assert_eq!(get(&addr, "/readyz").0, 503);
    let why = wait_for(&addr, "/healthz", 503, LIMIT);
    assert!(why.contains("no first commit for"), "{why}");
    let s = status(&addr);
    assert_eq!(s["state"], "unhealthy", "{s}");
    assert_eq!(s["ready"], false, "{s}");
    assert_eq!(get(&addr, "/readyz").0, 503);
    child.kill().unwrap();
    child.wait().unwrap();
}

fn monitoring(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/monitoring").join(file)
}

/// `promtool` (Debian's prometheus package; `make test` installs it).
fn promtool(args: &[&str]) -> String {
    let out = std::process::Command::new("promtool")
        .args(args)
        .current_dir(monitoring(""))
        .output()
        .expect("promtool not found: `make test` installs Debian's prometheus package");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_shipped_alert_rules_pass_promtool_and_fire_in_their_unit_tests() {
    let checked = promtool(&["check", "rules", "skipflow-alerts.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    promtool(&["test", "rules", "skipflow-alerts.test.yml"]);
}

/// Every `skipflow_*` name in `text` (letters, digits and underscores).
fn metric_names(text: &str) -> Vec<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("skipflow_") {
        let before = rest[..i].chars().next_back();
        let end = rest[i..].find(|c: char| !word(c)).map_or(rest.len(), |e| i + e);
        if !before.is_some_and(word) {
            names.push(rest[i..end].to_string());
        }
        rest = &rest[end..];
    }
    names
}

#[test]
fn the_dashboard_and_alerts_use_only_metrics_skipflow_exports() {
    let exported = skipflow::metrics::Metrics::new().unwrap().names();
    assert!(exported.contains(&"skipflow_consumer_lag".to_string()), "{exported:?}");
    let known = |n: &str| {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| n.strip_suffix(s))
            .unwrap_or(n);
        exported.iter().any(|e| e == n || e == base)
    };
    let dashboard = std::fs::read_to_string(monitoring("skipflow-dashboard.json")).unwrap();
    let parsed: Value = serde_json::from_str(&dashboard).unwrap();
    assert!(parsed["panels"].as_array().unwrap().len() >= 10);
    let rules = std::fs::read_to_string(monitoring("skipflow-alerts.yml")).unwrap();
    for (file, text) in [("dashboard", &dashboard), ("alert rules", &rules)] {
        let used = metric_names(text);
        assert!(used.len() >= 3, "{file}: {used:?}");
        for n in used {
            assert!(
                known(&n),
                "the {file} use {n}, which skipflow does not export ({exported:?})"
            );
        }
    }
}
