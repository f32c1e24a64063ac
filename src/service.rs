//! The endpoints a continuous run serves on `--metrics-addr` (process 0 of
//! a cluster): `/metrics` (Prometheus), `/healthz`, `/readyz` and
//! `/status`. The committer records each commit in a [`Status`]; health and
//! readiness are judged from it when asked, so a run whose commits stopped
//! turns unhealthy without anything left to report it.

use crate::metrics::Metrics;
use anyhow::{anyhow, Result};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// When the run counts as unhealthy and when as ready (job file keys
/// `unhealthy_after` and `ready_max_lag`).
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    /// No commit for this long, or Kafka failing for this long: unhealthy.
    pub unhealthy_after: Duration,
    /// Ready once the messages not yet read, over all partitions, are at
    /// most this many.
    pub ready_max_lag: i64,
}

impl Default for Thresholds {
    /// The defaults for a 30 s commit interval.
    fn default() -> Thresholds {
        Thresholds {
            unhealthy_after: Duration::from_secs(90),
            ready_max_lag: 100_000,
        }
    }
}

/// One partition as of the last commit.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PartitionStatus {
    pub partition: i32,
    /// Next offset the published outputs reflect (the checkpoint's).
    pub offset: i64,
    /// Next offset the reader will read.
    pub position: i64,
    /// The partition's end as of the reader's last fetch.
    pub high: Option<i64>,
    /// Messages not read yet (`None`: no fetch has told the end yet).
    pub lag: Option<i64>,
    pub caught_up: bool,
    /// The largest message timestamp read (epoch ms).
    pub latest_ms: Option<i64>,
}

/// The last commit that published.
#[derive(Clone, Debug, Serialize)]
pub struct LastCommit {
    pub number: u64,
    pub at: String,
    pub duration_s: f64,
    pub partitions_published: usize,
}

/// What the committer knows after a commit.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    /// Replaying to the checkpoint after a restart: nothing published yet.
    pub replaying: bool,
    /// A stop was requested: the next commit is the last.
    pub stopping: bool,
    pub last_commit: Option<LastCommit>,
    pub partitions: Vec<PartitionStatus>,
    pub watermark_ms: Option<i64>,
    #[serde(with = "crate::dates::opt_day")]
    pub final_through: Option<i32>,
    /// Days with listens in the state (not final yet).
    pub open_days: Vec<String>,
    /// Final days a quality gate failed, held without `_SUCCESS` until
    /// `skipflow accept`: day -> the failed checks.
    pub held_days: std::collections::BTreeMap<String, String>,
    /// Since when (epoch ms) Kafka has not been answering, if it is not.
    pub kafka_failing_since_ms: Option<i64>,
    pub kafka_errors: u64,
    /// The run report of the last commit.
    pub last_report: Option<serde_json::Value>,
}

/// The run's status, shared by the committer and the endpoints.
pub struct Status {
    topic: String,
    output: String,
    started_at: String,
    started: Instant,
    limits: Thresholds,
    /// The snapshot and when the last commit (replay included) ended.
    now: Mutex<(Snapshot, Option<Instant>)>,
}

impl Status {
    pub fn new(topic: &str, output: &str, limits: Thresholds) -> Arc<Status> {
        Arc::new(Status {
            topic: topic.to_string(),
            output: output.to_string(),
            started_at: chrono::Utc::now().to_rfc3339(),
            started: Instant::now(),
            limits,
            now: Mutex::new((Snapshot::default(), None)),
        })
    }

    /// Records a commit (one that replayed included).
    pub fn record(&self, s: Snapshot) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = (s, Some(Instant::now()));
    }

    fn get(&self) -> (Snapshot, Option<Instant>) {
        self.now.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Healthy, or why not: commits keep coming, and Kafka answers.
    pub fn health(&self) -> std::result::Result<(), String> {
        let (s, last) = self.get();
        let limit = self.limits.unhealthy_after;
        let quiet = last.unwrap_or(self.started).elapsed();
        if quiet > limit {
            let what = if last.is_some() { "no commit" } else { "no first commit" };
            return Err(format!(
                "{what} for {}s (unhealthy_after {}s): a worker is stuck, or commits fail",
                quiet.as_secs(),
                limit.as_secs()
            ));
        }
        if let Some(since) = s.kafka_failing_since_ms {
            let failing = (chrono::Utc::now().timestamp_millis() - since).max(0) as u64;
            if failing > limit.as_millis() as u64 {
                return Err(format!(
                    "Kafka has not answered for {}s (unhealthy_after {}s)",
                    failing / 1000,
                    limit.as_secs()
                ));
            }
        }
        Ok(())
    }

    /// Ready, or why not: healthy, published, and caught up to within
    /// `ready_max_lag` messages.
    pub fn ready(&self) -> std::result::Result<(), String> {
        self.health()?;
        let (s, _) = self.get();
        if s.replaying || s.last_commit.is_none() {
            return Err("no commit published yet".into());
        }
        let lags: Option<Vec<i64>> = s.partitions.iter().map(|p| p.lag).collect();
        let Some(lags) = lags else {
            return Err("the end of some partition is not known yet".into());
        };
        let lag: i64 = lags.iter().sum();
        if lag > self.limits.ready_max_lag {
            return Err(format!(
                "{lag} messages behind (ready_max_lag {})",
                self.limits.ready_max_lag
            ));
        }
        Ok(())
    }

    /// The `/status` document.
    pub fn json(&self) -> serde_json::Value {
        let (s, last) = self.get();
        let (health, ready) = (self.health(), self.ready());
        let state = match (&health, &ready) {
            _ if s.stopping => "stopping",
            (Err(_), _) => "unhealthy",
            _ if last.is_none() => "starting",
            _ if s.replaying => "replaying",
            (_, Err(_)) => "catching_up",
            _ => "live",
        };
        let lag: Option<i64> = s.partitions.iter().map(|p| p.lag).sum();
        serde_json::json!({
            "state": state,
            "healthy": health.is_ok(),
            "unhealthy_because": health.err(),
            "ready": ready.is_ok(),
            "not_ready_because": ready.err(),
            "topic": self.topic,
            "output": self.output,
            "started_at": self.started_at,
            "lag": lag,
            "seconds_since_last_commit": last.map(|t| t.elapsed().as_secs_f64()),
            "thresholds": {
                "unhealthy_after_s": self.limits.unhealthy_after.as_secs_f64(),
                "ready_max_lag": self.limits.ready_max_lag,
            },
            "commit": s,
        })
    }

    /// Serves the endpoints on `addr` from a background thread.
    pub fn serve(self: &Arc<Self>, addr: &str, metrics: Arc<Metrics>) -> Result<()> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| crate::error::ConfigError(format!("--metrics-addr {addr}: cannot listen: {e}")))?;
        let status = self.clone();
        std::thread::Builder::new()
            .name("service".into())
            .spawn(move || {
                for req in server.incoming_requests() {
                    let resp = status.answer(req.url(), &metrics);
                    let _ = req.respond(resp);
                }
            })
            .map_err(|e| anyhow!("starting the service endpoints: {e}"))?;
        Ok(())
    }

    fn answer(&self, url: &str, metrics: &Metrics) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
        let judged = |r: std::result::Result<(), String>| match r {
            Ok(()) => text(200, "ok\n".into()),
            Err(why) => text(503, format!("{why}\n")),
        };
        match url.split('?').next().unwrap_or("") {
            "/metrics" => with_type(text(200, metrics.render()), "text/plain; version=0.0.4"),
            "/healthz" => judged(self.health()),
            "/readyz" => judged(self.ready()),
            "/status" => with_type(
                text(200, serde_json::to_string_pretty(&self.json()).unwrap_or_default()),
                "application/json",
            ),
            _ => text(404, "skipflow serves /metrics, /healthz, /readyz and /status\n".into()),
        }
    }
}

fn text(code: u16, body: String) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    tiny_http::Response::from_string(body).with_status_code(code)
}

fn with_type(
    r: tiny_http::Response<std::io::Cursor<Vec<u8>>>,
    t: &str,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    r.with_header(
        format!("Content-Type: {t}")
            .parse::<tiny_http::Header>()
            .expect("header"),
    )
}
