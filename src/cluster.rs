//! Where a run's workers live: threads of one process, or several processes
//! running the same command (timely's cluster mode, cli.md "Cluster mode":
//! `-n N -p I -h HOSTFILE` after `--`).
//!
//! Global worker `g` of process `p` with `W` threads each is `p * W + local`;
//! every process builds the same dataflows in the same order. Process 0
//! holds the committer (global worker 0).

use crate::error::bad;
use anyhow::Result;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Topology {
    /// One process.
    #[default]
    Process,
    /// One process whose workers exchange serialized bytes, as between
    /// processes: a cheap way to exercise the cross-process paths in tests.
    ProcessBinary,
    /// Process `index` of the processes at `addresses` (process order).
    Cluster { index: usize, addresses: Vec<String> },
}

impl Topology {
    /// Parses timely's arguments as given after `--`: `-n N` (processes),
    /// `-p I` (this process), `-h HOSTFILE` (`host:port` a line, process 0
    /// first; default `localhost:2101+i`). `-w`/`--threads` are refused:
    /// worker threads are `--workers`.
    pub fn parse(args: &[String]) -> Result<Topology> {
        if args.is_empty() {
            return Ok(Topology::Process);
        }
        let (mut n, mut p, mut hostfile) = (None, None, None);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |flag: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| bad(format!("cluster option {flag} needs a value")))
            };
            match a.as_str() {
                "-n" | "--processes" => n = Some(number(a, &value(a)?)?),
                "-p" | "--process" => p = Some(number(a, &value(a)?)?),
                "-h" | "--hostfile" => hostfile = Some(value(a)?),
                "-w" | "--threads" | "--workers" => {
                    return Err(bad(
                        "give worker threads with --workers W (the same on every process), not after --",
                    ))
                }
                other => {
                    return Err(bad(format!(
                        "unknown cluster option {other:?}; expected -n N -p I -h HOSTFILE"
                    )))
                }
            }
        }
        let n = n.unwrap_or(1);
        let index = p.unwrap_or(0);
        if n == 0 || index >= n {
            return Err(bad(format!("cluster: process -p {index} is not in 0..{n} (-n {n})")));
        }
        let addresses = match hostfile {
            None => (0..n).map(|i| format!("localhost:{}", 2101 + i)).collect(),
            Some(f) => {
                let text = std::fs::read_to_string(&f).map_err(|e| bad(format!("cannot read hostfile {f}: {e}")))?;
                let hosts: Vec<String> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string)
                    .collect();
                if hosts.len() < n {
                    return Err(bad(format!(
                        "hostfile {f} has {} addresses for -n {n} processes",
                        hosts.len()
                    )));
                }
                hosts.into_iter().take(n).collect()
            }
        };
        if n == 1 {
            return Ok(Topology::Process);
        }
        Ok(Topology::Cluster { index, addresses })
    }

    /// This process's index (0 when alone).
    pub fn process(&self) -> usize {
        match self {
            Topology::Cluster { index, .. } => *index,
            _ => 0,
        }
    }

    /// Whether records between workers go through bytes (a cluster, or
    /// `ProcessBinary`): ids are then interned again where they arrive.
    pub fn serializes(&self) -> bool {
        !matches!(self, Topology::Process)
    }

    pub fn processes(&self) -> usize {
        match self {
            Topology::Cluster { addresses, .. } => addresses.len(),
            _ => 1,
        }
    }

    /// The output directory's lock file of this process: process 0 holds
    /// `lock` (a second run of any shape is refused there), the others
    /// `lock.pI` (a second cluster is refused at every process).
    pub fn lock_name(&self) -> String {
        match self.process() {
            0 => "lock".to_string(),
            i => format!("lock.p{i}"),
        }
    }

    /// This process's staging subdirectory (each process cleans only its own).
    pub fn staging_name(&self) -> String {
        format!("p{}", self.process())
    }

    /// The timely configuration for `workers` threads in this process, with
    /// differential's idle merging (arrangements consolidate while idle).
    pub fn config(&self, workers: usize) -> timely::Config {
        use timely::CommunicationConfig as C;
        let communication = match self {
            Topology::Process => C::Process(workers),
            Topology::ProcessBinary => C::ProcessBinary(workers),
            Topology::Cluster { index, addresses } => C::Cluster {
                threads: workers,
                process: *index,
                addresses: addresses.clone(),
                report: false,
                zerocopy: false,
            },
        };
        let mut config = timely::Config {
            communication,
            worker: timely::WorkerConfig::default(),
        };
        differential_dataflow::configure(
            &mut config.worker,
            &differential_dataflow::Config::default().idle_merge_effort(Some(100_000)),
        );
        config
    }
}

/// How long the processes of a cluster may take to connect to each other.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Starts this process's workers running `f`. In a cluster, timely first
/// connects every pair of processes and would wait forever for one that
/// never comes (or died while connecting): after [`CONNECT_TIMEOUT`] the
/// process exits 1 with one line saying so.
pub fn execute<T, F>(topology: &Topology, workers: usize, f: F) -> Result<timely::communication::WorkerGuards<T>>
where
    T: Send + 'static,
    F: Fn(&mut timely::worker::Worker) -> T + Send + Sync + 'static,
{
    let connected = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Topology::Cluster { index, addresses } = topology {
        let (c, index, addresses) = (connected.clone(), *index, addresses.join(", "));
        std::thread::spawn(move || {
            let t0 = std::time::Instant::now();
            while t0.elapsed() < CONNECT_TIMEOUT {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if c.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
            }
            eprintln!(
                "skipflow: error: the cluster's processes did not all connect within {}s (this is process {index}; \
                 every process must run with the same -n and hostfile, and reach {addresses}); nothing was published",
                CONNECT_TIMEOUT.as_secs()
            );
            std::process::exit(1);
        });
    }
    let config = topology.config(workers);
    let (builders, others) = config
        .communication
        .try_build_with(hooks())
        .map_err(|e| anyhow::anyhow!("starting workers: {e}"))?;
    let guards = timely::execute::execute_from(builders, others, config.worker, f)
        .map_err(|e| anyhow::anyhow!("starting workers: {e}"))?;
    connected.store(true, std::sync::atomic::Ordering::SeqCst);
    Ok(guards)
}

/// Reclaimed network buffers kept for reuse, per buffer pool (a receiving
/// connection, a sending worker): timely keeps every one by default, so
/// the largest burst of bytes in flight stayed resident for the rest of the
/// run.
const STASHED_BUFFERS: usize = 2;

/// timely's communication hooks: its defaults, with a bounded stash of
/// network buffers.
fn hooks() -> timely::communication::initialize::Hooks {
    let mut hooks = timely::communication::initialize::Hooks::default();
    hooks.refill.limit = Some(STASHED_BUFFERS);
    hooks
}

/// Runs `f` on every worker of this process, each with the run's interner
/// and failure state: a worker's error or panic fails the run (the others
/// stop waiting), and its dataflows are dropped. In a cluster, a panic ends
/// the process with `skipflow: error: ...; {epilogue}`. Returns what every
/// worker returned, or `None` when the run failed (the first failure is in
/// `abort`).
pub fn run_workers<T, F>(
    topology: &Topology,
    workers: usize,
    interner: &std::sync::Arc<crate::intern::Interner>,
    abort: &std::sync::Arc<crate::error::Abort>,
    epilogue: &str,
    f: F,
) -> Result<Option<Vec<T>>>
where
    T: Send + 'static,
    F: Fn(&mut timely::worker::Worker) -> Result<T> + Send + Sync + 'static,
{
    crate::error::install_panic_hook();
    if matches!(topology, Topology::Cluster { .. }) {
        crate::error::exit_on_panic(epilogue);
        crate::memory::return_large_blocks();
    }
    let _trimmer = crate::memory::Trimmer::start();
    let (i, a) = (interner.clone(), abort.clone());
    let guards = execute(topology, workers, move |worker| {
        crate::intern::enter(&i);
        a.enter(worker.index());
        let r = f(worker);
        if let Err(e) = &r {
            // The others stop waiting for this one (mailboxes and progress give up).
            a.fail(format!("{e:#}"));
            crate::dataflow::abandon(worker);
        }
        r.map_err(|e| format!("{e:#}"))
    })?;
    Ok(join(guards, abort, topology))
}

/// Waits for this process's workers. In a cluster, a failed run does not
/// wait for timely's network threads (they wait on peers that are waiting on
/// us): the failure is returned at once and the threads are left to the
/// process's exit, which closes the connections and ends the peers too.
/// `None`: the run failed (the first failure is in `abort`).
fn join<T: Send + 'static>(
    guards: timely::communication::WorkerGuards<std::result::Result<T, String>>,
    abort: &crate::error::Abort,
    topology: &Topology,
) -> Option<Vec<T>> {
    let clustered = matches!(topology, Topology::Cluster { .. });
    let mut since: Option<std::time::Instant> = None;
    while !guards.guards().iter().all(|g| g.is_finished()) {
        if clustered && abort.is_set() {
            // Local workers check the abort and return; give them a moment.
            let t = *since.get_or_insert_with(std::time::Instant::now);
            if t.elapsed() > std::time::Duration::from_secs(2) {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    if clustered && abort.is_set() {
        std::mem::forget(guards);
        return None;
    }
    let mut out = Vec::new();
    for r in guards.join() {
        match r {
            Ok(Ok(v)) => out.push(v),
            _ => return None,
        }
    }
    (!abort.is_set()).then_some(out)
}

fn number(flag: &str, v: &str) -> Result<usize> {
    v.parse()
        .map_err(|_| bad(format!("cluster option {flag} {v:?}: expected a number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn timely_arguments_after_the_separator() {
        assert_eq!(Topology::parse(&[]).unwrap(), Topology::Process);
        let t = Topology::parse(&args("-n 3 -p 2")).unwrap();
        assert_eq!(
            t,
            Topology::Cluster {
                index: 2,
                addresses: vec![
                    "localhost:2101".into(),
                    "localhost:2102".into(),
                    "localhost:2103".into()
                ]
            }
        );
        assert_eq!(t.lock_name(), "lock.p2");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hosts");
        std::fs::write(&f, "a:1\n\nb:2\n").unwrap();
        let t = Topology::parse(&args(&format!("-n 2 -p 0 -h {}", f.display()))).unwrap();
        assert_eq!(t.processes(), 2);
        assert_eq!(t.lock_name(), "lock");
        for bad in ["-n 2 -p 2", "-n 3 -h /nonexistent", "-w 4", "-x", "-n"] {
            let e = Topology::parse(&args(bad)).unwrap_err();
            assert!(e.downcast_ref::<crate::error::ConfigError>().is_some(), "{bad}");
        }
    }
}
