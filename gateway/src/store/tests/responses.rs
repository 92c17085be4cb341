//! Questionnaire responses: stored with their score readings in one
//! transaction (a failing disk leaves neither), once per identity.

use device_profiles::questionnaire::response::TimeLimits;
use device_profiles::questionnaire::{bundled, ResponseInput};
use std::sync::Arc;

use super::*;
use crate::store::Outcome;

fn response(device: &str) -> Item {
    let body = format!(
        r#"{{"questionnaire": "https://rpm-gateway.dev/fhir/Questionnaire/mmrc", "device_id": "{device}",
            "authored": "2026-03-02T07:30:00Z", "answers": {{"mmrc": "grade-2"}}}}"#
    );
    let input = ResponseInput::from_plain(body.as_bytes()).unwrap();
    let limits = TimeLimits {
        max_future: chrono::Duration::minutes(5),
        max_age: chrono::Duration::days(365),
    };
    let accepted = bundled().accept(&input, t0(), limits).unwrap();
    Item::Response {
        raw: raw("rpm/questionnaire-answers/x", body.as_bytes()),
        response: Arc::new(accepted),
    }
}

#[test]
fn a_response_and_its_scores_commit_together_once() {
    let (_dir, mut store) = open();
    assign(&mut store, "tab-1", "p1");
    // A failing disk refuses the score reading: the response is not stored either.
    refuse_readings_of(&store, "tab-1");
    assert!(store.commit(&[response("tab-1")], 0).is_err());
    assert_eq!(count(&store, "SELECT COUNT(*) FROM responses"), 0);
    accept_readings_of(&store, "tab-1");

    let out = store.commit(&[response("tab-1")], 0).unwrap();
    assert_eq!(
        out,
        vec![Outcome::Stored {
            stored: 1,
            duplicates: 0,
            patient_id: "p1".into()
        }]
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM readings WHERE metric = 'mmrc_grade' AND value = 2 AND unit = '{score}' AND patient_id = 'p1'"
        ),
        1
    );
    // The same response again: nothing new.
    let out = store.commit(&[response("tab-1")], 0).unwrap();
    assert!(matches!(
        out[0],
        Outcome::Stored {
            stored: 0,
            duplicates: 1,
            ..
        }
    ));
    assert_eq!(count(&store, "SELECT COUNT(*) FROM responses"), 1);
    // An unassigned tablet: quarantined, nothing stored.
    let out = store.commit(&[response("tab-2")], 0).unwrap();
    assert!(matches!(
        out[0],
        Outcome::Quarantined {
            reason: "unknown_device",
            ..
        }
    ));
    assert_eq!(count(&store, "SELECT COUNT(*) FROM responses"), 1);
}
