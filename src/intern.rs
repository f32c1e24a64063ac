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
//!
//! **Across processes** (cluster mode) ids mean nothing: each process interns
//! in its own order. So the dataflow carries [`Name`]s and [`EventKey`]s,
//! whose ids are process-local but whose identity is their string:
//! - an exchange routes them by a fixed-seed hash of the string (their
//!   `Hash`), so the same string reaches the same worker from every process;
//! - serialized (only when a record goes to another process) a name is its
//!   string and an event key its stored form (a function of the string),
//!   and the receiving process interns it on arrival.
//!
//! Both need the interner of the worker thread they are on ([`enter`]).
//! Exact by construction: no two strings are ever merged, and no output
//! depends on which process saw a string first.

use ahash::RandomState;
use dashmap::DashMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

/// An interned string: dense, exact, process-local.
pub type Id = u32;

thread_local! {
    static CURRENT: RefCell<Option<Arc<Interner>>> = const { RefCell::new(None) };
    /// The event-id tables this thread used last (no shared lock per event).
    static DAYS: RefCell<HashMap<i32, EventIds>> = RefCell::new(HashMap::new());
}

/// Makes `i` the interner of this (worker) thread's names and event keys.
pub fn enter(i: &Arc<Interner>) {
    CURRENT.with(|c| *c.borrow_mut() = Some(i.clone()));
    DAYS.with(|d| d.borrow_mut().clear());
}

fn with<R>(f: impl FnOnce(&Interner) -> R) -> R {
    CURRENT.with(|c| {
        let c = c.borrow();
        f(c.as_ref()
            .expect("an id used outside a worker thread (intern::enter was not called)"))
    })
}

/// Calls `f` with the event-id table of `day` of this thread's interner
/// (from the thread's cache: no shared lock, no reference count per event).
fn with_event_ids<R>(day: i32, f: impl FnOnce(&EventIds) -> R) -> R {
    DAYS.with(|d| {
        let mut d = d.borrow_mut();
        f(d.entry(day).or_insert_with(|| with(|i| i.event_day(day))))
    })
}

/// Forgets this thread's cached event-id tables (after days were released).
pub fn forget_days() {
    DAYS.with(|d| d.borrow_mut().clear());
}

/// A user, track or artist id, or a source name: a process-local id whose
/// identity across processes is its string (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Name(pub Id);

impl Name {
    /// Interns `s` with this thread's interner.
    pub fn of(s: &str) -> Name {
        Name(with(|i| i.name(s)))
    }
}

/// Test hook: `SKIPFLOW_ROUTE_HASH=constant` gives every name and event key
/// the same routing hash (every string collides), to show that routing
/// decides only where a key is processed, never which strings are equal.
fn constant_route() -> bool {
    static C: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *C.get_or_init(|| std::env::var("SKIPFLOW_ROUTE_HASH").is_ok_and(|v| v == "constant"))
}

impl Hash for Name {
    /// The string's bytes: exchanges route by content, the same in every process.
    fn hash<H: Hasher>(&self, h: &mut H) {
        if constant_route() {
            return;
        }
        with(|i| i.resolve(self.0).hash(h))
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        with(|i| s.serialize_str(i.resolve(self.0)))
    }
}

struct NameVisitor;

impl serde::de::Visitor<'_> for NameVisitor {
    type Value = Name;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an id string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Name, E> {
        Ok(Name::of(v))
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        d.deserialize_str(NameVisitor)
    }
}

/// An event id within its UTC day (duplicates are same-day): the key of
/// de-duplication. Process-local like [`Name`], its identity is (day, string).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventKey {
    pub day: i32,
    pub eid: Id,
}

impl EventKey {
    /// Interns the event id `s` of `day` with this thread's interner.
    pub fn of(day: i32, s: &str) -> EventKey {
        EventKey {
            day,
            eid: with_event_ids(day, |ids| ids.intern(s)),
        }
    }

    /// The event id's string.
    pub fn resolve(&self) -> String {
        with_event_ids(self.day, |ids| ids.resolve(self.eid))
    }
}

impl Hash for EventKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        if constant_route() {
            return;
        }
        self.day.hash(h);
        // The stored form is a function of the string: the same in every process.
        with_event_ids(self.day, |ids| ids.0.with_stored(self.eid, |s| s.hash(h)));
    }
}

/// Serialized as (day, stored form): the stored form is a function of the
/// string (16 bytes for a 32-digit hex id, not 32), so a receiver interns
/// it as it is, and neither side copies the string out.
impl Serialize for EventKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        with_event_ids(self.day, |ids| {
            ids.0.with_stored(self.eid, |(packed, b)| {
                let mut t = s.serialize_tuple(3)?;
                t.serialize_element(&self.day)?;
                t.serialize_element(&packed)?;
                t.serialize_element(&StoredBytes(b))?;
                t.end()
            })
        })
    }
}

struct StoredBytes<'a>(&'a [u8]);

impl Serialize for StoredBytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<'de> Deserialize<'de> for EventKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EventKey, D::Error> {
        d.deserialize_tuple(3, EventKeyVisitor)
    }
}

struct EventKeyVisitor;

impl<'de> serde::de::Visitor<'de> for EventKeyVisitor {
    type Value = EventKey;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an event key: day, packed, stored bytes")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<EventKey, A::Error> {
        use serde::de::Error;
        let day: i32 = seq.next_element()?.ok_or_else(|| A::Error::invalid_length(0, &self))?;
        let packed: bool = seq.next_element()?.ok_or_else(|| A::Error::invalid_length(1, &self))?;
        let eid = seq
            .next_element_seed(InternStored { day, packed })?
            .ok_or_else(|| A::Error::invalid_length(2, &self))?;
        Ok(EventKey { day, eid })
    }
}

/// Interns stored bytes as they are read (borrowed or not: no copy).
struct InternStored {
    day: i32,
    packed: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for InternStored {
    type Value = Id;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Id, D::Error> {
        d.deserialize_bytes(self)
    }
}

impl<'de> serde::de::Visitor<'de> for InternStored {
    type Value = Id;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("the stored bytes of an event id")
    }
    /// Formats without a bytes type (JSON) write a sequence of numbers.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Id, A::Error> {
        let (mut buf, mut n) = ([0u8; 128], 0);
        while let Some(x) = seq.next_element::<u8>()? {
            *buf.get_mut(n)
                .ok_or_else(|| serde::de::Error::custom("an event id over 127 bytes"))? = x;
            n += 1;
        }
        self.visit_bytes(&buf[..n])
    }
    /// A string sent unpacked is packed here if it can be: exactness does
    /// not rest on the sender (one string, one stored form, one id).
    fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Id, E> {
        if b.len() >= 128 || (self.packed && b.is_empty()) {
            return Err(E::custom("not the stored form of an event id"));
        }
        let mut buf = [0u8; 64];
        let key = if self.packed { (true, b) } else { encode(b, &mut buf) };
        Ok(with_event_ids(self.day, |ids| ids.0.intern_stored(key)))
    }
}

/// A concurrent interner: a sharded map finds a string's id, an append-only
/// vector resolves an id without locks. Strings of up to 22 bytes (most
/// ids) sit inline in the map's entries and the vector's slots, so finding
/// one compares bytes in the entry instead of following a pointer.
#[derive(Default)]
pub struct Rodeo {
    ids: DashMap<NameStr, Id, RandomState>,
    strings: boxcar::Vec<NameStr>,
}

impl Rodeo {
    pub fn get_or_intern(&self, s: &str) -> Id {
        if let Some(id) = self.ids.get(s) {
            return *id;
        }
        let key = NameStr::new(s);
        *self.ids.entry(key.clone()).or_insert_with(|| {
            let i = self.strings.push(key);
            Id::try_from(i).expect("fewer than 2^32 distinct ids")
        })
    }
    pub fn resolve(&self, id: Id) -> &str {
        self.strings[id as usize].as_str()
    }
    pub fn len(&self) -> usize {
        self.strings.count()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A name's string: inline up to [`INLINE`] bytes, else shared on the heap
/// (24 bytes either way).
#[derive(Clone)]
enum NameStr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Arc<str>),
}

const INLINE: usize = 22;

impl NameStr {
    fn new(s: &str) -> NameStr {
        if s.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            NameStr::Inline {
                len: s.len() as u8,
                bytes,
            }
        } else {
            NameStr::Heap(Arc::from(s))
        }
    }
    fn as_str(&self) -> &str {
        match self {
            // SAFETY: the bytes were copied whole from a `&str` (`new`).
            NameStr::Inline { len, bytes } => unsafe { std::str::from_utf8_unchecked(&bytes[..*len as usize]) },
            NameStr::Heap(s) => s,
        }
    }
}

impl std::borrow::Borrow<str> for NameStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl std::hash::Hash for NameStr {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_str().hash(h)
    }
}

impl PartialEq for NameStr {
    fn eq(&self, other: &NameStr) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for NameStr {}

fn new_rodeo() -> Rodeo {
    Rodeo::default()
}

const SHARDS: usize = 16;
const CHUNK: usize = 1 << 20;

/// A compact concurrent interner for the many short-lived event ids: bytes
/// in 1 MiB chunks, a hash table of indices, 16 locked shards. An id of
/// lowercase hex digits and even length (hex digests, as most producers
/// write) is stored two digits a byte, marked in its length byte; any other
/// string as it is. The stored form is a function of the string, so
/// comparing stored forms compares strings. A 32-digit id takes a 16-byte
/// slot and its table entry: about 22 bytes (30 with a location word).
pub struct CompactStrings {
    shards: Vec<std::sync::Mutex<Shard>>,
    hasher: RandomState,
}

/// One shard's strings. Ids packed to exactly 16 bytes (32 hex digits, the
/// common case) sit in fixed 16-byte slots; any other string sits in `chunks`
/// with a location in `locs`. The table holds entries: slot or location
/// index, shifted, and the store (low bit: 1 = fixed).
struct Shard {
    /// `None` once sealed: ids resolve, nothing new is interned.
    table: Option<hashbrown::HashTable<u32>>,
    strings: Stored,
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            table: Some(Default::default()),
            strings: Default::default(),
        }
    }
}

/// The stored forms of one shard.
#[derive(Default)]
struct Stored {
    /// chunk (24 bits) | offset (32 bits) | packed (1 bit) | length (7 bits) of each string.
    locs: Vec<u64>,
    chunks: Vec<Vec<u8>>,
    /// 16-byte packed ids, [`SLOTS`] a chunk.
    fixed: Vec<Vec<[u8; 16]>>,
}

/// Fixed slots per chunk (1 MiB; 16 KiB in tests, so that a test's ids
/// cross many chunk ends).
const SLOTS: usize = if cfg!(test) { 1 << 10 } else { 1 << 16 };

impl Stored {
    /// Number of stored forms.
    fn len(&self) -> usize {
        self.locs.len() + self.fixed.iter().map(Vec::len).sum::<usize>()
    }

    /// The stored form of an entry.
    fn get(&self, entry: u32) -> (bool, &[u8]) {
        let i = (entry >> 1) as usize;
        if entry & 1 == 1 {
            (true, &self.fixed[i / SLOTS][i % SLOTS][..])
        } else {
            get(&self.chunks, self.locs[i])
        }
    }

    /// Stores a new stored form; returns its entry.
    fn push(&mut self, (packed, b): (bool, &[u8])) -> u32 {
        if packed && b.len() == 16 {
            let i = self.fixed.len().saturating_sub(1) * SLOTS + self.fixed.last().map_or(0, Vec::len);
            if i.is_multiple_of(SLOTS) {
                self.fixed.push(Vec::with_capacity(SLOTS));
            }
            self.fixed
                .last_mut()
                .expect("a chunk")
                .push(b.try_into().expect("16 bytes"));
            return entry(i, true);
        }
        if self.chunks.last().is_none_or(|c| c.len() + b.len() > CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let c = self.chunks.len() - 1;
        let off = self.chunks[c].len();
        self.chunks[c].extend_from_slice(b);
        let i = self.locs.len();
        let flag = if packed { PACKED } else { 0 };
        self.locs
            .push(((c as u64) << 40) | ((off as u64) << 8) | flag | b.len() as u64);
        entry(i, false)
    }
}

/// A table entry: index and store.
fn entry(i: usize, fixed: bool) -> u32 {
    assert!(i < 1 << 27, "too many event ids in one day");
    ((i as u32) << 1) | fixed as u32
}

const PACKED: u64 = 0x80;

/// The stored form of `s` in `buf`: (packed, bytes).
fn encode<'a>(s: &'a [u8], buf: &'a mut [u8; 64]) -> (bool, &'a [u8]) {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    if s.is_empty() || s.len() % 2 == 1 || s.len() > 128 {
        return (false, s);
    }
    for (i, pair) in s.chunks_exact(2).enumerate() {
        match (digit(pair[0]), digit(pair[1])) {
            (Some(hi), Some(lo)) => buf[i] = (hi << 4) | lo,
            _ => return (false, s),
        }
    }
    (true, &buf[..s.len() / 2])
}

/// The string of a stored form, in `buf`.
fn decode<'a>(packed: bool, b: &'a [u8], buf: &'a mut [u8; 128]) -> &'a [u8] {
    if !packed {
        return b;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, x) in b.iter().enumerate() {
        buf[2 * i] = HEX[(x >> 4) as usize];
        buf[2 * i + 1] = HEX[(x & 0xf) as usize];
    }
    &buf[..2 * b.len()]
}

fn get(chunks: &[Vec<u8>], loc: u64) -> (bool, &[u8]) {
    let (c, off, len) = (
        (loc >> 40) as usize,
        ((loc >> 8) & 0xffff_ffff) as usize,
        (loc & 0x7f) as usize,
    );
    (loc & PACKED != 0, &chunks[c][off..off + len])
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
    /// Interns a string of at most 127 bytes (event ids have at most 64).
    /// The id is the shard's entry (index and store) and the shard.
    pub fn intern(&self, s: &str) -> Id {
        let mut buf = [0u8; 64];
        self.intern_stored(encode(s.as_bytes(), &mut buf))
    }

    /// Interns a string given in its stored form (as [`encode`] makes it).
    fn intern_stored(&self, key: (bool, &[u8])) -> Id {
        assert!(key.1.len() < 128, "compact strings hold at most 127 bytes");
        let h = self.hasher.hash_one(key);
        let shard = (h as usize) % SHARDS;
        let mut guard = self.shards[shard].lock().expect("interner shard");
        let Shard { table, strings } = &mut *guard;
        let table = table
            .as_mut()
            .expect("an event id interned after its day's table was sealed");
        if let Some(&e) = table.find(h, |&e| strings.get(e) == key) {
            return (e << 4) | shard as u32;
        }
        let e = strings.push(key);
        let hasher = &self.hasher;
        table.insert_unique(h, e, |&j| hasher.hash_one(strings.get(j)));
        (e << 4) | shard as u32
    }

    /// Number of strings held.
    pub fn count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("interner shard").strings.len())
            .sum()
    }

    /// Drops the lookup table (about 10 bytes per id): every id still
    /// resolves, and interning a string afterwards panics (a bug: it could
    /// give a string a second id).
    pub fn seal(&self) {
        for s in &self.shards {
            s.lock().expect("interner shard").table = None;
        }
    }

    /// The string of an id (copied out of the shard).
    pub fn resolve(&self, id: Id) -> String {
        self.with_bytes(id, |b| String::from_utf8_lossy(b).into_owned())
    }

    /// Calls `f` with the stored form of an id (packed or not, and its bytes).
    pub fn with_stored<R>(&self, id: Id, f: impl FnOnce((bool, &[u8])) -> R) -> R {
        let guard = self.shards[(id & 0xf) as usize].lock().expect("interner shard");
        f(guard.strings.get(id >> 4))
    }

    /// Calls `f` with the bytes of an id's string.
    pub fn with_bytes<R>(&self, id: Id, f: impl FnOnce(&[u8]) -> R) -> R {
        let guard = self.shards[(id & 0xf) as usize].lock().expect("interner shard");
        let (packed, b) = guard.strings.get(id >> 4);
        let mut buf = [0u8; 128];
        f(decode(packed, b, &mut buf))
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

    /// Number of event ids held (all days).
    pub fn event_ids_len(&self) -> usize {
        let days = self.events.read().expect("interner lock");
        days.values().map(|c| c.count()).sum()
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

    /// Seals every day's event ids ([`CompactStrings::seal`]): once no
    /// event id can reach this process any more (a batch of one process
    /// whose workers have all read their input), the ids resolve as before
    /// and their lookup tables are freed.
    pub fn seal_event_ids(&self) {
        for c in self.events.read().expect("interner lock").values() {
            c.seal();
        }
        tracing::info!(ids = self.event_ids_len(), "event ids sealed");
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Names short and long, at and around the inline limit, multibyte
    /// included, get one id each and resolve to themselves; a slot is 24 bytes.
    #[test]
    fn names_inline_and_on_the_heap_resolve_to_themselves() {
        assert_eq!(std::mem::size_of::<NameStr>(), 24);
        let r = Rodeo::default();
        let names: Vec<String> = [
            "",
            "a",
            "é",
            "u1xyw71acej",
            &"x".repeat(21),
            &"x".repeat(22),
            &"x".repeat(23),
            &"é".repeat(12),
        ]
        .iter()
        .map(|s| s.to_string())
        .chain((0..1000).map(|i| format!("name-{i}-{}", "y".repeat(i % 30))))
        .collect();
        let ids: Vec<Id> = names.iter().map(|n| r.get_or_intern(n)).collect();
        for (n, id) in names.iter().zip(&ids) {
            assert_eq!(r.get_or_intern(n), *id, "{n}: a second id");
            assert_eq!(r.resolve(*id), n);
        }
        let distinct: std::collections::HashSet<&Id> = ids.iter().collect();
        assert_eq!(distinct.len(), names.len());
        assert_eq!(r.len(), names.len());
    }

    /// An event key crosses to another process as its stored form: the
    /// receiver (another interner, other ids) gets the same string, for
    /// packed hex ids and any other string alike, through bincode (timely's
    /// format) and JSON.
    #[test]
    fn event_keys_cross_interners_as_their_stored_form() {
        let (a, b) = (Interner::new(), Interner::new());
        let forms = [
            "6d9b02a4931cd26fc10af8d4548cd09e",
            "00FF",
            "abc",
            "ab",
            "",
            "é-1",
            &"f".repeat(126),
        ];
        enter(&a);
        // Other ids first in the sender, so that ids differ between the two.
        for k in 0..50 {
            EventKey::of(7, &format!("{k:02x}"));
        }
        let sent: Vec<(Vec<u8>, String)> = forms
            .iter()
            .map(|f| {
                let k = EventKey::of(7, f);
                (bincode::serialize(&k).unwrap(), serde_json::to_string(&k).unwrap())
            })
            .collect();
        let short = bincode::serialize(&EventKey::of(7, forms[0])).unwrap().len();
        assert_eq!(short, 4 + 1 + 8 + 16, "a 32-digit hex id crosses as 16 bytes");
        enter(&b);
        for (f, (bin, json)) in forms.iter().zip(&sent) {
            let k: EventKey = bincode::deserialize(bin).unwrap();
            assert_eq!((k.day, k.resolve().as_str()), (7, *f));
            let j: EventKey = serde_json::from_str(json).unwrap();
            assert_eq!(j, k);
        }
        assert_eq!(b.event_ids_len(), forms.len(), "each string once, none merged");
        // A hex id sent unpacked is the same id as the packed one.
        let unpacked = bincode::serialize(&(7i32, false, StoredBytes(forms[0].as_bytes()))).unwrap();
        let k: EventKey = bincode::deserialize(&unpacked).unwrap();
        assert_eq!(k, EventKey::of(7, forms[0]));
        assert_eq!(b.event_ids_len(), forms.len());
    }

    /// A sealed day's ids resolve and route as before and are still
    /// counted; interning into it fails loudly rather than give a string a
    /// second id.
    #[test]
    fn sealed_event_ids_resolve_and_refuse_new_ones() {
        let i = Interner::new();
        enter(&i);
        let forms = ["6d9b02a4931cd26fc10af8d4548cd09e", "abc", "é-1", &"f".repeat(126)];
        let keys: Vec<EventKey> = forms.iter().map(|f| EventKey::of(3, f)).collect();
        let hash = |k: &EventKey| ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(k);
        let hashes: Vec<u64> = keys.iter().map(hash).collect();
        i.seal_event_ids();
        assert_eq!(i.event_ids_len(), forms.len());
        for ((k, f), h) in keys.iter().zip(forms).zip(hashes) {
            assert_eq!(k.resolve(), f);
            assert_eq!(hash(k), h);
        }
        let again = std::panic::catch_unwind(|| EventKey::of(3, forms[1]));
        assert!(again.is_err(), "a sealed day interns nothing, not even a known id");
        enter(&i);
        assert_eq!(
            EventKey::of(4, "abc").day,
            4,
            "a day first seen after sealing is not sealed"
        );
    }

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
        // Hex ids are stored packed, others as they are; never merged.
        let forms = [
            "00ff",
            "00FF",
            "0",
            "abc",
            "ab",
            "ab0",
            "g0",
            "",
            "deadbeef",
            "DEADBEEF",
            "dead-beef",
        ];
        let long_hex = "0123456789abcdef".repeat(8);
        let ids: Vec<Id> = forms
            .iter()
            .copied()
            .chain([long_hex.as_str()])
            .map(|s| d1.intern(s))
            .collect();
        for (k, s) in forms.iter().copied().chain([long_hex.as_str()]).enumerate() {
            assert_eq!(d1.resolve(ids[k]), s);
            assert_eq!(d1.intern(s), ids[k]);
            assert!(ids[..k].iter().all(|&o| o != ids[k]), "{s} shares an id");
        }
        assert_eq!(d1.resolve(x), "x");
        assert_eq!(i.event_day(1).intern("x"), x);
        // 32-digit hex ids (16-byte slots) beside other ids in the same
        // shards, past many slot chunks' ends: exact both ways.
        let d3 = i.event_day(3);
        let all: Vec<String> = (0..1_200_000u64)
            .map(|k| match k % 3 {
                0 => format!("{:032x}", k.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                1 => format!("{:030x}", k),
                _ => format!("{:032X}", k),
            })
            .collect();
        let ids: Vec<Id> = all.iter().map(|s| d3.intern(s)).collect();
        let distinct: std::collections::HashSet<Id> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), all.len(), "two ids share an id");
        for (s, &id) in all.iter().zip(&ids).step_by(7) {
            assert_eq!(&d3.resolve(id), s);
            assert_eq!(d3.intern(s), id);
        }
        assert_eq!(d3.0.count(), all.len());
        i.release_day(3);
        let _ = d2.intern("y");
        i.release_day(1);
        assert_eq!(i.event_days(), 1);
    }
}
