//! Crash points for the end-to-end tests.
//!
//! `RPM_FAULT_INJECT=<point>` makes the process abort, as `kill -9` would,
//! at an exact point of a commit protocol (or fail one commit), so that the
//! tests can show that nothing acknowledged is lost and nothing is
//! duplicated whatever the moment of a crash. Off unless the variable is
//! set; the points are listed in `docs/developing.md` under "Testing".

/// A point where the process can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// `abort-before-commit`: the store writer, before a group commit.
    BeforeCommit,
    /// `abort-after-commit`: the store writer, after a group commit and
    /// before its submitters hear of it (no acknowledgement sent).
    AfterCommit,
    /// `fail-first-commit`: the writer's first commit fails as with a disk
    /// I/O error; later ones succeed.
    FailFirstCommit,
    /// `abort-before-normalize`: input is in the inbox (and perhaps
    /// acknowledged), not yet normalized.
    BeforeNormalize,
    /// `abort-before-rules-commit`: the rule evaluator, before its commit.
    BeforeRulesCommit,
    /// `abort-after-rules-commit`: the rule evaluator, after its commit.
    AfterRulesCommit,
    /// `abort-after-forward`: a forwarder (InfluxDB, upstream) or the FHIR push, after the sink accepted a
    /// batch and before its cursor moved past it.
    AfterForward,
    /// `panic-in-rules`: the rule evaluator panics before its first commit
    /// (a component that dies while the process lives on).
    RulesPanic,
    /// `abort-before-escalation-commit`: the follow-up escalator, before
    /// it commits overdue marks and escalations.
    BeforeEscalationCommit,
    /// `abort-after-escalation-commit`: the escalator, after that commit.
    AfterEscalationCommit,
    /// `abort-before-risk-commit`: the risk stage, before committing a
    /// batch that reports a tier change.
    BeforeRiskCommit,
    /// `abort-after-risk-commit`: the risk stage, after committing a batch
    /// that reports a tier change.
    AfterRiskCommit,
}

impl FaultPoint {
    const NAMES: [(&'static str, FaultPoint); 12] = [
        ("abort-before-commit", FaultPoint::BeforeCommit),
        ("abort-after-commit", FaultPoint::AfterCommit),
        ("fail-first-commit", FaultPoint::FailFirstCommit),
        ("abort-before-normalize", FaultPoint::BeforeNormalize),
        ("abort-before-rules-commit", FaultPoint::BeforeRulesCommit),
        ("abort-after-rules-commit", FaultPoint::AfterRulesCommit),
        ("abort-after-forward", FaultPoint::AfterForward),
        ("panic-in-rules", FaultPoint::RulesPanic),
        (
            "abort-before-escalation-commit",
            FaultPoint::BeforeEscalationCommit,
        ),
        (
            "abort-after-escalation-commit",
            FaultPoint::AfterEscalationCommit,
        ),
        ("abort-before-risk-commit", FaultPoint::BeforeRiskCommit),
        ("abort-after-risk-commit", FaultPoint::AfterRiskCommit),
    ];

    fn parse(s: &str) -> Option<FaultPoint> {
        Self::NAMES.iter().find(|(n, _)| *n == s).map(|(_, p)| *p)
    }
}

/// The fault armed in this process (`RPM_FAULT_INJECT`), if any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fault(Option<FaultPoint>);

impl Fault {
    /// Reads `RPM_FAULT_INJECT`; an unknown value arms nothing (and says so).
    pub fn from_env() -> Fault {
        match std::env::var("RPM_FAULT_INJECT") {
            Ok(v) => {
                let point = FaultPoint::parse(&v);
                if point.is_none() {
                    eprintln!("RPM_FAULT_INJECT={v}: no such fault point; none armed");
                }
                Fault(point)
            }
            Err(_) => Fault(None),
        }
    }

    /// Whether `at` is the armed point.
    pub fn is(self, at: FaultPoint) -> bool {
        self.0 == Some(at)
    }

    /// Aborts the process at once when `at` is the armed point.
    pub fn abort_at(self, at: FaultPoint) {
        if self.is(at) {
            abort(at);
        }
    }

    /// True once when `at` is armed (the caller fails that operation);
    /// disarmed afterwards.
    pub fn take(&mut self, at: FaultPoint) -> bool {
        let armed = self.is(at);
        if armed {
            eprintln!("fault injection: failing this commit ({at:?})");
            self.0 = None;
        }
        armed
    }
}

/// Aborts the process, as `kill -9` would (no destructor, no flush).
pub fn abort(at: FaultPoint) -> ! {
    eprintln!("fault injection: aborting at {at:?}");
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_take_disarms() {
        for (name, point) in FaultPoint::NAMES {
            assert_eq!(FaultPoint::parse(name), Some(point));
        }
        assert_eq!(FaultPoint::parse("abort-somewhere"), None);
        let mut f = Fault(Some(FaultPoint::FailFirstCommit));
        assert!(!f.take(FaultPoint::BeforeCommit));
        assert!(f.take(FaultPoint::FailFirstCommit));
        assert!(!f.take(FaultPoint::FailFirstCommit));
        Fault::default().abort_at(FaultPoint::BeforeCommit);
    }
}
