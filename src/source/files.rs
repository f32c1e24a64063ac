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
/// `parts` line-aligned ranges (the lines before each counted in parallel), a
/// compressed file whole.
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
        let bounds = boundaries(path, size, parts)?;
        let counts = count_lines(path, &bounds)?;
        let mut start = 0u64;
        let mut first_line = 1i64;
        for (&end, lines) in bounds.iter().zip(counts) {
            splits.push(Split {
                file,
                path: path.clone(),
                start,
                end: Some(end),
                first_line,
                compression,
            });
            start = end;
            first_line += lines;
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

/// The ends of the first `parts - 1` splits of a plain file: for split k,
/// just after the first newline at or past `size * k / parts` (and past the
/// previous end). Found by seeking, not by reading the file.
fn boundaries(path: &str, size: u64, parts: usize) -> Result<Vec<u64>> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut ends: Vec<u64> = Vec::new();
    for k in 1..parts as u64 {
        let mut pos = (size * k / parts as u64)
            .saturating_sub(1)
            .max(ends.last().copied().unwrap_or(0));
        f.seek(SeekFrom::Start(pos))?;
        let end = loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break None;
            }
            if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
                break Some(pos + i as u64 + 1);
            }
            pos += n as u64;
        };
        match end {
            Some(e) => ends.push(e),
            None => break,
        }
    }
    Ok(ends)
}

/// Lines in each range `[previous end, end)` of `ends`, counted in parallel
/// (one thread per range): the first line number of every split.
fn count_lines(path: &str, ends: &[u64]) -> Result<Vec<i64>> {
    let count = |start: u64, end: u64| -> Result<i64> {
        let mut f = File::open(path)?;
        f.seek(SeekFrom::Start(start))?;
        let mut r = f.take(end - start);
        let mut buf = vec![0u8; 1 << 20];
        let mut lines = 0i64;
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(lines);
            }
            lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as i64;
        }
    };
    std::thread::scope(|s| {
        let starts = std::iter::once(0).chain(ends.iter().copied());
        let counting: Vec<_> = starts.zip(ends).map(|(a, &b)| s.spawn(move || count(a, b))).collect();
        counting
            .into_iter()
            .map(|h| h.join().expect("a line-counting thread panicked"))
            .collect::<Result<Vec<i64>>>()
    })
    .with_context(|| format!("input file {path} cannot be read"))
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

    /// A file large enough to be cut: every number of parts reads the same
    /// lines with the same line numbers, also when one line is longer than
    /// a split (cuts collapse onto its end) and the file ends without a newline.
    #[test]
    fn planned_splits_of_a_large_file_agree_with_one_reader() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.ndjson");
        let mut f = File::create(&p).unwrap();
        for i in 0..120_000usize {
            if i == 60_000 {
                writeln!(f, "{}", "y".repeat(3 << 20)).unwrap();
            }
            write!(f, "{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 13)).unwrap();
            if i + 1 < 120_000 {
                writeln!(f).unwrap();
            }
        }
        drop(f);
        let paths = vec![p.to_string_lossy().to_string()];
        let one = read_all(&paths, 1);
        assert_eq!(one.len(), 120_001);
        for parts in [2, 3, 8, 64] {
            assert!(plan(&paths, parts).unwrap().len() > 1, "{parts} parts cut the file");
            assert_eq!(read_all(&paths, parts), one, "{parts} parts");
        }
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
