//! Reads assigned partitions for one worker: bounded ranges (batch) or
//! followed partitions (continuous), one queue per partition so that an
//! error names its partition, without blocking the worker.

use super::{Ctx, KafkaInput, PartitionRange};
use crate::source::{Poll, RawRecord};
use anyhow::{anyhow, bail, Context, Result};
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a reader did with one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadRange {
    pub partition: i32,
    /// First offset read (or where reading started when nothing was read).
    pub start: i64,
    /// One past the last offset read.
    pub end: i64,
}

/// What a reader knows of one followed partition (for the watermark).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

struct Open {
    /// Bounded runs: stop before this offset.
    end: Option<i64>,
    /// Skip messages stamped before this instant (until the first one at or after it).
    gate: Option<i64>,
    read: ReadRange,
    latest_ts: Option<i64>,
    at_end: bool,
    done: bool,
}

/// Reads assigned partitions.
pub struct KafkaReader {
    consumer: Option<Arc<BaseConsumer<Ctx>>>,
    queues: Vec<(i32, PartitionQueue<Ctx>)>,
    input: KafkaInput,
    /// Unbounded: partitions are never finished (continuous mode).
    follow: bool,
    parts: BTreeMap<i32, Open>,
    /// Where the next poll starts among the queues (round robin).
    next: usize,
    last_progress: Instant,
    /// Records skipped because retention deleted them before they were read
    /// (only with `allow_data_loss`; otherwise that is a fatal error).
    lost: u64,
}

impl KafkaReader {
    /// A bounded reader of `ranges` (batch).
    pub fn new(input: &KafkaInput, ranges: &[PartitionRange]) -> Result<KafkaReader> {
        let mut r = KafkaReader {
            consumer: None,
            queues: Vec::new(),
            input: input.clone(),
            follow: false,
            parts: BTreeMap::new(),
            next: 0,
            last_progress: Instant::now(),
            lost: 0,
        };
        for range in ranges {
            r.parts.insert(
                range.partition,
                open(range.partition, range.start, Some(range.end), range.from_ms),
            );
        }
        r.assign()?;
        Ok(r)
    }

    /// An unbounded reader from the given next offsets (continuous mode).
    pub fn follow(input: &KafkaInput, starts: &[(i32, i64)]) -> Result<KafkaReader> {
        let mut r = KafkaReader::new(input, &[])?;
        r.follow = true;
        for &(p, start) in starts {
            r.parts.insert(p, open(p, start, None, None));
        }
        r.assign()?;
        Ok(r)
    }

    /// Follows one more partition from `start` (a partition added to the topic).
    pub fn add(&mut self, partition: i32, start: i64) -> Result<()> {
        if self.parts.contains_key(&partition) {
            return Ok(());
        }
        tracing::info!(topic = %self.input.topic, partition, start, "following a new partition");
        self.parts.insert(partition, open(partition, start, None, None));
        self.assign()
    }

    /// The partitions this reader holds.
    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.parts.keys().copied()
    }

    /// (Re)assigns every unfinished partition at its next offset and gives
    /// each its own queue.
    fn assign(&mut self) -> Result<()> {
        self.queues.clear();
        let mut tpl = TopicPartitionList::new();
        for (p, o) in self.parts.iter_mut() {
            if o.end.is_some_and(|e| o.read.end >= e) {
                o.done = true;
            }
            if !o.done {
                tpl.add_partition_offset(&self.input.topic, *p, Offset::Offset(o.read.end))?;
            }
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        if self.consumer.is_none() {
            self.consumer = Some(Arc::new(self.input.consumer()?));
        }
        let c = self.consumer.as_ref().expect("consumer");
        c.assign(&tpl)
            .with_context(|| format!("assigning partitions of {}", self.input.topic))?;
        for e in tpl.elements() {
            let q = c
                .split_partition_queue(&self.input.topic, e.partition())
                .ok_or_else(|| anyhow!("no queue for {} partition {}", self.input.topic, e.partition()))?;
            self.queues.push((e.partition(), q));
        }
        Ok(())
    }

    /// The next offset to read of each partition this reader holds.
    pub fn positions(&self) -> Vec<(i32, i64)> {
        self.parts.iter().map(|(p, o)| (*p, o.read.end)).collect()
    }

    /// What was read of each partition (complete once `poll` returned `Done`).
    pub fn ranges(&self) -> Vec<ReadRange> {
        self.parts.values().map(|o| o.read.clone()).collect()
    }

    /// Per followed partition: position, latest timestamp, caught up.
    pub fn states(&self) -> Vec<PartitionState> {
        self.parts
            .values()
            .map(|o| PartitionState {
                partition: o.read.partition,
                position: o.read.end,
                latest_ts: o.latest_ts,
                caught_up: o.at_end,
                high: self
                    .consumer
                    .as_ref()
                    .and_then(|c| super::cached_high(c.client(), &self.input.topic, o.read.partition)),
            })
            .collect()
    }

    /// Kafka client errors of this reader's consumer since it was created.
    pub fn errors(&self) -> u64 {
        self.consumer
            .as_ref()
            .map_or(0, |c| c.context().errors.total.load(Ordering::Relaxed))
    }

    /// Since when (epoch ms) Kafka has not been answering this reader.
    pub fn failing_since(&self) -> Option<i64> {
        self.consumer.as_ref().and_then(|c| c.context().errors.failing_since())
    }

    /// Records lost to retention and skipped (`allow_data_loss`).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Data flows: ends an error streak, with one line saying so.
    fn healthy(&self) {
        if let Some(c) = &self.consumer {
            let n = c.context().errors.streak.swap(0, Ordering::Relaxed);
            if n > 0 {
                tracing::info!(topic = %self.input.topic, errors = n, "Kafka answers again; reading resumed");
            }
        }
    }

    /// Reads up to `budget` messages of the assigned partitions.
    pub fn poll(&mut self, budget: usize, f: &mut dyn FnMut(RawRecord<'_>)) -> Result<Poll> {
        let Some(c) = self.consumer.clone() else {
            return Ok(Poll::Done);
        };
        let mut n = 0;
        let mut lost: Option<i32> = None;
        // The consumer's own queue first: events (logs, client-wide errors),
        // and messages fetched before their partition's queue was split off,
        // which precede everything in that queue.
        while n < budget {
            let Some(m) = c.poll(Duration::ZERO) else { break };
            match handle_message(&mut self.parts, &self.input, c.context(), m, None, f)? {
                Step::Read(k) => n += k,
                Step::Lost(p) => {
                    lost = Some(p);
                    break;
                }
            }
        }
        if let Some(line) = c.context().fatal_line(None) {
            bail!(line);
        }
        let k = self.queues.len();
        'queues: for i in (0..k).filter(|_| lost.is_none()) {
            let (p, q) = &self.queues[(self.next + i) % k];
            while n < budget {
                let Some(m) = q.poll(Duration::ZERO) else { break };
                match handle_message(&mut self.parts, &self.input, c.context(), m, Some(*p), f)? {
                    Step::Read(k) => n += k,
                    Step::Lost(p) => {
                        lost = Some(p);
                        break 'queues;
                    }
                }
            }
        }
        self.next = (self.next + 1) % k.max(1);
        if let Some(p) = lost {
            self.skip_lost(p)?;
            self.assign()?;
        }
        self.after_poll(n)
    }

    /// `allow_data_loss`: the next offset of `p` was deleted by retention; go
    /// on from the log start, counting what was lost.
    fn skip_lost(&mut self, p: i32) -> Result<()> {
        let (low, _) = super::plan::watermarks(&self.input, p)?;
        let Some(o) = self.parts.get_mut(&p) else { return Ok(()) };
        let n = (low - o.read.end).max(0) as u64;
        tracing::warn!(
            topic = %self.input.topic,
            partition = p,
            from = o.read.end,
            to = low,
            "{n} records were deleted by retention before they were read; going on from the log start (allow_data_loss)"
        );
        self.lost += n;
        o.read.end = o.read.end.max(low);
        Ok(())
    }

    fn after_poll(&mut self, n: usize) -> Result<Poll> {
        let parts = &self.parts;
        self.queues.retain(|(p, _)| parts.get(p).is_some_and(|o| !o.done));
        if n > 0 || self.parts.values().any(|o| o.at_end) {
            self.last_progress = Instant::now();
        }
        if n > 0 {
            self.healthy();
        }
        if !self.follow && self.parts.values().all(|o| o.done) {
            return Ok(Poll::Done);
        }
        let open = self.parts.values().filter(|o| !o.done).count();
        if !self.follow && self.last_progress.elapsed() > self.input.stall_timeout {
            bail!(
                "Kafka at {} sent nothing for {:?} while {open} partition(s) of {} were unfinished; \
                 check that the broker is up and reachable",
                self.input.brokers,
                self.input.stall_timeout,
                self.input.topic,
            );
        }
        if n == 0 {
            // Nothing buffered: wait briefly instead of spinning.
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Poll::More)
    }
}

/// What one message or error meant.
enum Step {
    /// Records handed on (0 or 1).
    Read(usize),
    /// The partition's next offset is gone (retention) and the job allows skipping it.
    Lost(i32),
}

fn open(partition: i32, start: i64, end: Option<i64>, gate: Option<i64>) -> Open {
    Open {
        end,
        gate,
        read: ReadRange {
            partition,
            start,
            end: start,
        },
        latest_ts: None,
        at_end: false,
        done: end.is_some_and(|e| start >= e),
    }
}

/// One message or error of partition `from` (`None`: the consumer's own
/// queue). Returns the number of records handed to `f` (0 or 1).
fn handle_message(
    parts: &mut BTreeMap<i32, Open>,
    input: &KafkaInput,
    ctx: &Ctx,
    m: rdkafka::error::KafkaResult<BorrowedMessage<'_>>,
    from: Option<i32>,
    f: &mut dyn FnMut(RawRecord<'_>),
) -> Result<Step> {
    let m = match m {
        Ok(m) => m,
        Err(KafkaError::PartitionEOF(p)) => {
            if let Some(o) = parts.get_mut(&p) {
                o.at_end = true;
                // Bounded runs: the end of the partition is at or past this run's end offset.
                if o.end.is_some() {
                    o.done = true;
                }
            }
            return Ok(Step::Read(0));
        }
        Err(e) => {
            if let Some(line) = ctx.fatal_of(&e, from) {
                let out_of_range = e.rdkafka_error_code().is_some_and(|c| {
                    super::errors::classify(c, "")
                        == super::errors::Class::Fatal(super::errors::Fatal::OffsetOutOfRange)
                });
                if let (true, true, Some(p)) = (out_of_range, input.allow_data_loss, from) {
                    return Ok(Step::Lost(p));
                }
                bail!(line);
            }
            // Transient: counted and logged by the client context.
            return Ok(Step::Read(0));
        }
    };
    let p = m.partition();
    let Some(o) = parts.get_mut(&p) else {
        return Ok(Step::Read(0));
    };
    if o.done || m.offset() < o.read.end {
        return Ok(Step::Read(0)); // past this run's end, or read already
    }
    o.at_end = false;
    if o.end.is_some_and(|e| m.offset() >= e) {
        o.done = true;
        return Ok(Step::Read(0));
    }
    let ts = m.timestamp().to_millis();
    if let Some(g) = o.gate {
        if ts.unwrap_or(i64::MIN) < g {
            o.read.start = m.offset() + 1;
            o.read.end = m.offset() + 1;
            return Ok(Step::Read(0)); // before the start instant: not part of this run
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
    if o.end.is_some_and(|e| o.read.end >= e) {
        o.done = true;
    }
    Ok(Step::Read(1))
}
