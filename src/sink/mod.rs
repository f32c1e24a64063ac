//! The Parquet sink: reads partitions out of the sink arrangements, writes each
//! as one Parquet file into a staging area, and publishes staged partitions
//! atomically (see `publish`).

pub mod parquet;
pub mod publish;
pub mod read;

use crate::dataflow::{Diff, SinkTraces, Time};
use crate::intern::Interner;
use crate::schema::Table;
use anyhow::Result;
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::cursor::{cursor_list, Cursor};
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::trace::TraceReader;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use timely::progress::frontier::Antichain;

pub use self::parquet::PartRows;

/// Hive partition directory name of a day.
pub fn partition_dir(day: i32) -> String {
    format!("dt={}", crate::dates::day_to_string(day))
}

/// The single data file of a partition.
pub const PART_FILE: &str = "part-00000.parquet";

/// A partition written to staging, ready to publish.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Staged {
    pub table: Table,
    pub day: i32,
    /// The staged partition directory (holds `PART_FILE`).
    pub dir: PathBuf,
    pub rows: usize,
    pub bytes: u64,
}

/// Calls `f(key, val, count)` for every row of `trace` with a non-zero count
/// in its current contents.
pub fn scan<K, V>(trace: &mut TraceAgent<ValSpine<K, V, Time, Diff>>, f: impl FnMut(&K, &V, isize))
where
    K: Ord + Clone + 'static,
    V: Ord + Clone + 'static,
{
    scan_before(trace, Time::MAX, f)
}

/// As `scan`, counting only updates at times before `before`: the contents
/// as of that time, even when later updates are already in the trace.
pub fn scan_before<K, V>(
    trace: &mut TraceAgent<ValSpine<K, V, Time, Diff>>,
    before: Time,
    mut f: impl FnMut(&K, &V, isize),
) where
    K: Ord + Clone + 'static,
    V: Ord + Clone + 'static,
{
    let Some(batches) = trace.batches_through(Antichain::<Time>::new().borrow()) else {
        return;
    };
    let (mut cursor, storage) = cursor_list(batches);
    while cursor.key_valid(&storage) {
        let k = cursor.key(&storage);
        while cursor.val_valid(&storage) {
            let mut n: isize = 0;
            cursor.map_times(&storage, |t, d| {
                if *t < before {
                    n += *d as isize
                }
            });
            if n != 0 {
                f(k, cursor.val(&storage), n);
            }
            cursor.step_val(&storage);
        }
        cursor.step_key(&storage);
    }
}

/// Partitions gathered by one worker: (table, day) -> its share of the rows.
pub type Buckets = HashMap<(Table, i32), PartRows>;

fn push_n<T: Clone>(v: &mut Vec<T>, x: &T, n: isize) {
    for _ in 0..n.max(0) {
        v.push(x.clone());
    }
}

/// This worker's share of every partition in `traces` that `keep` accepts.
pub fn collect(traces: &mut SinkTraces, keep: &dyn Fn(Table, i32) -> bool) -> Buckets {
    collect_before(traces, keep, Time::MAX)
}

/// As `collect`, as of the time `before`.
pub fn collect_before(traces: &mut SinkTraces, keep: &dyn Fn(Table, i32) -> bool, before: Time) -> Buckets {
    let mut b: Buckets = HashMap::new();
    scan_before(&mut traces.user_daily, before, |&(d, u), r, n| {
        if keep(Table::UserDaily, d) {
            if let PartRows::UserDaily(v) = b
                .entry((Table::UserDaily, d))
                .or_insert_with(|| PartRows::UserDaily(vec![]))
            {
                push_n(v, &(u, r.clone()), n);
            }
        }
    });
    scan_before(&mut traces.user_track_daily, before, |&(d, u), r, n| {
        if keep(Table::UserTrackDaily, d) {
            if let PartRows::UserTrackDaily(v) = b
                .entry((Table::UserTrackDaily, d))
                .or_insert_with(|| PartRows::UserTrackDaily(vec![]))
            {
                push_n(v, &(u, r.clone()), n);
            }
        }
    });
    scan_before(&mut traces.user_artist_daily, before, |&(d, u), r, n| {
        if keep(Table::UserArtistDaily, d) {
            if let PartRows::UserArtistDaily(v) = b
                .entry((Table::UserArtistDaily, d))
                .or_insert_with(|| PartRows::UserArtistDaily(vec![]))
            {
                push_n(v, &(u, r.clone()), n);
            }
        }
    });
    scan_before(&mut traces.user_profile, before, |&u, (d, r), n| {
        if keep(Table::UserProfile28d, *d) {
            if let PartRows::UserProfile(v) = b
                .entry((Table::UserProfile28d, *d))
                .or_insert_with(|| PartRows::UserProfile(vec![]))
            {
                push_n(v, &(u, r.clone()), n);
            }
        }
    });
    scan_before(&mut traces.rejected, before, |&d, r, n| {
        if keep(Table::RejectedEvents, d) {
            if let PartRows::Rejected(v) = b
                .entry((Table::RejectedEvents, d))
                .or_insert_with(|| PartRows::Rejected(vec![]))
            {
                push_n(v, r, n);
            }
        }
    });
    b
}

/// Writes one partition's rows into `staging/<table>/dt=<day>/part-00000.parquet`.
pub fn stage_partition(staging: &Path, day: i32, rows: PartRows, int: &Interner) -> Result<Staged> {
    let table = rows.table();
    let n = rows.len();
    let dir = staging.join(table.name()).join(partition_dir(day));
    std::fs::create_dir_all(&dir)?;
    let t = std::time::Instant::now();
    let batch = self::parquet::to_batch(rows, day, int)?;
    let built = t.elapsed().as_secs_f64();
    let bytes = self::parquet::write_file(&dir.join(PART_FILE), table, &batch)?;
    tracing::debug!(
        table = table.name(),
        day,
        rows = n,
        built,
        written = t.elapsed().as_secs_f64() - built,
        "partition staged"
    );
    Ok(Staged {
        table,
        day,
        dir,
        rows: n,
        bytes,
    })
}
