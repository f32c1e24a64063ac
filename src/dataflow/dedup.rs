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
//! is complete (batch), the operator lets go of the trace. A large batch is
//! gone through in slices of keys, the worker stepping between them.

use super::{dedup_order, Diff, Listen, ListenTrace, Time};
use crate::intern::{EventKey, Interner};
use differential_dataflow::operators::arrange::Arranged;
use differential_dataflow::trace::cursor::{cursor_list, Cursor};
use differential_dataflow::trace::{Navigable, TraceReader};
use differential_dataflow::{AsCollection, VecCollection};
use std::cmp::Ordering;
use std::collections::VecDeque;
use std::sync::Arc;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

/// Keys a Dedup activation takes before it yields. A batch run's listens
/// arrive as one batch; processed in one go, its output (every kept listen,
/// two thirds of it serialized for other processes in a cluster of three)
/// would leave as one burst that the receivers queue in network buffers
/// faster than their workers take it in. In slices, each worker steps
/// between them, so what arrives is taken in as it comes.
/// (3 in unit tests, so that a small batch is gone through in many slices.)
const KEYS_PER_ACTIVATION: usize = if cfg!(test) { 3 } else { 1 << 15 };

/// The kept listens of `listens`, as changes over time.
pub fn kept<'s>(
    listens: Arranged<'s, ListenTrace>,
    int: Arc<Interner>,
) -> VecCollection<'s, Time, (EventKey, Listen), Diff> {
    let mut trace = Some(listens.trace);
    let scope = listens.stream.scope();
    listens
        .stream
        .unary_frontier(Pipeline, "Dedup", move |_, info| {
            let activator = scope.activator_for(info.address);
            let mut group = Group::default();
            let mut pending: VecDeque<Work> = VecDeque::new();
            move |(input, frontier), output| {
                input.for_each(|time, spans| {
                    let Some(trace) = trace.as_mut() else { return };
                    for span in spans.drain(..) {
                        if let (Some(batch), Some(cap)) = (span.inner.clone(), time.retain_least(0)) {
                            let history = trace
                                .batches_through(span.lower().borrow())
                                .expect("the listens trace keeps the history before each of its batches");
                            let rest = Rest {
                                batch,
                                history,
                                next: None,
                            };
                            pending.push_back(Work { cap, rest });
                        }
                        // The history is read: held batches stay valid while the trace merges on.
                        trace.set_logical_compaction(span.upper().borrow());
                        trace.set_physical_compaction(span.upper().borrow());
                    }
                });
                let mut fuel = KEYS_PER_ACTIVATION;
                while fuel > 0 {
                    let Some(work) = pending.front_mut() else { break };
                    let mut session = output.session(&work.cap);
                    if work.rest.run(&mut group, &int, &mut fuel, |u| session.give(u)) {
                        drop(session);
                        pending.pop_front();
                    }
                }
                if !pending.is_empty() {
                    activator.activate();
                }
                // No more input (a batch run's listens are all in): the
                // history is needed no more (pending work holds what it
                // reads), and when no other reader holds the Listens trace
                // (batch), dropping this handle frees it before the daily
                // tables are computed.
                if frontier.is_empty() {
                    trace = None;
                }
            }
        })
        .as_collection()
}

type Batch = <ListenTrace as TraceReader>::Batch;

/// One input batch to go through, at its time.
struct Work {
    cap: Capability<Time>,
    rest: Rest,
}

/// What is left of an input batch: its updates, the trace's batches before
/// it, and the key to resume at.
struct Rest {
    batch: Batch,
    history: Vec<Batch>,
    next: Option<EventKey>,
}

impl Rest {
    /// Goes through keys until `fuel` runs out; true when the batch is done.
    fn run(
        &mut self,
        group: &mut Group,
        int: &Interner,
        fuel: &mut usize,
        mut emit: impl FnMut(((EventKey, Listen), Time, Diff)),
    ) -> bool {
        let (mut past, past_storage) = cursor_list(self.history.clone());
        let batch = &self.batch;
        let mut new = batch.cursor();
        if let Some(k) = &self.next {
            new.seek_key(batch, k);
        }
        while let Some(key) = new.get_key(batch) {
            if *fuel == 0 {
                self.next = Some(*key);
                return false;
            }
            *fuel -= 1;
            group.history(&mut past, &past_storage, key);
            group.updates(&mut new, batch);
            group.changes(int, |l, t, d| emit(((*key, l), t, d)));
            new.step_key(batch);
        }
        true
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::TimeType;
    use crate::intern::{self, Name};
    use std::sync::Mutex;
    use timely::dataflow::operators::{Inspect, Probe};

    type Out = Vec<((EventKey, Listen), Time, Diff)>;

    fn listen(ms: i64, track: &str) -> Listen {
        Listen {
            time: TimeType::new(ms, false),
            user: Name::of("u"),
            track: Name::of(track),
            artist: Name::of("a"),
            ms_played: 1,
            duration: 2,
        }
    }

    /// Feeds `steps` (a time's (event id, ms, track) listens each) through
    /// Dedup on one worker; returns its output, consolidated and sorted.
    fn run(steps: Vec<Vec<(String, i64, &'static str)>>, int: Arc<Interner>) -> (Out, Out) {
        let got: Arc<Mutex<Out>> = Arc::default();
        let sink = got.clone();
        let want = timely::execute_directly(move |worker| {
            intern::enter(&int);
            let (mut input, probe) = worker.dataflow::<Time, _, _>(|scope| {
                use differential_dataflow::input::Input;
                let (h, listens) = scope.new_collection::<(EventKey, Listen), Diff>();
                let kept = kept(listens.arrange_by_key_named("Listens"), int.clone());
                let (probe, _) = kept.inner.inspect(move |u| sink.lock().unwrap().push(*u)).probe();
                (h, probe)
            });
            // What Dedup must say: at each time, for each key whose smallest changed.
            let mut want = Out::new();
            let mut best: std::collections::BTreeMap<EventKey, Listen> = Default::default();
            for (t, step) in steps.iter().enumerate() {
                for (id, ms, track) in step {
                    let (k, l) = (EventKey::of(1, id), listen(*ms, track));
                    input.update((k, l), 1);
                    match best.get(&k) {
                        Some(b) if l.time >= b.time => {}
                        old => {
                            if let Some(b) = old {
                                want.push(((k, *b), t as Time, -1));
                            }
                            want.push(((k, l), t as Time, 1));
                            best.insert(k, l);
                        }
                    }
                }
                input.advance_to(t as Time + 1);
                input.flush();
                worker.step_while(|| probe.less_than(input.time()));
            }
            want
        });
        let mut got = std::mem::take(&mut *got.lock().unwrap());
        differential_dataflow::consolidation::consolidate_updates(&mut got);
        let mut want = want;
        differential_dataflow::consolidation::consolidate_updates(&mut want);
        (got, want)
    }

    #[test]
    fn a_batch_gone_through_in_slices_keeps_each_key_once() {
        // 40 keys at time 0 (13 slices of 3), some with copies; at time 1
        // a smaller copy of every fifth key, and copies that change nothing.
        let mut t0 = Vec::new();
        for k in 0..40 {
            t0.push((format!("e{k:02}"), 1_000 + k, "t1"));
            if k % 3 == 0 {
                t0.push((format!("e{k:02}"), 2_000 + k, "t2"));
            }
        }
        let t1: Vec<_> = (0..40)
            .step_by(5)
            .flat_map(|k| [(format!("e{k:02}"), 500 + k, "t3"), (format!("e{k:02}"), 9_000, "t4")])
            .collect();
        let (got, want) = run(vec![t0, t1], Interner::new());
        assert_eq!(got.iter().filter(|u| u.1 == 0).count(), 40, "every key once at time 0");
        assert_eq!(got.iter().filter(|u| u.1 == 1).count(), 16, "8 keys changed at time 1");
        assert_eq!(got, want);
    }
}
