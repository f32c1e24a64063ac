//! `skipflow report`: the HTML page opens in headless Chromium with no
//! console errors and no network requests, and shows every plot with data
//! from the runs. A screenshot is kept as a test artifact
//! (`$CARGO_TARGET_TMPDIR/report.png`; a copy is `docs/report.png`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_skipflow");

/// Every chart the page must show with data.
const CHARTS: [&str; 12] = [
    "records",
    "reasons",
    "gates",
    "duration",
    "throughput",
    "skip_rate",
    "early_skips",
    "by_hour",
    "sessions",
    "session_length",
    "top_artists",
    "partitions",
];

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Debian's `chromium` (`make test` installs it).
fn chromium() -> String {
    for c in ["chromium", "chromium-browser"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c.into();
        }
    }
    panic!("headless Chromium is needed: `make test` installs Debian's chromium package");
}

/// Chromium, headless, on `page` with `args`: its output, stderr holding
/// the console messages and load errors.
fn headless(page: &Path, profile: &Path, args: &[&str]) -> Output {
    Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap()
}

/// Console messages, refused or failed loads in Chromium's log.
fn problems(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| {
            l.contains("CONSOLE")
                || l.contains("Refused to")
                || l.contains("Uncaught")
                || l.contains("net::ERR_")
                || l.contains("Content Security Policy")
        })
        .map(str::to_string)
        .collect()
}

/// A week of dirty data, one batch over it and a rerun of its last day (so
/// the run history has runs and gate checks).
fn output(dir: &Path) -> PathBuf {
    let (events, out) =
        common::harness::generate_and_batch(dir, &["--users", "150", "--days", "7", "--seed", "11", "--dirty"]);
    let ud = std::fs::read_dir(out.join("user_daily")).unwrap();
    let mut days: Vec<String> = ud
        .map(|e| e.unwrap().file_name().to_string_lossy()[3..].to_string())
        .collect();
    days.sort();
    let last = days.last().unwrap();
    run(Command::new(BIN)
        .args([
            "batch",
            "--quiet",
            "--workers",
            "2",
            "--from",
            last,
            "--to",
            last,
            "--input",
        ])
        .arg(&events)
        .arg("--output")
        .arg(&out));
    out
}

/// The part of the page of the chart with id `id`.
fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no chart {id}"));
    let end = html[start..].find("</section>").unwrap() + start;
    &html[start..end]
}

#[test]
fn the_report_opens_in_chromium_with_every_plot_and_no_network_or_console_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = output(dir.path());
    let page = dir.path().join("report.html");
    let said = run(Command::new(BIN).arg("report").arg(&out).arg("--html").arg(&page));
    assert!(String::from_utf8_lossy(&said.stdout).contains("report.html"));
    let html = std::fs::read_to_string(&page).unwrap();

    // Self-contained: no URL to load anything from, and a policy that
    // forbids every request.
    for attr in ["src=\"http", "href=\"http", "src='http", "url(http", "@import"] {
        assert!(!html.contains(attr), "the page loads something: {attr}");
    }
    assert!(html.contains("Content-Security-Policy") && html.contains("default-src 'none'"));
    // Every plot is drawn, with bars (data from the runs).
    for id in CHARTS {
        let s = section(&html, id);
        assert!(
            s.contains("<svg") && s.matches("<rect").count() > 2,
            "chart {id} has no data:\n{s}"
        );
    }
    assert!(section(&html, "records").contains("duplicates"), "the class legend");
    assert!(html.contains("invalid_json"), "reject reasons by name");
    assert!(html.contains("kept_volume"), "the gate checks are listed");

    // Opened as a person would: the DOM has every chart, the log no
    // console message and no refused or failed load.
    let profile = tempfile::tempdir().unwrap();
    let dom = headless(&page, profile.path(), &["--dump-dom"]);
    let text = String::from_utf8_lossy(&dom.stdout);
    for id in CHARTS {
        assert!(
            text.contains(&format!("id=\"{id}\"")),
            "chart {id} missing in the rendered DOM"
        );
    }
    let log = String::from_utf8_lossy(&dom.stderr);
    assert_eq!(
        problems(&log),
        Vec::<String>::new(),
        "Chromium reported problems:\n{log}"
    );

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report.png");
    let _ = std::fs::remove_file(&shot);
    let arg = format!("--screenshot={}", shot.display());
    let s = headless(
        &page,
        profile.path(),
        &[&arg, "--window-size=1560,2400", "--hide-scrollbars"],
    );
    let log = String::from_utf8_lossy(&s.stderr);
    assert_eq!(
        problems(&log),
        Vec::<String>::new(),
        "Chromium reported problems:\n{log}"
    );
    let png = std::fs::read(&shot).unwrap_or_else(|_| panic!("no screenshot: {log}"));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "a blank screenshot?");
}

#[test]
fn the_console_check_catches_a_page_that_loads_or_logs() {
    // The same check on a page that tries a request and runs a script must
    // report both: a check that cannot fail proves nothing.
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("bad.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><head><meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'\">\
         </head><body><img src=\"http://127.0.0.1:9/x.png\"><script>console.error('boom')</script></body></html>",
    )
    .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let o = headless(&page, profile.path(), &["--dump-dom"]);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        problems(&log).len() >= 2,
        "the check missed a refused load and script:\n{log}"
    );
}

#[test]
fn report_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let o = Command::new(BIN).arg("report").arg(&missing).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = Command::new(BIN)
        .arg("report")
        .arg(dir.path())
        .args(["--days", "0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}
