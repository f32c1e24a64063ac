//! Dedup: of each (day, event id) group keep the smallest listen by the
//! spec's tuple, as a collection of changes read straight off the arranged
//! input.
//!
//! A `reduce` would keep a second arrangement of every kept listen (its
//! output trace) only to learn what it emitted before; here that is
//! recomputed from the input's own history. For each key of an input batch
//! the group's history (the trace through the batch's lower bound) gives the
//! smallest listen before the batch; the batch's updates are applied in time
//! order (times are totally ordered), and each time the smallest changes the
//! old one is retracted and the new one added at that time. The output is
//! the collection a reduce would produce, without holding it. Once the input
//! is complete (batch), the operator lets go of the trace.

use super::{dedup_order, Diff, Listen, ListenTrace, Time};
use crate::intern::{EventKey, Interner};
use differential_dataflow::operators::arrange::Arranged;
use differential_dataflow::trace::cursor::{cursor_list, Cursor};
use differential_dataflow::trace::{Navigable, TraceReader};
use differential_dataflow::{AsCollection, VecCollection};
use std::cmp::Ordering;
use std::sync::Arc;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

/// The kept listens of `listens`, as changes over time.
pub fn kept<'s>(
    listens: Arranged<'s, ListenTrace>,
    int: Arc<Interner>,
) -> VecCollection<'s, Time, (EventKey, Listen), Diff> {
    let mut trace = Some(listens.trace);
    listens
        .stream
        .unary_frontier(Pipeline, "Dedup", move |_, _| {
            let mut group = Group::default();
            move |(input, frontier), output| {
                input.for_each(|time, spans| {
                    let Some(trace) = trace.as_mut() else { return };
                    let mut session = output.session(&time);
                    for span in spans.iter() {
                        if let Some(batch) = span.inner.as_ref() {
                            let history = trace
                                .batches_through(span.lower().borrow())
                                .expect("the listens trace keeps the history before each of its batches");
                            let (mut past, past_storage) = cursor_list(history);
                            let mut new = batch.cursor();
                            while let Some(key) = new.get_key(batch) {
                                group.history(&mut past, &past_storage, key);
                                group.updates(&mut new, batch);
                                group.changes(&int, |l, t, d| session.give(((*key, l), t, d)));
                                new.step_key(batch);
                            }
                        }
                        trace.set_logical_compaction(span.upper().borrow());
                        trace.set_physical_compaction(span.upper().borrow());
                    }
                });
                // No more input (a batch run's listens are all in): the
                // history is needed no more, and when no other reader holds
                // the Listens trace (batch), dropping this handle frees it
                // before the daily tables are computed.
                if frontier.is_empty() {
                    trace = None;
                }
            }
        })
        .as_collection()
}

/// One key's listens with their counts, and the batch's updates to them.
#[derive(Default)]
struct Group {
    vals: Vec<(Listen, Diff)>,
    upds: Vec<(Time, Listen, Diff)>,
}

impl Group {
    /// The group's listens before the batch (counts summed over all times).
    fn history<C>(&mut self, past: &mut C, storage: &C::Storage, key: &EventKey)
    where
        C: for<'a> Cursor<Key<'a> = &'a EventKey, Val<'a> = &'a Listen, Time = Time, Diff = Diff>,
        for<'a> C::DiffGat<'a>: std::ops::Deref<Target = Diff>,
    {
        self.vals.clear();
        past.seek_key(storage, key);
        if past.get_key(storage) != Some(key) {
            return;
        }
        while let Some(v) = past.get_val(storage) {
            let mut n: Diff = 0;
            past.map_times(storage, |_, d| n += *d);
            if n != 0 {
                self.vals.push((*v, n));
            }
            past.step_val(storage);
        }
    }

    /// The batch's updates of the current key, in time order.
    fn updates<B: Navigable>(&mut self, new: &mut B::Cursor, batch: &B)
    where
        B::Cursor: for<'a> Cursor<Storage = B, Val<'a> = &'a Listen, Time = Time, Diff = Diff>,
        for<'a> <B::Cursor as Cursor>::TimeGat<'a>: std::ops::Deref<Target = Time>,
        for<'a> <B::Cursor as Cursor>::DiffGat<'a>: std::ops::Deref<Target = Diff>,
    {
        self.upds.clear();
        while let Some(v) = new.get_val(batch) {
            new.map_times(batch, |t, d| self.upds.push((*t, *v, *d)));
            new.step_val(batch);
        }
        self.upds.sort_by_key(|u| u.0);
    }

    /// Applies the updates time by time; calls `emit` for every change of
    /// the smallest listen.
    fn changes(&mut self, int: &Interner, mut emit: impl FnMut(Listen, Time, Diff)) {
        let mut best = smallest(&self.vals, int);
        let mut i = 0;
        while i < self.upds.len() {
            let t = self.upds[i].0;
            while i < self.upds.len() && self.upds[i].0 == t {
                let (_, v, d) = self.upds[i];
                match self.vals.iter().position(|(x, _)| *x == v) {
                    Some(p) => self.vals[p].1 += d,
                    None => self.vals.push((v, d)),
                }
                i += 1;
            }
            self.vals.retain(|(_, n)| *n != 0);
            let now = smallest(&self.vals, int);
            if now != best {
                if let Some(b) = best {
                    emit(b, t, -1);
                }
                if let Some(n) = now {
                    emit(n, t, 1);
                }
                best = now;
            }
        }
    }
}

/// The smallest listen present (count above zero) by the dedup order.
fn smallest(vals: &[(Listen, Diff)], int: &Interner) -> Option<Listen> {
    let mut present = vals.iter().filter(|(_, n)| *n > 0).map(|(v, _)| v);
    let first = *present.next()?;
    Some(present.fold(first, |best, v| match dedup_order(v, &best, int) {
        Ordering::Less => *v,
        _ => best,
    }))
}
