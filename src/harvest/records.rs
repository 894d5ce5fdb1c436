//! The documents of a dataset, read as a stream: text files (one document per line, as the Hugging Face `text`
//! loader), JSON Lines (a text field of each object) and Parquet (a text column, one row group batch at a time).
//!
//! A record that cannot be read as a document (a line that is not JSON or is not valid UTF-8, an object without the
//! text field, a null) is returned as [`Record::Malformed`]: the harvest skips it and counts it. A file that cannot be
//! read at all (missing, a Parquet file without the column, a corrupt page) is an error.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use super::HarvestError;

/// The longest line read as one record; a longer one is skipped as malformed rather than held in memory.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// Rows a Parquet reader decodes at a time.
const PARQUET_BATCH_ROWS: usize = 1024;

/// One record of the dataset.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A document's text.
    Text(String),
    /// A record that is not a document; why, with the file and record number.
    Malformed(String),
}

/// How a data file is read, chosen by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.jsonl`, `.ndjson`, `.json`: one JSON object per line.
    JsonLines,
    /// `.parquet`.
    Parquet,
    /// Anything else: one document per line.
    Text,
}

impl Format {
    /// The format of `path`, by extension.
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl" | "ndjson" | "json") => Format::JsonLines,
            Some("parquet") => Format::Parquet,
            _ => Format::Text,
        }
    }
}

/// The records of several files, one after the other, with how far into them the reading is.
pub struct Records {
    files: Vec<PathBuf>,
    text_field: String,
    next_file: usize,
    current: Option<Box<dyn Source>>,
    /// Bytes of the files finished.
    bytes_before: u64,
}

impl Records {
    /// The records of `files` in order; JSON Lines and Parquet documents are read from `text_field`.
    pub fn new(files: Vec<PathBuf>, text_field: &str) -> Self {
        Self {
            files,
            text_field: text_field.to_string(),
            next_file: 0,
            current: None,
            bytes_before: 0,
        }
    }

    /// Bytes of input read so far (for Parquet, the file's size in proportion to the rows read).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_before + self.current.as_ref().map_or(0, |s| s.bytes_read())
    }

    fn open(&self, path: &Path) -> Result<Box<dyn Source>, HarvestError> {
        let file = File::open(path).map_err(|e| data_error(path, e))?;
        Ok(match Format::of(path) {
            Format::Parquet => Box::new(ParquetSource::new(path, file, &self.text_field)?),
            Format::JsonLines => {
                Box::new(LineSource::new(path, file, Some(self.text_field.clone())))
            }
            Format::Text => Box::new(LineSource::new(path, file, None)),
        })
    }
}

impl Iterator for Records {
    type Item = Result<Record, HarvestError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(source) = &mut self.current {
                match source.next_record() {
                    Ok(Some(record)) => return Some(Ok(record)),
                    Ok(None) => {
                        self.bytes_before += source.size();
                        self.current = None;
                    }
                    Err(e) => return Some(Err(e)),
                }
            }
            let path = self.files.get(self.next_file)?.clone();
            self.next_file += 1;
            match self.open(&path) {
                Ok(source) => self.current = Some(source),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

fn data_error(path: &Path, e: impl std::fmt::Display) -> HarvestError {
    HarvestError::Data {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// One file's records.
trait Source {
    /// The next record; `None` at the end of the file.
    fn next_record(&mut self) -> Result<Option<Record>, HarvestError>;
    /// Bytes of the file read so far.
    fn bytes_read(&self) -> u64;
    /// The file's size.
    fn size(&self) -> u64;
}

/// A text or JSON Lines file, read line by line.
struct LineSource {
    path: PathBuf,
    reader: BufReader<File>,
    /// The JSON field that holds the text; `None` for plain text.
    field: Option<String>,
    line: u64,
    read: u64,
    size: u64,
    buf: Vec<u8>,
}

impl LineSource {
    fn new(path: &Path, file: File, field: Option<String>) -> Self {
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Self {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 20, file),
            field,
            line: 0,
            read: 0,
            size,
            buf: Vec::new(),
        }
    }

    fn malformed(&self, why: impl std::fmt::Display) -> Record {
        Record::Malformed(format!("{} line {}: {why}", self.path.display(), self.line))
    }

    /// The record of the line now in `buf` (its end of line removed).
    fn record(&self) -> Record {
        let Ok(text) = std::str::from_utf8(&self.buf) else {
            return self.malformed("not valid UTF-8");
        };
        let Some(field) = &self.field else {
            return Record::Text(text.to_string());
        };
        match serde_json::from_str::<serde_json::Value>(text) {
            Err(e) => self.malformed(format_args!("not JSON ({e})")),
            Ok(serde_json::Value::Object(object)) => match object.get(field) {
                Some(serde_json::Value::String(s)) => Record::Text(s.clone()),
                Some(other) => self.malformed(format_args!(
                    "field {field:?} is not a string but {}",
                    json_kind(other)
                )),
                None => self.malformed(format_args!("no field {field:?}")),
            },
            Ok(other) => self.malformed(format_args!("not an object but {}", json_kind(&other))),
        }
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

impl Source for LineSource {
    fn next_record(&mut self) -> Result<Option<Record>, HarvestError> {
        loop {
            self.buf.clear();
            let n = (&mut self.reader)
                .take(MAX_RECORD_BYTES as u64 + 1)
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| data_error(&self.path, e))?;
            if n == 0 {
                return Ok(None);
            }
            self.read += n as u64;
            self.line += 1;
            if self.buf.last() != Some(&b'\n') && self.buf.len() > MAX_RECORD_BYTES {
                let rest = self
                    .reader
                    .skip_until(b'\n')
                    .map_err(|e| data_error(&self.path, e))?;
                self.read += rest as u64;
                return Ok(Some(self.malformed(format_args!(
                    "longer than {} MiB",
                    MAX_RECORD_BYTES >> 20
                ))));
            }
            if self.buf.last() == Some(&b'\n') {
                self.buf.pop();
                if self.buf.last() == Some(&b'\r') {
                    self.buf.pop();
                }
            }
            // A blank line of a JSON Lines file is no record; one of a text file is an empty document.
            if self.field.is_some() && self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(self.record()));
        }
    }

    fn bytes_read(&self) -> u64 {
        self.read
    }

    fn size(&self) -> u64 {
        self.size
    }
}

/// A Parquet file's text column, decoded a batch of rows at a time.
struct ParquetSource {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    batch: Option<arrow_array::ArrayRef>,
    row_in_batch: usize,
    rows_read: u64,
    rows: u64,
    size: u64,
}

impl ParquetSource {
    fn new(path: &Path, file: File, field: &str) -> Result<Self, HarvestError> {
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| data_error(path, e))?;
        let schema = builder.schema().clone();
        let Some((index, column)) = schema.column_with_name(field) else {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(data_error(
                path,
                format_args!("no column {field:?} (its columns: {})", names.join(", ")),
            ));
        };
        if !matches!(
            column.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            return Err(data_error(
                path,
                format_args!("column {field:?} holds {}, not text", column.data_type()),
            ));
        }
        let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
        let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(PARQUET_BATCH_ROWS)
            .build()
            .map_err(|e| data_error(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            batch: None,
            row_in_batch: 0,
            rows_read: 0,
            rows,
            size,
        })
    }
}

impl Source for ParquetSource {
    fn next_record(&mut self) -> Result<Option<Record>, HarvestError> {
        loop {
            if let Some(column) = &self.batch
                && self.row_in_batch < column.len()
            {
                let row = self.row_in_batch;
                self.row_in_batch += 1;
                self.rows_read += 1;
                if column.is_null(row) {
                    return Ok(Some(Record::Malformed(format!(
                        "{} row {}: the text is null",
                        self.path.display(),
                        self.rows_read
                    ))));
                }
                let text = match column.data_type() {
                    DataType::Utf8 => column.as_string::<i32>().value(row),
                    DataType::LargeUtf8 => column.as_string::<i64>().value(row),
                    _ => column.as_string_view().value(row),
                };
                return Ok(Some(Record::Text(text.to_string())));
            }
            match self.reader.next() {
                None => return Ok(None),
                Some(Err(e)) => return Err(data_error(&self.path, e)),
                Some(Ok(batch)) => {
                    self.batch = Some(batch.column(0).clone());
                    self.row_in_batch = 0;
                }
            }
        }
    }

    fn bytes_read(&self) -> u64 {
        match self.rows {
            0 => 0,
            rows => (self.size as f64 * self.rows_read as f64 / rows as f64) as u64,
        }
    }

    fn size(&self) -> u64 {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(name: &str, bytes: &[u8]) -> Vec<Record> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        Records::new(vec![path], "text")
            .map(|r| match r.unwrap() {
                Record::Malformed(why) => {
                    Record::Malformed(why.rsplit(": ").next().unwrap().into())
                }
                text => text,
            })
            .collect()
    }

    #[test]
    fn text_files_give_one_document_per_line() {
        assert_eq!(
            records("a.txt", b"one\r\n\ntwo\xff\nthree"),
            [
                Record::Text("one".into()),
                Record::Text("".into()),
                Record::Malformed("not valid UTF-8".into()),
                Record::Text("three".into()),
            ]
        );
    }

    #[test]
    fn json_lines_read_the_text_field_and_report_what_is_not_a_document() {
        let got = records(
            "a.jsonl",
            b"{\"text\": \"hi\"}\n\n{\"text\": 3}\n[1]\n{\"body\": \"x\"}\n{bad\n",
        );
        assert_eq!(got[0], Record::Text("hi".into()));
        let why: Vec<String> = got[1..]
            .iter()
            .map(|r| match r {
                Record::Malformed(why) => why.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(why[0], "field \"text\" is not a string but a number");
        assert_eq!(why[1], "not an object but an array");
        assert_eq!(why[2], "no field \"text\"");
        assert!(why[3].starts_with("not JSON"), "{}", why[3]);
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let mut records = Records::new(vec!["/no/such/file.txt".into()], "text");
        assert!(matches!(
            records.next(),
            Some(Err(HarvestError::Data { .. }))
        ));
    }
}
