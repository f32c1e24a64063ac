//! Kafka source: `BaseConsumer` with `assign()` (no consumer-group
//! rebalances), partitions spread over workers by number, one queue per
//! partition (so every error names its partition), budgeted non-blocking
//! polls.
//!
//! - `plan`: the offsets a bounded (batch) run reads, checked against the
//!   broker's messages, and the log bounds an unbounded run starts from;
//! - `reader`: reads assigned partitions for a worker;
//! - `errors`: transient errors (waited for) told from fatal ones (exit 1);
//! - `producer`: produces generated records (`generate`, tests, bench).

pub mod discovery;
pub mod errors;
pub mod plan;
pub mod producer;
pub mod reader;

pub use discovery::Discovery;
pub use plan::{log_bounds, plan, topic_partitions, PartitionRange};
pub use producer::EventProducer;
pub use reader::{KafkaReader, PartitionState, ReadRange};

use errors::{Class, Fatal};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Where to read from.
#[derive(Clone, Debug)]
pub struct KafkaInput {
    pub brokers: String,
    pub topic: String,
    /// librdkafka settings passed through (job file `[kafka]`): TLS, SASL,
    /// timeouts, anything librdkafka's consumer takes.
    pub settings: BTreeMap<String, String>,
    /// Batch: give up when no data arrives for this long while data is expected.
    pub stall_timeout: Duration,
    /// Offsets that retention deleted before they were read: skip them
    /// (counted, logged) instead of failing the run (job file `allow_data_loss`).
    pub allow_data_loss: bool,
}

impl KafkaInput {
    pub fn new(brokers: &str, topic: &str) -> KafkaInput {
        KafkaInput {
            brokers: brokers.into(),
            topic: topic.into(),
            settings: BTreeMap::new(),
            stall_timeout: Duration::from_secs(60),
            allow_data_loss: false,
        }
    }

    /// Where this input reads, for error lines.
    pub fn site(&self) -> errors::Site {
        errors::Site {
            brokers: self.brokers.clone(),
            topic: self.topic.clone(),
            mechanism: self
                .settings
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("sasl.mechanism") || k.eq_ignore_ascii_case("sasl.mechanisms"))
                .map(|(_, v)| v.clone()),
        }
    }

    /// A consumer that reads by explicit assignment; offsets are never
    /// committed by librdkafka itself, and an offset that is no longer on the
    /// broker is an error (never a silent jump to another offset).
    pub fn consumer(&self) -> anyhow::Result<BaseConsumer<Ctx>> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", "skipflow")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "error")
            .set("fetch.wait.max.ms", "50")
            .set("socket.connection.setup.timeout.ms", "5000")
            // Reconnect within 2 s of a broker coming back (librdkafka's default backs off to 10 s).
            .set("reconnect.backoff.max.ms", "2000")
            .set("log_level", "3");
        for (k, v) in &self.settings {
            c.set(k, v);
        }
        let ctx = Ctx {
            site: self.site(),
            ..Ctx::default()
        };
        c.create_with_context(ctx)
            .map_err(|e| crate::error::bad(format!("invalid Kafka settings in the job file's [kafka] table: {e}")))
    }
}

/// The client context of every consumer: routes librdkafka's logs to
/// `tracing`, counts errors (the first of a streak is logged as a warning,
/// the reader logs when data flows again), keeps the first fatal error, and
/// serves OAUTHBEARER tokens in librdkafka's unsecured-JWT mode.
#[derive(Default)]
pub struct Ctx {
    site: errors::Site,
    pub errors: ErrorStats,
    /// The first error that waiting cannot fix, with librdkafka's reason.
    fatal: Mutex<Option<(Fatal, String)>>,
}

/// Kafka client errors seen (librdkafka retries the transient ones itself).
#[derive(Default)]
pub struct ErrorStats {
    /// Errors since the consumer was created.
    pub total: AtomicU64,
    /// Errors since data last flowed (a streak; 0 when healthy).
    pub streak: AtomicU64,
    /// When the streak began and when its last error came (epoch ms).
    pub streak_since_ms: AtomicI64,
    pub last_error_ms: AtomicI64,
    /// Log errors at debug level only (a helper client whose errors the
    /// reading consumers report already).
    pub silent: AtomicBool,
}

impl ErrorStats {
    /// Since when (epoch ms) the client has been failing: a streak of
    /// errors whose last one is recent. librdkafka reports a broker it
    /// cannot reach at least every 30 s (identical errors are suppressed
    /// in between), so 60 s without an error count as answering again: on
    /// an idle topic no message comes to end the streak.
    pub fn failing_since(&self) -> Option<i64> {
        let now = chrono::Utc::now().timestamp_millis();
        let recent = now - self.last_error_ms.load(Ordering::Relaxed) < 60_000;
        (self.streak.load(Ordering::Relaxed) > 0 && recent).then(|| self.streak_since_ms.load(Ordering::Relaxed))
    }
}

impl Ctx {
    /// The first fatal error seen by this client, as its one line.
    pub fn fatal_line(&self, partition: Option<i32>) -> Option<String> {
        let f = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
        f.as_ref()
            .map(|(kind, reason)| errors::describe(*kind, &self.site, partition, reason))
    }

    /// The one line of a fatal error `e` that a read of `partition`
    /// returned, or `None` when `e` is transient.
    pub fn fatal_of(&self, e: &KafkaError, partition: Option<i32>) -> Option<String> {
        let code = e.rdkafka_error_code()?;
        let kept = self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // librdkafka's reason text reached `error()` just before; use it when it is about this code.
        let reason = kept
            .filter(|(k, r)| errors::classify(code, r) == Class::Fatal(*k))
            .map(|(_, r)| r)
            .unwrap_or_else(|| e.to_string());
        match errors::classify(code, &reason) {
            Class::Fatal(kind) => Some(errors::describe(kind, &self.site, partition, &reason)),
            Class::Transient => None,
        }
    }

    /// Handles one client error: a fatal one is kept, a transient one
    /// counted (the first of a streak is logged as a warning).
    fn note(&self, code: Option<rdkafka::types::RDKafkaErrorCode>, reason: &str) {
        if let Some(Class::Fatal(kind)) = code.map(|c| errors::classify(c, reason)) {
            tracing::debug!(target: "librdkafka", ?kind, "{reason}");
            self.fatal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert((kind, reason.to_string()));
            return;
        }
        self.errors.total.fetch_add(1, Ordering::Relaxed);
        let now = chrono::Utc::now().timestamp_millis();
        self.errors.last_error_ms.store(now, Ordering::Relaxed);
        let first = self.errors.streak.fetch_add(1, Ordering::Relaxed) == 0;
        if first {
            self.errors.streak_since_ms.store(now, Ordering::Relaxed);
        }
        // After a fatal error, the transport errors that follow it are noise.
        let fatal = self.fatal.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        if first && !fatal && !self.errors.silent.load(Ordering::Relaxed) {
            tracing::warn!(
                target: "librdkafka",
                "Kafka at {} is not answering ({reason}); retrying until the broker answers",
                self.site.brokers
            );
        } else {
            tracing::debug!(target: "librdkafka", "{reason}");
        }
    }
}

impl rdkafka::ClientContext for Ctx {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            // Connection failures also arrive as errors: counted, and the first of a streak warned.
            _ if fac == "FAIL" => tracing::debug!(target: "librdkafka", "{fac} {msg}"),
            L::Emerg | L::Alert | L::Critical | L::Error => tracing::error!(target: "librdkafka", "{fac} {msg}"),
            L::Warning => tracing::warn!(target: "librdkafka", "{fac} {msg}"),
            _ => tracing::debug!(target: "librdkafka", "{fac} {msg}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        ) {
            self.note(error.rdkafka_error_code(), reason);
        }
    }

    /// OAUTHBEARER with `enable.sasl.oauthbearer.unsecure.jwt=true`: an
    /// unsigned token built from `sasl.oauthbearer.config`
    /// (`principal=NAME [scope=A,B] [lifeSeconds=N]`), as librdkafka's own
    /// unsecured-JWT handler makes it (for development brokers). Production
    /// OAUTHBEARER uses `sasl.oauthbearer.method=oidc`, which librdkafka
    /// serves itself.
    fn generate_oauth_token(
        &self,
        config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        unsecured_jwt(config.unwrap_or(""), chrono::Utc::now().timestamp_millis())
    }
}

impl rdkafka::consumer::ConsumerContext for Ctx {}

/// An unsecured JWT (`alg: none`) for `sasl.oauthbearer.config`.
pub fn unsecured_jwt(config: &str, now_ms: i64) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
    use base64::Engine;
    let (mut principal, mut scope, mut life_s) = (None, None, 3600i64);
    for kv in config.split_whitespace() {
        match kv.split_once('=') {
            Some(("principal", v)) => principal = Some(v.to_string()),
            Some(("scope", v)) => scope = Some(v.split(',').map(str::to_string).collect::<Vec<_>>()),
            Some(("lifeSeconds", v)) => life_s = v.parse()?,
            _ => return Err(format!("sasl.oauthbearer.config: unexpected {kv:?}").into()),
        }
    }
    let principal = principal.ok_or("sasl.oauthbearer.config needs principal=NAME")?;
    let exp_ms = now_ms + life_s * 1000;
    let mut claims = serde_json::json!({ "sub": principal, "iat": now_ms / 1000, "exp": exp_ms / 1000 });
    if let Some(s) = scope {
        claims["scope"] = serde_json::json!(s);
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let token = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none"}"#),
        b64.encode(serde_json::to_vec(&claims)?)
    );
    Ok(rdkafka::client::OAuthToken {
        token,
        principal_name: principal,
        lifetime_ms: exp_ms,
    })
}

/// Reads a cached end offset of `partition` from the client's last fetch
/// response (no broker call).
pub(crate) fn cached_high<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: a live client handle, a NUL-terminated topic, two out-pointers.
    let err = unsafe {
        rdkafka_sys::rd_kafka_get_watermark_offsets(client.native_ptr(), topic.as_ptr(), partition, &mut low, &mut high)
    };
    (err == rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsecured_jwt_carries_the_principal_and_expiry() {
        use base64::Engine;
        let t = unsecured_jwt("principal=alice scope=a,b lifeSeconds=60", 1_000_000).unwrap();
        assert_eq!(t.principal_name, "alice");
        assert_eq!(t.lifetime_ms, 1_060_000);
        let parts: Vec<&str> = t.token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[1])
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["exp"], 1060);
        assert!(unsecured_jwt("scope=x", 0).is_err());
    }
}
