//! The web console in a real browser: headless Chromium from Debian driven
//! through chromedriver (WebDriver, with `fantoccini`), against the real
//! gateway binary fed over a real Mosquitto, with users made by the real
//! CLI. One chromedriver and one browser session walk through every page
//! in order (CI time): sign-in, the worklist's order, a patient's chart
//! drawing the stored points and the limit lines, acknowledging an alert,
//! claiming and completing a follow-up task, another team's patient as a
//! 404 page; then, with a plain HTTP client carrying the session cookie, a
//! form without its CSRF token refused; then a second gateway with a 2 s
//! idle timeout and a lock-out after 3 failures.
//!
//! Screenshots of the main pages go to `target/screenshots/`; with
//! `RPM_UPDATE_SCREENSHOTS=1` also to `docs/screenshots/` (committed, shown
//! in README and docs/console.md).

use crate::common;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use common::api_client as http;
use common::console::{add_user, raw, status};
use common::{wait_until, Gateway, Mosquitto};
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const NURSE_PASSWORD: &str = "north nurse password 1";

fn bp(broker: &Mosquitto, device: &str, at: DateTime<Utc>, sys: u32, dia: u32) {
    broker.publish(
        &format!("acme/bp/{device}"),
        format!(
            r#"{{"measured_at":"{}","sys":{sys},"dia":{dia},"pulse":70,"unit":"mmHg"}}"#,
            at.to_rfc3339_opts(SecondsFormat::Secs, true)
        )
        .as_bytes(),
    );
}

/// chromedriver on a port held for it while it starts.
struct Driver {
    port: u16,
    child: Option<Child>,
}

impl Driver {
    fn start(dir: &Path) -> Driver {
        let log = dir.join("chromedriver.log");
        let (port, child) = common::serve(
            "chromedriver",
            None,
            |port| {
                Command::new("chromedriver")
                    .arg(format!("--port={port}"))
                    .arg(format!("--log-path={}", log.display()))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect(
                        "chromedriver (Debian package chromium-driver; scripts/test installs it)",
                    )
            },
            common::listening,
            || common::tail(&log),
        );
        Driver {
            port,
            child: Some(child),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            common::terminate(c);
        }
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,1000", "--lang=en-US"]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session with headless Chromium")
}

fn screenshots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots")
}

/// Saves a PNG of the page to `target/screenshots/NAME.png` (and to
/// `docs/screenshots/` with `RPM_UPDATE_SCREENSHOTS=1`).
async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let dir = screenshots_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
    if std::env::var("RPM_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join(format!("{name}.png")), &png).unwrap();
    }
}

async fn text(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap(),
        Err(e) => panic!(
            "{css}: {e} on {}:\n{}",
            c.current_url().await.unwrap(),
            c.source().await.unwrap_or_default()
        ),
    }
}

/// Types `keys` into the field `css`.
async fn fill(c: &Client, css: &str, keys: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .send_keys(keys)
        .await
        .unwrap();
}

/// Clicks `css` (a submit button or a link) and waits until the browser
/// has left the page (the old document's root goes stale).
async fn click_and_wait(c: &Client, css: &str) {
    let old = c.find(Locator::Css("html")).await.unwrap();
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + T;
    while old.tag_name().await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "{css}: no new page");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The new document has loaded once it can be found.
    while c.find(Locator::Css("main")).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{css}: the new page did not load"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn sign_in(c: &Client, base: &str, user: &str, password: &str) {
    c.goto(&format!("{base}/console/signin")).await.unwrap();
    fill(c, "#username", user).await;
    fill(c, "#password", password).await;
    click_and_wait(c, "main form button[type=submit]").await;
}

#[test]
fn console_pages_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    // A webhook receiver that is never there: its deliveries fail.
    let nobody = common::PortHold::any();
    let extra = format!(
        "[delivery]\npoll_interval = \"50ms\"\nallow_private_network = true\nmax_attempts = 1\n{}\n[[patients]]\nid = \"p-north\"\ncare_plans = [\"hypertension\"]\ncare_team = \"north\"\n\n[[patients]]\nid = \"p-calm\"\ncare_plans = [\"hypertension\"]\ncare_team = \"north\"\n\n[[patients]]\nid = \"p-south\"\ncare_plans = [\"hypertension\"]\ncare_team = \"south\"\n{}",
        common::webhooks::webhook(
            "dead-end",
            &format!("http://127.0.0.1:{}/hook", nobody.port),
            common::webhooks::SECRET,
            "allow_private_network = true"
        ),
        http::api_config("")
    );
    let mut gw = Gateway::new(
        dir.path(),
        broker.port,
        &[
            ("cuff-n", "p-north"),
            ("cuff-c", "p-calm"),
            ("cuff-s", "p-south"),
        ],
        &extra,
    );
    add_user(&gw, "nurse", "care_team", &["north"], NURSE_PASSWORD);
    add_user(&gw, "installer", "admin", &[], NURSE_PASSWORD);
    let port = http::start_with_api(&mut gw);
    let base = format!("http://127.0.0.1:{port}");

    // Five days of readings: calm ones for all, then a crisis for p-north
    // and p-south (critical: an alert and a follow-up task each).
    let now = Utc::now();
    let mut north_points = 0;
    for day in (1..=5).rev() {
        for (dev, sys) in [("cuff-n", 128), ("cuff-c", 122), ("cuff-s", 125)] {
            bp(
                &broker,
                dev,
                now - TimeDelta::days(day) - TimeDelta::hours(1),
                sys + day as u32,
                80,
            );
        }
        north_points += 1;
    }
    bp(&broker, "cuff-n", now - TimeDelta::minutes(3), 192, 101);
    bp(&broker, "cuff-s", now - TimeDelta::minutes(3), 190, 100);
    north_points += 1;
    // A cuff nobody assigned yet: quarantined until the installer does.
    bp(&broker, "cuff-x", now - TimeDelta::minutes(30), 131, 84);
    wait_until("the crisis alerts and their tasks", T, || {
        gw.count("SELECT COUNT(*) FROM tasks WHERE patient_id IN ('p-north','p-south')") == 2
            && gw.quarantined("unknown_device") == 1
            && gw.count("SELECT COUNT(*) FROM deliveries WHERE status IN ('failed', 'dead')") > 0
    });
    let north_alert: String = gw
        .db()
        .query_row(
            "SELECT alert_id FROM alerts WHERE patient_id = 'p-north' AND rule_id = 'htn.crisis'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let south_alert: String = gw
        .db()
        .query_row(
            "SELECT alert_id FROM alerts WHERE patient_id = 'p-south'",
            [],
            |r| r.get(0),
        )
        .unwrap();

    let driver = Driver::start(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cookie = rt.block_on(async {
        let c = browser(&driver).await;

        // Signed out: every page sends the browser to sign in.
        c.goto(&format!("{base}/console/patients/p-north"))
            .await
            .unwrap();
        assert!(c
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/console/signin"));
        sign_in(&c, &base, "nurse", "wrong password here").await;
        assert!(text(&c, "#error")
            .await
            .contains("Wrong username or password"));
        sign_in(&c, &base, "nurse", NURSE_PASSWORD).await;
        assert_eq!(c.current_url().await.unwrap().path(), "/console/");

        // The worklist: the team's patients only, the crisis first.
        let rows = c
            .find_all(Locator::Css("#worklist tbody a.patient"))
            .await
            .unwrap();
        let mut order = Vec::new();
        for r in &rows {
            order.push(r.text().await.unwrap());
        }
        assert_eq!(
            order,
            ["p-north", "p-calm"],
            "north's patients, most urgent first"
        );
        screenshot(&c, "worklist").await;

        // One click to the patient: the systolic chart draws every stored
        // point, with the limit lines of the patient's rules.
        click_and_wait(&c, "#worklist tbody a.patient").await;
        assert_eq!(
            c.current_url().await.unwrap().path(),
            "/console/patients/p-north"
        );
        let fig = c.find(Locator::Css("#chart-systolic")).await.unwrap();
        assert_eq!(
            fig.attr("data-stored").await.unwrap().as_deref(),
            Some(north_points.to_string().as_str())
        );
        let points = c
            .find(Locator::Css("#chart-systolic polyline.series"))
            .await
            .unwrap()
            .attr("points")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(points.split(' ').count(), north_points, "{points}");
        let limits = c
            .find_all(Locator::Css("#chart-systolic line.limit"))
            .await
            .unwrap();
        let mut labels = Vec::new();
        for l in &limits {
            labels.push(
                l.find(Locator::Css("title"))
                    .await
                    .unwrap()
                    .html(true)
                    .await
                    .unwrap(),
            );
        }
        assert!(
            labels
                .iter()
                .any(|l| l.contains("htn.crisis") && l.contains("180")),
            "the crisis limit is drawn: {labels:?}"
        );
        let marks = c
            .find_all(Locator::Css("#chart-systolic circle.alert-mark"))
            .await
            .unwrap();
        assert_eq!(marks.len(), 1, "the crisis is marked on the curve");
        // The text alternative: the values as a table.
        let values = c
            .find_all(Locator::Css("#chart-systolic table.values tbody tr"))
            .await
            .unwrap();
        assert_eq!(values.len(), north_points);
        // The whole page, chart included, for the documentation.
        c.set_window_size(1280, 2000).await.unwrap();
        screenshot(&c, "patient").await;
        c.set_window_size(1280, 1000).await.unwrap();

        // The alert: evidence, then acknowledged with a note and a snooze.
        c.goto(&format!("{base}/console/alerts/{north_alert}"))
            .await
            .unwrap();
        assert_eq!(text(&c, "#alert-status").await, "firing");
        let page = c.source().await.unwrap();
        assert!(
            page.contains("8480-6") && page.contains("mm[Hg]"),
            "LOINC and UCUM of the evidence"
        );
        fill(&c, "#ack-note", "called the patient").await;
        c.find(Locator::Css("#snooze"))
            .await
            .unwrap()
            .select_by_value("2h")
            .await
            .unwrap();
        click_and_wait(&c, "#acknowledge").await;
        assert_eq!(text(&c, "#alert-status").await, "acknowledged");
        let ack = text(&c, "#alert-ack").await;
        assert!(
            ack.contains("user:nurse") && ack.contains("called the patient"),
            "{ack}"
        );
        screenshot(&c, "alert").await;

        // The follow-up task: claim, then complete with an outcome.
        let task: String = gw
            .db()
            .query_row(
                "SELECT task_id FROM tasks WHERE patient_id = 'p-north'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        c.goto(&format!("{base}/console/tasks/{task}"))
            .await
            .unwrap();
        click_and_wait(&c, "#claim").await;
        assert!(text(&c, "#task-status").await.starts_with("claimed"));
        c.find(Locator::Css("#outcome"))
            .await
            .unwrap()
            .select_by_value("advice_given")
            .await
            .unwrap();
        fill(&c, "#task-note", "advised to rest and re-measure").await;
        screenshot(&c, "task").await;
        click_and_wait(&c, "#complete").await;
        assert!(text(&c, "#task-status").await.starts_with("done"));
        assert_eq!(text(&c, "#task-outcome").await, "advice_given");

        // Care-team isolation: the other team's patient and alert are the
        // same 404 page as things that do not exist.
        for path in [
            "/console/patients/p-south".to_string(),
            format!("/console/alerts/{south_alert}"),
            "/console/patients/p-nobody".to_string(),
        ] {
            c.goto(&format!("{base}{path}")).await.unwrap();
            assert_eq!(text(&c, "main h1").await, "404", "{path}");
        }
        let page = c.source().await.unwrap();
        assert!(!page.contains("p-south"));

        // The phone layout renders (390 px wide).
        c.set_window_size(390, 844).await.unwrap();
        c.goto(&format!("{base}/console/patients/p-north"))
            .await
            .unwrap();
        screenshot(&c, "patient-phone").await;
        c.set_window_size(1280, 1000).await.unwrap();

        // A care-team user sees its patients' devices and no quarantine.
        c.goto(&format!("{base}/console/devices")).await.unwrap();
        let page = c.source().await.unwrap();
        assert!(page.contains("cuff-n") && !page.contains("cuff-s") && !page.contains("cuff-x"));
        assert!(c.find(Locator::Css("#quarantine")).await.is_err());
        c.goto(&format!("{base}/console/admin")).await.unwrap();
        assert_eq!(
            text(&c, "main h1").await,
            "403",
            "the admin page is not a care team's"
        );
        let cookie = c
            .get_named_cookie(gateway_cookie())
            .await
            .unwrap()
            .value()
            .to_string();

        // The installer: the quarantined cuff, its raw payload, then
        // assigned, which turns what it sent into readings.
        // (The nurse's session stays valid on the server for the CSRF
        // checks below; this browser forgets it.)
        c.delete_all_cookies().await.unwrap();
        sign_in(&c, &base, "installer", NURSE_PASSWORD).await;
        c.goto(&format!("{base}/console/devices")).await.unwrap();
        let reason = text(&c, "#quarantine tbody td:nth-of-type(4)").await;
        assert_eq!(reason, "unknown_device");
        click_and_wait(&c, "#quarantine tbody a").await;
        let payload = text(&c, "pre.payload").await;
        assert!(payload.contains("\"sys\":131"), "{payload}");
        c.goto(&format!("{base}/console/devices")).await.unwrap();
        screenshot(&c, "devices").await;
        fill(&c, "#device_id", "cuff-x").await;
        fill(&c, "#patient_id", "p-calm").await;
        click_and_wait(&c, "#assign").await;
        let notice = text(&c, "#notice").await;
        assert!(
            notice.contains("1 quarantined measurement(s) became readings"),
            "{notice}"
        );
        assert!(
            c.find(Locator::Css("#quarantine")).await.is_err()
                || !c.source().await.unwrap().contains("unknown_device")
        );
        // The admin page: delivery health with re-drive, users, the audit log.
        c.goto(&format!("{base}/console/admin")).await.unwrap();
        let page = c.source().await.unwrap();
        assert!(page.contains("dead-end") && page.contains("installer") && page.contains("nurse"));
        let audit = text(&c, "#audit").await;
        assert!(audit.contains("console.signin"), "{audit}");
        screenshot(&c, "admin").await;
        click_and_wait(&c, "#webhooks form button").await;
        assert!(text(&c, "#notice")
            .await
            .contains("deliveries queued again"));
        c.goto(&format!("{base}/console/admin?actor=user:nurse"))
            .await
            .unwrap();
        let audit = text(&c, "#audit").await;
        assert!(
            audit.contains("POST /console/alerts/{alert_id}/acknowledge"),
            "{audit}"
        );
        assert!(!audit.contains("user:installer"), "{audit}");

        click_and_wait(&c, "header form button[type=submit]").await;
        assert!(text(&c, "#notice").await.contains("You are signed out"));
        c.goto(&format!("{base}/console/")).await.unwrap();
        assert!(c
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/console/signin"));
        c.close().await.unwrap();
        cookie
    });

    assert_eq!(
        gw.count(
            "SELECT COUNT(*) FROM readings WHERE device_id = 'cuff-x' AND patient_id = 'p-calm'"
        ),
        3,
        "systolic, diastolic and pulse of the re-processed cuff"
    );
    // The acknowledgement is the API's: the same alert, by the user.
    let by: String = gw
        .db()
        .query_row(
            "SELECT acknowledged_by FROM alerts WHERE alert_id = ?1",
            [&north_alert],
            |r| r.get(0),
        )
        .unwrap();
    assert!(by.contains("user:nurse"), "{by}");
    assert!(
        gw.count("SELECT COUNT(*) FROM audit_log WHERE actor = 'user:nurse' AND action = 'POST /console/alerts/{alert_id}/acknowledge' AND patient_id = 'p-north' AND outcome = 303") == 1,
        "the action is audited with the user and the patient"
    );

    // Headers of every console page, and a form without its CSRF token.
    let session = format!("rpm_console={cookie}");
    let page = raw(port, "GET", "/console/", &[("Cookie", &session)], "");
    assert_eq!(status(&page), 200);
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert_eq!(page.header("referrer-policy"), Some("same-origin"));
    let south_task: String = gw
        .db()
        .query_row(
            "SELECT task_id FROM tasks WHERE patient_id = 'p-north'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let forged = raw(
        port,
        "POST",
        &format!("/console/alerts/{north_alert}/resolve"),
        &[("Cookie", &session)],
        "note=forged",
    );
    assert_eq!(status(&forged), 403, "no CSRF token");
    let wrong = raw(
        port,
        "POST",
        &format!("/console/tasks/{south_task}/claim"),
        &[("Cookie", &session)],
        &format!("csrf={}", "0".repeat(64)),
    );
    assert_eq!(status(&wrong), 403, "a wrong CSRF token");
    let status_now: String = gw
        .db()
        .query_row(
            "SELECT status FROM alerts WHERE alert_id = ?1",
            [&north_alert],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(status_now, "acknowledged", "the forged resolve did nothing");

    // A second gateway: a 2 s idle sign-out and a lock-out after 3 failures.
    let dir2 = tempfile::tempdir().unwrap();
    let mut gw2 = Gateway::with_config(
        dir2.path(),
        &format!(
            "[store]\npath = \"{{db}}\"\n\n[console]\nidle_timeout = \"2s\"\nlockout_after = 3\nlockout_base = \"10m\"\n\n{}",
            http::api_config("")
        ),
    );
    add_user(&gw2, "nurse", "care_team", &["north"], NURSE_PASSWORD);
    add_user(&gw2, "guessed", "read_only", &[], NURSE_PASSWORD);
    gw2.start_until("api listening", &[]);
    let port2 = gw2.api_port();
    let base2 = format!("http://127.0.0.1:{port2}");
    rt.block_on(async {
        let c = browser(&driver).await;
        sign_in(&c, &base2, "nurse", NURSE_PASSWORD).await;
        assert_eq!(c.current_url().await.unwrap().path(), "/console/");
        // Idle for longer than idle_timeout: the next page is the sign-in
        // page, saying why.
        tokio::time::sleep(Duration::from_millis(2300)).await;
        c.goto(&format!("{base2}/console/")).await.unwrap();
        assert!(c
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/console/signin"));
        let notice = text(&c, "#notice").await;
        assert!(
            notice.contains("signed out after 2s without activity"),
            "{notice}"
        );
        screenshot(&c, "signed-out").await;
        c.close().await.unwrap();
    });
    assert_eq!(
        gw2.count("SELECT COUNT(*) FROM audit_log WHERE actor = 'user:nurse' AND action = 'console.signout.idle'"),
        1
    );
    // Lock-out: 3 failures, then even the right password is refused for a
    // while (429), and the lock-out is audited.
    let form = |pw: &str| format!("username=guessed&password={}", pw.replace(' ', "+"));
    for _ in 0..3 {
        let r = raw(
            port2,
            "POST",
            "/console/signin",
            &[],
            &form("not the password"),
        );
        assert_eq!(status(&r), 401);
    }
    let r = raw(port2, "POST", "/console/signin", &[], &form(NURSE_PASSWORD));
    assert_eq!(status(&r), 429);
    assert!(String::from_utf8_lossy(&r.body).contains("Too many failed sign-ins"));
    assert!(r.header("set-cookie").is_none());
    assert_eq!(
        gw2.count("SELECT COUNT(*) FROM audit_log WHERE actor = 'user:guessed' AND action = 'console.signin.locked'"),
        1
    );
    // Another user is not affected.
    let ok = raw(
        port2,
        "POST",
        "/console/signin",
        &[],
        &format!(
            "username=nurse&password={}",
            NURSE_PASSWORD.replace(' ', "+")
        ),
    );
    assert_eq!(status(&ok), 303);
    let set = ok.header("set-cookie").unwrap_or_default().to_string();
    assert!(
        set.contains("HttpOnly")
            && set.contains("SameSite=Strict")
            && set.contains("Path=/console"),
        "{set}"
    );
    gw2.stop();
    gw.stop();
}

fn gateway_cookie() -> &'static str {
    "rpm_console"
}
