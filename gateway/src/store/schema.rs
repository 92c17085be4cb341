//! Schema migrations of the embedded store.
//!
//! Each migration runs once, in order, inside one transaction with its row in
//! `schema_migrations`, so a crash mid-migration leaves the previous version
//! intact. Never edit a shipped migration: add the next one.

use rusqlite::{params, Connection};

use super::StoreError;

/// (version, SQL). Times are Unix milliseconds (UTC) throughout.
const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    r#"
CREATE TABLE readings (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT, -- commit order: downstream cursors follow it
    reading_id          TEXT NOT NULL UNIQUE,             -- stable identity: re-sent data is stored once
    group_id            TEXT NOT NULL,                    -- one measurement (a BP panel shares it)
    panel               TEXT,
    patient_id          TEXT NOT NULL,
    device_id           TEXT NOT NULL,
    metric              TEXT NOT NULL,
    value               REAL NOT NULL,
    unit                TEXT NOT NULL,                    -- UCUM, canonical per metric
    loinc               TEXT NOT NULL,
    device_measured_at  INTEGER,                          -- as the device said it
    measured_at         INTEGER NOT NULL,                 -- corrected
    received_at         INTEGER NOT NULL,
    committed_at        INTEGER NOT NULL,
    source              TEXT NOT NULL,
    sequence            INTEGER,
    annotations         TEXT NOT NULL DEFAULT '{}',
    content_digest      TEXT                              -- set only for readings without device time
);
CREATE INDEX readings_patient_metric_time ON readings(patient_id, metric, measured_at);
CREATE INDEX readings_group ON readings(group_id);
CREATE INDEX readings_device_digest ON readings(device_id, content_digest) WHERE content_digest IS NOT NULL;

CREATE TABLE quarantine (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key           TEXT NOT NULL UNIQUE,             -- the same input redelivered is kept once
    received_at         INTEGER NOT NULL,
    source              TEXT NOT NULL,
    origin              TEXT NOT NULL,                    -- MQTT topic, BLE address/characteristic, HTTP
    profile             TEXT,
    device_id           TEXT,
    measurement_index   INTEGER,                          -- which measurement of the message, if one
    reason              TEXT NOT NULL,                    -- stable code
    detail              TEXT NOT NULL,
    payload             BLOB NOT NULL,                    -- raw bytes (first 64 KiB for oversized input)
    status              TEXT NOT NULL DEFAULT 'open',     -- open | reprocessed | discarded
    resolved_at         INTEGER
);
CREATE INDEX quarantine_open_device ON quarantine(device_id, reason) WHERE status = 'open';
CREATE INDEX quarantine_time ON quarantine(received_at);

CREATE TABLE devices (
    device_id           TEXT PRIMARY KEY,
    patient_id          TEXT,                             -- NULL: not assigned
    origin              TEXT NOT NULL,                    -- config | cli | api
    registered_at       INTEGER NOT NULL,
    assigned_at         INTEGER,
    last_seen_at        INTEGER
);
CREATE INDEX devices_patient ON devices(patient_id);

-- Durable positions of downstream consumers (rules, forwarder, ...).
CREATE TABLE cursors (
    name                TEXT PRIMARY KEY,
    position            INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);

-- Gateway runs and heartbeats: downtime must neither hide nor invent a
-- missing-data condition.
CREATE TABLE runs (
    run_id              INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at          INTEGER NOT NULL,
    heartbeat_at        INTEGER NOT NULL,
    stopped_at          INTEGER
);

-- For support engineers with the sqlite3 tool: readable times.
CREATE VIEW readings_view AS
SELECT seq, patient_id, device_id, metric, value, unit, loinc,
       strftime('%Y-%m-%dT%H:%M:%fZ', measured_at / 1000.0, 'unixepoch') AS measured_at,
       strftime('%Y-%m-%dT%H:%M:%fZ', received_at / 1000.0, 'unixepoch') AS received_at,
       source, annotations
FROM readings;
"#,
)];

/// Brings the schema up to date. Returns the version now in force.
pub fn migrate(conn: &mut Connection) -> Result<i64, StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL);",
    )?;
    let current: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    let newest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if current > newest {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: newest,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations(version, applied_at) VALUES (?1, ?2)",
            params![version, super::now_ms()],
        )?;
        tx.commit()?;
    }
    Ok(newest)
}

/// The newest schema version this build knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}
