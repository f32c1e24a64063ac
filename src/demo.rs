//! `skipflow demo`: the whole tour on the embedded default. Starts an
//! in-process Kafka (librdkafka's mock cluster), fills it with a realistic,
//! dirty week of events, runs the batch job from it into `./out`, and says
//! what it wrote and how to open it.

use crate::batch::{self, BatchConfig, KafkaBatch};
use crate::broker::EmbeddedKafka;
use crate::generate::GenConfig;
use crate::schema::Table;
use crate::source::kafka::KafkaInput;
use anyhow::Result;
use arrow_array::cast::AsArray;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Partitions of the demo topic: the embedded broker keeps about 5 MiB per
/// partition, so a week of 2000 users (about 90 MB) is spread thin.
const DEMO_PARTITIONS: i32 = 32;

/// Runs the demo into `out`: embedded Kafka in process, a generated dirty
/// week produced into it, one batch run from Kafka.
pub fn run(out: &Path, workers: usize) -> Result<String> {
    let t0 = std::time::Instant::now();
    let kafka = EmbeddedKafka::start(None)?;
    let topic = "listen-events";
    kafka.create_topic(topic, DEMO_PARTITIONS)?;
    let cfg = GenConfig {
        users: 2000,
        days: 7,
        seed: 2026,
        dirty: true,
        ..GenConfig::default()
    };
    eprintln!(
        "skipflow demo: producing a week of listens for {} users into the embedded Kafka ...",
        cfg.users
    );
    let stats = crate::cli::produce_generated(&cfg, kafka.bootstrap(), topic)?;
    let produced_s = t0.elapsed().as_secs_f64();
    eprintln!(
        "skipflow demo: running the batch job from Kafka into {} ...",
        out.display()
    );
    let outcome = batch::run(&BatchConfig {
        output: out.to_path_buf(),
        inputs: vec![],
        kafka: Some(KafkaBatch {
            input: KafkaInput::new(kafka.bootstrap(), topic),
            skew_ms: 3_600_000,
        }),
        range: None,
        workers,
        progress: false,
        topology: Default::default(),
        storage: Default::default(),
        quality: Default::default(),
    })?;
    let r = &outcome.report;
    let mut s = String::new();
    writeln!(
        s,
        "Produced {} records ({} users, 7 days, with duplicates, malformed and late records) to topic {topic} \
         ({DEMO_PARTITIONS} partitions) on the embedded Kafka at {} in {produced_s:.1} s.",
        stats.records,
        cfg.users,
        kafka.bootstrap()
    )?;
    writeln!(s)?;
    s.push_str(&crate::report::summary(r));
    writeln!(s)?;
    s.push_str(&crate::inspect::inspect(out, &Default::default())?);
    if let Some(user) = a_user_with_a_profile(out)? {
        writeln!(s, "\n{user}")?;
    }
    let dir = out.display();
    let page = out.join("report.html");
    let html = crate::report::html::write_page(&crate::store::Store::local(out), 28)?;
    std::fs::write(&page, html)?;
    writeln!(s, "\nRun report: {}", outcome.report_path.display())?;
    writeln!(
        s,
        "HTML report (records by class, rejects, quality gates, distributions, sizes): {}",
        page.display()
    )?;
    writeln!(s, "Explore with DuckDB:")?;
    writeln!(
        s,
        "  duckdb -c \"select * from read_parquet('{dir}/user_daily/*/*.parquet', hive_partitioning=true) order by listens desc limit 10\""
    )?;
    writeln!(
        s,
        "  duckdb -c \"select reason, count(*) from read_parquet('{dir}/rejected_events/*/*.parquet') group by 1\""
    )?;
    writeln!(
        s,
        "More: skipflow inspect {dir} --table user_profile_28d --day <YYYY-MM-DD>"
    )?;
    Ok(s)
}

/// The top artists of the busiest user of the fullest profile day, as text.
fn a_user_with_a_profile(out: &Path) -> Result<Option<String>> {
    let store = crate::store::Store::local(out);
    let mut fullest: Option<(u64, i32)> = None;
    for day in store.published_days(Table::UserProfile28d)? {
        let rows: usize = store
            .read_partition(Table::UserProfile28d, day)?
            .iter()
            .map(|b| b.num_rows())
            .sum();
        if fullest.is_none_or(|(n, _)| rows as u64 > n) {
            fullest = Some((rows as u64, day));
        }
    }
    let Some((_, day)) = fullest else { return Ok(None) };
    let mut best: Option<(i64, String, String)> = None;
    for b in store.read_partition(Table::UserProfile28d, day)? {
        let users = b.column(0).as_string::<i32>();
        let listens = b.column(3).as_primitive::<arrow_array::types::Int64Type>();
        for i in 0..b.num_rows() {
            if best.as_ref().is_none_or(|(l, _, _)| listens.value(i) > *l) {
                let top = crate::inspect::fmt_value(b.column(10), i);
                best = Some((listens.value(i), users.value(i).to_string(), top));
            }
        }
    }
    let as_of = crate::dates::day_to_string(day);
    Ok(best.map(|(l, u, top)| {
        format!("Busiest user as of {as_of}: {u} ({l} listens in 28 days); top artists (artist plays skips):\n  {top}")
    }))
}

/// The demo's output directory: `./out`.
pub fn default_output() -> PathBuf {
    PathBuf::from("out")
}
