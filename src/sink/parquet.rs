//! Rows of one partition, sorted by the table key (strings byte-wise) ->
//! Arrow record batches of a slice of rows each -> one Parquet file (zstd,
//! statistics, row groups of up to 1M rows, sorting columns declared, bloom
//! filter on `user_id`, dictionaries only where values repeat).

use super::PartRows;
use crate::intern::Interner;
use crate::schema::Table;
use anyhow::{Context, Result};
use arrow_schema::{DataType, Field};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

/// Writer settings: zstd, page statistics, row groups of up to 1M rows, the
/// key declared as sorting columns, a bloom filter on `user_id` where present,
/// no dictionary for columns whose values rarely repeat.
pub fn writer_properties(table: Table) -> WriterProperties {
    let schema = table.schema();
    let def = table.def();
    let sorting: Vec<SortingColumn> = def
        .key
        .iter()
        .filter_map(|k| schema.index_of(k).ok())
        .map(|i| SortingColumn {
            column_idx: i as i32,
            descending: false,
            nulls_first: false,
        })
        .collect();
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("zstd level")))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(1 << 20))
        .set_sorting_columns(Some(sorting))
        .set_created_by(format!("skipflow {}", env!("CARGO_PKG_VERSION")));
    if schema.index_of("user_id").is_ok() {
        props = props.set_column_bloom_filter_enabled(ColumnPath::from("user_id"), true);
    }
    for f in schema.fields().iter().filter(|f| mostly_distinct(f)) {
        props = props.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), false);
    }
    props.build()
}

/// Columns whose values rarely repeat within a partition (times, ratios,
/// milliseconds played, event ids): a dictionary only costs time there, as
/// the writer builds it, finds it too large and falls back to plain. Plain
/// encoding (readable by every Parquet reader) then compresses better too.
fn mostly_distinct(f: &Field) -> bool {
    matches!(f.data_type(), DataType::Float64 | DataType::Timestamp(..))
        || matches!(f.name().as_str(), "ms_played" | "event_id")
}

/// Footer key of a `user_daily` file: its kept events (the sum of `listens`).
pub const KEPT_EVENTS_KEY: &str = "skipflow.kept_events";

/// Rows per record batch while a partition is written: the writer still
/// makes row groups of up to 1M rows, but the Arrow columns of a large
/// partition (38 MB for 347,000 `user_track_daily` rows) are never all in
/// memory at once.
const BATCH_ROWS: usize = 1 << 16;

/// Writes a sorted partition ([`PartRows::sort`]) through `out` (a staged file or
/// upload), a slice of rows at a time; complete once this returns.
pub fn write_file(
    out: crate::store::PartWriter,
    rows: &PartRows,
    day: i32,
    int: &Interner,
) -> Result<(crate::store::StagedFile, u64)> {
    write_rows(out, rows, day, int, BATCH_ROWS)?.finish()
}

/// Writes a sorted partition through `out`, the Arrow columns of `slice`
/// rows at a time; returns `out` once the file is complete.
fn write_rows<W: std::io::Write + Send>(out: W, rows: &PartRows, day: i32, int: &Interner, slice: usize) -> Result<W> {
    let table = rows.table();
    let mut w = ArrowWriter::try_new(out, table.schema(), Some(writer_properties(table)))?;
    let n = rows.len();
    // At least one batch: an empty partition still gets its file.
    for start in (0..n.max(1)).step_by(slice) {
        let batch = rows.to_batch(start..n.min(start.saturating_add(slice)), day, int)?;
        w.write(&batch)
            .with_context(|| format!("writing a {} partition", table.name()))?;
    }
    for kv in rows.footer() {
        w.append_key_value_metadata(kv);
    }
    Ok(w.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::DailyRow;
    use crate::intern::Name;
    use arrow_array::{Int64Array, StringArray};

    /// A partition written a few rows of columns at a time reads back as the
    /// same rows, in the same order, with the same footer, as one written
    /// whole: no row lost or repeated at a slice's edge.
    #[test]
    fn slices_write_the_same_file_contents_as_one_batch() {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let int = Interner::new();
        let read = |bytes: Vec<u8>| {
            let r = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
            let footer = r.metadata().file_metadata().key_value_metadata().cloned();
            let rows: Vec<(String, i64)> = r
                .build()
                .unwrap()
                .flat_map(|b| {
                    let b = b.unwrap();
                    let users = b.column(0).as_any().downcast_ref::<StringArray>().unwrap().clone();
                    let listens = b.column(2).as_any().downcast_ref::<Int64Array>().unwrap().clone();
                    (0..b.num_rows())
                        .map(|i| (users.value(i).to_string(), listens.value(i)))
                        .collect::<Vec<_>>()
                })
                .collect();
            (rows, footer)
        };
        for n in [0usize, 1, 7, 10] {
            let mut rows = PartRows::UserDaily(
                (0..n)
                    .map(|i| {
                        let r = DailyRow {
                            listens: i as i64 + 1,
                            top_artist: Name(int.name("artist")),
                            ..Default::default()
                        };
                        (Name(int.name(&format!("user-{}", n - i))), r)
                    })
                    .collect(),
            );
            rows.sort(&int);
            let whole = read(write_rows(Vec::new(), &rows, 20_000, &int, usize::MAX).unwrap());
            assert_eq!(whole.0.len(), n);
            for slice in [1, 3, 4] {
                let sliced = read(write_rows(Vec::new(), &rows, 20_000, &int, slice).unwrap());
                assert_eq!(sliced, whole, "{n} rows in slices of {slice}");
            }
        }
    }
}
