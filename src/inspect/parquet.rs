//! The Parquet-level view of a partition (what parquet-cli's `meta` or
//! DuckDB's `parquet_metadata` show): per data file its row groups, and per
//! row group and column the sizes, encodings' compression, min/max and null
//! count, from the footer alone.

use crate::dates;
use parquet::basic::{LogicalType, TimeUnit};
use parquet::file::metadata::{ColumnChunkMetaData, ParquetMetaData, RowGroupMetaData};
use parquet::file::statistics::Statistics;
use serde::Serialize;
use std::fmt::Write as _;

/// One data file of a partition.
#[derive(Debug, Serialize)]
pub struct FileMeta {
    pub file: String,
    pub bytes: u64,
    pub rows: i64,
    pub created_by: Option<String>,
    pub row_groups: Vec<RowGroupMeta>,
}

#[derive(Debug, Serialize)]
pub struct RowGroupMeta {
    pub rows: i64,
    pub compressed_bytes: i64,
    pub uncompressed_bytes: i64,
    pub columns: Vec<ColumnMeta>,
}

/// One column chunk (leaf column) of a row group.
#[derive(Debug, Serialize)]
pub struct ColumnMeta {
    /// Dotted path of the leaf column (`top_artists.list.element.plays`).
    pub column: String,
    pub physical_type: String,
    pub compression: String,
    pub compressed_bytes: i64,
    pub uncompressed_bytes: i64,
    pub nulls: Option<u64>,
    pub min: Option<String>,
    pub max: Option<String>,
}

/// The view of one file's footer.
pub fn file_meta(file: String, bytes: u64, meta: &ParquetMetaData) -> FileMeta {
    let f = meta.file_metadata();
    FileMeta {
        file,
        bytes,
        rows: f.num_rows(),
        created_by: f.created_by().map(str::to_string),
        row_groups: meta.row_groups().iter().map(row_group).collect(),
    }
}

fn row_group(rg: &RowGroupMetaData) -> RowGroupMeta {
    RowGroupMeta {
        rows: rg.num_rows(),
        compressed_bytes: rg.compressed_size(),
        uncompressed_bytes: rg.total_byte_size(),
        columns: rg.columns().iter().map(column).collect(),
    }
}

fn column(c: &ColumnChunkMetaData) -> ColumnMeta {
    let logical = c.column_descr().logical_type_ref().cloned();
    let stats = c.statistics();
    ColumnMeta {
        column: c.column_path().string(),
        physical_type: c.column_type().to_string(),
        // The codec's name (ZSTD, SNAPPY, ...), without its level.
        compression: c
            .compression()
            .to_string()
            .split('(')
            .next()
            .unwrap_or_default()
            .to_string(),
        compressed_bytes: c.compressed_size(),
        uncompressed_bytes: c.uncompressed_size(),
        nulls: stats.and_then(|s| s.null_count_opt()),
        min: stats.and_then(|s| bound(s, logical.as_ref(), true)),
        max: stats.and_then(|s| bound(s, logical.as_ref(), false)),
    }
}

/// A statistic's min or max as text, by the column's logical type.
fn bound(s: &Statistics, logical: Option<&LogicalType>, min: bool) -> Option<String> {
    macro_rules! pick {
        ($v:expr) => {
            if min {
                $v.min_opt()
            } else {
                $v.max_opt()
            }
        };
    }
    Some(match s {
        Statistics::Boolean(v) => pick!(v)?.to_string(),
        Statistics::Int32(v) => match logical {
            Some(LogicalType::Date) => dates::day_to_string(*pick!(v)?),
            _ => pick!(v)?.to_string(),
        },
        Statistics::Int64(v) => match logical {
            Some(LogicalType::Timestamp(t)) if matches!(t.unit, TimeUnit::MILLIS) => {
                let ms = *pick!(v)?;
                chrono::DateTime::from_timestamp_millis(ms).map_or(ms.to_string(), |t| t.to_rfc3339())
            }
            _ => pick!(v)?.to_string(),
        },
        Statistics::Float(v) => pick!(v)?.to_string(),
        Statistics::Double(v) => format!("{:.6}", pick!(v)?),
        Statistics::ByteArray(v) => text(pick!(v)?.data(), logical),
        Statistics::FixedLenByteArray(v) => text(pick!(v)?.data(), logical),
        Statistics::Int96(_) => return None,
    })
}

/// Strings as (at most 40 characters of) text, bytes as their length.
fn text(b: &[u8], logical: Option<&LogicalType>) -> String {
    match (logical, std::str::from_utf8(b)) {
        (Some(LogicalType::String), Ok(s)) if s.chars().count() > 40 => {
            format!("{}…", s.chars().take(40).collect::<String>())
        }
        (Some(LogicalType::String), Ok(s)) => s.to_string(),
        _ => format!("<{} bytes>", b.len()),
    }
}

/// The view as text: a line per file and row group, a table of columns.
pub fn render(files: &[FileMeta]) -> String {
    let mut s = String::new();
    for f in files {
        let _ = writeln!(
            s,
            "    file {}  {} bytes  {} rows  {} row groups  ({})",
            f.file,
            f.bytes,
            f.rows,
            f.row_groups.len(),
            f.created_by.as_deref().unwrap_or("?")
        );
        for (i, rg) in f.row_groups.iter().enumerate() {
            let _ = writeln!(
                s,
                "      row group {i}: {} rows, {} bytes compressed, {} uncompressed",
                rg.rows, rg.compressed_bytes, rg.uncompressed_bytes
            );
            let _ = writeln!(
                s,
                "        {:<38} {:<11} {:<9} {:>10} {:>12} {:>7}  min .. max",
                "column", "type", "codec", "compressed", "uncompressed", "nulls"
            );
            for c in &rg.columns {
                let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
                let _ = writeln!(
                    s,
                    "        {:<38} {:<11} {:<9} {:>10} {:>12} {:>7}  {} .. {}",
                    c.column,
                    c.physical_type,
                    c.compression,
                    c.compressed_bytes,
                    c.uncompressed_bytes,
                    c.nulls.map_or("-".into(), |n| n.to_string()),
                    opt(&c.min),
                    opt(&c.max)
                );
            }
        }
    }
    s
}
