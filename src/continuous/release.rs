//! Applying a commit's decision on each worker: when days became final, the
//! worker releases its share of their state (retracts their listens, reads
//! their daily aggregates back as `prior` while an open window needs them);
//! the committer's worker moves the dataflow's last final day; the first
//! worker of each process later forgets the days' event ids.

use super::commit::{Decision, WorkerState};
use super::{load_prior, Ctx};
use crate::dataflow::{self, ListenTrace, Time};
use crate::intern::{self, EventKey};
use anyhow::Result;
use differential_dataflow::trace::cursor::{cursor_list, Cursor};
use differential_dataflow::trace::TraceReader;
use timely::progress::frontier::Antichain;

/// Applies the decision `d` of a commit on this worker (input at `time`).
pub(super) fn apply(c: &Ctx, w: &mut WorkerState, d: &Decision, time: Time, at: (usize, usize)) -> Result<()> {
    w.as_of = d.as_of.or(w.as_of);
    if d.replaying || d.final_through == w.final_through {
        return Ok(());
    }
    let old_final = w.final_through;
    let f = d.final_through.expect("days only become final");
    let from = old_final.map_or(i32::MIN, |o| o + 1);
    w.feeder.final_through = f;
    w.feeder.first_off = w.feeder.first_off.split_off(&(f + 1, i32::MIN));
    w.final_through = d.final_through;
    let h = &mut w.h;
    let n = match h.listens_trace.as_mut() {
        Some(t) => retract_listens(t, from, f, &mut h.listens),
        None => 0,
    };
    // The window of the first open day (f + 1) reaches back to f - 26.
    let need_from = f - dataflow::WINDOW_DAYS + 2;
    load_prior(&c.store, from.max(need_from)..=f, at, 1, &c.interner, h)?;
    if let Some(o) = old_final {
        // Days that were prior input and left every open window.
        let gone = o - dataflow::WINDOW_DAYS + 2..=o.min(need_from - 1);
        load_prior(&c.store, gone, at, -1, &c.interner, h)?;
    }
    if at.0 == 0 {
        // As-of days up to the last final day are no longer produced.
        if let Some(o) = old_final {
            h.fin.update(o, -1);
        }
        h.fin.update(f, 1);
    }
    h.listens.flush();
    h.prior.flush();
    h.fin.flush();
    w.releasing.push((time, from, f));
    intern::forget_days();
    tracing::debug!(worker = at.0, retracted = n, "state of final days released");
    Ok(())
}

/// Once the retractions of released days went through (their input time is
/// before boundary `b`, which every worker has passed), their event ids are
/// unused: the first worker of each process forgets them.
pub(super) fn forget_released(c: &Ctx, w: &mut WorkerState, b: Time, index: usize) {
    let (done, pending): (Vec<_>, Vec<_>) = w.releasing.drain(..).partition(|(t, _, _)| *t < b);
    w.releasing = pending;
    if !index.is_multiple_of(c.cfg.workers.max(1)) {
        return;
    }
    for (_, from, to) in done {
        for d in c
            .interner
            .event_day_list()
            .into_iter()
            .filter(|d| *d >= from && *d <= to)
        {
            c.interner.release_day(d);
        }
    }
}

/// Retracts every listen of days `from..=to` held in this worker's share of
/// the arranged input.
fn retract_listens(
    trace: &mut ListenTrace,
    from: i32,
    to: i32,
    input: &mut differential_dataflow::input::InputSession<Time, (EventKey, dataflow::Listen), dataflow::Diff>,
) -> usize {
    let Some(batches) = trace.batches_through(Antichain::<Time>::new().borrow()) else {
        return 0;
    };
    let (mut cursor, storage) = cursor_list(batches);
    cursor.seek_key(&storage, &EventKey { day: from, eid: 0 });
    let mut n = 0;
    while cursor.key_valid(&storage) {
        let k = *cursor.key(&storage);
        if k.day > to {
            break;
        }
        while cursor.val_valid(&storage) {
            let mut c: dataflow::Diff = 0;
            cursor.map_times(&storage, |_, d| c += *d);
            if c != 0 {
                input.update((k, *cursor.val(&storage)), -c);
                n += 1;
            }
            cursor.step_val(&storage);
        }
        cursor.step_key(&storage);
    }
    n
}
