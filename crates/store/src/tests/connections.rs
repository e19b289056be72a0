//! Suite checks across connections: concurrent reader and writer, reopening, durability.

use super::{new_run, rec, Connect};
use crate::ItemStatus;

pub(crate) fn reader_proceeds_while_writer_commits(connect: Connect<'_>) {
    let (mut reader, mut writer) = (connect(), connect());
    let run = writer.create_run(&new_run("r", "s")).unwrap();
    writer
        .write_batch(
            &run.id,
            &[rec("a", 0, ItemStatus::Done), rec("b", 1, ItemStatus::Done)],
        )
        .unwrap();
    let mut seen = 0;
    // The writer commits while the reader is in the middle of a read: it must
    // neither block nor fail, and the reader keeps its snapshot.
    reader
        .for_each_item(&run.id, &mut |_| {
            seen += 1;
            writer.write_batch(&run.id, &[rec(&format!("new{seen}"), 9, ItemStatus::Done)])?;
            Ok(())
        })
        .unwrap();
    assert_eq!(seen, 2);
    assert_eq!(reader.counts(&run.id).unwrap().done, 4);
}

pub(crate) fn concurrent_writer_and_reader_threads(connect: Connect<'_>) {
    let mut writer = connect();
    let mut reader = connect();
    let run = writer.create_run(&new_run("r", "s")).unwrap();
    let run_id = run.id.clone();
    let handle = std::thread::spawn(move || {
        for b in 0..40u64 {
            let batch: Vec<_> = (0..50)
                .map(|i| rec(&format!("{b}-{i}"), b * 50 + i, ItemStatus::Done))
                .collect();
            writer.write_batch(&run_id, &batch).unwrap();
        }
    });
    let mut last = 0;
    while last < 2_000 {
        let done = reader.counts(&run.id).unwrap().done;
        assert!(
            done >= last && done.is_multiple_of(50),
            "saw {done} after {last}: a partial batch"
        );
        last = done;
        if handle.is_finished() && last < 2_000 {
            assert_eq!(reader.counts(&run.id).unwrap().done, 2_000);
            break;
        }
    }
    handle.join().unwrap();
}

pub(crate) fn survives_drop_without_close(connect: Connect<'_>) {
    let mut s = connect();
    let run = s.create_run(&new_run("r", "s")).unwrap();
    let batch: Vec<_> = (0..100)
        .map(|i| rec(&format!("i{i}"), i, ItemStatus::Done))
        .collect();
    s.write_batch(&run.id, &batch).unwrap();
    drop(s);
    let mut s = connect();
    assert_eq!(s.counts(&run.id).unwrap().done, 100);
    assert_eq!(
        s.get_item(&run.id, "i42").unwrap().as_ref(),
        Some(&batch[42])
    );
}

pub(crate) fn reopening_is_idempotent(connect: Connect<'_>) {
    let run = connect().create_run(&new_run("r", "s")).unwrap();
    let mut again = connect();
    let mut third = connect();
    assert_eq!(again.find_run("r").unwrap(), Some(run));
    assert_eq!(third.create_run(&new_run("r", "s")).unwrap().id, "r-2");
}
