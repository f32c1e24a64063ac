//! `user_profile_28d`: one row per (user, as-of day), sorted by user.

use super::{days, f64s, i64s, sort_by_user, strs, TableRows};
use crate::dataflow::{ratio, ProfileRow, TopEntry};
use crate::intern::{Interner, Name};
use crate::schema::Table;
use crate::sink::PartRows;
use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, Int64Array, ListArray, StructArray};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, Fields};
use std::sync::Arc;

impl TableRows for (Name, ProfileRow) {
    const TABLE: Table = Table::UserProfile28d;
    /// Two top-10 lists of names a row.
    const PIECE_ROWS: usize = 256;

    fn wrap(v: Vec<Self>) -> PartRows {
        PartRows::UserProfile(v)
    }

    fn sort(v: &mut Vec<Self>, int: &Interner) {
        sort_by_user(v, int)
    }

    fn columns(v: &[Self], day: i32, int: &Interner) -> Vec<ArrayRef> {
        vec![
            strs(v.iter().map(|(u, _)| int.resolve(u.0))),
            days(day, v.len()),
            i64s(v.iter().map(|(_, r)| r.active_days)),
            i64s(v.iter().map(|(_, r)| r.listens)),
            i64s(v.iter().map(|(_, r)| r.plays)),
            i64s(v.iter().map(|(_, r)| r.skips)),
            f64s(v.iter().map(|(_, r)| ratio(r.skips, r.listens))),
            i64s(v.iter().map(|(_, r)| r.ms_played)),
            i64s(v.iter().map(|(_, r)| r.distinct_tracks)),
            i64s(v.iter().map(|(_, r)| r.distinct_artists)),
            top_list("artist_id", v.iter().map(|(_, r)| &r.top_artists[..]), int),
            top_list("track_id", v.iter().map(|(_, r)| &r.top_tracks[..]), int),
        ]
    }
}

/// A `list<struct<id_name: string, plays: int64, skips: int64>>` column,
/// built column by column (offsets, ids, plays, skips).
fn top_list<'a>(id_name: &str, lists: impl ExactSizeIterator<Item = &'a [TopEntry]>, int: &Interner) -> ArrayRef {
    let fields = Fields::from(vec![
        Field::new(id_name, DataType::Utf8, true),
        Field::new("plays", DataType::Int64, true),
        Field::new("skips", DataType::Int64, true),
    ]);
    let mut offsets: Vec<i32> = Vec::with_capacity(lists.len() + 1);
    offsets.push(0);
    let (mut ids, mut plays, mut skips) = (StringBuilder::new(), Vec::new(), Vec::new());
    for list in lists {
        for &(id, p, s) in list {
            ids.append_value(int.resolve(id.0));
            plays.push(p);
            skips.push(s);
        }
        offsets.push(i32::try_from(plays.len()).expect("fewer than 2^31 top entries in one partition"));
    }
    let values = StructArray::new(
        fields.clone(),
        vec![
            Arc::new(ids.finish()),
            Arc::new(Int64Array::from(plays)),
            Arc::new(Int64Array::from(skips)),
        ],
        None,
    );
    let item = Arc::new(Field::new("item", DataType::Struct(fields), true));
    Arc::new(ListArray::new(
        item,
        OffsetBuffer::new(offsets.into()),
        Arc::new(values),
        None,
    ))
}
