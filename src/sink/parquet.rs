//! Rows of one partition, sorted by the table key (strings byte-wise) ->
//! Arrow record batches of a slice of rows each -> one Parquet file (zstd,
//! statistics, row groups of up to 1M rows, sorting columns declared, bloom
//! filter on `user_id`, dictionaries only where values repeat).

use crate::dataflow::{ratio, ArtistRow, DailyRow, LateRow, ProfIn, ProfileRow, RejectRow, TopEntry, TrackRow};
use crate::intern::{Interner, Name};
use crate::schema::Table;
use anyhow::{Context, Result};
use arrow_array::builder::{
    BinaryBuilder, Int32Builder, Int64Builder, ListBuilder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, Date32Array, Float64Array, Int64Array, ListArray, RecordBatch, StringArray, StructArray};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, Fields};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use std::sync::Arc;

/// Rows of one output partition, as the dataflow holds them (ids, not
/// strings; a share sent to another process carries its strings).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub enum PartRows {
    UserDaily(Vec<(Name, DailyRow)>),
    UserTrackDaily(Vec<(Name, TrackRow)>),
    UserArtistDaily(Vec<(Name, ArtistRow)>),
    UserProfile(Vec<(Name, ProfileRow)>),
    Rejected(Vec<RejectRow>),
    Late(Vec<LateRow>),
}

impl PartRows {
    pub fn table(&self) -> Table {
        match self {
            PartRows::UserDaily(_) => Table::UserDaily,
            PartRows::UserTrackDaily(_) => Table::UserTrackDaily,
            PartRows::UserArtistDaily(_) => Table::UserArtistDaily,
            PartRows::UserProfile(_) => Table::UserProfile28d,
            PartRows::Rejected(_) => Table::RejectedEvents,
            PartRows::Late(_) => Table::LateEvents,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            PartRows::UserDaily(v) => v.len(),
            PartRows::UserTrackDaily(v) => v.len(),
            PartRows::UserArtistDaily(v) => v.len(),
            PartRows::UserProfile(v) => v.len(),
            PartRows::Rejected(v) => v.len(),
            PartRows::Late(v) => v.len(),
        }
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

    /// Rows per piece on the way to a partition's owner: about 300 KiB
    /// serialized with ids of 30-40 bytes (a name travels as its string), so
    /// a piece stays within the 1 MiB network buffers timely starts with (a
    /// larger message grows every later buffer of its connection).
    pub fn piece_rows(&self) -> usize {
        match self {
            PartRows::UserDaily(_) => 1024,
            PartRows::UserTrackDaily(_) | PartRows::UserArtistDaily(_) => 2048,
            // Two top-10 lists of names a row.
            PartRows::UserProfile(_) => 256,
            PartRows::Rejected(_) | PartRows::Late(_) => 512,
        }
    }

    /// Splits the rows into pieces of at most `n` rows (the last rows first),
    /// cut as they are taken: the share and one piece are in memory at a
    /// time, not the share and all its pieces. The share's vector gives back
    /// the memory of each piece cut off (shrinking a large allocation in
    /// place; glibc neither copies nor moves it), so rows on their way are
    /// in memory once, not in the share and in the pieces.
    pub fn into_pieces(self, n: usize) -> Box<dyn Iterator<Item = PartRows>> {
        fn split<T: 'static>(
            mut v: Vec<T>,
            n: usize,
            wrap: fn(Vec<T>) -> PartRows,
        ) -> Box<dyn Iterator<Item = PartRows>> {
            let mut last = true;
            Box::new(std::iter::from_fn(move || {
                if v.len() > n {
                    let piece = v.split_off(v.len() - n);
                    v.shrink_to_fit();
                    Some(wrap(piece))
                } else {
                    std::mem::take(&mut last).then(|| wrap(std::mem::take(&mut v)))
                }
            }))
        }
        let n = n.max(1);
        match self {
            PartRows::UserDaily(v) => split(v, n, PartRows::UserDaily),
            PartRows::UserTrackDaily(v) => split(v, n, PartRows::UserTrackDaily),
            PartRows::UserArtistDaily(v) => split(v, n, PartRows::UserArtistDaily),
            PartRows::UserProfile(v) => split(v, n, PartRows::UserProfile),
            PartRows::Rejected(v) => split(v, n, PartRows::Rejected),
            PartRows::Late(v) => split(v, n, PartRows::Late),
        }
    }

    /// Calls `f` with the profile's input of every row (the three daily
    /// tables; the others feed no profile).
    pub fn profile_inputs(&self, day: i32, mut f: impl FnMut(Name, ProfIn)) {
        match self {
            PartRows::UserDaily(v) => v.iter().for_each(|(u, r)| f(*u, ProfIn::daily(day, r))),
            PartRows::UserTrackDaily(v) => v.iter().for_each(|(u, r)| f(*u, ProfIn::track(day, r))),
            PartRows::UserArtistDaily(v) => v.iter().for_each(|(u, r)| f(*u, ProfIn::artist(day, r))),
            PartRows::UserProfile(_) | PartRows::Rejected(_) | PartRows::Late(_) => {}
        }
    }

    /// Makes room for `n` more rows.
    pub fn reserve(&mut self, n: usize) {
        match self {
            PartRows::UserDaily(v) => v.reserve(n),
            PartRows::UserTrackDaily(v) => v.reserve(n),
            PartRows::UserArtistDaily(v) => v.reserve(n),
            PartRows::UserProfile(v) => v.reserve(n),
            PartRows::Rejected(v) => v.reserve(n),
            PartRows::Late(v) => v.reserve(n),
        }
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

/// Sorts a partition's rows by the table key (strings byte-wise); late
/// rows are first merged to one per event id.
pub fn sort(rows: &mut PartRows, int: &Interner) {
    match rows {
        PartRows::UserDaily(v) => {
            let users = Ranks::new(v.iter().map(|r| r.0), int);
            v.sort_by_cached_key(|r| users.of(r.0));
        }
        PartRows::UserTrackDaily(v) => {
            let users = Ranks::new(v.iter().map(|r| r.0), int);
            let tracks = Ranks::new(v.iter().map(|r| r.1.track), int);
            v.sort_by_cached_key(|r| (users.of(r.0), tracks.of(r.1.track)));
        }
        PartRows::UserArtistDaily(v) => {
            let users = Ranks::new(v.iter().map(|r| r.0), int);
            let artists = Ranks::new(v.iter().map(|r| r.1.artist), int);
            v.sort_by_cached_key(|r| (users.of(r.0), artists.of(r.1.artist)));
        }
        PartRows::UserProfile(v) => {
            let users = Ranks::new(v.iter().map(|r| r.0), int);
            v.sort_by_cached_key(|r| users.of(r.0));
        }
        PartRows::Rejected(v) => v.sort_unstable_by(|a, b| {
            (int.resolve(a.source.0).as_bytes(), a.partition, a.offset).cmp(&(
                int.resolve(b.source.0).as_bytes(),
                b.partition,
                b.offset,
            ))
        }),
        PartRows::Late(v) => {
            LateRow::merge(v);
            v.sort_unstable_by(|a, b| a.event_id.as_bytes().cmp(b.event_id.as_bytes()));
        }
    }
}

/// The record batch of the rows `range` of a sorted partition ([`sort`]).
pub fn to_batch(rows: &PartRows, range: std::ops::Range<usize>, day: i32, int: &Interner) -> Result<RecordBatch> {
    let table = rows.table();
    let cols: Vec<ArrayRef> = match rows {
        PartRows::UserDaily(v) => {
            let v = &v[range];
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
        PartRows::UserTrackDaily(v) => {
            let v = &v[range];
            let n = v.len();
            vec![
                strs(v.iter().map(|(u, _)| int.resolve(u.0))),
                strs(v.iter().map(|(_, r)| int.resolve(r.track.0))),
                days(day, n),
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
        PartRows::UserArtistDaily(v) => {
            let v = &v[range];
            let n = v.len();
            vec![
                strs(v.iter().map(|(u, _)| int.resolve(u.0))),
                strs(v.iter().map(|(_, r)| int.resolve(r.artist.0))),
                days(day, n),
                i64s(v.iter().map(|(_, r)| r.listens())),
                i64s(v.iter().map(|(_, r)| r.plays.into())),
                i64s(v.iter().map(|(_, r)| r.skips.into())),
                i64s(v.iter().map(|(_, r)| r.ms_played)),
                i64s(v.iter().map(|(_, r)| r.distinct_tracks.into())),
            ]
        }
        PartRows::UserProfile(v) => {
            let v = &v[range];
            let n = v.len();
            vec![
                strs(v.iter().map(|(u, _)| int.resolve(u.0))),
                days(day, n),
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
        PartRows::Rejected(v) => {
            let v = &v[range];
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
        PartRows::Late(v) => {
            let v = &v[range];
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
    };
    RecordBatch::try_new(table.schema(), cols).with_context(|| format!("building {} batch", table.name()))
}

/// Writer settings: zstd, page statistics, row groups of up to 1M rows, the
/// key declared as sorting columns, a bloom filter on `user_id` where present,
/// no dictionary for columns whose values rarely repeat.
pub fn writer_properties(table: Table) -> WriterProperties {
    let schema = table.schema();
    let def = table.def();
    let sorting: Vec<SortingColumn> = def
        .key
        .iter()
        .filter_map(|k| schema.index_of(k).ok())
        .map(|i| SortingColumn {
            column_idx: i as i32,
            descending: false,
            nulls_first: false,
        })
        .collect();
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("zstd level")))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(1 << 20))
        .set_sorting_columns(Some(sorting))
        .set_created_by(format!("skipflow {}", env!("CARGO_PKG_VERSION")));
    if schema.index_of("user_id").is_ok() {
        props = props.set_column_bloom_filter_enabled(ColumnPath::from("user_id"), true);
    }
    for f in schema.fields().iter().filter(|f| mostly_distinct(f)) {
        props = props.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), false);
    }
    props.build()
}

/// Columns whose values rarely repeat within a partition (times, ratios,
/// milliseconds played, event ids): a dictionary only costs time there, as
/// the writer builds it, finds it too large and falls back to plain. Plain
/// encoding (readable by every Parquet reader) then compresses better too.
fn mostly_distinct(f: &Field) -> bool {
    matches!(f.data_type(), DataType::Float64 | DataType::Timestamp(..))
        || matches!(f.name().as_str(), "ms_played" | "event_id")
}

/// Footer key of a `user_daily` file: its kept events (the sum of `listens`).
pub const KEPT_EVENTS_KEY: &str = "skipflow.kept_events";

/// Rows per record batch while a partition is written: the writer still
/// makes row groups of up to 1M rows, but the Arrow columns of a large
/// partition (38 MB for 347,000 `user_track_daily` rows) are never all in
/// memory at once.
const BATCH_ROWS: usize = 1 << 16;

/// Writes a sorted partition ([`sort`]) through `out` (a staged file or
/// upload), a slice of rows at a time; complete once this returns.
pub fn write_file(
    out: crate::store::PartWriter,
    rows: &PartRows,
    day: i32,
    int: &Interner,
) -> Result<(crate::store::StagedFile, u64)> {
    write_rows(out, rows, day, int, BATCH_ROWS)?.finish()
}

/// Writes a sorted partition through `out`, the Arrow columns of `slice`
/// rows at a time; returns `out` once the file is complete.
fn write_rows<W: std::io::Write + Send>(out: W, rows: &PartRows, day: i32, int: &Interner, slice: usize) -> Result<W> {
    let table = rows.table();
    let mut w = ArrowWriter::try_new(out, table.schema(), Some(writer_properties(table)))?;
    let n = rows.len();
    // At least one batch: an empty partition still gets its file.
    for start in (0..n.max(1)).step_by(slice) {
        let batch = to_batch(rows, start..n.min(start.saturating_add(slice)), day, int)?;
        w.write(&batch)
            .with_context(|| format!("writing a {} partition", table.name()))?;
    }
    if let PartRows::UserDaily(v) = rows {
        // The day's kept events in the footer: quality gates read baselines
        // from footers alone.
        let listens: i64 = v.iter().map(|(_, r)| r.listens).sum();
        w.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
            KEPT_EVENTS_KEY.to_string(),
            listens.to_string(),
        ));
    }
    Ok(w.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::DailyRow;
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

    /// A partition written a few rows of columns at a time reads back as the
    /// same rows, in the same order, with the same footer, as one written
    /// whole: no row lost or repeated at a slice's edge.
    #[test]
    fn slices_write_the_same_file_contents_as_one_batch() {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let int = Interner::new();
        let read = |bytes: Vec<u8>| {
            let r = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
            let footer = r.metadata().file_metadata().key_value_metadata().cloned();
            let rows: Vec<(String, i64)> = r
                .build()
                .unwrap()
                .flat_map(|b| {
                    let b = b.unwrap();
                    let users = b.column(0).as_any().downcast_ref::<StringArray>().unwrap().clone();
                    let listens = b.column(2).as_any().downcast_ref::<Int64Array>().unwrap().clone();
                    (0..b.num_rows())
                        .map(|i| (users.value(i).to_string(), listens.value(i)))
                        .collect::<Vec<_>>()
                })
                .collect();
            (rows, footer)
        };
        for n in [0usize, 1, 7, 10] {
            let mut rows = PartRows::UserDaily(
                (0..n)
                    .map(|i| {
                        let r = DailyRow {
                            listens: i as i64 + 1,
                            top_artist: Name(int.name("artist")),
                            ..Default::default()
                        };
                        (Name(int.name(&format!("user-{}", n - i))), r)
                    })
                    .collect(),
            );
            sort(&mut rows, &int);
            let whole = read(write_rows(Vec::new(), &rows, 20_000, &int, usize::MAX).unwrap());
            assert_eq!(whole.0.len(), n);
            for slice in [1, 3, 4] {
                let sliced = read(write_rows(Vec::new(), &rows, 20_000, &int, slice).unwrap());
                assert_eq!(sliced, whole, "{n} rows in slices of {slice}");
            }
        }
    }

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
