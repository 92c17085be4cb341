//! The lean production build (`--no-default-features`) carries no test or
//! demo code: neither the simulator nor the embedded MQTT broker is in its
//! dependency tree. `rpm-simulator` is an optional dependency of the
//! gateway, enabled only by the demo feature (`embedded-broker`), and the
//! virtual BLE radio lives in this crate; this keeps it that way. It asks
//! cargo for the tree (no build, well under a second).

use std::path::Path;
use std::process::Command;

/// The normal (non-dev, non-build) dependencies of the lean gateway, one
/// package a line (`name vX.Y.Z ...`).
fn lean_tree() -> String {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let out = Command::new(cargo)
        .args(["tree", "--locked", "--manifest-path"])
        .arg(&manifest)
        .args([
            "-p",
            "rpm-gateway",
            "--no-default-features",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("cargo tree prints UTF-8")
}

/// `cargo tree -p rpm-gateway --no-default-features -e normal` lists the
/// gateway itself but neither `rpm-simulator` nor `rumqttd`.
#[test]
fn lean_gateway_has_no_simulator_or_broker() {
    let tree = lean_tree();
    let names: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(names.contains(&"rpm-gateway"), "unexpected tree:\n{tree}");
    for absent in ["rpm-simulator", "rumqttd"] {
        assert!(
            !names.contains(&absent),
            "{absent} is in the lean gateway's dependency tree:\n{tree}"
        );
    }
}
