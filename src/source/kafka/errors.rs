//! Kafka client errors told apart (semantics.md, "Kafka as it runs in
//! production"): a broker that cannot be reached or drops is waited for;
//! an error that waiting cannot fix ends the run with one line naming it.

use rdkafka::types::RDKafkaErrorCode as C;

/// What an error means for the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Transport, broker down, leader change, timeouts: librdkafka retries;
    /// logged once per streak and counted.
    Transient,
    /// Authentication, authorization, unknown topic or partition, a message
    /// that cannot be decompressed, offsets retention deleted: exit 1.
    Fatal(Fatal),
}

/// The kinds of error that waiting cannot fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fatal {
    Authentication,
    Tls,
    Authorization,
    UnknownTopic,
    Undecodable,
    /// The offset to read was deleted (retention) or never existed.
    OffsetOutOfRange,
}

/// How an error code reads for the run. `reason` is librdkafka's text (TLS
/// errors are fatal only when they say the configuration is wrong; a
/// connection dropped during a handshake is transient).
pub fn classify(code: C, reason: &str) -> Class {
    use Fatal::*;
    let fatal = match code {
        C::Authentication
        | C::SaslAuthenticationFailed
        | C::UnsupportedSASLMechanism
        | C::IllegalSASLState
        | C::DelegationTokenAuthDisabled => Authentication,
        C::SSL if tls_is_misconfigured(reason) => Tls,
        C::TopicAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::DelegationTokenAuthorizationFailed => Authorization,
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition | C::UnknownTopicId => UnknownTopic,
        C::BadCompression
        | C::NotImplemented
        | C::UnsupportedCompressionType
        | C::BadMessage
        | C::InvalidMessage
        | C::InvalidRecord => Undecodable,
        C::AutoOffsetReset | C::OffsetOutOfRange => OffsetOutOfRange,
        _ => return Class::Transient,
    };
    Class::Fatal(fatal)
}

fn tls_is_misconfigured(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    [
        "certificate",
        "verify",
        "wrong version number",
        "unknown protocol",
        "unknown ca",
        "alert",
        "no such file",
        "ssl.ca",
        "packet length too long",
    ]
    .iter()
    .any(|k| r.contains(k))
}

/// Where a client reads: named in its error lines.
#[derive(Clone, Debug, Default)]
pub struct Site {
    pub brokers: String,
    pub topic: String,
    /// `sasl.mechanism`, when SASL is configured.
    pub mechanism: Option<String>,
}

/// The one line an operator reads for a fatal error: what is wrong, where,
/// and what to do.
pub fn describe(kind: Fatal, site: &Site, partition: Option<i32>, reason: &str) -> String {
    let (brokers, topic) = (&site.brokers, &site.topic);
    let at = match partition {
        Some(p) => format!("{topic} partition {p}"),
        None => topic.to_string(),
    };
    match kind {
        Fatal::Authentication => format!(
            "Kafka authentication failed at {brokers}{}: {reason}; check the sasl.* settings in the job file's [kafka] table",
            site.mechanism.as_ref().map(|m| format!(" (SASL {m})")).unwrap_or_default()
        ),
        Fatal::Tls => format!(
            "TLS connection to Kafka at {brokers} failed: {reason}; check security.protocol and the ssl.* settings \
             (ssl.ca.location) in the job file's [kafka] table"
        ),
        Fatal::Authorization => format!(
            "not authorized to read {at} on {brokers}: {reason}; grant this principal Describe and Read on the topic"
        ),
        Fatal::UnknownTopic => format!("{at} does not exist on {brokers}: {reason}; check --topic"),
        Fatal::Undecodable => format!(
            "cannot decode the messages of {at}: {reason}; the batch is corrupt or uses a codec this build cannot read \
             (it reads none, gzip, snappy, lz4, zstd)"
        ),
        Fatal::OffsetOutOfRange => format!(
            "the offsets to read of {at} are no longer on the broker (deleted by retention): {reason}; \
             records were lost before they were read"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_waiting_can_fix_are_transient() {
        for c in [
            C::BrokerTransportFailure,
            C::AllBrokersDown,
            C::Resolve,
            C::LeaderNotAvailable,
            C::NotLeaderForPartition,
            C::RequestTimedOut,
            C::OperationTimedOut,
        ] {
            assert_eq!(classify(c, "Connection refused"), Class::Transient, "{c:?}");
        }
        // A handshake cut off by a broker restart is an outage, not a misconfiguration.
        assert_eq!(classify(C::SSL, "SSL handshake failed: Disconnected"), Class::Transient);
    }

    #[test]
    fn errors_waiting_cannot_fix_are_fatal() {
        let f = |c, r| classify(c, r);
        assert_eq!(
            f(C::Authentication, "SASL authentication error"),
            Class::Fatal(Fatal::Authentication)
        );
        assert_eq!(
            f(C::SSL, "SSL handshake failed: certificate verify failed"),
            Class::Fatal(Fatal::Tls)
        );
        assert_eq!(f(C::TopicAuthorizationFailed, ""), Class::Fatal(Fatal::Authorization));
        assert_eq!(f(C::UnknownTopicOrPartition, ""), Class::Fatal(Fatal::UnknownTopic));
        assert_eq!(f(C::BadCompression, ""), Class::Fatal(Fatal::Undecodable));
        assert_eq!(f(C::NotImplemented, "codec 0x4"), Class::Fatal(Fatal::Undecodable));
        assert_eq!(f(C::AutoOffsetReset, ""), Class::Fatal(Fatal::OffsetOutOfRange));
    }

    #[test]
    fn the_line_names_the_partition() {
        let site = Site {
            brokers: "b:9092".into(),
            topic: "t".into(),
            mechanism: None,
        };
        let l = describe(Fatal::Undecodable, &site, Some(3), "Decompression failed");
        assert!(l.contains("t partition 3") && l.contains("Decompression failed"), "{l}");
        assert!(!l.contains('\n'));
    }
}
