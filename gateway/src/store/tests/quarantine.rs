//! The quarantine's bounded cost: identical refusals are one record with a
//! count, a message's bytes are kept once, a redelivery adds nothing.

use device_profiles::Reject;
use std::sync::Arc;

use super::{count, open, raw};
use crate::store::{Item, Outcome, RawInput};

fn refused(raw: &Arc<RawInput>, index: Option<usize>, device: &str, reason: Reject) -> Item {
    Item::Quarantine {
        raw: raw.clone(),
        index,
        device_id: Some(device.into()),
        reason,
    }
}

fn quarantined(new: bool) -> Outcome {
    Outcome::Quarantined {
        reason: "empty_measurement",
        new,
    }
}

/// Identical refusals of one message (same reason, same device) are one
/// record counting them, with the positions it covers; every refusal is
/// answered, and the message's bytes are kept once.
#[test]
fn identical_refusals_are_one_record_with_a_count() {
    let (_dir, mut store) = open();
    let msg = raw("rpm/senml/d1", b"five empty measurements");
    let items: Vec<Item> = (0..5)
        .map(|i| refused(&msg, Some(i), "d1", Reject::Empty))
        .collect();
    let out = store.commit(&items, 0).unwrap();
    assert_eq!(out, vec![quarantined(true); 5]);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM quarantine"), 1);
    assert_eq!(count(&store, "SELECT count FROM quarantine"), 5);
    let positions: String = store
        .conn()
        .query_row("SELECT measurement_indexes FROM quarantine", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(positions, "0-4");
    assert_eq!(count(&store, "SELECT COUNT(*) FROM quarantine_payloads"), 1);
}

/// The same message delivered again is answered as already quarantined
/// and changes nothing: no new record, the count is not inflated.
#[test]
fn a_redelivered_message_adds_nothing() {
    let (_dir, mut store) = open();
    let items = |msg: &Arc<RawInput>| -> Vec<Item> {
        (0..3)
            .map(|i| refused(msg, Some(i), "d1", Reject::Empty))
            .collect()
    };
    store
        .commit(&items(&raw("rpm/senml/d1", b"bad")), 0)
        .unwrap();
    let again = store
        .commit(&items(&raw("rpm/senml/d1", b"bad")), 0)
        .unwrap();
    assert_eq!(again, vec![quarantined(false); 3]);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM quarantine"), 1);
    assert_eq!(count(&store, "SELECT count FROM quarantine"), 3);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM quarantine_payloads"), 1);
}

/// Refusals that differ (another device, another reason, a whole-message
/// refusal, the same bytes on another topic) are records of their own,
/// while the bytes they share are still kept once.
#[test]
fn different_refusals_are_separate_records_sharing_one_payload_copy() {
    let (_dir, mut store) = open();
    let on_d1 = raw("rpm/senml/d1", b"same bytes");
    let on_d2 = raw("rpm/senml/d2", b"same bytes");
    let items = [
        refused(&on_d1, Some(0), "d1", Reject::Empty),
        refused(&on_d1, Some(1), "d1", Reject::Empty),
        refused(&on_d1, Some(2), "d9", Reject::Empty),
        refused(&on_d1, Some(3), "d1", Reject::UnknownDevice),
        refused(&on_d1, None, "d1", Reject::Empty),
        refused(&on_d2, Some(0), "d1", Reject::Empty),
    ];
    let out = store.commit(&items, 0).unwrap();
    assert!(out
        .iter()
        .all(|o| matches!(o, Outcome::Quarantined { new: true, .. })));
    assert_eq!(count(&store, "SELECT COUNT(*) FROM quarantine"), 5);
    assert_eq!(count(&store, "SELECT SUM(count) FROM quarantine"), 6);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM quarantine_payloads"), 1);
}
