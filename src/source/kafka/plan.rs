//! Where reading starts and ends.
//!
//! Bounded (batch) runs read, per partition, from the first offset whose
//! message timestamp is at or after a start instant to the partition's end
//! as of the run's start. Brokers' answers are checked, never trusted:
//! - the start: the offsets-for-times answer must be a message at or after
//!   the instant whose predecessor is before it (librdkafka's mock cluster
//!   answers "end", tansu answers 0); if not, a binary search on message
//!   timestamps; if the broker's fetches cannot settle it, the log start
//!   (the reader then skips messages before the instant: a wrong answer
//!   costs time, never data);
//! - the end: the larger of the ListOffsets answer and the high watermark of
//!   a fetch response taken while planning. On a correct broker both are the
//!   end at the start, whatever producers keep writing; tansu 0.6 answers
//!   ListOffsets with an offset inside its last batch, but its fetch
//!   responses carry the true high watermark.

use super::{Ctx, KafkaInput};
use anyhow::{anyhow, bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One partition's offsets to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRange {
    pub partition: i32,
    /// Where reading starts: the first offset at or after the start instant
    /// when the broker's answers could be verified, else an earlier offset.
    pub start: i64,
    /// The partition's end as of the run's start: reading stops before it.
    pub end: i64,
    /// Messages before the first one stamped at or after this instant are
    /// skipped (not read): exact even when `start` had to fall back.
    pub from_ms: Option<i64>,
}

const META_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one probe fetch may take before its answer counts as unknown.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The partition numbers of the topic, sorted; one clear error when the
/// broker or the topic cannot be reached, or refuses this client.
pub fn topic_partitions(consumer: &BaseConsumer<Ctx>, input: &KafkaInput) -> Result<Vec<i32>> {
    let deadline = Instant::now() + META_TIMEOUT;
    let md = loop {
        match consumer.fetch_metadata(Some(&input.topic), Duration::from_secs(2)) {
            Ok(md) => break md,
            Err(e) => {
                // Serve queued client events: an authentication or TLS failure
                // is there, and is a better answer than a timeout. (A poll
                // that served a log event returns nothing, like an empty one.)
                for _ in 0..1000 {
                    let _ = consumer.poll(Duration::ZERO);
                }
                if let Some(line) = consumer.context().fatal_line(None) {
                    bail!(line);
                }
                if Instant::now() >= deadline {
                    bail!(
                        "cannot reach Kafka at {} ({e}); check --brokers and that the broker is running",
                        input.brokers
                    );
                }
            }
        }
    };
    let topic = md
        .topics()
        .iter()
        .find(|t| t.name() == input.topic)
        .ok_or_else(|| anyhow!("topic {} not found on {}", input.topic, input.brokers))?;
    if let Some(e) = topic.error() {
        let code = rdkafka::types::RDKafkaErrorCode::from(e);
        if let super::errors::Class::Fatal(kind) = super::errors::classify(code, "") {
            bail!(super::errors::describe(kind, &input.site(), None, &code.to_string()));
        }
        bail!("topic {} is not readable on {}: {code}", input.topic, input.brokers);
    }
    let mut parts: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
    parts.sort_unstable();
    if parts.is_empty() {
        bail!("topic {} has no partitions on {}", input.topic, input.brokers);
    }
    Ok(parts)
}

/// (log start, end) of one partition as the broker reports them.
pub fn watermarks(input: &KafkaInput, partition: i32) -> Result<(i64, i64)> {
    let c = input.consumer()?;
    c.fetch_watermarks(&input.topic, partition, META_TIMEOUT)
        .with_context(|| format!("reading the offsets of {} partition {partition}", input.topic))
}

/// Per partition, the log start (`latest` false) or the end offset the
/// broker reports (`latest` true): where an unbounded read starts, without
/// the verification a bounded run needs.
pub fn log_bounds(input: &KafkaInput, latest: bool) -> Result<BTreeMap<i32, i64>> {
    let consumer = input.consumer()?;
    topic_partitions(&consumer, input)?
        .into_iter()
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(&input.topic, p, META_TIMEOUT)
                .with_context(|| format!("reading the offsets of {} partition {p}", input.topic))?;
            Ok((p, if latest { high } else { low }))
        })
        .collect()
}

/// The partitions of the topic and the offsets a bounded run reads: from the
/// first message at or after `from_ms` (or the log start) to the end now.
pub fn plan(input: &KafkaInput, from_ms: Option<i64>) -> Result<Vec<PartitionRange>> {
    let consumer = input.consumer()?;
    let parts = topic_partitions(&consumer, input)?;
    let mut bounds = BTreeMap::new();
    for &p in &parts {
        let (low, reported) = consumer
            .fetch_watermarks(&input.topic, p, META_TIMEOUT)
            .with_context(|| format!("reading the offsets of {} partition {p}", input.topic))?;
        bounds.insert(p, (low, reported));
    }
    let prober = Prober::new(input)?;
    let ends = prober.ends(&bounds)?;
    let mut out = Vec::new();
    for p in parts {
        let (low, _) = bounds[&p];
        let end = ends[&p];
        let start = match from_ms {
            None => low,
            Some(t) => start_offset(&consumer, &prober, p, t, low, end)?,
        };
        out.push(PartitionRange {
            partition: p,
            start,
            end,
            from_ms,
        });
    }
    Ok(out)
}

/// What a fetch at one offset found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    /// The first message at or after the offset: (offset, timestamp).
    Message(i64, i64),
    /// No message at or after the offset.
    End,
    /// No answer in time.
    Unknown,
}

/// Fetches single messages at chosen offsets.
struct Prober {
    consumer: BaseConsumer<Ctx>,
    topic: String,
}

impl Prober {
    fn new(input: &KafkaInput) -> Result<Prober> {
        let consumer = input.consumer()?;
        consumer
            .context()
            .errors
            .silent
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(Prober {
            consumer,
            topic: input.topic.clone(),
        })
    }

    /// The end of every partition as of now: `max(reported, high watermark
    /// of a fetch response)`, from one fetch at the reported end of each.
    fn ends(&self, bounds: &BTreeMap<i32, (i64, i64)>) -> Result<BTreeMap<i32, i64>> {
        let mut tpl = TopicPartitionList::new();
        for (&p, &(_, reported)) in bounds {
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(reported))?;
        }
        self.consumer.assign(&tpl)?;
        let mut answered = std::collections::BTreeSet::new();
        let deadline = Instant::now() + META_TIMEOUT;
        while answered.len() < bounds.len() && Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    answered.insert(m.partition());
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    answered.insert(p);
                }
                Some(Err(e)) => {
                    if let Some(line) = self.consumer.context().fatal_of(&e, None) {
                        bail!(line);
                    }
                }
                None => {}
            }
        }
        let mut ends = BTreeMap::new();
        for (&p, &(_, reported)) in bounds {
            let high = super::cached_high(self.consumer.client(), &self.topic, p);
            if !answered.contains(&p) {
                tracing::warn!(
                    partition = p,
                    reported,
                    "no fetch answer while planning; using the reported end offset"
                );
            }
            let end = reported.max(high.unwrap_or(reported));
            if end != reported {
                tracing::info!(
                    partition = p,
                    reported,
                    end,
                    "the broker's fetch shows a later end than its offset answer"
                );
            }
            ends.insert(p, end);
        }
        Ok(ends)
    }

    fn at(&self, partition: i32, offset: i64) -> Result<Probe> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(offset.max(0)))?;
        self.consumer.assign(&tpl)?;
        let deadline = Instant::now() + PROBE_TIMEOUT;
        while Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) if m.partition() == partition && m.offset() >= offset => {
                    return Ok(Probe::Message(
                        m.offset(),
                        m.timestamp().to_millis().unwrap_or(i64::MIN),
                    ))
                }
                Some(Ok(_)) => {}
                Some(Err(KafkaError::PartitionEOF(p))) if p == partition => return Ok(Probe::End),
                Some(Err(e)) => tracing::debug!("probing {}/{partition}@{offset}: {e}", self.topic),
                None => {}
            }
        }
        Ok(Probe::Unknown)
    }
}

/// The first offset of the partition whose message timestamp is >= `t`, or
/// an earlier offset when the broker's answers cannot be trusted (the reader
/// then skips messages before the first one at or after `t`).
fn start_offset(c: &BaseConsumer<Ctx>, prober: &Prober, p: i32, t: i64, low: i64, end: i64) -> Result<i64> {
    if low >= end {
        return Ok(low);
    }
    // Ask the broker, then check its answer against the messages around it.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&prober.topic, p, Offset::Offset(t))?;
    let answer = c.offsets_for_times(tpl, META_TIMEOUT).ok().and_then(|r| {
        r.elements().first().and_then(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            Offset::End => Some(end),
            _ => None,
        })
    });
    if let Some(o) = answer.filter(|o| *o >= low) {
        if is_first_at_or_after(prober, p, t, o, low)? {
            return Ok(o);
        }
        tracing::info!(
            partition = p,
            answer = o,
            "broker's offsets-for-times answer is wrong; searching by timestamp"
        );
    }
    // Binary search on message timestamps (CreateTime grows with the offset),
    // then the same check; if the broker's fetches cannot settle it, the log start.
    let (mut lo, mut hi) = (low, end);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match prober.at(p, mid)? {
            Probe::Message(at, ts) if ts >= t => hi = mid.min(at),
            Probe::Message(at, _) => lo = at.max(mid) + 1,
            Probe::End => hi = mid,
            Probe::Unknown => {
                lo = low;
                break;
            }
        }
    }
    if lo > low && is_first_at_or_after(prober, p, t, lo, low)? {
        return Ok(lo);
    }
    tracing::info!(
        partition = p,
        "reading from the log start, skipping messages before the start instant"
    );
    Ok(low)
}

/// Whether `o` is the first offset at or after `t`: its message (if any) is
/// at or after `t` and the one before it is before `t`.
fn is_first_at_or_after(prober: &Prober, p: i32, t: i64, o: i64, low: i64) -> Result<bool> {
    match prober.at(p, o)? {
        Probe::Message(at, ts) if at == o && ts >= t => {}
        Probe::End => {}
        _ => return Ok(false),
    }
    if o <= low {
        return Ok(true);
    }
    Ok(matches!(prober.at(p, o - 1)?, Probe::Message(at, ts) if at == o - 1 && ts < t))
}
