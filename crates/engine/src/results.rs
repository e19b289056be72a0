//! A run's results, whatever its kind: quick-mode lines (`export.rs`) or
//! job units (`job/export.rs`), chosen by the run's settings.

use std::io::Write;

use sluice_store::{ItemRecord, RunMeta, Store};

use crate::error::Result;
use crate::export::{quick_table, write_lines, write_output_line, write_table};
use crate::export::{ExportFormat, ExportOptions};
use crate::settings::RunMode;

/// Writes the results of `run_id` to `out`, in input order, without item
/// fields: one line per item of its input (`pending` where it has no outcome
/// for its current request), or for a run without an input list one per
/// recorded item. Returns the number of lines written.
pub fn export_run(
    store: &mut dyn Store,
    run_id: &str,
    format: ExportFormat,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let options = ExportOptions {
        format,
        include_item: false,
        flat: false,
    };
    export_with(store, run_id, options, out)
}

/// [`export_run`] as `options` say (format, item fields, flat lines).
pub fn export_with(
    store: &mut dyn Store,
    run_id: &str,
    options: ExportOptions,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let job = store.find_run(run_id)?.filter(is_job);
    if let Some(run) = job {
        return crate::job::export::export_units(store, &run, options, out);
    }
    if options.format == ExportFormat::Jsonl && !options.flat {
        return write_lines(store, run_id, out);
    }
    let mut table = quick_table::QuickTable::new(options.include_item);
    write_table(store, run_id, &mut table, options.format, out)
}

/// One recorded item's result line, as the JSONL export of `run` writes it
/// (without the newline): a Batch API output line, or a job unit's result.
pub fn result_line(run: &RunMeta, item: &ItemRecord, include_item: bool) -> String {
    if is_job(run) {
        return crate::job::export::result_line(item, include_item).to_string();
    }
    let mut line = Vec::new();
    // Writing to memory cannot fail.
    let _ = write_output_line(&mut line, &run.id, item);
    line.pop();
    String::from_utf8_lossy(&line).into_owned()
}

fn is_job(run: &RunMeta) -> bool {
    RunMode::of(&run.settings) == RunMode::Job
}
