//! Routing: which endpoints an event goes to.
//!
//! An endpoint's [`Filter`] lists severities, care plans, care teams and
//! event types; an empty list means "any". Patients belong to care teams
//! (the `patients` table), so an endpoint filtered on a team receives only
//! that team's patients' alerts — a patient without a team matches no
//! team-filtered endpoint.
//!
//! Operational events (`delivery.failing`, `delivery.dead_lettered`,
//! `endpoint.disabled`, `store.disk_low`) carry no patient: only the event
//! type filter applies, an endpoint receives them only if it asks for them
//! (the default is alert events only), and never the endpoint the event is
//! about (it is the one failing).

use serde::{Deserialize, Serialize};

use crate::store::outbox::EventType;

/// Severities an alert can have, lowest first.
pub const SEVERITIES: &[&str] = &["info", "warning", "urgent", "critical"];

const EVENT_TYPES: &[EventType] = &EventType::ALL;

/// What an endpoint receives. Empty lists mean "any"; `event_types` empty
/// means the patient events (`alert.*` and `task.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Filter {
    /// `info`, `warning`, `urgent`, `critical`.
    pub severities: Vec<String>,
    /// Care plans; an alert matches when its patient is enrolled in any.
    pub care_plans: Vec<String>,
    /// Care teams; an alert matches when its patient belongs to one.
    pub care_teams: Vec<String>,
    /// Event types (`alert.fired`), or a family (`alert.*`, `delivery.*`,
    /// `endpoint.*`, `store.*`), or `*`.
    pub event_types: Vec<String>,
}

impl Filter {
    /// Checks the values (unknown severity or event type).
    pub fn validate(&self) -> Result<(), String> {
        for s in &self.severities {
            if !SEVERITIES.contains(&s.as_str()) {
                return Err(format!(
                    "unknown severity `{s}` (one of {})",
                    SEVERITIES.join(", ")
                ));
            }
        }
        for t in &self.event_types {
            if !EVENT_TYPES.iter().any(|e| pattern_matches(t, e.name())) {
                return Err(format!(
                    "unknown event type `{t}` (e.g. alert.fired, alert.*, task.*, delivery.*, endpoint.disabled, *)"
                ));
            }
        }
        for (name, list) in [
            ("care_plans", &self.care_plans),
            ("care_teams", &self.care_teams),
        ] {
            if list.iter().any(|v| v.trim().is_empty()) {
                return Err(format!("{name}: empty name"));
            }
        }
        Ok(())
    }
}

fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// What routing needs to know about an event.
#[derive(Debug, Clone, Default)]
pub struct RouteInfo {
    /// The event's type name (`alert.fired`).
    pub event_type: String,
    /// Alert events: severity.
    pub severity: Option<String>,
    /// Alert events: the patient's care team (from `patients`).
    pub care_team: Option<String>,
    /// Alert events: the patient's care plans (from `patients`).
    pub care_plans: Vec<String>,
    /// Operational events: the endpoint concerned.
    pub about_endpoint: Option<String>,
}

/// Whether `endpoint_id` with `filter` receives the event. Risk events
/// (`risk.changed`) are patient events like alerts (care-team and plan
/// filters apply) but have no severity, and go only to endpoints that
/// name them.
pub fn matches(endpoint_id: &str, filter: &Filter, ev: &RouteInfo) -> bool {
    // Alert and follow-up task events are routed by severity (a task's is
    // its priority), care plan and care team; without an event-type filter
    // an endpoint receives them all.
    let is_alert = ev.event_type.starts_with("alert.") || ev.event_type.starts_with("task.");
    let is_patient = is_alert || ev.event_type.starts_with("risk.");
    let type_ok = if filter.event_types.is_empty() {
        is_alert
    } else {
        filter
            .event_types
            .iter()
            .any(|p| pattern_matches(p, &ev.event_type))
    };
    if !type_ok {
        return false;
    }
    if !is_patient {
        return ev.about_endpoint.as_deref() != Some(endpoint_id);
    }
    let severity_ok = !is_alert
        || filter.severities.is_empty()
        || ev
            .severity
            .as_ref()
            .is_some_and(|s| filter.severities.contains(s));
    let plans_ok =
        filter.care_plans.is_empty() || ev.care_plans.iter().any(|p| filter.care_plans.contains(p));
    let team_ok = filter.care_teams.is_empty()
        || ev
            .care_team
            .as_ref()
            .is_some_and(|t| filter.care_teams.contains(t));
    severity_ok && plans_ok && team_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(sev: &str, team: Option<&str>, plans: &[&str]) -> RouteInfo {
        RouteInfo {
            event_type: "alert.fired".into(),
            severity: Some(sev.into()),
            care_team: team.map(String::from),
            care_plans: plans.iter().map(|s| s.to_string()).collect(),
            about_endpoint: None,
        }
    }

    #[test]
    fn teams_plans_severities_and_types() {
        let north = Filter {
            care_teams: vec!["north".into()],
            ..Default::default()
        };
        assert!(matches("n", &north, &alert("urgent", Some("north"), &[])));
        assert!(!matches("n", &north, &alert("urgent", Some("south"), &[])));
        assert!(!matches("n", &north, &alert("urgent", None, &[])));
        let urgent_hf = Filter {
            severities: vec!["urgent".into(), "critical".into()],
            care_plans: vec!["heart-failure".into()],
            ..Default::default()
        };
        assert!(matches(
            "x",
            &urgent_hf,
            &alert("critical", None, &["copd", "heart-failure"])
        ));
        assert!(!matches(
            "x",
            &urgent_hf,
            &alert("warning", None, &["heart-failure"])
        ));
        assert!(!matches(
            "x",
            &urgent_hf,
            &alert("critical", None, &["copd"])
        ));
        let fired_only = Filter {
            event_types: vec!["alert.fired".into()],
            ..Default::default()
        };
        let mut resolved = alert("info", None, &[]);
        resolved.event_type = "alert.resolved".into();
        assert!(!matches("x", &fired_only, &resolved));
        assert!(matches("x", &Filter::default(), &resolved));
    }

    #[test]
    fn box_events_are_operational_and_opt_in() {
        let silent = RouteInfo {
            event_type: "box.silent".into(),
            ..Default::default()
        };
        assert!(!matches("a", &Filter::default(), &silent));
        let ops = Filter {
            event_types: vec!["box.*".into()],
            ..Default::default()
        };
        assert!(ops.validate().is_ok());
        assert!(matches("a", &ops, &silent));
    }

    #[test]
    fn operational_events_opt_in_and_never_to_the_endpoint_concerned() {
        let failing = RouteInfo {
            event_type: "delivery.failing".into(),
            about_endpoint: Some("a".into()),
            ..Default::default()
        };
        assert!(!matches("b", &Filter::default(), &failing));
        let ops = Filter {
            event_types: vec!["delivery.*".into(), "endpoint.*".into()],
            care_teams: vec!["north".into()],
            ..Default::default()
        };
        assert!(matches("b", &ops, &failing));
        assert!(!matches("a", &ops, &failing));
        assert!(ops.validate().is_ok());
        let bad = Filter {
            event_types: vec!["alert.fire".into()],
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let bad = Filter {
            severities: vec!["high".into()],
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn risk_events_go_only_to_endpoints_naming_them_by_team_without_severity() {
        let risk = RouteInfo {
            event_type: "risk.changed".into(),
            severity: None,
            care_team: Some("north".into()),
            care_plans: vec!["hypertension".into()],
            about_endpoint: None,
        };
        assert!(!matches("e", &Filter::default(), &risk));
        let named = Filter {
            event_types: vec!["risk.*".into()],
            care_teams: vec!["north".into()],
            severities: vec!["critical".into()],
            ..Default::default()
        };
        assert!(named.validate().is_ok());
        assert!(matches("e", &named, &risk));
        let south = Filter {
            care_teams: vec!["south".into()],
            ..named
        };
        assert!(!matches("e", &south, &risk));
    }
}
