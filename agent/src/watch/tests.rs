use super::*;
use crate::material::tests::{ca, workload, write};

#[test]
fn a_bad_state_counts_once_it_holds_and_a_good_one_is_served_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca("cluster1");
    let (w1, w2, w3) = (workload(&ca, "a"), workload(&ca, "b"), workload(&ca, "c"));
    write(dir.path(), &w1.chain_pem(), &w1.key_pem, &w1.root_pem);
    let first = Material::load(dir.path(), 1).expect("load");
    let mut watcher = Watcher::new(dir.path().to_path_buf(), Duration::from_secs(1), first);
    let (material, status) = (watcher.material(), watcher.status());

    watcher.poll();
    assert_eq!(*status.borrow(), Status::default(), "nothing changed");

    // A writer between files: w2's chain beside w1's key.
    write(dir.path(), &w2.chain_pem(), &w1.key_pem, &w2.root_pem);
    watcher.poll();
    assert_eq!(
        status.borrow().failures,
        0,
        "one sighting may be a writer mid-way"
    );
    watcher.poll();
    assert_eq!(status.borrow().failures, 1, "still there: refused");
    watcher.poll();
    assert_eq!(status.borrow().failures, 1, "reported once");
    assert_eq!(
        material.borrow().generation,
        1,
        "the last good ones stay served"
    );
    assert_eq!(
        material.borrow().files.cert_chain,
        w1.chain_pem().into_bytes()
    );

    write(dir.path(), &w3.chain_pem(), &w3.key_pem, &w3.root_pem);
    watcher.poll();
    let served = material.borrow().clone();
    assert_eq!(served.generation, 2);
    assert_eq!(served.identity, "spiffe://cluster.local/ns/sample/sa/c");
    assert_eq!(status.borrow().reloads, 1);
}
