//! Suite checks for executor leases and input lists.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use super::{new_run, rec, Connect};
use crate::{InputRow, ItemStatus, LeaseHolder, Output, SinkError, Store};

fn holder(id: &str) -> LeaseHolder {
    LeaseHolder {
        holder: id.into(),
        host: "host-a".into(),
        pid: 4242,
        machine: "boot/ns".into(),
        pid_start: Some(77),
    }
}

const LONG: Duration = Duration::from_secs(60);

pub(crate) fn lease_is_exclusive_until_released_or_lapsed(connect: Connect<'_>) {
    let (mut a, mut b) = (connect(), connect());
    assert_eq!(
        a.acquire_lease("src", &holder("a"), LONG, None).unwrap(),
        None
    );
    let held = b
        .acquire_lease("src", &holder("b"), LONG, None)
        .unwrap()
        .expect("a holds it");
    assert_eq!(held.holder, holder("a"));
    assert!(!held.expired());
    assert!(held.expires_at > held.renewed_at);
    // Another key is free; the holder may take its own lease again.
    assert_eq!(
        b.acquire_lease("other", &holder("b"), LONG, None).unwrap(),
        None
    );
    assert_eq!(
        a.acquire_lease("src", &holder("a"), LONG, None).unwrap(),
        None
    );
    assert!(a.renew_lease("src", "a", LONG).unwrap());
    assert!(!b.renew_lease("src", "b", LONG).unwrap(), "b never held it");
    // Released: the next one gets it, and the old holder's renewal fails.
    a.release_lease("src", "a").unwrap();
    assert_eq!(b.lease("src").unwrap(), None);
    assert_eq!(
        b.acquire_lease("src", &holder("b"), LONG, None).unwrap(),
        None
    );
    assert!(!a.renew_lease("src", "a", LONG).unwrap());
    // A holder known to be gone is replaced at once.
    assert_eq!(
        a.acquire_lease("src", &holder("a"), LONG, Some("b"))
            .unwrap(),
        None
    );
    assert_eq!(b.lease("src").unwrap().unwrap().holder.holder, "a");
    // A lease nobody renews lapses.
    let short = Duration::from_millis(30);
    assert!(a.renew_lease("src", "a", short).unwrap());
    std::thread::sleep(Duration::from_millis(80));
    assert!(b.lease("src").unwrap().unwrap().expired());
    assert_eq!(
        b.acquire_lease("src", &holder("b"), LONG, None).unwrap(),
        None
    );
    assert!(!a.renew_lease("src", "a", LONG).unwrap(), "lost to b");
}

pub(crate) fn one_of_many_concurrent_acquirers_gets_the_lease(connect: Connect<'_>) {
    const N: usize = 6;
    let stores: Vec<Box<dyn Store>> = (0..N).map(|_| connect()).collect();
    let barrier = Arc::new(Barrier::new(N));
    let threads: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                s.acquire_lease("race", &holder(&format!("p{i}")), LONG, None)
                    .unwrap()
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let winners = results.iter().filter(|r| r.is_none()).count();
    assert_eq!(winners, 1, "{results:?}");
    let winner = connect().lease("race").unwrap().unwrap().holder.holder;
    for lost in results.iter().flatten() {
        assert_eq!(lost.holder.holder, winner);
    }
}

fn row(item_id: &str, idx: u64, hash: u64) -> Result<InputRow, SinkError> {
    Ok(InputRow {
        item_id: item_id.into(),
        idx,
        hash,
    })
}

fn outputs(store: &mut dyn Store, run_id: &str) -> Vec<(String, u64, Option<ItemStatus>)> {
    let mut out = Vec::new();
    store
        .for_each_output(run_id, &mut |o| {
            out.push(match o {
                Output::Recorded(r) => (r.item_id, r.idx, Some(r.status)),
                Output::Pending { item_id, idx } => (item_id, idx, None),
            });
            Ok(())
        })
        .unwrap();
    out
}

pub(crate) fn outputs_and_counts_follow_the_input_list(connect: Connect<'_>) {
    let mut s = connect();
    let run = s.create_run(&new_run("r", "s")).unwrap();
    let (a, b, c, gone) = (
        rec("a", 1, ItemStatus::Done),
        rec("b", 2, ItemStatus::Done),
        rec("c", 3, ItemStatus::Failed),
        rec("gone", 4, ItemStatus::Done),
    );
    s.write_batch(&run.id, &[a.clone(), b.clone(), c.clone(), gone])
        .unwrap();
    // Without a list: every record, as recorded.
    assert_eq!(outputs(&mut *s, &run.id).len(), 4);
    // The input now: a moved to the end, b edited, c and a new d, "gone" deleted.
    let mut list = vec![
        row("b", 1, b.hash ^ 1),
        row("c", 2, c.hash),
        row("d", 3, 99),
        row("a", 4, a.hash),
        row("a", 9, 0),
    ]
    .into_iter();
    let counts = s.replace_inputs(&run.id, &mut list).unwrap();
    assert_eq!(
        (counts.total, counts.done),
        (4, 1),
        "a repeated id keeps its first row"
    );
    assert_eq!(
        outputs(&mut *connect(), &run.id),
        vec![
            ("b".into(), 1, None),
            ("c".into(), 2, None),
            ("d".into(), 3, None),
            ("a".into(), 4, Some(ItemStatus::Done)),
        ],
        "an edited line and an earlier failure are pending; a deleted line is gone"
    );
    let counts = s.counts(&run.id).unwrap();
    assert_eq!((counts.done, counts.failed), (1, 0));
    assert!(
        s.get_item(&run.id, "c").unwrap().is_none(),
        "the stale failure is gone"
    );
    // Recorded from now on: shown with the current position.
    let mut c2 = rec("c", 7, ItemStatus::Failed);
    c2.hash = c.hash;
    s.write_batch(&run.id, &[c2]).unwrap();
    let got = outputs(&mut *s, &run.id);
    assert_eq!(got[1], ("c".into(), 2, Some(ItemStatus::Failed)));
    assert_eq!(s.counts(&run.id).unwrap().failed, 1);
    // A failing source of rows leaves the previous list as it was.
    let mut broken = vec![
        row("x", 1, 1),
        Err::<InputRow, SinkError>("unreadable".into()),
    ]
    .into_iter();
    assert!(matches!(
        s.replace_inputs(&run.id, &mut broken),
        Err(crate::Error::Callback(_))
    ));
    assert_eq!(outputs(&mut *s, &run.id).len(), 4);
    assert_eq!(s.counts(&run.id).unwrap().failed, 1);
}
