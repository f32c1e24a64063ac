#![allow(dead_code)]
//! The `skipflow` binary as a child process: its exit code and standard
//! error, waited for with a bound (a hang is a failure, not a slow test).

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `skipflow ARGS`, standard error captured in `log` (read it while it runs).
pub fn spawn(args: &[&str], log: &Path, envs: &[(&str, &str)]) -> Child {
    let f = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_skipflow"))
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(f)
        .spawn()
        .unwrap()
}

/// Waits for `child` at most `limit`; kills it and panics when it does not end.
pub fn wait(child: &mut Child, limit: Duration, log: &Path) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "skipflow did not end within {limit:?}; its standard error:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `skipflow ARGS` to its end (at most `limit`): exit code and the
/// `skipflow: error:` line, if any.
pub fn run(args: &[&str], dir: &Path, envs: &[(&str, &str)], limit: Duration) -> (i32, String, String) {
    let log = dir.join(format!("skipflow-{}.log", std::process::id() as u64 + rand_suffix()));
    let mut child = spawn(args, &log, envs);
    let status = wait(&mut child, limit, &log);
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    let line = error_line(&stderr);
    (status.code().unwrap_or(-1), line, stderr)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst) * 1_000_000
}

/// The `skipflow: error: ...` line of standard error (empty when none).
pub fn error_line(stderr: &str) -> String {
    stderr
        .lines()
        .find(|l| l.starts_with("skipflow: error:"))
        .unwrap_or("")
        .to_string()
}

/// Whether `out` holds no published table partition, checkpoint or run report.
pub fn nothing_published(out: &Path) -> bool {
    let tables = [
        "user_daily",
        "user_track_daily",
        "user_artist_daily",
        "user_profile_28d",
        "rejected_events",
        "late_events",
    ];
    tables.iter().all(|t| !out.join(t).exists())
        && !out.join(".skipflow/checkpoint.json").exists()
        && !out.join("_runs").exists()
}
