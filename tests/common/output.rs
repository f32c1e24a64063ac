#![allow(dead_code)]
//! Reads an output directory back into canonical rows (the form the reference
//! produces), with real Parquet readers, and checks every file's schema
//! against `schemas/tables.json`.

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Float64Type, Int32Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// table -> partition value -> rows (in file order).
pub type Tables = BTreeMap<String, BTreeMap<String, Vec<Value>>>;

pub const FEATURE_TABLES: [&str; 5] = [
    "user_daily",
    "user_track_daily",
    "user_artist_daily",
    "user_profile_28d",
    "rejected_events",
];

fn date(days: i32) -> String {
    let d = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(days as i64);
    d.format("%Y-%m-%d").to_string()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn value(c: &ArrayRef, i: usize) -> Value {
    if c.is_null(i) {
        return Value::Null;
    }
    match c.data_type() {
        DataType::Utf8 => Value::from(c.as_string::<i32>().value(i)),
        DataType::Int32 => Value::from(c.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => Value::from(c.as_primitive::<Int64Type>().value(i)),
        DataType::Float64 => Value::from(c.as_primitive::<Float64Type>().value(i)),
        DataType::Date32 => Value::from(date(c.as_primitive::<Date32Type>().value(i))),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            Value::from(c.as_primitive::<TimestampMillisecondType>().value(i))
        }
        DataType::Binary => Value::from(hex(c.as_binary::<i32>().value(i))),
        DataType::List(_) => {
            let l = c.as_list::<i32>().value(i);
            Value::Array((0..l.len()).map(|j| value(&l, j)).collect())
        }
        DataType::Struct(_) => Value::Array(c.as_struct().columns().iter().map(|col| value(col, i)).collect()),
        other => panic!("unexpected type {other}"),
    }
}

/// The type string of `schemas/tables.json` for an Arrow type.
pub fn type_string(t: &DataType) -> String {
    match t {
        DataType::Utf8 => "string".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::Float64 => "double".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(TimeUnit::Millisecond, Some(tz)) if tz.as_ref() == "UTC" => "timestamp".into(),
        DataType::Binary => "binary".into(),
        DataType::List(f) => format!("list<{}>", type_string(f.data_type())),
        DataType::Struct(fs) => format!(
            "struct<{}>",
            fs.iter()
                .map(|f| format!("{}:{}", f.name(), type_string(f.data_type())))
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => format!("unexpected:{other}"),
    }
}

/// (name, type, nullable) of each column of a table in `schemas/tables.json`.
pub fn declared(table: &str) -> Vec<(String, String, bool)> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/tables.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let t = v["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == table)
        .unwrap();
    t["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["type"].as_str().unwrap().to_string(),
                c["nullable"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// Reads every table of `out`; panics on a schema that differs from the declared one,
/// a partition whose rows do not match its `dt` value, or a non-Parquet data file.
pub fn read_tables(out: &Path) -> Tables {
    let mut tables = Tables::new();
    for table in FEATURE_TABLES.iter().chain(["late_events"].iter()) {
        let dir = out.join(table);
        if !dir.is_dir() {
            continue;
        }
        let decl = declared(table);
        let mut parts = BTreeMap::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().to_string();
            let dt = name
                .strip_prefix("dt=")
                .unwrap_or_else(|| panic!("unexpected entry {name} in {table}"))
                .to_string();
            let mut rows = Vec::new();
            let mut files: Vec<_> = std::fs::read_dir(e.path())
                .unwrap()
                .map(|f| f.unwrap().path())
                .collect();
            files.sort();
            for f in files {
                let fname = f.file_name().unwrap().to_string_lossy().to_string();
                if fname == "_SUCCESS" {
                    continue;
                }
                assert!(fname.ends_with(".parquet"), "unexpected file {}", f.display());
                let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap())
                    .unwrap()
                    .build()
                    .unwrap();
                for b in reader {
                    let b = b.unwrap();
                    let schema = b.schema();
                    let got: Vec<(String, String, bool)> = schema
                        .fields()
                        .iter()
                        .map(|f| (f.name().clone(), type_string(f.data_type()), f.is_nullable()))
                        .collect();
                    assert_eq!(got, decl, "schema of {}", f.display());
                    for i in 0..b.num_rows() {
                        rows.push(Value::Array(b.columns().iter().map(|c| value(c, i)).collect()));
                    }
                }
            }
            parts.insert(dt, rows);
        }
        if !parts.is_empty() {
            tables.insert(table.to_string(), parts);
        }
    }
    tables
}

/// A readable first difference between two table sets, or None when equal.
pub fn diff(label_a: &str, a: &Tables, label_b: &str, b: &Tables) -> Option<String> {
    let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for t in names {
        let (pa, pb) = (a.get(t), b.get(t));
        let empty = BTreeMap::new();
        let (pa, pb) = (pa.unwrap_or(&empty), pb.unwrap_or(&empty));
        let days: std::collections::BTreeSet<&String> = pa.keys().chain(pb.keys()).collect();
        for d in days {
            let (ra, rb) = (pa.get(d), pb.get(d));
            match (ra, rb) {
                (Some(ra), Some(rb)) => {
                    if ra != rb {
                        for i in 0..ra.len().max(rb.len()) {
                            if ra.get(i) != rb.get(i) {
                                return Some(format!(
                                    "{t} dt={d}: row {i} differs ({} rows in {label_a}, {} in {label_b})\n  {label_a}: {}\n  {label_b}: {}",
                                    ra.len(),
                                    rb.len(),
                                    ra.get(i).map(|v| v.to_string()).unwrap_or("-".into()),
                                    rb.get(i).map(|v| v.to_string()).unwrap_or("-".into())
                                ));
                            }
                        }
                    }
                }
                _ => {
                    return Some(format!(
                        "{t} dt={d}: partition only in {}",
                        if ra.is_some() { label_a } else { label_b }
                    ))
                }
            }
        }
    }
    None
}
