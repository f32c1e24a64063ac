//! Production Kafka against tansu, an independent Kafka-API broker: a broker
//! reached only over TLS (stunnel in front, the TLS port advertised), SASL
//! (SCRAM checked by tansu; PLAIN and OAUTHBEARER attempted and refused by
//! it: the handshake and its one-line error), zstd
//! batches stored and served by a real broker, and a partition added to the
//! topic while `skipflow run` follows it.

mod common;

use common::cont::{self, checkpoint, skipflow_run};
use common::kafka::{produce_to, read_all, records, TOPIC};
use common::reference::{self, RefRecord};
use common::tansu::{free_port, Tansu};
use common::tls::{Certs, Stunnel};
use common::{harness, proc};
use std::path::Path;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

fn expected(read: &[RefRecord]) -> reference::RefOutput {
    harness::reference_of_records(read)
}

/// A job file with a `[kafka]` table of these settings.
fn job(dir: &Path, name: &str, settings: &[(&str, &str)]) -> String {
    let mut t = String::from("[kafka]\n");
    for (k, v) in settings {
        t.push_str(&format!("\"{k}\" = \"{v}\"\n"));
    }
    let p = dir.join(name);
    std::fs::write(&p, t).unwrap();
    p.to_string_lossy().to_string()
}

fn batch(addr: &str, out: &Path, job: &str) -> (i32, String, String) {
    let o = out.to_str().unwrap();
    let args = [
        "batch",
        "--brokers",
        addr,
        "--topic",
        TOPIC,
        "--workers",
        "2",
        "--quiet",
        "--output",
        o,
        "--job",
        job,
    ];
    proc::run(&args, out.parent().unwrap(), &[], LIMIT)
}

/// tansu on SQLite behind stunnel: only the TLS port is advertised.
fn tls_broker(dir: &Path, certs: &Certs, flags: &[&str]) -> (Tansu, Stunnel) {
    let mut t = Tansu::sqlite_stopped(&dir.join("tansu"));
    let tls = format!("127.0.0.1:{}", free_port());
    t.advertised = tls.clone();
    t.flags = flags.iter().map(|s| s.to_string()).collect();
    t.start();
    let s = Stunnel::start(dir, &tls, &t.addr, certs);
    (t, s)
}

#[test]
fn a_broker_reached_only_over_tls_and_sasl() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(&dir.path().join("certs"));
    let ca = certs.ca.to_str().unwrap().to_string();
    let (mut t, s) = tls_broker(dir.path(), &certs, &[]);
    let ssl = [("security.protocol", "SSL"), ("ssl.ca.location", ca.as_str())];
    // Topic and data, over TLS (the plaintext port advertises the TLS one).
    common::tansu::create_topic_with(&s.accept, 2, &ssl);
    let recs = records(40, 2, 23);
    produce_to(&s.accept, TOPIC, &recs, &[("compression.type", "zstd"), ssl[0], ssl[1]]);
    let read = read_all(&s.accept, TOPIC, &ssl);
    assert_eq!(read.len(), recs.len());
    let exp = expected(&read);

    // TLS, verified against the test's CA: batch and run equal the reference.
    let ok = job(dir.path(), "tls.toml", &ssl);
    let out = dir.path().join("tls-batch");
    let (code, _, err) = batch(&s.accept, &out, &ok);
    assert_eq!(code, 0, "{err}");
    harness::assert_tables(&out, &exp.tables);
    let out = dir.path().join("tls-run");
    cont::run_to_end(&s.accept, &out, read.len(), &["--job", &ok]);
    harness::assert_tables(&out, &exp.tables);

    // A certificate the client cannot verify: one line, exit 1.
    let bad = job(dir.path(), "no-ca.toml", &[("security.protocol", "SSL")]);
    let out = dir.path().join("tls-unverified");
    let (code, line, err) = batch(&s.accept, &out, &bad);
    assert_eq!(code, 1, "{err}");
    assert!(
        line.contains("TLS connection to Kafka") && line.contains("certificate"),
        "{line}"
    );
    assert!(proc::nothing_published(&out));

    // SASL over TLS: tansu checks SCRAM credentials (a user made while it
    // ran without authentication).
    let user = std::process::Command::new(common::tansu::tansu_binary())
        .args([
            "user",
            "create",
            "--broker",
            &format!("tcp://{}", t.addr),
            "alice",
            "s3cret",
            "--mechanism",
            "scram512",
        ])
        .output()
        .unwrap();
    assert!(user.status.success(), "{}", String::from_utf8_lossy(&user.stderr));
    t.kill9();
    t.flags = vec!["--authentication".into()];
    t.start();
    let scram = |password: &'static str| {
        vec![
            ssl[0],
            ssl[1],
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "alice"),
            ("sasl.password", password),
        ]
    };
    let good = job(dir.path(), "scram.toml", &scram("s3cret")[1..]);
    let out = dir.path().join("scram-batch");
    let (code, _, err) = batch(&s.accept, &out, &good);
    assert_eq!(code, 0, "{err}");
    harness::assert_tables(&out, &exp.tables);
    let out = dir.path().join("scram-run");
    cont::run_to_end(&s.accept, &out, read.len(), &["--job", &good]);
    harness::assert_tables(&out, &exp.tables);

    let wrong = job(dir.path(), "scram-wrong.toml", &scram("wrong")[1..]);
    let out = dir.path().join("scram-wrong");
    let (code, line, err) = batch(&s.accept, &out, &wrong);
    assert_eq!(code, 1, "{err}");
    assert!(line.contains("Kafka authentication failed"), "{line}");
    assert!(proc::nothing_published(&out));
    let o = out.to_str().unwrap().to_string();
    let (code, line, err) = proc::run(
        &[
            "run",
            "--brokers",
            &s.accept,
            "--topic",
            TOPIC,
            "--output",
            &o,
            "--job",
            &wrong,
        ],
        dir.path(),
        &[],
        LIMIT,
    );
    assert_eq!(code, 1, "{err}");
    assert!(line.contains("Kafka authentication failed"), "{line}");
    assert!(proc::nothing_published(&out));

    let plain = job(
        dir.path(),
        "plain.toml",
        &[
            ("security.protocol", "SASL_SSL"),
            ssl[1],
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", "bob"),
            ("sasl.password", "any"),
        ],
    );
    // tansu 0.6 does not serve PLAIN (its SASL library is built without it):
    // the handshake is attempted, refused, and said in one line.
    let out = dir.path().join("plain");
    let (code, line, err) = batch(&s.accept, &out, &plain);
    assert_eq!(code, 1, "{err}");
    assert!(
        line.contains("Kafka authentication failed") && line.contains("PLAIN"),
        "{line}"
    );
    assert!(proc::nothing_published(&out));

    // OAUTHBEARER: the token is made and offered; tansu does not take the mechanism.
    let oauth = job(
        dir.path(),
        "oauth.toml",
        &[
            ("security.protocol", "SASL_SSL"),
            ssl[1],
            ("sasl.mechanism", "OAUTHBEARER"),
            ("enable.sasl.oauthbearer.unsecure.jwt", "true"),
            ("sasl.oauthbearer.config", "principal=alice"),
        ],
    );
    let out = dir.path().join("oauth");
    let (code, line, err) = batch(&s.accept, &out, &oauth);
    assert_eq!(code, 1, "{err}");
    assert!(
        line.contains("Kafka authentication failed") && line.contains("OAUTHBEARER"),
        "{line}"
    );
    assert!(proc::nothing_published(&out));
}

/// Adds partition `n` to `TOPIC` in a stopped tansu's SQLite database (tansu
/// 0.6 has no CreatePartitions): what `kafka-topics --alter --partitions`
/// does on a broker that has it.
fn add_partition(db: &Path, n: i32) {
    let sql = format!(
        "update topic set partitions = partitions + 1 where name = '{TOPIC}';\
         insert into topition (topic, partition) select id, {n} from topic where name = '{TOPIC}';\
         insert into watermark (topition) select tp.id from topition tp join topic t on tp.topic = t.id \
         where t.name = '{TOPIC}' and tp.partition = {n};"
    );
    let o = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()",
        ])
        .arg(db)
        .arg(sql)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn run_follows_a_partition_added_to_the_topic() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Tansu::sqlite(&dir.path().join("tansu"));
    t.create_topic(2);
    let recs = records(60, 2, 41);
    let (first, second) = recs.split_at(recs.len() / 2);
    produce_to(&t.addr, TOPIC, first, &[]);
    let out = dir.path().join("out");
    let job = dir.path().join("job.toml");
    std::fs::write(&job, "partition_discovery_interval = \"1s\"\n").unwrap();
    let mut child = skipflow_run(&t.addr, &out)
        .args([
            "--commit-interval",
            "500ms",
            "--finalize-after",
            "1000000h",
            "--workers",
            "2",
        ])
        .args(["--job", job.to_str().unwrap()])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    while cont::checkpointed(&out) < first.len() as i64 {
        assert!(
            child.try_wait().unwrap().is_none() && Instant::now() < deadline,
            "first half never committed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    t.kill9();
    add_partition(&t.database().unwrap(), 2);
    t.start();
    t.wait_for_topic(3);
    produce_to(&t.addr, TOPIC, second, &[]);
    let all = read_all(&t.addr, TOPIC, &[]);
    assert!(
        all.iter().any(|r| r.partition == 2),
        "records went to the new partition"
    );
    while cont::checkpointed(&out) < all.len() as i64 {
        assert!(child.try_wait().unwrap().is_none(), "skipflow run ended early");
        assert!(
            Instant::now() < deadline,
            "the new partition was never read: {:?}",
            checkpoint(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    cont::sigterm(&child);
    assert!(child.wait().unwrap().success());
    harness::assert_tables(&out, &expected(&all).tables);
}
