//! Produces records keyed by user id with their arrival time as message
//! timestamp (`skipflow generate --brokers`, the tests, the benchmarks).

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use std::collections::BTreeMap;
use std::time::Duration;

/// Counts delivery failures of a producer.
#[derive(Default)]
pub struct DeliveryCounter {
    pub failed: std::sync::atomic::AtomicU64,
    pub first_error: std::sync::Mutex<Option<String>>,
}

impl rdkafka::ClientContext for DeliveryCounter {}

impl rdkafka::producer::ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = r {
            self.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.first_error
                .lock()
                .expect("delivery")
                .get_or_insert_with(|| e.to_string());
        }
    }
}

/// Produces records keyed by user id with their arrival time as message timestamp.
pub struct EventProducer {
    producer: rdkafka::producer::BaseProducer<DeliveryCounter>,
    topic: String,
    pub sent: u64,
}

impl EventProducer {
    pub fn new(brokers: &str, topic: &str, settings: &BTreeMap<String, String>) -> Result<EventProducer> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", brokers)
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "500000")
            .set("message.max.bytes", "2000000")
            .set("log_level", "3");
        for (k, v) in settings {
            c.set(k, v);
        }
        let producer = c
            .create_with_context(DeliveryCounter::default())
            .context("creating a Kafka producer")?;
        Ok(EventProducer {
            producer,
            topic: topic.into(),
            sent: 0,
        })
    }

    /// Queues one record, waiting while the local queue is full.
    pub fn send(&mut self, key: &[u8], value: Option<&[u8]>, timestamp_ms: i64) -> Result<()> {
        use rdkafka::producer::BaseRecord;
        loop {
            let mut rec = BaseRecord::to(&self.topic).key(key).timestamp(timestamp_ms);
            if let Some(v) = value {
                rec = rec.payload(v);
            }
            match self.producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), _)) => {
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => bail!("producing to {}: {e}", self.topic),
            }
        }
        self.sent += 1;
        if self.sent.is_multiple_of(10_000) {
            self.producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    /// Waits for every queued record to be delivered.
    pub fn finish(self) -> Result<u64> {
        use rdkafka::producer::Producer;
        self.producer
            .flush(Duration::from_secs(120))
            .map_err(|e| anyhow!("delivering to Kafka: {e}"))?;
        let ctx = self.producer.context();
        let failed = ctx.failed.load(std::sync::atomic::Ordering::Relaxed);
        if failed > 0 {
            bail!(
                "{failed} of {} records were not delivered to {}: {}",
                self.sent,
                self.topic,
                ctx.first_error.lock().expect("delivery").clone().unwrap_or_default()
            );
        }
        Ok(self.sent)
    }
}
