//! Where outputs live: a local directory or an object store bucket (S3,
//! GCS), behind one interface used by the sink, the drivers, the
//! checkpoint and the reports. The layout under the root is the same
//! everywhere (`<table>/dt=YYYY-MM-DD/part-00000.parquet`, `_SUCCESS`,
//! `_runs/`, `.skipflow/`).
//!
//! A partition is staged, then published:
//! - local (`local.rs`): a staged directory is renamed into place, or its
//!   file renamed over the old one (readers see the old or the new file);
//! - object store (`object.rs`): the file is uploaded to its final key as a
//!   multipart upload that is not completed; publishing completes it, which
//!   makes the new object visible at once (a put is atomic per object).
//!
//! The lock: an exclusive `flock` (local) or a lease object created only if
//! absent and renewed by its holder (`lease.rs`).

mod lease;
mod local;
mod object;

use crate::schema::Table;
use anyhow::Result;
use arrow_array::RecordBatch;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use lease::LEASE_DEFAULT;

/// The single data file of a partition.
pub const PART_FILE: &str = "part-00000.parquet";

/// Hive partition directory name of a day.
pub fn partition_dir(day: i32) -> String {
    format!("dt={}", crate::dates::day_to_string(day))
}

/// The key of a partition's directory under the root.
use parquet::file::metadata::ParquetMetaData;

/// `builder` reading only the top-level `columns` (all when None; names
/// not in the file are left out, and their readers say so).
fn project<T: parquet::file::reader::ChunkReader + 'static>(
    builder: parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder<T>,
    columns: Option<&[&str]>,
) -> parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder<T> {
    let Some(columns) = columns else { return builder };
    let roots: Vec<usize> = columns
        .iter()
        .filter_map(|c| builder.schema().index_of(c).ok())
        .collect();
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), roots);
    builder.with_projection(mask)
}

/// Rows, bytes and schema of a published partition, from its footers.
#[derive(Debug, Default)]
pub struct Footer {
    pub rows: i64,
    pub bytes: u64,
    pub schema: Option<arrow_schema::Schema>,
    /// Kept events recorded in the footers (`user_daily` files skipflow
    /// wrote); None when any file lacks the key.
    pub kept_events: Option<i64>,
}

pub fn partition_key(table: Table, day: i32) -> String {
    format!("{}/{}", table.name(), partition_dir(day))
}

/// Returned when another run holds the output (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("output {dir} is locked by another skipflow run{holder}; wait for it to finish or use another --output")]
pub struct Locked {
    pub dir: String,
    pub holder: String,
}

/// A staged partition file, ready to publish.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum StagedFile {
    /// A staged partition directory holding `PART_FILE` (local).
    Dir(PathBuf),
    /// A file of one part staged as its own object (object store):
    /// publishing copies it to `key`.
    Object { staged: String, key: String },
    /// A multipart upload to the partition's file key, not completed yet
    /// (object store); `manifest` is the object recording it until then.
    Upload {
        key: String,
        id: String,
        parts: Vec<String>,
        manifest: String,
    },
    /// No file: the partition is removed.
    Removal,
}

/// Where a run's outputs live.
#[derive(Clone)]
pub struct Store {
    backend: Arc<Backend>,
}

enum Backend {
    Local(PathBuf),
    Object(object::Bucket),
}

/// How to take the output's lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Fail at once with [`Locked`] when another run holds it.
    Fail,
    /// Wait until it is released or its lease expires (`run --standby`).
    Wait,
}

impl Store {
    /// Opens `output`: `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX`, or a local
    /// directory (created if missing). `settings` is the job file's
    /// `[storage]` table (credentials, endpoint, `lease`). An unsupported
    /// scheme, missing credentials or a bucket that does not exist are usage
    /// errors (exit 2); no local directory is ever named after a URL.
    pub fn open(output: &Path, settings: &BTreeMap<String, String>) -> Result<Store> {
        let text = output.to_string_lossy();
        let backend = match text.split_once("://") {
            Some((scheme, rest)) => Backend::Object(object::Bucket::open(scheme, rest, &text, settings)?),
            None => {
                if let Some(k) = settings.keys().find(|k| k.as_str() != "lease") {
                    return Err(crate::error::bad(format!(
                        "[storage] key {k:?} applies to object-store outputs (s3://, gs://); {} is a local directory",
                        output.display()
                    )));
                }
                std::fs::create_dir_all(output)
                    .map_err(|e| anyhow::anyhow!("cannot create output directory {}: {e}", output.display()))?;
                Backend::Local(output.to_path_buf())
            }
        };
        Ok(Store {
            backend: Arc::new(backend),
        })
    }

    /// A local output directory (tests and tools).
    pub fn local(dir: &Path) -> Store {
        Store {
            backend: Arc::new(Backend::Local(dir.to_path_buf())),
        }
    }

    /// The output as the user wrote it (path or URL).
    pub fn describe(&self) -> String {
        match &*self.backend {
            Backend::Local(p) => p.display().to_string(),
            Backend::Object(b) => b.url.clone(),
        }
    }

    /// The local directory, when the output is one.
    pub fn local_dir(&self) -> Option<&Path> {
        match &*self.backend {
            Backend::Local(p) => Some(p),
            Backend::Object(_) => None,
        }
    }

    /// The bytes of `key` (relative to the root), if it exists.
    pub fn read(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match &*self.backend {
            Backend::Local(p) => local::read(p, key),
            Backend::Object(b) => b.read(key),
        }
    }

    /// Replaces `key` with `bytes`, atomically (readers see the old or the new).
    pub fn write(&self, key: &str, bytes: &[u8]) -> Result<()> {
        match &*self.backend {
            Backend::Local(p) => local::write(p, key, bytes),
            Backend::Object(b) => b.write(key, bytes),
        }
    }

    /// Names of the files directly under `dir` (a key prefix such as `_runs`).
    pub fn list_files(&self, dir: &str) -> Result<Vec<String>> {
        match &*self.backend {
            Backend::Local(p) => local::list_files(&p.join(dir)),
            Backend::Object(b) => b.list_files(dir),
        }
    }

    /// Days that have a published partition of `table`.
    pub fn published_days(&self, table: Table) -> Result<Vec<i32>> {
        let names = match &*self.backend {
            Backend::Local(p) => local::list_dirs(&p.join(table.name()))?,
            Backend::Object(b) => b.list_dirs(table.name())?,
        };
        let mut days: Vec<i32> = names
            .iter()
            .filter_map(|n| n.strip_prefix("dt=").and_then(|d| crate::dates::parse_day(d).ok()))
            .collect();
        days.sort_unstable();
        Ok(days)
    }

    /// Record batches of every data file of a published partition (none if absent).
    pub fn read_partition(&self, table: Table, day: i32) -> Result<Vec<RecordBatch>> {
        self.read_columns(table, day, None)
    }

    /// Like `read_partition`, decoding only `columns` (top-level names) when
    /// given: what a reader of a few columns of a wide table needs.
    pub fn read_columns(&self, table: Table, day: i32, columns: Option<&[&str]>) -> Result<Vec<RecordBatch>> {
        match &*self.backend {
            Backend::Local(p) => local::read_partition(&p.join(partition_key(table, day)), columns),
            Backend::Object(b) => b.read_partition(&partition_key(table, day), columns),
        }
    }

    /// Rows and bytes of a published partition's data files (from their footers).
    pub fn partition_summary(&self, table: Table, day: i32) -> Result<(i64, u64)> {
        let f = self.partition_footer(table, day)?;
        Ok((f.rows, f.bytes))
    }

    /// What the footers of a published partition's data files say (zero
    /// rows and no schema when it is absent).
    pub fn partition_footer(&self, table: Table, day: i32) -> Result<Footer> {
        let mut f = Footer {
            kept_events: Some(0),
            ..Default::default()
        };
        let files = self.partition_metadata(table, day)?;
        if files.is_empty() {
            f.kept_events = None;
        }
        for (_, bytes, meta) in files {
            let m = meta.file_metadata();
            f.rows += m.num_rows();
            f.bytes += bytes;
            let kept = m
                .key_value_metadata()
                .and_then(|kv| kv.iter().find(|k| k.key == crate::sink::parquet::KEPT_EVENTS_KEY))
                .and_then(|k| k.value.as_deref().and_then(|v| v.parse::<i64>().ok()));
            f.kept_events = f.kept_events.zip(kept).map(|(a, b)| a + b);
            if f.schema.is_none() {
                f.schema = Some(parquet::arrow::parquet_to_arrow_schema(
                    m.schema_descr(),
                    m.key_value_metadata(),
                )?);
            }
        }
        Ok(f)
    }

    /// The Parquet metadata (footer) of each data file of a published
    /// partition: (file name, bytes, metadata).
    pub fn partition_metadata(&self, table: Table, day: i32) -> Result<Vec<(String, u64, ParquetMetaData)>> {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let mut out = Vec::new();
        match &*self.backend {
            Backend::Local(p) => {
                for path in local::data_files(&p.join(partition_key(table, day)))? {
                    let file = std::fs::File::open(&path)?;
                    let len = file.metadata()?.len();
                    let meta = SerializedFileReader::new(file)?.metadata().clone();
                    out.push((path.to_string_lossy().to_string(), len, meta));
                }
            }
            Backend::Object(b) => {
                for (key, len, meta) in b.footers(&partition_key(table, day))? {
                    out.push((format!("{}/{key}", self.describe().trim_end_matches('/')), len, meta));
                }
            }
        }
        Ok(out)
    }

    /// Whether a partition has `_SUCCESS`.
    pub fn is_final(&self, table: Table, day: i32) -> Result<bool> {
        Ok(self.read(&format!("{}/_SUCCESS", partition_key(table, day)))?.is_some())
    }

    /// Takes the output's lock `name` (each process of a cluster its own).
    pub fn lock(&self, name: &str, mode: LockMode, lease: Duration) -> Result<Lock> {
        match &*self.backend {
            Backend::Local(p) => local::lock(p, name, mode).map(Lock::Local),
            Backend::Object(_) => lease::Lease::acquire(self.clone(), name, mode, lease).map(Lock::Lease),
        }
    }

    /// The lease duration of the job file's `[storage]` table, or the default.
    pub fn lease_duration(settings: &BTreeMap<String, String>) -> Result<Duration> {
        match settings.get("lease") {
            None => Ok(LEASE_DEFAULT),
            Some(v) => {
                humantime::parse_duration(v).map_err(|e| crate::error::bad(format!("[storage] lease {v:?}: {e}")))
            }
        }
    }

    /// Removes what runs of process `own` left behind when they died: staged
    /// files, unfinished uploads (and, for the committer's process, the trash
    /// of removed partitions).
    pub fn clean_staging(&self, own: &str, trash: bool) -> Result<()> {
        match &*self.backend {
            Backend::Local(p) => local::clean_staging(p, own, trash),
            Backend::Object(b) => b.clean_staging(own),
        }
    }

    /// A fresh staging area for one run or commit of process `own`.
    pub fn staging(&self, own: &str, id: &str) -> Result<Staging> {
        let dir = match &*self.backend {
            Backend::Local(p) => Some(local::staging_dir(p, own, id)?),
            Backend::Object(_) => None,
        };
        Ok(Staging {
            store: self.clone(),
            own: own.to_string(),
            id: id.to_string(),
            dir,
        })
    }

    /// Makes a staged partition visible. `success` adds `_SUCCESS` (the
    /// partition is final); otherwise an existing `_SUCCESS` goes first.
    pub fn publish(&self, table: Table, day: i32, file: &StagedFile, success: bool) -> Result<()> {
        match (&*self.backend, file) {
            (_, StagedFile::Removal) => self.remove(table, day).map(|_| ()),
            (Backend::Local(p), StagedFile::Dir(dir)) => local::publish(p, table, day, dir, success),
            (Backend::Object(b), StagedFile::Upload { .. } | StagedFile::Object { .. }) => {
                b.publish(&partition_key(table, day), file, success)
            }
            _ => anyhow::bail!("a staged file of another kind of store"),
        }
    }

    /// Removes a published partition; whether there was one.
    pub fn remove(&self, table: Table, day: i32) -> Result<bool> {
        match &*self.backend {
            Backend::Local(p) => local::remove(p, table, day),
            Backend::Object(b) => b.remove(&partition_key(table, day)),
        }
    }

    /// Adds `_SUCCESS` to a published partition that lacks it; whether it did.
    pub fn mark_success(&self, table: Table, day: i32) -> Result<bool> {
        let key = format!("{}/_SUCCESS", partition_key(table, day));
        match &*self.backend {
            Backend::Local(p) => local::mark_success(&p.join(partition_key(table, day))),
            Backend::Object(b) => {
                if b.read(&key)?.is_some() {
                    return Ok(false);
                }
                b.write(&key, b"")?;
                Ok(true)
            }
        }
    }
}

/// Where one run or commit of one process writes its partitions before
/// they are published.
pub struct Staging {
    store: Store,
    own: String,
    id: String,
    /// Local: the staging directory.
    dir: Option<PathBuf>,
}

impl Staging {
    /// A writer of `table`'s partition `day`: `finish` returns the staged file.
    pub fn writer(&self, table: Table, day: i32) -> Result<PartWriter> {
        match (&*self.store.backend, &self.dir) {
            (Backend::Local(_), Some(dir)) => local::part_writer(dir, table, day).map(PartWriter::Local),
            (Backend::Object(b), _) => b
                .part_writer(self.store.clone(), &partition_key(table, day), &self.own, &self.id)
                .map(PartWriter::Upload),
            _ => anyhow::bail!("a local store without a staging directory"),
        }
    }

    /// Drops what was staged and not published (a failed run or commit).
    pub fn discard(&self, staged: &[StagedFile]) {
        match (&*self.store.backend, &self.dir) {
            (Backend::Local(_), Some(dir)) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            (Backend::Object(b), _) => b.discard(staged),
            _ => {}
        }
    }

    /// Done: the local staging directory goes (its files were renamed away).
    pub fn finish(&self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Writes one partition file into staging.
pub enum PartWriter {
    Local(local::FileWriter),
    Upload(object::UploadWriter),
}

impl std::io::Write for PartWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            PartWriter::Local(w) => w.write(buf),
            PartWriter::Upload(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            PartWriter::Local(w) => w.flush(),
            PartWriter::Upload(w) => w.flush(),
        }
    }
}

impl PartWriter {
    /// Completes the staged file (fsynced, or every part uploaded): its
    /// handle and size in bytes.
    pub fn finish(self) -> Result<(StagedFile, u64)> {
        match self {
            PartWriter::Local(w) => w.finish(),
            PartWriter::Upload(w) => w.finish(),
        }
    }
}

/// The output's lock, held until dropped.
pub enum Lock {
    Local(std::fs::File),
    Lease(lease::Lease),
}

impl Lock {
    /// `Err` once the lock is no longer safely held (a lease that could not
    /// be renewed in time or was taken over): nothing may be published then.
    pub fn check(&self) -> Result<()> {
        match self {
            Lock::Local(_) => Ok(()),
            Lock::Lease(l) => l.check(),
        }
    }
}
