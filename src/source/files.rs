//! NDJSON file source: one record per line, `.gz` and `.zst` decompressed by
//! extension. Plain files are cut into line-aligned byte ranges so every
//! worker reads its share; compressed files go whole to one worker each.
//! Blank lines (only spaces, tabs, CR) are not records; a trailing CR is not
//! part of the value.

use super::{Poll, RawRecord};
use crate::decode::MAX_VALUE_BYTES;
use anyhow::{Context, Result};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A line-aligned piece of one input file.
#[derive(Clone, Debug)]
pub struct Split {
    /// Index into the run's file list (the source name).
    pub file: usize,
    pub path: String,
    pub start: u64,
    /// End offset (exclusive); `None` = to the end (compressed files).
    pub end: Option<u64>,
    /// Line number of the split's first line, from 1.
    pub first_line: i64,
    pub compression: Compression,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn of(path: &str) -> Compression {
        if path.ends_with(".gz") {
            Compression::Gzip
        } else if path.ends_with(".zst") || path.ends_with(".zstd") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Cuts `paths` into splits for `parts` workers: a plain file into up to
/// `parts` line-aligned ranges (one pass counting lines), a compressed file whole.
pub fn plan(paths: &[String], parts: usize) -> Result<Vec<Split>> {
    let mut splits = Vec::new();
    for (file, path) in paths.iter().enumerate() {
        let compression = Compression::of(path);
        let meta = std::fs::metadata(path).with_context(|| format!("input file {path} cannot be read"))?;
        if !meta.is_file() {
            anyhow::bail!("input {path} is not a file");
        }
        if compression != Compression::None || parts <= 1 || meta.len() < (1 << 20) {
            splits.push(Split {
                file,
                path: path.clone(),
                start: 0,
                end: None,
                first_line: 1,
                compression,
            });
            continue;
        }
        let size = meta.len();
        let mut f = File::open(path)?;
        let mut buf = vec![0u8; 1 << 22];
        let mut pos = 0u64;
        let mut lines = 0i64;
        let mut start = 0u64;
        let mut first_line = 1i64;
        let mut k = 1usize;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            for nl in memchr::memchr_iter(b'\n', &buf[..n]) {
                lines += 1;
                let after = pos + nl as u64 + 1;
                if k < parts && after >= size * k as u64 / parts as u64 {
                    splits.push(Split {
                        file,
                        path: path.clone(),
                        start,
                        end: Some(after),
                        first_line,
                        compression,
                    });
                    start = after;
                    first_line = lines + 1;
                    k += 1;
                }
            }
            pos += n as u64;
        }
        if start < size || splits.iter().all(|s| s.file != file) {
            splits.push(Split {
                file,
                path: path.clone(),
                start,
                end: None,
                first_line,
                compression,
            });
        }
    }
    Ok(splits)
}

/// Reads the lines of a list of splits.
pub struct FileReader {
    splits: std::vec::IntoIter<Split>,
    current: Option<Open>,
    buf: Vec<u8>,
    /// Bytes read so far, shared with the progress display.
    progress: Arc<AtomicU64>,
}

struct Open {
    file: usize,
    path: String,
    reader: Box<dyn Read + Send>,
    /// Bytes left to read from a bounded range.
    remaining: Option<u64>,
    line: i64,
    /// Valid bytes in `buf` are `buf[lo..hi]`.
    lo: usize,
    hi: usize,
    eof: bool,
    /// Skipping the rest of an over-long line.
    skipping: bool,
}

const BUF: usize = 1 << 22;

impl FileReader {
    pub fn new(splits: Vec<Split>, progress: Arc<AtomicU64>) -> Self {
        FileReader {
            splits: splits.into_iter(),
            current: None,
            buf: vec![0; BUF],
            progress,
        }
    }

    fn open(split: &Split) -> Result<Open> {
        let mut f = File::open(&split.path).with_context(|| format!("input file {} cannot be read", split.path))?;
        let reader: Box<dyn Read + Send> = match split.compression {
            Compression::None => {
                f.seek(SeekFrom::Start(split.start))?;
                Box::new(f)
            }
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(
                1 << 20,
                f,
            ))),
            Compression::Zstd => {
                Box::new(zstd::Decoder::new(f).with_context(|| format!("reading input file {}", split.path))?)
            }
        };
        Ok(Open {
            file: split.file,
            path: split.path.clone(),
            reader,
            remaining: split.end.map(|e| e - split.start),
            line: split.first_line,
            lo: 0,
            hi: 0,
            eof: false,
            skipping: false,
        })
    }

    /// Reads up to `budget` records, calling `f(file_index, record)` for each.
    pub fn poll(&mut self, budget: usize, f: &mut dyn FnMut(usize, RawRecord<'_>)) -> Result<Poll> {
        let mut done = 0usize;
        while done < budget {
            if self.current.is_none() {
                match self.splits.next() {
                    None => return Ok(Poll::Done),
                    Some(s) => self.current = Some(Self::open(&s)?),
                }
            }
            let cur = self.current.as_mut().expect("open split");
            // Emit whole lines from the buffer.
            while done < budget {
                let avail = &self.buf[cur.lo..cur.hi];
                match memchr::memchr(b'\n', avail) {
                    Some(nl) => {
                        let line_no = cur.line;
                        cur.line += 1;
                        let line = &avail[..nl];
                        cur.lo += nl + 1;
                        if cur.skipping {
                            cur.skipping = false;
                            continue;
                        }
                        if emit_line(cur.file, line_no, line, f) {
                            done += 1;
                        }
                    }
                    None => break,
                }
            }
            if done >= budget {
                break;
            }
            // Refill: move the partial line to the front, read more.
            if cur.eof {
                let rest = &self.buf[cur.lo..cur.hi];
                if !rest.is_empty() && !cur.skipping && emit_line(cur.file, cur.line, rest, f) {
                    done += 1;
                }
                self.current = None;
                continue;
            }
            self.buf.copy_within(cur.lo..cur.hi, 0);
            cur.hi -= cur.lo;
            cur.lo = 0;
            if cur.hi == self.buf.len() {
                // One line fills the whole buffer: far over the size limit.
                // Emit its head (rejected as too_large) and skip to its end.
                if !cur.skipping {
                    let head = &self.buf[..MAX_VALUE_BYTES + 1];
                    f(
                        cur.file,
                        RawRecord {
                            partition: 0,
                            offset: cur.line,
                            message_ts: None,
                            value: Some(head),
                        },
                    );
                    done += 1;
                    cur.skipping = true;
                }
                cur.hi = 0;
            }
            let want = match cur.remaining {
                Some(r) => (self.buf.len() - cur.hi).min(r as usize),
                None => self.buf.len() - cur.hi,
            };
            let n = if want == 0 {
                0
            } else {
                cur.reader
                    .read(&mut self.buf[cur.hi..cur.hi + want])
                    .with_context(|| format!("reading input file {}", cur.path))?
            };
            if n == 0 {
                cur.eof = true;
            } else {
                cur.hi += n;
                if let Some(r) = cur.remaining.as_mut() {
                    *r -= n as u64;
                }
                self.progress.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        Ok(Poll::More)
    }
}

/// Emits one line unless it is blank. Returns whether a record was emitted.
fn emit_line(file: usize, line_no: i64, line: &[u8], f: &mut dyn FnMut(usize, RawRecord<'_>)) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
        return false;
    }
    f(
        file,
        RawRecord {
            partition: 0,
            offset: line_no,
            message_ts: None,
            value: Some(line),
        },
    );
    true
}

/// Total size of the inputs on disk (for progress).
pub fn total_bytes(paths: &[String]) -> u64 {
    paths
        .iter()
        .filter_map(|p| std::fs::metadata(Path::new(p)).ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_all(paths: &[String], parts: usize) -> Vec<(usize, i64, Vec<u8>)> {
        let splits = plan(paths, parts).unwrap();
        let mut out = Vec::new();
        for w in 0..parts {
            let mine: Vec<Split> = splits
                .iter()
                .enumerate()
                .filter(|(i, _)| i % parts == w)
                .map(|(_, s)| s.clone())
                .collect();
            let mut r = FileReader::new(mine, Arc::new(AtomicU64::new(0)));
            while r
                .poll(7, &mut |f, rec| out.push((f, rec.offset, rec.value.unwrap().to_vec())))
                .unwrap()
                == Poll::More
            {}
        }
        out.sort();
        out
    }

    #[test]
    fn splits_agree_with_one_reader() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.ndjson");
        let mut f = File::create(&p).unwrap();
        let mut expect = Vec::new();
        for i in 0..60_000i64 {
            if i % 1000 == 7 {
                writeln!(f, "   ").unwrap();
                continue;
            }
            let line = format!("{{\"n\":{i}}}");
            writeln!(f, "{line}\r").unwrap();
            expect.push((0usize, i + 1, line.into_bytes()));
        }
        write!(f, "last").unwrap();
        expect.push((0, 60_001, b"last".to_vec()));
        drop(f);
        let paths = vec![p.to_string_lossy().to_string()];
        assert_eq!(read_all(&paths, 1), expect);
        assert_eq!(read_all(&paths, 3), expect);
    }

    #[test]
    fn compressed_and_huge_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.ndjson.zst");
        let mut raw = Vec::new();
        raw.extend_from_slice(b"{}\n");
        raw.extend(std::iter::repeat_n(b'x', BUF + 10));
        raw.extend_from_slice(b"\n{\"a\":1}\n");
        std::fs::write(&p, zstd::encode_all(&raw[..], 1).unwrap()).unwrap();
        let got = read_all(&[p.to_string_lossy().to_string()], 2);
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].1, 2);
        assert!(got[1].2.len() > MAX_VALUE_BYTES);
        assert_eq!(got[2], (0, 3, b"{\"a\":1}".to_vec()));
    }
}
