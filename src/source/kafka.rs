//! Kafka source: `BaseConsumer` with `assign()` (no consumer-group
//! rebalances), partitions spread over workers by number, budgeted
//! non-blocking polls.
//!
//! Bounded (batch) runs read, per partition, from the first offset whose
//! message timestamp is at or after a start instant to the end offset
//! captured when the run starts. Brokers differ in how well they answer
//! offsets-for-times (librdkafka's mock cluster answers "end", tansu answers
//! 0): the answer is verified against the messages around it and, when wrong,
//! replaced by a binary search on message timestamps; a wrong answer costs
//! time, never data.

use super::{Poll, RawRecord};
use anyhow::{anyhow, bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Where to read from.
#[derive(Clone, Debug)]
pub struct KafkaInput {
    pub brokers: String,
    pub topic: String,
    /// librdkafka settings passed through (job file `[kafka]`).
    pub settings: BTreeMap<String, String>,
    /// Give up when no data arrives for this long while data is expected.
    pub stall_timeout: Duration,
}

impl KafkaInput {
    pub fn new(brokers: &str, topic: &str) -> KafkaInput {
        KafkaInput {
            brokers: brokers.into(),
            topic: topic.into(),
            settings: BTreeMap::new(),
            stall_timeout: Duration::from_secs(60),
        }
    }

    /// A consumer that reads by explicit assignment; offsets are never
    /// committed by librdkafka itself.
    pub fn consumer(&self) -> Result<BaseConsumer<Quiet>> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", "skipflow")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "50")
            .set("socket.connection.setup.timeout.ms", "5000")
            // Reconnect within 2 s of a broker coming back (librdkafka's default backs off to 10 s).
            .set("reconnect.backoff.max.ms", "2000")
            .set("log_level", "3");
        for (k, v) in &self.settings {
            c.set(k, v);
        }
        c.create_with_context(Quiet::default())
            .map_err(|e| crate::cli::ConfigError(format!("invalid Kafka settings: {e}")).into())
    }
}

/// Routes librdkafka's logs and errors to `tracing`, leaving out the
/// end-of-partition notices a bounded read expects. Errors are counted: the
/// first of a streak is logged as a warning, the rest at debug level, and
/// the reader logs when data flows again.
#[derive(Default)]
pub struct Quiet {
    pub errors: ErrorStats,
}

/// Kafka client errors seen (librdkafka retries them itself).
#[derive(Default)]
pub struct ErrorStats {
    /// Errors since the consumer was created.
    pub total: std::sync::atomic::AtomicU64,
    /// Errors since data last flowed (a streak; 0 when healthy).
    pub streak: std::sync::atomic::AtomicU64,
    /// Log errors at debug level only (a helper client whose errors the
    /// reading consumers report already).
    pub silent: std::sync::atomic::AtomicBool,
}

impl rdkafka::ClientContext for Quiet {
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
        use rdkafka::types::RDKafkaErrorCode;
        use std::sync::atomic::Ordering;
        if !matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            self.errors.total.fetch_add(1, Ordering::Relaxed);
            if self.errors.streak.fetch_add(1, Ordering::Relaxed) == 0 && !self.errors.silent.load(Ordering::Relaxed) {
                tracing::warn!(
                    target: "librdkafka",
                    "Kafka error: {error}: {reason}; retrying until the broker answers (check that it is up and reachable)"
                );
            } else {
                tracing::debug!(target: "librdkafka", "{error}: {reason}");
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

/// One partition's offsets to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRange {
    pub partition: i32,
    /// Where reading starts: the first offset at or after the start instant
    /// when the broker's answers could be verified, else an earlier offset.
    pub start: i64,
    /// The end offset when the broker reported one that checked out; `None`
    /// reads to the end of the partition.
    pub end: Option<i64>,
    /// Messages before the first one stamped at or after this instant are
    /// skipped (not read): exact even when `start` had to fall back.
    pub from_ms: Option<i64>,
}

const META_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one probe fetch may take before its answer counts as unknown.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The partition numbers of the topic, sorted; one clear error when the
/// broker or the topic cannot be reached.
fn partitions(consumer: &BaseConsumer<Quiet>, input: &KafkaInput) -> Result<Vec<i32>> {
    let md = consumer.fetch_metadata(Some(&input.topic), META_TIMEOUT).map_err(|e| {
        anyhow!(
            "cannot reach Kafka at {} ({e}); check --brokers and that the broker is running",
            input.brokers
        )
    })?;
    let topic = md
        .topics()
        .iter()
        .find(|t| t.name() == input.topic)
        .ok_or_else(|| anyhow!("topic {} not found on {}", input.topic, input.brokers))?;
    if let Some(e) = topic.error() {
        bail!("topic {} is not readable on {}: {:?}", input.topic, input.brokers, e);
    }
    let mut parts: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
    parts.sort_unstable();
    if parts.is_empty() {
        bail!("topic {} has no partitions on {}", input.topic, input.brokers);
    }
    Ok(parts)
}

/// Per partition, the log start (`latest` false) or the end offset the
/// broker reports (`latest` true): where an unbounded read starts, without
/// the verification a bounded run needs.
pub fn log_bounds(input: &KafkaInput, latest: bool) -> Result<Vec<(i32, i64)>> {
    let consumer = input.consumer()?;
    partitions(&consumer, input)?
        .into_iter()
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(&input.topic, p, META_TIMEOUT)
                .with_context(|| format!("reading the offsets of {}/{p}", input.topic))?;
            Ok((p, if latest { high } else { low }))
        })
        .collect()
}

/// The partitions of the topic and the offsets a bounded run reads: from the
/// first message at or after `from_ms` (or the log start) to the end offsets now.
pub fn plan(input: &KafkaInput, from_ms: Option<i64>) -> Result<Vec<PartitionRange>> {
    let consumer = input.consumer()?;
    let parts = partitions(&consumer, input)?;
    let mut out = Vec::new();
    for p in parts {
        let (low, reported) = consumer
            .fetch_watermarks(&input.topic, p, META_TIMEOUT)
            .with_context(|| format!("reading the offsets of {}/{p}", input.topic))?;
        let prober = Prober::new(input, p)?;
        // The reported end checks out when a fetch there finds the end of the partition.
        let end = match prober.at(reported)? {
            Probe::End => Some(reported),
            other => {
                tracing::info!(
                    partition = p,
                    reported,
                    ?other,
                    "broker's end offset does not check out; reading to the end"
                );
                None
            }
        };
        let start = match from_ms {
            None => low,
            Some(t) => start_offset(&consumer, &prober, t, low, end)?,
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

/// Fetches single messages of one partition at chosen offsets.
struct Prober {
    consumer: BaseConsumer<Quiet>,
    topic: String,
    partition: i32,
}

impl Prober {
    fn new(input: &KafkaInput, partition: i32) -> Result<Prober> {
        Ok(Prober {
            consumer: input.consumer()?,
            topic: input.topic.clone(),
            partition,
        })
    }

    fn at(&self, offset: i64) -> Result<Probe> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, self.partition, Offset::Offset(offset.max(0)))?;
        self.consumer.assign(&tpl)?;
        let deadline = Instant::now() + PROBE_TIMEOUT;
        while Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) if m.offset() >= offset => {
                    return Ok(Probe::Message(
                        m.offset(),
                        m.timestamp().to_millis().unwrap_or(i64::MIN),
                    ))
                }
                Some(Ok(_)) => {}
                Some(Err(KafkaError::PartitionEOF(_))) => return Ok(Probe::End),
                Some(Err(e)) => tracing::debug!("probing {}/{}@{offset}: {e}", self.topic, self.partition),
                None => {}
            }
        }
        Ok(Probe::Unknown)
    }
}

/// The first offset of the partition whose message timestamp is >= `t`, or
/// an earlier offset when the broker's answers cannot be trusted (the reader
/// then skips messages before the first one at or after `t`).
fn start_offset(c: &BaseConsumer<Quiet>, prober: &Prober, t: i64, low: i64, end: Option<i64>) -> Result<i64> {
    if end.is_some_and(|e| low >= e) {
        return Ok(low);
    }
    // Ask the broker, then check its answer against the messages around it.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&prober.topic, prober.partition, Offset::Offset(t))?;
    let answer = c.offsets_for_times(tpl, META_TIMEOUT).ok().and_then(|r| {
        r.elements().first().and_then(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            Offset::End => end,
            _ => None,
        })
    });
    if let Some(o) = answer.filter(|o| *o >= low) {
        if is_first_at_or_after(prober, t, o, low)? {
            return Ok(o);
        }
        tracing::info!(
            partition = prober.partition,
            answer = o,
            "broker's offsets-for-times answer is wrong; searching by timestamp"
        );
    }
    // Binary search on message timestamps (CreateTime grows with the offset),
    // then the same check; if the broker's fetches cannot settle it, the log start.
    if let Some(end) = end {
        let (mut lo, mut hi) = (low, end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match prober.at(mid)? {
                Probe::Message(at, ts) if ts >= t => hi = mid.min(at),
                Probe::Message(at, _) => lo = at.max(mid) + 1,
                Probe::End => hi = mid,
                Probe::Unknown => {
                    lo = low;
                    break;
                }
            }
        }
        if lo > low && is_first_at_or_after(prober, t, lo, low)? {
            return Ok(lo);
        }
    }
    tracing::info!(
        partition = prober.partition,
        "reading from the log start, skipping messages before the start instant"
    );
    Ok(low)
}

/// Whether `o` is the first offset at or after `t`: its message (if any) is
/// at or after `t` and the one before it is before `t`.
fn is_first_at_or_after(prober: &Prober, t: i64, o: i64, low: i64) -> Result<bool> {
    match prober.at(o)? {
        Probe::Message(at, ts) if at == o && ts >= t => {}
        Probe::End => {}
        _ => return Ok(false),
    }
    if o <= low {
        return Ok(true);
    }
    Ok(matches!(prober.at(o - 1)?, Probe::Message(at, ts) if at == o - 1 && ts < t))
}

/// What a reader did with one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadRange {
    pub partition: i32,
    /// First offset read (or where reading started when nothing was read).
    pub start: i64,
    /// One past the last offset read.
    pub end: i64,
}

struct Open {
    end: Option<i64>,
    gate: Option<i64>,
    read: ReadRange,
    /// The largest message timestamp read.
    latest_ts: Option<i64>,
    /// Reached the end of the partition and read nothing since.
    at_end: bool,
}

/// What a reader knows of one followed partition (for the watermark).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionState {
    pub partition: i32,
    /// Next offset to read.
    pub position: i64,
    /// The largest message timestamp read so far.
    pub latest_ts: Option<i64>,
    /// Caught up: the end of the partition was reached and nothing came since.
    pub caught_up: bool,
    /// The partition's end offset as last seen in a fetch (no broker call).
    pub high: Option<i64>,
}

/// Reads assigned partition ranges.
pub struct KafkaReader {
    consumer: Option<BaseConsumer<Quiet>>,
    topic: String,
    /// Unbounded: partitions are never finished (continuous mode).
    follow: bool,
    open: HashMap<i32, Open>,
    done: Vec<ReadRange>,
    last_progress: Instant,
    stall_timeout: Duration,
}

impl KafkaReader {
    pub fn new(input: &KafkaInput, ranges: &[PartitionRange]) -> Result<KafkaReader> {
        let mut open = HashMap::new();
        let mut done = Vec::new();
        let mut tpl = TopicPartitionList::new();
        for r in ranges {
            let read = ReadRange {
                partition: r.partition,
                start: r.start,
                end: r.start,
            };
            if r.end.is_some_and(|e| r.start >= e) {
                done.push(read);
            } else {
                tpl.add_partition_offset(&input.topic, r.partition, Offset::Offset(r.start))?;
                open.insert(
                    r.partition,
                    Open {
                        end: r.end,
                        gate: r.from_ms,
                        read,
                        latest_ts: None,
                        at_end: false,
                    },
                );
            }
        }
        let consumer = if open.is_empty() {
            None
        } else {
            let c = input.consumer()?;
            c.assign(&tpl)
                .with_context(|| format!("assigning partitions of {}", input.topic))?;
            Some(c)
        };
        Ok(KafkaReader {
            consumer,
            topic: input.topic.clone(),
            follow: false,
            open,
            done,
            last_progress: Instant::now(),
            stall_timeout: input.stall_timeout,
        })
    }

    /// An unbounded reader from the given next offsets (continuous mode).
    pub fn follow(input: &KafkaInput, starts: &[(i32, i64)]) -> Result<KafkaReader> {
        let ranges: Vec<PartitionRange> = starts
            .iter()
            .map(|&(partition, start)| PartitionRange {
                partition,
                start,
                end: None,
                from_ms: None,
            })
            .collect();
        let mut r = KafkaReader::new(input, &ranges)?;
        r.follow = true;
        Ok(r)
    }

    /// The next offset to read of each partition this reader holds.
    pub fn positions(&self) -> Vec<(i32, i64)> {
        self.ranges().into_iter().map(|r| (r.partition, r.end)).collect()
    }

    /// What was read of each partition (complete once `poll` returned `Done`).
    pub fn ranges(&self) -> Vec<ReadRange> {
        let mut v: Vec<ReadRange> = self
            .done
            .iter()
            .cloned()
            .chain(self.open.values().map(|o| o.read.clone()))
            .collect();
        v.sort_by_key(|r| r.partition);
        v
    }

    /// Per followed partition: position, latest timestamp, caught up.
    pub fn states(&self) -> Vec<PartitionState> {
        let mut v: Vec<PartitionState> = self
            .open
            .values()
            .map(|o| PartitionState {
                partition: o.read.partition,
                position: o.read.end,
                latest_ts: o.latest_ts,
                caught_up: o.at_end,
                high: self.cached_high(o.read.partition),
            })
            .collect();
        v.sort_by_key(|s| s.partition);
        v
    }

    /// The end offset of a partition from the consumer's last fetch response.
    fn cached_high(&self, partition: i32) -> Option<i64> {
        let c = self.consumer.as_ref()?;
        let topic = std::ffi::CString::new(self.topic.as_str()).ok()?;
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: a live client handle, a NUL-terminated topic, two out-pointers.
        let err = unsafe {
            rdkafka_sys::rd_kafka_get_watermark_offsets(
                c.client().native_ptr(),
                topic.as_ptr(),
                partition,
                &mut low,
                &mut high,
            )
        };
        (err == rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
    }

    /// Kafka client errors of this reader's consumer since it was created.
    pub fn errors(&self) -> u64 {
        self.consumer.as_ref().map_or(0, |c| {
            c.context().errors.total.load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    /// Data flows: ends an error streak, with one line saying so.
    fn healthy(&mut self) {
        if let Some(c) = &self.consumer {
            let n = c.context().errors.streak.swap(0, std::sync::atomic::Ordering::Relaxed);
            if n > 0 {
                tracing::info!(topic = %self.topic, errors = n, "Kafka answers again; reading resumed");
            }
        }
    }

    fn finish(&mut self, p: i32) {
        if let Some(o) = self.open.remove(&p) {
            self.done.push(o.read);
        }
    }

    /// Reads up to `budget` messages of the assigned ranges.
    pub fn poll(&mut self, budget: usize, f: &mut dyn FnMut(RawRecord<'_>)) -> Result<Poll> {
        let Some(c) = &self.consumer else { return Ok(Poll::Done) };
        let mut n = 0;
        let mut finished = Vec::new();
        while n < budget && finished.len() < self.open.len() {
            match c.poll(Duration::ZERO) {
                None => break,
                Some(Ok(m)) => {
                    self.last_progress = Instant::now();
                    let p = m.partition();
                    let Some(o) = self.open.get_mut(&p) else { continue };
                    o.at_end = false;
                    if o.end.is_some_and(|e| m.offset() >= e) {
                        finished.push(p);
                        continue;
                    }
                    let ts = m.timestamp().to_millis();
                    if let Some(g) = o.gate {
                        if ts.unwrap_or(i64::MIN) < g {
                            o.read.start = m.offset() + 1;
                            o.read.end = m.offset() + 1;
                            continue; // before the start instant: not part of this run
                        }
                        o.gate = None;
                        o.read.start = m.offset();
                    }
                    o.read.end = m.offset() + 1;
                    if ts.is_some() && ts > o.latest_ts {
                        o.latest_ts = ts;
                    }
                    f(RawRecord {
                        partition: p,
                        offset: m.offset(),
                        message_ts: ts,
                        value: m.payload(),
                    });
                    n += 1;
                    if o.end.is_some_and(|e| m.offset() + 1 >= e) {
                        finished.push(p);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    self.last_progress = Instant::now();
                    if let Some(o) = self.open.get_mut(&p) {
                        o.at_end = true;
                    }
                    // At the high watermark, which is at or past this run's end offset.
                    if !self.follow {
                        finished.push(p);
                    }
                }
                Some(Err(e)) => {
                    // Already counted and logged by the client context (`Quiet::error`).
                    tracing::debug!(topic = %self.topic, "Kafka: {e}");
                }
            }
        }
        if n > 0 {
            self.healthy();
        }
        for p in finished {
            self.finish(p);
        }
        if self.open.is_empty() {
            return Ok(Poll::Done);
        }
        if !self.follow && self.last_progress.elapsed() > self.stall_timeout {
            bail!(
                "no data from Kafka topic {} for {:?} while {} partition(s) were unfinished (broker down?)",
                self.topic,
                self.stall_timeout,
                self.open.len()
            );
        }
        if n == 0 {
            // Nothing buffered: wait briefly instead of spinning.
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Poll::More)
    }
}

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
