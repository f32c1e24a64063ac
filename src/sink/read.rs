//! Reading published partitions back: the daily aggregates of window days
//! before a run (the profile's prior days) and rejected rows to merge with.

use crate::dataflow::{LateRow, ProfIn, ProfKind, RejectRow};
use crate::decode::Reject;
use crate::intern::{Interner, Name};
use crate::schema::Table;
use crate::store::Store;
use anyhow::{anyhow, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};

pub(crate) fn col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a dyn Array> {
    b.column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| anyhow!("column {name} missing"))
}

pub(crate) fn i64_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a arrow_array::Int64Array> {
    col(b, name)?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| anyhow!("column {name} is not int64"))
}

pub(crate) fn str_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a arrow_array::StringArray> {
    col(b, name)?
        .as_string_opt::<i32>()
        .ok_or_else(|| anyhow!("column {name} is not a string"))
}

/// The profile inputs of one published day: its `user_daily`,
/// `user_track_daily` and `user_artist_daily` rows. Returns whether the day
/// had a `user_daily` partition.
pub fn prior_day(out: &Store, day: i32, int: &Interner, emit: &mut dyn FnMut(Name, ProfIn)) -> Result<bool> {
    let daily = out.read_columns(Table::UserDaily, day, Some(&["user_id", "plays", "skips", "ms_played"]))?;
    let present = !daily.is_empty();
    for b in &daily {
        let (u, p, s, m) = (
            str_col(b, "user_id")?,
            i64_col(b, "plays")?,
            i64_col(b, "skips")?,
            i64_col(b, "ms_played")?,
        );
        for i in 0..b.num_rows() {
            emit(
                Name(int.name(u.value(i))),
                ProfIn::new(day, ProfKind::Daily, Name(0), p.value(i), s.value(i), m.value(i)),
            );
        }
    }
    for (table, id_col, kind) in [
        (Table::UserTrackDaily, "track_id", ProfKind::Track),
        (Table::UserArtistDaily, "artist_id", ProfKind::Artist),
    ] {
        for b in &out.read_columns(table, day, Some(&["user_id", id_col, "plays", "skips"]))? {
            let (u, id, p, s) = (
                str_col(b, "user_id")?,
                str_col(b, id_col)?,
                i64_col(b, "plays")?,
                i64_col(b, "skips")?,
            );
            for i in 0..b.num_rows() {
                emit(
                    Name(int.name(u.value(i))),
                    ProfIn::new(day, kind, Name(int.name(id.value(i))), p.value(i), s.value(i), 0),
                );
            }
        }
    }
    Ok(present)
}

/// The published rows of one `rejected_events` partition.
pub fn rejected_rows(out: &Store, day: i32, int: &Interner) -> Result<Vec<RejectRow>> {
    let mut rows = Vec::new();
    for b in &out.read_partition(Table::RejectedEvents, day)? {
        let src = str_col(b, "source")?;
        let part = col(b, "partition")?
            .as_primitive_opt::<Int32Type>()
            .ok_or_else(|| anyhow!("partition type"))?;
        let off = i64_col(b, "offset")?;
        let mts = col(b, "message_ts")?
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| anyhow!("message_ts type"))?;
        let reason = str_col(b, "reason")?;
        let raw = col(b, "raw")?
            .as_binary_opt::<i32>()
            .ok_or_else(|| anyhow!("raw type"))?;
        for i in 0..b.num_rows() {
            rows.push(RejectRow {
                source: Name(int.name(src.value(i))),
                partition: part.value(i),
                offset: off.value(i),
                message_ts: if mts.is_null(i) { None } else { Some(mts.value(i)) },
                reason: Reject::parse(reason.value(i)).ok_or_else(|| anyhow!("unknown reason {}", reason.value(i)))?,
                raw: raw.value(i).to_vec(),
            });
        }
    }
    Ok(rows)
}

/// The published rows of one `late_events` partition.
pub fn late_rows(out: &Store, day: i32) -> Result<Vec<LateRow>> {
    let mut rows = Vec::new();
    for b in &out.read_partition(Table::LateEvents, day)? {
        let s = |name| str_col(b, name);
        let (eid, et, user, track, artist) = (
            s("event_id")?,
            s("event_type")?,
            s("user_id")?,
            s("track_id")?,
            s("artist_id")?,
        );
        let (ctx, dev, country) = (s("context")?, s("device")?, s("country")?);
        let ts_of = |name| {
            col(b, name)?
                .as_primitive_opt::<TimestampMillisecondType>()
                .ok_or_else(|| anyhow!("{name} type"))
        };
        let (ts, mts) = (ts_of("ts")?, ts_of("message_ts")?);
        let (ms, dur) = (i64_col(b, "ms_played")?, i64_col(b, "track_duration_ms")?);
        let opt = |a: &arrow_array::StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_string());
        for i in 0..b.num_rows() {
            rows.push(LateRow {
                event_id: eid.value(i).to_string(),
                ts: ts.value(i),
                skip: et.value(i) == "skip",
                user_id: user.value(i).to_string(),
                track_id: track.value(i).to_string(),
                artist_id: artist.value(i).to_string(),
                ms_played: ms.value(i),
                track_duration_ms: dur.value(i),
                context: opt(ctx, i),
                device: opt(dev, i),
                country: opt(country, i),
                message_ts: (!mts.is_null(i)).then(|| mts.value(i)),
            });
        }
    }
    Ok(rows)
}

/// Kept events of a published day: the sum of its `user_daily.listens`.
pub fn day_listens(out: &Store, day: i32) -> Result<i64> {
    let mut n = 0;
    for b in &out.read_columns(Table::UserDaily, day, Some(&["listens"]))? {
        n += i64_col(b, "listens")?.iter().flatten().sum::<i64>();
    }
    Ok(n)
}
