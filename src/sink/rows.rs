//! Rows of one output partition, as the dataflow holds them: one vector of
//! one table's rows. What a table's rows are (their order, their Arrow
//! columns, what they feed the profile) is that table's own module under
//! `tables/`; this enum only carries a partition of any table between the
//! stages and dispatches to it.

use super::tables::TableRows;
use crate::dataflow::{ArtistRow, DailyRow, LateRow, ProfIn, ProfileRow, RejectRow, TrackRow};
use crate::intern::{Interner, Name};
use crate::schema::Table;
use anyhow::{Context, Result};
use arrow_array::RecordBatch;
use parquet::file::metadata::KeyValue;

/// Rows of one output partition (ids, not strings; a share sent to another
/// process carries its strings).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub enum PartRows {
    UserDaily(Vec<(Name, DailyRow)>),
    UserTrackDaily(Vec<(Name, TrackRow)>),
    UserArtistDaily(Vec<(Name, ArtistRow)>),
    UserProfile(Vec<(Name, ProfileRow)>),
    Rejected(Vec<RejectRow>),
    Late(Vec<LateRow>),
}

/// `$body` with `$v` bound to the partition's vector, whatever its table
/// (each arm is compiled for its own row type).
macro_rules! each {
    ($rows:expr, $v:ident => $body:expr) => {
        match $rows {
            PartRows::UserDaily($v) => $body,
            PartRows::UserTrackDaily($v) => $body,
            PartRows::UserArtistDaily($v) => $body,
            PartRows::UserProfile($v) => $body,
            PartRows::Rejected($v) => $body,
            PartRows::Late($v) => $body,
        }
    };
}

fn table_of<T: TableRows>(_: &[T]) -> Table {
    T::TABLE
}

fn piece_rows_of<T: TableRows>(_: &[T]) -> usize {
    T::PIECE_ROWS
}

impl PartRows {
    pub fn table(&self) -> Table {
        each!(self, v => table_of(v))
    }
    pub fn len(&self) -> usize {
        each!(self, v => v.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// No rows of `t` (a partition to remove, once every share is in).
    pub fn empty(t: Table) -> PartRows {
        match t {
            Table::UserDaily => PartRows::UserDaily(vec![]),
            Table::UserTrackDaily => PartRows::UserTrackDaily(vec![]),
            Table::UserArtistDaily => PartRows::UserArtistDaily(vec![]),
            Table::UserProfile28d => PartRows::UserProfile(vec![]),
            Table::RejectedEvents => PartRows::Rejected(vec![]),
            Table::LateEvents => PartRows::Late(vec![]),
        }
    }

    /// Rows per piece on the way to a partition's owner (see
    /// [`TableRows::PIECE_ROWS`]).
    pub fn piece_rows(&self) -> usize {
        each!(self, v => piece_rows_of(v))
    }

    /// Splits the rows into pieces of at most `n` rows (the last rows first),
    /// cut as they are taken: the share and one piece are in memory at a
    /// time, not the share and all its pieces. The share's vector gives back
    /// the memory of each piece cut off (shrinking a large allocation in
    /// place; glibc neither copies nor moves it), so rows on their way are
    /// in memory once, not in the share and in the pieces.
    pub fn into_pieces(self, n: usize) -> Box<dyn Iterator<Item = PartRows>> {
        fn split<T: TableRows + 'static>(mut v: Vec<T>, n: usize) -> Box<dyn Iterator<Item = PartRows>> {
            let mut last = true;
            Box::new(std::iter::from_fn(move || {
                if v.len() > n {
                    let piece = v.split_off(v.len() - n);
                    v.shrink_to_fit();
                    Some(T::wrap(piece))
                } else {
                    std::mem::take(&mut last).then(|| T::wrap(std::mem::take(&mut v)))
                }
            }))
        }
        let n = n.max(1);
        each!(self, v => split(v, n))
    }

    /// Calls `f` with the profile's input of every row (the three daily
    /// tables; the others feed no profile).
    pub fn profile_inputs(&self, day: i32, mut f: impl FnMut(Name, ProfIn)) {
        each!(self, v => TableRows::profile_inputs(&v[..], day, &mut f))
    }

    /// Makes room for `n` more rows.
    pub fn reserve(&mut self, n: usize) {
        each!(self, v => v.reserve(n))
    }

    /// Appends another share of the same partition.
    pub fn append(&mut self, other: PartRows) {
        match (self, other) {
            (PartRows::UserDaily(a), PartRows::UserDaily(b)) => a.extend(b),
            (PartRows::UserTrackDaily(a), PartRows::UserTrackDaily(b)) => a.extend(b),
            (PartRows::UserArtistDaily(a), PartRows::UserArtistDaily(b)) => a.extend(b),
            (PartRows::UserProfile(a), PartRows::UserProfile(b)) => a.extend(b),
            (PartRows::Rejected(a), PartRows::Rejected(b)) => a.extend(b),
            (PartRows::Late(a), PartRows::Late(b)) => a.extend(b),
            _ => panic!("rows of different tables in one partition"),
        }
    }

    /// Sorts the rows by the table's key (strings byte-wise; see each table).
    pub fn sort(&mut self, int: &Interner) {
        each!(self, v => TableRows::sort(v, int))
    }

    /// The record batch of the rows `range` of the sorted partition.
    pub fn to_batch(&self, range: std::ops::Range<usize>, day: i32, int: &Interner) -> Result<RecordBatch> {
        let table = self.table();
        let cols = each!(self, v => TableRows::columns(&v[range], day, int));
        RecordBatch::try_new(table.schema(), cols).with_context(|| format!("building {} batch", table.name()))
    }

    /// Key-value pairs for the file's footer.
    pub fn footer(&self) -> Vec<KeyValue> {
        each!(self, v => TableRows::footer(&v[..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_keep_every_row_once_and_stay_small() {
        for (rows, n) in [(0usize, 3usize), (1, 3), (3, 3), (10, 3), (10, 1), (7, 100)] {
            let all: Vec<(Name, DailyRow)> = (0..rows)
                .map(|i| {
                    let r = DailyRow {
                        listens: i as i64,
                        ..Default::default()
                    };
                    (Name(i as u32), r)
                })
                .collect();
            let pieces: Vec<PartRows> = PartRows::UserDaily(all.clone()).into_pieces(n).collect();
            assert!(pieces.iter().all(|p| p.len() <= n && p.table() == Table::UserDaily));
            assert_eq!(pieces.len(), rows.div_ceil(n).max(1));
            // The last piece is the share's own vector: it gave back the
            // memory of the pieces cut off before it.
            if let Some(PartRows::UserDaily(last)) = pieces.last() {
                assert!(
                    last.capacity() <= n,
                    "{} rows kept room for {}",
                    last.len(),
                    last.capacity()
                );
            }
            let mut back = PartRows::empty(Table::UserDaily);
            for p in pieces {
                back.append(p);
            }
            let PartRows::UserDaily(mut back) = back else {
                unreachable!()
            };
            back.sort_by_key(|r| r.0);
            assert_eq!(back, all);
        }
    }
}
