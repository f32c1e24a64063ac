//! skipflow: per-user listening features from ordered `play`/`skip` events.
//!
//! Stages, one module each:
//! `source` (files, Kafka) -> `decode` (validate) -> `dataflow` (features)
//! -> `sink` (Parquet partitions, atomic commit) -> `report` (run report).
//! `batch` drives a bounded run; `cli` holds the command line and job files.

pub mod batch;
pub mod broker;
pub mod cli;
pub mod cluster;
pub mod continuous;
pub mod dataflow;
pub mod dates;
pub mod decode;
pub mod demo;
pub mod error;
pub mod generate;
pub mod inspect;
pub mod intern;
pub mod mailbox;
pub mod memory;
pub mod metrics;
pub mod quality;
pub mod report;
pub mod schema;
pub mod service;
pub mod sink;
pub mod source;
pub mod store;

/// Exit codes of cli.md.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const LOCKED: u8 = 3;
    pub const GATE_FAILED: u8 = 4;
}

/// The exit code an error maps to.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<store::Locked>().is_some() {
        exit::LOCKED
    } else if e.downcast_ref::<error::ConfigError>().is_some() {
        exit::USAGE
    } else if e.downcast_ref::<error::GateFailed>().is_some() {
        exit::GATE_FAILED
    } else {
        exit::FAILURE
    }
}
