//! The Parquet sink: reads partitions out of the sink arrangements, writes each
//! as one Parquet file into a staging area, and publishes staged partitions
//! atomically (see `publish`).

pub mod parquet;
pub mod publish;
pub mod read;

use crate::dataflow::{SinkTrace, SinkTraces, Time};
use crate::intern::Interner;
use crate::schema::Table;
use anyhow::Result;
use differential_dataflow::trace::cursor::{cursor_list, Cursor};
use differential_dataflow::trace::TraceReader;
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
#[derive(Clone, Debug)]
pub struct Staged {
    pub table: Table,
    pub day: i32,
    /// The staged partition directory (holds `PART_FILE`).
    pub dir: PathBuf,
    pub rows: usize,
    pub bytes: u64,
}

/// Calls `f(day, rows)` for every partition key of `trace` whose rows at the
/// trace's current contents are non-empty (rows with positive multiplicity,
/// repeated by it).
pub fn read_trace<R: Clone + Ord + 'static>(
    trace: &mut SinkTrace<R>,
    mut f: impl FnMut(i32, Vec<R>) -> Result<()>,
) -> Result<()> {
    let Some(batches) = trace.batches_through(Antichain::<Time>::new().borrow()) else {
        return Ok(());
    };
    let (mut cursor, storage) = cursor_list(batches);
    while cursor.key_valid(&storage) {
        let &(_, day) = cursor.key(&storage);
        let mut rows = Vec::new();
        while cursor.val_valid(&storage) {
            let mut n: isize = 0;
            cursor.map_times(&storage, |_t, d| n += *d);
            let v = cursor.val(&storage);
            for _ in 0..n.max(0) {
                rows.push(v.clone());
            }
            cursor.step_val(&storage);
        }
        if !rows.is_empty() {
            f(day, rows)?;
        }
        cursor.step_key(&storage);
    }
    Ok(())
}

/// Writes one partition's rows into `staging/<table>/dt=<day>/part-00000.parquet`.
pub fn stage_partition(staging: &Path, day: i32, rows: PartRows, int: &Interner) -> Result<Staged> {
    let table = rows.table();
    let n = rows.len();
    let dir = staging.join(table.name()).join(partition_dir(day));
    std::fs::create_dir_all(&dir)?;
    let batch = self::parquet::to_batch(rows, day, int)?;
    let bytes = self::parquet::write_file(&dir.join(PART_FILE), table, &batch)?;
    Ok(Staged {
        table,
        day,
        dir,
        rows: n,
        bytes,
    })
}

/// Stages every non-empty partition this worker owns in `traces`.
///
/// `rejected_merge` is given each rejected partition's new rows and returns the
/// rows to write (merged with what is already published).
pub fn stage_all(
    traces: &mut SinkTraces,
    staging: &Path,
    int: &Interner,
    keep_day: &dyn Fn(Table, i32) -> bool,
    rejected_merge: &dyn Fn(i32, Vec<crate::dataflow::RejectRow>) -> Result<Vec<crate::dataflow::RejectRow>>,
) -> Result<Vec<Staged>> {
    let mut out = Vec::new();
    read_trace(&mut traces.user_daily, |d, rows| {
        if keep_day(Table::UserDaily, d) {
            out.push(stage_partition(staging, d, PartRows::UserDaily(rows), int)?);
        }
        Ok(())
    })?;
    read_trace(&mut traces.user_track_daily, |d, rows| {
        if keep_day(Table::UserTrackDaily, d) {
            out.push(stage_partition(staging, d, PartRows::UserTrackDaily(rows), int)?);
        }
        Ok(())
    })?;
    read_trace(&mut traces.user_artist_daily, |d, rows| {
        if keep_day(Table::UserArtistDaily, d) {
            out.push(stage_partition(staging, d, PartRows::UserArtistDaily(rows), int)?);
        }
        Ok(())
    })?;
    read_trace(&mut traces.user_profile, |d, rows| {
        if keep_day(Table::UserProfile28d, d) {
            out.push(stage_partition(staging, d, PartRows::UserProfile(rows), int)?);
        }
        Ok(())
    })?;
    read_trace(&mut traces.rejected, |d, rows| {
        if keep_day(Table::RejectedEvents, d) {
            let rows = rejected_merge(d, rows)?;
            out.push(stage_partition(staging, d, PartRows::Rejected(rows), int)?);
        }
        Ok(())
    })?;
    Ok(out)
}
