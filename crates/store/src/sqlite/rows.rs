//! Mapping between SQLite rows and the store's types: column lists, decoding, integer casts.

use rusqlite::types::FromSql;
use rusqlite::Row;

use crate::{During, ItemRecord, Result, RunMeta};

pub(super) use crate::num::{item_columns, run_columns};

pub(super) use crate::num::{hash_from_i64, hash_to_i64, now_ms, status_from_str, to_i64, to_u64};

/// Reads column `i`, naming the failure as a read of the store.
pub(super) fn col<T: FromSql>(row: &Row<'_>, i: usize) -> Result<T> {
    row.get(i).during("read a stored row")
}

impl crate::num::Columns for Row<'_> {
    fn int(&self, i: usize) -> Result<i64> {
        col(self, i)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        col(self, i)
    }
    fn text(&self, i: usize) -> Result<String> {
        col(self, i)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        col(self, i)
    }
}

/// Decodes a row selected with [`run_columns!`].
pub(super) fn run_from_row(row: &Row<'_>) -> Result<RunMeta> {
    crate::num::run_from(row)
}

/// Decodes a row selected with [`item_columns!`].
pub(super) fn item_from_row(row: &Row<'_>) -> Result<ItemRecord> {
    crate::num::item_from(row)
}
