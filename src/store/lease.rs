//! The lock of an object-store output: a lease, the object
//! `.skipflow/<name>` holding `{holder, expires_ms}`.
//!
//! - Taken by a put that succeeds only if the object is absent; a lease
//!   whose `expires_ms` has passed is taken over by a put conditional on the
//!   version just read (two contenders: one wins, the other sees a live lease).
//! - Renewed by its holder every third of the lease with a put conditional
//!   on the version it wrote last; a renewal refused means another run took
//!   over: the lease is lost.
//! - Before publishing, the holder checks it: lost, or not renewed for long
//!   enough that it may have expired (a long pause, a partition from the
//!   store), and nothing is published. The holder stops a sixth of the lease
//!   before the expiry a standby waits for, which also covers that much clock
//!   skew between their hosts.
//! - Released on exit by writing it expired (conditional on its version).

use super::object::Bucket;
use super::{LockMode, Locked};
use anyhow::{anyhow, Result};
use object_store::{PutMode, UpdateVersion};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The lease duration when the job file's `[storage]` table says none.
pub const LEASE_DEFAULT: Duration = Duration::from_secs(30);

#[derive(Serialize, Deserialize)]
struct Record {
    holder: String,
    expires_ms: i64,
}

struct State {
    /// Until when the lease is surely ours (monotonic clock).
    valid_until: Mutex<Instant>,
    version: Mutex<UpdateVersion>,
    /// Why the lease was lost, once it was.
    lost: Mutex<Option<String>>,
}

/// A held lease, renewed in a thread until dropped.
pub struct Lease {
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    store: super::Store,
    key: String,
    holder: String,
    length: Duration,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn bucket(store: &super::Store) -> &Bucket {
    match &*store.backend {
        super::Backend::Object(b) => b,
        super::Backend::Local(_) => unreachable!("a lease on a local directory"),
    }
}

impl Lease {
    /// Takes the lease `name` of `b`'s output, failing at once while another
    /// run holds a live one, or waiting for it to end (`LockMode::Wait`).
    pub(super) fn acquire(store: super::Store, name: &str, mode: LockMode, length: Duration) -> Result<Lease> {
        let b = bucket(&store);
        let key = format!(".skipflow/{name}");
        let holder = format!(
            "{} pid {} at {}",
            hostname(),
            std::process::id(),
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        );
        let mut said = false;
        loop {
            let started = Instant::now();
            let record = serde_json::to_vec(&Record {
                holder: holder.clone(),
                expires_ms: now_ms() + length.as_millis() as i64,
            })?;
            let taken = match b.put(&key, &record, PutMode::Create) {
                Ok(v) => Some(v),
                Err(object_store::Error::AlreadyExists { .. }) | Err(object_store::Error::Precondition { .. }) => {
                    match b.read_versioned(&key)? {
                        None => continue, // released meanwhile
                        Some((bytes, v)) => {
                            let other: Option<Record> = serde_json::from_slice(&bytes).ok();
                            match other {
                                Some(o) if o.expires_ms > now_ms() => {
                                    if mode == LockMode::Fail {
                                        let left = (o.expires_ms - now_ms()) as f64 / 1000.0;
                                        return Err(Locked {
                                            dir: b.url.clone(),
                                            holder: format!(" ({}; its lease runs {left:.0} s more)", o.holder),
                                        }
                                        .into());
                                    }
                                    if !said {
                                        said = true;
                                        tracing::warn!(
                                            holder = %o.holder,
                                            "standby: {} is held by another run; waiting to take over",
                                            b.url
                                        );
                                    }
                                    None
                                }
                                _ => match b.put(&key, &record, PutMode::Update(v)) {
                                    Ok(v) => {
                                        tracing::info!("took over the expired lease of {}", b.url);
                                        Some(v)
                                    }
                                    Err(object_store::Error::Precondition { .. }) => None,
                                    Err(e) => return Err(anyhow!("taking the lease of {}: {e}", b.url)),
                                },
                            }
                        }
                    }
                }
                Err(e) => return Err(anyhow!("taking the lease of {}: {e}", b.url)),
            };
            if let Some(version) = taken {
                return Ok(Lease::hold(store, key, holder, version, started, length));
            }
            std::thread::sleep((length / 4).min(Duration::from_secs(1)));
        }
    }

    fn hold(
        store: super::Store,
        key: String,
        holder: String,
        v: UpdateVersion,
        at: Instant,
        length: Duration,
    ) -> Lease {
        let state = Arc::new(State {
            valid_until: Mutex::new(at + length),
            version: Mutex::new(v),
            lost: Mutex::new(None),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop, store, key, holder) =
                (state.clone(), stop.clone(), store.clone(), key.clone(), holder.clone());
            std::thread::Builder::new()
                .name("skipflow:lease".into())
                .spawn(move || renew(&store, &key, &holder, &state, &stop, length))
                .ok()
        };
        Lease {
            state,
            stop,
            thread,
            store,
            key,
            holder,
            length,
        }
    }

    /// `Err` when the lease is lost or may have expired: publish nothing.
    pub fn check(&self) -> Result<()> {
        if let Some(why) = self.state.lost.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            anyhow::bail!("{why}");
        }
        let until = *self.state.valid_until.lock().unwrap_or_else(|e| e.into_inner());
        if Instant::now() + self.length / 6 > until {
            anyhow::bail!(
                "the lease on {} was not renewed in time (a pause or the store unreachable for over {:?}); \
                 another run may take over, so this one stops without publishing",
                bucket(&self.store).url,
                self.length * 2 / 3
            );
        }
        Ok(())
    }
}

/// Renews the lease every third of its length until stopped or lost.
fn renew(store: &super::Store, key: &str, holder: &str, state: &State, stop: &AtomicBool, length: Duration) {
    let b = bucket(store);
    let mut last = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
        if last.elapsed() < length / 3 {
            continue;
        }
        last = Instant::now();
        let started = Instant::now();
        let record = match serde_json::to_vec(&Record {
            holder: holder.to_string(),
            expires_ms: now_ms() + length.as_millis() as i64,
        }) {
            Ok(r) => r,
            Err(_) => continue,
        };
        let v = state.version.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match b.put(key, &record, PutMode::Update(v)) {
            Ok(v) => {
                *state.version.lock().unwrap_or_else(|e| e.into_inner()) = v;
                *state.valid_until.lock().unwrap_or_else(|e| e.into_inner()) = started + length;
            }
            Err(object_store::Error::Precondition { .. }) => {
                *state.lost.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
                    "another run took over the lease on {}; this one stops without publishing",
                    b.url
                ));
                return;
            }
            Err(e) => tracing::warn!("renewing the lease on {}: {e}; retrying", b.url),
        }
    }
}

impl Drop for Lease {
    /// Writes the lease expired (if it is still ours), so a standby takes over at once.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if self.state.lost.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
            return;
        }
        let v = self.state.version.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Ok(record) = serde_json::to_vec(&Record {
            holder: self.holder.clone(),
            expires_ms: 0,
        }) {
            let _ = bucket(&self.store).put(&self.key, &record, PutMode::Update(v));
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
