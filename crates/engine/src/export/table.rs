//! The flat view of a run's results shared by the CSV and Parquet exports:
//! typed columns learnt in a first pass over the records, then one row of
//! cells per record.
//!
//! The columns of a run depend on what it holds (whether answers are
//! embeddings, which fields its items have, of which types), so a table is
//! written in two passes over the store: [`Flatten::observe`] every record,
//! then [`Flatten::row`] every record.

use serde_json::{Map, Value as Json};
use sluice_store::ItemRecord;

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColType {
    /// Text.
    Str,
    /// A whole number.
    Int,
    /// A number with a fraction.
    Float,
    /// true / false.
    Bool,
    /// Any JSON value, kept as its text (objects, lists, mixed types).
    Json,
    /// One embedding: a list of float32.
    Vector,
    /// Several embeddings (a list input): a list of lists of float32.
    Vectors,
}

/// One column of the table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Column {
    pub(crate) name: String,
    pub(crate) ty: ColType,
}

impl Column {
    pub(crate) fn new(name: impl Into<String>, ty: ColType) -> Column {
        Column {
            name: name.into(),
            ty,
        }
    }
}

/// One value of a row, of its column's type (or null).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// JSON text.
    Json(String),
    Vector(Vec<f32>),
    Vectors(Vec<Vec<f32>>),
}

impl Cell {
    /// A JSON value as a cell of a column of type `ty`; a value that does not
    /// fit the type becomes null (types are learnt from every value first, so
    /// this happens only for nulls).
    pub(crate) fn of(value: Option<&Json>, ty: ColType) -> Cell {
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return Cell::Null;
        };
        match ty {
            ColType::Str => match value {
                Json::String(s) => Cell::Str(s.clone()),
                other => Cell::Str(other.to_string()),
            },
            ColType::Int => value.as_i64().map_or(Cell::Null, Cell::Int),
            ColType::Float => value.as_f64().map_or(Cell::Null, Cell::Float),
            ColType::Bool => value.as_bool().map_or(Cell::Null, Cell::Bool),
            ColType::Json => Cell::Json(value.to_string()),
            ColType::Vector => vector(value).map_or(Cell::Null, Cell::Vector),
            ColType::Vectors => match value {
                Json::Array(items) if items.first().is_some_and(Json::is_array) => items
                    .iter()
                    .map(vector)
                    .collect::<Option<Vec<_>>>()
                    .map_or(Cell::Null, Cell::Vectors),
                single => vector(single).map_or(Cell::Null, |v| Cell::Vectors(vec![v])),
            },
        }
    }

    /// The cell as a JSON value: JSON cells stay text, as in CSV and
    /// Parquet; vectors are lists of numbers.
    pub(crate) fn to_json(&self) -> Json {
        match self {
            Cell::Null => Json::Null,
            Cell::Str(s) | Cell::Json(s) => Json::String(s.clone()),
            Cell::Int(i) => Json::from(*i),
            Cell::Float(f) => Json::from(*f),
            Cell::Bool(b) => Json::Bool(*b),
            Cell::Vector(v) => floats(v),
            Cell::Vectors(vs) => Json::Array(vs.iter().map(|v| floats(v)).collect()),
        }
    }

    /// The cell as CSV text: empty for null, JSON text for lists and JSON.
    pub(crate) fn to_csv(&self) -> String {
        match self {
            Cell::Null => String::new(),
            Cell::Str(s) | Cell::Json(s) => s.clone(),
            Cell::Int(i) => i.to_string(),
            Cell::Float(f) => f.to_string(),
            Cell::Bool(b) => b.to_string(),
            Cell::Vector(v) => json_list(v),
            Cell::Vectors(vs) => {
                let inner: Vec<String> = vs.iter().map(|v| json_list(v)).collect();
                format!("[{}]", inner.join(","))
            }
        }
    }
}

/// float32 values as JSON numbers in their shortest float32 spelling
/// (`0.1`, not the `0.10000000149011612` a widening to f64 would print).
fn floats(v: &[f32]) -> Json {
    Json::Array(
        v.iter()
            .map(|f| f.to_string().parse::<f64>().map_or(Json::Null, Json::from))
            .collect(),
    )
}

fn json_list(v: &[f32]) -> String {
    let parts: Vec<String> = v.iter().map(|f| f.to_string()).collect();
    format!("[{}]", parts.join(","))
}

/// A flat list of numbers as float32, or `None`.
fn vector(value: &Json) -> Option<Vec<f32>> {
    value
        .as_array()?
        .iter()
        .map(|n| n.as_f64().map(|f| f as f32))
        .collect()
}

/// What an embedding value is: one vector, several, or neither.
pub(crate) fn embedding_type(value: &Json) -> Option<ColType> {
    let list = value.as_array()?;
    if list.iter().all(Json::is_number) {
        return Some(ColType::Vector);
    }
    list.iter()
        .all(|v| v.as_array().is_some_and(|l| l.iter().all(Json::is_number)))
        .then_some(ColType::Vectors)
}

/// The wider of two observed types of one column: a list of several
/// embeddings holds a single one too; whole and fractional numbers are
/// floats; anything else mixed is JSON.
pub(crate) fn widen(known: Option<ColType>, seen: ColType) -> ColType {
    use ColType::*;
    match (known, seen) {
        (None, t) => t,
        (Some(a), b) if a == b => a,
        (Some(Int), Float) | (Some(Float), Int) => Float,
        (Some(Vector), Vectors) | (Some(Vectors), Vector) => Vectors,
        _ => Json,
    }
}

/// The type a JSON value of an item field asks for (`None` for null).
fn value_type(value: &Json) -> Option<ColType> {
    match value {
        Json::Null => None,
        Json::Bool(_) => Some(ColType::Bool),
        Json::Number(n) if n.is_i64() => Some(ColType::Int),
        Json::Number(_) => Some(ColType::Float),
        Json::String(_) => Some(ColType::Str),
        Json::Array(_) | Json::Object(_) => Some(ColType::Json),
    }
}

/// The item's own fields as `item.KEY` columns, in the order they are first
/// seen (an item's keys in sorted order, as the store's JSON keeps them),
/// each typed by every value it takes. An item that is not an object
/// (a quick-mode `metadata` string, say) fills one `item` column.
#[derive(Debug, Default)]
pub(crate) struct ItemFields {
    keys: Vec<(String, Option<ColType>)>,
    index: std::collections::HashMap<String, usize>,
}

/// The key standing for a whole item that is not an object.
const WHOLE: &str = "";

impl ItemFields {
    /// Learns the fields of one item.
    pub(crate) fn observe(&mut self, item: Option<&Json>) {
        match item {
            None | Some(Json::Null) => {}
            Some(Json::Object(fields)) => {
                for (key, value) in fields {
                    self.see(key, value);
                }
            }
            Some(other) => self.see(WHOLE, other),
        }
    }

    fn see(&mut self, key: &str, value: &Json) {
        let slot = match self.index.get(key) {
            Some(&i) => i,
            None => {
                self.index.insert(key.to_string(), self.keys.len());
                self.keys.push((key.to_string(), None));
                self.keys.len() - 1
            }
        };
        if let Some(seen) = value_type(value) {
            let known = &mut self.keys[slot].1;
            *known = Some(widen(*known, seen));
        }
    }

    /// The `item.KEY` columns (a field that was null everywhere is text).
    pub(crate) fn columns(&self) -> impl Iterator<Item = Column> + '_ {
        self.keys.iter().map(|(key, ty)| {
            let name = if key == WHOLE {
                "item".to_string()
            } else {
                format!("item.{key}")
            };
            Column::new(name, ty.unwrap_or(ColType::Str))
        })
    }

    /// The cells of one item, in column order.
    pub(crate) fn cells(&self, item: Option<&Json>, row: &mut Vec<Cell>) {
        let empty = Map::new();
        let (fields, whole) = match item {
            Some(Json::Object(fields)) => (fields, None),
            Some(Json::Null) | None => (&empty, None),
            Some(other) => (&empty, Some(other)),
        };
        for (key, ty) in &self.keys {
            let ty = ty.unwrap_or(ColType::Str);
            let value = if key == WHOLE { whole } else { fields.get(key) };
            row.push(Cell::of(value, ty));
        }
    }
}

/// A run's results as a table: learnt from its records, then row by row.
pub(crate) trait Flatten {
    /// First pass: learns the columns from one record.
    fn observe(&mut self, item: &ItemRecord);
    /// The columns, once every record was observed.
    fn columns(&self) -> Vec<Column>;
    /// Second pass: the cells of one record, in column order.
    fn row(&self, item: &ItemRecord, row: &mut Vec<Cell>);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn item_fields_are_typed_by_every_value_they_take() {
        let mut fields = ItemFields::default();
        fields.observe(Some(
            &json!({"n": 1, "x": 1, "s": "a", "b": true, "nested": {"k": 1}}),
        ));
        fields.observe(Some(&json!({"n": 2, "x": 2.5, "s": null, "late": "z"})));
        fields.observe(Some(&json!({"n": "three"})));
        let columns: Vec<(String, ColType)> = fields.columns().map(|c| (c.name, c.ty)).collect();
        assert_eq!(
            columns,
            vec![
                ("item.b".into(), ColType::Bool),
                ("item.n".into(), ColType::Json),
                ("item.nested".into(), ColType::Json),
                ("item.s".into(), ColType::Str),
                ("item.x".into(), ColType::Float),
                ("item.late".into(), ColType::Str),
            ]
        );
        let mut row = Vec::new();
        fields.cells(Some(&json!({"x": 2, "nested": {"k": 1}})), &mut row);
        assert_eq!(row[1], Cell::Null);
        assert_eq!(row[4], Cell::Float(2.0));
        assert_eq!(row[2], Cell::Json(r#"{"k":1}"#.into()));
    }

    #[test]
    fn an_item_that_is_no_object_fills_one_column() {
        let mut fields = ItemFields::default();
        fields.observe(Some(&json!("tag")));
        let columns: Vec<String> = fields.columns().map(|c| c.name).collect();
        assert_eq!(columns, vec!["item"]);
        let mut row = Vec::new();
        fields.cells(Some(&json!("tag")), &mut row);
        assert_eq!(row, vec![Cell::Str("tag".into())]);
    }

    #[test]
    fn embeddings_are_float32_lists_and_csv_keeps_them_in_one_cell() {
        assert_eq!(embedding_type(&json!([0.5, 1])), Some(ColType::Vector));
        assert_eq!(
            embedding_type(&json!([[0.5], [1, 2]])),
            Some(ColType::Vectors)
        );
        assert_eq!(embedding_type(&json!(["a"])), None);
        let cell = Cell::of(Some(&json!([0.5, -1.25])), ColType::Vector);
        assert_eq!(cell, Cell::Vector(vec![0.5, -1.25]));
        assert_eq!(cell.to_csv(), "[0.5,-1.25]");
        let wrapped = Cell::of(Some(&json!([0.5])), ColType::Vectors);
        assert_eq!(wrapped.to_csv(), "[[0.5]]");
        assert_eq!(
            widen(Some(ColType::Vector), ColType::Vectors),
            ColType::Vectors
        );
        assert_eq!(widen(Some(ColType::Int), ColType::Str), ColType::Json);
        assert_eq!(Cell::Vector(vec![0.1]).to_json().to_string(), "[0.1]");
    }
}
