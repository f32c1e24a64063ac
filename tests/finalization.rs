//! Continuous mode, finalization (semantics.md): `_SUCCESS` exactly when the
//! watermark passes the end of a day plus `finalize_after`; later listens of
//! a final day go to `late_events` and change nothing else; idle partitions
//! do not hold the watermark back; the state of final days is released
//! (arrangements stay flat over ten days) while the tables still equal one
//! batch run; kill -9 with finalization in play reaches the batch tables.

mod common;

use common::cont::{balanced, batch_run, days_of_records, http_get, last_report, sigterm, skipflow_run};
use common::kafka::{produce, TOPIC};
use common::output::{self, Tables};
use common::tansu::free_port;
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use skipflow::batch::{self, BatchConfig};
use skipflow::broker::EmbeddedKafka;
use skipflow::continuous::{self, Checkpoint, RunConfig, StartAt};
use skipflow::generate::{GenConfig, GenRecord};
use skipflow::source::kafka::KafkaInput;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::cont::DAY;
const HOUR: i64 = 3_600_000;
/// 2025-11-08
const D: i64 = 20_400;

fn day_str(d: i64) -> String {
    skipflow::dates::day_to_string(d as i32)
}

/// One listen as JSON.
fn event(id: &str, user: &str, ts: i64, ms_played: i64) -> Vec<u8> {
    format!(
        r#"{{"event_id":"{id}","event_type":"play","user_id":"{user}","track_id":"t-{}","artist_id":"a-{}","ts":{ts},"ms_played":{ms_played},"track_duration_ms":200000}}"#,
        ts % 7,
        ts % 3
    )
    .into_bytes()
}

/// Produces (partition, value, message timestamp) records and waits for delivery.
fn send(addr: &str, recs: &[(i32, Vec<u8>, i64)]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("linger.ms", "0")
        .create()
        .unwrap();
    for (part, v, ts) in recs {
        p.send(
            BaseRecord::<[u8], [u8]>::to(TOPIC)
                .partition(*part)
                .payload(v)
                .timestamp(*ts),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

/// A continuous run in this process, stopped (final commit) on drop or `stop`.
struct Job {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<anyhow::Result<u64>>>,
    out: PathBuf,
    metrics: String,
}

impl Job {
    fn start(addr: &str, out: &Path, finalize_after: Duration) -> Job {
        let metrics = format!("127.0.0.1:{}", free_port());
        let cfg = RunConfig {
            output: out.to_path_buf(),
            kafka: KafkaInput::new(addr, TOPIC),
            start: StartAt::Earliest,
            commit_interval: Duration::from_millis(200),
            finalize_after,
            workers: 2,
            epoch: Duration::from_millis(20),
            metrics_addr: Some(metrics.clone()),
            discovery_interval: Duration::from_secs(30),
            topology: Default::default(),
            storage: Default::default(),
            quality: Default::default(),
            standby: false,
            health: Default::default(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || continuous::run(&cfg, s2));
        Job {
            stop,
            handle: Some(handle),
            out: out.to_path_buf(),
            metrics,
        }
    }

    /// Waits for a checkpoint that reflects `total` records, written after
    /// the current one (so the states it decided on include them).
    fn caught_up(&self, total: i64) -> Checkpoint {
        let before = continuous::read_checkpoint(&self.out).unwrap().map_or(0, |c| c.commits);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(c)) = continuous::read_checkpoint(&self.out) {
                if c.offsets.values().sum::<i64>() >= total && c.commits > before + 1 {
                    // The markers follow the checkpoint: one more commit settles them.
                    let n = c.commits;
                    while continuous::read_checkpoint(&self.out).unwrap().unwrap().commits == n {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    return continuous::read_checkpoint(&self.out).unwrap().unwrap();
                }
            }
            if self.handle.as_ref().is_some_and(|h| h.is_finished()) {
                panic!("the continuous run ended early");
            }
            assert!(
                Instant::now() < deadline,
                "the checkpoint never reached {total} records"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap().unwrap()
    }

    fn metric(&self, name: &str) -> f64 {
        let text = http_get(&self.metrics, "/metrics");
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn success(out: &Path, table: &str, day: i64) -> bool {
    out.join(table)
        .join(format!("dt={}", day_str(day)))
        .join("_SUCCESS")
        .exists()
}

fn has_partition(out: &Path, table: &str, day: i64) -> bool {
    out.join(table).join(format!("dt={}", day_str(day))).is_dir()
}

/// Every `_SUCCESS` marker under `out`, as "table/dt=day".
fn markers(out: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for t in std::fs::read_dir(out).unwrap() {
        let t = t.unwrap();
        let tn = t.file_name().to_string_lossy().to_string();
        if tn.starts_with('.') || tn.starts_with('_') || !t.path().is_dir() {
            continue;
        }
        for p in std::fs::read_dir(t.path()).unwrap() {
            let p = p.unwrap();
            if p.path().join("_SUCCESS").exists() {
                v.push(format!("{tn}/{}", p.file_name().to_string_lossy()));
            }
        }
    }
    v.sort();
    v
}

/// The user_daily row of `user` on `day`, as JSON values.
fn daily_listens(t: &Tables, user: &str, day: i64) -> Option<i64> {
    t.get("user_daily")?
        .get(&day_str(day))?
        .iter()
        .find(|r| r[0] == user)
        .map(|r| r[2].as_i64().unwrap())
}

fn profile_listens(t: &Tables, user: &str, as_of: i64) -> Option<i64> {
    t.get("user_profile_28d")?
        .get(&day_str(as_of))?
        .iter()
        .find(|r| r[0] == user)
        .map(|r| r[3].as_i64().unwrap())
}

/// The partitions (table -> days) the last commit that wrote anything replaced.
fn last_writes(out: &Path) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut names: Vec<_> = std::fs::read_dir(out.join("_runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for n in names.iter().rev() {
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(n).unwrap()).unwrap();
        let t = r["tables"].as_object().unwrap();
        if !t.is_empty() {
            return t
                .iter()
                .map(|(k, v)| {
                    let mut days: Vec<String> = v["days"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|d| d.as_str().unwrap().to_string())
                        .collect();
                    days.sort();
                    (k.clone(), days)
                })
                .collect();
        }
    }
    panic!("no commit wrote anything");
}

/// Feature tables only (late_events and rejected_events set aside).
fn features(mut t: Tables) -> Tables {
    t.remove("late_events");
    t.remove("rejected_events");
    t
}

#[test]
fn success_late_events_and_open_day_updates_follow_the_watermark() {
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 2).unwrap();
    let addr = k.bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let job = Job::start(addr, &out, Duration::from_secs(3600));
    let mut sent = 0i64;
    let mut listens: Vec<Vec<u8>> = Vec::new(); // what a batch over the non-late events sees
    let mut push = |recs: Vec<(i32, Vec<u8>, i64)>, late: bool, listens: &mut Vec<Vec<u8>>| {
        if !late {
            listens.extend(recs.iter().map(|r| r.1.clone()));
        }
        sent += recs.len() as i64;
        send(addr, &recs);
        sent
    };

    // Day D, and one listen just after midnight: the watermark is D+1 00:30.
    let mut a = Vec::new();
    for u in 0..4 {
        for i in 0..10 {
            let ts = D * DAY + 10 * HOUR + (u * 10 + i) * 60_000;
            a.push((
                (u % 2) as i32,
                event(&format!("e{u}-{i}"), &format!("u{u}"), ts, 120_000),
                ts,
            ));
        }
    }
    let t = (D + 1) * DAY + 30 * 60_000;
    a.push((0, event("n1", "u0", t, 1000), t));
    let n = push(a, false, &mut listens);
    let ck = job.caught_up(n);
    assert_eq!(ck.final_through, Some(D as i32 - 1), "{ck:?}");
    assert!(has_partition(&out, "user_daily", D));
    assert!(markers(&out).is_empty(), "{:?}", markers(&out));

    // A late listen for the open day D updates its partitions.
    let t = (D + 1) * DAY + 40 * 60_000;
    let n = push(
        vec![(0, event("late-open", "u0", D * DAY + 15 * HOUR, 5000), t)],
        false,
        &mut listens,
    );
    job.caught_up(n);
    let tables = output::read_tables(&out);
    assert_eq!(daily_listens(&tables, "u0", D), Some(11));
    assert!(markers(&out).is_empty());
    // Only the partitions the listen touches were rewritten: D's daily
    // tables and the profile days whose window holds D.
    let w = last_writes(&out);
    let d = day_str(D);
    assert_eq!(w["user_daily"], vec![d.clone()], "{w:?}");
    assert_eq!(w["user_track_daily"], vec![d.clone()], "{w:?}");
    assert_eq!(w["user_artist_daily"], vec![d.clone()], "{w:?}");
    assert_eq!(w["user_profile_28d"], vec![d.clone(), day_str(D + 1)], "{w:?}");
    assert_eq!(w.len(), 4, "{w:?}");

    // The watermark reaches exactly end(D) + 1h: not past it, D stays open.
    let t = (D + 1) * DAY + HOUR;
    let n = push(vec![(1, event("n2", "u1", t, 1000), t)], false, &mut listens);
    let ck = job.caught_up(n);
    assert_eq!(ck.final_through, Some(D as i32 - 1));
    assert!(markers(&out).is_empty(), "{:?}", markers(&out));

    // One millisecond later D is final: _SUCCESS in each of its partitions, nowhere else.
    let t = (D + 1) * DAY + HOUR + 1;
    let n = push(vec![(1, event("n3", "u1", t, 1000), t)], false, &mut listens);
    let ck = job.caught_up(n);
    assert_eq!(ck.final_through, Some(D as i32));
    let want: Vec<String> = [
        "user_artist_daily",
        "user_daily",
        "user_profile_28d",
        "user_track_daily",
    ]
    .iter()
    .map(|t| format!("{t}/dt={}", day_str(D)))
    .collect();
    assert_eq!(markers(&out), want);
    let before = output::read_tables(&out);

    // Listens for the final day D: late_events (one row per event id: the
    // smallest by the dedup order), counted late, nothing else changes.
    let t = (D + 1) * DAY + 2 * HOUR;
    let late = vec![
        (0, event("late-1", "u0", D * DAY + 16 * HOUR, 9000), t),
        (1, event("late-1", "u0", D * DAY + 16 * HOUR, 3000), t),
        (1, event("late-2", "u3", D * DAY + 17 * HOUR, 3000), t),
        (0, br#"{"event_id": 1}"#.to_vec(), t),
    ];
    let n = push(late, true, &mut listens);
    job.caught_up(n);
    let after = output::read_tables(&out);
    if let Some(d) = output::diff("after", &features(after.clone()), "before", &features(before.clone())) {
        panic!("a late listen changed a feature table: {d}");
    }
    let late_rows = &after["late_events"][&day_str(D)];
    assert_eq!(late_rows.len(), 2, "{late_rows:?}");
    assert_eq!(late_rows[0][0], "late-1");
    assert_eq!(late_rows[0][6], 3000, "the smaller duplicate is kept");
    assert_eq!(late_rows[1][0], "late-2");
    assert!(!success(&out, "late_events", D), "late_events is never final");
    assert!(has_partition(&out, "rejected_events", D + 1));
    let c = last_report(&out)["counts"].clone();
    assert_eq!(c["late"], 3, "{c}");
    assert_eq!(c["rejected"], 1, "{c}");
    assert_eq!(c["read"], n, "{c}");
    assert!(balanced(&c), "{c}");
    assert!(job.metric("skipflow_events{class=\"late\"}") == 3.0);

    // An open day after a final one: its profile window still holds D (read back from Parquet).
    let t = (D + 1) * DAY + 3 * HOUR;
    let n = push(vec![(0, event("d1-a", "u0", t, 1000), t)], false, &mut listens);
    job.caught_up(n);
    let tables = output::read_tables(&out);
    assert_eq!(daily_listens(&tables, "u0", D + 1), Some(2));
    assert_eq!(profile_listens(&tables, "u0", D + 1), Some(13));
    job.stop();

    // A restart: the final day's aggregates come back from Parquet, late
    // events keep going to late_events, the open day keeps its state.
    let job = Job::start(addr, &out, Duration::from_secs(3600));
    let t = (D + 1) * DAY + 4 * HOUR;
    let n = push(
        vec![
            (1, event("late-3", "u2", D * DAY + 18 * HOUR, 1000), t),
            (0, event("d1-b", "u0", t, 1000), t),
        ],
        false,
        &mut listens,
    );
    listens.retain(|v| !String::from_utf8_lossy(v).contains("late-3"));
    job.caught_up(n);
    job.stop();
    let tables = output::read_tables(&out);
    assert_eq!(tables["late_events"][&day_str(D)].len(), 3);
    assert_eq!(daily_listens(&tables, "u0", D + 1), Some(3));
    assert_eq!(profile_listens(&tables, "u0", D + 1), Some(14));
    let c = last_report(&out)["counts"].clone();
    assert_eq!((c["read"].as_i64(), c["late"].as_i64()), (Some(n), Some(4)), "{c}");
    assert!(balanced(&c), "{c}");

    // The feature tables equal one batch run over the listens that were not late.
    let file = dir.path().join("listens.ndjson");
    let mut body = Vec::new();
    for l in &listens {
        body.extend_from_slice(l);
        body.push(b'\n');
    }
    std::fs::write(&file, body).unwrap();
    let bout = dir.path().join("batch");
    batch::run(&BatchConfig {
        output: bout.clone(),
        inputs: vec![file.to_string_lossy().to_string()],
        kafka: None,
        range: None,
        workers: 2,
        progress: false,
        topology: Default::default(),
        storage: Default::default(),
        quality: Default::default(),
    })
    .unwrap();
    let expected = features(output::read_tables(&bout));
    if let Some(d) = output::diff("continuous", &features(tables), "batch", &expected) {
        panic!("{d}");
    }
}

#[test]
fn an_idle_partition_does_not_stall_finalization() {
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 3).unwrap();
    let addr = k.bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let job = Job::start(addr, &out, Duration::from_secs(3600));
    // Every partition gets day D; then only partition 0 goes on.
    let mut recs = Vec::new();
    for p in 0..3 {
        for i in 0..5 {
            let ts = D * DAY + (p as i64 * 5 + i) * HOUR;
            recs.push((p, event(&format!("e{p}-{i}"), &format!("u{p}"), ts, 60_000), ts));
        }
    }
    send(addr, &recs);
    let ck = job.caught_up(15);
    assert!(ck.final_through < Some(D as i32));
    let mut n = 15;
    for h in [6, 12, 24, 26] {
        let ts = D * DAY + h * HOUR;
        send(addr, &[(0, event(&format!("p0-{h}"), "u0", ts, 60_000), ts)]);
        n += 1;
    }
    // Partitions 1 and 2 are caught up at D's timestamps; partition 0 at D+1 02:00.
    let ck = job.caught_up(n);
    assert_eq!(ck.final_through, Some(D as i32), "{ck:?}");
    assert!(success(&out, "user_daily", D));
    assert!(!success(&out, "user_daily", D + 1));
    assert!(job.metric("skipflow_watermark_timestamp_seconds") >= ((D + 1) * DAY + 2 * HOUR) as f64 / 1000.0);
    job.stop();
}

#[test]
fn ten_days_release_state_and_still_equal_one_batch_run() {
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 3).unwrap();
    let addr = k.bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let days = days_of_records(40, 10, 5);
    let job = Job::start(addr, &out, Duration::from_secs(3600));
    let mut total = 0i64;
    let mut sizes: Vec<(f64, f64, f64)> = Vec::new();
    for (i, recs) in days.iter().enumerate() {
        produce(addr, recs);
        total += recs.len() as i64;
        let ck = job.caught_up(total);
        if i >= 1 {
            // Day i is streaming in: everything before day i - 1 is final.
            let start = GenConfig::default().start_day;
            assert!(ck.final_through >= Some(start + i as i32 - 2), "day {i}: {ck:?}");
        }
        sizes.push((
            job.metric("skipflow_arrangement_records{arrangement=\"listens\"}"),
            job.metric("skipflow_arrangement_records{arrangement=\"user_track_daily\"}"),
            job.metric("skipflow_resident_memory_bytes"),
        ));
        eprintln!(
            "after day {i}: {} records, sizes {:?}",
            recs.len(),
            sizes.last().unwrap()
        );
    }
    job.stop();
    // State of final days is released: the arranged input and daily outputs
    // after ten days are about one or two days' worth, as after two.
    let (l2, t2, r2) = sizes[2];
    let (l10, t10, r10) = sizes[10.min(sizes.len() - 2)];
    assert!(l10 <= 1.5 * l2 + 200.0, "listens: {l2} after 2 days, {l10} after 10");
    assert!(
        t10 <= 1.5 * t2 + 200.0,
        "user_track_daily: {t2} after 2 days, {t10} after 10"
    );
    assert!(
        r10 <= 2.0 * r2 + 64e6,
        "resident memory: {r2} after 2 days, {r10} after 10"
    );

    let expected = batch_run(addr, &dir.path().join("batch")).0;
    let got = output::read_tables(&out);
    if let Some(d) = output::diff("continuous", &got, "batch", &expected) {
        panic!("{d}");
    }
    // Every day but the last two is final.
    let ck = continuous::read_checkpoint(&out).unwrap().unwrap();
    let f = ck.final_through.unwrap() as i64;
    for d in got["user_daily"].keys() {
        let day = skipflow::dates::parse_day(d).unwrap() as i64;
        assert_eq!(success(&out, "user_daily", day), day <= f, "dt={d}, final through {f}");
    }
    assert!(f >= GenConfig::default().start_day as i64 + 8);
    // The restart point moved past the final days.
    assert!(ck.replay_from.values().sum::<i64>() > 0, "{ck:?}");
}

#[test]
fn kill_9_with_days_finalizing_reaches_the_batch_tables() {
    let k = EmbeddedKafka::start(None).unwrap();
    k.create_topic(TOPIC, 4).unwrap();
    let addr = k.bootstrap();
    let recs: Vec<GenRecord> = days_of_records(60, 6, 13).into_iter().flatten().collect();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cont");
    let spawn = || {
        skipflow_run(addr, &out)
            .args([
                "--commit-interval",
                "150ms",
                "--epoch",
                "30ms",
                "--finalize-after",
                "1h",
            ])
            .spawn()
            .unwrap()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let chunks = 6;
    let per = recs.len() / chunks + 1;
    for chunk in recs.chunks(per) {
        produce(addr, chunk);
        let mut child = spawn();
        std::thread::sleep(Duration::from_millis(rng.random_range(300..2000)));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let ck = continuous::read_checkpoint(&out).unwrap().expect("a checkpoint");
    let mut child = spawn();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let c = continuous::read_checkpoint(&out).unwrap().unwrap();
        if c.offsets.values().sum::<i64>() >= recs.len() as i64 && c.commits > ck.commits + 1 {
            break;
        }
        assert!(Instant::now() < deadline, "never caught up: {c:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    sigterm(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let ck = continuous::read_checkpoint(&out).unwrap().unwrap();
    assert!(ck.final_through.is_some(), "days were finalized: {ck:?}");
    let expected = batch_run(addr, &dir.path().join("batch")).0;
    if let Some(d) = output::diff("continuous after kills", &output::read_tables(&out), "batch", &expected) {
        panic!("{d}");
    }
    let c = last_report(&out)["counts"].clone();
    assert_eq!(c["read"], recs.len() as u64, "{c}");
    assert_eq!(c["late"], 0, "{c}");
    assert!(balanced(&c), "{c}");
}
