//! The code assignment against hand-written ground truth (tables), and the
//! day and period counting on real SQLite files across a DST change (Los
//! Angeles, November 2026) and in Auckland.

use super::*;
use crate::care::config::CareConfig;
use crate::store::patients::PatientChange;
use crate::store::Store;

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// Expected codes and units.
type Want = &'static [(&'static str, u32)];
/// Expected periods: (number, first day, last day).
type WantPeriods = &'static [(u32, &'static str, &'static str)];

fn codes(us: &[Units]) -> Vec<(&'static str, u32)> {
    us.iter().map(|u| (u.code.as_str(), u.units)).collect()
}

#[test]
fn device_codes_by_data_days() {
    // (data days, first period of the episode with 2 days, codes)
    let table: &[(u32, bool, Want)] = &[
        (0, false, &[]),
        (1, false, &[]),
        (1, true, &[]),
        (2, false, &[("99445", 1)]),
        (2, true, &[("99453", 1), ("99445", 1)]),
        (15, false, &[("99445", 1)]),
        (16, false, &[("99454", 1)]),
        (16, true, &[("99453", 1), ("99454", 1)]),
        (30, false, &[("99454", 1)]),
    ];
    for &(days, first, want) in table {
        assert_eq!(
            codes(&device_codes(days, first)),
            want,
            "{days} days, first {first}"
        );
    }
}

#[test]
fn treatment_codes_by_minutes_and_contact() {
    // (minutes, interactive contacts, codes)
    let table: &[(u32, u32, Want)] = &[
        (0, 0, &[]),
        (45, 0, &[]),
        (9, 1, &[]),
        (10, 1, &[("99470", 1)]),
        (19, 3, &[("99470", 1)]),
        (20, 1, &[("99457", 1)]),
        (39, 1, &[("99457", 1)]),
        (40, 1, &[("99457", 1), ("99458", 1)]),
        (59, 1, &[("99457", 1), ("99458", 1)]),
        (60, 2, &[("99457", 1), ("99458", 2)]),
        (125, 1, &[("99457", 1), ("99458", 5)]),
    ];
    for &(minutes, contacts, want) in table {
        assert_eq!(
            codes(&treatment_codes(minutes, contacts)),
            want,
            "{minutes} min, {contacts} contact(s)"
        );
    }
}

#[test]
fn periods_are_reported_in_the_month_they_end() {
    // (monitoring start, month, [(number, start, end)])
    let table: &[(&str, &str, WantPeriods)] = &[
        ("2026-11-01", "2026-11", &[(1, "2026-11-01", "2026-11-30")]),
        ("2026-11-02", "2026-11", &[]),
        (
            "2026-11-02",
            "2026-12",
            &[
                (1, "2026-11-02", "2026-12-01"),
                (2, "2026-12-02", "2026-12-31"),
            ],
        ),
        ("2026-10-03", "2026-11", &[(1, "2026-10-03", "2026-11-01")]),
        ("2026-08-01", "2026-11", &[(4, "2026-10-30", "2026-11-28")]),
        // February (28 days) can hold no period end at all.
        ("2026-01-01", "2026-02", &[]),
        (
            "2026-01-01",
            "2026-03",
            &[
                (2, "2026-01-31", "2026-03-01"),
                (3, "2026-03-02", "2026-03-31"),
            ],
        ),
        ("2026-12-15", "2026-11", &[]),
    ];
    for &(start, month, want) in table {
        let m = parse_month(month).unwrap();
        let got = periods_ending_in(d(start), m, month_last(m));
        let want: Vec<(u32, NaiveDate, NaiveDate)> =
            want.iter().map(|&(n, a, b)| (n, d(a), d(b))).collect();
        assert_eq!(got, want, "start {start}, month {month}");
    }
    assert!(parse_month("2026-13").is_err());
    assert!(parse_month("2026-1").is_err());
    assert!(parse_month("november").is_err());
    assert_eq!(month_last(d("2026-12-01")), d("2026-12-31"));
}

#[test]
fn assessment_from_facts() {
    let days = |list: &[&str]| list.iter().map(|s| d(s)).collect::<BTreeSet<_>>();
    let nov = d("2026-11-01");
    let today = d("2026-12-05");
    // 16 days in period 2 (Oct 31 - Nov 29), 20 interactive minutes and 25 not.
    let f = Facts {
        start: Some((d("2026-10-01"), true)),
        data_days: days(&[
            "2026-10-31",
            "2026-11-01",
            "2026-11-02",
            "2026-11-03",
            "2026-11-04",
            "2026-11-05",
            "2026-11-06",
            "2026-11-07",
            "2026-11-08",
            "2026-11-09",
            "2026-11-10",
            "2026-11-11",
            "2026-11-12",
            "2026-11-13",
            "2026-11-14",
            "2026-11-29",
        ]),
        manual_days: days(&["2026-11-20", "2026-11-01"]),
        first_qualifying: Some(1),
        care: vec![(20 * 60, true), (25 * 60, false), (0, true)],
    };
    let (periods, month, warnings) = assess(nov, today, &f);
    assert_eq!(periods.len(), 1);
    let p = &periods[0];
    assert_eq!(
        (p.number, p.start, p.end),
        (2, d("2026-10-31"), d("2026-11-29"))
    );
    assert_eq!((p.data_days, p.manual_only_days, p.complete), (16, 1, true));
    assert_eq!(codes(&p.codes), vec![("99454", 1)]);
    assert_eq!(month.data_days, 15);
    assert_eq!((month.care_minutes, month.interactive_minutes), (45, 20));
    assert_eq!((month.interactive_contacts, month.entries), (1, 2));
    assert_eq!(codes(&month.codes), vec![("99457", 1), ("99458", 1)]);
    let w: Vec<&str> = warnings.iter().map(|w| w.code).collect();
    assert_eq!(w, vec!["manual_readings_not_counted"]);

    // Minutes without a live contact, a period in progress with one day.
    let f = Facts {
        start: Some((d("2026-11-01"), false)),
        data_days: days(&["2026-11-03"]),
        first_qualifying: None,
        care: vec![(30 * 60, false)],
        ..Default::default()
    };
    let (periods, month, warnings) = assess(nov, d("2026-11-20"), &f);
    assert_eq!(codes(&periods[0].codes), vec![]);
    assert!(!periods[0].complete);
    assert!(month.codes.is_empty());
    let w: Vec<&str> = warnings.iter().map(|w| w.code).collect();
    assert_eq!(
        w,
        vec![
            "few_data_days",
            "period_in_progress",
            "minutes_without_interactive_contact"
        ]
    );

    // Data but no contact; no period ends this month for the other.
    let f = Facts {
        start: Some((d("2026-10-03"), true)),
        data_days: days(&["2026-10-03", "2026-10-04"]),
        first_qualifying: Some(1),
        care: vec![(5 * 60, true)],
        ..Default::default()
    };
    let (periods, month, warnings) = assess(d("2026-10-01"), today, &f);
    assert!(periods.is_empty());
    assert!(month.codes.is_empty());
    let w: Vec<&str> = warnings.iter().map(|w| w.code).collect();
    assert_eq!(
        w,
        vec!["no_period_ends_this_month", "minutes_below_threshold"]
    );
    let (_, _, warnings) = assess(nov, today, &Facts::default());
    assert_eq!(warnings[0].code, "no_device_data");
}

fn ms(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
}

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    n: u32,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        World {
            _dir: dir,
            store,
            n: 0,
        }
    }

    fn patient(&mut self, id: &str, team: Option<&str>, zone: Option<&str>, start: Option<&str>) {
        self.store
            .upsert_patient(
                id,
                "cli",
                &PatientChange {
                    care_team: Some(team.map(str::to_string)),
                    time_zone: Some(zone.map(str::to_string)),
                    monitoring_start: Some(start.map(d)),
                    ..Default::default()
                },
            )
            .unwrap();
    }

    fn reading(&mut self, patient: &str, device: &str, at: &str, manual: bool) {
        self.n += 1;
        let annotations = if manual {
            r#"{"entry":"manual"}"#
        } else {
            "{}"
        };
        self.store
            .conn()
            .execute(
                "INSERT INTO readings (reading_id, group_id, patient_id, device_id, metric, value, unit, loinc,
                     measured_at, received_at, committed_at, source, annotations)
                 VALUES (?1, ?1, ?2, ?3, 'body_weight', 80, 'kg', '29463-7', ?4, ?4, ?4, 'http', ?5)",
                rusqlite::params![format!("r{}", self.n), patient, device, ms(at), annotations],
            )
            .unwrap();
    }

    fn care(&mut self, patient: &str, at: &str, minutes: i64, interactive: bool) {
        self.n += 1;
        let tx = self.store.transaction().unwrap();
        care_time::insert(
            &tx,
            &care_time::CareTimeRow {
                seq: 0,
                entry_id: format!("e{}", self.n),
                patient_id: patient.into(),
                activity: "patient_call".into(),
                seconds: minutes * 60,
                performed_at: ms(at),
                ended_at: None,
                interactive,
                note: None,
                recorded_by: "cli".into(),
                recorded_at: ms(at),
                corrects: None,
                superseded_by: None,
                request_digest: String::new(),
            },
        )
        .unwrap();
        tx.commit().unwrap();
    }

    fn report(&self, care: &CareConfig, month: &str, scope: Option<Vec<String>>) -> RpmReport {
        rpm_report(
            self.store.conn(),
            care,
            &RpmQuery {
                month: parse_month(month).unwrap(),
                care_team: None,
                scope,
                now: Utc.with_ymd_and_hms(2026, 12, 5, 0, 0, 0).unwrap(),
            },
        )
        .unwrap()
    }
}

fn care_config() -> CareConfig {
    toml::from_str("time_zone = \"UTC\"\n[teams.west]\ntime_zone = \"America/Los_Angeles\"\n")
        .unwrap()
}

/// November 2026 in Los Angeles: DST ends on Sunday 1 November, whose
/// local day is 25 hours long; days, periods and months are local.
#[test]
fn los_angeles_days_follow_the_dst_change() {
    let mut w = World::new();
    // The team's zone applies (the patient has none of their own).
    w.patient("la", Some("west"), None, Some("2026-10-03"));
    // Oct 2 23:30 PDT: the day before the episode, not counted.
    w.reading("la", "cuff", "2026-10-03T06:30:00Z", false);
    // Oct 3: two devices, one day.
    w.reading("la", "cuff", "2026-10-03T16:00:00Z", false);
    w.reading("la", "scale", "2026-10-03T18:00:00Z", false);
    // Oct 10: typed in by hand only.
    w.reading("la", "cuff", "2026-10-10T16:00:00Z", true);
    // Nov 1 23:45 PST (Nov 2 in UTC): still period 1's last local day.
    w.reading("la", "cuff", "2026-11-02T07:45:00Z", false);
    // Nov 2 00:30 PST: period 2.
    w.reading("la", "cuff", "2026-11-02T08:30:00Z", false);
    // Care time: Oct 31 23:30 PDT is October's; Nov 30 23:30 PST is November's.
    w.care("la", "2026-11-01T06:30:00Z", 10, false);
    w.care("la", "2026-12-01T07:30:00Z", 15, true);

    let r = w.report(&care_config(), "2026-11", None);
    let p = &r.patients[0];
    assert_eq!(
        (p.time_zone.as_str(), p.time_zone_from),
        ("America/Los_Angeles", "care_team")
    );
    assert_eq!(p.monitoring_start_from, Some("patient"));
    assert_eq!(p.periods.len(), 1);
    let per = &p.periods[0];
    assert_eq!(
        (per.number, per.start, per.end),
        (1, d("2026-10-03"), d("2026-11-01"))
    );
    // Oct 3 and Nov 1 (local): in UTC it would be Oct 3 and Nov 2.
    assert_eq!((per.data_days, per.manual_only_days), (2, 1));
    assert_eq!(codes(&per.codes), vec![("99453", 1), ("99445", 1)]);
    assert_eq!(p.month.data_days, 2);
    assert_eq!(
        (p.month.care_minutes, p.month.interactive_contacts),
        (15, 1)
    );
    assert_eq!(codes(&p.month.codes), vec![("99470", 1)]);
    assert_eq!(
        codes(&p.codes),
        vec![("99453", 1), ("99445", 1), ("99470", 1)]
    );
    // October holds no period end of this patient; its care minute entry
    // of Oct 31 (local) is October's.
    let oct = w.report(&care_config(), "2026-10", None);
    assert!(oct.patients[0].periods.is_empty());
    assert_eq!(oct.patients[0].month.care_minutes, 10);
}

/// A patient in Auckland (UTC+13 in November): the episode starts on the
/// local date of the first automatic reading; a manual one before it does
/// not start it.
#[test]
fn auckland_starts_on_the_local_date_of_the_first_automatic_reading() {
    let mut w = World::new();
    w.patient("akl", Some("west"), Some("Pacific/Auckland"), None);
    w.reading("akl", "app", "2026-10-20T00:00:00Z", true);
    // Nov 1 01:30 NZDT (Oct 31 in UTC).
    w.reading("akl", "cuff", "2026-10-31T12:30:00Z", false);
    // Nov 30 23:59 NZDT, then Dec 1 00:30 NZDT.
    w.reading("akl", "cuff", "2026-11-30T10:59:00Z", false);
    w.reading("akl", "cuff", "2026-11-30T11:30:00Z", false);
    let r = w.report(&care_config(), "2026-11", None);
    let p = &r.patients[0];
    assert_eq!(
        (p.time_zone.as_str(), p.time_zone_from),
        ("Pacific/Auckland", "patient")
    );
    assert_eq!(p.monitoring_start, Some(d("2026-11-01")));
    assert_eq!(p.monitoring_start_from, Some("first_reading"));
    let per = &p.periods[0];
    assert_eq!(
        (per.start, per.end, per.data_days),
        (d("2026-11-01"), d("2026-11-30"), 2)
    );
    assert_eq!(codes(&per.codes), vec![("99453", 1), ("99445", 1)]);
    assert!(p
        .warnings
        .iter()
        .any(|w| w.code == "no_interactive_contact"));
}

/// Set-up goes with the episode's first period with 2 data days, however
/// far back it was; scope limits the patients like the other reports.
#[test]
fn setup_is_once_per_episode_and_scope_limits_patients() {
    let mut w = World::new();
    w.patient("early", Some("north"), None, Some("2026-08-01"));
    w.patient("late", Some("south"), None, Some("2026-08-01"));
    w.patient("nobody", None, None, None);
    for at in ["2026-08-01T10:00:00Z", "2026-08-02T10:00:00Z"] {
        w.reading("early", "cuff", at, false);
    }
    // One day in each of periods 1 to 3, then three in period 4.
    for at in [
        "2026-08-05T10:00:00Z",
        "2026-09-05T10:00:00Z",
        "2026-10-05T10:00:00Z",
        "2026-11-01T10:00:00Z",
        "2026-11-02T10:00:00Z",
        "2026-11-03T10:00:00Z",
    ] {
        w.reading("late", "cuff", at, false);
    }
    // Period 4 (Oct 30 - Nov 28) of `early`: 16 days.
    for day in 1..=16 {
        w.reading(
            "early",
            "cuff",
            &format!("2026-11-{day:02}T10:00:00Z"),
            false,
        );
    }
    let r = w.report(&care_config(), "2026-11", None);
    let by = |id: &str| r.patients.iter().find(|p| p.patient_id == id).unwrap();
    assert_eq!(codes(&by("early").periods[0].codes), vec![("99454", 1)]);
    assert_eq!(by("early").periods[0].number, 4);
    assert_eq!(
        codes(&by("late").periods[0].codes),
        vec![("99453", 1), ("99445", 1)]
    );
    assert_eq!(by("nobody").warnings[0].code, "no_device_data");
    let t = |c: &str| {
        r.totals
            .iter()
            .find(|t| t.code.as_str() == c)
            .map(|t| (t.patients, t.units))
            .unwrap()
    };
    assert_eq!(
        (t("99453"), t("99445"), t("99454")),
        ((1, 1), (1, 1), (1, 1))
    );

    let north = w.report(&care_config(), "2026-11", Some(vec!["north".into()]));
    let ids: Vec<&str> = north
        .patients
        .iter()
        .map(|p| p.patient_id.as_str())
        .collect();
    assert_eq!(ids, vec!["early"]);

    let csv = to_csv(&r);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("# Data-sufficiency report"), "{csv}");
    assert_eq!(lines[1], CSV_HEADER);
    assert!(
        lines.contains(&"2026-11,late,south,UTC,device_period,4,2026-10-30,2026-11-28,true,3,0,,,,1,1,0,0,0,0,"),
        "{csv}"
    );
    assert!(render(&r).contains("not billing advice") || render(&r).contains("Not billing advice"));
}

#[test]
fn csv_cells_never_read_as_formulas() {
    assert_eq!(super::csv_field("north"), "north");
    assert_eq!(
        super::csv_field("=HYPERLINK(\"x\")"),
        "\"'=HYPERLINK(\"\"x\"\")\""
    );
    assert_eq!(super::csv_field("+1"), "'+1");
    assert_eq!(super::csv_field("a,b"), "\"a,b\"");
}
