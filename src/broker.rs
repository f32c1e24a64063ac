//! The embedded Kafka: librdkafka's mock cluster, in process or standalone
//! (`skipflow broker`). For demos, tests and local development.
//!
//! Limits worth knowing: the mock cluster keeps only about 5 MiB (or 100k
//! message sets) per partition and drops older data silently, answers
//! offsets-for-times with "end", and has no admin API. `watch_retention`
//! turns silent eviction into a loud error.

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, Producer};
use std::ffi::{CStr, CString};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

/// A running mock cluster with one broker.
pub struct EmbeddedKafka {
    /// Owns the mock cluster (it lives as long as this client).
    holder: BaseProducer,
    bootstrap: String,
}

impl EmbeddedKafka {
    /// Starts a mock cluster. With `port`, the broker is reachable (and
    /// advertised) at 127.0.0.1:port through a small TCP forwarder.
    pub fn start(port: Option<u16>) -> Result<EmbeddedKafka> {
        let holder: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .set("log_level", "3")
            .create()
            .context("starting librdkafka's mock cluster")?;
        let mcluster = unsafe { rdkafka_sys::rd_kafka_handle_mock_cluster(holder.client().native_ptr()) };
        if mcluster.is_null() {
            bail!("librdkafka did not create a mock cluster");
        }
        let real = unsafe { CStr::from_ptr(rdkafka_sys::rd_kafka_mock_cluster_bootstraps(mcluster)) }
            .to_string_lossy()
            .into_owned();
        let bootstrap = match port {
            None => real,
            Some(port) => {
                let listener = TcpListener::bind(("127.0.0.1", port))
                    .map_err(|e| anyhow!("cannot listen on 127.0.0.1:{port}: {e} (is another broker running?)"))?;
                let port = listener.local_addr()?.port();
                let host = CString::new("127.0.0.1")?;
                unsafe { rdkafka_sys::rd_kafka_mock_broker_set_host_port(mcluster, 1, host.as_ptr(), port as i32) };
                let target = real.split(',').next().unwrap_or(&real).to_string();
                std::thread::Builder::new()
                    .name("broker-forward".into())
                    .spawn(move || forward(listener, target))?;
                format!("127.0.0.1:{port}")
            }
        };
        Ok(EmbeddedKafka { holder, bootstrap })
    }

    /// The bootstrap address clients connect to.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        let mc = self
            .holder
            .client()
            .mock_cluster()
            .ok_or_else(|| anyhow!("no mock cluster"))?;
        mc.create_topic(topic, partitions, 1)
            .map_err(|e| anyhow!("creating topic {topic}: {e}"))
    }

    /// Takes the broker down (connections fail) or brings it back.
    pub fn set_broker_up(&self, up: bool) -> Result<()> {
        let mc = self
            .holder
            .client()
            .mock_cluster()
            .ok_or_else(|| anyhow!("no mock cluster"))?;
        if up {
            mc.broker_up(1)?;
        } else {
            mc.broker_down(1)?;
        }
        Ok(())
    }
}

/// Accepts connections and relays bytes both ways to `target`.
fn forward(listener: TcpListener, target: String) {
    for conn in listener.incoming() {
        let Ok(client) = conn else { continue };
        let Ok(server) = TcpStream::connect(&target) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        std::thread::spawn(move || pipe(client, server));
        std::thread::spawn(move || pipe(s2, c2));
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Partitions of `topic` whose oldest messages were dropped (log start > 0).
pub fn evicted_partitions(bootstrap: &str, topic: &str) -> Result<Vec<(i32, i64)>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("log_level", "3")
        .create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let mut out = Vec::new();
    for t in md.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let (low, _high) = c.fetch_watermarks(topic, p.id(), Duration::from_secs(5))?;
            if low > 0 {
                out.push((p.id(), low));
            }
        }
    }
    Ok(out)
}

/// Flushes a producer, failing if messages could not be delivered.
pub fn flush(p: &BaseProducer) -> Result<()> {
    p.flush(Duration::from_secs(60))
        .map_err(|e| anyhow!("delivering to Kafka: {e}"))
}
