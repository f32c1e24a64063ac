//! One worker's records into the dataflow: listens of open days, as-of days,
//! `rejected_events` and `late_events` rows, and the counts the checkpoint
//! does not reflect yet.

use crate::dataflow::{self, LateRow, RejectRow};
use crate::intern::Name;
use crate::report::Counts;
use crate::source::RawRecord;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Turns one worker's records into dataflow input and rows of the side tables.
pub(super) struct Feeder {
    pub source: Name,
    pub run_day: i32,
    /// The checkpoint offsets at start: records before them were counted
    /// and published by an earlier process.
    pub resume: HashMap<i32, i64>,
    /// The last final day (`i32::MIN`: none), as the last commit decided.
    pub final_through: i32,
    pub counts: Counts,
    pub rejected: Vec<(i32, RejectRow)>,
    pub late: Vec<(i32, LateRow)>,
    /// First offset of a listen of an open day, per (day, partition).
    pub first_off: BTreeMap<(i32, i32), i64>,
    /// Records counted, per second of message timestamp (freshness).
    pub arrivals: BTreeMap<i64, u64>,
    pub seen: Seen,
}

impl Feeder {
    pub fn feed(&mut self, rec: RawRecord<'_>, h: &mut dataflow::Handles) {
        let fresh = rec.offset >= self.resume.get(&rec.partition).copied().unwrap_or(i64::MIN);
        if fresh {
            self.counts.read += 1;
            if let Some(ts) = rec.message_ts {
                *self.arrivals.entry(ts.div_euclid(1000)).or_insert(0) += 1;
            }
        }
        match rec.decode() {
            Err(reason) => {
                if fresh {
                    self.counts.reject(reason);
                    self.rejected.push(rec.reject_row(self.source, reason, self.run_day));
                }
            }
            Ok(e) => {
                let day = e.day();
                if day <= self.final_through {
                    if fresh {
                        self.counts.late += 1;
                        self.late.push((day, LateRow::new(&e, rec.message_ts)));
                    }
                    return;
                }
                self.first_off.entry((day, rec.partition)).or_insert(rec.offset);
                self.seen.note(day, &mut |d| h.seen.update(d, 1));
                h.listens.update(dataflow::Listen::keyed(&e), 1);
            }
        }
    }
}

/// The listen days this worker put into the dataflow's `seen` input, once
/// each: the as-of range of `user_profile_28d` (first to last day seen,
/// over every worker) is computed in the dataflow from them.
#[derive(Default)]
pub(super) struct Seen {
    days: BTreeSet<i32>,
    last: Option<i32>,
}

impl Seen {
    /// Notes `day`; calls `add` the first time this worker sees it.
    pub fn note(&mut self, day: i32, add: &mut dyn FnMut(i32)) {
        if self.last == Some(day) {
            return;
        }
        self.last = Some(day);
        if self.days.insert(day) {
            add(day);
        }
    }

    /// The first and last day this worker has seen.
    pub fn bounds(&self) -> Option<(i32, i32)> {
        self.days.first().copied().zip(self.days.last().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_day_is_added_once() {
        let mut s = Seen::default();
        let mut got = vec![];
        for d in [5, 5, 7, 5, 3, 7] {
            s.note(d, &mut |d| got.push(d));
        }
        assert_eq!(got, vec![5, 7, 3]);
        assert_eq!(s.bounds(), Some((3, 7)));
    }
}
