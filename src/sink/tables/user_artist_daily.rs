//! `user_artist_daily`: one row per (user, artist, day), sorted by user,
//! then artist.

use super::{days, i64s, sort_by_user_then, strs, TableRows};
use crate::dataflow::{ArtistRow, ProfIn};
use crate::intern::{Interner, Name};
use crate::schema::Table;
use crate::sink::PartRows;
use arrow_array::ArrayRef;

impl TableRows for (Name, ArtistRow) {
    const TABLE: Table = Table::UserArtistDaily;
    const PIECE_ROWS: usize = 2048;

    fn wrap(v: Vec<Self>) -> PartRows {
        PartRows::UserArtistDaily(v)
    }

    fn sort(v: &mut Vec<Self>, int: &Interner) {
        sort_by_user_then(v, int, |r| r.artist)
    }

    fn columns(v: &[Self], day: i32, int: &Interner) -> Vec<ArrayRef> {
        vec![
            strs(v.iter().map(|(u, _)| int.resolve(u.0))),
            strs(v.iter().map(|(_, r)| int.resolve(r.artist.0))),
            days(day, v.len()),
            i64s(v.iter().map(|(_, r)| r.listens())),
            i64s(v.iter().map(|(_, r)| r.plays.into())),
            i64s(v.iter().map(|(_, r)| r.skips.into())),
            i64s(v.iter().map(|(_, r)| r.ms_played)),
            i64s(v.iter().map(|(_, r)| r.distinct_tracks.into())),
        ]
    }

    fn profile_inputs(v: &[Self], day: i32, f: &mut impl FnMut(Name, ProfIn)) {
        v.iter().for_each(|(u, r)| f(*u, ProfIn::artist(day, r)))
    }
}
