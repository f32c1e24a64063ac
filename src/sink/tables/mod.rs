//! One module per output table: how its rows sort (the table's key, strings
//! byte-wise), which Arrow columns they make (in `schemas/tables.json`'s
//! order), and what they feed the profile. The helpers below build columns
//! and byte-wise orders for all of them.

mod late;
mod rejected;
mod user_artist_daily;
mod user_daily;
mod user_profile;
mod user_track_daily;

use super::rows::PartRows;
use crate::dataflow::ProfIn;
use crate::intern::{Interner, Name};
use crate::schema::Table;
use arrow_array::builder::TimestampMillisecondBuilder;
use arrow_array::{ArrayRef, Date32Array, Float64Array, Int64Array, StringArray};
use parquet::file::metadata::KeyValue;
use std::sync::Arc;

/// A table's row as the dataflow holds it.
pub trait TableRows: Sized {
    const TABLE: Table;
    /// Rows per piece on the way to a partition's owner: about 300 KiB
    /// serialized with ids of 30-40 bytes (a name travels as its string), so
    /// a piece stays within the 1 MiB network buffers timely starts with (a
    /// larger message grows every later buffer of its connection).
    const PIECE_ROWS: usize;
    /// The partition of these rows.
    fn wrap(v: Vec<Self>) -> PartRows;
    /// Sorts a partition's rows by the table's key.
    fn sort(v: &mut Vec<Self>, int: &Interner);
    /// The Arrow columns of sorted rows of one day, in the schema's order.
    fn columns(v: &[Self], day: i32, int: &Interner) -> Vec<ArrayRef>;
    /// Calls `f` with the profile's input of every row (none by default).
    fn profile_inputs(_v: &[Self], _day: i32, _f: &mut impl FnMut(Name, ProfIn)) {}
    /// Key-value pairs for the file's footer (none by default).
    fn footer(_v: &[Self]) -> Vec<KeyValue> {
        vec![]
    }
}

/// Byte-wise order of the ids in a partition, as dense ranks indexed by id:
/// rows sort by integer ranks, each distinct string compared only while
/// ranking the (much smaller) distinct set.
struct Ranks(Vec<u32>);

impl Ranks {
    fn new(ids: impl Iterator<Item = Name>, int: &Interner) -> Ranks {
        let mut distinct: Vec<u32> = ids.map(|n| n.0).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let mut keyed: Vec<(u64, &str, u32)> = distinct
            .into_iter()
            .map(|i| {
                let s = int.resolve(i);
                (prefix(s.as_bytes()), s, i)
            })
            .collect();
        keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.as_bytes().cmp(b.1.as_bytes())));
        let max = keyed.iter().map(|k| k.2).max().unwrap_or(0) as usize;
        let mut rank = vec![0u32; max + 1];
        for (r, (_, _, i)) in keyed.into_iter().enumerate() {
            rank[i as usize] = r as u32;
        }
        Ranks(rank)
    }
    fn of(&self, id: Name) -> u32 {
        self.0[id.0 as usize]
    }
}

/// Sorts rows by their user's name, byte-wise (through ranks).
fn sort_by_user<T>(v: &mut [(Name, T)], int: &Interner) {
    let users = Ranks::new(v.iter().map(|r| r.0), int);
    v.sort_by_cached_key(|r| users.of(r.0));
}

/// Sorts rows by their user's name, then by the name `second` picks out,
/// both byte-wise (through ranks).
fn sort_by_user_then<T>(v: &mut [(Name, T)], int: &Interner, second: impl Fn(&T) -> Name) {
    let users = Ranks::new(v.iter().map(|r| r.0), int);
    let seconds = Ranks::new(v.iter().map(|r| second(&r.1)), int);
    v.sort_by_cached_key(|r| (users.of(r.0), seconds.of(second(&r.1))));
}

/// The first 8 bytes of `s`, zero-padded, as a big-endian number: ordering
/// by it, then by the bytes, is byte-wise order (a shorter string pads with
/// zeros, so it never orders after a string it is a prefix of), and most
/// comparisons end at the number without reading the string.
fn prefix(s: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = s.len().min(8);
    b[..n].copy_from_slice(&s[..n]);
    u64::from_be_bytes(b)
}

fn ts_array(v: impl Iterator<Item = i64>) -> ArrayRef {
    let mut b = TimestampMillisecondBuilder::new().with_timezone("UTC");
    for x in v {
        b.append_value(x);
    }
    Arc::new(b.finish())
}

fn i64s(v: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(v))
}

fn f64s(v: impl Iterator<Item = f64>) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(v))
}

fn strs<'a>(v: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(v))
}

fn days(day: i32, n: usize) -> ArrayRef {
    Arc::new(Date32Array::from(vec![day; n]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Ordering by the 8-byte prefix, then by the bytes, is byte-wise
        /// order, zero bytes and prefixes of each other included.
        #[test]
        fn prefix_then_bytes_is_byte_order(
            a in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(b'a'), any::<u8>()], 0..12),
            b in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(b'a'), any::<u8>()], 0..12),
        ) {
            let by_prefix = prefix(&a).cmp(&prefix(&b)).then_with(|| a.cmp(&b));
            prop_assert_eq!(by_prefix, a.cmp(&b));
            let (short, long) = (&a[..a.len().min(3)], &a[..]);
            prop_assert_eq!(prefix(short).cmp(&prefix(long)).then_with(|| short.cmp(long)), short.cmp(long));
        }
    }
}
