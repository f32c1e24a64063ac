//! The dataflow against the plain-Rust reference (tests/common/reference.rs)
//! on generated inputs: duplicates (identical and conflicting), ties, gaps of
//! exactly 30 minutes, midnight, malformed records, ranges, worker counts.

mod common;

use common::harness;
use proptest::prelude::*;

const BASE_DAY: i64 = 20393; // 2025-11-01
const USERS: [&str; 6] = ["u1", "u2", "U3", "ü", "日本", "u\u{1F600}"];
const TRACKS: [&str; 7] = ["t1", "t2", "t3", "t4", "T", "é", "t10"];
const ARTISTS: [&str; 5] = ["a1", "a2", "a10", "Ä", "b"];
/// Offsets within a day chosen to hit the session-gap boundary and midnight.
const OFFSETS: [i64; 10] = [
    0, 1_000, 1_801_000, 1_801_001, 3_601_002, 3_601_002, 5_401_003, 43_200_000, 86_399_999, 7_200_000,
];
const MS_PLAYED: [i64; 7] = [0, 29_999, 30_000, 120_000, 180_000, 250_000, 86_400_000];
const DURATION: [i64; 4] = [1, 180_000, 200_000, 86_400_000];

#[derive(Clone, Debug)]
struct Ev {
    eid: u8,
    skip: bool,
    user: u8,
    track: u8,
    artist: u8,
    day: u8,
    offset: u8,
    jitter: u16,
    ms: u8,
    dur: u8,
}

impl Ev {
    fn json(&self) -> Vec<u8> {
        let ts = (BASE_DAY + self.day as i64) * 86_400_000
            + OFFSETS[self.offset as usize % OFFSETS.len()]
            + if self.jitter < 200 {
                0
            } else {
                self.jitter as i64 * 1000
            };
        let ts = ts.min((BASE_DAY + self.day as i64 + 1) * 86_400_000 - 1);
        serde_json::json!({
            "event_id": format!("e{}", self.eid),
            "event_type": if self.skip { "skip" } else { "play" },
            "user_id": USERS[self.user as usize % USERS.len()],
            "track_id": TRACKS[self.track as usize % TRACKS.len()],
            "artist_id": ARTISTS[self.artist as usize % ARTISTS.len()],
            "ts": ts,
            "ms_played": MS_PLAYED[self.ms as usize % MS_PLAYED.len()],
            "track_duration_ms": DURATION[self.dur as usize % DURATION.len()],
            "context": "playlist",
        })
        .to_string()
        .into_bytes()
    }
}

fn ev() -> impl Strategy<Value = Ev> {
    (
        0u8..40,
        any::<bool>(),
        0u8..6,
        0u8..7,
        0u8..5,
        // Four neighbouring days and two a month later: profile windows fill,
        // stay unchanged over as-of days with no listens, and empty again.
        prop::sample::select(vec![0u8, 1, 2, 3, 30, 31]),
        0u8..10,
        0u16..400,
        0u8..7,
        0u8..4,
    )
        .prop_map(|(eid, skip, user, track, artist, day, offset, jitter, ms, dur)| Ev {
            eid,
            skip,
            user,
            track,
            artist,
            day,
            offset,
            jitter,
            ms,
            dur,
        })
}

const BAD: [&str; 8] = [
    "not json",
    "{\"event_id\":\"x\"}",
    "{\"event_id\":\"x\",\"event_id\":\"y\"}",
    "[1,2]",
    "{\"event_id\": \"\", \"ts\": \"x\"}",
    "{\"event_id\":\"z\",\"event_type\":\"play\",\"user_id\":\"u1\",\"track_id\":\"t1\",\"artist_id\":\"a1\",\"ts\":1.5e12,\"ms_played\":1,\"track_duration_ms\":2}",
    "{\"event_id\":\"z\",\"event_type\":\"pause\",\"user_id\":\"u1\",\"track_id\":\"t1\",\"artist_id\":\"a1\",\"ts\":1762000000000,\"ms_played\":1,\"track_duration_ms\":2}",
    "   ",
];

fn lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let line = prop_oneof![
        12 => ev().prop_map(|e| e.json()),
        1 => (0usize..BAD.len()).prop_map(|i| BAD[i].as_bytes().to_vec()),
    ];
    // Events plus re-sent copies (client retries).
    (
        prop::collection::vec(line, 1..160),
        prop::collection::vec(any::<prop::sample::Index>(), 0..20),
    )
        .prop_map(|(mut v, dups)| {
            for d in dups {
                let copy = v[d.index(v.len())].clone();
                v.push(copy);
            }
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, .. ProptestConfig::default() })]

    #[test]
    fn tables_equal_reference(
        lines in lines(),
        workers in 1usize..4,
        ranged in any::<bool>(),
        perm in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = lines;
        // Any order: rotate by a random amount.
        let k = perm.index(lines.len());
        lines.rotate_left(k);
        let input = dir.path().join("events.ndjson");
        harness::write_lines(&input, &lines);
        let range = ranged.then_some(((BASE_DAY + 1) as i32, (BASE_DAY + 2) as i32));
        let out = dir.path().join("out");
        let report = harness::batch(std::slice::from_ref(&input), &out, range, workers);
        let expected = harness::reference_of(&[input], range);
        harness::assert_counts(&report, &expected);
        harness::assert_tables(&out, &expected.tables);
    }
}
