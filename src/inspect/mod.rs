//! `skipflow inspect`: what an output directory holds, for a person.

use crate::dates;
use crate::schema::Table;
use crate::store::Store;
use anyhow::Result;
use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Int32Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use std::fmt::Write as _;
use std::path::Path;

pub mod parquet;

use serde::Serialize;

/// What `skipflow inspect` shows.
#[derive(Debug, Default)]
pub struct Options<'a> {
    pub table: Option<&'a str>,
    pub day: Option<&'a str>,
    /// Rows shown with `day` (text only).
    pub limit: usize,
    /// JSON for scripts instead of text.
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct TableInfo {
    table: &'static str,
    partitions: usize,
    rows: i64,
    columns: Vec<(String, String)>,
    days: Vec<PartitionInfo>,
}

#[derive(Debug, Serialize)]
struct PartitionInfo {
    day: String,
    rows: i64,
    bytes: u64,
    #[serde(rename = "final")]
    is_final: bool,
    /// The Parquet view (with `--day`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files: Vec<parquet::FileMeta>,
}

/// Renders the overview (with `day`: that partition's Parquet metadata and
/// rows) as text or JSON. `dir` is a local directory or an object-store URL.
pub fn inspect(dir: &Path, o: &Options) -> Result<String> {
    let url = dir.to_string_lossy().contains("://");
    if !url && !dir.is_dir() {
        return Err(crate::error::ConfigError(format!("{} is not a directory", dir.display())).into());
    }
    let store = Store::open(dir, &Default::default())?;
    let tables: Vec<Table> = match o.table {
        Some(t) => vec![Table::from_name(t).ok_or_else(|| {
            crate::error::ConfigError(format!(
                "unknown table {t}; tables: {}",
                Table::ALL.map(|t| t.name()).join(", ")
            ))
        })?],
        None => Table::ALL.to_vec(),
    };
    let day = o
        .day
        .map(dates::parse_day)
        .transpose()
        .map_err(|e| crate::error::ConfigError(format!("--day: {e}")))?;
    let mut infos = Vec::new();
    for t in tables {
        let info = table_info(&store, t, day)?;
        if info.partitions > 0 || o.table.is_some() {
            infos.push((t, info));
        }
    }
    let ck = crate::continuous::load_checkpoint(&store)?;
    if o.json {
        let tables: Vec<&TableInfo> = infos.iter().map(|(_, i)| i).collect();
        let held = ck.as_ref().map(|c| c.held.clone()).unwrap_or_default();
        let v = serde_json::json!({ "output": store.describe(), "held_days": held, "tables": tables });
        return Ok(serde_json::to_string_pretty(&v)? + "\n");
    }
    let mut s = String::new();
    writeln!(s, "{}", dir.display())?;
    if let Some(c) = &ck {
        let last = c
            .final_through
            .map(dates::day_to_string)
            .unwrap_or_else(|| "none".into());
        writeln!(
            s,
            "continuous: {} commits, the last at {}; final through {last}",
            c.commits, c.committed_at
        )?;
        for (day, why) in &c.held {
            writeln!(
                s,
                "  HELD {day} (no _SUCCESS until `skipflow accept --day {day}`): {why}"
            )?;
        }
    }
    for (t, info) in &infos {
        render_table(&mut s, info);
        if let Some(d) = day {
            rows(&mut s, &store, *t, d, o.limit)?;
        }
    }
    Ok(s)
}

/// A table's partitions (only `day`'s, with its Parquet view, when given).
fn table_info(store: &Store, t: Table, day: Option<i32>) -> Result<TableInfo> {
    let days = store.published_days(t)?;
    let mut info = TableInfo {
        table: t.name(),
        partitions: days.len(),
        rows: 0,
        columns: t
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), type_name(f.data_type(), f.is_nullable())))
            .collect(),
        days: Vec::new(),
    };
    for d in days.into_iter().filter(|d| day.is_none_or(|x| x == *d)) {
        let mut p = PartitionInfo {
            day: dates::day_to_string(d),
            rows: 0,
            bytes: 0,
            is_final: store.is_final(t, d)?,
            files: Vec::new(),
        };
        if day.is_some() {
            for (file, bytes, meta) in store.partition_metadata(t, d)? {
                p.rows += meta.file_metadata().num_rows();
                p.bytes += bytes;
                p.files.push(parquet::file_meta(file, bytes, &meta));
            }
        } else {
            (p.rows, p.bytes) = store.partition_summary(t, d)?;
        }
        info.rows += p.rows;
        info.days.push(p);
    }
    Ok(info)
}

fn render_table(s: &mut String, info: &TableInfo) {
    let mut lines: Vec<String> = info
        .days
        .iter()
        .map(|p| {
            let state = if p.is_final { "final" } else { "open" };
            format!("    dt={}  {:>10} rows  {:>10} bytes  {state}", p.day, p.rows, p.bytes)
        })
        .collect();
    // A long list shows its ends; --day shows any partition.
    if lines.len() > 14 {
        let skipped = lines.len() - 10;
        let tail = lines.split_off(lines.len() - 5);
        lines.truncate(5);
        lines.push(format!("    ... {skipped} more partitions (see --day) ..."));
        lines.extend(tail);
    }
    let _ = writeln!(
        s,
        "\n{}  ({} partitions, {} rows)",
        info.table, info.partitions, info.rows
    );
    let cols: Vec<String> = info.columns.iter().map(|(n, t)| format!("{n}: {t}")).collect();
    let _ = writeln!(s, "  columns: {}", cols.join(", "));
    for l in lines {
        let _ = writeln!(s, "{l}");
    }
    for p in &info.days {
        s.push_str(&parquet::render(&p.files));
    }
}

/// The first `limit` rows of a partition.
fn rows(s: &mut String, store: &Store, t: Table, d: i32, limit: usize) -> Result<()> {
    for b in store.read_partition(t, d)? {
        for i in 0..b.num_rows().min(limit) {
            let vals: Vec<String> = b
                .schema()
                .fields()
                .iter()
                .zip(b.columns())
                .map(|(f, c)| format!("{}={}", f.name(), fmt_value(c, i)))
                .collect();
            writeln!(s, "    {}", vals.join("  "))?;
        }
    }
    Ok(())
}

fn type_name(t: &DataType, nullable: bool) -> String {
    let base = match t {
        DataType::Utf8 => "string".to_string(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::Float64 => "double".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, _) => "timestamp(ms, UTC)".into(),
        DataType::Binary => "binary".into(),
        DataType::List(f) => format!("list<{}>", type_name(f.data_type(), false)),
        DataType::Struct(fs) => {
            format!(
                "struct<{}>",
                fs.iter()
                    .map(|f| format!("{}: {}", f.name(), type_name(f.data_type(), false)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        other => format!("{other}"),
    };
    if nullable {
        format!("{base}?")
    } else {
        base
    }
}

/// One value of a column, as text.
pub fn fmt_value(c: &ArrayRef, i: usize) -> String {
    if c.is_null(i) {
        return "null".into();
    }
    match c.data_type() {
        DataType::Utf8 => format!("{:?}", c.as_string::<i32>().value(i)),
        DataType::Int32 => c.as_primitive::<Int32Type>().value(i).to_string(),
        DataType::Int64 => c.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::Float64 => format!("{:.4}", c.as_primitive::<arrow_array::types::Float64Type>().value(i)),
        DataType::Date32 => dates::day_to_string(c.as_primitive::<Date32Type>().value(i)),
        DataType::Timestamp(_, _) => {
            let ms = c.as_primitive::<TimestampMillisecondType>().value(i);
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
                .unwrap_or(ms.to_string())
        }
        DataType::Binary => {
            let b = c.as_binary::<i32>().value(i);
            let s = String::from_utf8_lossy(&b[..b.len().min(60)]).to_string();
            format!("{s:?}{}", if b.len() > 60 { "…" } else { "" })
        }
        DataType::List(_) => {
            let l = c.as_list::<i32>().value(i);
            let items: Vec<String> = (0..l.len()).map(|j| fmt_value(&l, j)).collect();
            format!("[{}]", items.join(","))
        }
        DataType::Struct(_) => {
            let s = c.as_struct();
            let items: Vec<String> = s.columns().iter().map(|col| fmt_value(col, i)).collect();
            format!("({})", items.join(" "))
        }
        other => format!("<{other}>"),
    }
}
