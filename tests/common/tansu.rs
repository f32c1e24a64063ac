#![allow(dead_code)]
//! tansu, an independent Kafka-API broker (installed once by `make test`
//! under ~/.cache/skipflow/tansu), started and stopped by the tests: in
//! memory, or on a SQLite file that survives a kill -9 and a restart on the
//! same port.

use super::kafka::TOPIC;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("SKIPFLOW_TANSU") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/skipflow/tansu/bin/tansu");
    assert!(
        p.exists(),
        "tansu is not installed: run `make test` (it installs tansu 0.6.0 once into ~/.cache/skipflow)"
    );
    p
}

pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` free loopback ports, all different: each is held until all are
/// chosen, so the kernel cannot hand one out twice.
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// Whether something listens on `addr`: a connection that is not the
/// socket connecting to itself (Linux lets a connect to a free local port
/// in the ephemeral range pick that very port as its source and succeed).
pub fn listening(addr: impl std::net::ToSocketAddrs) -> bool {
    std::net::TcpStream::connect(addr).is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok())
}

/// A running tansu broker; killed when dropped.
pub struct Tansu {
    child: Option<Child>,
    pub addr: String,
    /// The address advertised to clients (a TLS terminator in front, say).
    pub advertised: String,
    /// More broker flags (`--authentication`).
    pub flags: Vec<String>,
    /// Where the SQLite database and the broker's log live (None: in memory).
    dir: Option<PathBuf>,
    /// Starts so far (the log of start `n` is `tansu-<n>.log`).
    starts: u32,
}

impl Tansu {
    /// A broker on a free port, storing in memory (its output discarded).
    pub fn memory() -> Tansu {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut t = Tansu {
            child: None,
            advertised: addr.clone(),
            addr,
            flags: vec![],
            dir: None,
            starts: 0,
        };
        t.start();
        t
    }

    /// A broker on a free port, storing in `dir/tansu.db` (logs in `dir/tansu-N.log`).
    pub fn sqlite(dir: &Path) -> Tansu {
        let mut t = Tansu::sqlite_stopped(dir);
        t.start();
        t
    }

    /// As `sqlite`, not started yet: set `advertised` and `flags`, then `start`.
    pub fn sqlite_stopped(dir: &Path) -> Tansu {
        std::fs::create_dir_all(dir).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        Tansu {
            child: None,
            advertised: addr.clone(),
            addr,
            flags: vec![],
            dir: Some(dir.to_path_buf()),
            starts: 0,
        }
    }

    /// The SQLite database of a stopped broker (None: in memory).
    pub fn database(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("tansu.db"))
    }

    /// Starts the broker process (same port, same storage) and waits until it listens.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "tansu is already running");
        let url = format!("tcp://{}", self.addr);
        let advertised = format!("tcp://{}", self.advertised);
        let mut cmd = Command::new(tansu_binary());
        cmd.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &advertised,
        ]);
        cmd.args(&self.flags);
        match &self.dir {
            // tansu opens `sqlite://PATH` relative to its working directory
            // (an absolute path gets the working directory prefixed).
            Some(dir) => {
                let log = std::fs::File::create(dir.join(format!("tansu-{}.log", self.starts))).unwrap();
                cmd.args(["--storage-engine", "sqlite://tansu.db"])
                    .current_dir(dir)
                    .stdout(log.try_clone().unwrap())
                    .stderr(log);
            }
            None => {
                cmd.args(["--storage-engine", "memory://tansu/"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
            }
        }
        self.child = Some(cmd.spawn().expect("starting tansu"));
        self.starts += 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !listening(&self.addr) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "tansu exited ({status}) before listening on {}:\n{}",
                    self.addr,
                    self.logs()
                );
            }
            assert!(Instant::now() < deadline, "tansu did not listen on {}", self.addr);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: no shutdown of any kind.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().expect("tansu is running");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// Whether the broker process is running.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// The broker's stderr of every start so far (SQLite storage only).
    pub fn logs(&self) -> String {
        let Some(dir) = &self.dir else {
            return "(tansu's output is discarded in memory mode)".into();
        };
        (0..self.starts)
            .map(|n| {
                let s = std::fs::read_to_string(dir.join(format!("tansu-{n}.log"))).unwrap_or_default();
                format!("--- tansu start {n} ---\n{}", tail(&s, 40))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn create_topic(&self, partitions: i32) {
        create_topic(&self.addr, partitions)
    }

    /// Waits until the broker answers metadata for `TOPIC` with `partitions` partitions.
    pub fn wait_for_topic(&self, partitions: usize) {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .set("log_level", "0")
            .create()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let last = match c.fetch_metadata(Some(TOPIC), Duration::from_secs(2)) {
                Ok(md) => {
                    let n = md.topics().first().map_or(0, |t| t.partitions().len());
                    if n == partitions {
                        return;
                    }
                    format!("{n} partitions")
                }
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "tansu at {} never showed {TOPIC} with {partitions} partitions (last: {last})\n{}",
                self.addr,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn create_topic(addr: &str, partitions: i32) {
    create_topic_with(addr, partitions, &[])
}

/// Creates `TOPIC` with extra client settings (TLS, SASL).
pub fn create_topic_with(addr: &str, partitions: i32, settings: &[(&str, &str)]) {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", addr);
    for (k, v) in settings {
        cfg.set(*k, *v);
    }
    let admin: AdminClient<DefaultClientContext> = cfg.create().unwrap();
    let topic = NewTopic::new(TOPIC, partitions, TopicReplication::Fixed(1));
    let r = futures_executor::block_on(admin.create_topics([&topic], &AdminOptions::new())).unwrap();
    for x in r {
        x.unwrap_or_else(|e| panic!("creating the topic: {e:?}"));
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
