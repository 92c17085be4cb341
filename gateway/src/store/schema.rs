//! Schema migrations of the embedded store.
//!
//! Each migration runs once, in order, inside one transaction with its row in
//! `schema_migrations`, so a crash mid-migration leaves the previous version
//! intact. Never edit a shipped migration: add the next one.

use rusqlite::{params, Connection};

use super::StoreError;

/// (version, SQL). Times are Unix milliseconds (UTC) throughout.
const MIGRATIONS: &[(i64, &str)] = &[
    (
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
    ),
    (
        2,
        r#"
-- ---------------------------------------------------------------------
-- Version 2: the shared contract of the downstream stages (rules,
-- delivery, API, forwarder). Each stage owns its tables; the columns here
-- are what the others may rely on.
-- ---------------------------------------------------------------------

-- Patients: care-plan enrolment, per-patient rule overrides, care team.
-- No demographics: the gateway needs none.
CREATE TABLE patients (
    patient_id          TEXT PRIMARY KEY,
    care_plans          TEXT NOT NULL DEFAULT '[]',       -- JSON array of plan names
    overrides           TEXT NOT NULL DEFAULT '{}',       -- JSON alerting_rules::Overrides
    care_team           TEXT,                             -- NULL: no team
    enrolled_at         INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    origin              TEXT NOT NULL DEFAULT 'config'    -- config | cli | api
);
CREATE INDEX patients_team ON patients(care_team);

-- Device state reported by sources (BLE battery, connection).
ALTER TABLE devices ADD COLUMN battery_pct INTEGER;
ALTER TABLE devices ADD COLUMN connection TEXT;            -- connected | disconnected | NULL (not a connected source)
ALTER TABLE devices ADD COLUMN source TEXT;                -- mqtt | ble | http: last source seen
CREATE INDEX readings_device_sequence ON readings(device_id, sequence) WHERE sequence IS NOT NULL;

-- Rule engine state per (patient, rule): alerting_rules::AlertState as JSON.
CREATE TABLE alert_state (
    patient_id          TEXT NOT NULL,
    rule_id             TEXT NOT NULL,
    state               TEXT NOT NULL,
    alert_id            TEXT,                             -- the open alert, if any
    updated_at          INTEGER NOT NULL,
    PRIMARY KEY (patient_id, rule_id)
);
-- Newest measured time evaluated per patient (late-data detection).
CREATE TABLE patient_watermarks (
    patient_id          TEXT PRIMARY KEY,
    watermark           INTEGER NOT NULL
);

-- Alerts: one row from fire to resolve. At most one open per (patient, rule).
CREATE TABLE alerts (
    alert_id            TEXT PRIMARY KEY,
    patient_id          TEXT NOT NULL,
    rule_id             TEXT NOT NULL,
    rule_version        INTEGER NOT NULL,
    pack                TEXT NOT NULL,
    severity            TEXT NOT NULL,                    -- info | warning | urgent | critical
    status              TEXT NOT NULL,                    -- firing | acknowledged | resolved
    message             TEXT NOT NULL,
    limits              TEXT NOT NULL DEFAULT '{}',       -- JSON effective limits that fired it
    evidence            TEXT NOT NULL DEFAULT '[]',       -- JSON readings cited
    late                INTEGER NOT NULL DEFAULT 0,
    flapping            INTEGER NOT NULL DEFAULT 0,
    fired_at            INTEGER NOT NULL,
    measured_at         INTEGER,
    updated_at          INTEGER NOT NULL,
    acknowledged_by     TEXT,
    acknowledged_at     INTEGER,
    ack_note            TEXT,
    snooze_until        INTEGER,
    resolved_at         INTEGER,
    resolved_by         TEXT                              -- NULL: resolved automatically
);
CREATE INDEX alerts_patient ON alerts(patient_id, fired_at);
CREATE INDEX alerts_status ON alerts(status, severity, fired_at);
CREATE UNIQUE INDEX alerts_one_open ON alerts(patient_id, rule_id) WHERE status != 'resolved';

-- Every transition of an alert: its history, with the evidence.
CREATE TABLE alert_history (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id            TEXT NOT NULL,
    at                  INTEGER NOT NULL,
    kind                TEXT NOT NULL,                    -- fired | updated | acknowledged | resolved | note
    notified            INTEGER NOT NULL,
    actor               TEXT,                             -- who (ack, manual resolve)
    detail              TEXT NOT NULL DEFAULT '{}'        -- JSON: note, evidence, limits, late
);
CREATE INDEX alert_history_alert ON alert_history(alert_id, id);

-- The outbox: every event to deliver, written in the same transaction as
-- the change it reports. `seq` orders delivery; `event_id` is the
-- webhook-id, stable across retries. `payload` is the JSON body as sent
-- (see gateway/src/store/outbox.rs and the JSON Schema).
CREATE TABLE outbox (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id            TEXT NOT NULL UNIQUE,
    event_type          TEXT NOT NULL,                    -- alert.fired | alert.updated | alert.acknowledged | alert.resolved | delivery.failing | delivery.dead_lettered | endpoint.disabled | store.disk_low
    alert_id            TEXT,
    patient_id          TEXT,
    severity            TEXT,
    created_at          INTEGER NOT NULL,
    payload             TEXT NOT NULL
);

-- Webhook endpoints (config and run time).
CREATE TABLE webhook_endpoints (
    endpoint_id         TEXT PRIMARY KEY,
    url                 TEXT NOT NULL,
    description         TEXT NOT NULL DEFAULT '',
    secrets             TEXT NOT NULL DEFAULT '[]',       -- JSON array of active `whsec_` secrets, newest first
    enabled             INTEGER NOT NULL DEFAULT 1,
    disabled_reason     TEXT,
    filter              TEXT NOT NULL DEFAULT '{}',       -- JSON: severities, care_plans, care_teams, event_types
    origin              TEXT NOT NULL,                    -- config | cli | api
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);

-- One row per (event, endpoint): the delivery and its retry state.
CREATE TABLE deliveries (
    delivery_id         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq           INTEGER NOT NULL REFERENCES outbox(seq),
    endpoint_id         TEXT NOT NULL,
    status              TEXT NOT NULL,                    -- pending | delivered | failed | dead
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    last_status         INTEGER,
    last_error          TEXT,
    UNIQUE (event_seq, endpoint_id)
);
CREATE INDEX deliveries_due ON deliveries(status, next_attempt_at);
CREATE INDEX deliveries_endpoint ON deliveries(endpoint_id, status);

-- Every attempt: time, HTTP status, latency, error.
CREATE TABLE delivery_attempts (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id         INTEGER NOT NULL REFERENCES deliveries(delivery_id),
    attempt             INTEGER NOT NULL,
    at                  INTEGER NOT NULL,
    http_status         INTEGER,
    latency_ms          INTEGER NOT NULL,
    error               TEXT
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts(delivery_id, attempt);

-- API tokens: only a SHA-256 of the token is stored.
CREATE TABLE api_tokens (
    token_id            TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    token_hash          TEXT NOT NULL UNIQUE,
    role                TEXT NOT NULL,                    -- read_only | care_team | admin
    care_teams          TEXT NOT NULL DEFAULT '[]',       -- JSON array (role care_team)
    created_at          INTEGER NOT NULL,
    revoked_at          INTEGER,
    last_used_at        INTEGER
);

-- Audit log: who read or changed what (HIPAA-style accountability).
CREATE TABLE audit_log (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    at                  INTEGER NOT NULL,
    actor               TEXT NOT NULL,                    -- token id, `cli`, or `system`
    action              TEXT NOT NULL,                    -- e.g. GET /api/v1/readings, alert.acknowledge
    resource            TEXT NOT NULL,
    patient_id          TEXT,
    outcome             INTEGER NOT NULL,                 -- HTTP status or 0 for CLI
    detail              TEXT
);
CREATE INDEX audit_log_time ON audit_log(at);
CREATE INDEX audit_log_patient ON audit_log(patient_id, at);
"#,
    ),
    (
        3,
        r#"
-- delivery: a re-driven delivery starts a fresh retry round. `attempts`
-- keeps counting every attempt (it numbers `delivery_attempts`); the round's
-- attempts are `attempts - round_base`, its age counts from `redriven_at`.
ALTER TABLE deliveries ADD COLUMN round_base INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN redriven_at INTEGER;
CREATE INDEX deliveries_endpoint_seq ON deliveries(endpoint_id, status, event_seq);
"#,
    ),
    (
        4,
        r#"
-- inbox: MQTT input as received, durable before its PUBACK; the normalize
-- stage turns it into readings or quarantine and removes it in the same
-- transaction (see store/inbox.rs). Append-only, keyed by arrival.
CREATE TABLE inbox (
    seq                 INTEGER PRIMARY KEY,
    source              TEXT NOT NULL,
    origin              TEXT NOT NULL,
    payload             BLOB NOT NULL,
    received_at         INTEGER NOT NULL
);
"#,
    ),
    (
        5,
        r#"
-- quarantine: one bad message costs a bounded amount, however many
-- measurements it holds (see store/quarantine.rs). Its bytes are kept once,
-- keyed by their digest, and shared by every row that refers to them (rows
-- written before version 5 keep theirs in `quarantine.payload`). Identical
-- refusals of one message (same reason, same device) are one row with a
-- count and the positions it covers.
CREATE TABLE quarantine_payloads (
    digest              TEXT PRIMARY KEY,                 -- content digest of the whole input
    size                INTEGER NOT NULL,                 -- bytes received
    payload             BLOB NOT NULL,                    -- the bytes (first 64 KiB of larger input)
    created_at          INTEGER NOT NULL
);
ALTER TABLE quarantine ADD COLUMN payload_digest TEXT;    -- set: bytes in quarantine_payloads
ALTER TABLE quarantine ADD COLUMN count INTEGER NOT NULL DEFAULT 1; -- measurements refused alike
ALTER TABLE quarantine ADD COLUMN measurement_indexes TEXT; -- "0-99,104" when count > 1; NULL with count > 1: too many ranges to keep, re-processing tries every measurement
-- inbox: a message larger than the source's limit is kept as its first
-- 64 KiB and its true size, and quarantined as such.
ALTER TABLE inbox ADD COLUMN size INTEGER;                -- bytes received when `payload` holds fewer
"#,
    ),
    (
        6,
        r#"
-- quarantine: what the input's connection knew besides its bytes (JSON;
-- BLE: the glucose context joined to a record, the device clock offset
-- applied and its basis, when the link was made), so that re-processing
-- yields exactly what the live path would have.
ALTER TABLE quarantine ADD COLUMN facts TEXT;
-- devices: Bluetooth bonding and Device Information (service 0x180A).
ALTER TABLE devices ADD COLUMN bonded INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN manufacturer TEXT;
ALTER TABLE devices ADD COLUMN model TEXT;
ALTER TABLE devices ADD COLUMN serial_number TEXT;
ALTER TABLE devices ADD COLUMN firmware TEXT;
"#,
    ),
    (
        7,
        r#"
-- rules: when the evaluator last took in a reading of the patient, on the
-- rule clock. Missing-data rules judge a patient's silence only once this
-- input has settled (an upload in progress is not silence).
ALTER TABLE patient_watermarks ADD COLUMN input_at INTEGER;
-- the alert-burden report reads alerts by firing time.
CREATE INDEX IF NOT EXISTS alerts_fired_at ON alerts(fired_at);
"#,
    ),
    (
        8,
        r#"
-- webhook endpoints: the SSRF guard is lifted per endpoint, explicitly.
ALTER TABLE webhook_endpoints ADD COLUMN allow_private_network INTEGER NOT NULL DEFAULT 0;
-- api tokens: an ingest token may be limited to devices and profiles
-- (JSON arrays; empty = any).
ALTER TABLE api_tokens ADD COLUMN devices TEXT NOT NULL DEFAULT '[]';
ALTER TABLE api_tokens ADD COLUMN profiles TEXT NOT NULL DEFAULT '[]';
"#,
    ),
    (
        9,
        r#"
-- care: follow-up tasks (see care/tasks.rs). A notified alert opens a task
-- or joins the patient's open task for the same problem: at most one task
-- not done per (patient, problem). Deadlines come from the follow-up
-- policy in the care team's calendar; the escalator visits a task when
-- `next_check_at` has passed and writes its overdue and escalation events
-- in the same transaction as the tier it reached.
CREATE TABLE tasks (
    task_id             TEXT PRIMARY KEY,
    patient_id          TEXT NOT NULL,
    care_team           TEXT,
    problem             TEXT NOT NULL,                    -- policy problem, e.g. blood-pressure
    pathway             TEXT NOT NULL,                    -- the care pathway whose policy applied
    priority            TEXT NOT NULL,                    -- most severe alert joined: info | warning | urgent | critical
    status              TEXT NOT NULL,                    -- open | claimed | done
    opened_at           INTEGER NOT NULL,
    claim_due_at        INTEGER,                          -- to be claimed by (NULL: no claim deadline)
    due_at              INTEGER NOT NULL,                 -- to be done by
    claimed_by          TEXT,
    claimed_at          INTEGER,
    done_by             TEXT,
    done_at             INTEGER,
    outcome             TEXT,                             -- reached_patient | advice_given | ... (care/tasks.rs)
    note                TEXT,
    overdue_at          INTEGER,                          -- when a deadline was first missed
    escalation_tier     INTEGER NOT NULL DEFAULT 0,       -- tiers reached (0: none)
    next_check_at       INTEGER,                          -- when the escalator looks next (NULL: nothing left to escalate)
    updated_at          INTEGER NOT NULL
);
CREATE UNIQUE INDEX tasks_one_open ON tasks(patient_id, problem) WHERE status != 'done';
CREATE INDEX tasks_check ON tasks(next_check_at) WHERE next_check_at IS NOT NULL;
CREATE INDEX tasks_team ON tasks(care_team, status, due_at);
CREATE INDEX tasks_patient ON tasks(patient_id, opened_at);
-- The alerts a task follows up (the first opened it, later ones joined).
CREATE TABLE task_alerts (
    task_id             TEXT NOT NULL,
    alert_id            TEXT NOT NULL,
    joined_at           INTEGER NOT NULL,
    PRIMARY KEY (task_id, alert_id)
);
CREATE INDEX task_alerts_alert ON task_alerts(alert_id);
-- Every change of a task: who, when, what.
CREATE TABLE task_history (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id             TEXT NOT NULL,
    at                  INTEGER NOT NULL,
    kind                TEXT NOT NULL,                    -- opened | joined | claimed | released | done | overdue | escalated
    actor               TEXT,                             -- token id, `cli`, or NULL (the gateway)
    detail              TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX task_history_task ON task_history(task_id, id);
"#,
    ),
    (
        10,
        r#"
-- care: the patient's own clock. `time_zone` is an IANA name (NULL: the
-- care team's, from [care]); `monitoring_start` is the local date the
-- patient's 30-day device periods count from (NULL: the local date of the
-- first automatically transmitted reading). See care/report.rs.
ALTER TABLE patients ADD COLUMN time_zone TEXT;
ALTER TABLE patients ADD COLUMN monitoring_start TEXT;  -- YYYY-MM-DD
-- care time (see care/time_log.rs): minutes care managers spent on a
-- patient. Append-only: an entry is never changed or deleted; a correction
-- is a new entry naming the one it corrects (`corrects`), which it
-- supersedes in every total. An entry is corrected at most once (a
-- correction of the correction supersedes that one in turn).
CREATE TABLE care_time (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT, -- recording order
    entry_id            TEXT NOT NULL UNIQUE,             -- client's, or derived from Idempotency-Key, or random
    patient_id          TEXT NOT NULL,
    activity            TEXT NOT NULL,                    -- data_review | patient_call | care_coordination | medication_management | education | other
    seconds             INTEGER NOT NULL,                 -- time spent (0: a correction that voids the entry it corrects)
    performed_at        INTEGER NOT NULL,                 -- when the work started
    ended_at            INTEGER,                          -- when it stopped (entries given as start/stop)
    interactive         INTEGER NOT NULL,                 -- 1: real-time interactive communication with the patient (at least two-way audio)
    note                TEXT,
    recorded_by         TEXT NOT NULL,                    -- token id or `cli`
    recorded_at         INTEGER NOT NULL,
    corrects            TEXT,                             -- entry_id this entry replaces
    request_digest      TEXT NOT NULL                     -- what was asked: a retry must ask the same
);
CREATE INDEX care_time_patient ON care_time(patient_id, performed_at);
CREATE UNIQUE INDEX care_time_corrected_once ON care_time(corrects) WHERE corrects IS NOT NULL;
-- the RPM report: a patient's readings in time order (distinct local days).
CREATE INDEX readings_patient_time ON readings(patient_id, measured_at);
"#,
    ),
    (
        11,
        r#"
-- care: risk tiers (see care/risk.rs). One row per enrolled patient: the
-- tier, the tier rule that gave it and its reasons (JSON: alert ids, task
-- ids, counts), and the activity summary the worklist ranks by. Written by
-- the risk stage with its cursors, in one transaction.
CREATE TABLE risk_tiers (
    patient_id          TEXT PRIMARY KEY,
    tier                TEXT NOT NULL,                    -- high | rising | stable | unknown
    rule_id             TEXT,                             -- NULL: unknown, no tier rule matched
    rule_version        INTEGER,
    pack                TEXT,
    reasons             TEXT NOT NULL DEFAULT '[]',       -- JSON alerting_rules::tier::TierReason list
    since               INTEGER NOT NULL,                 -- when the patient entered this tier
    computed_at         INTEGER NOT NULL,
    changes             INTEGER NOT NULL DEFAULT 0,       -- history rows written (the next one's position)
    last_reading_at     INTEGER,                          -- newest measured time seen
    data_days_7         INTEGER NOT NULL DEFAULT 0,       -- local days with data, last 7 (at computed_at)
    data_days_30        INTEGER NOT NULL DEFAULT 0        -- local days with data, last 30 (at computed_at)
);
CREATE INDEX risk_tiers_computed ON risk_tiers(computed_at);
-- Every tier change: from, to, why; `event_id` is the risk.changed event.
CREATE TABLE risk_history (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_id          TEXT NOT NULL,
    n                   INTEGER NOT NULL,                 -- position in the patient's history
    at                  INTEGER NOT NULL,
    from_tier           TEXT,                             -- NULL: first placement
    tier                TEXT NOT NULL,
    rule_id             TEXT,
    rule_version        INTEGER,
    pack                TEXT,
    reasons             TEXT NOT NULL DEFAULT '[]',
    event_id            TEXT,                             -- NULL: no event (first placement as unknown)
    UNIQUE (patient_id, n)
);
-- Local days with data per patient (the care team's time zone when the
-- reading was taken in), from the risk stage's cursor over readings.
CREATE TABLE risk_days (
    patient_id          TEXT NOT NULL,
    day                 INTEGER NOT NULL,                 -- local date as days since 1970-01-01
    readings            INTEGER NOT NULL,
    PRIMARY KEY (patient_id, day)
) WITHOUT ROWID;
"#,
    ),
    (
        12,
        r#"
-- console: people who sign in to the web console (see console/). The
-- password is an Argon2id PHC string; role and care teams mean what they
-- mean for API tokens. A user is disabled, never deleted (the audit log
-- names them).
CREATE TABLE console_users (
    username            TEXT PRIMARY KEY,
    password_hash       TEXT NOT NULL,                    -- Argon2id PHC string
    role                TEXT NOT NULL,                    -- admin | read_only | care_team
    care_teams          TEXT NOT NULL DEFAULT '[]',       -- JSON array (role care_team)
    created_at          INTEGER NOT NULL,
    disabled_at         INTEGER
);
-- Signed-in browsers. The cookie holds 256 random bits; only their SHA-256
-- is stored. `csrf` is the token every form of the session carries.
CREATE TABLE console_sessions (
    id_hash             TEXT PRIMARY KEY,
    username            TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    last_seen           INTEGER NOT NULL,
    csrf                TEXT NOT NULL
);
CREATE INDEX console_sessions_user ON console_sessions(username);
-- Failed sign-ins per username (known or not), for the lock-out back-off;
-- cleared by a successful sign-in.
CREATE TABLE console_login_failures (
    username            TEXT PRIMARY KEY,
    failures            INTEGER NOT NULL,
    last_failure_at     INTEGER NOT NULL
);
"#,
    ),
    (
        13,
        r#"
-- the program hub: one row per home box (its ingest token's name), kept
-- from the health every push and pull carries (see store/boxes.rs). The
-- box watch raises box.silent once a box has been silent longer than
-- [upstream_intake] silent_after, and box.back when it is heard again,
-- each in the same transaction as `silent` changes.
CREATE TABLE boxes (
    box_id              TEXT PRIMARY KEY,                 -- the token's name
    token_id            TEXT NOT NULL,
    first_contact_at    INTEGER NOT NULL,
    last_contact_at     INTEGER NOT NULL,                 -- hub clock
    last_push_at        INTEGER,                          -- last readings or quarantine push
    last_pull_at        INTEGER,                          -- last share pull
    backlog             INTEGER,                          -- readings not yet at the hub, as the box said
    clock_offset_ms     INTEGER,                          -- box clock minus hub clock at the last contact
    ble_state           TEXT,                             -- available | unavailable | NULL (no BLE source)
    version             TEXT,                             -- the box's gateway version
    silent              INTEGER NOT NULL DEFAULT 0,       -- 1: box.silent raised, box.back not yet
    silent_since        INTEGER,
    events              INTEGER NOT NULL DEFAULT 0        -- box.silent/box.back events written (their ids)
);
CREATE INDEX boxes_watch ON boxes(silent, last_contact_at);
-- a home box: the share of the hub it applied last (one row).
CREATE TABLE hub_share (
    id                  INTEGER PRIMARY KEY CHECK (id = 1),
    version             TEXT NOT NULL,                    -- the hub's ETag
    applied_at          INTEGER NOT NULL,
    devices             INTEGER NOT NULL,
    patients            INTEGER NOT NULL
);
"#,
    ),
    (
        14,
        r#"
-- questionnaire responses (see store/responses.rs): the whole response as
-- a FHIR QuestionnaireResponse, kept beside the readings its scores became
-- (written in the same transaction). Identity: the response's identifier,
-- or a digest of questionnaire, subject and authored time.
CREATE TABLE responses (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    response_id         TEXT NOT NULL UNIQUE,
    patient_id          TEXT NOT NULL,
    device_id           TEXT,                             -- the tablet or hub it came through, if named
    questionnaire       TEXT NOT NULL,                    -- canonical URL
    version             TEXT NOT NULL,
    authored_at         INTEGER NOT NULL,
    received_at         INTEGER NOT NULL,
    committed_at        INTEGER NOT NULL,
    source              TEXT NOT NULL,
    resource            TEXT NOT NULL,                    -- FHIR QuestionnaireResponse JSON (subject added when read)
    scores              TEXT NOT NULL DEFAULT '[]'        -- JSON [{metric, value (null: not scored), missing}]
);
CREATE INDEX responses_patient ON responses(patient_id, authored_at);
"#,
    ),
    (
        15,
        r#"
-- link health of vendor-cloud integrations (see store/integrations.rs): one
-- row per integration and UTC day, counts only (no payloads, no ids of
-- patients).
CREATE TABLE integration_days (
    name                TEXT NOT NULL,                    -- [integrations.NAME]
    day                 TEXT NOT NULL,                    -- YYYY-MM-DD, UTC
    deliveries          INTEGER NOT NULL DEFAULT 0,       -- pushes accepted and committed
    measurements        INTEGER NOT NULL DEFAULT 0,       -- measurements in them (stored, duplicate or quarantined)
    quarantined         INTEGER NOT NULL DEFAULT 0,       -- of which quarantined
    refused             INTEGER NOT NULL DEFAULT 0,       -- pushes refused (401, 403, 400): nothing stored
    last_delivery_at    INTEGER,
    last_refused_at     INTEGER,
    last_refusal        TEXT,                             -- reason code of the last refusal
    PRIMARY KEY (name, day)
);
-- an integration raised stale (integration.stale written, integration.back not yet).
CREATE TABLE integration_state (
    name                TEXT PRIMARY KEY,
    stale               INTEGER NOT NULL DEFAULT 0,
    stale_since         INTEGER,                          -- its last delivery when raised
    events              INTEGER NOT NULL DEFAULT 0        -- events written (their ids)
);
"#,
    ),
    (
        16,
        r#"
-- the gateway's own identity as a FHIR PhgDevice: an EUI-64 made once, when
-- the store is created or upgraded (random, locally administered unicast:
-- first octet xxxxxx10), so every resource this gateway ever sends names the
-- same gateway.
CREATE TABLE gateway_identity (
    id                  INTEGER PRIMARY KEY CHECK (id = 1),
    system_id           TEXT NOT NULL,                    -- 16 lower-case hex digits
    created_at          INTEGER NOT NULL
);
INSERT INTO gateway_identity (id, system_id, created_at)
VALUES (1,
        printf('%02x', ((abs(random()) % 256) & 252) | 2) || lower(hex(randomblob(7))),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
"#,
    ),
    (
        17,
        r#"
-- Readings keyed for fast indexing. Reading and measurement ids are 128-bit
-- hashes in hex: indexed whole, each new reading dirtied a random page of
-- two large text indexes (most of a reading's write volume). They are now
-- found through 8-character prefixes (generated columns, computed by SQLite
-- itself, so every writer and the sqlite3 tool keep them right), and a
-- reading's identity is checked against the full id by the writer inside its
-- transaction instead of by a UNIQUE constraint, which SQLite cannot drop
-- without rebuilding the table. The rebuild keeps every row, its sequence
-- number and the sequence's high-water mark (cursors follow it).
DROP VIEW readings_view;
CREATE TABLE readings_new (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT, -- commit order: downstream cursors follow it
    reading_id          TEXT NOT NULL,                    -- stable identity: re-sent data is stored once (the writer checks)
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
    content_digest      TEXT,                             -- set only for readings without device time
    reading_key         TEXT GENERATED ALWAYS AS (substr(reading_id, 1, 8)) VIRTUAL,
    group_key           TEXT GENERATED ALWAYS AS (substr(group_id, 1, 8)) VIRTUAL
);
INSERT INTO readings_new (seq, reading_id, group_id, panel, patient_id, device_id, metric, value, unit, loinc,
    device_measured_at, measured_at, received_at, committed_at, source, sequence, annotations, content_digest)
SELECT seq, reading_id, group_id, panel, patient_id, device_id, metric, value, unit, loinc,
    device_measured_at, measured_at, received_at, committed_at, source, sequence, annotations, content_digest
FROM readings ORDER BY seq;
DELETE FROM sqlite_sequence WHERE name = 'readings_new';
INSERT INTO sqlite_sequence (name, seq) SELECT 'readings_new', seq FROM sqlite_sequence WHERE name = 'readings';
DROP TABLE readings;
ALTER TABLE readings_new RENAME TO readings;
CREATE INDEX readings_key ON readings(reading_key);
CREATE INDEX readings_group ON readings(group_key);
CREATE INDEX readings_patient_metric_time ON readings(patient_id, metric, measured_at);
CREATE INDEX readings_device_digest ON readings(device_id, content_digest) WHERE content_digest IS NOT NULL;
CREATE INDEX readings_device_sequence ON readings(device_id, sequence) WHERE sequence IS NOT NULL;
CREATE INDEX readings_patient_time ON readings(patient_id, measured_at);
CREATE VIEW readings_view AS
SELECT seq, patient_id, device_id, metric, value, unit, loinc,
       strftime('%Y-%m-%dT%H:%M:%fZ', measured_at / 1000.0, 'unixepoch') AS measured_at,
       strftime('%Y-%m-%dT%H:%M:%fZ', received_at / 1000.0, 'unixepoch') AS received_at,
       source, annotations
FROM readings;
"#,
    ),
    (
        18,
        r#"
-- What the rule stage read that others can change. The rule stage evaluates
-- a batch on a read snapshot, outside the store's one write lock, then
-- writes what it decided in a short transaction, but only if no enrolment,
-- override, care team or alert state (an acknowledgement, a snooze, a
-- manual resolve) changed since its snapshot: these triggers count every
-- such change, whoever makes it.
CREATE TABLE rule_input_changes (
    id                  INTEGER PRIMARY KEY CHECK (id = 1),
    version             INTEGER NOT NULL
);
INSERT INTO rule_input_changes (id, version) VALUES (1, 0);
CREATE TRIGGER patients_insert_changes_rule_input AFTER INSERT ON patients
BEGIN UPDATE rule_input_changes SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER patients_update_changes_rule_input AFTER UPDATE ON patients
BEGIN UPDATE rule_input_changes SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER patients_delete_changes_rule_input AFTER DELETE ON patients
BEGIN UPDATE rule_input_changes SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER alert_state_insert_changes_rule_input AFTER INSERT ON alert_state
BEGIN UPDATE rule_input_changes SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER alert_state_update_changes_rule_input AFTER UPDATE ON alert_state
BEGIN UPDATE rule_input_changes SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER alert_state_delete_changes_rule_input AFTER DELETE ON alert_state
BEGIN UPDATE rule_input_changes SET version = version + 1 WHERE id = 1; END;
"#,
    ),
    (
        19,
        r#"
-- One B-tree less per reading. The report read a patient's readings in
-- time order through (patient, time); it now merges the patient's series,
-- each in time order, from (patient, metric, time). Every reading stored
-- dirtied a page of this index too: a fifth of the write volume.
DROP INDEX readings_patient_time;
"#,
    ),
    (
        20,
        r#"
-- Readings found by id without a random index write per reading. The two
-- indexes on id prefixes took every new reading into a random leaf each:
-- in a backlog a group commit dirtied nearly every leaf of both (most of a
-- large store's write volume). The writer now finds a re-sent reading
-- through (device, device time) or (device, content digest), where a
-- device's readings sit together; public lookups by reading or measurement
-- id go through `reading_keys`, which the writer fills in bulk (sorted, at
-- most once a second, in a transaction that stores readings anyway, and on
-- its heartbeat) up to the cursor `store.keys`. Readings after that cursor
-- are few and recent, and a lookup reads them in commit order.
DROP INDEX readings_key;
DROP INDEX readings_group;
CREATE INDEX readings_device_time ON readings(device_id, device_measured_at)
    WHERE device_measured_at IS NOT NULL;
CREATE TABLE reading_keys (
    key                 TEXT NOT NULL,                    -- reading_key or group_key of the reading
    seq                 INTEGER NOT NULL,                 -- readings.seq
    PRIMARY KEY (key, seq)
) WITHOUT ROWID;
INSERT OR IGNORE INTO reading_keys (key, seq)
SELECT key, seq FROM (
    SELECT reading_key AS key, seq FROM readings
    UNION ALL
    SELECT group_key AS key, seq FROM readings
) ORDER BY key, seq;
INSERT OR REPLACE INTO cursors (name, position, updated_at)
VALUES ('store.keys', (SELECT COALESCE(MAX(seq), 0) FROM readings),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
CREATE TRIGGER readings_delete_keys AFTER DELETE ON readings
BEGIN
    DELETE FROM reading_keys WHERE key IN (OLD.reading_key, OLD.group_key) AND seq = OLD.seq;
END;
"#,
    ),
];

/// Brings the schema up to date. Returns the version now in force.
pub fn migrate(conn: &mut Connection) -> Result<i64, StoreError> {
    migrate_to(conn, MIGRATIONS.last().map(|m| m.0).unwrap_or(0))
}

/// Applies the migrations up to `target` (the newest, except in the tests
/// of an upgrade).
fn migrate_to(conn: &mut Connection, target: i64) -> Result<i64, StoreError> {
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
    for (version, sql) in MIGRATIONS
        .iter()
        .filter(|(v, _)| *v > current && *v <= target)
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations(version, applied_at) VALUES (?1, ?2)",
            params![version, super::now_ms()],
        )?;
        tx.commit()?;
    }
    Ok(target.min(newest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::OptionalExtension as _;

    /// SQLite's plan for `sql` with the one parameter `value`, a line a step.
    fn plan(conn: &Connection, sql: &str, value: &str) -> String {
        conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map([value], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
            .join("\n")
    }

    fn insert(conn: &Connection, id: &str, group: &str, metric: &str) {
        conn.execute(
            "INSERT INTO readings (reading_id, group_id, patient_id, device_id, metric, value, unit, loinc,
                 measured_at, received_at, committed_at, source)
             VALUES (?1, ?2, 'p1', 'd1', ?3, 120, 'mm[Hg]', '8480-6', 1, 1, 1, 'mqtt')",
            params![id, group, metric],
        )
        .unwrap();
    }

    /// The rebuild that drops the unique reading id keeps every row, its
    /// sequence number and the sequence's high-water mark (a cursor past a
    /// deleted reading must never see its number again); the upgrades after
    /// it key every stored reading, which is then found by id.
    #[test]
    fn keyed_readings_keep_rows_and_the_sequence_high_water_mark() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("s.db")).unwrap();
        migrate_to(&mut conn, 16).unwrap();
        insert(&conn, "aaaaaaaa01", "gggggggg01", "systolic");
        insert(&conn, "aaaaaaaa02", "gggggggg01", "diastolic");
        insert(&conn, "bbbbbbbb01", "hhhhhhhh01", "body_weight");
        conn.execute("DELETE FROM readings WHERE seq = 3", [])
            .unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), MIGRATIONS.last().unwrap().0);

        let ids: Vec<(i64, String)> = conn
            .prepare("SELECT seq, reading_id FROM readings ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            ids,
            [(1, "aaaaaaaa01".to_string()), (2, "aaaaaaaa02".to_string())]
        );
        // The upgrade keys every stored reading (its id and its
        // measurement's) and moves the keys' cursor past them.
        let keyed: (i64, i64) = conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM reading_keys),
                        (SELECT position FROM cursors WHERE name = 'store.keys')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(keyed, (4, 2));
        insert(&conn, "cccccccc01", "iiiiiiii01", "body_weight");
        let seq: i64 = conn
            .query_row("SELECT MAX(seq) FROM readings", [], |r| r.get(0))
            .unwrap();
        assert_eq!(seq, 4, "the sequence goes on after the deleted reading");

        // Two ids sharing a prefix are told apart by the full id.
        let group = crate::store::queries::group_readings(&conn, "gggggggg01").unwrap();
        assert_eq!(group.len(), 2);
        assert!(crate::store::queries::group_readings(&conn, "gggggggg02")
            .unwrap()
            .is_empty());
        for query in [
            crate::store::queries::BY_ID,
            crate::store::queries::BY_GROUP,
        ] {
            let plan = plan(
                &conn,
                &format!("SELECT seq FROM readings WHERE {query}"),
                "aaaaaaaa01",
            );
            assert!(
                plan.contains("SEARCH reading_keys USING PRIMARY KEY (key=?)")
                    && plan.contains("SEARCH readings USING INTEGER PRIMARY KEY (rowid>?)"),
                "{plan}"
            );
        }
        let view: i64 = conn
            .query_row("SELECT COUNT(*) FROM readings_view", [], |r| r.get(0))
            .unwrap();
        assert_eq!(view, 3);
    }

    /// Without a (patient, time) index, a patient's readings still come in
    /// time order across series, merged from (patient, metric, time) with
    /// no sort, and a reader that stops early stops the scan.
    #[test]
    fn a_patient_s_readings_come_in_time_order_from_their_series() {
        use crate::store::queries;
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let index: Option<String> = conn
            .query_row(
                "SELECT name FROM sqlite_master WHERE name = 'readings_patient_time'",
                [],
                |r| r.get(0),
            )
            .optional()
            .unwrap();
        assert_eq!(index, None);
        let row = |id: &str, patient: &str, metric: &str, at: i64, annotations: &str| {
            conn.execute(
                "INSERT INTO readings (reading_id, group_id, patient_id, device_id, metric, value, unit, loinc,
                     measured_at, received_at, committed_at, source, annotations)
                 VALUES (?1, ?1, ?2, 'd1', ?3, 1, '1', '1', ?4, 1, 1, 'mqtt', ?5)",
                params![id, patient, metric, at, annotations],
            )
            .unwrap();
        };
        row("r1", "p1", "systolic", 30, "{}");
        row("r2", "p1", "body_weight", 10, r#"{"entry":"manual"}"#);
        row("r3", "p1", "diastolic", 20, "{}");
        row("r4", "p1", "body_weight", 40, "{}");
        row("r5", "p1", "systolic", 5, "{}");
        row("r6", "p2", "systolic", 1, "{}");
        assert_eq!(
            queries::patient_metrics(&conn, "p1").unwrap(),
            ["body_weight", "diastolic", "systolic"]
        );
        let mut seen = Vec::new();
        queries::PatientReadings::of(&conn, "p1")
            .unwrap()
            .each_time(6, 41, |ms, manual| {
                seen.push((ms, manual));
                true
            })
            .unwrap();
        assert_eq!(seen, [(10, true), (20, false), (30, false), (40, false)]);
        let mut first_two = Vec::new();
        queries::PatientReadings::of(&conn, "p1")
            .unwrap()
            .each_time(i64::MIN, i64::MAX, |ms, _| {
                first_two.push(ms);
                first_two.len() < 2
            })
            .unwrap();
        assert_eq!(first_two, [5, 10]);
        queries::PatientReadings::of(&conn, "p3")
            .unwrap()
            .each_time(i64::MIN, i64::MAX, |_, _| panic!("no readings"))
            .unwrap();
        row("r7", "p3", "systolic", 3, r#"{"entry":"manual"}"#);
        row("r8", "p3", "diastolic", 4, "{}");
        assert_eq!(
            queries::PatientReadings::of(&conn, "p3")
                .unwrap()
                .first_automatic()
                .unwrap(),
            Some(4)
        );
        assert_eq!(
            queries::PatientReadings::of(&conn, "p4")
                .unwrap()
                .first_automatic()
                .unwrap(),
            None
        );

        // The API's pages of a patient: the same merge, pages continuing
        // from the previous page's last (measured at, seq).
        let page = |after: Option<(i64, i64)>| {
            queries::readings_page(
                &conn,
                &queries::ReadingPage {
                    patient_id: Some("p1".into()),
                    after,
                    limit: 2,
                    ..Default::default()
                },
            )
            .unwrap()
            .iter()
            .map(|r| (r.reading_id.clone(), r.seq))
            .collect::<Vec<_>>()
        };
        let first = page(None);
        assert_eq!(first, [("r5".to_string(), 5), ("r2".to_string(), 2)]);
        let second = page(Some((10, 2)));
        assert_eq!(second, [("r3".to_string(), 3), ("r1".to_string(), 1)]);
        let search = |metrics: Option<Vec<String>>| {
            queries::search_readings(
                &conn,
                &queries::ReadingSearch {
                    patient_id: Some("p1".into()),
                    metrics,
                    limit: 10,
                    ..Default::default()
                },
            )
            .unwrap()
            .iter()
            .map(|r| r.reading_id.clone())
            .collect::<Vec<_>>()
        };
        assert_eq!(search(None), ["r5", "r2", "r3", "r1", "r4"]);
        let twice = vec!["systolic".to_string(), "systolic".into()];
        assert_eq!(search(Some(twice)), ["r5", "r1"]);
        assert!(search(Some(Vec::new())).is_empty());

        let mut f = queries::reading_times("p1", 0, 50);
        f.split("metric", vec!["a".into(), "b".into(), "c".into()]);
        let (sql, values) = f.statement("measured_at FROM readings", "1").unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(rusqlite::params_from_iter(values), |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(plan.iter().any(|l| l.contains("MERGE")), "{plan:?}");
        assert!(!plan.iter().any(|l| l.contains("TEMP B-TREE")), "{plan:?}");
        assert_eq!(
            plan.iter()
                .filter(|l| l.contains("readings_patient_metric_time"))
                .count(),
            3,
            "{plan:?}"
        );
    }
}
