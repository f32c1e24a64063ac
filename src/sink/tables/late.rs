//! `late_events`: listens that came after their day was finalized, one row
//! per event id, sorted by event id.

use super::{i64s, strs, ts_array, TableRows};
use crate::dataflow::LateRow;
use crate::intern::Interner;
use crate::schema::Table;
use crate::sink::PartRows;
use arrow_array::builder::TimestampMillisecondBuilder;
use arrow_array::{ArrayRef, StringArray};
use std::sync::Arc;

impl TableRows for LateRow {
    const TABLE: Table = Table::LateEvents;
    const PIECE_ROWS: usize = 512;

    fn wrap(v: Vec<Self>) -> PartRows {
        PartRows::Late(v)
    }

    /// Merges the rows to one per event id first.
    fn sort(v: &mut Vec<Self>, _int: &Interner) {
        LateRow::merge(v);
        v.sort_unstable_by(|a, b| a.event_id.as_bytes().cmp(b.event_id.as_bytes()));
    }

    fn columns(v: &[Self], _day: i32, _int: &Interner) -> Vec<ArrayRef> {
        let opt = |f: fn(&LateRow) -> &Option<String>| -> ArrayRef {
            Arc::new(StringArray::from_iter(v.iter().map(|r| f(r).as_deref())))
        };
        let mut mts = TimestampMillisecondBuilder::with_capacity(v.len()).with_timezone("UTC");
        for r in v {
            mts.append_option(r.message_ts);
        }
        vec![
            strs(v.iter().map(|r| r.event_id.as_str())),
            strs(v.iter().map(|r| if r.skip { "skip" } else { "play" })),
            strs(v.iter().map(|r| r.user_id.as_str())),
            strs(v.iter().map(|r| r.track_id.as_str())),
            strs(v.iter().map(|r| r.artist_id.as_str())),
            ts_array(v.iter().map(|r| r.ts)),
            i64s(v.iter().map(|r| r.ms_played)),
            i64s(v.iter().map(|r| r.track_duration_ms)),
            opt(|r| &r.context),
            opt(|r| &r.device),
            opt(|r| &r.country),
            Arc::new(mts.finish()),
        ]
    }
}
