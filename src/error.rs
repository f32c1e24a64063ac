//! Error types and run-wide failure, below every stage: lower layers report
//! through these, never through the CLI.
//!
//! - [`ConfigError`]: bad usage or configuration (exit 2).
//! - [`GateFailed`]: a quality gate failed, nothing published (exit 4).
//! - [`Abort`]: the first failure of any worker of a run. Every loop that
//!   waits on other workers checks it, and a panic anywhere in a worker
//!   thread sets it (see [`install_panic_hook`]), so one failing worker ends
//!   the whole run promptly instead of leaving the others waiting; in a
//!   cluster, a panic ends the process at once ([`exit_on_panic`]).

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// A bad usage or configuration: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A quality gate with severity `fail` fired: nothing of the run was
/// published (exit 4).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GateFailed(pub String);

/// A `ConfigError` as an `anyhow::Error`.
pub fn bad(msg: impl Into<String>) -> anyhow::Error {
    ConfigError(msg.into()).into()
}

/// The first failure of a run, shared by its workers (and the threads that
/// serve them). Cheap to check.
#[derive(Debug, Default)]
pub struct Abort {
    first: OnceLock<String>,
}

/// Returned by waits that ended because another worker failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Aborted(pub String);

impl Abort {
    /// A new run's failure state, registered so that a panic on a thread that
    /// belongs to no worker (a network thread, say) fails it too.
    pub fn new() -> Arc<Abort> {
        let a = Arc::new(Abort::default());
        let mut runs = RUNS.lock().unwrap_or_else(|e| e.into_inner());
        runs.retain(|w| w.strong_count() > 0);
        runs.push(Arc::downgrade(&a));
        a
    }

    /// Records `msg` as the run's failure unless one is recorded already.
    pub fn fail(&self, msg: impl Into<String>) {
        let msg = msg.into();
        if self.first.set(msg.clone()).is_ok() {
            tracing::error!("{msg}");
        }
    }

    pub fn is_set(&self) -> bool {
        self.first.get().is_some()
    }

    /// The first failure, if any.
    pub fn message(&self) -> Option<&str> {
        self.first.get().map(String::as_str)
    }

    /// `Err(Aborted)` once any worker failed.
    pub fn check(&self) -> Result<(), Aborted> {
        match self.first.get() {
            Some(m) => Err(Aborted(m.clone())),
            None => Ok(()),
        }
    }

    /// Marks the current thread as a worker of this run: a panic on it fails
    /// this run (and only this one).
    pub fn enter(self: &Arc<Self>, worker: usize) {
        CURRENT.with(|c| *c.borrow_mut() = Some((self.clone(), worker)));
    }
}

static RUNS: Mutex<Vec<Weak<Abort>>> = Mutex::new(Vec::new());

/// Cluster mode: what a failed process says after its error (see [`exit_on_panic`]).
static EXIT_ON_PANIC: OnceLock<String> = OnceLock::new();

/// Cluster mode: a panic anywhere ends this process at once with exit 1 and
/// one line (`skipflow: error: <first failure>; <epilogue>`), instead of
/// unwinding through timely's communication state, which a dead peer leaves
/// poisoned. Like a crash, this publishes nothing more; the other processes
/// see the closed connection and end the same way.
pub fn exit_on_panic(epilogue: &str) {
    let _ = EXIT_ON_PANIC.set(epilogue.to_string());
}

thread_local! {
    static CURRENT: RefCell<Option<(Arc<Abort>, usize)>> = const { RefCell::new(None) };
}

/// Routes panics into the runs' failure state: a panic on a worker thread
/// fails its run with "worker N panicked: ..."; a panic on one of timely's
/// network threads (they panic when a peer process dies or a connection
/// drops) fails every active run of the process. The panic is logged as one line instead of the default
/// multi-line report; `RUST_BACKTRACE=1` keeps the default report too.
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let what = panic_message(info.payload());
            let at = info
                .location()
                .map(|l| format!(" ({}:{})", l.file(), l.line()))
                .unwrap_or_default();
            let current = CURRENT.with(|c| c.borrow().clone());
            let thread = std::thread::current().name().unwrap_or("").to_string();
            let first = match &current {
                Some((run, w)) => {
                    run.fail(format!("worker {w} panicked: {what}{at}"));
                    run.message().map(str::to_string)
                }
                None if thread.starts_with("timely:") => {
                    let msg = format!("lost the connection to another process of the cluster ({what}, {thread})");
                    let runs = RUNS.lock().unwrap_or_else(|e| e.into_inner());
                    let live: Vec<Arc<Abort>> = runs.iter().filter_map(Weak::upgrade).collect();
                    drop(runs);
                    for r in &live {
                        r.fail(msg.clone());
                    }
                    if live.is_empty() {
                        default(info);
                    }
                    live.first().and_then(|r| r.message().map(str::to_string)).or(Some(msg))
                }
                None => {
                    default(info);
                    None
                }
            };
            if let (Some(epilogue), Some(first)) = (EXIT_ON_PANIC.get(), first) {
                eprintln!("skipflow: error: {first}; {epilogue}");
                std::process::exit(1);
            }
            if current.is_some() && std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
                default(info);
            }
        }));
    });
}

/// The text of a panic payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Fault injection for tests of failure handling:
/// `SKIPFLOW_FAULT=<point>:<error|panic|hang>` makes the last worker of a
/// run fail (or stop answering, to be killed) at `<point>` (`reader`:
/// creating its Kafka reader; `prior`: reading published days back;
/// `staging`: writing partitions; `upload`: finishing an object-store upload).
pub fn inject(point: &str, worker: usize, peers: usize) -> anyhow::Result<()> {
    static AT: OnceLock<Option<(String, String)>> = OnceLock::new();
    let at = AT.get_or_init(|| {
        let v = std::env::var("SKIPFLOW_FAULT").ok()?;
        let (p, k) = v.split_once(':')?;
        Some((p.to_string(), k.to_string()))
    });
    match at {
        Some((p, kind)) if p == point && worker + 1 == peers => match kind.as_str() {
            "panic" => panic!("injected panic at {point}"),
            "hang" => {
                eprintln!("SKIPFLOW_FAULT: worker {worker} stops answering at {point}");
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
            _ => anyhow::bail!("injected failure at {point}"),
        },
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_panic_fails_its_run_only() {
        install_panic_hook();
        let (mine, other) = (Abort::new(), Abort::new());
        let m = mine.clone();
        let r = std::thread::spawn(move || {
            m.enter(3);
            panic!("boom");
        })
        .join();
        assert!(r.is_err());
        assert!(mine.message().unwrap().starts_with("worker 3 panicked: boom"));
        assert!(!other.is_set());
    }
}
