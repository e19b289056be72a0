//! A job's units from its own input (items × matrix, the first N with
//! `--limit`), as a source of the dispatch loop; a bad input entry's units
//! are recorded failed.

use crate::dispatch::{Chunks, Entry, Keyed, Next};
use crate::error::{Error, Result};
use crate::inputs::{BadItem, Prepared, RawItem};
use crate::writer::Message;

use super::bad_item_record;
use super::runner::Unit;
use super::tasks::Started;
use super::units::{Combos, UnitIds};

/// Units looked up in the store per chunk on resume.
const CHUNK: usize = 512;

/// The input's units, in order.
pub(super) struct InputUnits<'a> {
    items: Box<dyn Iterator<Item = std::result::Result<RawItem, BadItem>> + Send>,
    ids: &'a UnitIds,
    combos: &'a Combos,
    /// `--limit N`: the first N units only.
    first: Option<u64>,
    handed_out: u64,
}

impl<'a> InputUnits<'a> {
    pub(super) fn new(
        prepared: &Prepared,
        ids: &'a UnitIds,
        combos: &'a Combos,
        first: Option<u64>,
    ) -> Result<InputUnits<'a>> {
        Ok(InputUnits {
            items: prepared.items().map_err(|e| Error::Input(e.to_string()))?,
            ids,
            combos,
            first,
            handed_out: 0,
        })
    }
}

impl Keyed for Unit {
    fn key(&self) -> &str {
        &self.id
    }

    fn idx(&self) -> u64 {
        self.idx
    }

    fn hash(&self) -> u64 {
        self.hash
    }
}

impl Chunks for InputUnits<'_> {
    type Read = Unit;
    type Work = Started;

    fn read(&mut self, out: &mut std::collections::VecDeque<Entry<Unit>>) -> Result<()> {
        while out.len() < CHUNK {
            let room = match self.first {
                Some(n) if self.handed_out >= n => break,
                Some(n) => usize::try_from(n - self.handed_out).unwrap_or(usize::MAX),
                None => usize::MAX,
            };
            let Some(entry) = self.items.next() else {
                break;
            };
            match entry {
                Ok(item) => {
                    let units = self.ids.units(&item, self.combos);
                    for unit in units.into_iter().take(room) {
                        self.handed_out += 1;
                        out.push_back(Entry::Read(unit));
                    }
                }
                Err(bad) => {
                    let unit_ids = self.ids.bad_unit_ids(&bad, self.combos);
                    for (unit_id, idx) in unit_ids.into_iter().take(room) {
                        self.handed_out += 1;
                        let record = bad_item_record(unit_id, idx, &bad);
                        out.push_back(Entry::Write(Box::new(Message::Record(record))));
                    }
                }
            }
        }
        Ok(())
    }

    fn ready(&mut self, unit: Unit) -> Next<Started> {
        Next::Work(Started { unit, token: None })
    }
}
