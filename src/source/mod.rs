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
