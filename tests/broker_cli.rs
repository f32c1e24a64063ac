//! `skipflow broker` as a standalone process: prints its bootstrap address
//! first, serves the topic, refuses to lose data silently, stops on SIGTERM.

mod common;

use common::output;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_skipflow");

struct Broker {
    child: Child,
    addr: String,
}

impl Broker {
    fn start(partitions: u32) -> Broker {
        // Port 0: any free port; the first line tells which.
        let mut child = Command::new(BIN)
            .args([
                "broker",
                "--port",
                "0",
                "--partitions",
                &partitions.to_string(),
                "--topic",
                "listen-events",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let addr = first.trim().to_string();
        assert!(
            addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
            "first line is the address: {first:?}"
        );
        Broker { child, addr }
    }

    fn stop(mut self) -> (Option<i32>, String) {
        unsafe { libc_kill(self.child.id() as i32, 15) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut err).unwrap();
                return (status.code(), err);
            }
            assert!(Instant::now() < deadline, "broker did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn skipflow(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

#[test]
fn serves_a_topic_for_generate_and_batch_then_stops_cleanly() {
    let b = Broker::start(3);
    let g = skipflow(&[
        "generate",
        "--brokers",
        &b.addr,
        "--users",
        "100",
        "--days",
        "2",
        "--dirty",
    ]);
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let r = skipflow(&[
        "batch",
        "--brokers",
        &b.addr,
        "--topic",
        "listen-events",
        "--quiet",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let t = output::read_tables(&out);
    assert!(t["user_daily"].len() >= 2 && !t["rejected_events"].is_empty());
    let (code, _) = b.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn losing_data_is_loud() {
    // One partition keeps about 5 MiB: 10 MB of events cannot all stay.
    let b = Broker::start(1);
    let g = skipflow(&["generate", "--brokers", &b.addr, "--users", "600", "--days", "3"]);
    assert_eq!(
        g.status.code(),
        Some(1),
        "generate must fail when the broker dropped data"
    );
    let err = String::from_utf8_lossy(&g.stderr);
    assert!(err.contains("dropped the oldest messages"), "{err}");
    // The broker itself notices within a few seconds and stops with an error.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut b = b;
    let status = loop {
        if let Some(s) = b.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the broker kept serving after losing data");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(b.child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("data lost"), "{err}");
}

/// `skipflow demo` (what `make demo` runs): embedded Kafka, a generated week,
/// the batch job into ./out, and a summary that says where to look.
#[test]
fn demo_runs_the_whole_tour_into_out() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(BIN).arg("demo").current_dir(dir.path()).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}\n{}", text, String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("embedded Kafka") && text.contains("duckdb -c"), "{text}");
    assert!(text.contains("Busiest user as of"), "{text}");
    let t = output::read_tables(&dir.path().join("out"));
    for table in [
        "user_daily",
        "user_track_daily",
        "user_artist_daily",
        "user_profile_28d",
        "rejected_events",
    ] {
        assert!(t.contains_key(table), "demo wrote {table}");
    }
}
