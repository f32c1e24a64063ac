//! Interning: every id string becomes a dense `u32` once, at decode time.
//!
//! The dataflow moves and compares these small ids only; a string is looked up
//! again only where the spec orders by bytes (ties, minimums, output sorting).
//! Interning is exact: two different strings never share an id (the hash only
//! finds the bucket, the bytes decide). One interner is shared by all worker
//! threads of a process.
//!
//! User, track and artist ids live in one process-wide table (catalogs are
//! bounded). Event ids only matter within their UTC day (duplicates are
//! same-day), so they live in one table per day, released with the day.

use ahash::RandomState;
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// An interned string: dense, exact, process-local.
pub type Id = u32;

/// A concurrent interner: a sharded map finds a string's id, an append-only
/// vector resolves an id without locks.
#[derive(Default)]
pub struct Rodeo {
    ids: DashMap<Arc<str>, Id, RandomState>,
    strings: boxcar::Vec<Arc<str>>,
}

impl Rodeo {
    pub fn get_or_intern(&self, s: &str) -> Id {
        if let Some(id) = self.ids.get(s) {
            return *id;
        }
        let key: Arc<str> = Arc::from(s);
        *self.ids.entry(key.clone()).or_insert_with(|| {
            let i = self.strings.push(key);
            Id::try_from(i).expect("fewer than 2^32 distinct ids")
        })
    }
    pub fn resolve(&self, id: Id) -> &str {
        &self.strings[id as usize]
    }
    pub fn len(&self) -> usize {
        self.strings.count()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn new_rodeo() -> Rodeo {
    Rodeo::default()
}

const SHARDS: usize = 16;
const CHUNK: usize = 1 << 20;

/// A compact concurrent interner for the many short-lived event ids: bytes
/// in 1 MiB chunks, a hash table of indices, 16 locked shards. About 45
/// bytes per 36-byte id (the general interner needs about 110).
pub struct CompactStrings {
    shards: Vec<std::sync::Mutex<Shard>>,
    hasher: RandomState,
}

#[derive(Default)]
struct Shard {
    table: hashbrown::HashTable<u32>,
    /// chunk (24 bits) | offset (32 bits) | length (8 bits) of each string.
    locs: Vec<u64>,
    chunks: Vec<Vec<u8>>,
}

fn get(chunks: &[Vec<u8>], loc: u64) -> &[u8] {
    let (c, off, len) = (
        (loc >> 40) as usize,
        ((loc >> 8) & 0xffff_ffff) as usize,
        (loc & 0xff) as usize,
    );
    &chunks[c][off..off + len]
}

impl Default for CompactStrings {
    fn default() -> Self {
        CompactStrings {
            shards: (0..SHARDS).map(|_| Default::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl CompactStrings {
    /// Interns a string of at most 255 bytes (event ids have at most 64).
    pub fn intern(&self, s: &str) -> Id {
        let b = s.as_bytes();
        assert!(b.len() < 256, "compact strings hold at most 255 bytes");
        let h = self.hasher.hash_one(b);
        let shard = (h as usize) % SHARDS;
        let mut guard = self.shards[shard].lock().expect("interner shard");
        let Shard { table, locs, chunks } = &mut *guard;
        if let Some(&i) = table.find(h, |&i| get(chunks, locs[i as usize]) == b) {
            return (i << 4) | shard as u32;
        }
        if chunks.last().is_none_or(|c| c.len() + b.len() > CHUNK) {
            chunks.push(Vec::with_capacity(CHUNK));
        }
        let c = chunks.len() - 1;
        let off = chunks[c].len();
        chunks[c].extend_from_slice(b);
        let i = locs.len() as u32;
        assert!(i < 1 << 28, "too many event ids in one day");
        locs.push(((c as u64) << 40) | ((off as u64) << 8) | b.len() as u64);
        let hasher = &self.hasher;
        table.insert_unique(h, i, |&j| hasher.hash_one(get(chunks, locs[j as usize])));
        (i << 4) | shard as u32
    }

    /// The string of an id (copied out of the shard).
    pub fn resolve(&self, id: Id) -> String {
        let guard = self.shards[(id & 0xf) as usize].lock().expect("interner shard");
        let b = get(&guard.chunks, guard.locs[(id >> 4) as usize]);
        String::from_utf8_lossy(b).into_owned()
    }
}

/// The interners of one process.
pub struct Interner {
    names: Rodeo,
    events: RwLock<HashMap<i32, Arc<CompactStrings>>>,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            names: new_rodeo(),
            events: RwLock::new(HashMap::new()),
        }
    }
}

impl Interner {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Interns a user, track or artist id.
    pub fn name(&self, s: &str) -> Id {
        self.names.get_or_intern(s)
    }

    /// The string of a user, track or artist id.
    pub fn resolve(&self, id: Id) -> &str {
        self.names.resolve(id)
    }

    /// Number of distinct user, track and artist ids.
    pub fn names_len(&self) -> usize {
        self.names.len()
    }

    /// The event-id table of `day`, created on first use.
    pub fn event_day(&self, day: i32) -> EventIds {
        if let Some(r) = self.events.read().expect("interner lock").get(&day) {
            return EventIds(r.clone());
        }
        let mut w = self.events.write().expect("interner lock");
        EventIds(
            w.entry(day)
                .or_insert_with(|| Arc::new(CompactStrings::default()))
                .clone(),
        )
    }

    /// Forgets the event ids of `day` (its state was released).
    pub fn release_day(&self, day: i32) {
        self.events.write().expect("interner lock").remove(&day);
    }

    /// The days holding event ids.
    pub fn event_day_list(&self) -> Vec<i32> {
        self.events.read().expect("interner lock").keys().copied().collect()
    }

    /// Number of days holding event ids.
    pub fn event_days(&self) -> usize {
        self.events.read().expect("interner lock").len()
    }
}

/// The event ids of one day.
#[derive(Clone)]
pub struct EventIds(Arc<CompactStrings>);

impl EventIds {
    pub fn intern(&self, s: &str) -> Id {
        self.0.intern(s)
    }
    pub fn resolve(&self, id: Id) -> String {
        self.0.resolve(id)
    }
}

/// A worker's cache of per-day event-id tables (avoids the shared lock per event).
#[derive(Default)]
pub struct EventIdCache {
    days: HashMap<i32, EventIds>,
}

impl EventIdCache {
    pub fn get(&mut self, interner: &Interner, day: i32) -> &EventIds {
        self.days.entry(day).or_insert_with(|| interner.event_day(day))
    }
    /// Drops cached tables of days the interner released.
    pub fn clear(&mut self) {
        self.days.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_stable() {
        let i = Interner::new();
        let a = i.name("a");
        let b = i.name("b");
        assert_ne!(a, b);
        assert_eq!(i.name("a"), a);
        assert_eq!(i.resolve(b), "b");
        let d1 = i.event_day(1);
        let d2 = i.event_day(2);
        let x = d1.intern("x");
        for k in 0..100_000 {
            let s = format!("event-{k}");
            let id = d2.intern(&s);
            assert_eq!(d2.intern(&s), id);
            assert_eq!(d2.resolve(id), s);
        }
        assert_eq!(d1.resolve(x), "x");
        assert_eq!(i.event_day(1).intern("x"), x);
        let _ = d2.intern("y");
        i.release_day(1);
        assert_eq!(i.event_days(), 1);
    }
}
