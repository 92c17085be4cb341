//! Encryption at rest of the whole store, end to end: the real gateway
//! binary and its CLI, a real Mosquitto, real SQLCipher files whose raw
//! bytes are searched for what must not be in them, the gateway's own
//! `webhook-receiver` verifying signatures after a rekey.

use crate::common::webhooks::{alert, Receiver, SECRET};
use crate::common::{fill_store, wait_until, Gateway, Mosquitto, BIN};
use rpm_gateway::encryption::{self as cipher, Keying};
use rpm_gateway::webhooks::enqueue;
use rpm_gateway::Store;
use rusqlite::{Connection, OpenFlags};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);
const PATIENT: &str = "patient-QX7731-zebra";
const DEVICE: &str = "cuff-zq81";
/// A body weight, as the device sends it and as SQLite stores a REAL.
const VALUE: &str = "73.9137";
/// The distinctive part of the webhook secret.
const SECRET_BODY: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn new_key() -> String {
    hex::encode(rpm_gateway::encryption::random_key().unwrap())
}

/// A config with (`mqtt`: a broker port) or without a source, `[store]`
/// `encryption`, fast delivery settings, receivers on this machine.
fn config(mqtt: Option<u16>, encryption: bool, store_extra: &str) -> String {
    let mut text = format!(
        "[store]\npath = \"{{db}}\"\nencryption = {encryption}\n{store_extra}\n\n[delivery]\npoll_interval = \"50ms\"\nretry_schedule = [\"200ms\", \"400ms\"]\nallow_private_network = true\n\n"
    );
    if let Some(port) = mqtt {
        text.push_str(&format!(
            "[sources.mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"gw-enc-{port}\"\nkeep_alive = \"5s\"\nreconnect_max_backoff = \"1s\"\n\n[[devices]]\nid = \"{DEVICE}\"\npatient = \"{PATIENT}\"\n"
        ));
    }
    text
}

fn rewrite_config(gw: &Gateway, text: &str) {
    std::fs::write(
        &gw.config,
        text.replace("{db}", &gw.db.display().to_string()),
    )
    .unwrap();
}

/// `rpm-gateway --config … ARGS` with exactly the key environment given.
fn cli(gw: &Gateway, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&gw.config)
        .args(args)
        .env_remove("RPM_STORE_KEY")
        .env_remove("CREDENTIALS_DIRECTORY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(out: &Output, expect: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded: {err}");
    for e in expect {
        assert!(err.contains(e), "`{e}` not in: {err}");
    }
}

/// `rpm-gateway run` that must stop by itself (start-up refused).
fn run_refused(gw: &Gateway, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .arg("--config")
        .arg(&gw.config)
        .env_remove("RPM_STORE_KEY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the gateway started instead of refusing the store");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// A connection to the encrypted store at `db` with the store key `key` (hex).
fn keyed(db: &Path, key: &str) -> Connection {
    let key: [u8; 32] = hex::decode(key).unwrap().try_into().unwrap();
    cipher::connect(db, OpenFlags::SQLITE_OPEN_READ_ONLY, &Keying::given(&key)).unwrap()
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap_or(0)
}

/// Every reading, as `store query` prints them.
fn dump(gw: &Gateway, env: &[(&str, &str)]) -> String {
    ok(&cli(
        gw,
        env,
        &[
            "store",
            "query",
            "SELECT reading_id, patient_id, device_id, metric, value, measured_at FROM readings ORDER BY reading_id",
        ],
    ))
}

fn sibling(db: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", db.display()))
}

/// The store's files as they are on disk: database, WAL, shared memory.
fn store_files(db: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| sibling(db, s))
        .filter(|p| p.exists())
        .collect()
}

/// Which of `needles` occur in the raw bytes of `files`.
fn found(files: &[PathBuf], needles: &[(&str, Vec<u8>)]) -> Vec<String> {
    let mut out = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).unwrap_or_default();
        for (name, needle) in needles {
            if bytes.windows(needle.len()).any(|w| w == needle.as_slice()) {
                out.push(format!("{name} in {}", f.display()));
            }
        }
    }
    out
}

fn needles() -> Vec<(&'static str, Vec<u8>)> {
    let value: f64 = VALUE.parse().unwrap();
    vec![
        ("patient id", PATIENT.as_bytes().to_vec()),
        ("device id", DEVICE.as_bytes().to_vec()),
        ("value as sent", VALUE.as_bytes().to_vec()),
        // SQLite stores a REAL as 8 big-endian IEEE 754 bytes.
        ("value as stored", value.to_be_bytes().to_vec()),
        ("webhook secret", SECRET_BODY.as_bytes().to_vec()),
    ]
}

fn publish_weight(broker: &Mosquitto, minutes_ago: i64) {
    let t = chrono::Utc::now().timestamp() - minutes_ago * 60;
    broker.publish(
        &format!("rpm/senml/{DEVICE}"),
        format!(r#"[{{"bt":{t},"n":"body_weight","u":"kg","v":{VALUE}}}]"#).as_bytes(),
    );
}

fn is_plain_sqlite(db: &Path) -> bool {
    std::fs::read(db).unwrap().starts_with(b"SQLite format 3\0")
}

/// Commits alert events into the outbox as the rule evaluator does, on a
/// connection opened with the store key `key` (hex).
fn enqueue_alerts(db: &Path, key: &str, patient: &str, numbers: std::ops::Range<u32>) {
    let key: [u8; 32] = hex::decode(key).unwrap().try_into().unwrap();
    let mut store = Store::open_with(db, &Keying::given(&key)).unwrap();
    let tx = store.transaction().unwrap();
    for n in numbers {
        let e = alert(patient, n, "critical");
        enqueue(
            &tx,
            &e,
            Some(&e.data.alert_id),
            Some(&e.data.patient_id),
            Some(&e.data.severity),
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn an_encrypted_store_and_its_wal_hold_no_patient_id_value_or_secret() {
    // The same run on a plain store is the control: the search finds
    // what is there.
    for encryption in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start(dir.path());
        let key = new_key();
        let text = format!(
            "{}\n[[webhooks]]\nid = \"north\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"{SECRET}\"\n",
            config(Some(broker.port), encryption, "")
        );
        let mut gw = Gateway::with_config(dir.path(), &text);
        gw.start_with_env(&[("RPM_STORE_KEY", &key)]);
        for m in 0..5 {
            publish_weight(&broker, 10 + m);
        }
        let readings = || {
            if encryption {
                count(&keyed(&gw.db, &key), "SELECT COUNT(*) FROM readings")
            } else {
                gw.readings()
            }
        };
        wait_until("5 readings", T, || readings() == 5);
        assert_eq!(is_plain_sqlite(&gw.db), !encryption);
        // Running: the newest commits are in the WAL.
        let files = store_files(&gw.db);
        assert!(files.len() == 3, "{files:?}");
        let running = found(&files, &needles());
        assert_eq!(gw.stop().code(), Some(0));
        let stopped = found(&store_files(&gw.db), &needles());
        if encryption {
            assert!(running.is_empty(), "{running:?}");
            assert!(stopped.is_empty(), "{stopped:?}");
            let status = ok(&cli(&gw, &[("RPM_STORE_KEY", &key)], &["store", "status"]));
            assert!(
                status.contains("encrypted") && status.contains("key from RPM_STORE_KEY"),
                "{status}"
            );
            assert!(gw.log().contains("the store is encrypted at rest"));
        } else {
            let all = [running, stopped].concat();
            for what in ["patient id", "value as stored"] {
                assert!(all.iter().any(|f| f.starts_with(what)), "{what}: {all:?}");
            }
            // Sealed, encrypted store or not.
            assert!(!all.iter().any(|f| f.starts_with("webhook secret")));
        }
    }
}

#[test]
fn a_wrong_key_a_missing_key_or_a_plain_store_is_refused_at_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (new_key(), new_key());
    let gw = Gateway::with_config(dir.path(), &config(None, true, ""));
    // The first command creates the store, encrypted.
    ok(&cli(&gw, &[("RPM_STORE_KEY", &a)], &["devices", "list"]));
    assert!(!is_plain_sqlite(&gw.db));
    let mode = std::fs::metadata(&gw.db).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let wrong = [
        "is encrypted and this key does not open it",
        "RPM_STORE_KEY",
    ];
    refused(&run_refused(&gw, &[("RPM_STORE_KEY", &b)]), &wrong);
    refused(
        &cli(&gw, &[("RPM_STORE_KEY", &b)], &["devices", "list"]),
        &wrong,
    );
    let status = cli(&gw, &[("RPM_STORE_KEY", &b)], &["store", "status"]);
    assert!(!status.status.success());
    assert!(String::from_utf8_lossy(&status.stdout).contains("does not open it"));
    // A key file of the configuration that is not the store's.
    let other = dir.path().join("other.key");
    std::fs::write(&other, &b).unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    rewrite_config(
        &gw,
        &config(None, true, &format!("key_file = \"{}\"", other.display())),
    );
    refused(
        &run_refused(&gw, &[]),
        &["does not open it", "store.key_file", "other.key"],
    );
    // No key at all: the key file next to the store is looked for.
    rewrite_config(&gw, &config(None, true, ""));
    refused(
        &run_refused(&gw, &[]),
        &["is encrypted and its key file", "rpm.db.key", "is missing"],
    );
    assert!(!sibling(&gw.db, ".key").exists());
    // Encryption off in the configuration.
    rewrite_config(&gw, &config(None, false, ""));
    refused(
        &run_refused(&gw, &[("RPM_STORE_KEY", &a)]),
        &["is encrypted but encryption is off", "encryption = true"],
    );
    // The right key opens it.
    rewrite_config(&gw, &config(None, true, ""));
    ok(&cli(&gw, &[("RPM_STORE_KEY", &a)], &["devices", "list"]));

    // A plain store while encryption is on.
    let dir2 = tempfile::tempdir().unwrap();
    let plain = Gateway::with_config(dir2.path(), &config(None, false, ""));
    ok(&cli(&plain, &[("RPM_STORE_KEY", &a)], &["devices", "list"]));
    assert!(is_plain_sqlite(&plain.db));
    rewrite_config(&plain, &config(None, true, ""));
    refused(
        &run_refused(&plain, &[("RPM_STORE_KEY", &a)]),
        &["is not encrypted", "rpm-gateway store encrypt"],
    );
}

#[test]
fn store_encrypt_and_decrypt_keep_every_reading_and_leave_nothing_plain_behind() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let key = new_key();
    let env = [("RPM_STORE_KEY", key.as_str())];
    // A plain store, as every gateway before this one kept it.
    let mut gw = Gateway::with_config(dir.path(), &config(Some(broker.port), false, ""));
    gw.start_with_env(&env);
    publish_weight(&broker, 5);
    wait_until("the reading", T, || gw.readings() == 1);
    gw.stop();
    fill_store(&gw.db, 5000);
    let before = dump(&gw, &env);
    assert_eq!(before.lines().count(), 5001);
    assert!(!found(&store_files(&gw.db), &needles()).is_empty());

    rewrite_config(&gw, &config(Some(broker.port), true, ""));
    refused(&run_refused(&gw, &env), &["is not encrypted"]);
    let out = ok(&cli(&gw, &env, &["store", "encrypt"]));
    assert!(
        out.contains("5001 reading(s)") && out.contains("key from RPM_STORE_KEY"),
        "{out}"
    );
    assert!(!is_plain_sqlite(&gw.db));
    assert_eq!(store_files(&gw.db), [gw.db.clone()], "-wal or -shm left");
    assert!(!sibling(&gw.db, ".rewrite").exists());
    let mode = std::fs::metadata(&gw.db).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let left = found(&store_files(&gw.db), &needles());
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(dump(&gw, &env), before);
    // Twice is refused, with the reason.
    refused(
        &cli(&gw, &env, &["store", "encrypt"]),
        &["already encrypted"],
    );

    // The gateway runs on it and goes on storing.
    gw.start_with_env(&env);
    publish_weight(&broker, 4);
    wait_until("the new reading", T, || {
        count(&keyed(&gw.db, &key), "SELECT COUNT(*) FROM readings") == 5002
    });
    gw.stop();
    let after = dump(&gw, &env);
    assert_eq!(after.lines().count(), 5002);

    // Decrypt, for support: the same readings, plain.
    rewrite_config(&gw, &config(Some(broker.port), false, ""));
    let out = ok(&cli(&gw, &env, &["store", "decrypt"]));
    assert!(out.contains("5002 reading(s)"), "{out}");
    assert!(is_plain_sqlite(&gw.db));
    assert_eq!(dump(&gw, &env), after);
}

#[test]
fn store_rekey_keeps_every_reading_refuses_the_old_key_and_webhooks_still_sign() {
    let dir = tempfile::tempdir().unwrap();
    let old = new_key();
    let env = [("RPM_STORE_KEY", old.as_str())];
    let mut receiver = Receiver::new(dir.path(), "r", &["--secret", SECRET]);
    receiver.start();
    // An encrypted store with readings and an endpoint added by an operator
    // (its secret sealed in the store, not re-read from the configuration).
    let mut gw = Gateway::with_config(dir.path(), &config(None, false, ""));
    ok(&cli(&gw, &env, &["devices", "list"]));
    fill_store(&gw.db, 3000);
    ok(&cli(
        &gw,
        &env,
        &[
            "webhooks",
            "add",
            "north",
            &receiver.url(),
            "--secret",
            SECRET,
            "--allow-private-network",
        ],
    ));
    rewrite_config(&gw, &config(None, true, ""));
    ok(&cli(&gw, &env, &["store", "encrypt"]));
    let before = dump(&gw, &env);
    assert_eq!(before.lines().count(), 3000);

    gw.start_until("webhook dispatcher started", &env);
    enqueue_alerts(&gw.db, &old, "p-north", 0..1);
    wait_until("the first signed delivery", T, || receiver.distinct() == 1);
    // Not while the gateway runs.
    let new_key_file = dir.path().join("new.key");
    let new_key_arg = new_key_file.display().to_string();
    refused(
        &cli(
            &gw,
            &env,
            &["store", "rekey", "--new-key-file", &new_key_arg],
        ),
        &["in use", "stop the gateway first"],
    );
    assert_eq!(gw.stop().code(), Some(0));

    let out = ok(&cli(
        &gw,
        &env,
        &["store", "rekey", "--new-key-file", &new_key_arg],
    ));
    assert!(
        out.contains("wrote a new store key")
            && out.contains("3000 reading(s)")
            && out.contains("1 webhook endpoint(s) re-sealed")
            // The old key came from the environment: that is what to change.
            && out.contains(&format!("set RPM_STORE_KEY to the contents of {new_key_arg}")),
        "{out}"
    );
    let mode = std::fs::metadata(&new_key_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let new = std::fs::read_to_string(&new_key_file)
        .unwrap()
        .trim()
        .to_string();
    assert_ne!(new, old);
    assert_eq!(store_files(&gw.db), [gw.db.clone()]);
    // The old key opens nothing any more.
    refused(&cli(&gw, &env, &["devices", "list"]), &["does not open it"]);

    // The configuration gives the new key: everything is there and the
    // re-sealed secret still signs.
    rewrite_config(
        &gw,
        &config(None, true, &format!("key_file = \"{new_key_arg}\"")),
    );
    assert_eq!(dump(&gw, &[]), before);
    gw.start_until("webhook dispatcher started", &[]);
    enqueue_alerts(&gw.db, &new, "p-north", 1..2);
    wait_until("the second signed delivery", T, || receiver.distinct() == 2);
    assert!(
        !gw.log().contains("webhook secret unusable"),
        "{}",
        gw.log()
    );
    gw.stop();
    assert_eq!(receiver.accepted().len(), 2, "{:?}", receiver.lines());
}

/// The derivation of the SQLCipher key from the store key, exactly as
/// docs/security-at-rest.md gives it (the store key on stdin).
const DERIVE: &str = r#"import sys, hmac, hashlib
k = bytes.fromhex(sys.stdin.read().strip())
prk = hmac.new(b"rpm-gateway", k, hashlib.sha256).digest()
print(hmac.new(prk, b"store encryption (SQLCipher raw key) v1\x01", hashlib.sha256).hexdigest())"#;

#[test]
fn the_store_opens_in_an_independent_sqlcipher_with_the_documented_key() {
    let deps = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pydeps/sqlcipher");
    assert!(
        deps.exists(),
        "{} missing: run scripts/test (it pip-installs sqlcipher3-binary there)",
        deps.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let key_file = dir.path().join("store.key");
    std::fs::write(&key_file, new_key()).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut gw = Gateway::with_config(
        dir.path(),
        &config(
            Some(broker.port),
            true,
            &format!("key_file = \"{}\"", key_file.display()),
        ),
    );
    gw.start();
    publish_weight(&broker, 3);
    wait_until("the reading", T, || {
        ok(&cli(
            &gw,
            &[],
            &["store", "query", "SELECT COUNT(*) FROM readings"],
        ))
        .trim()
            == "1"
    });
    gw.stop();

    let python = |script: &str, args: &[&str], stdin: &[u8]| -> String {
        let out = crate::common::python(script, args, &deps, stdin);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let derived = python(DERIVE, &[], &std::fs::read(&key_file).unwrap());
    assert_eq!(derived.len(), 64, "{derived}");
    let read = r#"import sys, sqlcipher3
c = sqlcipher3.connect(sys.argv[1])
c.execute("PRAGMA key = \"x'%s'\"" % sys.argv[2])
print(c.execute("PRAGMA cipher_version").fetchone()[0])
for row in c.execute("SELECT patient_id, device_id, value FROM readings"):
    print(*row)"#;
    let db = gw.db.display().to_string();
    let out = python(read, &[&db, &derived], b"");
    assert!(out.starts_with("4."), "{out}");
    assert!(
        out.contains(&format!("{PATIENT} {DEVICE} {VALUE}")),
        "{out}"
    );
    // The store key itself is not the SQLCipher key.
    let key = std::fs::read_to_string(&key_file).unwrap();
    let wrong = Command::new("python3")
        .arg("-c")
        .arg(read)
        .args([&db, key.trim()])
        .env("PYTHONPATH", &deps)
        .output()
        .unwrap();
    assert!(!wrong.status.success());
}
