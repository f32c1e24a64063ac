//! Synthetic listen events: a deterministic, realistic generator (`skipflow generate`).
//!
//! **Model.** Everything is derived from `--seed`: the same configuration always
//! produces the same records, byte for byte, in the same order.
//!
//! - **Catalog.** `max(50000, users*25)` tracks and a tenth as many artists.
//!   Track popularity is Zipf (s = 1.05: a few hits, a very long tail). Each
//!   track belongs to one artist drawn from a Zipf (s = 0.6) over artists, so
//!   popular artists have more tracks. Track lengths are mostly 2 to 6 minutes
//!   (lognormal around 3.6 min), a few between 30 s and 15 min. Ids look real:
//!   users `u` + 10 base-36 chars, tracks `t` + 9 base-62, artists `a` + 9
//!   base-62, event ids 32 hex chars (UUID form `8-4-4-4-12` from web and
//!   desktop clients). About 0.5% of ids are non-ASCII (`ü-…`, `日本-…`,
//!   `🎧-…`, …) so that byte-wise ordering matters.
//! - **Users.** Each user has a home country (time zone), one or two devices,
//!   a skip propensity, a set of 10 to 80 favourite tracks (30 to 60% of their
//!   listens) and an activity level. Activity is heavy-tailed: listens per
//!   active day are lognormal (sigma 1.0, a few users in the hundreds, capped
//!   at 1500) and each user is active on 15% to 98% of days; the overall mean
//!   is about 25 listens per user per day (20000 users x 7 days is about 3.5M
//!   events).
//! - **Sessions.** 1 to 12 sessions a day, started at local-time hours drawn
//!   from a diurnal curve (evening peak around 19-21 h, trough at 3-5 h).
//!   Within a session listens follow each other after 0 to a few seconds,
//!   sometimes up to 8 minutes (never 30 minutes); sessions of one user are
//!   more than 30 minutes apart. A listen's `ts` is when it ended
//!   (start + `ms_played`). A user's sessions may run past midnight UTC.
//! - **Skips.** About 30% of listens are skips (Markov: a skip makes the next
//!   skip likelier, so skip streaks occur; radio and mixes are skipped more,
//!   favourites and searched tracks less). About 80% of skips are early
//!   (`ms_played` < 30000, typically a few seconds), the rest later in the
//!   track. Plays have `ms_played == track_duration_ms`, 4% slightly less.
//! - **Optional fields.** `context` (playlist, album, radio, …) on about 90%
//!   of events, `device` on 95%, `country` on 97%. Field order depends on the
//!   client (four layouts); about 4% of events carry an unknown extra field
//!   (`app_version`, `shuffle`, `offline`, `position_ms`), which is legal.
//! - **Arrival.** The Kafka message timestamp (collector receive time) is
//!   `ts` plus 20 ms to 30 s. Records are emitted in arrival order (ties in
//!   generation order). Keys are the `user_id` bytes.
//! - **Dirty mode** (`--dirty`) adds, deterministically, about 4% of extra or
//!   altered records: ~1% late arrivals (2 minutes to 3 days after `ts`);
//!   identical re-sends (client retries) and conflicting duplicates (same
//!   `event_id`, same UTC day, different `ts`/`event_type`/`ms_played`/track);
//!   the same `event_id` on another day (not a duplicate); ~0.8% malformed
//!   records covering every reject reason of events.md (`too_large`,
//!   `invalid_json` incl. truncated JSON, non-objects, duplicated keys,
//!   invalid UTF-8, null and empty Kafka values, `missing_field:*`,
//!   `wrong_type:*`, `out_of_range:*` for every field). Every day also gets
//!   a scripted set of 14 edge users (ids `u-edge-…` and a few odd ones):
//!   events at exactly midnight and at 23:59:59.999, gaps of exactly
//!   1800000 and 1800001 ms, ties on `ts`,
//!   long skip streaks across sessions, boundary values (`ms_played` 0,
//!   29999, 30000 and 86400000, `track_duration_ms` 1 and 86400000,
//!   `ms_played` > duration), 64-byte and 1-byte ids, null optional fields,
//!   JSON string escapes, a value of exactly 65536 bytes, duplicate groups
//!   that differ in each element of the keep-order tuple, and one invalid
//!   plus one valid record sharing an `event_id`. The first day also has
//!   listens at `ts` 946684800000 and 4102444799999 (far past and far
//!   future), and on the second day (the first if `days` is 1) one "heavy"
//!   user listens about 2600 times, mostly quick skips.
//! - **Caveats.** Determinism holds for a given build platform (sampling uses
//!   `f64` `exp`/`ln`/`powf`). `start_day` should stay within 2000..2099 so
//!   that regular `ts` are valid. In NDJSON files, a `None` value has no
//!   representation and an empty value would be a blank line (not a record):
//!   file writers skip both, so a file holds `records` minus those.
//!
//! Memory stays bounded: records are generated one day at a time (sessions
//! starting that day), kept in a compact form, sorted by arrival, and those
//! arriving before the next day starts are emitted; the rest (spill-over past
//! midnight, late arrivals) wait in a pending buffer.

use rand::RngCore;
use rand_distr::{Distribution, StandardNormal, Zipf};

/// Generator configuration.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Number of (regular) users. Default 2000.
    pub users: u32,
    /// Number of days. Default 7.
    pub days: u32,
    /// Random seed. Default 42.
    pub seed: u64,
    /// Add duplicates, malformed records, late arrivals and boundary cases.
    pub dirty: bool,
    /// First day as days since 1970-01-01 (UTC). Default 20393 (2025-11-01).
    pub start_day: i32,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            users: 2000,
            days: 7,
            seed: 42,
            dirty: false,
            start_day: 20393,
        }
    }
}

/// One generated record: what a collector would append to Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenRecord {
    /// user_id bytes (for malformed records: whatever user id the record was
    /// meant for, may be empty).
    pub key: Vec<u8>,
    /// The JSON value bytes; `None` = a Kafka message with a null value (only
    /// in dirty mode; file writers skip `None`).
    pub value: Option<Vec<u8>>,
    /// Message timestamp (CreateTime) = when the collector received it, epoch
    /// ms UTC.
    pub arrival_ms: i64,
}

/// Counts of what was generated.
///
/// `records = valid_events + malformed`; `valid_events` includes duplicate
/// copies, so a correct job keeps `valid_events - duplicates` events.
/// `late` counts events given a deliberately late arrival (minutes to days).
#[derive(Debug, Default, Clone)]
pub struct GenStats {
    pub records: u64,
    pub valid_events: u64,
    pub duplicates: u64,
    pub malformed: u64,
    pub late: u64,
}

/// Generates records in arrival order (non-decreasing `arrival_ms`), calling
/// `emit` for each. Deterministic for a given config.
pub fn generate(cfg: &GenConfig, emit: &mut dyn FnMut(GenRecord)) -> GenStats {
    let world = World::new(cfg);
    let mut busy = vec![i64::MIN / 2; world.uids.len()];
    let mut sink = Sink::default();
    let mut buf = Vec::with_capacity(1024);
    for d in 0..cfg.days {
        let t0 = world.day_start(d);
        for u in 0..cfg.users {
            gen_user_day(&world, &mut busy, &mut sink, u, d, t0);
        }
        if cfg.dirty {
            scripted_day(&world, &mut sink, d, t0);
        }
        flush(&world, &mut sink, Some(t0 + DAY), &mut buf, emit);
    }
    flush(&world, &mut sink, None, &mut buf, emit);
    sink.stats
}

// ---------------------------------------------------------------------------
// constants and small helpers

const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;
const MIN: i64 = 60_000;
const TS_MIN: i64 = 946_684_800_000;
const TS_END: i64 = 4_102_444_800_000;
const MS_MAX: i64 = 86_400_000;
const SESSION_GAP: i64 = 1_800_000;

/// Regular users' daily listens are capped here.
const MAX_DAILY: f64 = 1500.0;
/// Mean of log(listens per active day).
const RATE_MU: f64 = 3.1;
const RATE_SIGMA: f64 = 1.0;

const P_LATE: f64 = 0.010;
const P_DUP: f64 = 0.012;
const P_CONFLICT: f64 = 0.006;
const P_OTHER_DAY: f64 = 0.003;
const P_MALFORMED: f64 = 0.008;

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn mix(a: u64, b: u64, c: u64, d: u64) -> u64 {
    let mut h = splitmix(a ^ 0x5851_F42D_4C95_7F2D);
    h = splitmix(h ^ b);
    h = splitmix(h ^ c.rotate_left(21));
    splitmix(h ^ d.rotate_left(42))
}

// stream tags for `mix`
const S_USERDAY: u64 = 1;
const S_PROFILE: u64 = 2;
const S_FAV: u64 = 3;
const S_CATALOG: u64 = 4;
const S_SCRIPT: u64 = 5;
const S_IDS: u64 = 6;

/// xoshiro256++, seeded with splitmix64: small, fast and stable across
/// platforms and crate versions (unlike `SmallRng`).
#[derive(Clone)]
struct Rng64 {
    s: [u64; 4],
}

impl Rng64 {
    fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut s = [0u64; 4];
        for x in &mut s {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            *x = splitmix(z);
        }
        Rng64 { s }
    }
    #[inline]
    fn u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
    #[inline]
    fn f64(&mut self) -> f64 {
        (self.u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Uniform in `0..n` (n > 0).
    #[inline]
    fn below(&mut self, n: u64) -> u64 {
        ((self.u64() as u128 * n as u128) >> 64) as u64
    }
    /// Uniform in `lo..hi` (hi > lo).
    #[inline]
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo) as u64) as i64
    }
    #[inline]
    fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
    #[inline]
    fn normal(&mut self) -> f64 {
        StandardNormal.sample(self)
    }
    fn loguniform(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + self.f64() * (hi / lo).ln()).exp()
    }
    fn pick(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut x = self.below(total as u64) as u32;
        for (i, &w) in weights.iter().enumerate() {
            if x < w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
    fn u128(&mut self) -> u128 {
        ((self.u64() as u128) << 64) | self.u64() as u128
    }
}

impl RngCore for Rng64 {
    fn next_u32(&mut self) -> u32 {
        (self.u64() >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let v = self.u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs());
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_eid(out: &mut Vec<u8>, eid: u128, uuid: bool) {
    for i in 0..32 {
        if uuid && (i == 8 || i == 12 || i == 16 || i == 20) {
            out.push(b'-');
        }
        out.push(HEX[((eid >> (124 - 4 * i)) & 0xF) as usize]);
    }
}

fn eid_string(eid: u128, uuid: bool) -> String {
    let mut v = Vec::with_capacity(36);
    push_eid(&mut v, eid, uuid);
    String::from_utf8(v).unwrap()
}

/// JSON string literal (escaped as needed).
fn jstr(s: &str) -> Vec<u8> {
    serde_json::to_vec(s).expect("string serializes")
}

/// JSON string literal with every character written as a `\uXXXX` escape.
fn jstr_all_escaped(s: &str) -> Vec<u8> {
    let mut out = vec![b'"'];
    for unit in s.encode_utf16() {
        out.extend_from_slice(format!("\\u{:04x}", unit).as_bytes());
    }
    out.push(b'"');
    out
}

const M48: u64 = (1 << 48) - 1;

/// A bijection on [0, 2^48), keyed: distinct indexes give distinct ids.
fn perm48(x: u64, key: u64) -> u64 {
    let mul = (0x9E37_79B9_7F4A_7C15u64 & M48) | 1;
    let mut x = (x ^ key) & M48;
    for r in 0..3u64 {
        x = x.wrapping_mul(mul) & M48;
        x ^= x >> 21;
        x = (x.wrapping_add(key.rotate_left(13 * r as u32 + 7))) & M48;
    }
    x
}

const B36: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const B62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn push_base(out: &mut String, mut v: u64, alphabet: &[u8], width: usize) {
    let base = alphabet.len() as u64;
    let mut buf = [0u8; 16];
    for i in (0..width).rev() {
        buf[i] = alphabet[(v % base) as usize];
        v /= base;
    }
    out.push_str(std::str::from_utf8(&buf[..width]).unwrap());
}

/// Many short strings in one buffer.
#[derive(Default)]
struct StrTable {
    buf: String,
    ends: Vec<u32>,
}

impl StrTable {
    fn finish_one(&mut self) {
        self.ends.push(self.buf.len() as u32);
    }
    fn push(&mut self, s: &str) {
        self.buf.push_str(s);
        self.finish_one();
    }
    #[inline]
    fn get(&self, i: u32) -> &str {
        let i = i as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.buf[start..self.ends[i] as usize]
    }
    fn len(&self) -> usize {
        self.ends.len()
    }
}

// ---------------------------------------------------------------------------
// static model tables

/// (country code, UTC offset in hours, weight)
const COUNTRIES: &[(&str, i64, u32)] = &[
    ("US", -5, 24),
    ("BR", -3, 10),
    ("MX", -6, 6),
    ("CA", -5, 4),
    ("GB", 0, 8),
    ("DE", 1, 8),
    ("FR", 1, 5),
    ("ES", 1, 4),
    ("SE", 1, 3),
    ("NL", 1, 3),
    ("PL", 1, 2),
    ("TR", 3, 2),
    ("IN", 5, 6),
    ("ID", 7, 4),
    ("PH", 8, 3),
    ("JP", 9, 5),
    ("KR", 9, 2),
    ("AU", 10, 3),
    ("NG", 1, 2),
];

const DEVICES: &[&str] = &[
    "android",
    "ios",
    "web",
    "desktop",
    "tv",
    "car",
    "smart_speaker",
    "watch",
];
const DEVICE_W: &[u32] = &[40, 30, 10, 12, 3, 2, 2, 1];
/// Field layout used by each device's client.
const DEVICE_LAYOUT: &[u8] = &[0, 1, 2, 3, 0, 1, 2, 1];

const CONTEXTS: &[&str] = &[
    "playlist",
    "album",
    "radio",
    "search",
    "artist",
    "liked_songs",
    "daily_mix",
];
const CONTEXT_W: &[u32] = &[35, 18, 12, 8, 10, 10, 7];
const CONTEXT_SKIP: &[f64] = &[1.0, 0.8, 1.4, 0.6, 0.9, 0.7, 1.3];

/// Session starts by local hour: night trough, morning bump, evening peak.
const HOURLY: &[u32] = &[
    30, 18, 11, 7, 6, 9, 22, 45, 55, 48, 44, 45, 50, 48, 45, 46, 55, 68, 80, 90, 92, 86, 68, 48,
];

// field indexes
const F_EID: u8 = 0;
const F_TYPE: u8 = 1;
const F_USER: u8 = 2;
const F_TRACK: u8 = 3;
const F_ARTIST: u8 = 4;
const F_TS: u8 = 5;
const F_MS: u8 = 6;
const F_DUR: u8 = 7;
const F_CTX: u8 = 8;
const F_DEV: u8 = 9;
const F_COUNTRY: u8 = 10;
const F_EXTRA: u8 = 11;

#[cfg(test)]
const FIELD_NAMES: &[&str] = &crate::decode::FIELDS;

const LAYOUTS: [[u8; 12]; 4] = [
    // android: the documented order
    [
        F_EID, F_TYPE, F_USER, F_TRACK, F_ARTIST, F_TS, F_MS, F_DUR, F_CTX, F_DEV, F_COUNTRY, F_EXTRA,
    ],
    // ios
    [
        F_USER, F_EID, F_TS, F_TYPE, F_TRACK, F_ARTIST, F_DUR, F_MS, F_CTX, F_COUNTRY, F_DEV, F_EXTRA,
    ],
    // web
    [
        F_TS, F_USER, F_TRACK, F_ARTIST, F_TYPE, F_MS, F_DUR, F_EID, F_EXTRA, F_DEV, F_CTX, F_COUNTRY,
    ],
    // desktop: alphabetical
    [
        F_EXTRA, F_ARTIST, F_CTX, F_COUNTRY, F_DEV, F_EID, F_TYPE, F_MS, F_DUR, F_TRACK, F_TS, F_USER,
    ],
];

// Ev.flags bits
const FL_SKIP: u32 = 1;
const FL_CTX_SHIFT: u32 = 1; // 3 bits, 0 = absent, else CONTEXTS[v-1]
const FL_DEV_SHIFT: u32 = 4; // 4 bits, 0 = absent, else DEVICES[v-1]
const FL_COUNTRY: u32 = 1 << 8;
const FL_LAYOUT_SHIFT: u32 = 9; // 2 bits
const FL_EXTRA_SHIFT: u32 = 11; // 3 bits, 0 = none
const FL_UUID: u32 = 1 << 14;

// ---------------------------------------------------------------------------
// the world: catalog and users

struct Catalog {
    tracks: StrTable,
    artists: StrTable,
    track_artist: Vec<u32>,
    track_dur: Vec<u32>,
    zipf: Zipf<f64>,
}

impl Catalog {
    fn new(seed: u64, users: u32) -> Catalog {
        let n_tracks = (users as u64 * 25).max(50_000) as u32;
        let n_artists = (n_tracks / 10).max(1);
        let tkey = mix(seed, S_IDS, 1, 0) & M48;
        let akey = mix(seed, S_IDS, 2, 0) & M48;
        let mut artists = StrTable::default();
        const A_ODD: &[&str] = &["日本-", "é-", "ß-", "😀-", "Ж-"];
        for a in 0..n_artists {
            let h = mix(seed, S_CATALOG, 2, a as u64);
            if h.is_multiple_of(200) {
                artists.buf.push_str(A_ODD[(h >> 32) as usize % A_ODD.len()]);
            } else {
                artists.buf.push('a');
            }
            push_base(&mut artists.buf, perm48(a as u64, akey), B62, 9);
            artists.finish_one();
        }
        let artist_zipf = Zipf::new(n_artists as f64, 0.6).expect("zipf");
        let mut tracks = StrTable::default();
        let mut track_artist = Vec::with_capacity(n_tracks as usize);
        let mut track_dur = Vec::with_capacity(n_tracks as usize);
        const T_ODD: &[&str] = &["ü-", "日本-", "🎵-", "ñ-", "Ω-"];
        for t in 0..n_tracks {
            let h = mix(seed, S_CATALOG, 1, t as u64);
            let mut rng = Rng64::new(h);
            if h.is_multiple_of(300) {
                tracks.buf.push_str(T_ODD[(h >> 32) as usize % T_ODD.len()]);
            } else {
                tracks.buf.push('t');
            }
            push_base(&mut tracks.buf, perm48(t as u64, tkey), B62, 9);
            tracks.finish_one();
            let a = artist_zipf.sample(&mut rng) as u32 - 1;
            track_artist.push(a.min(n_artists - 1));
            let dur = if rng.chance(0.03) {
                rng.range(30_000, 900_000)
            } else {
                let x = (215_000f64.ln() + 0.22 * rng.normal()).exp();
                (x as i64).clamp(120_000, 360_000)
            };
            track_dur.push(dur as u32);
        }
        Catalog {
            tracks,
            artists,
            track_artist,
            track_dur,
            zipf: Zipf::new(n_tracks as f64, 1.05).expect("zipf"),
        }
    }

    #[inline]
    fn sample(&self, rng: &mut Rng64) -> u32 {
        let x = self.zipf.sample(rng) as u32;
        x.saturating_sub(1).min(self.track_dur.len() as u32 - 1)
    }

    fn artist_of(&self, t: u32) -> &str {
        self.artists.get(self.track_artist[t as usize])
    }
}

#[derive(Clone)]
struct User {
    rate: f64,
    p_active: f64,
    skip: f64,
    fav_n: u32,
    fav_p: f64,
    sess_len: f64,
    tz: i64,
    country: u8,
    dev1: u8,
    dev2: u8,
    dev2_p: f64,
    ctx: u8,
    extra: u8,
}

// scripted edge users (dirty mode), appended after the regular users
const E_MIDNIGHT: u32 = 0;
const E_GAPS: u32 = 1;
const E_TIES: u32 = 2;
const E_STREAK: u32 = 3;
const E_BOUNDS: u32 = 4;
const E_LONG: u32 = 5;
const E_LONG_MB: u32 = 6;
const E_NULLS: u32 = 7;
const E_DUP_A: u32 = 8;
const E_DUP_B: u32 = 9;
const E_PAST: u32 = 10;
const E_FUTURE: u32 = 11;
const E_HEAVY: u32 = 12;
const E_EMOJI: u32 = 13;
const EDGE_IDS: &[&str] = &[
    "u-edge-midnight",
    "u-edge-gaps",
    "u-edge-ties",
    "u-edge-streak",
    "u-edge-bounds",
    // 64 bytes, ASCII
    "u0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopq",
    // 64 bytes: 30 x "ü" (2 bytes) + "-日1" (1 + 3 + 1 - 1) ... built below
    "",
    "ü-edge-nulls",
    "zz-edge-dup",
    "ü-edge-dup",
    "u-edge-past",
    "u-edge-future",
    "u-edge-heavy",
    "🎧-edge-emoji",
];

fn long_mb_user() -> String {
    // 30 * 2 + 1 + 3 = 64 bytes
    let mut s = "ü".repeat(30);
    s.push('-');
    s.push('日');
    debug_assert_eq!(s.len(), 64);
    s
}

struct World {
    cfg: GenConfig,
    cat: Catalog,
    users: Vec<User>,
    uids: StrTable,
}

impl World {
    fn new(cfg: &GenConfig) -> World {
        let cat = Catalog::new(cfg.seed, cfg.users);
        let n_edge = if cfg.dirty { EDGE_IDS.len() as u32 } else { 0 };
        let total = cfg.users + n_edge;
        let ukey = mix(cfg.seed, S_IDS, 3, 0) & M48;
        let mut uids = StrTable::default();
        let mut users = Vec::with_capacity(total as usize);
        const U_ODD: &[&str] = &["ü-", "日本-", "🎧-", "é", "Ж-", "Ü"];
        let country_w: Vec<u32> = COUNTRIES.iter().map(|c| c.2).collect();
        for u in 0..total {
            let mut rng = Rng64::new(mix(cfg.seed, S_PROFILE, u as u64, 0));
            if u < cfg.users {
                if rng.below(200) == 0 {
                    uids.buf.push_str(U_ODD[rng.below(U_ODD.len() as u64) as usize]);
                } else {
                    uids.buf.push('u');
                }
                push_base(&mut uids.buf, perm48(u as u64, ukey), B36, 10);
                uids.finish_one();
            } else {
                let e = (u - cfg.users) as usize;
                if e as u32 == E_LONG_MB {
                    uids.push(&long_mb_user());
                } else {
                    uids.push(EDGE_IDS[e]);
                }
            }
            let casual = rng.chance(0.25);
            let p_active = if casual {
                0.15 + 0.35 * rng.f64()
            } else {
                0.6 + 0.38 * rng.f64()
            };
            let rate = (RATE_MU + RATE_SIGMA * rng.normal()).exp();
            let c = rng.pick(&country_w);
            let dev1 = rng.pick(DEVICE_W) as u8;
            let dev2 = rng.pick(DEVICE_W) as u8;
            users.push(User {
                rate,
                p_active,
                skip: 0.10 + 0.50 * rng.f64().powf(1.2),
                fav_n: 10 + rng.below(71) as u32,
                fav_p: 0.3 + 0.3 * rng.f64(),
                sess_len: 6.0 + 20.0 * rng.f64(),
                tz: COUNTRIES[c].1,
                country: c as u8,
                dev1,
                dev2,
                dev2_p: if dev1 == dev2 { 0.0 } else { 0.25 * rng.f64() },
                ctx: rng.pick(CONTEXT_W) as u8,
                extra: if rng.chance(0.06) { 1 + rng.below(4) as u8 } else { 0 },
            });
        }
        World {
            cfg: cfg.clone(),
            cat,
            users,
            uids,
        }
    }

    fn day_start(&self, d: u32) -> i64 {
        (self.cfg.start_day as i64 + d as i64) * DAY
    }

    fn edge(&self, e: u32) -> u32 {
        self.cfg.users + e
    }

    fn fav_track(&self, u: u32, k: u32) -> u32 {
        let mut rng = Rng64::new(mix(self.cfg.seed, S_FAV, u as u64, k as u64));
        self.cat.sample(&mut rng)
    }

    fn uid(&self, u: u32) -> &str {
        self.uids.get(u)
    }

    /// Serializes a compact event (fast path).
    fn write_ev(&self, ev: &Ev, out: &mut Vec<u8>) {
        let layout = &LAYOUTS[((ev.flags >> FL_LAYOUT_SHIFT) & 3) as usize];
        let ctx = (ev.flags >> FL_CTX_SHIFT) & 7;
        let dev = (ev.flags >> FL_DEV_SHIFT) & 15;
        let extra = (ev.flags >> FL_EXTRA_SHIFT) & 7;
        out.push(b'{');
        let mut first = true;
        for &f in layout {
            let present = match f {
                F_CTX => ctx != 0,
                F_DEV => dev != 0,
                F_COUNTRY => ev.flags & FL_COUNTRY != 0,
                F_EXTRA => extra != 0,
                _ => true,
            };
            if !present {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            match f {
                F_EID => {
                    out.extend_from_slice(b"\"event_id\":\"");
                    push_eid(out, ev.eid, ev.flags & FL_UUID != 0);
                    out.push(b'"');
                }
                F_TYPE => out.extend_from_slice(if ev.flags & FL_SKIP != 0 {
                    b"\"event_type\":\"skip\""
                } else {
                    b"\"event_type\":\"play\""
                }),
                F_USER => {
                    out.extend_from_slice(b"\"user_id\":\"");
                    out.extend_from_slice(self.uid(ev.user).as_bytes());
                    out.push(b'"');
                }
                F_TRACK => {
                    out.extend_from_slice(b"\"track_id\":\"");
                    out.extend_from_slice(self.cat.tracks.get(ev.track).as_bytes());
                    out.push(b'"');
                }
                F_ARTIST => {
                    out.extend_from_slice(b"\"artist_id\":\"");
                    out.extend_from_slice(self.cat.artist_of(ev.track).as_bytes());
                    out.push(b'"');
                }
                F_TS => {
                    out.extend_from_slice(b"\"ts\":");
                    push_i64(out, ev.ts);
                }
                F_MS => {
                    out.extend_from_slice(b"\"ms_played\":");
                    push_u64(out, ev.ms as u64);
                }
                F_DUR => {
                    out.extend_from_slice(b"\"track_duration_ms\":");
                    push_u64(out, ev.dur as u64);
                }
                F_CTX => {
                    out.extend_from_slice(b"\"context\":\"");
                    out.extend_from_slice(CONTEXTS[ctx as usize - 1].as_bytes());
                    out.push(b'"');
                }
                F_DEV => {
                    out.extend_from_slice(b"\"device\":\"");
                    out.extend_from_slice(DEVICES[dev as usize - 1].as_bytes());
                    out.push(b'"');
                }
                F_COUNTRY => {
                    out.extend_from_slice(b"\"country\":\"");
                    let c = self.users[ev.user as usize].country as usize;
                    out.extend_from_slice(COUNTRIES[c].0.as_bytes());
                    out.push(b'"');
                }
                _ => self.write_extra(ev, extra, out),
            }
        }
        out.push(b'}');
    }

    fn write_extra(&self, ev: &Ev, kind: u32, out: &mut Vec<u8>) {
        match kind {
            1 => {
                out.extend_from_slice(b"\"app_version\":\"8.");
                push_u64(out, (ev.user % 10) as u64);
                out.push(b'.');
                push_u64(out, ((ev.user / 10) % 60) as u64);
                out.push(b'"');
            }
            2 => out.extend_from_slice(if ev.eid & 1 == 0 {
                b"\"shuffle\":true"
            } else {
                b"\"shuffle\":false"
            }),
            3 => out.extend_from_slice(b"\"offline\":false"),
            _ => {
                out.extend_from_slice(b"\"position_ms\":");
                push_u64(out, ev.ms as u64);
            }
        }
    }

    /// The event's fields as (raw JSON key, raw JSON value), documented order.
    fn obj_of(&self, ev: &Ev) -> Obj {
        let mut o = Obj::default();
        o.set("event_id", jstr(&eid_string(ev.eid, ev.flags & FL_UUID != 0)));
        o.set(
            "event_type",
            if ev.flags & FL_SKIP != 0 {
                &b"\"skip\""[..]
            } else {
                &b"\"play\""[..]
            }
            .to_vec(),
        );
        o.set("user_id", jstr(self.uid(ev.user)));
        o.set("track_id", jstr(self.cat.tracks.get(ev.track)));
        o.set("artist_id", jstr(self.cat.artist_of(ev.track)));
        o.set("ts", ev.ts.to_string().into_bytes());
        o.set("ms_played", ev.ms.to_string().into_bytes());
        o.set("track_duration_ms", ev.dur.to_string().into_bytes());
        let ctx = (ev.flags >> FL_CTX_SHIFT) & 7;
        if ctx != 0 {
            o.set("context", jstr(CONTEXTS[ctx as usize - 1]));
        }
        let dev = (ev.flags >> FL_DEV_SHIFT) & 15;
        if dev != 0 {
            o.set("device", jstr(DEVICES[dev as usize - 1]));
        }
        if ev.flags & FL_COUNTRY != 0 {
            let c = self.users[ev.user as usize].country as usize;
            o.set("country", jstr(COUNTRIES[c].0));
        }
        o
    }
}

/// A JSON object under construction, for the rare hand-made records.
#[derive(Default, Clone)]
struct Obj {
    f: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Obj {
    fn key(name: &str) -> Vec<u8> {
        jstr(name)
    }
    fn set(&mut self, name: &str, raw: Vec<u8>) {
        let k = Obj::key(name);
        if let Some(slot) = self.f.iter_mut().find(|(kk, _)| *kk == k) {
            slot.1 = raw;
        } else {
            self.f.push((k, raw));
        }
    }
    fn set_str(&mut self, name: &str, s: &str) {
        self.set(name, jstr(s));
    }
    fn remove(&mut self, name: &str) {
        let k = Obj::key(name);
        self.f.retain(|(kk, _)| *kk != k);
    }
    fn get(&self, name: &str) -> Option<&[u8]> {
        let k = Obj::key(name);
        self.f.iter().find(|(kk, _)| *kk == k).map(|(_, v)| &v[..])
    }
    fn reverse(&mut self) {
        self.f.reverse();
    }
    fn bytes(&self) -> Vec<u8> {
        let mut out = vec![b'{'];
        for (i, (k, v)) in self.f.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(k);
            out.push(b':');
            out.extend_from_slice(v);
        }
        out.push(b'}');
        out
    }
}

// ---------------------------------------------------------------------------
// pending records

#[derive(Clone, Copy)]
struct Ev {
    ts: i64,
    eid: u128,
    user: u32,
    track: u32,
    ms: u32,
    dur: u32,
    flags: u32,
}

enum Body {
    Ev(Ev),
    Raw(Box<(Vec<u8>, Option<Vec<u8>>)>),
}

struct Item {
    arrival: i64,
    seq: u64,
    body: Body,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Valid,
    Dup,
    Bad,
}

#[derive(Default)]
struct Sink {
    pending: Vec<Item>,
    seq: u64,
    stats: GenStats,
}

impl Sink {
    fn push(&mut self, arrival: i64, body: Body, class: Class) {
        self.stats.records += 1;
        match class {
            Class::Valid => self.stats.valid_events += 1,
            Class::Dup => {
                self.stats.valid_events += 1;
                self.stats.duplicates += 1;
            }
            Class::Bad => self.stats.malformed += 1,
        }
        self.seq += 1;
        self.pending.push(Item {
            arrival,
            seq: self.seq,
            body,
        });
    }
    fn ev(&mut self, arrival: i64, ev: Ev, class: Class) {
        self.push(arrival, Body::Ev(ev), class);
    }
    fn raw(&mut self, arrival: i64, key: &[u8], value: Option<Vec<u8>>, class: Class) {
        self.push(arrival, Body::Raw(Box::new((key.to_vec(), value))), class);
    }
}

fn flush(w: &World, sink: &mut Sink, limit: Option<i64>, buf: &mut Vec<u8>, emit: &mut dyn FnMut(GenRecord)) {
    sink.pending.sort_unstable_by_key(|it| (it.arrival, it.seq));
    let n = match limit {
        Some(l) => sink.pending.partition_point(|it| it.arrival < l),
        None => sink.pending.len(),
    };
    for it in sink.pending.drain(..n) {
        let rec = match it.body {
            Body::Ev(ev) => {
                buf.clear();
                w.write_ev(&ev, buf);
                GenRecord {
                    key: w.uid(ev.user).as_bytes().to_vec(),
                    value: Some(buf.as_slice().to_vec()),
                    arrival_ms: it.arrival,
                }
            }
            Body::Raw(b) => {
                let (key, value) = *b;
                GenRecord {
                    key,
                    value,
                    arrival_ms: it.arrival,
                }
            }
        };
        emit(rec);
    }
}

// ---------------------------------------------------------------------------
// regular users

fn delay(rng: &mut Rng64) -> i64 {
    if rng.chance(0.9) {
        ((350f64.ln() + 0.7 * rng.normal()).exp() as i64).clamp(20, 5_000)
    } else {
        rng.loguniform(1_000.0, 30_000.0) as i64
    }
}

/// Gap between the end of one listen and the start of the next in a session.
fn in_session_gap(rng: &mut Rng64) -> i64 {
    let r = rng.f64();
    if r < 0.6 {
        rng.range(0, 1_500)
    } else if r < 0.9 {
        rng.range(1_500, 60_000)
    } else {
        rng.range(60_000, 8 * MIN)
    }
}

fn early_skip_ms(rng: &mut Rng64, dur: u32) -> u32 {
    let cap = (dur as i64 - 1).clamp(0, 29_999);
    if rng.chance(0.01) {
        return rng.range(0, 300).min(cap) as u32;
    }
    let x = (6_000f64.ln() + 0.9 * rng.normal()).exp() as i64;
    x.clamp(0, cap) as u32
}

fn gen_user_day(w: &World, busy: &mut [i64], sink: &mut Sink, u: u32, d: u32, t0: i64) {
    let prof = &w.users[u as usize];
    let mut rng = Rng64::new(mix(w.cfg.seed, S_USERDAY, u as u64, d as u64));
    if !rng.chance(prof.p_active) {
        return;
    }
    let factor = (-0.045 + 0.3 * rng.normal()).exp();
    let count = (prof.rate * factor + rng.f64()).floor().clamp(1.0, MAX_DAILY) as u32;
    let n_sess = ((count as f64 / prof.sess_len).round() as u32).clamp(1, 12).min(count);

    // listens per session
    let mut weights = [0f64; 12];
    let mut wsum = 0.0;
    for wt in weights.iter_mut().take(n_sess as usize) {
        *wt = 0.2 + 1.6 * rng.f64();
        wsum += *wt;
    }
    let spare = count - n_sess;
    let mut per = [1u32; 12];
    let mut given = 0;
    for i in 0..n_sess as usize {
        let k = (spare as f64 * weights[i] / wsum).floor() as u32;
        per[i] += k;
        given += k;
    }
    for _ in given..spare {
        per[rng.below(n_sess as u64) as usize] += 1;
    }

    // session start offsets within the UTC day, from local-time hours
    let mut starts = [0i64; 12];
    for s in starts.iter_mut().take(n_sess as usize) {
        let local = rng.pick(HOURLY) as i64 * HOUR + rng.range(0, HOUR);
        *s = (local - prof.tz * HOUR).rem_euclid(DAY);
    }
    starts[..n_sess as usize].sort_unstable();

    let dirty = w.cfg.dirty;
    let country_flag = FL_COUNTRY;
    for s in 0..n_sess as usize {
        let mut cur = (t0 + starts[s]).max(busy[u as usize] + SESSION_GAP + 1 + rng.range(0, 20 * MIN));
        let dev = if rng.chance(prof.dev2_p) { prof.dev2 } else { prof.dev1 };
        let dev_bits = if rng.chance(0.95) {
            (dev as u32 + 1) << FL_DEV_SHIFT
        } else {
            0
        };
        let layout = (DEVICE_LAYOUT[dev as usize] as u32) << FL_LAYOUT_SHIFT;
        let uuid = if dev == 2 || dev == 3 { FL_UUID } else { 0 };
        let mut ctx = if rng.chance(0.7) {
            prof.ctx
        } else {
            rng.pick(CONTEXT_W) as u8
        };
        let ctx_present = rng.chance(0.9);
        let mut prev_skip = false;
        let mut last_ts = cur;
        for _ in 0..per[s] {
            if rng.chance(0.04) {
                ctx = rng.pick(CONTEXT_W) as u8;
            }
            let fav = rng.chance(prof.fav_p);
            let track = if fav {
                w.fav_track(u, rng.below(prof.fav_n as u64) as u32)
            } else {
                w.cat.sample(&mut rng)
            };
            let dur = w.cat.track_dur[track as usize];
            let mut p = prof.skip * CONTEXT_SKIP[ctx as usize] * if fav { 0.55 } else { 1.0 };
            if prev_skip {
                p += (1.0 - p) * 0.3;
            }
            let skip = rng.chance(p.min(0.97));
            let ms = if skip {
                if dur > 31_000 && rng.chance(0.2) {
                    rng.range(30_000, dur as i64 - 1_000) as u32
                } else {
                    early_skip_ms(&mut rng, dur)
                }
            } else if rng.chance(0.04) {
                dur - rng.range(1, 4_000.min(dur as i64)) as u32
            } else {
                dur
            };
            prev_skip = skip;
            let ts = cur + ms as i64;
            let mut flags = layout | dev_bits | uuid;
            if skip {
                flags |= FL_SKIP;
            }
            if ctx_present && !rng.chance(0.01) {
                flags |= (ctx as u32 + 1) << FL_CTX_SHIFT;
            }
            if rng.chance(0.97) {
                flags |= country_flag;
            }
            if prof.extra != 0 && rng.chance(0.6) {
                flags |= (prof.extra as u32) << FL_EXTRA_SHIFT;
            }
            let mut eid = rng.u128();
            if uuid != 0 {
                eid = (eid & !(0xFu128 << 76)) | (4u128 << 76);
                eid = (eid & !(0x3u128 << 62)) | (2u128 << 62);
            }
            let ev = Ev {
                ts,
                eid,
                user: u,
                track,
                ms,
                dur,
                flags,
            };
            let arrival = ts + delay(&mut rng);
            if dirty {
                inject(w, sink, &mut rng, ev, arrival, t0);
            } else {
                sink.ev(arrival, ev, Class::Valid);
            }
            last_ts = ts;
            cur = ts + in_session_gap(&mut rng);
        }
        busy[u as usize] = last_ts;
    }
}

/// Dirty mode: the event itself (possibly late), plus retries, conflicting
/// duplicates, a same-id event on another day, or a malformed record.
fn inject(w: &World, sink: &mut Sink, rng: &mut Rng64, ev: Ev, arrival: i64, t0: i64) {
    let r = rng.f64();
    if r < P_LATE {
        let late = ev.ts + rng.loguniform(2.0 * MIN as f64, 72.0 * HOUR as f64) as i64;
        sink.stats.late += 1;
        sink.ev(late.max(arrival), ev, Class::Valid);
    } else {
        sink.ev(arrival, ev, Class::Valid);
        let r = r - P_LATE;
        if r < P_DUP {
            // identical re-sends (same bytes)
            let copies = if rng.chance(0.15) { 2 } else { 1 };
            let mut a = arrival;
            for _ in 0..copies {
                a += rng.loguniform(500.0, 3.0 * HOUR as f64) as i64;
                sink.ev(a, ev, Class::Dup);
            }
        } else if r < P_DUP + P_CONFLICT {
            let c = conflicting(w, rng, ev);
            let a = arrival + rng.loguniform(200.0, HOUR as f64) as i64;
            sink.ev(a, c, Class::Dup);
        } else if r < P_DUP + P_CONFLICT + P_OTHER_DAY {
            let mut c = ev;
            if rng.chance(0.5) {
                c.ts += DAY;
                sink.ev(c.ts + delay(rng), c, Class::Valid);
            } else {
                c.ts -= DAY;
                sink.ev(arrival + rng.range(1_000, HOUR), c, Class::Valid);
            }
        }
    }
    if rng.chance(P_MALFORMED) {
        let mut kind = rng.below(MALFORMED.len() as u64) as usize;
        // keep the (big) too_large records rare
        while matches!(MALFORMED[kind], Mal::Huge | Mal::Exact65537 | Mal::Garbage) && !rng.chance(0.05) {
            kind = rng.below(MALFORMED.len() as u64) as usize;
        }
        let mut m = ev;
        m.eid = rng.u128();
        let (key, value) = malformed(w, rng, MALFORMED[kind], &m);
        sink.raw(arrival.max(t0) + rng.range(0, 2_000), &key, value, Class::Bad);
    }
}

/// Same event_id, same UTC day, different contents.
fn conflicting(w: &World, rng: &mut Rng64, ev: Ev) -> Ev {
    let mut c = ev;
    match rng.below(4) {
        0 => {
            let day0 = ev.ts.div_euclid(DAY) * DAY;
            let shift = rng.range(1, 120_000) * if rng.chance(0.5) { 1 } else { -1 };
            c.ts = (ev.ts + shift).clamp(day0, day0 + DAY - 1);
        }
        1 => {
            if ev.flags & FL_SKIP != 0 {
                c.flags &= !FL_SKIP;
                c.ms = c.dur;
            } else {
                c.flags |= FL_SKIP;
                c.ms = early_skip_ms(rng, c.dur);
            }
        }
        2 => {
            c.ms = (ev.ms as i64 + rng.range(-5_000, 5_000)).clamp(0, MS_MAX) as u32;
        }
        _ => {
            c.track = w.cat.sample(rng);
            c.dur = w.cat.track_dur[c.track as usize];
            if ev.flags & FL_SKIP == 0 {
                c.ms = c.dur;
            }
        }
    }
    c
}

// ---------------------------------------------------------------------------
// malformed records

#[derive(Clone, Copy)]
enum Val {
    Lit(&'static str),
    /// the event's ts, as a JSON string
    TsString,
    /// the event's ts with a `.0`
    TsFloat,
    /// the event's ts in exponent notation
    TsExp,
    /// an ASCII string of this many bytes
    Long(usize),
    /// a 65-byte string of 2-byte characters and ASCII
    LongMb,
}

#[derive(Clone, Copy)]
enum Mal {
    Huge,
    Exact65537,
    Garbage,
    Truncated,
    Lit(&'static str),
    NoValue,
    EmptyValue,
    DupKeyEventId,
    DupKeyTs,
    BadUtf8User,
    BadUtf8Track,
    TrailingGarbage,
    TwoObjects,
    UnquotedKey,
    TrailingComma,
    NanTs,
    SingleQuotes,
    Remove(&'static str),
    Null(&'static str),
    Set(&'static str, Val),
    /// `{"event_id": "", "ts": "x"}`: out_of_range:event_id
    SpecExample,
    /// wrong event_type and missing ts: wrong_type:event_type
    Combo,
}

const MALFORMED: &[Mal] = &[
    // too_large
    Mal::Huge,
    Mal::Exact65537,
    Mal::Garbage,
    // invalid_json
    Mal::Truncated,
    Mal::Lit("[1,2]"),
    Mal::Lit("\"x\""),
    Mal::Lit("42"),
    Mal::Lit("null"),
    Mal::Lit("true"),
    Mal::NoValue,
    Mal::EmptyValue,
    Mal::DupKeyEventId,
    Mal::DupKeyTs,
    Mal::BadUtf8User,
    Mal::BadUtf8Track,
    Mal::TrailingGarbage,
    Mal::TwoObjects,
    Mal::UnquotedKey,
    Mal::TrailingComma,
    Mal::NanTs,
    Mal::SingleQuotes,
    // missing_field
    Mal::Lit("{}"),
    Mal::Remove("event_id"),
    Mal::Remove("event_type"),
    Mal::Remove("user_id"),
    Mal::Remove("track_id"),
    Mal::Remove("artist_id"),
    Mal::Remove("ts"),
    Mal::Remove("ms_played"),
    Mal::Remove("track_duration_ms"),
    Mal::Null("event_id"),
    Mal::Null("event_type"),
    Mal::Null("user_id"),
    Mal::Null("track_id"),
    Mal::Null("artist_id"),
    Mal::Null("ts"),
    Mal::Null("ms_played"),
    Mal::Null("track_duration_ms"),
    // wrong_type
    Mal::Set("event_id", Val::Lit("123")),
    Mal::Set("event_id", Val::Lit("[\"e1\"]")),
    Mal::Set("event_type", Val::Lit("1")),
    Mal::Set("event_type", Val::Lit("true")),
    Mal::Set("user_id", Val::Lit("5")),
    Mal::Set("user_id", Val::Lit("{\"id\":\"u1\"}")),
    Mal::Set("track_id", Val::Lit("7.5")),
    Mal::Set("track_id", Val::Lit("[\"t1\"]")),
    Mal::Set("artist_id", Val::Lit("true")),
    Mal::Set("artist_id", Val::Lit("9")),
    Mal::Set("ts", Val::TsString),
    Mal::Set("ts", Val::TsFloat),
    Mal::Set("ts", Val::TsExp),
    Mal::Set("ts", Val::Lit("1e12")),
    Mal::Set("ts", Val::Lit("true")),
    Mal::Set("ts", Val::Lit("9223372036854775808")),
    Mal::Set("ts", Val::Lit("-9223372036854775809")),
    Mal::Set("ms_played", Val::Lit("true")),
    Mal::Set("ms_played", Val::Lit("\"5000\"")),
    Mal::Set("ms_played", Val::Lit("5000.0")),
    Mal::Set("ms_played", Val::Lit("5e3")),
    Mal::Set("track_duration_ms", Val::Lit("\"200000\"")),
    Mal::Set("track_duration_ms", Val::Lit("2.0e5")),
    Mal::Set("track_duration_ms", Val::Lit("200000.5")),
    Mal::Set("track_duration_ms", Val::Lit("false")),
    Mal::Set("context", Val::Lit("7")),
    Mal::Set("context", Val::Lit("[\"playlist\"]")),
    Mal::Set("device", Val::Lit("false")),
    Mal::Set("device", Val::Lit("{\"os\":\"android\"}")),
    Mal::Set("country", Val::Lit("[\"US\"]")),
    Mal::Set("country", Val::Lit("1")),
    Mal::Combo,
    // out_of_range
    Mal::SpecExample,
    Mal::Set("event_id", Val::Lit("\"\"")),
    Mal::Set("event_id", Val::Long(65)),
    Mal::Set("event_id", Val::LongMb),
    Mal::Set("event_type", Val::Lit("\"pause\"")),
    Mal::Set("event_type", Val::Lit("\"\"")),
    Mal::Set("event_type", Val::Lit("\"PLAY\"")),
    Mal::Set("user_id", Val::Lit("\"\"")),
    Mal::Set("user_id", Val::Long(65)),
    Mal::Set("user_id", Val::LongMb),
    Mal::Set("track_id", Val::Lit("\"\"")),
    Mal::Set("track_id", Val::Long(65)),
    Mal::Set("artist_id", Val::Lit("\"\"")),
    Mal::Set("artist_id", Val::LongMb),
    Mal::Set("ts", Val::Lit("946684799999")),
    Mal::Set("ts", Val::Lit("4102444800000")),
    Mal::Set("ts", Val::Lit("-1")),
    Mal::Set("ts", Val::Lit("9223372036854775807")),
    Mal::Set("ms_played", Val::Lit("-1")),
    Mal::Set("ms_played", Val::Lit("86400001")),
    Mal::Set("ms_played", Val::Lit("-9223372036854775808")),
    Mal::Set("track_duration_ms", Val::Lit("0")),
    Mal::Set("track_duration_ms", Val::Lit("86400001")),
    Mal::Set("track_duration_ms", Val::Lit("-5")),
    Mal::Set("context", Val::Lit("\"\"")),
    Mal::Set("context", Val::Long(65)),
    Mal::Set("device", Val::Lit("\"\"")),
    Mal::Set("device", Val::Long(65)),
    Mal::Set("country", Val::Lit("\"\"")),
    Mal::Set("country", Val::LongMb),
];

fn long_ascii(n: usize, seed: u64) -> String {
    let mut s = String::with_capacity(n);
    let mut rng = Rng64::new(seed);
    for _ in 0..n {
        s.push(B36[rng.below(36) as usize] as char);
    }
    s
}

fn long_mb65() -> String {
    // 31 * 2 + 3 = 65 bytes
    let mut s = "é".repeat(31);
    s.push_str("x-y");
    s
}

/// A full object (every optional field present) for the event.
fn full_obj(w: &World, ev: &Ev) -> Obj {
    let mut o = w.obj_of(ev);
    if o.get("context").is_none() {
        o.set_str("context", "playlist");
    }
    if o.get("device").is_none() {
        o.set_str("device", "android");
    }
    if o.get("country").is_none() {
        let c = w.users[ev.user as usize].country as usize;
        o.set_str("country", COUNTRIES[c].0);
    }
    o
}

fn malformed(w: &World, rng: &mut Rng64, kind: Mal, ev: &Ev) -> (Vec<u8>, Option<Vec<u8>>) {
    let key = w.uid(ev.user).as_bytes().to_vec();
    let mut o = full_obj(w, ev);
    let value = match kind {
        Mal::Huge => {
            let n = rng.range(70_000, 100_000) as usize;
            o.set_str("debug_trace", &"x".repeat(n));
            o.bytes()
        }
        Mal::Exact65537 => pad_to(o, 65_537),
        Mal::Garbage => {
            let mut v = b"{\"event_id\":".to_vec();
            v.extend(std::iter::repeat_n(b'z', 66_000));
            v
        }
        Mal::Truncated => {
            let b = o.bytes();
            let cut = rng.range(1, b.len() as i64 - 1) as usize;
            b[..cut].to_vec()
        }
        Mal::Lit(s) => s.as_bytes().to_vec(),
        Mal::NoValue => return (key, None),
        Mal::EmptyValue => Vec::new(),
        Mal::DupKeyEventId => {
            let mut b = br#"{"event_id":"a","#.to_vec();
            b.extend_from_slice(&o.bytes()[1..]);
            b
        }
        Mal::DupKeyTs => {
            let ts = o.get("ts").unwrap().to_vec();
            let mut b = o.bytes();
            b.pop();
            b.extend_from_slice(b",\"ts\":");
            b.extend_from_slice(&ts);
            b.push(b'}');
            b
        }
        Mal::BadUtf8User => {
            let mut v = b"\"".to_vec();
            v.extend_from_slice(&key);
            v.extend_from_slice(b"\xff\xfe\"");
            o.set("user_id", v);
            o.bytes()
        }
        Mal::BadUtf8Track => {
            let mut v = b"\"t\xc3\x28".to_vec();
            v.extend_from_slice(b"\xed\xa0\x80\"");
            o.set("track_id", v);
            o.bytes()
        }
        Mal::TrailingGarbage => {
            let mut b = o.bytes();
            b.extend_from_slice(b" x");
            b
        }
        Mal::TwoObjects => {
            let mut b = o.bytes();
            b.extend_from_slice(&o.bytes());
            b
        }
        Mal::UnquotedKey => {
            let mut b = b"{event_id:".to_vec();
            b.extend_from_slice(o.get("event_id").unwrap());
            o.remove("event_id");
            b.push(b',');
            b.extend_from_slice(&o.bytes()[1..]);
            b
        }
        Mal::TrailingComma => {
            let mut b = o.bytes();
            b.pop();
            b.extend_from_slice(b",}");
            b
        }
        Mal::NanTs => {
            o.set("ts", b"NaN".to_vec());
            o.bytes()
        }
        Mal::SingleQuotes => {
            let eid = o.get("event_id").unwrap().to_vec();
            let mut q = eid.clone();
            q[0] = b'\'';
            let last = q.len() - 1;
            q[last] = b'\'';
            o.set("event_id", q);
            o.bytes()
        }
        Mal::Remove(f) => {
            o.remove(f);
            o.bytes()
        }
        Mal::Null(f) => {
            o.set(f, b"null".to_vec());
            o.bytes()
        }
        Mal::Set(f, v) => {
            let raw = match v {
                Val::Lit(s) => s.as_bytes().to_vec(),
                Val::TsString => format!("\"{}\"", ev.ts).into_bytes(),
                Val::TsFloat => format!("{}.0", ev.ts).into_bytes(),
                Val::TsExp => {
                    let s = ev.ts.to_string();
                    format!("{}.{}e{}", &s[..1], &s[1..], s.len() - 1).into_bytes()
                }
                Val::Long(n) => jstr(&long_ascii(n, rng.u64())),
                Val::LongMb => jstr(&long_mb65()),
            };
            o.set(f, raw);
            o.bytes()
        }
        Mal::SpecExample => br#"{"event_id": "", "ts": "x"}"#.to_vec(),
        Mal::Combo => {
            o.set("event_type", b"1".to_vec());
            o.remove("ts");
            o.bytes()
        }
    };
    (key, Some(value))
}

/// Pads the object with an extra string field so that it is exactly `n` bytes.
fn pad_to(mut o: Obj, n: usize) -> Vec<u8> {
    o.set_str("padding", "");
    let base = o.bytes().len();
    assert!(base <= n);
    o.set_str("padding", &"p".repeat(n - base));
    let b = o.bytes();
    debug_assert_eq!(b.len(), n);
    b
}

// ---------------------------------------------------------------------------
// scripted edge cases (dirty mode)

struct Script<'a> {
    w: &'a World,
    sink: &'a mut Sink,
    rng: Rng64,
}

impl Script<'_> {
    fn ev(&mut self, user: u32, ts: i64, skip: bool, ms: u32, dur: u32) -> Ev {
        let track = self.w.cat.sample(&mut self.rng);
        let mut flags = FL_COUNTRY | (1 << FL_CTX_SHIFT) | (1 << FL_DEV_SHIFT);
        if skip {
            flags |= FL_SKIP;
        }
        Ev {
            ts,
            eid: self.rng.u128(),
            user,
            track,
            ms,
            dur,
            flags,
        }
    }
    /// A listen of a catalog track ending at `ts`.
    fn listen(&mut self, user: u32, ts: i64, skip: bool) -> Ev {
        let mut e = self.ev(user, ts, skip, 0, 0);
        e.dur = self.w.cat.track_dur[e.track as usize];
        e.ms = if skip {
            early_skip_ms(&mut self.rng, e.dur)
        } else {
            e.dur
        };
        e
    }
    fn arrival(&mut self, ts: i64) -> i64 {
        ts + delay(&mut self.rng)
    }
    fn push(&mut self, e: Ev) {
        let a = self.arrival(e.ts);
        self.sink.ev(a, e, Class::Valid);
    }
    fn push_raw(&mut self, user: u32, ts: i64, value: Vec<u8>, class: Class) {
        let a = self.arrival(ts);
        let key = self.w.uid(user).as_bytes().to_vec();
        self.sink.raw(a, &key, Some(value), class);
    }
}

fn scripted_day(w: &World, sink: &mut Sink, d: u32, t0: i64) {
    let rng = Rng64::new(mix(w.cfg.seed, S_SCRIPT, d as u64, 0));
    let mut s = Script { w, sink, rng };
    let ed = |e: u32| w.edge(e);

    // midnight: exactly 00:00:00.000, 23:59:59.999, and next midnight, the
    // last two sharing an event_id (different days: not duplicates)
    {
        let u = ed(E_MIDNIGHT);
        let a = s.listen(u, t0, false);
        s.push(a);
        let b = s.listen(u, t0 + DAY - 1, true);
        s.push(b);
        let mut c = s.listen(u, t0 + DAY, false);
        c.eid = b.eid;
        s.push(c);
    }
    // gaps of exactly 1800000 (same session) and 1800001 (new session)
    {
        let u = ed(E_GAPS);
        let mut ts = t0 + 9 * HOUR + s.rng.range(0, HOUR);
        for gap in [
            0,
            SESSION_GAP,
            SESSION_GAP + 1,
            SESSION_GAP + 1,
            SESSION_GAP,
            200_000,
            180_000,
        ] {
            ts += gap;
            let e = s.listen(u, ts, gap == 200_000);
            s.push(e);
        }
    }
    // ties on ts
    {
        let u = ed(E_TIES);
        let ts = t0 + 14 * HOUR + s.rng.range(0, HOUR);
        for skip in [false, true, true, false] {
            let e = s.listen(u, ts, skip);
            s.push(e);
        }
        for skip in [true, false] {
            let e = s.listen(u, ts + 200_000, skip);
            s.push(e);
        }
        let e = s.listen(u, ts + 200_001, true);
        s.push(e);
    }
    // a long skip streak crossing a session boundary
    {
        let u = ed(E_STREAK);
        let mut ts = t0 + 16 * HOUR + s.rng.range(0, HOUR);
        for i in 0..24 {
            let skip = i != 20;
            ts += if i == 12 { 40 * MIN } else { s.rng.range(3_000, 25_000) };
            let e = s.listen(u, ts, skip);
            s.push(e);
        }
    }
    // boundary values (all valid)
    {
        let u = ed(E_BOUNDS);
        let mut ts = t0 + 11 * HOUR + s.rng.range(0, HOUR);
        let cases: [(bool, u32, u32); 9] = [
            (true, 0, 200_000),
            (true, 29_999, 200_000),
            (true, 30_000, 200_000),
            (false, 1, 1),
            (true, 0, 1),
            (false, 86_400_000, 86_400_000),
            (false, 200_500, 200_000),
            (false, 86_400_000, 1),
            (true, 5_000, 86_400_000),
        ];
        for (skip, ms, dur) in cases {
            ts += 60_000 + s.rng.range(0, 60_000);
            let e = s.ev(u, ts, skip, ms, dur);
            s.push(e);
        }
        // a 1-byte event_id (same id on other days: different days, no dups)
        ts += 60_000;
        let e = s.listen(u, ts, false);
        let mut o = w.obj_of(&e);
        let id = [b'A' + (d % 26) as u8];
        o.set_str("event_id", std::str::from_utf8(&id).unwrap());
        s.push_raw(u, ts, o.bytes(), Class::Valid);
    }
    // 64-byte values everywhere (user, event, track, artist, optional fields)
    {
        let u = ed(E_LONG);
        let mut ts = t0 + 12 * HOUR + s.rng.range(0, HOUR);
        let e = s.listen(u, ts, false);
        s.push(e);
        ts += 240_000;
        let e = s.listen(u, ts, true);
        let mut o = w.obj_of(&e);
        o.set_str(
            "event_id",
            &format!("{}{}", eid_string(e.eid, false), eid_string(e.eid, false)),
        );
        o.set_str("track_id", &format!("t{}", long_ascii(63, e.eid as u64)));
        o.set_str("artist_id", &long_mb_user());
        o.set_str("context", &format!("playlist:{}", long_ascii(55, 1 + e.eid as u64)));
        o.set_str("device", &"d".repeat(64));
        o.set_str(
            "country",
            &"日本".repeat(10).chars().chain("ab1x".chars()).collect::<String>(),
        );
        s.push_raw(u, ts, o.bytes(), Class::Valid);
        let u = ed(E_LONG_MB);
        for k in 0..3 {
            let e = s.listen(u, ts + k * 300_000, k == 1);
            s.push(e);
        }
    }
    // null optional fields, nested extras, escapes, exactly 65536 bytes
    {
        let u = ed(E_NULLS);
        let mut ts = t0 + 13 * HOUR + s.rng.range(0, HOUR);
        let e = s.listen(u, ts, false);
        let mut o = w.obj_of(&e);
        for f in ["context", "device", "country"] {
            o.set(f, b"null".to_vec());
        }
        s.push_raw(u, ts, o.bytes(), Class::Valid);

        ts += 200_000;
        let e = s.listen(u, ts, true);
        let mut o = w.obj_of(&e);
        o.set("context", b"null".to_vec());
        o.set(
            "meta",
            br#"{"sdk":"x","flags":[1,2.5,{"a":null}],"event_id":7}"#.to_vec(),
        );
        o.set_str("Event_Id", "not-the-event-id");
        o.reverse();
        s.push_raw(u, ts, o.bytes(), Class::Valid);

        // every string escaped: decodes to the same ids (key stays raw UTF-8)
        ts += 200_000;
        let e = s.listen(u, ts, false);
        let mut o = w.obj_of(&e);
        o.set("user_id", jstr_all_escaped(w.uid(u)));
        o.set("track_id", jstr_all_escaped(w.cat.tracks.get(e.track)));
        o.set_str("device", "web/\"beta\"\\");
        let mut b = o.bytes();
        // an escaped key: "event\u005fid" is "event_id"
        let needle = b"\"event_id\"";
        let pos = b.windows(needle.len()).position(|x| x == needle).unwrap();
        b.splice(pos..pos + needle.len(), b"\"event\\u005fid\"".iter().copied());
        s.push_raw(u, ts, b, Class::Valid);

        // exactly 65536 bytes: valid (too_large is > 65536)
        ts += 200_000;
        let e = s.listen(u, ts, true);
        let b = pad_to(w.obj_of(&e), 65_536);
        s.push_raw(u, ts, b, Class::Valid);

        // an invalid and a valid record sharing an event_id: no duplicate
        ts += 200_000;
        let e = s.listen(u, ts, false);
        let mut o = w.obj_of(&e);
        o.set("ms_played", b"-1".to_vec());
        s.push_raw(u, ts, o.bytes(), Class::Bad);
        s.push(e);
    }
    // duplicate groups differing in each element of the keep-order tuple
    {
        let ua = ed(E_DUP_A);
        let ub = ed(E_DUP_B);
        let mut ts = t0 + 15 * HOUR + s.rng.range(0, HOUR);
        for g in 0..9 {
            ts += 300_000;
            let base = s.listen(ua, ts, false);
            s.push(base);
            let mut c = base;
            match g {
                0 => {
                    c.flags |= FL_SKIP;
                    c.ms = 4_000;
                }
                1 => c.user = ub,
                2 => {
                    c.track = s.w.cat.sample(&mut s.rng);
                    c.dur = s.w.cat.track_dur[c.track as usize];
                    c.ms = c.dur;
                }
                3 => {
                    let mut o = w.obj_of(&c);
                    o.set_str("artist_id", &format!("a-{}", long_ascii(8, c.eid as u64)));
                    s.push_raw(ua, ts + 1_000, o.bytes(), Class::Dup);
                    continue;
                }
                4 => {
                    c.ms -= 1;
                    let mut c2 = base;
                    c2.ms -= 2;
                    let a = s.arrival(ts + 5_000);
                    s.sink.ev(a, c2, Class::Dup);
                }
                5 => c.dur += 1,
                6 => c.ts -= 1,
                7 => {
                    // same tuple, different field order and an extra field
                    let mut o = w.obj_of(&c);
                    o.reverse();
                    o.set_str("app_version", "9.0.0");
                    s.push_raw(ua, ts + 2_000, o.bytes(), Class::Dup);
                    continue;
                }
                _ => {
                    // same id on the next day: not a duplicate
                    c.ts += DAY;
                    let a = s.arrival(c.ts);
                    s.sink.ev(a, c, Class::Valid);
                    continue;
                }
            }
            let a = s.arrival(ts + 3_000);
            s.sink.ev(a, c, Class::Dup);
        }
    }
    // a non-ASCII user with a short session
    {
        let u = ed(E_EMOJI);
        let mut ts = t0 + 20 * HOUR + s.rng.range(0, HOUR);
        for k in 0..5 {
            ts += 100_000 + s.rng.range(0, 100_000);
            let e = s.listen(u, ts, k % 2 == 1);
            s.push(e);
        }
    }
    // every kind of malformed record, once a day
    for (i, &kind) in MALFORMED.iter().enumerate() {
        let u = s.rng.below(w.cfg.users.max(1) as u64) as u32;
        let u = if w.cfg.users == 0 { ed(E_EMOJI) } else { u };
        let ts = t0 + s.rng.range(0, DAY);
        let e = s.listen(u, ts, i % 3 == 0);
        let (key, value) = malformed(w, &mut s.rng, kind, &e);
        let a = t0 + s.rng.range(0, DAY);
        s.sink.raw(a, &key, value, Class::Bad);
    }
    // far past and far future (first day only); arrival is "now"
    if d == 0 {
        let u = ed(E_PAST);
        for (k, off) in [0, 0, 500, SESSION_GAP + 1].into_iter().enumerate() {
            let e = s.listen(u, TS_MIN + off, k == 2);
            let a = t0 + s.rng.range(HOUR, 20 * HOUR);
            s.sink.ev(a, e, Class::Valid);
        }
        let u = ed(E_FUTURE);
        for (k, off) in [3_600_001, SESSION_GAP, 1, 0].into_iter().enumerate() {
            let e = s.listen(u, TS_END - 1 - off, k == 1);
            let a = t0 + s.rng.range(HOUR, 20 * HOUR);
            s.sink.ev(a, e, Class::Valid);
        }
    }
    // the heavy user: ~2600 listens in one day, mostly quick skips
    if d == 1.min(w.cfg.days.saturating_sub(1)) {
        let u = ed(E_HEAVY);
        let mut ts = t0 + 30 * MIN;
        for k in 0..2600 {
            if k % 400 == 399 {
                ts += 31 * MIN + s.rng.range(0, 10 * MIN);
            }
            let skip = s.rng.chance(0.92);
            let mut e = s.listen(u, ts, skip);
            if skip {
                e.ms = s.rng.range(1_000, 15_000) as u32;
            }
            e.ts = ts + e.ms as i64;
            ts = e.ts + s.rng.range(0, 1_500);
            s.push(e);
        }
    }
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
    use serde_json::Value;
    use std::collections::{HashMap, HashSet};

    /// A top-level JSON object that rejects duplicated keys.
    struct Fields(Vec<(String, Value)>);

    impl<'de> Deserialize<'de> for Fields {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Fields;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Fields, A::Error> {
                    let mut out: Vec<(String, Value)> = Vec::new();
                    while let Some((k, v)) = m.next_entry::<String, Value>()? {
                        if out.iter().any(|(kk, _)| *kk == k) {
                            return Err(serde::de::Error::custom("duplicate key"));
                        }
                        out.push((k, v));
                    }
                    Ok(Fields(out))
                }
            }
            d.deserialize_map(V)
        }
    }

    #[derive(Debug, Clone, PartialEq)]
    struct Valid {
        event_id: String,
        event_type: String,
        user_id: String,
        track_id: String,
        artist_id: String,
        ts: i64,
        ms_played: i64,
        track_duration_ms: i64,
    }

    /// events.md validation: Ok(event) or Err(reason).
    fn validate(value: Option<&[u8]>) -> Result<Valid, String> {
        let v = match value {
            None => return Err("invalid_json".into()),
            Some(v) => v,
        };
        if v.len() > 65536 {
            return Err("too_large".into());
        }
        if v.is_empty() {
            return Err("invalid_json".into());
        }
        let fields: Fields = serde_json::from_slice(v).map_err(|_| "invalid_json".to_string())?;
        let get = |name: &str| -> Option<&Value> {
            fields
                .0
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v)
                .filter(|v| !v.is_null())
        };
        let mut strs = HashMap::new();
        let mut ints = HashMap::new();
        for (i, name) in FIELD_NAMES.iter().enumerate() {
            let required = i < 8;
            let Some(val) = get(name) else {
                if required {
                    return Err(format!("missing_field:{name}"));
                }
                continue;
            };
            let is_int = matches!(*name, "ts" | "ms_played" | "track_duration_ms");
            if is_int {
                let n = val
                    .as_i64()
                    .filter(|_| val.is_i64())
                    .ok_or_else(|| format!("wrong_type:{name}"))?;
                let ok = match *name {
                    "ts" => (TS_MIN..TS_END).contains(&n),
                    "ms_played" => (0..=MS_MAX).contains(&n),
                    _ => (1..=MS_MAX).contains(&n),
                };
                if !ok {
                    return Err(format!("out_of_range:{name}"));
                }
                ints.insert(*name, n);
            } else {
                let s = val.as_str().ok_or_else(|| format!("wrong_type:{name}"))?;
                let ok = if *name == "event_type" {
                    s == "play" || s == "skip"
                } else {
                    (1..=64).contains(&s.len())
                };
                if !ok {
                    return Err(format!("out_of_range:{name}"));
                }
                strs.insert(*name, s.to_string());
            }
        }
        Ok(Valid {
            event_id: strs["event_id"].clone(),
            event_type: strs["event_type"].clone(),
            user_id: strs["user_id"].clone(),
            track_id: strs["track_id"].clone(),
            artist_id: strs["artist_id"].clone(),
            ts: ints["ts"],
            ms_played: ints["ms_played"],
            track_duration_ms: ints["track_duration_ms"],
        })
    }

    fn collect(cfg: &GenConfig) -> (Vec<GenRecord>, GenStats) {
        let mut out = Vec::new();
        let stats = generate(cfg, &mut |r| out.push(r));
        (out, stats)
    }

    fn small(dirty: bool) -> GenConfig {
        GenConfig {
            users: 300,
            days: 3,
            seed: 7,
            dirty,
            ..GenConfig::default()
        }
    }

    #[test]
    fn deterministic() {
        for dirty in [false, true] {
            let (a, sa) = collect(&small(dirty));
            let (b, sb) = collect(&small(dirty));
            assert_eq!(a.len(), b.len());
            assert!(a == b, "same seed must give identical records");
            assert_eq!(sa.records, sb.records);
            let mut cfg = small(dirty);
            cfg.seed = 8;
            let (c, _) = collect(&cfg);
            assert!(a != c, "another seed gives other records");
        }
    }

    #[test]
    fn arrival_order() {
        for dirty in [false, true] {
            let (recs, stats) = collect(&small(dirty));
            assert_eq!(recs.len() as u64, stats.records);
            for p in recs.windows(2) {
                assert!(p[0].arrival_ms <= p[1].arrival_ms);
            }
        }
    }

    #[test]
    fn clean_is_valid() {
        let cfg = small(false);
        let (recs, stats) = collect(&cfg);
        let mut ids = HashSet::new();
        let first = cfg.start_day as i64 * DAY;
        let mut skips = 0u64;
        let mut early = 0u64;
        for r in &recs {
            let v = r.value.as_deref().expect("clean mode has values");
            assert!(!v.contains(&b'\n'));
            let e = validate(Some(v)).unwrap_or_else(|why| {
                panic!("{why}: {}", String::from_utf8_lossy(v));
            });
            assert_eq!(r.key, e.user_id.as_bytes());
            assert!(r.arrival_ms > e.ts && r.arrival_ms - e.ts <= 30_000);
            assert!(e.ts >= first && e.ts < first + (cfg.days as i64 + 1) * DAY);
            assert!(ids.insert(e.event_id.clone()), "unique event ids");
            if e.event_type == "skip" {
                skips += 1;
                if e.ms_played < 30_000 {
                    early += 1;
                }
                assert!(e.ms_played < e.track_duration_ms);
            } else {
                assert!(e.ms_played <= e.track_duration_ms);
                assert!(e.ms_played > e.track_duration_ms - 4_000);
            }
            // optional fields, when present, are valid strings
            let full: Value = serde_json::from_slice(v).unwrap();
            for f in ["context", "device", "country"] {
                if let Some(x) = full.get(f) {
                    assert!(x.as_str().is_some_and(|s| !s.is_empty() && s.len() <= 64));
                }
            }
        }
        assert_eq!(stats.records, recs.len() as u64);
        assert_eq!(stats.valid_events, stats.records);
        assert_eq!(stats.duplicates + stats.malformed + stats.late, 0);
        let rate = skips as f64 / recs.len() as f64;
        assert!((0.22..0.40).contains(&rate), "skip rate {rate}");
        assert!(early as f64 / skips as f64 > 0.65);
    }

    #[test]
    fn sessions_are_separated() {
        // within a user's listens (sorted by ts), gaps are either < 30 min
        // (same session) or > 30 min; sessions have several listens
        let (recs, _) = collect(&small(false));
        let mut by_user: HashMap<Vec<u8>, Vec<i64>> = HashMap::new();
        for r in &recs {
            let e = validate(r.value.as_deref()).unwrap();
            by_user.entry(r.key.clone()).or_default().push(e.ts);
        }
        let (mut sessions, mut listens) = (0u64, 0u64);
        for ts in by_user.values_mut() {
            ts.sort_unstable();
            sessions += 1;
            listens += ts.len() as u64;
            for p in ts.windows(2) {
                if p[1] - p[0] > SESSION_GAP {
                    sessions += 1;
                }
            }
        }
        let per = listens as f64 / sessions as f64;
        assert!((4.0..40.0).contains(&per), "listens per session {per}");
    }

    #[test]
    fn dirty_covers_every_reject_reason() {
        for seed in [3, 4] {
            check_dirty(seed);
        }
    }

    fn check_dirty(seed: u64) {
        let cfg = GenConfig {
            users: 200,
            days: 2,
            seed,
            dirty: true,
            ..GenConfig::default()
        };
        let (recs, stats) = collect(&cfg);
        let mut reasons: HashMap<String, u64> = HashMap::new();
        let mut valid = 0u64;
        let mut groups: HashMap<(String, i64), u64> = HashMap::new();
        let mut seen_ts = HashSet::new();
        let mut null_values = 0;
        let mut empty_values = 0;
        for r in &recs {
            if let Some(v) = &r.value {
                assert!(!v.contains(&b'\n') && !v.contains(&b'\r'), "NDJSON-safe");
            }
            match r.value.as_deref() {
                None => null_values += 1,
                Some([]) => empty_values += 1,
                _ => {}
            }
            match validate(r.value.as_deref()) {
                Ok(e) => {
                    valid += 1;
                    seen_ts.insert(e.ts);
                    *groups.entry((e.event_id, e.ts.div_euclid(DAY))).or_default() += 1;
                }
                Err(why) => *reasons.entry(why).or_default() += 1,
            }
        }
        let mut expected = vec!["too_large".to_string(), "invalid_json".to_string()];
        for (i, f) in FIELD_NAMES.iter().enumerate() {
            if i < 8 {
                expected.push(format!("missing_field:{f}"));
            }
            expected.push(format!("wrong_type:{f}"));
            expected.push(format!("out_of_range:{f}"));
        }
        for e in &expected {
            assert!(reasons.contains_key(e), "no record rejected as {e}");
        }
        assert!(null_values > 0 && empty_values > 0);
        let dups: u64 = groups.values().map(|n| n - 1).sum();
        assert_eq!(valid, stats.valid_events);
        assert_eq!(reasons.values().sum::<u64>(), stats.malformed);
        assert_eq!(dups, stats.duplicates);
        assert!(stats.late > 0);
        // valid boundary values
        for ts in [TS_MIN, TS_END - 1, cfg.start_day as i64 * DAY] {
            assert!(seen_ts.contains(&ts), "missing ts {ts}");
        }
        assert!(seen_ts.iter().any(|t| t % DAY == DAY - 1));
        let frac = (stats.records - stats.valid_events + stats.duplicates + stats.late) as f64 / stats.records as f64;
        assert!(frac > 0.01 && frac < 0.15, "dirty fraction {frac}");
    }

    #[test]
    fn heavy_user_and_edges() {
        let cfg = GenConfig {
            users: 50,
            days: 2,
            seed: 11,
            dirty: true,
            ..GenConfig::default()
        };
        let (recs, _) = collect(&cfg);
        let mut per_user_day: HashMap<(String, i64), u64> = HashMap::new();
        let mut ts_by_user: HashMap<String, Vec<i64>> = HashMap::new();
        for r in &recs {
            if let Ok(e) = validate(r.value.as_deref()) {
                *per_user_day.entry((e.user_id.clone(), e.ts / DAY)).or_default() += 1;
                ts_by_user.entry(e.user_id).or_default().push(e.ts);
            }
        }
        assert!(per_user_day.values().any(|&n| n >= 2000));
        let gaps = &mut ts_by_user.get_mut("u-edge-gaps").unwrap();
        gaps.sort_unstable();
        let diffs: HashSet<i64> = gaps.windows(2).map(|p| p[1] - p[0]).collect();
        assert!(diffs.contains(&SESSION_GAP) && diffs.contains(&(SESSION_GAP + 1)));
        let ties = &ts_by_user["u-edge-ties"];
        let distinct: HashSet<_> = ties.iter().collect();
        assert!(distinct.len() < ties.len());
        assert!(ts_by_user.keys().any(|u| u.len() == 64 && !u.is_ascii()));
        assert!(ts_by_user.keys().any(|u| u.len() == 64 && u.is_ascii()));
    }

    #[test]
    fn volume_is_about_25_per_user_day() {
        let cfg = GenConfig {
            users: 2000,
            days: 3,
            seed: 42,
            dirty: false,
            ..GenConfig::default()
        };
        let mut n = 0u64;
        let mut per_user: HashMap<Vec<u8>, u64> = HashMap::new();
        let stats = generate(&cfg, &mut |r| {
            n += 1;
            *per_user.entry(r.key).or_default() += 1;
        });
        assert_eq!(n, stats.records);
        let mean = n as f64 / (cfg.users as f64 * cfg.days as f64);
        assert!((15.0..40.0).contains(&mean), "mean listens/user/day {mean}");
        let max = *per_user.values().max().unwrap() as f64 / cfg.days as f64;
        assert!(max > 100.0, "heavy tail: busiest user {max}/day");
    }
}
