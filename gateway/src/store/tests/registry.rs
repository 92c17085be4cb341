//! The registry: assigning a device re-processes its quarantined
//! `unknown_device` input in the same transaction, once.

use device_profiles::Reject;
use std::cell::Cell;

use super::{
    accept_readings_of, assign, count, group, open, reading, reading_ids, refuse_readings_of,
};
use crate::store::registry::{QuarantinedInput, Redecoded, Reprocessed};
use crate::store::{Outcome, Store};

/// Decodes a quarantined input again as the pipeline would: the message's
/// bytes are the reading id (see `super::reading`). Counts its calls.
fn redecode(calls: &Cell<usize>) -> impl Fn(&QuarantinedInput) -> Redecoded + '_ {
    move |q| {
        calls.set(calls.get() + 1);
        let id = String::from_utf8(q.payload.clone()).unwrap();
        let device = q.device_id.clone().unwrap();
        vec![(q.index.unwrap_or(0), Ok(group(&device, &id, 97.0).into()))]
    }
}

fn unknown(new: bool) -> Outcome {
    Outcome::Quarantined {
        reason: "unknown_device",
        new,
    }
}

fn patient_of_reading(store: &Store, id: &str) -> String {
    store
        .conn()
        .query_row(
            "SELECT patient_id FROM readings WHERE reading_id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
}

fn open_rows(store: &Store) -> i64 {
    count(
        store,
        "SELECT COUNT(*) FROM quarantine WHERE status = 'open'",
    )
}

/// Readings of a device nobody assigned are quarantined once (a redelivery
/// is the same record); assigning the device turns them into readings of
/// its patient exactly once: later assignments, to the same patient or
/// another, find nothing left to re-process and move no stored reading.
#[test]
fn assigning_a_device_recovers_its_quarantined_readings_once() {
    let (_dir, mut store) = open();
    assert_eq!(
        store.commit(&[reading("ox-9", "r1")], 0).unwrap(),
        [unknown(true)]
    );
    assert_eq!(
        store.commit(&[reading("ox-9", "r1")], 0).unwrap(),
        [unknown(false)]
    );
    let calls = Cell::new(0);
    let done = store
        .assign_device("ox-9", "p1", "test", redecode(&calls))
        .unwrap();
    assert_eq!(
        done,
        Reprocessed {
            recovered: 1,
            still_refused: 0
        }
    );
    assert_eq!(calls.get(), 1);
    assert_eq!(reading_ids(&store), ["r1"]);
    assert_eq!(patient_of_reading(&store, "r1"), "p1");
    assert_eq!(open_rows(&store), 0);
    for patient in ["p1", "p2"] {
        let again = store
            .assign_device("ox-9", patient, "test", redecode(&calls))
            .unwrap();
        assert_eq!(again, Reprocessed::default());
    }
    assert_eq!(calls.get(), 1);
    assert_eq!(reading_ids(&store), ["r1"]);
    assert_eq!(patient_of_reading(&store, "r1"), "p1");
}

/// After an unassignment the device's new readings wait in quarantine; the
/// next assignment recovers those (for its patient) and only those.
#[test]
fn an_unassigned_devices_readings_wait_for_the_next_assignment() {
    let (_dir, mut store) = open();
    assign(&mut store, "ox-1", "p1");
    assert!(matches!(
        store.commit(&[reading("ox-1", "r1")], 0).unwrap()[..],
        [Outcome::Stored { stored: 1, .. }]
    ));
    assert!(store.unassign_device("ox-1").unwrap());
    assert!(!store.unassign_device("never-seen").unwrap());
    assert_eq!(
        store.commit(&[reading("ox-1", "r2")], 0).unwrap(),
        [unknown(true)]
    );
    let calls = Cell::new(0);
    let done = store
        .assign_device("ox-1", "p2", "test", redecode(&calls))
        .unwrap();
    assert_eq!(done.recovered, 1);
    assert_eq!(calls.get(), 1);
    assert_eq!(reading_ids(&store), ["r1", "r2"]);
    assert_eq!(patient_of_reading(&store, "r1"), "p1");
    assert_eq!(patient_of_reading(&store, "r2"), "p2");
}

/// An assignment and its re-processing are one transaction: if storing
/// the recovered readings fails, the device is not assigned (not even
/// registered) and its input stays quarantined for the next attempt.
#[test]
fn an_assignment_and_its_reprocessing_are_one_transaction() {
    let (_dir, mut store) = open();
    store.commit(&[reading("boom", "r1")], 0).unwrap();
    refuse_readings_of(&store, "boom");
    let calls = Cell::new(0);
    assert!(store
        .assign_device("boom", "p1", "test", redecode(&calls))
        .is_err());
    assert_eq!(store.device("boom").unwrap(), None);
    assert_eq!(open_rows(&store), 1);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM readings"), 0);
    accept_readings_of(&store, "boom");
    let done = store
        .assign_device("boom", "p1", "test", redecode(&calls))
        .unwrap();
    assert_eq!(done.recovered, 1);
    assert_eq!(open_rows(&store), 0);
    assert_eq!(reading_ids(&store), ["r1"]);
}

/// Input that re-decoding now refuses for another reason stays open with
/// that reason, and is no longer the registry's to re-process: a later
/// assignment does not decode it again.
#[test]
fn input_refused_again_keeps_its_new_reason_and_is_not_retried_by_assignment() {
    let (_dir, mut store) = open();
    store.commit(&[reading("ox-9", "r1")], 0).unwrap();
    let calls = Cell::new(0);
    let refuse = |q: &QuarantinedInput| -> Redecoded {
        calls.set(calls.get() + 1);
        vec![(q.index.unwrap_or(0), Err(Reject::Empty))]
    };
    let done = store.assign_device("ox-9", "p1", "test", refuse).unwrap();
    assert_eq!(
        done,
        Reprocessed {
            recovered: 0,
            still_refused: 1
        }
    );
    let reason: String = store
        .conn()
        .query_row(
            "SELECT reason FROM quarantine WHERE status = 'open'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(reason, "empty_measurement");
    store
        .assign_device("ox-9", "p2", "test", redecode(&calls))
        .unwrap();
    assert_eq!(calls.get(), 1);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM readings"), 0);
}

/// The gateway's EUI-64 system id (its FHIR PhgDevice identity) is made
/// once, is a locally administered unicast id, and survives reopening.
#[test]
fn the_gateway_system_id_is_made_once_and_kept() {
    let (dir, store) = open();
    let id = crate::store::registry::gateway_system_id(store.conn()).unwrap();
    assert_eq!(id.len(), 16);
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    let first = u8::from_str_radix(&id[..2], 16).unwrap();
    assert_eq!(first & 0b11, 0b10, "locally administered, unicast: {id}");
    drop(store);
    let again = Store::open(&dir.path().join("s.db")).unwrap();
    assert_eq!(
        crate::store::registry::gateway_system_id(again.conn()).unwrap(),
        id
    );
}
