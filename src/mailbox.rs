//! Coordination in the dataflow: small channels between workers whose
//! completion is told by timely's frontiers, never by shared memory, so the
//! workers may live in several processes.
//!
//! A [`Mailbox`] is a dataflow of its own. A worker sends records at a time
//! (a phase of a batch run, a commit boundary), then closes that time; the
//! records reach every worker ([`Mailbox::broadcast`]) or one chosen worker
//! each ([`Mailbox::routed`]), and a destination has all of them once its
//! input frontier has passed the time, whichever process sent them. Built
//! in the same order on every worker, like every dataflow.

use crate::dataflow::Time;
use crate::error::Abort;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;
use timely::communication::Pull;
use timely::container::{ContainerBuilder, LengthPreservingContainerBuilder, PushInto};
use timely::dataflow::channels::pact::{ExchangeCore, Pipeline};
use timely::dataflow::channels::Message;
use timely::dataflow::operators::generic::{InputHandleCore, Operator};
use timely::dataflow::operators::vec::input::Handle as InputHandle;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::vec::Input;
use timely::progress::frontier::{Antichain, MutableAntichain};
use timely::worker::Worker;
use timely::ExchangeData;

/// What a mailbox receives, by time, and its input frontier.
type Got<T> = Rc<RefCell<BTreeMap<Time, Vec<T>>>>;
type Front = Rc<RefCell<Antichain<Time>>>;
/// Which worker a record goes to (`None`: every worker).
type Route<T> = Option<Box<dyn Fn(&T) -> u64>>;
/// The input of a mailbox's sink operator.
type SinkInput<'a, 'b, T, P> = (&'a mut InputHandleCore<Time, Vec<T>, P>, &'b MutableAntichain<Time>);

pub struct Mailbox<T: ExchangeData + Clone> {
    input: InputHandle<Time, T>,
    got: Rc<RefCell<BTreeMap<Time, Vec<T>>>>,
    frontier: Rc<RefCell<Antichain<Time>>>,
}

impl<T: ExchangeData + Clone> Mailbox<T> {
    /// Every record reaches every worker (an all-gather).
    pub fn broadcast(worker: &mut Worker) -> Mailbox<T> {
        Mailbox::build(worker, None)
    }

    /// Each record reaches worker `route(record) % peers`.
    pub fn routed(worker: &mut Worker, route: impl Fn(&T) -> u64 + 'static) -> Mailbox<T> {
        Mailbox::build(worker, Some(Box::new(route)))
    }

    fn build(worker: &mut Worker, route: Route<T>) -> Mailbox<T> {
        let got: Got<T> = Rc::default();
        let frontier: Front = Rc::new(RefCell::new(Antichain::from_elem(0)));
        let mut input = InputHandle::new();
        worker.dataflow::<Time, _, _>(|scope| {
            let stream = scope.input_from(&mut input);
            match route {
                None => stream
                    .broadcast()
                    .sink(Pipeline, "Mailbox", collector(got.clone(), frontier.clone())),
                Some(r) => stream.sink(
                    ExchangeCore::<OneEach<T>, _>::new_core(move |x: &T| r(x)),
                    "Mailbox",
                    collector(got.clone(), frontier.clone()),
                ),
            }
        });
        Mailbox { input, got, frontier }
    }

    /// Sends `x` at time `t` (at or after the last time sent or closed).
    pub fn send(&mut self, t: Time, x: T) {
        self.input.advance_to(t);
        self.input.send(x);
    }

    /// No more records at `t` or before from this worker.
    pub fn close(&mut self, t: Time) {
        self.input.advance_to(t + 1);
        self.input.flush();
    }

    /// Pushes what was sent so far on to the workers (without closing a time).
    pub fn flush(&mut self) {
        self.input.flush();
    }

    /// Whether anything arrived (a mailbox used for signals: times do not matter).
    pub fn any(&self) -> bool {
        !self.got.borrow().is_empty()
    }

    /// Whether every worker's records of time `t` have arrived.
    pub fn complete(&self, t: Time) -> bool {
        !self.frontier.borrow().less_equal(&t)
    }

    /// Sends `items` at `t`, closes `t`, and steps `worker` until every
    /// worker's records of `t` are here (or the run is aborted). Each record
    /// is pushed on as it is sent (a routed mailbox ships it as a message of
    /// its own, [`OneEach`]) and the worker steps in between, so large
    /// records (partition rows) travel to other processes one at a time,
    /// instead of all waiting in buffers at once.
    pub fn exchange(
        &mut self,
        worker: &mut Worker,
        abort: &Abort,
        t: Time,
        items: impl IntoIterator<Item = T>,
    ) -> anyhow::Result<Vec<T>> {
        let mut got = Vec::new();
        self.exchange_each(worker, abort, t, items, |x| got.push(x))?;
        Ok(got)
    }

    /// As [`Mailbox::exchange`], but each record that arrives is handed to
    /// `take` at once, between steps, rather than held until every worker's
    /// records are here: a receiver that folds pieces of rows into one
    /// partition frees each piece as it comes.
    pub fn exchange_each(
        &mut self,
        worker: &mut Worker,
        abort: &Abort,
        t: Time,
        items: impl IntoIterator<Item = T>,
        mut take: impl FnMut(T),
    ) -> anyhow::Result<()> {
        self.input.advance_to(t);
        for x in items {
            abort.check()?;
            self.input.send(x);
            self.input.flush();
            worker.step();
            self.take_each(t, &mut take);
        }
        self.close(t);
        wait(worker, abort, || {
            self.take_each(t, &mut take);
            self.complete(t)
        })?;
        self.take_each(t, &mut take);
        Ok(())
    }

    /// Hands the records of time `t` that arrived so far to `take`.
    fn take_each(&self, t: Time, take: &mut impl FnMut(T)) {
        let arrived = self.got.borrow_mut().remove(&t);
        arrived.into_iter().flatten().for_each(take);
    }
}

/// Ships every record of a routed mailbox as a message of its own. timely's
/// default builder gathers records into containers of 8 KiB of record
/// headers and sends a container when it is full or the time closes, so
/// 170 partition pieces would travel as one serialized message, and the
/// network buffers, sized by the largest message, stay that large.
struct OneEach<T> {
    pending: std::collections::VecDeque<Vec<T>>,
    out: Option<Vec<T>>,
}

impl<T> Default for OneEach<T> {
    fn default() -> Self {
        OneEach {
            pending: Default::default(),
            out: None,
        }
    }
}

impl<T> PushInto<T> for OneEach<T> {
    fn push_into(&mut self, x: T) {
        self.pending.push_back(vec![x]);
    }
}

impl<T: 'static> ContainerBuilder for OneEach<T> {
    type Container = Vec<T>;
    fn extract(&mut self) -> Option<&mut Vec<T>> {
        self.out = self.pending.pop_front();
        self.out.as_mut()
    }
    fn finish(&mut self) -> Option<&mut Vec<T>> {
        self.extract()
    }
}

impl<T: 'static> LengthPreservingContainerBuilder for OneEach<T> {}

/// The sink of a mailbox: moves what arrives into `got` and records the
/// input frontier once the input is drained.
fn collector<T: Clone + 'static, P: Pull<Message<Time, Vec<T>>>>(
    got: Got<T>,
    frontier: Front,
) -> impl for<'a, 'b> FnMut(SinkInput<'a, 'b, T, P>) {
    move |(handle, front)| {
        handle.for_each(|cap, data| {
            if let Some(t) = cap.least() {
                got.borrow_mut().entry(*t).or_default().append(data);
            }
        });
        *frontier.borrow_mut() = front.frontier().to_owned();
    }
}

/// Steps `worker` until `done()` (or the run is aborted), parking briefly
/// when there is nothing to do.
pub fn wait(worker: &mut Worker, abort: &Abort, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    while !done() {
        abort.check()?;
        worker.step_or_park(Some(Duration::from_millis(1)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record leaves the builder as a container of its own, at once:
    /// gathered records would cross to another process as one message.
    #[test]
    fn a_routed_record_is_a_message_of_its_own() {
        let mut b = OneEach::<u32>::default();
        for x in 0..3 {
            b.push_into(x);
            let sent = b.extract().map(std::mem::take);
            assert_eq!(sent, Some(vec![x]));
            assert!(b.extract().is_none());
        }
        assert!(b.finish().is_none());
    }

    /// `exchange_each` hands each record over as it arrives, while later
    /// records are still being sent: a receiver folding pieces into a
    /// partition holds one piece at a time, not all of them.
    #[test]
    fn exchange_each_hands_records_over_as_they_arrive() {
        use std::sync::{Arc, Mutex};
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        timely::execute(timely::Config::thread(), move |worker| {
            let mut mail = Mailbox::<u32>::routed(worker, |_| 0);
            let sent = (1..=4).inspect(|x| l.lock().unwrap().push(format!("sent {x}")));
            let abort = Abort::default();
            mail.exchange_each(worker, &abort, 0, sent, |x| l.lock().unwrap().push(format!("took {x}")))
                .expect("exchange");
        })
        .expect("workers");
        let log = log.lock().unwrap().clone();
        let at = |e: &str| {
            log.iter()
                .position(|x| x == e)
                .unwrap_or_else(|| panic!("{e} missing: {log:?}"))
        };
        for x in 1..=4 {
            assert!(at(&format!("sent {x}")) < at(&format!("took {x}")), "{log:?}");
        }
        assert!(at("took 1") < at("sent 3"), "records were held until the end: {log:?}");
    }

    /// A routed record reaches its worker while its time is still open
    /// (timely's default exchange holds records until a container fills or
    /// the time closes, so a worker's pieces would leave all at once).
    #[test]
    fn a_routed_record_arrives_before_its_time_closes() {
        use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
        use std::sync::Arc;
        let seen = Arc::new(AtomicBool::new(false));
        let s = seen.clone();
        let guards = timely::execute(timely::Config::process(2), move |worker| {
            let mut mail = Mailbox::<u32>::routed(worker, |_| 1);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let waiting = |done: bool| !done && std::time::Instant::now() < deadline;
            if worker.index() == 0 {
                mail.send(0, 7);
                mail.flush();
                while waiting(s.load(SeqCst)) {
                    worker.step();
                }
            } else {
                while waiting(mail.any()) {
                    worker.step();
                }
                s.store(mail.any(), SeqCst);
            }
            mail.close(0);
        })
        .expect("workers");
        drop(guards);
        assert!(seen.load(SeqCst), "the record waited for its time to close");
    }
}
