//! `user_track_daily`: one row per (user, track, day), sorted by user, then
//! track.

use super::{days, f64s, i64s, sort_by_user_then, strs, ts_array, TableRows};
use crate::dataflow::{ProfIn, TrackRow};
use crate::intern::{Interner, Name};
use crate::schema::Table;
use crate::sink::PartRows;
use arrow_array::ArrayRef;

impl TableRows for (Name, TrackRow) {
    const TABLE: Table = Table::UserTrackDaily;
    const PIECE_ROWS: usize = 2048;

    fn wrap(v: Vec<Self>) -> PartRows {
        PartRows::UserTrackDaily(v)
    }

    fn sort(v: &mut Vec<Self>, int: &Interner) {
        sort_by_user_then(v, int, |r| r.track)
    }

    fn columns(v: &[Self], day: i32, int: &Interner) -> Vec<ArrayRef> {
        vec![
            strs(v.iter().map(|(u, _)| int.resolve(u.0))),
            strs(v.iter().map(|(_, r)| int.resolve(r.track.0))),
            days(day, v.len()),
            strs(v.iter().map(|(_, r)| int.resolve(r.artist.0))),
            i64s(v.iter().map(|(_, r)| r.listens())),
            i64s(v.iter().map(|(_, r)| r.plays.into())),
            i64s(v.iter().map(|(_, r)| r.skips.into())),
            i64s(v.iter().map(|(_, r)| r.early_skips.into())),
            i64s(v.iter().map(|(_, r)| r.ms_played())),
            f64s(v.iter().map(|(_, r)| r.completion())),
            ts_array(v.iter().map(|(_, r)| r.first_ts(day))),
            ts_array(v.iter().map(|(_, r)| r.last_ts(day))),
        ]
    }

    fn profile_inputs(v: &[Self], day: i32, f: &mut impl FnMut(Name, ProfIn)) {
        v.iter().for_each(|(u, r)| f(*u, ProfIn::track(day, r)))
    }
}
