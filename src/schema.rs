//! Output table schemas, built from `schemas/tables.json` (the single source of
//! truth for names, order and types of every column).

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;
use std::sync::{Arc, OnceLock};

const TABLES_JSON: &str = include_str!("../schemas/tables.json");

#[derive(Debug, Deserialize)]
struct File {
    tables: Vec<TableDef>,
}

/// One table as declared in `schemas/tables.json`.
#[derive(Debug, Deserialize)]
pub struct TableDef {
    pub name: String,
    pub key: Vec<String>,
    pub columns: Vec<ColumnDef>,
}

#[derive(Debug, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub nullable: bool,
}

/// The tables skipflow writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Table {
    UserDaily,
    UserTrackDaily,
    UserArtistDaily,
    UserProfile28d,
    RejectedEvents,
    LateEvents,
}

impl Table {
    pub const ALL: [Table; 6] = [
        Table::UserDaily,
        Table::UserTrackDaily,
        Table::UserArtistDaily,
        Table::UserProfile28d,
        Table::RejectedEvents,
        Table::LateEvents,
    ];
    /// The three tables aggregated per user and day.
    pub const DAILY: [Table; 3] = [Table::UserDaily, Table::UserTrackDaily, Table::UserArtistDaily];

    pub fn name(self) -> &'static str {
        match self {
            Table::UserDaily => "user_daily",
            Table::UserTrackDaily => "user_track_daily",
            Table::UserArtistDaily => "user_artist_daily",
            Table::UserProfile28d => "user_profile_28d",
            Table::RejectedEvents => "rejected_events",
            Table::LateEvents => "late_events",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn def(self) -> &'static TableDef {
        let defs = &registry().defs;
        defs.iter()
            .find(|d| d.name == self.name())
            .expect("table in schemas/tables.json")
    }

    /// The Arrow schema files of this table are written with.
    pub fn schema(self) -> SchemaRef {
        registry().schemas[self as usize].clone()
    }
}

struct Registry {
    defs: Vec<TableDef>,
    schemas: Vec<SchemaRef>,
}

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| {
        let file: File = serde_json::from_str(TABLES_JSON).expect("schemas/tables.json parses");
        let schemas = Table::ALL
            .iter()
            .map(|t| {
                let def = file.tables.iter().find(|d| d.name == t.name()).expect("table declared");
                let fields: Vec<Field> = def
                    .columns
                    .iter()
                    .map(|c| Field::new(&c.name, parse_type(&c.ty), c.nullable))
                    .collect();
                Arc::new(Schema::new(fields))
            })
            .collect();
        Registry {
            defs: file.tables,
            schemas,
        }
    })
}

/// Parses a column type of `schemas/tables.json`. Children of lists and structs
/// are nullable, as Arrow, pyarrow and Spark declare them by default.
pub fn parse_type(ty: &str) -> DataType {
    let ty = ty.trim();
    if let Some(inner) = ty.strip_prefix("list<").and_then(|s| s.strip_suffix('>')) {
        return DataType::new_list(parse_type(inner), true);
    }
    if let Some(inner) = ty.strip_prefix("struct<").and_then(|s| s.strip_suffix('>')) {
        let fields: Fields = inner
            .split(',')
            .map(|f| {
                let (name, t) = f.split_once(':').expect("struct field name:type");
                Field::new(name.trim(), parse_type(t), true)
            })
            .collect();
        return DataType::Struct(fields);
    }
    match ty {
        "string" => DataType::Utf8,
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "double" => DataType::Float64,
        "date" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        "binary" => DataType::Binary,
        other => panic!("unknown column type {other} in schemas/tables.json"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_declared() {
        for t in Table::ALL {
            let s = t.schema();
            assert!(!s.fields().is_empty(), "{}", t.name());
            assert_eq!(Table::from_name(t.name()), Some(t));
        }
        let ud = Table::UserDaily.schema();
        assert_eq!(ud.field(16).name(), "listens_by_hour");
        assert_eq!(ud.field(16).data_type(), &DataType::new_list(DataType::Int64, true));
        let p = Table::UserProfile28d.schema();
        assert!(matches!(p.field(10).data_type(), DataType::List(_)));
        assert!(Table::RejectedEvents.schema().field(3).is_nullable());
        assert!(!Table::RejectedEvents.schema().field(0).is_nullable());
    }
}
