//! Sources of raw records: NDJSON files (here) and Kafka (`kafka`).
//!
//! A source hands out raw records (partition, offset, message timestamp,
//! value bytes) in budgeted polls so the worker can interleave reading with
//! dataflow work. Decoding happens downstream, in the worker.

pub mod files;
pub mod kafka;

/// One record as read, before decoding.
#[derive(Clone, Copy, Debug)]
pub struct RawRecord<'a> {
    /// Kafka partition; 0 for files.
    pub partition: i32,
    /// Kafka offset; line number (from 1) for files.
    pub offset: i64,
    /// Kafka message timestamp (ms); `None` for files.
    pub message_ts: Option<i64>,
    /// The value; `None` for a Kafka message with a null value. A value over
    /// 65536 bytes may be cut to its first 65537 bytes (enough to reject it).
    pub value: Option<&'a [u8]>,
}

/// What a poll found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// More may come.
    More,
    /// This source has nothing more to read (bounded runs).
    Done,
}

impl<'a> RawRecord<'a> {
    /// The record's event, or why it breaks the contract (a null value is
    /// `invalid_json`).
    pub fn decode(&self) -> Result<crate::decode::Event<'a>, crate::decode::Reject> {
        match self.value {
            None => Err(crate::decode::Reject::InvalidJson),
            Some(v) => crate::decode::decode(v),
        }
    }

    /// The `rejected_events` row of this record and its partition day: the
    /// day of its message timestamp, else `run_day` (file input).
    pub fn reject_row(
        &self,
        source: crate::intern::Name,
        reason: crate::decode::Reject,
        run_day: i32,
    ) -> (i32, crate::dataflow::RejectRow) {
        let value = self.value.unwrap_or(&[]);
        let day = self.message_ts.map(crate::decode::day_of).unwrap_or(run_day);
        let row = crate::dataflow::RejectRow {
            source,
            partition: self.partition,
            offset: self.offset,
            message_ts: self.message_ts,
            reason,
            raw: value[..value.len().min(crate::decode::MAX_VALUE_BYTES)].to_vec(),
        };
        (day, row)
    }
}
