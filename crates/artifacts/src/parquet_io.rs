//! Parquet reading and writing shared by every artifact kind.
//!
//! An artifact is either one Parquet file or a folder of `part-NNNNN.parquet` files (large
//! datasets: each part holds at most a configured number of rows, each row group a bounded
//! number, so neither writing nor reading ever holds a whole dataset in memory). Every file
//! carries `zfnet.schema`, `zfnet.schema_version` and `zfnet.provenance` in its key-value
//! metadata. pyarrow, pandas and duckdb open both shapes directly.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::{Error, Provenance, Result};

/// Key-value metadata keys written into every artifact.
pub const SCHEMA_KEY: &str = "zfnet.schema";
pub const SCHEMA_VERSION_KEY: &str = "zfnet.schema_version";
pub const PROVENANCE_KEY: &str = "zfnet.provenance";

/// The name and version of an artifact schema (`images` v1, `features` v1, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchemaId {
    pub name: &'static str,
    pub version: u32,
}

/// How a writer lays rows out in files.
#[derive(Clone, Copy, Debug)]
pub struct LayoutConfig {
    /// Rows per row group (the unit a reader holds in memory). Default 8192; image artifacts
    /// use a few hundred because each row holds a whole image.
    pub rows_per_group: usize,
    /// Rows per part file in a folder artifact; `None` writes a single file.
    pub rows_per_part: Option<usize>,
    /// A row group also ends once its encoded size passes this many bytes (`None`: rows
    /// alone decide). Image artifacts set it so that large images make smaller groups.
    pub bytes_per_group: Option<usize>,
}

impl Default for LayoutConfig {
    fn default() -> Self {
        LayoutConfig {
            rows_per_group: 8192,
            rows_per_part: None,
            bytes_per_group: None,
        }
    }
}

/// Writes record batches of one schema to a file or a folder of parts.
pub struct TableWriter {
    target: PathBuf,
    schema: SchemaRef,
    schema_id: SchemaId,
    provenance: Provenance,
    layout: LayoutConfig,
    current: Option<ArrowWriter<fs::File>>,
    current_path: PathBuf,
    rows_in_part: usize,
    parts_written: usize,
    rows_written: u64,
}

impl TableWriter {
    /// Starts an artifact at `target`: a single file when `layout.rows_per_part` is `None`,
    /// otherwise a folder of parts.
    pub fn create(
        target: &Path,
        schema: SchemaRef,
        schema_id: SchemaId,
        provenance: &Provenance,
        layout: LayoutConfig,
    ) -> Result<Self> {
        if layout.rows_per_part.is_some() {
            fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
        } else if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        Ok(TableWriter {
            target: target.to_path_buf(),
            schema,
            schema_id,
            provenance: provenance.clone(),
            layout,
            current: None,
            current_path: PathBuf::new(),
            rows_in_part: 0,
            parts_written: 0,
            rows_written: 0,
        })
    }

    /// Appends one batch; starts a new part file when the current one is full.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let room = match self.layout.rows_per_part {
                Some(rows_per_part) => rows_per_part - self.rows_in_part,
                None => usize::MAX,
            };
            let take = room.min(batch.num_rows() - offset);
            let slice = batch.slice(offset, take);
            let writer = self.writer()?;
            writer.write(&slice).map_err(|source| Error::Parquet {
                path: self.current_path.clone(),
                source,
            })?;
            self.rows_in_part += take;
            self.rows_written += take as u64;
            offset += take;
            if Some(self.rows_in_part) == self.layout.rows_per_part {
                self.close_part()?;
            }
        }
        Ok(())
    }

    /// Ends the current row group, so that the next rows start another (the groups readers
    /// fetch one at a time); nothing to do when none is open.
    pub fn end_group(&mut self) -> Result<()> {
        if let Some(writer) = self.current.as_mut() {
            writer.flush().map_err(|source| Error::Parquet {
                path: self.current_path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Closes the last part and returns the number of rows written. An artifact with no rows
    /// still gets one (empty) file, so readers always find its schema.
    pub fn finish(mut self) -> Result<u64> {
        if self.current.is_none() && self.parts_written == 0 {
            self.writer()?;
        }
        self.close_part()?;
        Ok(self.rows_written)
    }

    fn writer(&mut self) -> Result<&mut ArrowWriter<fs::File>> {
        if self.current.is_none() {
            let path = match self.layout.rows_per_part {
                Some(_) => self
                    .target
                    .join(format!("part-{:05}.parquet", self.parts_written)),
                None => self.target.clone(),
            };
            let file = fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
            let metadata = vec![
                KeyValue::new(SCHEMA_KEY.to_owned(), self.schema_id.name.to_owned()),
                KeyValue::new(
                    SCHEMA_VERSION_KEY.to_owned(),
                    self.schema_id.version.to_string(),
                ),
                KeyValue::new(
                    PROVENANCE_KEY.to_owned(),
                    serde_json::to_string(&self.provenance).expect("provenance serialises"),
                ),
            ];
            // The same entries go on the Arrow schema too: pyarrow shows the Arrow schema's
            // metadata (from `ARROW:schema`), duckdb and parquet-tools the file's.
            let schema_metadata: std::collections::HashMap<String, String> = metadata
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
                .chain(self.schema.metadata().clone())
                .collect();
            let schema = Arc::new(self.schema.as_ref().clone().with_metadata(schema_metadata));
            let properties = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .set_max_row_group_row_count(Some(self.layout.rows_per_group.max(1)))
                .set_max_row_group_bytes(self.layout.bytes_per_group.map(|bytes| bytes.max(1)))
                .set_key_value_metadata(Some(metadata))
                .build();
            let writer =
                ArrowWriter::try_new(file, schema, Some(properties)).map_err(|source| {
                    Error::Parquet {
                        path: path.clone(),
                        source,
                    }
                })?;
            self.current = Some(writer);
            self.current_path = path;
            self.rows_in_part = 0;
        }
        Ok(self.current.as_mut().expect("writer was just opened"))
    }

    fn close_part(&mut self) -> Result<()> {
        if let Some(writer) = self.current.take() {
            let file = writer.into_inner().map_err(|source| Error::Parquet {
                path: self.current_path.clone(),
                source,
            })?;
            file.sync_all()
                .map_err(|e| Error::io(&self.current_path, e))?;
            self.parts_written += 1;
        }
        Ok(())
    }
}

/// The Parquet files that make up an artifact: the file itself, or a folder's `*.parquet`
/// files in name order.
pub fn part_files(path: &Path) -> Result<Vec<PathBuf>> {
    let metadata = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if metadata.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut parts = Vec::new();
    for entry in fs::read_dir(path).map_err(|e| Error::io(path, e))? {
        let entry = entry.map_err(|e| Error::io(path, e))?;
        let part = entry.path();
        if part.extension().is_some_and(|ext| ext == "parquet") {
            parts.push(part);
        }
    }
    parts.sort();
    if parts.is_empty() {
        return Err(Error::contract(
            path,
            "folder holds no .parquet files: is this a zfnet artifact?",
        ));
    }
    Ok(parts)
}

/// Schema name, version and provenance read from an artifact's first file.
#[derive(Clone, Debug)]
pub struct ArtifactHeader {
    pub schema: String,
    pub schema_version: u32,
    pub provenance: Option<Provenance>,
    pub arrow_schema: SchemaRef,
    pub num_rows: u64,
}

/// Reads the header of an artifact (all parts are counted for `num_rows`).
pub fn read_header(path: &Path) -> Result<ArtifactHeader> {
    let parts = part_files(path)?;
    let mut header: Option<ArtifactHeader> = None;
    for part in &parts {
        let builder = open_builder(part)?;
        let file_metadata = builder.metadata().file_metadata();
        let num_rows = file_metadata.num_rows() as u64;
        match header.as_mut() {
            Some(header) => header.num_rows += num_rows,
            None => {
                let lookup = |key: &str| {
                    file_metadata
                        .key_value_metadata()
                        .and_then(|kv| kv.iter().find(|entry| entry.key == key))
                        .and_then(|entry| entry.value.clone())
                };
                header = Some(ArtifactHeader {
                    schema: lookup(SCHEMA_KEY).unwrap_or_default(),
                    schema_version: lookup(SCHEMA_VERSION_KEY)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    provenance: lookup(PROVENANCE_KEY)
                        .and_then(|json| serde_json::from_str(&json).ok()),
                    arrow_schema: Arc::clone(builder.schema()),
                    num_rows,
                });
            }
        }
    }
    Ok(header.expect("part_files returns at least one file"))
}

/// The column `name` of a batch read from `path`, as the Arrow array type `T`; a missing or
/// mistyped column is a contract error naming the file and the column.
pub fn typed_column<'a, T: 'static>(
    batch: &'a RecordBatch,
    name: &str,
    path: &Path,
) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|column| column.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::contract(path, format!("column `{name}` missing or mistyped")))
}

/// Checks that the artifact at `path` holds the expected schema, with a message that names
/// both sides of the broken contract.
pub fn expect_schema(path: &Path, expected: SchemaId) -> Result<ArtifactHeader> {
    let header = read_header(path)?;
    if header.schema != expected.name || header.schema_version != expected.version {
        return Err(Error::contract(
            path,
            format!(
                "expected a `{}` v{} artifact, found `{}` v{}: check which output the \
                 pipeline wires into this input",
                expected.name, expected.version, header.schema, header.schema_version
            ),
        ));
    }
    Ok(header)
}

/// Streams the record batches of every part of an artifact, `batch_rows` rows at a time.
pub struct TableReader {
    parts: std::vec::IntoIter<PathBuf>,
    current: Option<ParquetRecordBatchReader>,
    current_path: PathBuf,
    batch_rows: usize,
}

impl TableReader {
    pub fn open(path: &Path, batch_rows: usize) -> Result<Self> {
        Ok(TableReader {
            parts: part_files(path)?.into_iter(),
            current: None,
            current_path: PathBuf::new(),
            batch_rows: batch_rows.max(1),
        })
    }
}

impl Iterator for TableReader {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(reader) = self.current.as_mut() {
                match reader.next() {
                    Some(Ok(batch)) => return Some(Ok(batch)),
                    Some(Err(source)) => {
                        return Some(Err(Error::Arrow(source)));
                    }
                    None => self.current = None,
                }
            }
            let part = self.parts.next()?;
            let opened = open_builder(&part).and_then(|builder| {
                builder
                    .with_batch_size(self.batch_rows)
                    .build()
                    .map_err(|source| Error::Parquet {
                        path: part.clone(),
                        source,
                    })
            });
            match opened {
                Ok(reader) => {
                    self.current = Some(reader);
                    self.current_path = part;
                }
                Err(error) => return Some(Err(error)),
            }
        }
    }
}

/// One row group of one part of an artifact: the unit a reader can fetch on its own. It
/// carries its part's parsed footer, so that reading a group does not parse the footer again
/// (an artifact of many groups read group by group would otherwise parse it once per group).
#[derive(Clone, Debug)]
pub struct RowGroupRef {
    pub part: PathBuf,
    /// Index of the row group within its part.
    pub index: usize,
    pub rows: usize,
    footer: ArrowReaderMetadata,
}

impl PartialEq for RowGroupRef {
    fn eq(&self, other: &Self) -> bool {
        (&self.part, self.index, self.rows) == (&other.part, other.index, other.rows)
    }
}

impl Eq for RowGroupRef {}

impl RowGroupRef {
    /// A reader of this group's part from its parsed footer.
    fn builder(&self) -> Result<ParquetRecordBatchReaderBuilder<fs::File>> {
        let file = fs::File::open(&self.part).map_err(|e| Error::io(&self.part, e))?;
        Ok(ParquetRecordBatchReaderBuilder::new_with_metadata(
            file,
            self.footer.clone(),
        ))
    }
}

/// Every row group of an artifact, parts in name order (the order [`TableReader`] reads).
pub fn row_groups(path: &Path) -> Result<Vec<RowGroupRef>> {
    let mut groups = Vec::new();
    for part in part_files(path)? {
        let file = fs::File::open(&part).map_err(|e| Error::io(&part, e))?;
        let footer =
            ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(|source| {
                Error::Parquet {
                    path: part.clone(),
                    source,
                }
            })?;
        for (index, group) in footer.metadata().row_groups().iter().enumerate() {
            groups.push(RowGroupRef {
                part: part.clone(),
                index,
                rows: group.num_rows() as usize,
                footer: footer.clone(),
            });
        }
    }
    Ok(groups)
}

/// Reads one row group, only the named columns when `columns` is given (so that labels can
/// be read without the pixels beside them).
pub fn read_row_group(group: &RowGroupRef, columns: Option<&[&str]>) -> Result<Vec<RecordBatch>> {
    let mut builder = group
        .builder()?
        .with_row_groups(vec![group.index])
        .with_batch_size(group.rows.max(1));
    if let Some(columns) = columns {
        let arrow_schema = Arc::clone(builder.schema());
        let mut roots = Vec::with_capacity(columns.len());
        for name in columns {
            let (index, _) = arrow_schema
                .column_with_name(name)
                .ok_or_else(|| Error::contract(&group.part, format!("column `{name}` missing")))?;
            roots.push(index);
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        builder = builder.with_projection(mask);
    }
    let reader = builder.build().map_err(|source| Error::Parquet {
        path: group.part.clone(),
        source,
    })?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(Error::Arrow)
}

/// Reads a whole (small) artifact into memory.
pub fn read_all(path: &Path) -> Result<Vec<RecordBatch>> {
    TableReader::open(path, 8192)?.collect()
}

/// Writes a small table in one call, as a single file.
pub fn write_table(
    path: &Path,
    schema: SchemaRef,
    schema_id: SchemaId,
    provenance: &Provenance,
    batches: &[RecordBatch],
) -> Result<u64> {
    let mut writer =
        TableWriter::create(path, schema, schema_id, provenance, LayoutConfig::default())?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()
}

fn open_builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<fs::File>> {
    let file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| Error::Parquet {
        path: path.to_path_buf(),
        source,
    })
}
