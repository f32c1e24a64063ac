//! Prometheus metrics of a continuous run, served on `--metrics-addr`
//! (`GET /metrics`, text exposition format) by `crate::service`.

use anyhow::Result;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::sync::Arc;

/// Every metric's name starts with `skipflow_`.
const PREFIX: &str = "skipflow";

/// The metrics skipflow exports.
pub struct Metrics {
    pub registry: Registry,
    /// Records read, by class (kept, duplicates, rejected, late, ...).
    pub events: IntGaugeVec,
    /// Messages behind the end of each partition at the last commit.
    pub lag: IntGaugeVec,
    pub commits: IntCounter,
    pub last_commit_timestamp: Gauge,
    pub last_commit_duration: Gauge,
    pub partitions_published: IntCounter,
    /// Days with listens in the state.
    pub open_days: IntGauge,
    /// Kafka errors seen (the source retries).
    pub kafka_errors: IntCounterVec,
    /// Records (updates) held per arrangement, summed over workers.
    pub arrangement_records: IntGaugeVec,
    /// The finalization watermark (epoch seconds).
    pub watermark: Gauge,
    /// The last final day (its end, epoch seconds).
    pub final_through: Gauge,
    /// Message timestamp to visible in Parquet, per record.
    pub freshness: Histogram,
    /// Resident memory of the process (bytes) at the last commit.
    pub rss: IntGauge,
    /// Final days held by a failed quality gate (no `_SUCCESS` until accepted).
    pub days_held: IntGauge,
    /// Quality gate checks judged at finalizations, by outcome.
    pub quality_checks: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Arc<Metrics>> {
        let r = Registry::new_custom(Some(PREFIX.into()), None)?;
        let m = Metrics {
            events: IntGaugeVec::new(
                Opts::new("events", "records read by this process, by class"),
                &["class"],
            )?,
            lag: IntGaugeVec::new(
                Opts::new(
                    "consumer_lag",
                    "messages not read yet, per partition (end offset of the last fetch minus the reader position)",
                ),
                &["partition"],
            )?,
            commits: IntCounter::new("commits_total", "commits (partitions published, then checkpoint)")?,
            last_commit_timestamp: Gauge::new("last_commit_timestamp_seconds", "when the last commit finished")?,
            last_commit_duration: Gauge::new(
                "last_commit_duration_seconds",
                "how long the last commit took, from its boundary to the checkpoint (collecting, staging, publishing)",
            )?,
            partitions_published: IntCounter::new("partitions_published_total", "partitions replaced by commits")?,
            open_days: IntGauge::new("open_days", "days with listens held in the dataflow state")?,
            kafka_errors: IntCounterVec::new(Opts::new("kafka_errors_total", "Kafka errors (retried)"), &["kind"])?,
            arrangement_records: IntGaugeVec::new(
                Opts::new("arrangement_records", "updates held per arrangement, over all workers"),
                &["arrangement"],
            )?,
            watermark: Gauge::new(
                "watermark_timestamp_seconds",
                "finalization watermark: the smallest latest message timestamp over partitions that are not caught up",
            )?,
            final_through: Gauge::new(
                "finalized_through_timestamp_seconds",
                "end of the last finalized day (days before it have _SUCCESS)",
            )?,
            freshness: Histogram::with_opts(
                HistogramOpts::new(
                    "freshness_seconds",
                    "per record: from its message timestamp to the commit that made it visible in Parquet",
                )
                .buckets(vec![
                    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 300.0, 600.0,
                ]),
            )?,
            rss: IntGauge::new("resident_memory_bytes", "resident memory at the last commit")?,
            days_held: IntGauge::new(
                "days_held",
                "final days a quality gate failed: no _SUCCESS until `skipflow accept DIR --day D`",
            )?,
            quality_checks: IntCounterVec::new(
                Opts::new(
                    "quality_checks_total",
                    "quality gate checks judged when days were finalized",
                ),
                &["outcome"],
            )?,
            registry: r,
        };
        for c in m.collectors() {
            m.registry.register(c)?;
        }
        Ok(Arc::new(m))
    }

    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.events.clone()),
            Box::new(self.lag.clone()),
            Box::new(self.commits.clone()),
            Box::new(self.last_commit_timestamp.clone()),
            Box::new(self.last_commit_duration.clone()),
            Box::new(self.partitions_published.clone()),
            Box::new(self.open_days.clone()),
            Box::new(self.kafka_errors.clone()),
            Box::new(self.arrangement_records.clone()),
            Box::new(self.watermark.clone()),
            Box::new(self.final_through.clone()),
            Box::new(self.freshness.clone()),
            Box::new(self.rss.clone()),
            Box::new(self.days_held.clone()),
            Box::new(self.quality_checks.clone()),
        ]
    }

    /// The name of every metric family exported (labelled ones included
    /// before their first value), as dashboards and alert rules use them.
    pub fn names(&self) -> Vec<String> {
        self.collectors()
            .iter()
            .flat_map(|c| {
                c.desc()
                    .into_iter()
                    .map(|d| format!("{PREFIX}_{}", d.fq_name))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
