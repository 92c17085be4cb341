//! Properties of the state machine over random reading sequences.

mod common;

use alerting_rules::TransitionKind;
use common::*;
use device_profiles::Metric;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the readings: at most one open alert, fire and resolve
    /// alternate, every notification respects the re-notify interval, and
    /// evaluating is deterministic.
    #[test]
    fn transitions_alternate_and_respect_renotify(values in proptest::collection::vec(60.0f64..260.0, 1..60), gaps in proptest::collection::vec(1i64..120, 60)) {
        let set = rule("threshold = { metric = \"systolic\", op = \">\", limit = \"180 mmHg\" }\nrenotify = \"1h\"\nflap = { max_changes = 6, window = \"6h\" }");
        let run = |values: &[f64]| {
            let mut s = Sim::new(set.clone());
            let mut m = 0;
            let mut out = Vec::new();
            for (v, g) in values.iter().zip(&gaps) {
                m += g;
                let ts = s.one(Metric::Systolic, *v, at(m));
                out.extend(ts);
            }
            out
        };
        let a = run(&values);
        prop_assert_eq!(&a, &run(&values));
        let mut open = false;
        let mut last_notified: Option<chrono::DateTime<chrono::Utc>> = None;
        for t in &a {
            match t.kind {
                TransitionKind::Fire => { prop_assert!(!open); open = true; last_notified = Some(t.at); }
                TransitionKind::Resolve => { prop_assert!(open); open = false; }
                TransitionKind::Update => {
                    prop_assert!(open);
                    let l = last_notified.unwrap();
                    prop_assert!(t.at - l >= chrono::TimeDelta::hours(1));
                    last_notified = Some(t.at);
                }
                TransitionKind::NoChange => {}
            }
            prop_assert_eq!(t.state.open.is_some(), open);
        }
    }
}
