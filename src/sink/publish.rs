//! Atomic publication of partitions, and the output directory lock.
//!
//! Every partition is exactly one file, `dt=D/part-00000.parquet`:
//! - a new partition is staged as a complete directory (data file and, when
//!   final, `_SUCCESS`) and renamed into place: readers see no directory or the
//!   whole one, never an empty one;
//! - an existing partition gets its new file renamed over the old one: readers
//!   that list and read see the old file or the new one, never a mix;
//! - a partition that lost all rows is renamed away first, then deleted.
//!
//! All renames stay inside the output directory's file system; files and
//! directories are fsynced before and after, so a crash leaves the old or the
//! new partition.

use super::{partition_dir, Staged, PART_FILE};
use crate::schema::Table;
use anyhow::{Context, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// skipflow's private directory inside the output directory.
pub fn state_dir(out: &Path) -> PathBuf {
    out.join(".skipflow")
}

/// Returned when another run holds the output directory.
#[derive(Debug, thiserror::Error)]
#[error(
    "output directory {dir} is locked by another skipflow run{holder}; wait for it to finish or use another --output"
)]
pub struct Locked {
    pub dir: String,
    pub holder: String,
}

/// An exclusive lock on an output directory, held until dropped.
pub struct OutputLock {
    _file: File,
}

impl OutputLock {
    /// Takes the lock or fails at once with [`Locked`].
    pub fn acquire(out: &Path) -> Result<OutputLock> {
        OutputLock::acquire_named(out, "lock")
    }

    /// Takes the lock file `name` (each process of a cluster holds its own).
    pub fn acquire_named(out: &Path, name: &str) -> Result<OutputLock> {
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
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
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
            Err(fs::TryLockError::Error(e)) => return Err(e).context("locking the output directory"),
        }
        file.set_len(0)?;
        write!(file, "pid {}", std::process::id())?;
        file.flush()?;
        Ok(OutputLock { _file: file })
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// A fresh staging directory for one run or commit of process `own`.
pub fn staging_dir(out: &Path, own: &str, id: &str) -> Result<PathBuf> {
    let dir = state_dir(out).join("staging").join(own).join(id);
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Removes the staging directory of process `own` left by runs that died
/// (and, for the committer's process, the trash of removed partitions).
pub fn clean_staging(out: &Path, own: &str, trash: bool) -> Result<()> {
    let staging = state_dir(out).join("staging");
    let mut dirs = vec![staging.join(own)];
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

/// Makes one staged partition visible. `success` adds `_SUCCESS` (the
/// partition is final); otherwise an existing `_SUCCESS` is removed first.
pub fn publish(out: &Path, s: &Staged, success: bool) -> Result<()> {
    let table_dir = out.join(s.table.name());
    fs::create_dir_all(&table_dir)?;
    let target = table_dir.join(partition_dir(s.day));
    let marker = target.join("_SUCCESS");
    if target.is_dir() {
        if !success && marker.exists() {
            fs::remove_file(&marker)?;
        }
        fs::rename(s.dir.join(PART_FILE), target.join(PART_FILE))
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
            File::create(s.dir.join("_SUCCESS"))?.sync_all()?;
        }
        sync_dir(&s.dir)?;
        fs::rename(&s.dir, &target).with_context(|| format!("publishing {}", target.display()))?;
        sync_dir(&table_dir)?;
    }
    Ok(())
}

/// Removes a published partition (renamed away first, so readers never see it half-deleted).
pub fn remove(out: &Path, table: Table, day: i32) -> Result<bool> {
    let target = out.join(table.name()).join(partition_dir(day));
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

/// Days that have a published partition of `table`.
pub fn published_days(out: &Path, table: Table) -> Result<Vec<i32>> {
    let dir = out.join(table.name());
    let mut days = Vec::new();
    if !dir.is_dir() {
        return Ok(days);
    }
    for e in fs::read_dir(&dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(d) = name.strip_prefix("dt=").and_then(|d| crate::dates::parse_day(d).ok()) {
            days.push(d);
        }
    }
    days.sort_unstable();
    Ok(days)
}
