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

/// Renders the overview (or one partition's rows) as text. `dir` is a local
/// directory or an object-store URL.
pub fn inspect(dir: &Path, table: Option<&str>, day: Option<&str>, limit: usize) -> Result<String> {
    let url = dir.to_string_lossy().contains("://");
    if !url && !dir.is_dir() {
        return Err(crate::error::ConfigError(format!("{} is not a directory", dir.display())).into());
    }
    let store = Store::open(dir, &Default::default())?;
    let tables: Vec<Table> = match table {
        Some(t) => vec![Table::from_name(t).ok_or_else(|| {
            crate::error::ConfigError(format!(
                "unknown table {t}; tables: {}",
                Table::ALL.map(|t| t.name()).join(", ")
            ))
        })?],
        None => Table::ALL.to_vec(),
    };
    let day = day
        .map(dates::parse_day)
        .transpose()
        .map_err(|e| crate::error::ConfigError(format!("--day: {e}")))?;
    let mut s = String::new();
    writeln!(s, "{}", dir.display())?;
    for t in tables {
        let days = store.published_days(t)?;
        if days.is_empty() && table.is_none() {
            continue;
        }
        let mut total = 0i64;
        let mut lines: Vec<String> = Vec::new();
        for d in &days {
            if day.is_some_and(|x| x != *d) {
                continue;
            }
            let (rows, bytes) = store.partition_summary(t, *d)?;
            total += rows;
            let ok = if store.is_final(t, *d)? { "final" } else { "open" };
            lines.push(format!(
                "    dt={}  {:>10} rows  {:>10} bytes  {ok}",
                dates::day_to_string(*d),
                rows,
                bytes
            ));
        }
        // A long list shows its ends; --day shows any partition.
        let lines = if lines.len() > 14 {
            let skipped = lines.len() - 10;
            let mut v: Vec<String> = lines[..5].to_vec();
            v.push(format!("    ... {skipped} more partitions (see --day) ..."));
            v.extend_from_slice(&lines[lines.len() - 5..]);
            v
        } else {
            lines
        };
        let lines: String = lines.into_iter().map(|l| l + "\n").collect();
        writeln!(s, "\n{}  ({} partitions, {} rows)", t.name(), days.len(), total)?;
        let schema = t.schema();
        let cols: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), type_name(f.data_type(), f.is_nullable())))
            .collect();
        writeln!(s, "  columns: {}", cols.join(", "))?;
        s.push_str(&lines);
        if let Some(d) = day {
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
        }
    }
    Ok(s)
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
