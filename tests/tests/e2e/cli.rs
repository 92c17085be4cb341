//! The binary's commands as a user runs them.

use crate::common;

use common::BIN;
use std::path::Path;
use std::process::{Command, Output};

/// `check-config --config {cfg}`.
fn check_config(cfg: &Path) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["check-config", "--config"]).arg(cfg);
    cmd.output().unwrap()
}

/// The stderr of a `check-config` that refused the configuration.
fn refused(cfg: &Path) -> String {
    let out = check_config(cfg);
    assert_eq!(out.status.code(), Some(2));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn example_config_is_valid() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../gateway/gateway.example.toml"
    );
    let out = check_config(Path::new(example));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}

#[test]
fn broken_config_and_profile_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    std::fs::write(
        profiles.join("bad.toml"),
        "name = \"bad\"\ntopic = \"x/{device_id}\"\nformat = \"json\"\n[json]\n[[json.values]]\nmetric = \"systolic\"\npath = \"s\"\nunit = \"furlong\"\n",
    )
    .unwrap();
    let cfg = dir.path().join("g.toml");
    std::fs::write(&cfg, "[profiles]\ndirs = [\"profiles\"]\n").unwrap();
    let err = refused(&cfg);
    assert!(
        err.contains("bad.toml:8:")
            && err.contains("json.values[0].unit")
            && err.contains("furlong"),
        "{err}"
    );

    std::fs::write(&cfg, "[sources.mqtt]\nport = 1883\n").unwrap();
    let err = refused(&cfg);
    assert!(
        err.contains("g.toml:1:") && err.contains("sources.mqtt.client_id"),
        "{err}"
    );
}

/// README's first command, shortened to the first four days of the demo
/// scenario: the demo stores readings and quarantines the malformed payload
/// (day 2) and the unregistered device (day 3); every alert it raises
/// reaches its in-process webhook receiver as a signed webhook that the
/// receiver verified (only verified deliveries are counted and printed),
/// and the adherence rules are judged on the data clock (demo-eli stops
/// measuring on day 2: "no vitals for 2 days" on day 3).
#[test]
fn demo_runs_on_embedded_defaults() {
    let out = Command::new(BIN)
        .args(["demo", "--days", "4", "--seconds", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored: i64 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("readings stored"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(stored > 100, "{stdout}");
    assert!(
        stdout.contains("copd-spo2-low"),
        "ground truth listed: {stdout}"
    );
    assert!(
        stdout.contains("1 × malformed_payload") && stdout.contains("1 × unknown_device"),
        "{stdout}"
    );

    // "webhooks received     N verified (F alert.fired, ...) for A alerts raised"
    let line = stdout
        .lines()
        .find(|l| l.starts_with("webhooks received"))
        .unwrap_or_else(|| panic!("no webhook summary: {stdout}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let number_before = |word: &str| -> usize {
        words
            .iter()
            .position(|w| w.trim_end_matches([',', ')']) == word)
            .and_then(|i| words[i - 1].trim_start_matches('(').parse().ok())
            .unwrap_or_else(|| panic!("no count of {word} in {line:?}"))
    };
    let verified = number_before("verified");
    let fired = number_before("alert.fired");
    let raised = number_before("alerts");
    assert!(raised >= 3, "{stdout}");
    assert_eq!(fired, raised, "one alert.fired webhook per alert: {line}");
    assert_eq!(
        stdout.matches("(signature verified)").count(),
        verified,
        "each verified webhook printed in the live view: {stdout}"
    );
    assert!(
        stdout.contains(&format!("webhook deliveries    {verified} delivered\n")),
        "every delivery delivered, none failed or pending: {stdout}"
    );
    assert!(
        stdout.contains("adherence.no-vitals-2d") && stdout.contains("demo-eli"),
        "adherence judged on the data clock: {stdout}"
    );
}

/// The store, its WAL and shared memory are owner-only even under umask
/// 000, in a directory of mode 0700; a store that others can read is refused
/// with a message that says how to fix it.
#[test]
fn store_files_are_owner_only_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/rpm.db");
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(&cfg, format!("[store]\npath = \"{}\"\n", db.display())).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let wal = db.with_file_name("rpm.db-wal");
    let shm = db.with_file_name("rpm.db-shm");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000; exec {BIN} run --config {}",
            cfg.display()
        ))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::wait_until("the WAL", std::time::Duration::from_secs(20), || {
        wal.exists() && shm.exists()
    });
    let modes = [
        mode(db.parent().unwrap()),
        mode(&db),
        mode(&wal),
        mode(&shm),
    ];
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert_eq!(modes, [0o700, 0o600, 0o600, 0o600]);

    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("accessible by other users") && err.contains("chmod 600"),
        "{err}"
    );
    assert_eq!(mode(&db), 0o644, "not silently changed");
}

/// An API listening beyond loopback without TLS is warned about at start.
#[test]
fn api_beyond_loopback_without_tls_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = common::Gateway::store_only(
        dir.path(),
        "[api]\nenabled = true\nlisten = \"0.0.0.0:0\"\n",
    );
    gw.start_until("api listening", &[]);
    common::wait_until("the warning", std::time::Duration::from_secs(10), || {
        gw.log().contains("beyond loopback without TLS")
    });
    assert_eq!(gw.stop().code(), Some(0));
    let sub = dir.path().join("l");
    std::fs::create_dir(&sub).unwrap();
    let mut local =
        common::Gateway::store_only(&sub, "[api]\nenabled = true\nlisten = \"127.0.0.1:0\"\n");
    local.start_until("api listening", &[]);
    assert_eq!(local.stop().code(), Some(0));
    assert!(!local.log().contains("without TLS"));
}
