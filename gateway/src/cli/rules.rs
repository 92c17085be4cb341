//! `rpm-gateway rules|patients|alerts ...`: the rule stage's commands.
//!
//! `rules check` and `rules test` work offline on files (no store, no
//! config needed). The others change the store in one transaction each,
//! with an `audit_log` row (actor `cli`); a running gateway sees the change
//! at its next evaluation.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use alerting_rules::input::{parse_csv, parse_json_lines};
use alerting_rules::{replay_with, Overrides, ReplayOptions, RuleDuration, RuleSet};
use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use rusqlite::Transaction;

use crate::config::Config;
use crate::rules::lifecycle;
use crate::rules::load_rule_set;
use crate::runtime;
use crate::store::alerts::{self, AlertFilter, AlertRecord};
use crate::store::patients::{self, PatientChange};

/// `rules` subcommands.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Validate a rule set (packs and plans.toml); every error with file, line and field.
    Check {
        /// Directory of rule packs.
        dir: PathBuf,
    },
    /// Replay readings (CSV or JSON lines) through a rule set offline and print the alerts.
    Test(TestArgs),
    /// Replay the stored readings of a period through a candidate rule set and
    /// compare with the alerts raised (writes nothing).
    WhatIf(WhatIfArgs),
}

impl RulesCommand {
    /// Whether the command reads the store (and so the configuration).
    pub fn needs_store(&self) -> bool {
        matches!(self, RulesCommand::WhatIf(_))
    }
}

/// `rules what-if` arguments.
#[derive(Debug, Args)]
pub struct WhatIfArgs {
    /// Directory of the candidate rule packs.
    #[arg(long)]
    pub rules: PathBuf,
    /// Start (RFC 3339 or YYYY-MM-DD; default: 30 days before --until).
    #[arg(long)]
    pub since: Option<String>,
    /// End (RFC 3339 or YYYY-MM-DD; default: now).
    #[arg(long)]
    pub until: Option<String>,
    /// Only this patient.
    #[arg(long)]
    pub patient: Option<String>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `rules test` arguments.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Directory of rule packs (default: the bundled packs).
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Readings: CSV with a header line, or JSON lines (one object per line).
    /// Columns: patient, care_plan, metric, value, unit, measured_at[, received_at][, reading_id].
    #[arg(long)]
    pub readings: PathBuf,
    /// Evaluate missing-data rules up to this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Per-patient overrides: a JSON object `{"PATIENT": {"RULE": {"limits": {...}}}}`.
    #[arg(long)]
    pub overrides: Option<PathBuf>,
    /// JSON lines output.
    #[arg(long)]
    pub json: bool,
}

/// `patients` subcommands.
#[derive(Debug, Subcommand)]
pub enum PatientsCommand {
    /// Enrol a patient on care plans (replaces the plans; creates the patient if new).
    Enrol {
        /// Patient id.
        patient: String,
        /// Care plan (repeat for several): heart-failure, hypertension, diabetes, copd.
        #[arg(long = "plan")]
        plans: Vec<String>,
        /// Care team.
        #[arg(long)]
        team: Option<String>,
    },
    /// Set a patient's rule overrides from a JSON file or inline JSON (validated against the rule set).
    SetOverrides {
        /// Patient id.
        patient: String,
        /// File name, or JSON such as '{"htn.hypotension": {"limits": {"limit": "85 mmHg"}}}'.
        overrides: String,
    },
    /// Set (or, without TEAM, clear) a patient's care team.
    SetTeam {
        /// Patient id.
        patient: String,
        /// Care team.
        team: Option<String>,
    },
    /// Set (or, without ZONE, clear) a patient's IANA time zone; without one the care team's applies.
    SetTimeZone {
        /// Patient id.
        patient: String,
        /// IANA time zone, e.g. America/Los_Angeles.
        zone: Option<String>,
    },
    /// Set (or, without DATE, clear) the local date the patient's 30-day device periods count from.
    SetMonitoringStart {
        /// Patient id.
        patient: String,
        /// Local date, YYYY-MM-DD (without: the date of the first automatically transmitted reading).
        date: Option<String>,
    },
    /// List patients.
    List {
        /// JSON lines output.
        #[arg(long)]
        json: bool,
    },
}

/// `alerts` subcommands.
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// List alerts, newest first.
    List {
        /// firing | acknowledged | resolved | open (firing or acknowledged).
        #[arg(long)]
        status: Option<String>,
        /// Only this patient.
        #[arg(long)]
        patient: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// JSON lines output.
        #[arg(long)]
        json: bool,
    },
    /// Show one alert with its history and evidence.
    Show {
        /// Alert id.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge an alert, optionally snoozing its notifications.
    Ack {
        /// Alert id.
        id: String,
        /// Who acknowledges.
        #[arg(long)]
        by: String,
        /// Note.
        #[arg(long)]
        note: Option<String>,
        /// Snooze notifications for this long (e.g. 30m, 4h, 1d).
        #[arg(long)]
        snooze: Option<String>,
    },
    /// The alert burden of a period, per care team and rule: alerts per 100
    /// patient-days, notified vs silent, noise, flapping, time to acknowledge.
    Burden {
        /// Start (RFC 3339 or YYYY-MM-DD; default: 30 days before --until).
        #[arg(long)]
        since: Option<String>,
        /// End (RFC 3339 or YYYY-MM-DD; default: now).
        #[arg(long)]
        until: Option<String>,
        /// Only this care team.
        #[arg(long = "care-team")]
        care_team: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Resolve an alert by hand.
    Resolve {
        /// Alert id.
        id: String,
        /// Who resolves.
        #[arg(long)]
        by: String,
        /// Note.
        #[arg(long)]
        note: Option<String>,
    },
}

/// `rules ...` (no config needed).
pub fn rules(cmd: RulesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RulesCommand::Check { dir } => match RuleSet::load_dir(&dir) {
            Ok(set) => {
                let plans = set
                    .plans()
                    .map(|p| p.plan.keys().cloned().collect::<Vec<_>>().join(", "))
                    .unwrap_or_else(|| "none (every pack applies to every patient)".into());
                println!(
                    "rule set OK: {} pack(s), {} rule(s); care plans: {plans}",
                    set.packs().len(),
                    set.rules().len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprint!("{e}");
                Ok(ExitCode::from(2))
            }
        },
        RulesCommand::Test(args) => test(args),
        RulesCommand::WhatIf(_) => {
            bail!("rules what-if needs the store: run it with the gateway's configuration")
        }
    }
}

/// `rules` commands that read the store: `what-if`.
pub fn rules_on_store(config: &Config, cmd: RulesCommand) -> anyhow::Result<ExitCode> {
    let RulesCommand::WhatIf(args) = cmd else {
        return rules(cmd);
    };
    let set = match RuleSet::load_dir(&args.rules) {
        Ok(s) => s,
        Err(e) => {
            eprint!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let (since, until) = period(args.since.as_deref(), args.until.as_deref())?;
    let conn = crate::rules::whatif::open_read_only(&config.store.path)
        .with_context(|| format!("opening {} read-only", config.store.path.display()))?;
    let engine = alerting_rules::Engine::with_config(
        set.clone(),
        crate::rules::engine_config(&config.rules),
    );
    let report = crate::rules::whatif::what_if(
        &conn,
        &engine,
        &crate::rules::whatif::WhatIfQuery {
            since,
            until,
            patient: args.patient,
        },
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", crate::rules::whatif::render(&report, &set));
    }
    Ok(ExitCode::SUCCESS)
}

fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let set = match load_rule_set(args.rules.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprint!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let text = std::fs::read_to_string(&args.readings)
        .with_context(|| format!("reading {}", args.readings.display()))?;
    let json_lines = matches!(
        args.readings.extension().and_then(|e| e.to_str()),
        Some("jsonl" | "ndjson" | "json")
    ) || text.trim_start().starts_with('{');
    let parsed = if json_lines {
        parse_json_lines(&text)
    } else {
        parse_csv(&text)
    };
    let readings = match parsed {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: {e}", args.readings.display());
            return Ok(ExitCode::from(2));
        }
    };
    let until = match &args.until {
        Some(u) => Some(
            DateTime::parse_from_rfc3339(u)
                .with_context(|| format!("--until `{u}` is not RFC 3339 (2025-03-01T08:00:00Z)"))?
                .with_timezone(&Utc),
        ),
        None => None,
    };
    let mut opts = ReplayOptions::default();
    if let Some(p) = &args.overrides {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        opts.overrides = serde_json::from_str(&text)
            .with_context(|| format!("{}: overrides by patient", p.display()))?;
        for (patient, o) in &opts.overrides {
            if let Err(errs) = o.validate(&set) {
                for e in errs {
                    eprintln!("{}: patient {patient}: {e}", p.display());
                }
                return Ok(ExitCode::from(2));
            }
        }
    }
    for ev in replay_with(&set, readings, until, &opts) {
        if args.json {
            println!("{}", ev.to_json_line());
            continue;
        }
        println!("{ev}");
        for e in &ev.evidence {
            println!(
                "    evidence: {} {} {} measured {} (reading {})",
                e.metric,
                round(e.value),
                e.metric.canonical_unit(),
                e.measured_at.format("%Y-%m-%dT%H:%M:%SZ"),
                e.reading_id
            );
        }
        for (name, l) in &ev.limits {
            let flag = if l.overridden { " (override)" } else { "" };
            println!("    limit: {name} = {}{flag}", l.display);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn audit(
    tx: &Transaction<'_>,
    action: &str,
    resource: &str,
    patient: Option<&str>,
) -> anyhow::Result<()> {
    crate::store::audit::append(
        tx,
        &crate::store::audit::AuditEntry::cli(action, resource, patient),
    )?;
    Ok(())
}

/// A change made here is a run-time change: config must not undo it.
fn change_patient(
    config: &Config,
    patient: &str,
    change: &PatientChange,
    action: &str,
) -> anyhow::Result<patients::PatientRecord> {
    let mut store = runtime::open_store(config)?;
    if crate::store::share::is_hub_owned_patient(store.conn(), patient)? {
        anyhow::bail!("patient `{patient}`: the program hub owns it (this gateway is a home box applying the hub's share); change it at the hub");
    }
    let tx = store.transaction()?;
    patients::upsert(&tx, patient, "cli", change)?;
    patients::claim_from_config(&tx, patient, "cli")?;
    audit(&tx, action, &format!("patients/{patient}"), Some(patient))?;
    let p = patients::get(&tx, patient)?.context("patient vanished")?;
    tx.commit()?;
    Ok(p)
}

fn rule_set(config: &Config) -> anyhow::Result<RuleSet> {
    load_rule_set(config.rules.dir.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// `patients ...`
pub fn patients_cmd(config: &Config, cmd: PatientsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PatientsCommand::Enrol {
            patient,
            plans,
            team,
        } => {
            let set = rule_set(config)?;
            if let Some(known) = set.plans() {
                for p in &plans {
                    if !known.is_known(p) {
                        let names: Vec<&str> = known.plan.keys().map(String::as_str).collect();
                        bail!("unknown care plan `{p}` (known: {})", names.join(", "));
                    }
                }
            }
            let change = PatientChange {
                care_plans: Some(plans),
                care_team: team.map(Some),
                ..Default::default()
            };
            let p = change_patient(config, &patient, &change, "patient.enrol")?;
            println!("enrolled {} on [{}]", p.patient_id, p.care_plans.join(", "));
        }
        PatientsCommand::SetOverrides { patient, overrides } => {
            let text = if overrides.trim_start().starts_with('{') {
                overrides
            } else {
                std::fs::read_to_string(Path::new(&overrides))
                    .with_context(|| format!("reading {overrides}"))?
            };
            let value: serde_json::Value =
                serde_json::from_str(&text).context("overrides are not JSON")?;
            let parsed: Overrides =
                serde_json::from_value(value.clone()).context("overrides do not parse")?;
            let set = rule_set(config)?;
            if let Err(errs) = parsed.validate(&set) {
                let msg: Vec<String> = errs.iter().map(ToString::to_string).collect();
                bail!("overrides refused:\n  {}", msg.join("\n  "));
            }
            let change = PatientChange {
                overrides: Some(value),
                ..Default::default()
            };
            change_patient(config, &patient, &change, "patient.set_overrides")?;
            println!("overrides of {patient} saved ({} rule(s))", parsed.0.len());
        }
        PatientsCommand::SetTeam { patient, team } => {
            let change = PatientChange {
                care_team: Some(team.clone()),
                ..Default::default()
            };
            change_patient(config, &patient, &change, "patient.set_team")?;
            match team {
                Some(t) => println!("care team of {patient}: {t}"),
                None => println!("care team of {patient} cleared"),
            }
        }
        PatientsCommand::SetTimeZone { patient, zone } => {
            if let Some(z) = &zone {
                crate::care::config::parse_time_zone(z).map_err(|e| anyhow::anyhow!(e))?;
            }
            let change = PatientChange {
                time_zone: Some(zone.clone()),
                ..Default::default()
            };
            change_patient(config, &patient, &change, "patient.set_time_zone")?;
            match zone {
                Some(z) => println!("time zone of {patient}: {z}"),
                None => println!("time zone of {patient} cleared (the care team's applies)"),
            }
        }
        PatientsCommand::SetMonitoringStart { patient, date } => {
            let parsed = date
                .as_deref()
                .map(|d| {
                    chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
                        .with_context(|| format!("`{d}` is not a local date like 2026-10-15"))
                })
                .transpose()?;
            let change = PatientChange {
                monitoring_start: Some(parsed),
                ..Default::default()
            };
            change_patient(config, &patient, &change, "patient.set_monitoring_start")?;
            match parsed {
                Some(d) => println!("monitoring start of {patient}: {d}"),
                None => println!(
                    "monitoring start of {patient} cleared (the first automatically transmitted reading's date applies)"
                ),
            }
        }
        PatientsCommand::List { json } => {
            let store = runtime::open_store(config)?;
            let mut after: Option<String> = None;
            loop {
                let page = patients::list(store.conn(), after.as_deref(), None, 500)?;
                let Some(last) = page.last() else { break };
                after = Some(last.patient_id.clone());
                for p in &page {
                    if json {
                        println!("{}", serde_json::to_string(p)?);
                    } else {
                        println!(
                            "{:<24} plans [{}] team {} overrides {} ({})",
                            p.patient_id,
                            p.care_plans.join(", "),
                            p.care_team.as_deref().unwrap_or("-"),
                            p.overrides.as_object().map_or(0, |o| o.len()),
                            p.origin
                        );
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn line(a: &AlertRecord) -> String {
    let mut flags = Vec::new();
    if a.late {
        flags.push("late");
    }
    if a.flapping {
        flags.push("flapping");
    }
    let flags = if flags.is_empty() {
        String::new()
    } else {
        format!(" [{}]", flags.join(", "))
    };
    format!(
        "{} {} {:<12} {:<8} {} patient={} v{}: {}{flags}",
        a.alert_id,
        a.fired_at.format("%Y-%m-%dT%H:%M:%SZ"),
        a.status,
        a.severity,
        a.rule_id,
        a.patient_id,
        a.rule_version,
        a.message
    )
}

/// A report period from `--since` / `--until` (RFC 3339 or a date):
/// by default the 30 days up to now.
pub(crate) fn period(
    since: Option<&str>,
    until: Option<&str>,
) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)> {
    let parse = |name: &str, v: &str| {
        crate::rules::burden::parse_bound(v)
            .with_context(|| format!("--{name} `{v}` is not RFC 3339 or YYYY-MM-DD"))
    };
    let until = match until {
        Some(u) => parse("until", u)?,
        None => Utc::now(),
    };
    let since = match since {
        Some(s) => parse("since", s)?,
        None => until - chrono::TimeDelta::days(30),
    };
    if since >= until {
        bail!("--since must be before --until");
    }
    Ok((since, until))
}

/// `alerts ...`
pub fn alerts_cmd(config: &Config, cmd: AlertsCommand) -> anyhow::Result<ExitCode> {
    let mut store = runtime::open_store(config)?;
    match cmd {
        AlertsCommand::List {
            status,
            patient,
            limit,
            json,
        } => {
            if let Some(s) = &status {
                if !["firing", "acknowledged", "resolved", "open"].contains(&s.as_str()) {
                    bail!("--status must be firing, acknowledged, resolved or open");
                }
            }
            let rows = alerts::list(
                store.conn(),
                &AlertFilter {
                    status,
                    patient_id: patient,
                    limit,
                },
            )?;
            for a in rows {
                if json {
                    println!("{}", serde_json::to_string(&a)?);
                } else {
                    println!("{}", line(&a));
                }
            }
        }
        AlertsCommand::Show { id, json } => {
            let a = alerts::get(store.conn(), &id)?.with_context(|| format!("no alert `{id}`"))?;
            let history = alerts::history(store.conn(), &id)?;
            if json {
                println!("{}", serde_json::json!({ "alert": a, "history": history }));
            } else {
                println!("{}", line(&a));
                if let Some(m) = a.measured_at {
                    println!("  measured at  {}", m.format("%Y-%m-%dT%H:%M:%SZ"));
                }
                if let (Some(by), Some(at)) = (&a.acknowledged_by, a.acknowledged_at) {
                    println!(
                        "  acknowledged by {by} at {}",
                        at.format("%Y-%m-%dT%H:%M:%SZ")
                    );
                }
                if let Some(s) = a.snooze_until {
                    println!("  snoozed until {}", s.format("%Y-%m-%dT%H:%M:%SZ"));
                }
                if let Some(r) = a.resolved_at {
                    println!(
                        "  resolved at {} by {}",
                        r.format("%Y-%m-%dT%H:%M:%SZ"),
                        a.resolved_by.as_deref().unwrap_or("the rule (cleared)")
                    );
                }
                println!("  limits   {}", a.limits);
                for e in a.evidence.as_array().into_iter().flatten() {
                    println!(
                        "  evidence {} {} {} ({}) measured {} reading {}",
                        e["metric"].as_str().unwrap_or(""),
                        e["value"],
                        e["unit"].as_str().unwrap_or(""),
                        e["loinc"].as_str().unwrap_or(""),
                        e["measured_at"].as_str().unwrap_or(""),
                        e["reading_id"].as_str().unwrap_or("")
                    );
                }
                println!("  history:");
                for h in history {
                    println!(
                        "    {} {:<12} {}{}{}",
                        h.at.format("%Y-%m-%dT%H:%M:%SZ"),
                        h.kind,
                        if h.notified { "notified" } else { "silent" },
                        h.actor.map(|a| format!(" by {a}")).unwrap_or_default(),
                        h.detail["note"]
                            .as_str()
                            .map(|n| format!(" ({n})"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        AlertsCommand::Ack {
            id,
            by,
            note,
            snooze,
        } => {
            let snooze = match snooze {
                Some(s) => Some(
                    s.parse::<RuleDuration>()
                        .map_err(|e| anyhow::anyhow!("--snooze: {e}"))?
                        .delta(),
                ),
                None => None,
            };
            let tx = store.transaction()?;
            let a = lifecycle::acknowledge_in(&tx, &id, &by, note.as_deref(), snooze, Utc::now())?;
            audit(
                &tx,
                "alert.acknowledge",
                &format!("alerts/{id}"),
                Some(&a.patient_id),
            )?;
            tx.commit()?;
            println!("{}", line(&a));
        }
        AlertsCommand::Burden {
            since,
            until,
            care_team,
            json,
        } => {
            let (since, until) = period(since.as_deref(), until.as_deref())?;
            let r = crate::rules::burden::burden(
                store.conn(),
                &crate::rules::burden::BurdenQuery {
                    since,
                    until,
                    care_team,
                    scope: None,
                },
            )?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print!("{}", crate::rules::burden::render(&r));
            }
        }
        AlertsCommand::Resolve { id, by, note } => {
            let tx = store.transaction()?;
            let a = lifecycle::resolve_in(&tx, &id, &by, note.as_deref(), Utc::now())?;
            audit(
                &tx,
                "alert.resolve",
                &format!("alerts/{id}"),
                Some(&a.patient_id),
            )?;
            tx.commit()?;
            println!("{}", line(&a));
        }
    }
    Ok(ExitCode::SUCCESS)
}
