//! `user_daily`: one row per (user, day), sorted by user.

use super::{days, f64s, i64s, sort_by_user, strs, ts_array, TableRows};
use crate::dataflow::{ratio, DailyRow, ProfIn};
use crate::intern::{Interner, Name};
use crate::schema::Table;
use crate::sink::parquet::KEPT_EVENTS_KEY;
use crate::sink::PartRows;
use arrow_array::builder::{Int64Builder, ListBuilder};
use arrow_array::ArrayRef;
use parquet::file::metadata::KeyValue;
use std::sync::Arc;

impl TableRows for (Name, DailyRow) {
    const TABLE: Table = Table::UserDaily;
    const PIECE_ROWS: usize = 1024;

    fn wrap(v: Vec<Self>) -> PartRows {
        PartRows::UserDaily(v)
    }

    fn sort(v: &mut Vec<Self>, int: &Interner) {
        sort_by_user(v, int)
    }

    fn columns(v: &[Self], day: i32, int: &Interner) -> Vec<ArrayRef> {
        let n = v.len();
        let mut hours = ListBuilder::new(Int64Builder::with_capacity(n * 24));
        for (_, r) in v {
            hours.values().append_values(&r.by_hour.map(i64::from), &[true; 24]);
            hours.append(true);
        }
        vec![
            strs(v.iter().map(|(u, _)| int.resolve(u.0))),
            days(day, n),
            i64s(v.iter().map(|(_, r)| r.listens)),
            i64s(v.iter().map(|(_, r)| r.plays)),
            i64s(v.iter().map(|(_, r)| r.skips)),
            i64s(v.iter().map(|(_, r)| r.early_skips)),
            f64s(v.iter().map(|(_, r)| ratio(r.skips, r.listens))),
            i64s(v.iter().map(|(_, r)| r.ms_played)),
            f64s(v.iter().map(|(_, r)| ratio(r.sum_min, r.sum_duration))),
            i64s(v.iter().map(|(_, r)| r.distinct_tracks)),
            i64s(v.iter().map(|(_, r)| r.distinct_artists)),
            i64s(v.iter().map(|(_, r)| r.sessions)),
            i64s(v.iter().map(|(_, r)| r.longest_session)),
            i64s(v.iter().map(|(_, r)| r.max_skip_streak)),
            ts_array(v.iter().map(|(_, r)| r.first_ts)),
            ts_array(v.iter().map(|(_, r)| r.last_ts)),
            Arc::new(hours.finish()),
            strs(v.iter().map(|(_, r)| int.resolve(r.top_artist.0))),
            i64s(v.iter().map(|(_, r)| r.top_artist_listens)),
        ]
    }

    fn profile_inputs(v: &[Self], day: i32, f: &mut impl FnMut(Name, ProfIn)) {
        v.iter().for_each(|(u, r)| f(*u, ProfIn::daily(day, r)))
    }

    /// The day's kept events (the sum of `listens`): quality gates read
    /// baselines from footers alone.
    fn footer(v: &[Self]) -> Vec<KeyValue> {
        let listens: i64 = v.iter().map(|(_, r)| r.listens).sum();
        vec![KeyValue::new(KEPT_EVENTS_KEY.to_string(), listens.to_string())]
    }
}
