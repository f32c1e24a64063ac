//! Handing freed heap memory back to the system while a run works.
//!
//! glibc keeps what is freed inside its arenas for reuse, and returns it to
//! the system only from the top of an arena. A run frees in bursts (batches
//! merged, the listens trace dropped, exchange buffers consumed) and
//! allocates again at once, mostly in timely's 8 KiB containers, so freed
//! memory scattered through the arenas stays resident and counts in the
//! peak. [`Trimmer`] asks glibc every [`PERIOD`] to return the arenas' whole
//! free pages (`malloc_trim`; checking first how much is free, with
//! `mallinfo2`, walks the same free lists and cost more than it saved).
//! Measured against `SKIPFLOW_MALLOC_TRIM=off`, which turns it off: batch
//! peak RSS 0.91x at 1.065x the wall time, continuous peak 0.84x at 1.07x
//! the CPU (README, "Performance").

use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::time::Duration;

/// How often free pages are returned.
pub const PERIOD: Duration = Duration::from_millis(250);

/// The background thread that returns free heap memory; stops when dropped.
pub struct Trimmer {
    stop: Option<Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Trimmer {
    /// Starts the thread (glibc on Linux, unless `SKIPFLOW_MALLOC_TRIM=off`).
    pub fn start() -> Trimmer {
        let (stop, stopped) = channel::<()>();
        let enabled = cfg!(all(target_os = "linux", target_env = "gnu"))
            && std::env::var("SKIPFLOW_MALLOC_TRIM").map_or(true, |v| v != "off");
        let thread = enabled.then(|| {
            std::thread::Builder::new()
                .name("skipflow-trim".into())
                .spawn(move || {
                    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(PERIOD) {
                        trim();
                    }
                })
                .expect("starting the memory trimmer thread")
        });
        Trimmer {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for Trimmer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes malloc's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Between processes, exchanges move bytes through timely's 1 MiB network
/// buffers, which live briefly. glibc raises its mmap threshold each time
/// such a block is freed, and from then on keeps freed blocks resident. A
/// fixed threshold (glibc's initial 128 KiB) hands them back when they are
/// freed: a process of three peaks 0.97x (419 vs 431 MB, 3 alternated runs;
/// 0.75-0.8x when partition shares still crossed as messages of tens of
/// MB). One process keeps the default: there it cost 3-4% of speed and
/// saved nothing.
pub fn return_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt sets a malloc parameter under malloc's own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trimmer_stops_when_dropped() {
        let t = Trimmer::start();
        std::thread::sleep(PERIOD * 2);
        drop(t); // joins the thread: a trimmer that ignored the stop would hang here
    }
}
