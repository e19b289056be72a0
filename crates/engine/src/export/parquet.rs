//! Parquet output of a table: typed, nullable columns; embeddings as lists of
//! float32; rows in row groups of [`GROUP_ROWS`], Snappy-compressed.
//!
//! Written with the `parquet` crate's column writers, without Arrow: the
//! table is already columnar-friendly and Arrow would add minutes to a
//! 2-core build for no gain here.

use std::io::Write;
use std::sync::Arc;

use parquet::basic::{Compression, LogicalType, Repetition, Type as Physical};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, FloatType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::{Type, TypePtr};

use super::table::{Cell, ColType, Column};
use crate::error::{Error, Result};

/// Rows per row group: large enough for good compression, small enough that
/// a group of long answers stays a few MB in memory.
const GROUP_ROWS: usize = 8_192;

/// A Parquet file being written row by row.
pub(crate) struct ParquetSink<W: Write + Send> {
    writer: SerializedFileWriter<W>,
    columns: Vec<Buffer>,
    rows: usize,
}

/// One column's values and levels of the row group being gathered.
struct Buffer {
    ty: ColType,
    /// Definition levels: how much of a possibly-null, possibly-nested value is there.
    defs: Vec<i16>,
    /// Repetition levels of list columns: where a new list (or inner list) starts.
    reps: Vec<i16>,
    bytes: Vec<ByteArray>,
    ints: Vec<i64>,
    floats: Vec<f64>,
    bools: Vec<bool>,
    vector: Vec<f32>,
}

fn parquet_error(e: parquet::errors::ParquetError) -> Error {
    Error::Write {
        path: "output".into(),
        source: std::io::Error::other(format!("parquet: {e}")),
    }
}

impl<W: Write + Send> ParquetSink<W> {
    /// Starts a file with `columns` as its schema.
    pub(crate) fn new(out: W, columns: &[Column]) -> Result<ParquetSink<W>> {
        let fields = columns
            .iter()
            .map(field)
            .collect::<parquet::errors::Result<Vec<_>>>()
            .map_err(parquet_error)?;
        let schema = Type::group_type_builder("sluice_results")
            .with_fields(fields)
            .build()
            .map_err(parquet_error)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!("sluice {}", env!("CARGO_PKG_VERSION")))
            .build();
        let writer = SerializedFileWriter::new(out, Arc::new(schema), Arc::new(props))
            .map_err(parquet_error)?;
        Ok(ParquetSink {
            writer,
            columns: columns.iter().map(|c| Buffer::new(c.ty)).collect(),
            rows: 0,
        })
    }

    /// Adds one row (cells in column order).
    pub(crate) fn push(&mut self, row: &[Cell]) -> Result<()> {
        for (buffer, cell) in self.columns.iter_mut().zip(row) {
            buffer.push(cell);
        }
        self.rows += 1;
        if self.rows >= GROUP_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the last row group and the footer.
    pub(crate) fn finish(mut self) -> Result<()> {
        self.flush()?;
        self.writer.close().map_err(parquet_error)?;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let mut group = self.writer.next_row_group().map_err(parquet_error)?;
        for buffer in &mut self.columns {
            let Some(mut column) = group.next_column().map_err(parquet_error)? else {
                break;
            };
            buffer.write(&mut column).map_err(parquet_error)?;
            column.close().map_err(parquet_error)?;
            buffer.clear();
        }
        group.close().map_err(parquet_error)?;
        self.rows = 0;
        Ok(())
    }
}

/// The schema node of one column.
fn field(column: &Column) -> parquet::errors::Result<TypePtr> {
    let name = column.name.as_str();
    let primitive = |physical, logical| {
        Type::primitive_type_builder(name, physical)
            .with_repetition(Repetition::OPTIONAL)
            .with_logical_type(logical)
            .build()
    };
    let node = match column.ty {
        ColType::Str | ColType::Json => primitive(Physical::BYTE_ARRAY, Some(LogicalType::String))?,
        ColType::Int => primitive(Physical::INT64, None)?,
        ColType::Float => primitive(Physical::DOUBLE, None)?,
        ColType::Bool => primitive(Physical::BOOLEAN, None)?,
        ColType::Vector => list(name, Repetition::OPTIONAL, float_element()?)?,
        ColType::Vectors => list(
            name,
            Repetition::OPTIONAL,
            list("element", Repetition::REQUIRED, float_element()?)?,
        )?,
    };
    Ok(Arc::new(node))
}

fn float_element() -> parquet::errors::Result<Type> {
    Type::primitive_type_builder("element", Physical::FLOAT)
        .with_repetition(Repetition::REQUIRED)
        .build()
}

/// The standard three-level list: `<rep> group NAME (LIST) { repeated group list { element } }`.
fn list(name: &str, repetition: Repetition, element: Type) -> parquet::errors::Result<Type> {
    let repeated = Type::group_type_builder("list")
        .with_repetition(Repetition::REPEATED)
        .with_fields(vec![Arc::new(element)])
        .build()?;
    Type::group_type_builder(name)
        .with_repetition(repetition)
        .with_logical_type(Some(LogicalType::List))
        .with_fields(vec![Arc::new(repeated)])
        .build()
}

impl Buffer {
    fn new(ty: ColType) -> Buffer {
        Buffer {
            ty,
            defs: Vec::new(),
            reps: Vec::new(),
            bytes: Vec::new(),
            ints: Vec::new(),
            floats: Vec::new(),
            bools: Vec::new(),
            vector: Vec::new(),
        }
    }

    fn clear(&mut self) {
        self.defs.clear();
        self.reps.clear();
        self.bytes.clear();
        self.ints.clear();
        self.floats.clear();
        self.bools.clear();
        self.vector.clear();
    }

    fn push(&mut self, cell: &Cell) {
        match (self.ty, cell) {
            (_, Cell::Null) => {
                self.defs.push(0);
                if matches!(self.ty, ColType::Vector | ColType::Vectors) {
                    self.reps.push(0);
                }
            }
            (ColType::Str | ColType::Json, Cell::Str(s) | Cell::Json(s)) => {
                self.defs.push(1);
                self.bytes.push(ByteArray::from(s.as_bytes().to_vec()));
            }
            (ColType::Int, Cell::Int(i)) => {
                self.defs.push(1);
                self.ints.push(*i);
            }
            (ColType::Float, Cell::Float(f)) => {
                self.defs.push(1);
                self.floats.push(*f);
            }
            (ColType::Bool, Cell::Bool(b)) => {
                self.defs.push(1);
                self.bools.push(*b);
            }
            (ColType::Vector, Cell::Vector(v)) => self.push_list(v, 0),
            (ColType::Vectors, Cell::Vectors(vs)) => {
                if vs.is_empty() {
                    // An empty outer list: defined up to the optional group.
                    self.defs.push(1);
                    self.reps.push(0);
                }
                for (i, v) in vs.iter().enumerate() {
                    self.push_list(v, if i == 0 { 0 } else { 1 });
                }
            }
            // A cell of another type than its column cannot be made by the
            // flatteners (they build cells from the column's type); null is
            // the safe reading.
            _ => self.push(&Cell::Null),
        }
    }

    /// One list of floats: in a Vector column at repetition `first` = 0
    /// (levels: 1 empty list, 2 a value); in a Vectors column as one inner
    /// list (levels: 2 empty inner list, 3 a value; repetition 1 starts an
    /// inner list after the first, 2 continues one).
    fn push_list(&mut self, values: &[f32], first: i16) {
        let nested = self.ty == ColType::Vectors;
        let (value_def, empty_def, continue_rep) = if nested { (3, 2, 2) } else { (2, 1, 1) };
        if values.is_empty() {
            self.defs.push(empty_def);
            self.reps.push(first);
            return;
        }
        for (i, value) in values.iter().enumerate() {
            self.defs.push(value_def);
            self.reps.push(if i == 0 { first } else { continue_rep });
            self.vector.push(*value);
        }
    }

    fn write(
        &self,
        column: &mut parquet::file::writer::SerializedColumnWriter<'_>,
    ) -> parquet::errors::Result<()> {
        let defs = Some(self.defs.as_slice());
        match self.ty {
            ColType::Str | ColType::Json => {
                column
                    .typed::<ByteArrayType>()
                    .write_batch(&self.bytes, defs, None)?
            }
            ColType::Int => column
                .typed::<Int64Type>()
                .write_batch(&self.ints, defs, None)?,
            ColType::Float => column
                .typed::<DoubleType>()
                .write_batch(&self.floats, defs, None)?,
            ColType::Bool => column
                .typed::<BoolType>()
                .write_batch(&self.bools, defs, None)?,
            ColType::Vector | ColType::Vectors => {
                column
                    .typed::<FloatType>()
                    .write_batch(&self.vector, defs, Some(&self.reps))?
            }
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    #[test]
    fn rows_read_back_with_their_types_nulls_and_lists() {
        let columns = vec![
            Column::new("id", ColType::Str),
            Column::new("n", ColType::Int),
            Column::new("x", ColType::Float),
            Column::new("ok", ColType::Bool),
            Column::new("vec", ColType::Vector),
            Column::new("vecs", ColType::Vectors),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut sink = ParquetSink::new(std::fs::File::create(&path).unwrap(), &columns).unwrap();
        sink.push(&[
            Cell::Str("a".into()),
            Cell::Int(7),
            Cell::Float(0.5),
            Cell::Bool(true),
            Cell::Vector(vec![1.0, 2.5]),
            Cell::Vectors(vec![vec![1.0], vec![], vec![2.0, 3.0]]),
        ])
        .unwrap();
        sink.push(&[
            Cell::Str("b".into()),
            Cell::Null,
            Cell::Null,
            Cell::Null,
            Cell::Null,
            Cell::Vectors(vec![]),
        ])
        .unwrap();
        sink.finish().unwrap();

        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 2);
        let rows: Vec<_> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let first: Vec<(String, Field)> = rows[0]
            .get_column_iter()
            .map(|(n, f)| (n.clone(), f.clone()))
            .collect();
        assert_eq!(first[0].1, Field::Str("a".into()));
        assert_eq!(first[1].1, Field::Long(7));
        assert_eq!(first[3].1, Field::Bool(true));
        assert_eq!(format!("{}", first[4].1), "[1.0, 2.5]");
        assert_eq!(format!("{}", first[5].1), "[[1.0], [], [2.0, 3.0]]");
        let second: Vec<Field> = rows[1].get_column_iter().map(|(_, f)| f.clone()).collect();
        assert_eq!(second[1], Field::Null);
        assert_eq!(second[4], Field::Null);
        assert_eq!(format!("{}", second[5]), "[]");
    }
}
