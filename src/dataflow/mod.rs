//! The feature dataflows: one definition shared by batch and continuous runs.
//!
//! ```text
//! first (build_daily):
//! listens ((day, event), Listen) --arrange, dedup (smallest per key)--> kept
//! kept --arrange by (day, user)--+--reduce--> user_daily
//!                                +--reduce--> user_track_daily
//!                                +--reduce--> user_artist_daily
//! rejected --arrange by day
//! second (build_profile, imports the daily traces):
//! daily rows (+ prior days from disk) + as-of markers --reduce by user--> user_profile_28d
//! ```
//!
//! Ids are interned `u32`s; wherever the spec orders by bytes (dedup minimum,
//! ties, smallest artist, session order on equal `ts`) strings are resolved
//! through the interner and compared byte-wise.

mod dedup;

use crate::decode::{Reject, MS_PER_DAY};
use crate::intern::{EventKey, Id, Interner, Name};
use crate::schema::Table;
use differential_dataflow::input::{Input, InputSession};
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::implementations::ValSpine;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use timely::dataflow::operators::probe::Handle as ProbeHandle;

pub type Time = u32;
pub type Diff = i32;

/// Session gap: a listen more than this after the previous one starts a session.
pub const SESSION_GAP_MS: i64 = 1_800_000;
/// Early skip threshold.
pub const EARLY_SKIP_MS: u32 = 30_000;
/// Days in the profile window (as-of day included).
pub const WINDOW_DAYS: i32 = 28;
const TOP_N: usize = 10;

type FxMap<K, V> = HashMap<K, V, ahash::RandomState>;
type FxSet<K> = HashSet<K, ahash::RandomState>;

/// `ts` within its day and the event type in one word: milliseconds since
/// midnight shifted left once, the low bit set for a skip. Orders by
/// (`ts`, `event_type`), as the dedup rule does ("play" < "skip").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimeType(u32);

impl TimeType {
    pub fn new(ts: i64, skip: bool) -> TimeType {
        TimeType(((ts.rem_euclid(MS_PER_DAY) as u32) << 1) | skip as u32)
    }
    /// Milliseconds since midnight UTC.
    pub fn ms_of_day(self) -> i64 {
        (self.0 >> 1) as i64
    }
    pub fn skip(self) -> bool {
        self.0 & 1 == 1
    }
    /// The epoch-millisecond `ts` of this time on `day`.
    pub fn ts(self, day: i32) -> i64 {
        day as i64 * MS_PER_DAY + self.ms_of_day()
    }
}

/// A valid event as the dataflow carries it (the key holds day and event
/// id): 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Listen {
    pub time: TimeType,
    pub user: Name,
    pub track: Name,
    pub artist: Name,
    pub ms_played: u32,
    pub duration: u32,
}

impl Listen {
    /// A valid event as dataflow input, keyed by its event key (interned
    /// with the worker thread's interner).
    pub fn keyed(e: &crate::decode::Event<'_>) -> (EventKey, Listen) {
        let l = Listen {
            time: TimeType::new(e.ts, e.skip),
            user: Name::of(&e.user_id),
            track: Name::of(&e.track_id),
            artist: Name::of(&e.artist_id),
            ms_played: e.ms_played as u32,
            duration: e.track_duration_ms as u32,
        };
        (EventKey::of(e.day(), &e.event_id), l)
    }
}

/// A kept listen within its (day, user) group; ordered by `ts` first: 28 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DayListen {
    pub time: TimeType,
    pub ev: EventKey,
    pub track: Name,
    pub artist: Name,
    pub ms_played: u32,
    pub duration: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DailyRow {
    pub listens: i64,
    pub plays: i64,
    pub skips: i64,
    pub early_skips: i64,
    pub ms_played: i64,
    pub sum_min: i64,
    pub sum_duration: i64,
    pub distinct_tracks: i64,
    pub distinct_artists: i64,
    pub sessions: i64,
    pub longest_session: i64,
    pub max_skip_streak: i64,
    pub first_ts: i64,
    pub last_ts: i64,
    pub by_hour: [u32; 24],
    pub top_artist: Name,
    pub top_artist_listens: i64,
}

/// A `user_track_daily` row while the dataflow holds it: counts of one
/// (user, day, track) as `u32` (a day has fewer than 2^32 listens of one
/// track by one user: more fails the run, see [`add`]), first and last
/// listen as milliseconds of the day, `ms_played` and the completion (an
/// `f64`, computed once by the reduce from the two sums it needs) as pairs
/// of `u32`, so the row is 44 bytes at 4-byte alignment (was 56; it is held
/// by the track trace at both of a batch's memory peaks). Its listens are
/// its plays plus skips.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TrackRow {
    pub track: Name,
    pub artist: Name,
    pub plays: u32,
    pub skips: u32,
    pub early_skips: u32,
    pub first_ms: u32,
    pub last_ms: u32,
    ms_played: [u32; 2],
    completion: [u32; 2],
}

/// A `u64` as two `u32`s, high first (4-byte alignment; derived order kept).
fn split(x: u64) -> [u32; 2] {
    [(x >> 32) as u32, x as u32]
}

fn join(x: [u32; 2]) -> u64 {
    (u64::from(x[0]) << 32) | u64::from(x[1])
}

impl TrackRow {
    /// The epoch-millisecond `ts` of the first and last listen on `day`.
    pub fn first_ts(&self, day: i32) -> i64 {
        day as i64 * MS_PER_DAY + self.first_ms as i64
    }
    pub fn last_ts(&self, day: i32) -> i64 {
        day as i64 * MS_PER_DAY + self.last_ms as i64
    }
    /// Every listen is a play or a skip.
    pub fn listens(&self) -> i64 {
        i64::from(self.plays) + i64::from(self.skips)
    }
    pub fn ms_played(&self) -> i64 {
        join(self.ms_played) as i64
    }
    /// `sum(min(ms_played, duration)) / sum(duration)` over the listens.
    pub fn completion(&self) -> f64 {
        f64::from_bits(join(self.completion))
    }
    /// Sets the sums the row keeps from those of its listens.
    fn set_sums(&mut self, ms_played: i64, sum_min: i64, sum_duration: i64) {
        self.ms_played = split(ms_played as u64);
        self.completion = split(ratio(sum_min, sum_duration).to_bits());
    }
}

/// A ratio column's value (`skip_rate`, `completion`): the same division
/// wherever a table computes one.
pub fn ratio(num: i64, den: i64) -> f64 {
    num as f64 / den as f64
}

/// A `user_artist_daily` row while the dataflow holds it (counts as in
/// [`TrackRow`]; its listens are its plays plus skips): 24 bytes (was 48).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ArtistRow {
    pub artist: Name,
    pub plays: u32,
    pub skips: u32,
    pub distinct_tracks: u32,
    pub ms_played: i64,
}

impl ArtistRow {
    /// Every listen is a play or a skip.
    pub fn listens(&self) -> i64 {
        i64::from(self.plays) + i64::from(self.skips)
    }
}

/// Adds `n` listens to a count of one (user, day, track or artist).
fn add(count: &mut u32, n: u32) {
    *count = count
        .checked_add(n)
        .expect("more than 4,294,967,295 listens of one track or artist by one user in one day");
}

/// (id, plays, skips) of one top-10 entry.
pub type TopEntry = (Name, i64, i64);

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProfileRow {
    pub active_days: i64,
    pub listens: i64,
    pub plays: i64,
    pub skips: i64,
    pub ms_played: i64,
    pub distinct_tracks: i64,
    pub distinct_artists: i64,
    /// Shared, not copied: arrangement merges clone rows, and a clone of an
    /// `Arc` is a counter increment rather than an allocation.
    pub top_artists: Arc<[TopEntry]>,
    pub top_tracks: Arc<[TopEntry]>,
}

/// A record that broke the input contract.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RejectRow {
    pub source: Name,
    pub partition: i32,
    pub offset: i64,
    pub message_ts: Option<i64>,
    pub reason: Reject,
    pub raw: Vec<u8>,
}

/// A listen that came after its day was finalized (continuous mode): the
/// event's fields as read, and the message timestamp.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LateRow {
    pub event_id: String,
    /// Fields in the dedup order of events.md, then the rest.
    pub ts: i64,
    pub skip: bool,
    pub user_id: String,
    pub track_id: String,
    pub artist_id: String,
    pub ms_played: i64,
    pub track_duration_ms: i64,
    pub context: Option<String>,
    pub device: Option<String>,
    pub country: Option<String>,
    pub message_ts: Option<i64>,
}

impl LateRow {
    pub fn new(e: &crate::decode::Event<'_>, message_ts: Option<i64>) -> LateRow {
        LateRow {
            event_id: e.event_id.to_string(),
            ts: e.ts,
            skip: e.skip,
            user_id: e.user_id.to_string(),
            track_id: e.track_id.to_string(),
            artist_id: e.artist_id.to_string(),
            ms_played: e.ms_played,
            track_duration_ms: e.track_duration_ms,
            context: e.context.as_ref().map(|c| c.to_string()),
            device: e.device.as_ref().map(|c| c.to_string()),
            country: e.country.as_ref().map(|c| c.to_string()),
            message_ts,
        }
    }

    /// `late_events` is keyed by event id: of the late events of one day
    /// sharing an id the table keeps the smallest by the dedup order of
    /// events.md (strings byte-wise), so the row does not depend on arrival
    /// order. The derived `Ord` compares exactly that, then the other fields.
    pub fn merge(rows: &mut Vec<LateRow>) {
        rows.sort_unstable();
        rows.dedup_by(|later, first| later.event_id == first.event_id);
    }
}

/// One input of the profile: a daily aggregate of one user, or an as-of marker.
///
/// Sorted by day first (then kind), so the profile reduce can slide its
/// window. Compact (20 bytes at 4-byte alignment; its updates are 32 bytes
/// instead of 48, and a batch's profile batcher moves every one of them
/// several times): the day and the kind share a word; a `user_track_daily`
/// or `user_artist_daily` row has an id and no `ms_played`, a `user_daily`
/// row the reverse, so one word holds the id or the high half of
/// `ms_played`. A `user_daily` row's listens are its plays plus skips.
/// Hashed and serialized unpacked (the id as its string), so it routes and
/// crosses processes as its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProfIn {
    /// day * 4 + kind (days of valid events lie within 2000..2100).
    day_kind: i32,
    /// Track or artist: the id; daily: the high half of `ms_played`.
    id_or_ms: u32,
    pub plays: u32,
    pub skips: u32,
    /// Daily: the low half of `ms_played`.
    ms_lo: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ProfKind {
    /// Produce the profile as of `day`.
    AsOf,
    /// A `user_daily` row: listens, plays, skips, ms_played.
    Daily,
    /// A `user_track_daily` row: id = track; plays, skips.
    Track,
    /// A `user_artist_daily` row: id = artist; plays, skips.
    Artist,
}

const KINDS: [ProfKind; 4] = [ProfKind::AsOf, ProfKind::Daily, ProfKind::Track, ProfKind::Artist];

impl ProfKind {
    /// Track and artist rows have an id (and no `ms_played`); daily rows
    /// and markers the reverse.
    fn has_id(self) -> bool {
        matches!(self, ProfKind::Track | ProfKind::Artist)
    }
}

/// A profile input as it is hashed and crosses processes.
#[derive(Hash, Serialize, Deserialize)]
struct ProfInWire {
    day_kind: i32,
    id: Option<Name>,
    plays: u32,
    skips: u32,
    ms_played: u64,
}

impl ProfIn {
    /// `id` counts for track and artist rows only, `ms_played` for daily rows only.
    pub fn new(day: i32, kind: ProfKind, id: Name, plays: i64, skips: i64, ms_played: i64) -> Self {
        ProfIn::from_wire(ProfInWire {
            day_kind: day * 4 + kind as i32,
            id: Some(id),
            plays: plays as u32,
            skips: skips as u32,
            ms_played: ms_played as u64,
        })
    }
    /// Packs the unpacked form: the kind decides whether the shared word
    /// holds the id or `ms_played`'s high half.
    fn from_wire(w: ProfInWire) -> Self {
        let mut p = ProfIn {
            day_kind: w.day_kind,
            id_or_ms: 0,
            plays: w.plays,
            skips: w.skips,
            ms_lo: 0,
        };
        match p.has_id() {
            true => p.id_or_ms = w.id.unwrap_or_default().0,
            false => [p.id_or_ms, p.ms_lo] = split(w.ms_played),
        }
        p
    }
    pub fn day(&self) -> i32 {
        self.day_kind.div_euclid(4)
    }
    pub fn kind(&self) -> ProfKind {
        KINDS[self.day_kind.rem_euclid(4) as usize]
    }
    fn has_id(&self) -> bool {
        self.kind().has_id()
    }
    /// The track or artist (`None` for daily rows and markers).
    pub fn id(&self) -> Option<Name> {
        self.has_id().then_some(Name(self.id_or_ms))
    }
    pub fn ms_played(&self) -> u64 {
        match self.has_id() {
            true => 0,
            false => join([self.id_or_ms, self.ms_lo]),
        }
    }
    pub fn marker(as_of: i32) -> Self {
        ProfIn::new(as_of, ProfKind::AsOf, Name(0), 0, 0, 0)
    }
    /// The profile's input from a `user_daily` row of `day`.
    pub fn daily(day: i32, r: &DailyRow) -> Self {
        ProfIn::new(day, ProfKind::Daily, Name(0), r.plays, r.skips, r.ms_played)
    }
    /// The profile's input from a `user_track_daily` row of `day`.
    pub fn track(day: i32, r: &TrackRow) -> Self {
        ProfIn::new(day, ProfKind::Track, r.track, r.plays.into(), r.skips.into(), 0)
    }
    /// The profile's input from a `user_artist_daily` row of `day`.
    pub fn artist(day: i32, r: &ArtistRow) -> Self {
        ProfIn::new(day, ProfKind::Artist, r.artist, r.plays.into(), r.skips.into(), 0)
    }
    fn wire(&self) -> ProfInWire {
        ProfInWire {
            day_kind: self.day_kind,
            id: self.id(),
            plays: self.plays,
            skips: self.skips,
            ms_played: self.ms_played(),
        }
    }
}

impl std::hash::Hash for ProfIn {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.wire().hash(h)
    }
}

impl Serialize for ProfIn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.wire().serialize(s)
    }
}

impl<'de> Deserialize<'de> for ProfIn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ProfInWire::deserialize(d).map(ProfIn::from_wire)
    }
}

/// A daily table's rows, keyed by (day, user): one day's rows are contiguous.
pub type DayTrace<V> = TraceAgent<ValSpine<(i32, Name), V, Time, Diff>>;
/// Profile rows (as_of, row), keyed by user.
pub type ProfileTrace = TraceAgent<ValSpine<Name, (i32, ProfileRow), Time, Diff>>;
/// Rejected records keyed by partition day.
pub type RejectTrace = TraceAgent<ValSpine<i32, RejectRow, Time, Diff>>;

/// What one worker holds of the dataflow.
pub struct Handles {
    /// Valid in-scope events, keyed by event key.
    pub listens: InputSession<Time, (EventKey, Listen), Diff>,
    /// Rejected records, keyed by partition day.
    pub rejected: InputSession<Time, (i32, RejectRow), Diff>,
    /// Daily aggregates of days before the run (read back from the output).
    pub prior: InputSession<Time, (Name, ProfIn), Diff>,
    /// Listen days seen (each worker adds a day once; never retracted): the
    /// as-of range of `user_profile_28d` runs from the first to the last.
    pub seen: InputSession<Time, i32, Diff>,
    /// The last final day (one value; none: no day is final): as-of days
    /// up to it are not produced.
    pub fin: InputSession<Time, i32, Diff>,
    pub probe: ProbeHandle<Time>,
    pub traces: SinkTraces,
    /// This worker's share of kept listens and of their days (min, max).
    pub kept: Rc<RefCell<KeptStats>>,
    /// Changed output partitions by time (continuous mode).
    pub changes: Changes,
    /// The arranged valid events, keyed by (day, event id) (continuous mode:
    /// read to retract the listens of finalized days).
    pub listens_trace: Option<ListenTrace>,
}

/// Valid events keyed by event key.
pub type ListenTrace = TraceAgent<ValSpine<EventKey, Listen, Time, Diff>>;

#[derive(Clone, Debug, Default)]
pub struct KeptStats {
    pub count: i64,
    pub days: std::collections::BTreeMap<i32, i64>,
    /// Continuous mode: changes of kept listens per day, by time.
    pub by_time: std::collections::BTreeMap<Time, std::collections::BTreeMap<i32, i64>>,
}

impl KeptStats {
    /// Kept listens per day as of `before` (continuous mode): folds the
    /// changes at earlier times into `days` and returns them.
    pub fn settle(&mut self, before: Time) -> &std::collections::BTreeMap<i32, i64> {
        let later = self.by_time.split_off(&before);
        for (_, days) in std::mem::replace(&mut self.by_time, later) {
            for (d, n) in days {
                let e = self.days.entry(d).or_insert(0);
                *e += n;
                if *e == 0 {
                    self.days.remove(&d);
                }
            }
        }
        &self.days
    }
}

/// The arranged outputs the sink reads partitions from (`None` once a
/// batch released a table's trace after reading it).
pub struct SinkTraces {
    pub user_daily: Option<DayTrace<DailyRow>>,
    pub user_track_daily: Option<DayTrace<TrackRow>>,
    pub user_artist_daily: Option<DayTrace<ArtistRow>>,
    pub user_profile: Option<ProfileTrace>,
    pub rejected: Option<RejectTrace>,
}

impl SinkTraces {
    /// Drops this worker's handle on `table`'s trace: once the dataflow is
    /// done, that frees the arrangement (a batch reads each table once).
    pub fn release(&mut self, table: Table) {
        match table {
            Table::UserDaily => self.user_daily = None,
            Table::UserTrackDaily => self.user_track_daily = None,
            Table::UserArtistDaily => self.user_artist_daily = None,
            Table::UserProfile28d => self.user_profile = None,
            Table::RejectedEvents => self.rejected = None,
            Table::LateEvents => {}
        }
    }
}

/// How a driver uses the dataflow.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Continuous mode: record which output partitions change at which time,
    /// keep kept-listen counts by time, and keep the arranged input so the
    /// state of finalized days can be released.
    pub continuous: bool,
}

/// Output partitions (table, day) that changed, by the time they changed.
pub type Changes = Rc<RefCell<std::collections::BTreeMap<Time, HashSet<(crate::schema::Table, i32)>>>>;

/// Builds both dataflows in `worker`, one after the other (continuous mode:
/// the profile follows the daily tables as they change).
pub fn build_with(worker: &mut timely::worker::Worker, interner: Arc<Interner>, opts: Options) -> Handles {
    let probe = ProbeHandle::new();
    let mut d = build_daily(worker, interner.clone(), opts, &probe);
    let p = build_profile(worker, interner, opts, &probe, Some(&mut d.traces), &d.changes);
    d.traces.user_profile = Some(p.trace);
    Handles {
        listens: d.listens,
        rejected: d.rejected,
        prior: p.prior,
        seen: p.seen,
        fin: p.fin,
        probe,
        traces: d.traces,
        kept: d.kept,
        changes: d.changes,
        listens_trace: d.listens_trace,
    }
}

/// What one worker holds of the first dataflow: events in, daily tables and
/// rejects out.
pub struct Daily {
    pub listens: InputSession<Time, (EventKey, Listen), Diff>,
    pub rejected: InputSession<Time, (i32, RejectRow), Diff>,
    /// Every table but the profile (`user_profile` is `None`).
    pub traces: SinkTraces,
    pub kept: Rc<RefCell<KeptStats>>,
    pub changes: Changes,
    pub listens_trace: Option<ListenTrace>,
}

/// What one worker holds of the second dataflow: the profile.
pub struct Profile {
    pub prior: InputSession<Time, (Name, ProfIn), Diff>,
    pub seen: InputSession<Time, i32, Diff>,
    pub fin: InputSession<Time, i32, Diff>,
    pub trace: ProfileTrace,
}

/// The first dataflow: dedup, the (day, user) arrangement, the three daily
/// tables, rejects. A batch lets it complete and timely drops it, with the
/// (day, user) arrangement that only its reduces read, before it builds the
/// profile.
pub fn build_daily(
    worker: &mut timely::worker::Worker,
    interner: Arc<Interner>,
    opts: Options,
    probe: &ProbeHandle<Time>,
) -> Daily {
    use timely::dataflow::operators::Probe;
    worker.dataflow::<Time, _, _>(|scope| {
        let (listens_in, listens) = scope.new_collection::<(EventKey, Listen), Diff>();
        let (rejected_in, rejected) = scope.new_collection::<(i32, RejectRow), Diff>();

        // Dedup: of each (day, event id) group keep the smallest by the spec's tuple.
        let listens = listens.arrange_by_key_named("Listens");
        let listens_trace = opts.continuous.then(|| listens.trace.clone());
        let kept = dedup::kept(listens, interner.clone());

        let kept_stats = Rc::new(RefCell::new(KeptStats::default()));
        let by_user_day = by_user(count_kept(kept, kept_stats.clone(), opts.continuous));
        let daily = daily_table(&by_user_day, "UserDaily", user_daily_logic(interner.clone()));
        let tracks = daily_table(&by_user_day, "UserTrackDaily", user_track_logic(interner.clone()));
        let artists = daily_table(&by_user_day, "UserArtistDaily", user_artist_logic());
        let rejected = rejected.arrange_by_key_named("Rejected");

        let changes: Changes = Rc::new(RefCell::new(Default::default()));
        if opts.continuous {
            record_changes(days_of(&daily), Table::UserDaily, &changes);
            record_changes(days_of(&tracks), Table::UserTrackDaily, &changes);
            record_changes(days_of(&artists), Table::UserArtistDaily, &changes);
            record_changes(
                rejected.clone().as_collection(|&d, _| d),
                Table::RejectedEvents,
                &changes,
            );
        }
        // The sink reads these arrangements; the probe tells when they are complete.
        daily.stream.clone().probe_with(probe);
        tracks.stream.clone().probe_with(probe);
        artists.stream.clone().probe_with(probe);
        rejected.stream.clone().probe_with(probe);

        Daily {
            listens: listens_in,
            rejected: rejected_in,
            traces: SinkTraces {
                user_daily: Some(daily.trace),
                user_track_daily: Some(tracks.trace),
                user_artist_daily: Some(artists.trace),
                user_profile: None,
                rejected: Some(rejected.trace),
            },
            kept: kept_stats,
            changes,
            listens_trace,
        }
    })
}

/// Counts kept listens (per day; continuous: by time) as they pass, and
/// keys them by (day, user).
fn count_kept<'s>(
    kept: differential_dataflow::VecCollection<'s, Time, (EventKey, Listen), Diff>,
    stats: Rc<RefCell<KeptStats>>,
    continuous: bool,
) -> differential_dataflow::VecCollection<'s, Time, ((i32, Name), DayListen), Diff> {
    kept.inspect(move |((ev, _), time, diff)| {
        let day = &ev.day;
        let mut s = stats.borrow_mut();
        if continuous {
            *s.by_time.entry(*time).or_default().entry(*day).or_insert(0) += *diff as i64;
        } else {
            s.count += *diff as i64;
            *s.days.entry(*day).or_insert(0) += *diff as i64;
        }
    })
    .map(|(ev, l)| {
        let v = DayListen {
            time: l.time,
            ev,
            track: l.track,
            artist: l.artist,
            ms_played: l.ms_played,
            duration: l.duration,
        };
        ((ev.day, l.user), v)
    })
}

/// Records the (table, day) partitions that change at each time.
fn record_changes(days: differential_dataflow::VecCollection<'_, Time, i32, Diff>, table: Table, changes: &Changes) {
    let c = changes.clone();
    days.inspect(move |(d, t, _)| {
        c.borrow_mut().entry(*t).or_default().insert((table, *d));
    });
}

/// The second dataflow: `user_profile_28d` from the daily tables, prior
/// days' rows and as-of markers. With `daily`, it imports the daily tables'
/// traces (continuous mode: it follows them as they change); without, the
/// driver feeds this run's daily rows through `prior` as well (a batch,
/// while it stages them, so that the daily traces are gone before the
/// profile's arrangement is built).
pub fn build_profile(
    worker: &mut timely::worker::Worker,
    interner: Arc<Interner>,
    opts: Options,
    probe: &ProbeHandle<Time>,
    daily: Option<&mut SinkTraces>,
    changes: &Changes,
) -> Profile {
    use timely::dataflow::operators::Probe;
    worker.dataflow::<Time, _, _>(|scope| {
        let (prior_in, mut prior) = scope.new_collection::<(Name, ProfIn), Diff>();
        let (seen_in, seen) = scope.new_collection::<i32, Diff>();
        let (fin_in, fin) = scope.new_collection::<i32, Diff>();
        let as_of = as_of_days(seen, fin);

        // The profile's inputs: this run's daily rows, prior days' rows, as-of markers.
        if let Some(traces) = daily {
            let traced = "the daily tables' traces are held until the profile is built";
            let imported = [
                traces.user_daily.as_mut().expect(traced).import_named(scope, "Import: UserDaily")
                    .as_collection(|&(d, u), r: &DailyRow| (u, ProfIn::daily(d, r))),
                traces.user_track_daily.as_mut().expect(traced).import_named(scope, "Import: UserTrackDaily")
                    .as_collection(|&(d, u), r: &TrackRow| (u, ProfIn::track(d, r))),
                traces.user_artist_daily.as_mut().expect(traced).import_named(scope, "Import: UserArtistDaily")
                    .as_collection(|&(d, u), r: &ArtistRow| (u, ProfIn::artist(d, r))),
            ];
            prior = prior.concatenate(imported);
        }
        let all_daily = prior.clone().filter(|(_, p)| p.kind() == ProfKind::Daily);
        let window = as_of.flat_map(|a| (a - WINDOW_DAYS + 1..=a).map(move |d| (d, a)));
        let markers = all_daily
            .clone()
            .map(|(u, p)| (p.day(), u))
            .join(window)
            .map(|(_d, (u, a))| (u, ProfIn::marker(a)));
        let profile = prior
            .concat(markers)
            .arrange_by_key_named("Arrange: UserProfile28d")
            .reduce_abelian::<_, ValBuilder<Name, (i32, ProfileRow)>, ValSpine<Name, (i32, ProfileRow), Time, Diff>, _, _>(
                "UserProfile28d",
                profile_logic(interner),
                |vec, key, upds| {
                    vec.clear();
                    vec.extend(upds.drain(..).map(|(v, t, r)| ((*key, v), t, r)));
                },
            );
        if opts.continuous {
            record_changes(profile.clone().as_collection(|_, (a, _)| *a), Table::UserProfile28d, changes);
        }
        profile.stream.clone().probe_with(probe);
        Profile {
            prior: prior_in,
            seen: seen_in,
            fin: fin_in,
            trace: profile.trace,
        }
    })
}

type ValBuilder<K, V> = ExactBuilder<K, V>;

type OrdBatch<K, V> = differential_dataflow::trace::implementations::ord_neu::OrdValBatch<
    differential_dataflow::trace::implementations::Vector<((K, V), Time, Diff)>,
>;

/// differential's builder for a reduce's output batches, whose vectors are
/// trimmed to their length once built. The reduce pushes into them one row
/// at a time, so they grow by doubling and would keep up to half their
/// capacity unused for the life of the batch (a batch run's outputs are
/// one batch each).
pub struct ExactBuilder<K: Ord + Clone + 'static, V: Ord + Clone + 'static>(
    differential_dataflow::trace::implementations::ValBuilder<K, V, Time, Diff>,
);

impl<K: Ord + Clone + 'static, V: Ord + Clone + 'static> Default for ExactBuilder<K, V> {
    fn default() -> Self {
        Self(Default::default())
    }
}

impl<K: Ord + Clone + 'static, V: Ord + Clone + 'static> differential_dataflow::trace::Builder for ExactBuilder<K, V> {
    type Input = Vec<((K, V), Time, Diff)>;
    type Time = Time;
    type Output = OrdBatch<K, V>;

    fn push(&mut self, chunk: &mut Self::Input) {
        self.0.push(chunk)
    }

    fn done(self) -> Option<Self::Output> {
        let mut batch = self.0.done()?;
        let s = &mut batch.storage;
        s.keys.shrink_to_fit();
        s.vals.vals.shrink_to_fit();
        s.upds.times.shrink_to_fit();
        s.upds.diffs.shrink_to_fit();
        for offs in [&mut s.vals.offs, &mut s.upds.offs] {
            offs.smol.shrink_to_fit();
            offs.chonk.shrink_to_fit();
        }
        Some(batch)
    }
}

/// The as-of days: from the first to the last day seen, after the last
/// final day. One group (one worker): recomputed when the bounds or the
/// final day change, which happens about once a day; the output changes
/// only at its ends.
fn as_of_days<'s>(
    seen: differential_dataflow::VecCollection<'s, Time, i32, Diff>,
    fin: differential_dataflow::VecCollection<'s, Time, i32, Diff>,
) -> differential_dataflow::VecCollection<'s, Time, i32, Diff> {
    seen.map(|d| ((), (0u8, d)))
        .concat(fin.map(|f| ((), (1u8, f))))
        .reduce_named(
            "AsOfDays",
            |_key, vals: &[(&(u8, i32), Diff)], out: &mut Vec<(i32, Diff)>| {
                let mut days = vals.iter().filter(|(v, n)| v.0 == 0 && *n > 0).map(|(v, _)| v.1);
                let Some(lo) = days.next() else { return };
                let hi = days.next_back().unwrap_or(lo);
                let f = vals.iter().filter(|(v, n)| v.0 == 1 && *n > 0).map(|(v, _)| v.1).max();
                let from = f.map_or(lo, |f| lo.max(f.saturating_add(1)));
                out.extend((from..=hi).map(|d| (d, 1)));
            },
        )
        .map(|((), d)| d)
}
type ValBuilderOf<V> = ValBuilder<(i32, Name), V>;

/// The (day, user) arrangement of kept listens.
type ByUserDay<'s> = differential_dataflow::operators::arrange::Arranged<'s, DayTrace<DayListen>>;

/// Arranges kept listens by (day, user), each on the worker of its user:
/// the worker that computes a user's daily rows also holds the user's
/// profile (arranged by user), so the daily rows, track and artist rows
/// (the profile's inputs, about one and a half per listen) never cross
/// processes. Routed by (day, user), two thirds of them crossed in a
/// cluster of three, all at once when a batch's day completes.
fn by_user<'s>(kept: differential_dataflow::VecCollection<'s, Time, ((i32, Name), DayListen), Diff>) -> ByUserDay<'s> {
    use differential_dataflow::hashable::Hashable;
    use differential_dataflow::trace::implementations::ValBatcher;
    // The same function of the user as the profile's `arrange_by_key` (a hash of its key).
    let pact = timely::dataflow::channels::pact::Exchange::new(
        |(((_, user), _), _, _): &(((i32, Name), DayListen), Time, Diff)| user.hashed(),
    );
    differential_dataflow::operators::arrange::arrangement::arrange_core::<_, _, ValBatcher<_, _, _, _>, _>(
        kept.inner,
        pact,
        "ByUserDay",
        ValBatcher::new,
    )
}

/// The day of every change of a daily table.
fn days_of<'s, V: differential_dataflow::ExchangeData>(
    t: &differential_dataflow::operators::arrange::Arranged<'s, DayTrace<V>>,
) -> differential_dataflow::VecCollection<'s, Time, i32, Diff> {
    t.clone().as_collection(|&(d, _), _| d)
}

/// One daily table: a reduce of every (day, user) group of kept listens.
fn daily_table<'s, V>(
    by_user_day: &ByUserDay<'s>,
    name: &str,
    logic: impl GroupLogic<(i32, Name), DayListen, V>,
) -> differential_dataflow::operators::arrange::Arranged<'s, DayTrace<V>>
where
    V: differential_dataflow::ExchangeData,
{
    by_user_day
        .clone()
        .reduce_abelian::<_, ValBuilderOf<V>, ValSpine<(i32, Name), V, Time, Diff>, _, _>(
            name,
            logic,
            |vec, key, upds| {
                vec.clear();
                vec.extend(upds.drain(..).map(|(v, t, r)| ((*key, v), t, r)));
            },
        )
}

/// The logic of one reduce: a key, its values with counts, the output rows.
pub trait GroupLogic<K, V, O>: FnMut(&K, &[(&V, Diff)], &mut Vec<(O, Diff)>) + 'static {}
impl<K, V, O, F: FnMut(&K, &[(&V, Diff)], &mut Vec<(O, Diff)>) + 'static> GroupLogic<K, V, O> for F {}

/// The dedup order of events.md on two events of one (day, event id) group:
/// (ts, event_type, user_id, track_id, artist_id, ms_played, track_duration_ms),
/// strings byte-wise ("play" < "skip").
pub fn dedup_order(a: &Listen, b: &Listen, int: &Interner) -> Ordering {
    let by_id = |x: Name, y: Name| by_bytes(int, x, y);
    a.time
        .cmp(&b.time)
        .then_with(|| by_id(a.user, b.user))
        .then_with(|| by_id(a.track, b.track))
        .then_with(|| by_id(a.artist, b.artist))
        .then(a.ms_played.cmp(&b.ms_played))
        .then(a.duration.cmp(&b.duration))
}

fn by_bytes(int: &Interner, a: Name, b: Name) -> Ordering {
    if a == b {
        Ordering::Equal
    } else {
        int.resolve(a.0).as_bytes().cmp(int.resolve(b.0).as_bytes())
    }
}

/// `user_daily` over one (user, day) group, values in (ts, event id) order.
fn user_daily_logic(int: Arc<Interner>) -> impl GroupLogic<(i32, Name), DayListen, DailyRow> {
    let mut tracks: FxSet<Id> = FxSet::default();
    let mut artists: FxMap<Id, i64> = FxMap::default();
    let mut run: Vec<(EventKey, bool, Diff)> = Vec::new();
    move |&(day, _user), vals, out| {
        tracks.clear();
        artists.clear();
        let mut r = DailyRow {
            first_ts: vals[0].0.time.ts(day),
            last_ts: vals[vals.len() - 1].0.time.ts(day),
            ..Default::default()
        };
        let mut prev_ts: Option<i64> = None;
        let mut session_len = 0i64;
        let mut streak = 0i64;
        let mut i = 0;
        while i < vals.len() {
            let ts = vals[i].0.time.ms_of_day();
            let mut j = i + 1;
            while j < vals.len() && vals[j].0.time.ms_of_day() == ts {
                j += 1;
            }
            // Sessions: equal timestamps never split a session.
            if prev_ts.is_none_or(|p| ts - p > SESSION_GAP_MS) {
                r.sessions += 1;
                session_len = 0;
            }
            prev_ts = Some(ts);
            for (v, n) in &vals[i..j] {
                let n = *n as i64;
                let ms = v.ms_played as i64;
                r.listens += n;
                if v.time.skip() {
                    r.skips += n;
                    if v.ms_played < EARLY_SKIP_MS {
                        r.early_skips += n;
                    }
                } else {
                    r.plays += n;
                }
                r.ms_played += n * ms;
                r.sum_min += n * ms.min(v.duration as i64);
                r.sum_duration += n * v.duration as i64;
                r.by_hour[(ts / 3_600_000) as usize] += n as u32;
                session_len += n;
                tracks.insert(v.track.0);
                *artists.entry(v.artist.0).or_insert(0) += n;
            }
            r.longest_session = r.longest_session.max(session_len);
            // Skip streaks follow (ts, event_id) order: sort ties by event id bytes.
            if j - i == 1 {
                let (v, n) = vals[i];
                streak = if v.time.skip() { streak + n as i64 } else { 0 };
                r.max_skip_streak = r.max_skip_streak.max(streak);
            } else {
                run.clear();
                run.extend(vals[i..j].iter().map(|(v, n)| (v.ev, v.time.skip(), *n)));
                run.sort_by_cached_key(|a| a.0.resolve());
                for &(_, skip, n) in run.iter() {
                    streak = if skip { streak + n as i64 } else { 0 };
                    r.max_skip_streak = r.max_skip_streak.max(streak);
                }
            }
            i = j;
        }
        r.distinct_tracks = tracks.len() as i64;
        r.distinct_artists = artists.len() as i64;
        let mut top: Option<(Id, i64)> = None;
        for (&a, &n) in artists.iter() {
            top = match top {
                None => Some((a, n)),
                Some((b, m)) => {
                    if n > m || (n == m && by_bytes(&int, Name(a), Name(b)) == Ordering::Less) {
                        Some((a, n))
                    } else {
                        Some((b, m))
                    }
                }
            };
        }
        let (a, n) = top.expect("non-empty group");
        r.top_artist = Name(a);
        r.top_artist_listens = n;
        run.clear();
        shrink(&mut tracks);
        shrink(&mut artists);
        out.push((r, 1));
    }
}

/// Keeps reused scratch maps from holding on to a heavy user's capacity.
fn shrink<T>(c: &mut T)
where
    T: Shrinkable,
{
    c.shrink_if_big();
}

trait Shrinkable {
    fn shrink_if_big(&mut self);
}
impl<K: Eq + std::hash::Hash, V> Shrinkable for FxMap<K, V> {
    fn shrink_if_big(&mut self) {
        if self.capacity() > 1 << 16 {
            self.clear();
            self.shrink_to(1024);
        }
    }
}
impl<K: Eq + std::hash::Hash> Shrinkable for FxSet<K> {
    fn shrink_if_big(&mut self) {
        if self.capacity() > 1 << 16 {
            self.clear();
            self.shrink_to(1024);
        }
    }
}

/// `user_track_daily` rows of one (user, day) group.
fn user_track_logic(int: Arc<Interner>) -> impl GroupLogic<(i32, Name), DayListen, TrackRow> {
    // The row, and its ms_played, sum of min(ms_played, duration) and sum of durations.
    let mut rows: FxMap<Id, (TrackRow, [i64; 3])> = FxMap::default();
    move |_key, vals, out| {
        rows.clear();
        for (v, n) in vals {
            let ms_of_day = v.time.ms_of_day() as u32;
            let (r, sums) = rows.entry(v.track.0).or_insert_with(|| {
                let r = TrackRow {
                    track: v.track,
                    artist: v.artist,
                    first_ms: ms_of_day,
                    last_ms: ms_of_day,
                    ..Default::default()
                };
                (r, [0; 3])
            });
            if v.artist != r.artist && by_bytes(&int, v.artist, r.artist) == Ordering::Less {
                r.artist = v.artist;
            }
            let c = u32::try_from(*n).expect("a positive count");
            if v.time.skip() {
                add(&mut r.skips, c);
                if v.ms_played < EARLY_SKIP_MS {
                    add(&mut r.early_skips, c);
                }
            } else {
                add(&mut r.plays, c);
            }
            let (n, ms) = (*n as i64, v.ms_played as i64);
            sums[0] += n * ms;
            sums[1] += n * ms.min(v.duration as i64);
            sums[2] += n * v.duration as i64;
            r.first_ms = r.first_ms.min(ms_of_day);
            r.last_ms = r.last_ms.max(ms_of_day);
        }
        out.extend(rows.drain().map(|(_, (mut r, [ms, min, dur]))| {
            r.set_sums(ms, min, dur);
            (r, 1)
        }));
        shrink(&mut rows);
    }
}

/// `user_artist_daily` rows of one (user, day) group.
fn user_artist_logic() -> impl GroupLogic<(i32, Name), DayListen, ArtistRow> {
    let mut rows: FxMap<Id, ArtistRow> = FxMap::default();
    let mut pairs: FxSet<(Id, Id)> = FxSet::default();
    move |_key, vals, out| {
        rows.clear();
        pairs.clear();
        for (v, n) in vals {
            let r = rows.entry(v.artist.0).or_insert_with(|| ArtistRow {
                artist: v.artist,
                ..Default::default()
            });
            let c = u32::try_from(*n).expect("a positive count");
            if v.time.skip() {
                add(&mut r.skips, c);
            } else {
                add(&mut r.plays, c);
            }
            r.ms_played += *n as i64 * v.ms_played as i64;
            if pairs.insert((v.artist.0, v.track.0)) {
                add(&mut r.distinct_tracks, 1);
            }
        }
        out.extend(rows.drain().map(|(_, r)| (r, 1)));
        shrink(&mut rows);
        shrink(&mut pairs);
    }
}

#[derive(Default, Clone, Copy)]
struct Tally {
    plays: i64,
    skips: i64,
    /// Window days holding a row of this id.
    days: i64,
}

/// The sums of one user's 28-day window while it slides.
#[derive(Default)]
struct Window {
    active: i64,
    listens: i64,
    plays: i64,
    skips: i64,
    ms: i64,
    tracks: FxMap<Id, Tally>,
    artists: FxMap<Id, Tally>,
}

impl Window {
    /// Empty, keeping the maps' capacity for the next user.
    fn reset(&mut self) {
        (self.active, self.listens, self.plays, self.skips, self.ms) = (0, 0, 0, 0, 0);
        self.tracks.clear();
        self.artists.clear();
    }

    /// Adds (`n` > 0, entering) or removes (`n` < 0, leaving) one daily row;
    /// returns whether the window's contents changed (as-of markers do not).
    fn apply(&mut self, p: &ProfIn, n: i64) -> bool {
        match p.kind() {
            ProfKind::AsOf => return false,
            ProfKind::Daily => {
                self.active += n;
                self.listens += n * (p.plays as i64 + p.skips as i64);
                self.plays += n * p.plays as i64;
                self.skips += n * p.skips as i64;
                self.ms += n * p.ms_played() as i64;
            }
            ProfKind::Track | ProfKind::Artist => {
                let map = if p.kind() == ProfKind::Track {
                    &mut self.tracks
                } else {
                    &mut self.artists
                };
                let id = p.id().expect("a track or artist row has an id").0;
                let t = map.entry(id).or_default();
                t.plays += n * p.plays as i64;
                t.skips += n * p.skips as i64;
                t.days += n;
                if t.days == 0 {
                    map.remove(&id);
                }
            }
        }
        true
    }
}

/// `user_profile_28d` of one user: slides the 28-day window over the user's
/// daily rows (sorted by day) and emits one row per as-of marker.
fn profile_logic(int: Arc<Interner>) -> impl GroupLogic<Name, ProfIn, (i32, ProfileRow)> {
    let mut w = Window::default();
    let mut cands: Vec<TopEntry> = Vec::new();
    move |_user, vals, out| {
        w.reset();
        let (mut lo, mut hi) = (0usize, 0usize);
        let mut last_marker: Option<i32> = None;
        // The previous as-of day's row, while no daily row entered or left
        // the window since: a user's as-of days after their last active day
        // share one row until days slide out, so it is computed once.
        let mut last_row: Option<ProfileRow> = None;
        for (m, _) in vals.iter().filter(|(p, _)| p.kind() == ProfKind::AsOf) {
            let as_of = m.day();
            if last_marker == Some(as_of) {
                continue;
            }
            last_marker = Some(as_of);
            let first = as_of - WINDOW_DAYS + 1;
            let mut moved = false;
            while hi < vals.len() && vals[hi].0.day() <= as_of {
                moved |= w.apply(vals[hi].0, vals[hi].1 as i64);
                hi += 1;
            }
            while lo < hi && vals[lo].0.day() < first {
                moved |= w.apply(vals[lo].0, -(vals[lo].1 as i64));
                lo += 1;
            }
            if w.active <= 0 {
                continue;
            }
            if let (false, Some(row)) = (moved, &last_row) {
                out.push(((as_of, row.clone()), 1));
                continue;
            }
            let row = ProfileRow {
                active_days: w.active,
                listens: w.listens,
                plays: w.plays,
                skips: w.skips,
                ms_played: w.ms,
                distinct_tracks: w.tracks.len() as i64,
                distinct_artists: w.artists.len() as i64,
                top_artists: top_n(&w.artists, &mut cands, &int),
                top_tracks: top_n(&w.tracks, &mut cands, &int),
            };
            last_row = Some(row.clone());
            out.push(((as_of, row), 1));
        }
        shrink(&mut w.tracks);
        shrink(&mut w.artists);
    }
}

/// The first ten entries with at least one play: plays descending, skips
/// ascending, id bytes ascending.
fn top_n(map: &FxMap<Id, Tally>, cands: &mut Vec<TopEntry>, int: &Interner) -> Arc<[TopEntry]> {
    cands.clear();
    cands.extend(
        map.iter()
            .filter(|(_, t)| t.plays > 0)
            .map(|(&id, t)| (Name(id), t.plays, t.skips)),
    );
    let cmp = |a: &TopEntry, b: &TopEntry| b.1.cmp(&a.1).then(a.2.cmp(&b.2)).then_with(|| by_bytes(int, a.0, b.0));
    if cands.len() > TOP_N {
        cands.select_nth_unstable_by(TOP_N - 1, cmp);
        cands.truncate(TOP_N);
    }
    cands.sort_unstable_by(cmp);
    Arc::from(cands.as_slice())
}

/// Drops every dataflow of `worker`: after a failure, so that timely does not
/// step them forever waiting for workers that stopped (timely keeps stepping
/// a worker's dataflows until they complete once its closure returns).
pub fn abandon(worker: &mut timely::worker::Worker) {
    for id in worker.installed_dataflows() {
        worker.drop_dataflow(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A count of one (user, day, track or artist) past `u32` fails the
    /// run with a message (a worker panic ends the run with exit 1); it
    /// never wraps.
    #[test]
    #[should_panic(expected = "more than 4,294,967,295 listens")]
    fn counts_never_wrap() {
        let mut c = u32::MAX - 1;
        add(&mut c, 1);
        assert_eq!(c, u32::MAX);
        add(&mut c, 1);
    }

    #[test]
    fn first_and_last_listen_on_their_day() {
        let r = TrackRow {
            first_ms: 0,
            last_ms: (MS_PER_DAY - 1) as u32,
            ..Default::default()
        };
        assert_eq!(r.first_ts(20_000), 20_000 * MS_PER_DAY);
        assert_eq!(r.last_ts(-1), -1);
    }

    fn kind(k: u8) -> ProfKind {
        KINDS[k as usize % 4]
    }

    /// (day, kind, id, plays, skips, ms_played) as a profile input made of
    /// `x` reads them back: an id for track and artist rows, `ms_played`
    /// for daily rows and markers.
    fn expected(x: (i32, u8, u32, u32, u32, u64)) -> (i32, ProfKind, Option<Name>, u32, u32, u64) {
        let k = kind(x.1);
        match k {
            ProfKind::Track | ProfKind::Artist => (x.0, k, Some(Name(x.2)), x.3, x.4, 0),
            ProfKind::AsOf | ProfKind::Daily => (x.0, k, None, x.3, x.4, x.5),
        }
    }

    proptest::proptest! {
        /// A packed profile input reads back what it was made of and orders
        /// by (day, kind) first: the profile reduce slides its window over a
        /// user's inputs in that order.
        #[test]
        fn profile_inputs_pack_keeping_their_day_order(
            a in (10_000i32..50_000, 0u8..4, 0u32..1000, 0u32..u32::MAX, 0u32..u32::MAX, 0u64..1 << 50),
            b in (10_000i32..50_000, 0u8..4, 0u32..1000, 0u32..u32::MAX, 0u32..u32::MAX, 0u64..1 << 50),
            same_day in proptest::bool::ANY,
        ) {
            let b = if same_day { (a.0, b.1, b.2, b.3, b.4, b.5) } else { b };
            let p = |x: (i32, u8, u32, u32, u32, u64)| {
                ProfIn::new(x.0, kind(x.1), Name(x.2), x.3 as i64, x.4 as i64, x.5 as i64)
            };
            let (pa, pb) = (p(a), p(b));
            let read = |q: &ProfIn| (q.day(), q.kind(), q.id(), q.plays, q.skips, q.ms_played());
            proptest::prop_assert_eq!(read(&pa), expected(a));
            if (a.0, a.1) != (b.0, b.1) {
                proptest::prop_assert_eq!(pa.cmp(&pb), (a.0, kind(a.1)).cmp(&(b.0, kind(b.1))));
            }
        }
    }

    /// A profile input crosses to another process (another interner, other
    /// ids) as its content, and routes by it: the same hash on both sides.
    #[test]
    fn profile_inputs_cross_processes_as_their_content() {
        let (a, b) = (Interner::new(), Interner::new());
        let hash = |p: &ProfIn| ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(p);
        crate::intern::enter(&a);
        Name::of("first in a only");
        let sent = [
            ProfIn::new(20_000, ProfKind::Track, Name::of("t1"), 3, 1, 0),
            ProfIn::new(20_001, ProfKind::Artist, Name::of("a1"), 0, 7, 0),
            ProfIn::new(20_002, ProfKind::Daily, Name(0), 5, 2, (1 << 40) + 17),
            ProfIn::marker(20_003),
        ];
        let bytes: Vec<Vec<u8>> = sent.iter().map(|p| bincode::serialize(p).unwrap()).collect();
        let hashes: Vec<u64> = sent.iter().map(hash).collect();
        let sent_names: Vec<_> = sent
            .iter()
            .map(|p| p.id().map(|n| a.resolve(n.0).to_string()))
            .collect();
        crate::intern::enter(&b);
        for (i, bin) in bytes.iter().enumerate() {
            let got: ProfIn = bincode::deserialize(bin).unwrap();
            assert_eq!(
                (got.day(), got.kind(), got.plays, got.skips),
                (sent[i].day(), sent[i].kind(), sent[i].plays, sent[i].skips)
            );
            assert_eq!(got.ms_played(), sent[i].ms_played());
            assert_eq!(got.id().map(|n| b.resolve(n.0).to_string()), sent_names[i]);
            assert_eq!(hash(&got), hashes[i]);
        }
        assert_ne!(a.name("t1"), b.name("t1"), "the two processes' ids differ");
    }

    /// The sizes the memory figures rest on: a profile input packs to 20
    /// bytes at 4-byte alignment, a track row to 44, an artist row to 24.
    #[test]
    fn packed_rows_keep_their_size() {
        assert_eq!(std::mem::size_of::<ProfIn>(), 20);
        assert_eq!(std::mem::align_of::<ProfIn>(), 4);
        assert_eq!(std::mem::size_of::<TrackRow>(), 44);
        assert_eq!(std::mem::align_of::<TrackRow>(), 4);
        assert_eq!(std::mem::size_of::<ArtistRow>(), 24);
    }

    /// A track row keeps sums past `u32` and its completion exactly as
    /// the two sums give it.
    #[test]
    fn track_row_sums_round_trip() {
        let mut r = TrackRow::default();
        let (ms, min, dur) = (5 * 86_400_000_i64 + 7, 3 * 86_400_000_i64 + 1, 7 * 86_400_000_i64 + 3);
        r.set_sums(ms, min, dur);
        assert_eq!(r.ms_played(), ms);
        assert_eq!(r.completion().to_bits(), (min as f64 / dur as f64).to_bits());
        r.plays = u32::MAX;
        r.skips = u32::MAX;
        assert_eq!(r.listens(), 2 * i64::from(u32::MAX));
    }
}
