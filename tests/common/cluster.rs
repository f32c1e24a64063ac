#![allow(dead_code)]
//! Cluster mode in the tests: N `skipflow` processes on localhost, one
//! hostfile of free ports, the same command line with `-- -n N -p I -h
//! HOSTFILE` after it.

use super::tansu::{free_port, free_ports};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A hostfile of `n` free loopback ports in `dir`, all different.
pub fn hostfile(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join(format!("hosts-{}", free_port()));
    let hosts: Vec<String> = free_ports(n).into_iter().map(|p| format!("127.0.0.1:{p}")).collect();
    std::fs::write(&path, hosts.join("\n") + "\n").unwrap();
    path
}

/// The processes of one cluster run; killed when dropped.
pub struct Cluster {
    pub children: Vec<Child>,
    pub logs: Vec<PathBuf>,
}

impl Cluster {
    /// Starts `n` processes of `skipflow ARGS -- -n n -p i -h HOSTFILE`.
    pub fn start(dir: &Path, n: usize, args: &[&str], envs: &[(&str, &str)]) -> Cluster {
        let hosts = hostfile(dir, n);
        let tag = free_port();
        let mut children = Vec::new();
        let mut logs = Vec::new();
        for i in 0..n {
            let log = dir.join(format!("cluster-{tag}-p{i}.log"));
            let child = Command::new(env!("CARGO_BIN_EXE_skipflow"))
                .args(args)
                .args(["--", "-n", &n.to_string(), "-p", &i.to_string(), "-h"])
                .arg(&hosts)
                .envs(envs.iter().copied())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            children.push(child);
            logs.push(log);
        }
        Cluster { children, logs }
    }

    /// Every process's standard error.
    pub fn stderr(&self) -> String {
        self.logs
            .iter()
            .enumerate()
            .map(|(i, l)| {
                format!(
                    "--- process {i} ---\n{}",
                    std::fs::read_to_string(l).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits for every process (at most `limit`): their exit codes.
    pub fn wait(&mut self, limit: Duration) -> Vec<i32> {
        let deadline = Instant::now() + limit;
        let mut codes = vec![None; self.children.len()];
        while codes.iter().any(Option::is_none) {
            for (i, c) in self.children.iter_mut().enumerate() {
                if codes[i].is_none() {
                    if let Some(s) = c.try_wait().unwrap() {
                        codes[i] = Some(s.code().unwrap_or(-1));
                    }
                }
            }
            if Instant::now() > deadline {
                let e = self.stderr();
                for c in &mut self.children {
                    let _ = c.kill();
                }
                panic!("the cluster did not end within {limit:?} (exit codes so far {codes:?})\n{e}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        codes.into_iter().map(Option::unwrap).collect()
    }

    /// SIGKILL to process `i`.
    pub fn kill9(&mut self, i: usize) {
        self.children[i].kill().unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
