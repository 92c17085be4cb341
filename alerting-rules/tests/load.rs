//! Loading: every bundled pack validates; broken files give file, line and
//! field; all errors of a rule set come back at once.

use alerting_rules::load::SourceFile;
use alerting_rules::ruleset::{BUNDLED_PACKS, BUNDLED_PLANS};
use alerting_rules::{FileError, RuleSet, Severity};

fn load(files: &[(&str, &str)]) -> Result<RuleSet, Vec<FileError>> {
    let srcs: Vec<SourceFile> = files.iter().map(|(n, t)| SourceFile::new(*n, *t)).collect();
    RuleSet::from_sources(&srcs, None).map_err(|e| e.errors)
}

/// A pack file `name` of rules given as `(id, message, condition lines)`.
/// Every rule takes eight lines, a blank one first: rule `i` (from 0) has
/// `[[rule]]` on line `4 + 8 * i`, its id one line below, its message on
/// `8 + 8 * i` and its condition from `10 + 8 * i`.
fn pack(name: &str, rules: &[(&str, &str, &str)]) -> String {
    let mut text = format!("pack = \"{name}\"\nversion = 1\n");
    for (id, message, condition) in rules {
        text.push_str(&format!(
            "\n[[rule]]\nid = \"{id}\"\nversion = 1\nseverity = \"info\"\nmessage = \"{message}\"\nsource = \"s\"\n{condition}\n"
        ));
    }
    text
}

#[test]
fn every_bundled_pack_validates_on_its_own() {
    for (name, text) in BUNDLED_PACKS {
        if text.contains("[[tier]]") {
            // Tier packs name rules of the others: checked with them all.
            let set = RuleSet::bundled().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!set.tiers().is_empty(), "{name}");
            assert!(set.tiers().rules().iter().all(|t| !t.source.is_empty()));
            assert!(text.contains("not medical advice"), "{name}");
            continue;
        }
        let set = load(&[(name, text)]).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert!(!set.rules().is_empty(), "{name}");
        for r in set.rules() {
            assert!(!r.source.is_empty(), "{}", r.id);
        }
        assert!(
            text.contains("not medical advice"),
            "{name} lacks the header statement"
        );
    }
}

#[test]
fn bundled_set_with_plans_validates() {
    let set = RuleSet::bundled().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.packs().len(), BUNDLED_PACKS.len());
    assert!(BUNDLED_PLANS.1.contains("not medical advice"));
    let crisis = set.get("htn.crisis").unwrap();
    assert_eq!(crisis.severity, Severity::Critical);
    let plans = set.plans().unwrap();
    for p in ["heart-failure", "hypertension", "diabetes", "copd"] {
        assert!(plans.is_known(p), "{p}");
        let ids: Vec<&str> = set.rules_for(&[p]).iter().map(|r| r.id.as_str()).collect();
        assert!(
            ids.contains(&"fever") && ids.contains(&"adherence.no-data-3d"),
            "{p}: {ids:?}"
        );
    }
    let copd: Vec<&str> = set
        .rules_for(&["copd", "heart-failure"])
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    assert!(
        copd.contains(&"copd.spo2-low") && !copd.contains(&"spo2.low"),
        "{copd:?}"
    );
    let hf: Vec<&str> = set
        .rules_for(&["heart-failure"])
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    assert!(hf.contains(&"spo2.low") && hf.contains(&"hf.weight-gain-24h"));
}

/// A patient's rules are every rule of the packs their plans bring, in
/// load order, whichever plans they are on (found a pack at a time).
#[test]
fn a_patient_s_rules_are_those_of_their_packs_in_order() {
    let set = RuleSet::bundled().unwrap_or_else(|e| panic!("{e}"));
    let plans = set.plans().unwrap();
    let names: Vec<&String> = plans.plan.keys().collect();
    for mask in 0u32..(1 << names.len()) {
        let chosen: Vec<&str> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, n)| n.as_str())
            .collect();
        let packs = plans.packs_for(&chosen);
        let expected: Vec<&str> = set
            .rules()
            .iter()
            .filter(|r| packs.contains(&r.pack))
            .map(|r| r.id.as_str())
            .collect();
        let found: Vec<&str> = set.each_rule_for(&chosen).map(|r| r.id.as_str()).collect();
        assert_eq!(found, expected, "{chosen:?}");
    }
    // Without a plans file, every rule.
    let packs: Vec<SourceFile> = BUNDLED_PACKS
        .iter()
        .map(|(n, t)| SourceFile::new(*n, *t))
        .collect();
    let all = RuleSet::from_sources(&packs, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(all.each_rule_for(&["copd"]).count(), all.rules().len());
}

#[test]
fn load_dir_reads_packs_and_plans() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in BUNDLED_PACKS {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    std::fs::write(dir.path().join(BUNDLED_PLANS.0), BUNDLED_PLANS.1).unwrap();
    let set = RuleSet::load_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.rules().len(), RuleSet::bundled().unwrap().rules().len());
    assert!(set.plans().is_some());
}

fn broken() -> String {
    pack(
        "test",
        &[
            (
                "t.ok",
                "ok {value}",
                r#"threshold = { metric = "systolic", op = ">", limit = "180 mm[Hg]" }"#,
            ),
            (
                "t.bad-unit",
                "x",
                r#"threshold = { metric = "systolic", op = ">", limit = "80 kg" }"#,
            ),
            (
                "t.bad-op",
                "x",
                r#"threshold = { metric = "systolic", op = "=>", limit = "80 mm[Hg]" }"#,
            ),
            (
                "t.bad-field",
                "x",
                r#"threshhold = { metric = "systolic", op = ">", limit = "80 mm[Hg]" }"#,
            ),
            (
                "t.bad-placeholder",
                "value {vaule}",
                r#"threshold = { metric = "systolic", op = ">", limit = "80 mm[Hg]" }"#,
            ),
        ],
    )
}

#[test]
fn broken_file_reports_file_line_and_field_for_every_error() {
    let errs = load(&[("broken.toml", &broken())]).unwrap_err();
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(errs.len(), 4, "{text:#?}");
    let find = |field: &str| {
        errs.iter()
            .find(|e| e.field == field)
            .unwrap_or_else(|| panic!("no error for {field}: {text:#?}"))
    };

    let unit = find("rule[1].threshold.limit");
    assert_eq!(
        (unit.file.to_str().unwrap_or_default(), unit.line),
        ("broken.toml", 18),
        "{unit}"
    );
    assert!(unit.message.contains("cannot measure systolic"), "{unit}");

    let op = find("rule[2].threshold.op");
    assert_eq!(op.line, 26, "{op}");
    assert!(op.message.contains("=>"), "{op}");

    let field = find("rule[3].threshhold");
    assert_eq!(field.line, 34, "{field}");
    assert!(field.message.contains("unknown field"), "{field}");

    let ph = find("rule[4].message");
    assert_eq!(ph.line, 40, "{ph}");
    assert!(ph.message.contains("vaule"), "{ph}");
    assert!(unit.to_string().starts_with("broken.toml:18:"), "{unit}");
}

#[test]
fn syntax_error_has_a_line() {
    let errs = load(&[("syntax.toml", "pack = \"x\"\nversion = 1\n[[rule]\n")]).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].line, 3, "{}", errs[0]);
}

fn one() -> String {
    pack(
        "one",
        &[(
            "dup",
            "m",
            r#"threshold = { metric = "spo2", op = "<", limit = 90 }"#,
        )],
    )
}

fn two() -> String {
    pack(
        "two",
        &[(
            "dup",
            "m",
            r#"threshold = { metric = "spo2", op = "<", limit = "90 %" }"#,
        )],
    )
}

#[test]
fn duplicate_ids_across_packs_are_an_error() {
    let errs = load(&[("one.toml", &one()), ("two.toml", &two())]).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(
        (
            errs[0].file.to_str().unwrap_or_default(),
            errs[0].line,
            errs[0].field.as_str()
        ),
        ("two.toml", 5, "id")
    );
    assert!(errs[0].message.contains("one.toml:5"), "{}", errs[0]);
}

#[test]
fn errors_of_several_files_come_back_together() {
    let bad = one().replace("limit = 90", "limit = \"90 mmHg\"");
    let errs = load(&[
        ("a.toml", &bad),
        ("b.toml", &two().replace("\"90 %\"", "\"ninety\"")),
    ])
    .unwrap_err();
    let files: Vec<&str> = errs
        .iter()
        .map(|e| e.file.to_str().unwrap_or_default())
        .collect();
    assert_eq!(files, vec!["a.toml", "b.toml"], "{errs:?}");
}

/// Each row: a rule body that must be refused, and the field the error names.
#[test]
fn semantic_checks_name_the_field() {
    let cases: &[(&str, &str)] = &[
        (r#"threshold = { metric = "spo2", op = "<", limit = "90 %", consecutive = 2, m_of_n = [2, 3] }"#, "rule[0].threshold.consecutive"),
        (r#"threshold = { metric = "spo2", op = "<", limit = "90 %", m_of_n = [4, 3] }"#, "rule[0].threshold.m_of_n"),
        (r#"delta = { metric = "body_weight", op = ">=", limit = "2 lb", window = "400d", baseline = "min" }"#, "rule[0].delta.window"),
        (r#"delta = { metric = "body_weight", op = ">=", limit = "2 lb", window = "7 days", baseline = "min" }"#, "rule[0].delta.window"),
        (r#"average = { metric = "systolic", op = ">=", limit = "135 mmHg", min_readings = 3 }"#, "rule[0].average"),
        (r#"average = { metric = "systolic", op = ">=", limit = "135 mmHg", last = 3, min_readings = 5 }"#, "rule[0].average.min_readings"),
        (r#"slope = { metric = "body_weight", op = ">=", limit = "0.2 kg", window = "7d", min_readings = 1 }"#, "rule[0].slope.min_readings"),
        (r#"threshold = { metric = "pressure", op = "<", limit = "90 %" }"#, "rule[0].threshold.metric"),
        (r#"threshold = { metric = "systolic", op = ">", limit = "180" }"#, "rule[0].threshold.limit"),
        ("threshold = { metric = \"systolic\", op = \">\", limit = \"180 mmHg\" }\nclear = { limit = \"190 mmHg\" }", "rule[0].clear.limit"),
        ("[[rule.all]]\nmissing = { for = \"2d\" }", "rule[0].all[0].missing"),
        ("[[rule.any]]\nname = \"a\"\nthreshold = { metric = \"spo2\", op = \"<\", limit = 90 }\n[[rule.any]]\nname = \"a\"\nthreshold = { metric = \"spo2\", op = \"<\", limit = 80 }", "rule[0].any[1].name"),
        ("", "rule[0]"),
    ];
    for (body, field) in cases {
        let text = pack("t", &[("t.r", "m", body)]);
        let errs = load(&[("t.toml", &text)]).expect_err(body);
        assert!(
            errs.iter().any(|e| e.field == *field && e.line > 0),
            "{body}: expected {field}, got {errs:#?}"
        );
    }
}

#[test]
fn a_limit_in_pounds_is_converted_at_load() {
    let text = pack(
        "t",
        &[(
            "t.lb",
            "{value} {unit} > {limit} {unit}",
            r#"delta = { metric = "body_weight", op = ">=", limit = "2 lb", window = "24h", baseline = "min" }"#,
        )],
    );
    let set = load(&[("t.toml", &text)]).unwrap();
    let p = &set.get("t.lb").unwrap().params["limit"];
    assert!((p.default.unwrap() - 0.907_184_74).abs() < 1e-9);
    assert_eq!(p.display_unit, device_profiles::Unit::Lb);
}

/// The engine asks each rule whether a metric triggers it without
/// collecting the rule's metrics: both answers agree for every bundled rule.
#[test]
fn a_rule_is_triggered_by_exactly_its_metrics() {
    let set = alerting_rules::RuleSet::bundled().unwrap();
    for rule in set.rules() {
        let metrics = rule.condition.metrics();
        for m in device_profiles::Metric::ALL {
            assert_eq!(
                rule.condition.tests(m),
                metrics.contains(&m),
                "{} {m:?}",
                rule.id
            );
        }
    }
}
