//! Prints a Parquet artifact as an aligned table, CSV or JSON lines.
//!
//! Written by hand over the few Arrow types our artifacts use, rather than pulling in
//! arrow-cast/arrow-csv/arrow-json for one command; binary columns (pixels) print as their size.

use std::path::Path;

use anyhow::Result;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;

use crate::cli::ShowFormat;

pub fn print(path: &Path, limit: usize, format: ShowFormat) -> Result<()> {
    let header = artifacts::parquet_io::read_header(path)?;
    eprintln!(
        "# schema `{}` v{}, {} rows",
        header.schema, header.schema_version, header.num_rows
    );
    let names: Vec<String> = header
        .arrow_schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for batch in artifacts::parquet_io::TableReader::open(path, limit.max(1))? {
        let batch = batch?;
        collect_rows(&batch, limit - rows.len(), &mut rows);
        if rows.len() >= limit {
            break;
        }
    }
    match format {
        ShowFormat::Table => {
            let widths: Vec<usize> = (0..names.len())
                .map(|c| {
                    rows.iter()
                        .map(|r| r[c].chars().count())
                        .chain([names[c].len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: &[String]| {
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(cell, width)| format!("{cell:<width$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
            };
            println!("{}", line(&names));
            for row in &rows {
                println!("{}", line(row));
            }
        }
        ShowFormat::Csv => {
            println!("{}", names.join(","));
            for row in &rows {
                let cells: Vec<String> = row.iter().map(|cell| csv_escape(cell)).collect();
                println!("{}", cells.join(","));
            }
        }
        ShowFormat::Json => {
            for row in &rows {
                let object: serde_json::Map<String, serde_json::Value> = names
                    .iter()
                    .cloned()
                    .zip(row.iter().map(|cell| {
                        serde_json::from_str(cell)
                            .unwrap_or_else(|_| serde_json::Value::String(cell.clone()))
                    }))
                    .collect();
                println!("{}", serde_json::Value::Object(object));
            }
        }
    }
    Ok(())
}

fn collect_rows(batch: &RecordBatch, room: usize, rows: &mut Vec<Vec<String>>) {
    for row in 0..batch.num_rows().min(room) {
        rows.push(
            batch
                .columns()
                .iter()
                .map(|column| format_value(column.as_ref(), row))
                .collect(),
        );
    }
}

/// Formats one cell; numbers as JSON numbers, lists as JSON arrays (first 8 items).
fn format_value(array: &dyn Array, row: usize) -> String {
    if array.is_null(row) {
        return "null".to_owned();
    }
    macro_rules! primitive {
        ($t:ty) => {
            array.as_primitive::<$t>().value(row).to_string()
        };
    }
    match array.data_type() {
        DataType::Boolean => array.as_boolean().value(row).to_string(),
        DataType::Int8 => primitive!(Int8Type),
        DataType::Int16 => primitive!(Int16Type),
        DataType::Int32 => primitive!(Int32Type),
        DataType::Int64 => primitive!(Int64Type),
        DataType::UInt8 => primitive!(UInt8Type),
        DataType::UInt16 => primitive!(UInt16Type),
        DataType::UInt32 => primitive!(UInt32Type),
        DataType::UInt64 => primitive!(UInt64Type),
        DataType::Float32 => primitive!(Float32Type),
        DataType::Float64 => primitive!(Float64Type),
        DataType::Utf8 => array.as_string::<i32>().value(row).to_owned(),
        DataType::LargeUtf8 => array.as_string::<i64>().value(row).to_owned(),
        DataType::Binary => format!("<{} bytes>", array.as_binary::<i32>().value(row).len()),
        DataType::FixedSizeList(_, _) => format_list(&array.as_fixed_size_list().value(row)),
        DataType::List(_) => format_list(&array.as_list::<i32>().value(row)),
        other => format!("<{other}>"),
    }
}

fn format_list(values: &dyn Array) -> String {
    const SHOWN: usize = 8;
    let mut items: Vec<String> = (0..values.len().min(SHOWN))
        .map(|i| format_value(values, i))
        .collect();
    if values.len() > SHOWN {
        items.push(format!("\"… {} more\"", values.len() - SHOWN));
    }
    format!("[{}]", items.join(","))
}

fn csv_escape(cell: &str) -> String {
    if cell.contains([',', '"', '\n']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_owned()
    }
}
