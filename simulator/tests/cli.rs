//! The real `rpm-sim` binary, as a vendor or a tester runs it.

use std::process::{Command, Output};

const SIM: &str = env!("CARGO_BIN_EXE_rpm-sim");

fn sim(args: &[&str]) -> Output {
    Command::new(SIM).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// A vendor's own profile (as docs/device-vendors.md shows) and a real payload:
/// accepted, canonical readings printed, exit 0; JSON with `--json`.
#[test]
fn check_accepts_a_good_vendor_payload() {
    let dir = tempfile::tempdir().unwrap();
    let profile = write(
        &dir,
        "zen-cuff.toml",
        r#"
name = "zen-cuff"
description = "Zen BP-1 cuff"
topic = "zen/{device_id}/bp"
format = "json"

[json]
time = "t"
time_format = "unix_ms"
sequence = "n"

[[json.values]]
metric = "systolic"
path = "bp.s"
unit = "kPa"

[[json.values]]
metric = "diastolic"
path = "bp.d"
unit = "kPa"

[[json.values]]
metric = "pulse_rate"
path = "hr"
"#,
    );
    let payload = write(
        &dir,
        "reading.json",
        r#"{"t": 1780000000000, "n": 41, "bp": {"s": 17.3, "d": 10.9}, "hr": 66}"#,
    );
    let args = [
        "check",
        "--profile",
        &profile,
        "--payload",
        &payload,
        "--topic",
        "zen/ZB-0001/bp",
        "--received-at",
        "2026-05-28T21:00:00Z",
    ];
    let out = sim(&args);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("ACCEPTED"), "{text}");
    assert!(
        text.contains("systolic") && text.contains("129.76") && text.contains("mm[Hg]"),
        "{text}"
    );
    assert!(
        text.contains("ZB-0001") && text.contains("sequence: 41"),
        "{text}"
    );

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let out = sim(&json_args);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["accepted"], true);
    let readings = &v["measurements"][0]["group"]["readings"];
    assert_eq!(readings[0]["metric"], "systolic");
    assert_eq!(readings[0]["loinc"], "8480-6");
    assert_eq!(readings[2]["unit"], "/min");
}

/// Bad payloads: exit 1 and the gateway's exact reason, readable and JSON.
#[test]
fn check_refuses_bad_vendor_payloads_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            r#"{"measured_at":"2026-05-28T07:00:00Z","sys":130,"dia":"#,
            "malformed_payload",
        ),
        (
            r#"{"measured_at":"2026-05-28T07:00:00Z","sys":"NaN","dia":80,"unit":"mmHg"}"#,
            "special_value",
        ),
        (
            r#"{"measured_at":"2026-05-28T07:00:00Z","sys":130,"dia":80,"unit":"cmHg"}"#,
            "unknown_unit",
        ),
        (
            r#"{"measured_at":"2026-05-28T07:00:00Z","sys":1300,"dia":80,"unit":"mmHg"}"#,
            "implausible_value",
        ),
    ];
    for (i, (payload, reason)) in cases.iter().enumerate() {
        let p = write(&dir, &format!("p{i}.json"), payload);
        let base = [
            "check",
            "--profile",
            "acme-bp-cuff",
            "--payload",
            &p,
            "--received-at",
            "2026-05-28T08:00:00Z",
        ];
        let out = sim(&base);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "{reason}: {text}");
        assert!(
            text.contains("REFUSED") && text.contains(reason),
            "{reason}: {text}"
        );
        let mut j = base.to_vec();
        j.push("--json");
        let v: serde_json::Value = serde_json::from_slice(&sim(&j).stdout).unwrap();
        assert_eq!(v["accepted"], false);
        let got = v["refused"]["reason"]
            .as_str()
            .or(v["measurements"][0]["reason"].as_str())
            .unwrap();
        assert_eq!(got, *reason);
    }
}

/// Captured GATT bytes: a good Blood Pressure Measurement, a truncated one,
/// an SFLOAT NaN, and a vendor byte layout.
#[test]
fn check_decodes_gatt_bytes() {
    // flags 0 (mmHg, no time), 120 / 80 / 93 as SFLOAT (exponent 0).
    let out = sim(&[
        "check",
        "--gatt",
        "00 78 00 50 00 5D 00",
        "--characteristic",
        "0x2A35",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("systolic") && text.contains("120"), "{text}");

    let out = sim(&["check", "--gatt", "00 78 00 50", "--characteristic", "2A35"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("invalid_gatt"), "{}", stdout(&out));

    // Systolic = SFLOAT NaN (0x07FF).
    let out = sim(&[
        "check",
        "--gatt",
        "00 FF 07 50 00 5D 00",
        "--characteristic",
        "0x2A35",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("special_value"), "{}", stdout(&out));

    let layout = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../device-profiles/profiles/ble/xiaomi-scale-v1.toml"
    );
    let out = sim(&[
        "check",
        "--layout",
        layout,
        "--gatt",
        "22 9E 43 E5 07 04 0B 10 13 01",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("86.55") && text.contains("body_weight"),
        "{text}"
    );
}

/// Usage errors: exit 2 with a message naming the problem.
#[test]
fn check_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let broken = write(&dir, "broken.toml", "name = \"x\"\ntopic = \"a/{device_id}\"\nformat = \"json\"\n[json]\n[[json.values]]\nmetric = \"systolic\"\npath = \"s\"\nunit = \"furlong\"\n");
    let payload = write(&dir, "p.json", "{}");
    let out = sim(&["check", "--profile", &broken, "--payload", &payload]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.toml:8:") && err.contains("furlong"),
        "{err}"
    );

    let out = sim(&["check", "--gatt", "zz", "--characteristic", "0x2A35"]);
    assert_eq!(out.status.code(), Some(2));
    let out = sim(&[
        "check",
        "--profile",
        "acme-bp-cuff",
        "--payload",
        &payload,
        "--topic",
        "other/x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match"));
}

#[test]
fn devices_and_scenarios_list_what_is_emulated() {
    let out = sim(&["devices"]);
    let text = stdout(&out);
    assert!(out.status.success());
    for kind in [
        "scale",
        "bp_cuff",
        "glucometer",
        "pulse_oximeter",
        "thermometer",
        "0x2A35",
    ] {
        assert!(text.contains(kind), "{kind}: {text}");
    }
    let v: serde_json::Value = serde_json::from_slice(&sim(&["devices", "--json"]).stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 5);

    let text = stdout(&sim(&["scenarios"]));
    assert!(
        text.contains("demo") && text.contains("htn-crisis"),
        "{text}"
    );
    let text = stdout(&sim(&["scenarios", "--gateway-config", "demo"]));
    assert!(
        text.contains("[[devices]]\nid = \"ws200-0042\"\npatient = \"demo-hf\""),
        "{text}"
    );
}

/// Bad run arguments are refused before anything is sent.
#[test]
fn run_refuses_bad_arguments() {
    for args in [
        vec![
            "run",
            "demo",
            "--mqtt",
            "127.0.0.1:1",
            "--quirks",
            "teleport",
        ],
        vec![
            "run",
            "demo",
            "--mqtt",
            "127.0.0.1:1",
            "--faults",
            "gremlins",
        ],
        vec!["run", "demo", "--mqtt", "nohost"],
        vec!["run", "demo", "--http", "https://gw/api/v1/readings"],
        vec!["run", "no-such-scenario", "--mqtt", "127.0.0.1:1"],
        vec!["run", "demo", "--mqtt", "127.0.0.1:1", "--speed", "0"],
    ] {
        let out = sim(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A broker that is not there: the run ends (exit 1, every publish a
/// recorded failure) instead of hanging.
#[test]
fn run_against_no_broker_fails_instead_of_hanging() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let out = sim(&[
        "run",
        "fever",
        "--mqtt",
        &format!("127.0.0.1:{port}"),
        "--speed",
        "10000000",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let run = &v["runs"][0];
    assert!(
        run["unacknowledged"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{run}"
    );
}
