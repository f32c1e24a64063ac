//! Partitions added to a topic while a continuous run follows it: a thread
//! asks the broker for the topic's partitions every interval and keeps, per
//! partition, the log start it had when first seen (where its reading
//! starts). The workers look at the list now and then and take the new
//! partitions they own. A process-local cache: every process of a cluster
//! runs its own, and a partition's owner is decided by its number.

use super::KafkaInput;
use rdkafka::consumer::Consumer;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Discovery {
    known: Arc<Mutex<BTreeMap<i32, i64>>>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Discovery {
    /// Starts watching the topic; `initial` are the partitions read already.
    pub fn start(input: &KafkaInput, initial: BTreeMap<i32, i64>, every: Duration) -> Discovery {
        let known = Arc::new(Mutex::new(initial));
        let stop = Arc::new(AtomicBool::new(false));
        let (k, s, input) = (known.clone(), stop.clone(), input.clone());
        let handle = std::thread::Builder::new()
            .name("skipflow:discovery".into())
            .spawn(move || watch(&input, &k, &s, every))
            .ok();
        Discovery { known, stop, handle }
    }

    /// Every partition seen, with the log start it had when first seen.
    pub fn partitions(&self) -> BTreeMap<i32, i64> {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn watch(input: &KafkaInput, known: &Mutex<BTreeMap<i32, i64>>, stop: &AtomicBool, every: Duration) {
    let Ok(consumer) = input.consumer() else { return };
    consumer.context().errors.silent.store(true, Ordering::Relaxed);
    let mut last = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
        if last.elapsed() < every {
            continue;
        }
        last = Instant::now();
        // Errors here are the readers' to report; this only looks for news.
        let Ok(parts) = super::topic_partitions(&consumer, input) else {
            continue;
        };
        let new: Vec<i32> = {
            let k = known.lock().unwrap_or_else(|e| e.into_inner());
            parts.into_iter().filter(|p| !k.contains_key(p)).collect()
        };
        for p in new {
            if let Ok((low, _)) = consumer.fetch_watermarks(&input.topic, p, Duration::from_secs(5)) {
                tracing::info!(topic = %input.topic, partition = p, log_start = low, "partition added to the topic");
                known.lock().unwrap_or_else(|e| e.into_inner()).insert(p, low);
            }
        }
    }
}
