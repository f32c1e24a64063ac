//! `rejected_events`: one row per quarantined record, sorted by (source,
//! partition, offset).

use super::{i64s, strs, TableRows};
use crate::dataflow::RejectRow;
use crate::intern::Interner;
use crate::schema::Table;
use crate::sink::PartRows;
use arrow_array::builder::{BinaryBuilder, Int32Builder, TimestampMillisecondBuilder};
use arrow_array::{ArrayRef, StringArray};
use std::sync::Arc;

impl TableRows for RejectRow {
    const TABLE: Table = Table::RejectedEvents;
    const PIECE_ROWS: usize = 512;

    fn wrap(v: Vec<Self>) -> PartRows {
        PartRows::Rejected(v)
    }

    fn sort(v: &mut Vec<Self>, int: &Interner) {
        v.sort_unstable_by(|a, b| {
            (int.resolve(a.source.0).as_bytes(), a.partition, a.offset).cmp(&(
                int.resolve(b.source.0).as_bytes(),
                b.partition,
                b.offset,
            ))
        })
    }

    fn columns(v: &[Self], _day: i32, int: &Interner) -> Vec<ArrayRef> {
        let mut part = Int32Builder::with_capacity(v.len());
        let mut mts = TimestampMillisecondBuilder::with_capacity(v.len()).with_timezone("UTC");
        let mut raw = BinaryBuilder::new();
        for r in v {
            part.append_value(r.partition);
            mts.append_option(r.message_ts);
            raw.append_value(&r.raw);
        }
        vec![
            strs(v.iter().map(|r| int.resolve(r.source.0))),
            Arc::new(part.finish()),
            i64s(v.iter().map(|r| r.offset)),
            Arc::new(mts.finish()),
            Arc::new(StringArray::from_iter_values(v.iter().map(|r| r.reason.to_string()))),
            Arc::new(raw.finish()),
        ]
    }
}
