//! The Parquet sink: reads partitions out of the sink arrangements, writes
//! each as one Parquet file into a staging area of the output's store
//! (`crate::store`), which publishes staged partitions atomically.

pub mod parquet;
pub mod read;
mod rows;
mod tables;

use crate::dataflow::{Diff, SinkTraces, Time};
use crate::error::Abort;
use crate::intern::{Interner, Name};
use crate::mailbox::Mailbox;
use crate::schema::Table;
use crate::store::{StagedFile, Staging};
use anyhow::Result;
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::cursor::{cursor_list, Cursor};
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::trace::TraceReader;
use std::collections::{BTreeMap, HashMap};
use timely::progress::frontier::Antichain;

pub use self::rows::PartRows;

/// A partition written to staging, ready to publish.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Staged {
    pub table: Table,
    pub day: i32,
    /// The staged file (`StagedFile::Removal`: no rows left, remove the partition).
    pub file: StagedFile,
    pub rows: usize,
    pub bytes: u64,
}

impl Staged {
    /// A partition left without rows: publishing it removes it.
    pub fn removal(table: Table, day: i32) -> Staged {
        Staged {
            table,
            day,
            file: StagedFile::Removal,
            rows: 0,
            bytes: 0,
        }
    }
}

/// The key of a sink trace, and where one day's keys start: the daily
/// tables' and rejects' keys begin with their day, the profile's (a user)
/// do not.
pub trait SinkKey: Ord + Clone + 'static {
    /// The first possible key of `day` (None: keys do not begin with a day).
    fn first_of(day: i32) -> Option<Self>;
    /// The day a key begins with.
    fn day(&self) -> Option<i32>;
}

impl SinkKey for (i32, Name) {
    fn first_of(day: i32) -> Option<Self> {
        Some((day, Name(0)))
    }
    fn day(&self) -> Option<i32> {
        Some(self.0)
    }
}

impl SinkKey for i32 {
    fn first_of(day: i32) -> Option<Self> {
        Some(day)
    }
    fn day(&self) -> Option<i32> {
        Some(*self)
    }
}

impl SinkKey for Name {
    fn first_of(_: i32) -> Option<Self> {
        None
    }
    fn day(&self) -> Option<i32> {
        None
    }
}

/// Calls `f(key, val, count)` for every row of `trace`, counting only
/// updates at times before `before`: the contents as of that time, even when
/// later updates are already in the trace. With `days` (ascending), a trace
/// whose keys begin with their day is read by seeking to those days' keys
/// only; any other is read whole.
pub fn scan<K: SinkKey, V: Ord + Clone + 'static>(
    trace: &mut Option<TraceAgent<ValSpine<K, V, Time, Diff>>>,
    before: Time,
    days: Option<&[i32]>,
    mut f: impl FnMut(&K, &V, isize),
) {
    let trace = trace.as_mut().expect("a released trace is not read again");
    let Some(batches) = trace.batches_through(Antichain::<Time>::new().borrow()) else {
        return;
    };
    let (mut cursor, storage) = cursor_list(batches);
    // Runs of keys: every key, or the keys of each day.
    let runs: Vec<Option<i32>> = match days {
        Some(ds) if K::first_of(0).is_some() => ds.iter().map(|d| Some(*d)).collect(),
        _ => vec![None],
    };
    for run in runs {
        if let Some(first) = run.and_then(K::first_of) {
            cursor.seek_key(&storage, &first);
        }
        while cursor.key_valid(&storage) {
            let k = cursor.key(&storage);
            if run.is_some() && k.day() != run {
                break;
            }
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
}

/// Partitions gathered by one worker: (table, day) -> its share of the rows.
pub type Buckets = HashMap<(Table, i32), PartRows, ahash::RandomState>;

fn push_n<T: Clone>(v: &mut Vec<T>, x: &T, n: isize) {
    for _ in 0..n.max(0) {
        v.push(x.clone());
    }
}

/// This worker's share of every partition in `traces` that `keep` accepts.
pub fn collect(traces: &mut SinkTraces, keep: &dyn Fn(Table, i32) -> bool) -> Buckets {
    collect_before(traces, keep, Time::MAX)
}

/// The tables read from the sink traces.
pub const TRACED: [Table; 5] = [
    Table::UserDaily,
    Table::UserTrackDaily,
    Table::UserArtistDaily,
    Table::UserProfile28d,
    Table::RejectedEvents,
];

/// As `collect`, as of the time `before`.
pub fn collect_before(traces: &mut SinkTraces, keep: &dyn Fn(Table, i32) -> bool, before: Time) -> Buckets {
    let mut b = Buckets::default();
    for t in TRACED {
        b.extend(collect_table(traces, t, keep, before, None));
    }
    b
}

/// Adds `n` copies of a row to its partition's bucket.
fn add<R: Clone>(
    b: &mut Buckets,
    key: (Table, i32),
    row: &R,
    n: isize,
    wrap: fn(Vec<R>) -> PartRows,
    take: fn(&mut PartRows) -> &mut Vec<R>,
) {
    push_n(take(b.entry(key).or_insert_with(|| wrap(vec![]))), row, n);
}

/// This worker's share of the partitions of one table, as of `before`.
/// `days` (ascending), when given, holds every day `keep` accepts: the scan
/// seeks to them instead of reading every key ([`scan`]).
pub fn collect_table(
    traces: &mut SinkTraces,
    table: Table,
    keep: &dyn Fn(Table, i32) -> bool,
    before: Time,
    days: Option<&[i32]>,
) -> Buckets {
    let mut b = Buckets::default();
    match table {
        Table::UserDaily => scan(&mut traces.user_daily, before, days, |&(d, u), r, n| {
            if keep(table, d) {
                add(
                    &mut b,
                    (table, d),
                    &(u, r.clone()),
                    n,
                    PartRows::UserDaily,
                    |p| match p {
                        PartRows::UserDaily(v) => v,
                        _ => unreachable!("user_daily rows"),
                    },
                );
            }
        }),
        Table::UserTrackDaily => scan(&mut traces.user_track_daily, before, days, |&(d, u), r, n| {
            if keep(table, d) {
                add(
                    &mut b,
                    (table, d),
                    &(u, r.clone()),
                    n,
                    PartRows::UserTrackDaily,
                    |p| match p {
                        PartRows::UserTrackDaily(v) => v,
                        _ => unreachable!("user_track_daily rows"),
                    },
                );
            }
        }),
        Table::UserArtistDaily => scan(&mut traces.user_artist_daily, before, days, |&(d, u), r, n| {
            if keep(table, d) {
                add(
                    &mut b,
                    (table, d),
                    &(u, r.clone()),
                    n,
                    PartRows::UserArtistDaily,
                    |p| match p {
                        PartRows::UserArtistDaily(v) => v,
                        _ => unreachable!("user_artist_daily rows"),
                    },
                );
            }
        }),
        Table::UserProfile28d => scan(&mut traces.user_profile, before, days, |&u, (d, r), n| {
            if keep(table, *d) {
                add(
                    &mut b,
                    (table, *d),
                    &(u, r.clone()),
                    n,
                    PartRows::UserProfile,
                    |p| match p {
                        PartRows::UserProfile(v) => v,
                        _ => unreachable!("user_profile_28d rows"),
                    },
                );
            }
        }),
        Table::RejectedEvents => scan(&mut traces.rejected, before, days, |&d, r, n| {
            if keep(table, d) {
                add(&mut b, (table, d), r, n, PartRows::Rejected, |p| match p {
                    PartRows::Rejected(v) => v,
                    _ => unreachable!("rejected_events rows"),
                });
            }
        }),
        Table::LateEvents => {}
    }
    b
}

/// Rows per partition over every worker's shares.
pub fn summed(sizes: impl IntoIterator<Item = ((Table, i32), u64)>) -> BTreeMap<(Table, i32), u64> {
    let mut sum = BTreeMap::new();
    for (k, n) in sizes {
        *sum.entry(k).or_insert(0) += n;
    }
    sum
}

/// One owner per partition, the same on every worker given the same sizes
/// ([`summed`]): partitions largest first, each to
/// the worker with the fewest rows of that table so far (then the fewest
/// rows in all), so every table's days spread evenly over the workers: a
/// batch stages one table at a time, and a table whose big days landed on
/// one worker would keep the others waiting.
pub fn owners(sizes: &BTreeMap<(Table, i32), u64>, peers: usize) -> BTreeMap<(Table, i32), usize> {
    let mut order: Vec<((Table, i32), u64)> = sizes.iter().map(|(k, n)| (*k, *n)).collect();
    order.sort_by_key(|(k, n)| (std::cmp::Reverse(*n), *k));
    let peers = peers.max(1);
    let mut total = vec![0u64; peers];
    let mut per_table: HashMap<Table, Vec<u64>> = HashMap::new();
    order
        .into_iter()
        .map(|(k, n)| {
            let load = per_table.entry(k.0).or_insert_with(|| vec![0; peers]);
            let w = (0..peers).min_by_key(|w| (load[*w], total[*w], *w)).expect("a worker");
            load[w] += n.max(1);
            total[w] += n.max(1);
            (k, w)
        })
        .collect()
}

/// The order a batch stages partitions in: table by table (in the order of
/// `tables`), in waves that
/// hold at most one partition of each owner (each owner's largest first), so
/// a worker holds one partition's rows at a time, not a whole table's, while
/// every worker writes. The same on every worker given the same owners and
/// sizes.
pub fn waves(
    tables: &[Table],
    owners: &BTreeMap<(Table, i32), usize>,
    sizes: &BTreeMap<(Table, i32), u64>,
) -> Vec<(Table, Vec<i32>)> {
    let mut waves = Vec::new();
    for &table in tables {
        let mut by_owner: BTreeMap<usize, Vec<(std::cmp::Reverse<u64>, i32)>> = BTreeMap::new();
        for (&(t, d), &w) in owners.iter().filter(|((t, _), _)| *t == table) {
            let n = sizes.get(&(t, d)).copied().unwrap_or(0);
            by_owner.entry(w).or_default().push((std::cmp::Reverse(n), d));
        }
        by_owner.values_mut().for_each(|v| v.sort_unstable());
        let rounds = by_owner.values().map(Vec::len).max().unwrap_or(0);
        for r in 0..rounds {
            let mut days: Vec<i32> = by_owner.values().filter_map(|v| v.get(r)).map(|p| p.1).collect();
            days.sort_unstable();
            waves.push((table, days));
        }
    }
    waves
}

/// Rows per partition of this worker's share of `tables` (counted, not built).
pub fn sizes(
    traces: &mut SinkTraces,
    tables: &[Table],
    keep: &dyn Fn(Table, i32) -> bool,
) -> BTreeMap<(Table, i32), u64> {
    let mut s: BTreeMap<(Table, i32), u64> = BTreeMap::new();
    for &t in tables {
        let mut count = |d: i32, n: isize| {
            if keep(t, d) {
                *s.entry((t, d)).or_insert(0) += n.max(0) as u64;
            }
        };
        match t {
            Table::UserDaily => scan(&mut traces.user_daily, Time::MAX, None, |&(d, _), _, n| count(d, n)),
            Table::UserTrackDaily => scan(&mut traces.user_track_daily, Time::MAX, None, |&(d, _), _, n| {
                count(d, n)
            }),
            Table::UserArtistDaily => scan(&mut traces.user_artist_daily, Time::MAX, None, |&(d, _), _, n| {
                count(d, n)
            }),
            Table::UserProfile28d => scan(&mut traces.user_profile, Time::MAX, None, |_, (d, _), n| count(*d, n)),
            Table::RejectedEvents => scan(&mut traces.rejected, Time::MAX, None, |&d, _, n| count(d, n)),
            Table::LateEvents => {}
        }
    }
    s
}

/// Writes one partition's rows into `staging/<table>/dt=<day>/part-00000.parquet`.
pub fn stage_partition(staging: &Staging, day: i32, mut rows: PartRows, int: &Interner) -> Result<Staged> {
    let table = rows.table();
    let t = std::time::Instant::now();
    rows.sort(int);
    let n = rows.len();
    let sorted = t.elapsed().as_secs_f64();
    let (file, bytes) = self::parquet::write_file(staging.writer(table, day)?, &rows, day, int)?;
    tracing::debug!(
        table = table.name(),
        day,
        rows = n,
        sorted,
        written = t.elapsed().as_secs_f64() - sorted,
        "partition staged"
    );
    Ok(Staged {
        table,
        day,
        file,
        rows: n,
        bytes,
    })
}

/// Partition rows on their way to the partition's owner: (owner worker,
/// partition, rows).
pub type RowsMail = Mailbox<(u64, (Table, i32), PartRows)>;

/// The mailbox that takes partition rows to their owners.
pub fn rows_mail(worker: &mut timely::worker::Worker) -> RowsMail {
    Mailbox::routed(worker, |r: &(u64, (Table, i32), PartRows)| r.0)
}

/// Sends this worker's share of each partition to the partition's owner at
/// time `t`, in pieces ([`PartRows::piece_rows`]: each piece is one message
/// between processes, a few hundred KiB whatever the size of a day), and
/// returns the partitions this worker owns with every worker's rows.
pub fn to_owners(
    mail: &mut RowsMail,
    worker: &mut timely::worker::Worker,
    abort: &Abort,
    t: Time,
    shares: impl IntoIterator<Item = ((Table, i32), PartRows)>,
    owners: &BTreeMap<(Table, i32), usize>,
    sizes: &BTreeMap<(Table, i32), u64>,
) -> Result<BTreeMap<(Table, i32), PartRows>> {
    let sent = shares.into_iter().flat_map(|(k, rows)| {
        let owner = owners[&k] as u64;
        let n = rows.piece_rows();
        rows.into_pieces(n).map(move |r| (owner, k, r))
    });
    let mut parts: BTreeMap<(Table, i32), PartRows> = BTreeMap::new();
    // Each piece joins its partition as it arrives, and is freed.
    mail.exchange_each(worker, abort, t, sent, |(_, k, rows)| {
        match parts.get_mut(&k) {
            Some(p) => p.append(rows),
            None => {
                // Room for every share at once: no vector regrows (a copy
                // of the rows so far, and twice their memory meanwhile). An
                // empty vector reserves exactly; reserving on the first
                // share could double it (peak RSS 1.02x, measured).
                let mut all = PartRows::empty(k.0);
                all.reserve(sizes.get(&k).map_or(0, |n| *n as usize));
                all.append(rows);
                parts.insert(k, all);
            }
        }
    })?;
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every worker computes the same owners whatever order the shares
        /// arrive in, and each table's rows spread so that no worker has more
        /// than one partition's worth above another (a batch stages a table
        /// at a time: the table's slowest worker sets its time).
        #[test]
        fn owners_spread_each_table_and_waves_take_each_partition_once(
            sizes in proptest::collection::vec((0usize..3, 0i32..12, 1u64..1000), 1..40),
            peers in 1usize..5,
        ) {
            let tables = [Table::UserDaily, Table::UserTrackDaily, Table::UserArtistDaily];
            let entries: Vec<((Table, i32), u64)> = sizes.iter().map(|&(t, d, n)| ((tables[t], d), n)).collect();
            let mut summed: BTreeMap<(Table, i32), u64> = BTreeMap::new();
            for (k, n) in &entries {
                *summed.entry(*k).or_insert(0) += n;
            }
            prop_assert_eq!(&super::summed(entries.iter().rev().copied()), &summed);
            let owners = owners(&super::summed(entries.iter().copied()), peers);
            // Waves: every partition once, in its table's waves, at most one per owner a wave.
            let mut seen = std::collections::BTreeSet::new();
            for (t, days) in waves(&TRACED, &owners, &summed) {
                let mut per_owner = std::collections::BTreeSet::new();
                prop_assert!(days.windows(2).all(|w| w[0] < w[1]), "days ascending: {:?}", days);
                for d in days {
                    prop_assert!(seen.insert((t, d)), "{:?} staged twice", (t, d));
                    prop_assert!(per_owner.insert(owners[&(t, d)]), "two partitions of one owner in a wave");
                }
            }
            prop_assert_eq!(seen.len(), owners.len());
            for t in tables {
                let mut load = vec![0u64; peers];
                let mut largest = 0;
                for (k, n) in summed.iter().filter(|(k, _)| k.0 == t) {
                    prop_assert!(owners[k] < peers);
                    load[owners[k]] += n;
                    largest = largest.max(*n);
                }
                let (lo, hi) = (load.iter().min().unwrap(), load.iter().max().unwrap());
                prop_assert!(hi - lo <= largest, "{:?}: loads {:?}", t, load);
            }
        }
    }
}
