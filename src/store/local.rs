//! A local output directory. Every partition is exactly one file,
//! `dt=D/part-00000.parquet`:
//! - a new partition is staged as a complete directory (data file and, when
//!   final, `_SUCCESS`) and renamed into place: readers see no directory or
//!   the whole one, never an empty one;
//! - an existing partition gets its new file renamed over the old one:
//!   readers that list and read see the old file or the new one;
//! - a partition that lost all rows is renamed away first, then deleted.
//!
//! All renames stay inside the output directory's file system; files and
//! directories are fsynced before and after, so a crash leaves the old or
//! the new partition. The lock is an exclusive `flock`.

use super::{partition_dir, partition_key, LockMode, Locked, StagedFile, PART_FILE};
use crate::schema::Table;
use anyhow::{Context, Result};
use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// skipflow's private directory inside the output directory.
fn state_dir(out: &Path) -> PathBuf {
    out.join(".skipflow")
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

pub(super) fn read(out: &Path, key: &str) -> Result<Option<Vec<u8>>> {
    let p = out.join(key);
    match fs::read(&p) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// Writes to a temporary name, fsyncs, renames over `key`, fsyncs the directory.
pub(super) fn write(out: &Path, key: &str, bytes: &[u8]) -> Result<()> {
    let p = out.join(key);
    let dir = p.parent().expect("a key under the root");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        p.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
    ));
    let mut f = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))?;
    sync_dir(dir)
}

/// Names of the subdirectories of `dir` (none when it does not exist).
pub(super) fn list_dirs(dir: &Path) -> Result<Vec<String>> {
    if !dir.is_dir() {
        return Ok(vec![]);
    }
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        out.push(e?.file_name().to_string_lossy().to_string());
    }
    Ok(out)
}

/// Names of the files directly in `dir` (none when it does not exist).
pub(super) fn list_files(dir: &Path) -> Result<Vec<String>> {
    if !dir.is_dir() {
        return Ok(vec![]);
    }
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_file() {
            out.push(e.file_name().to_string_lossy().to_string());
        }
    }
    Ok(out)
}

/// The data files of one partition directory, sorted.
pub(super) fn data_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(vec![]);
    }
    let mut files: Vec<_> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    Ok(files)
}

/// Record batches of every data file of one partition directory (only
/// `columns` when given).
pub(super) fn read_partition(dir: &Path, columns: Option<&[&str]>) -> Result<Vec<RecordBatch>> {
    let mut batches = Vec::new();
    for path in data_files(dir)? {
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).with_context(|| format!("reading {}", path.display()))?;
        let reader = super::project(builder, columns).with_batch_size(64 * 1024).build()?;
        for b in reader {
            batches.push(b.with_context(|| format!("reading {}", path.display()))?);
        }
    }
    Ok(batches)
}

/// Takes `.skipflow/<name>` (an exclusive `flock`), failing at once or waiting.
pub(super) fn lock(out: &Path, name: &str, mode: LockMode) -> Result<File> {
    let dir = state_dir(out);
    fs::create_dir_all(&dir).with_context(|| format!("creating output directory {}", out.display()))?;
    let path = dir.join(name);
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut said = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                if mode == LockMode::Fail {
                    return Err(Locked {
                        dir: out.display().to_string(),
                        holder: if holder.is_empty() {
                            String::new()
                        } else {
                            format!(" ({holder})")
                        },
                    }
                    .into());
                }
                if !said {
                    said = true;
                    tracing::warn!(
                        holder,
                        "standby: {} is locked by another run; waiting to take over",
                        out.display()
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Err(fs::TryLockError::Error(e)) => return Err(e).context("locking the output directory"),
        }
    }
    file.set_len(0)?;
    write!(file, "pid {}", std::process::id())?;
    file.flush()?;
    Ok(file)
}

/// A fresh staging directory for one run or commit of process `own`.
pub(super) fn staging_dir(out: &Path, own: &str, id: &str) -> Result<PathBuf> {
    let dir = state_dir(out).join("staging").join(own).join(id);
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Removes the staging directory of process `own` left by runs that died
/// (and, for the committer's process, the trash of removed partitions).
pub(super) fn clean_staging(out: &Path, own: &str, trash: bool) -> Result<()> {
    let mut dirs = vec![state_dir(out).join("staging").join(own)];
    if trash {
        dirs.push(state_dir(out).join("trash"));
    }
    for d in dirs {
        if d.exists() {
            fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
        }
    }
    Ok(())
}

/// A partition file being written into staging.
pub struct FileWriter {
    dir: PathBuf,
    file: std::io::BufWriter<File>,
}

pub(super) fn part_writer(staging: &Path, table: Table, day: i32) -> Result<FileWriter> {
    let dir = staging.join(partition_key(table, day));
    fs::create_dir_all(&dir)?;
    let path = dir.join(PART_FILE);
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(FileWriter {
        dir,
        file: std::io::BufWriter::with_capacity(1 << 20, file),
    })
}

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl FileWriter {
    pub(super) fn finish(self) -> Result<(StagedFile, u64)> {
        let file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let bytes = file.metadata()?.len();
        Ok((StagedFile::Dir(self.dir), bytes))
    }
}

/// Makes one staged partition directory visible (see the module doc).
pub(super) fn publish(out: &Path, table: Table, day: i32, staged: &Path, success: bool) -> Result<()> {
    let table_dir = out.join(table.name());
    fs::create_dir_all(&table_dir)?;
    let target = table_dir.join(partition_dir(day));
    let marker = target.join("_SUCCESS");
    if target.is_dir() {
        if !success && marker.exists() {
            fs::remove_file(&marker)?;
        }
        fs::rename(staged.join(PART_FILE), target.join(PART_FILE))
            .with_context(|| format!("publishing {}", target.display()))?;
        // Any other data file in the partition would be read along with ours.
        for e in fs::read_dir(&target)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "parquet") && p.file_name().is_some_and(|n| n != PART_FILE) {
                fs::remove_file(&p)?;
            }
        }
        if success && !marker.exists() {
            File::create(&marker)?.sync_all()?;
        }
        sync_dir(&target)?;
    } else {
        if success {
            File::create(staged.join("_SUCCESS"))?.sync_all()?;
        }
        sync_dir(staged)?;
        fs::rename(staged, &target).with_context(|| format!("publishing {}", target.display()))?;
        sync_dir(&table_dir)?;
    }
    Ok(())
}

/// Removes a published partition (renamed away first, so readers never see it half-deleted).
pub(super) fn remove(out: &Path, table: Table, day: i32) -> Result<bool> {
    let target = out.join(partition_key(table, day));
    if !target.exists() {
        return Ok(false);
    }
    let trash = state_dir(out).join("trash");
    fs::create_dir_all(&trash)?;
    let dest = trash.join(format!(
        "{}-{}-{}",
        table.name(),
        partition_dir(day),
        std::process::id()
    ));
    if dest.exists() {
        fs::remove_dir_all(&dest)?;
    }
    fs::rename(&target, &dest).with_context(|| format!("removing {}", target.display()))?;
    sync_dir(&out.join(table.name()))?;
    fs::remove_dir_all(&dest)?;
    Ok(true)
}

/// Adds `_SUCCESS` to a partition directory that lacks it.
pub(super) fn mark_success(dir: &Path) -> Result<bool> {
    let marker = dir.join("_SUCCESS");
    if !dir.is_dir() || marker.exists() {
        return Ok(false);
    }
    File::create(&marker)?.sync_all()?;
    sync_dir(dir)?;
    Ok(true)
}
