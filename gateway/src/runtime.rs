//! Wiring: builds the components from a validated config and runs them until
//! shutdown, then drains them in order (sources first, the writer last).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

use crate::api::listener::Listener;
use crate::backoff::Backoff;
use crate::config::{Config, ConfigErrors};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::sources::mqtt::{MqttError, MqttSource};
use crate::store::writer::{Writer, WriterConfig};
use crate::store::{now_ms, registry, Store, StoreError};
use rusqlite::Transaction;

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The MQTT source could not start.
    #[error(transparent)]
    Mqtt(#[from] MqttError),
    /// The HTTP API could not start.
    #[error(transparent)]
    Api(#[from] crate::api::ApiStartError),
    /// The rule stage could not start.
    #[error(transparent)]
    Rules(#[from] crate::rules::RulesError),
    /// Webhook delivery could not start.
    #[error(transparent)]
    Delivery(#[from] crate::delivery::DeliveryError),
    /// The risk stage could not start.
    #[error(transparent)]
    Risk(#[from] crate::care::risk::RiskError),
    /// The InfluxDB forwarder could not start.
    #[error(transparent)]
    Forward(#[from] crate::forward::sink::SinkError),
    /// The upstream link could not be set up.
    #[error(transparent)]
    Upstream(#[from] crate::forward::upstream::UpstreamError),
    /// The FHIR push could not start (its key, token or URL).
    #[error(transparent)]
    FhirAuth(#[from] crate::forward::fhir::auth::AuthError),
    /// The FHIR push's HTTP client could not be built.
    #[error("forward.fhir: {0}")]
    FhirClient(String),
    /// A component the gateway cannot work without stopped on its own.
    #[error("the {0} stopped unexpectedly; the gateway stopped with it (its service manager restarts it whole)")]
    ComponentStopped(&'static str),
}

/// Tells the supervisor when a component's task ends, however it ends
/// (returned, failed or panicked: the guard is dropped while unwinding).
struct Ended {
    component: &'static str,
    to: mpsc::UnboundedSender<&'static str>,
}

impl Drop for Ended {
    fn drop(&mut self) {
        let _ = self.to.send(self.component);
    }
}

/// Spawns `task` as `component`, watched by the supervisor.
fn supervised<T: Send + 'static>(
    component: &'static str,
    ended: &mpsc::UnboundedSender<&'static str>,
    task: impl Future<Output = T> + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    let guard = Ended {
        component,
        to: ended.clone(),
    };
    tokio::spawn(async move {
        let _guard = guard;
        task.await
    })
}

/// Builds the pipeline from config.
pub fn pipeline(config: &Config, metrics: Arc<Metrics>) -> Result<Pipeline, ConfigErrors> {
    let questionnaires = config.questionnaires.load().map_err(ConfigErrors)?;
    Ok(
        Pipeline::new(config.profile_set()?, &config.normalize, metrics)
            .with_questionnaires(questionnaires),
    )
}

/// Applies the config's device assignments. A device registered at run time
/// (CLI, API) keeps that assignment: config only fills in the devices the
/// registry does not know, or that config itself registered.
pub fn apply_config_devices(
    store: &mut Store,
    config: &Config,
    pipeline: &Pipeline,
) -> Result<(), StoreError> {
    let tx = store.transaction()?;
    config_devices_in(&tx, config, pipeline)?;
    Ok(tx.commit()?)
}

/// [`apply_config_devices`] inside the caller's transaction.
fn config_devices_in(
    tx: &Transaction<'_>,
    config: &Config,
    pipeline: &Pipeline,
) -> Result<(), StoreError> {
    let decode = |q: &_| pipeline.reprocess(q);
    for d in &config.devices {
        let existing = registry::device(tx, &d.id)?;
        if existing.as_ref().is_some_and(|e| e.origin != "config") {
            continue;
        }
        if existing.as_ref().and_then(|e| e.patient_id.as_deref()) == Some(d.patient.as_str()) {
            continue;
        }
        registry::assign_in(tx, &d.id, &d.patient, "config", now_ms(), &decode)?;
    }
    Ok(())
}

/// Opens the store and writes what a run starts with (config devices,
/// patients and endpoints, the run's row); returns the store and the run id.
/// The devices and patients go in one transaction: a program hub's config
/// lists thousands, and a transaction (an `fsync`) each made a start take
/// seconds.
pub fn prepare_store(config: &Config, pipeline: &Pipeline) -> Result<(Store, i64), RunError> {
    let mut store = Store::open(&config.store.path)?;
    let tx = store.transaction()?;
    config_devices_in(&tx, config, pipeline)?;
    crate::rules::apply_config_patients(&tx, &config.patients)?;
    tx.commit().map_err(StoreError::from)?;
    crate::delivery::apply_config_endpoints(&mut store, &config.delivery, &config.webhooks)?;
    let run_id = store.start_run()?;
    Ok((store, run_id))
}

/// The store error behind a start-up failure, if that is what it is.
pub fn store_error(e: &RunError) -> Option<&StoreError> {
    match e {
        RunError::Store(e) | RunError::Rules(crate::rules::RulesError::Store(e)) => Some(e),
        RunError::Delivery(crate::delivery::DeliveryError::Endpoint {
            source: crate::delivery::endpoints::EndpointError::Store(e),
            ..
        }) => Some(e),
        _ => None,
    }
}

/// Whether a start-up failure may cure itself (a full disk, an I/O error):
/// the gateway then waits for it in a degraded mode instead of exiting.
pub(crate) fn is_transient(e: &RunError, config: &Config) -> bool {
    store_error(e).is_some_and(|s| s.is_transient() || s.is_out_of_space_at(&config.store.path))
}

/// Runs the gateway until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::default());
    let pipeline = Arc::new(pipeline(&config, metrics.clone())?);
    tokio::pin!(shutdown);
    // The degraded API's socket, handed on to the API proper.
    let (store, run_id, api_listener) = match prepare_store(&config, &pipeline) {
        Ok((store, run_id)) => (store, run_id, None),
        Err(e) if is_transient(&e, &config) => {
            match wait_for_store(&config, &metrics, &e, &mut shutdown, || {
                prepare_store(&config, &pipeline)
            })
            .await?
            {
                Some(((store, run_id), listener)) => (store, run_id, listener),
                // Stopped before the store came back.
                None => return Ok(()),
            }
        }
        Err(e) => return Err(e),
    };
    // Built before anything starts, so that a TLS or client error stops start-up cleanly.
    let dispatcher = match config.delivery.enabled {
        true => Some(
            crate::delivery::dispatch::Dispatcher::new(
                Store::open(&config.store.path)?,
                &config.delivery,
                metrics.clone(),
            )
            .map_err(crate::delivery::DeliveryError::from)?,
        ),
        false => None,
    };
    let follow_up = follow_up(&config)?;
    let evaluator = rules_evaluator(
        &config,
        metrics.clone(),
        dispatcher.as_ref().map(|d| d.waker()),
        follow_up.clone(),
    )?;
    let escalator = match &follow_up {
        Some(f) => {
            let mut e = crate::care::escalation::Escalator::open(
                &config.store.path,
                f.clone(),
                config.rules.clock.into(),
            )?;
            if let Some(d) = &dispatcher {
                e = e.with_delivery_waker(d.waker());
            }
            Some(e)
        }
        None => None,
    };
    let risk = risk_stage(&config)?;
    // The hub's watch on the home boxes that push to it (boxes appear
    // only once one has pushed or pulled; without any, it only looks).
    let box_watch = match config.api.enabled {
        true => {
            let mut w = crate::forward::boxes::BoxWatch::open(
                &config.store.path,
                config.upstream_intake.clone(),
            )?;
            if let Some(d) = &dispatcher {
                w = w.with_delivery_waker(d.waker());
            }
            Some(w)
        }
        false => None,
    };
    // Vendor-cloud integrations that fall silent (integration.stale).
    let integration_watch = match config.api.enabled && !config.integrations.is_empty() {
        true => {
            let mut w = crate::api::integrations::watch::IntegrationWatch::open(
                &config.store.path,
                config.integrations.clone(),
            )?;
            if let Some(d) = &dispatcher {
                w = w.with_delivery_waker(d.waker());
            }
            Some(w)
        }
        false => None,
    };
    tracing::info!(
        store = %config.store.path.display(),
        profiles = pipeline.decoder.profiles().len(),
        encrypted = config.store.encryption,
        "gateway starting"
    );
    if config.store.encryption {
        let source = crate::store::secrets::source_for(&config.store.path);
        if matches!(source, crate::store::secrets::KeySource::NextToStore(_)) {
            tracing::warn!(key = %source, "the store is encrypted with a key kept next to it: that protects copies of the store file, not a stolen disk; give the key from elsewhere (store.key_file on another medium, RPM_STORE_KEY, the systemd credential rpm-store-key)");
        } else {
            tracing::info!(key = %source, "the store is encrypted at rest");
        }
    }
    let wcfg = WriterConfig {
        max_batch_items: config.store.max_batch_items,
        queue: config.store.queue,
        dedup_window: config.store.dedup_window,
    };
    let stage: Box<dyn crate::store::writer::Stage> = Box::new(
        crate::pipeline::inbox::NormalizeStage::new(pipeline.clone(), config.store.dedup_window),
    );
    let (writer, writer_thread) = Writer::start(store, wcfg, metrics.clone(), Some(stage));
    // The supervisor: the components the gateway cannot work without
    // (the writer, the MQTT source, the rule evaluator, the webhook
    // dispatcher, the risk stage) report here when their task ends. One that ends before
    // shutdown was asked for stops the whole process with an error, so that
    // the service manager restarts it, instead of running on without it
    // (acknowledging nothing, or alerting no one, while looking healthy).
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<&'static str>();
    let writer_thread = supervised("store writer", &ended_tx, async move {
        let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let heartbeat = {
        let writer = writer.clone();
        let stop = stopped();
        tokio::spawn(async move {
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(Duration::from_secs(15)) => writer.heartbeat(run_id, false).await,
                }
            }
        })
    };

    let downstream = spawn_forwarding(&config, &metrics, &pipeline, &stopped)?;

    let mut tasks = Vec::new();
    if let Some(mqtt) = config.sources.mqtt.clone() {
        let filters = pipeline.decoder.profiles().filters();
        let source = MqttSource::new(mqtt, filters, metrics.clone(), writer.clone());
        let stop = stopped();
        tasks.push(supervised("MQTT source", &ended_tx, async move {
            source.run(stop).await
        }));
    }
    let mut ble_task = None;
    if let Some(ble) = config.sources.ble.clone().filter(|b| b.enabled) {
        if let Some(source) = ble_source(&config, ble, &pipeline, &writer) {
            let stop = stopped();
            ble_task = Some(tokio::spawn(source.run(stop)));
        }
    }
    if tasks.is_empty() && ble_task.is_none() {
        tracing::warn!("no source configured: nothing will be ingested");
    }

    let api = if config.api.enabled {
        Some(
            crate::api::start(
                &config,
                api_listener,
                writer.clone(),
                pipeline.clone(),
                metrics.clone(),
                stopped(),
            )
            .await?,
        )
    } else {
        None
    };
    let rules_task = evaluator.map(|(evaluator, cfg)| {
        let reload = crate::rules::worker::reload_signal();
        supervised(
            "rule evaluator",
            &ended_tx,
            crate::rules::worker::run(
                cfg,
                evaluator,
                writer.committed(),
                reload,
                metrics.clone(),
                stopped(),
            ),
        )
    });
    let escalator = escalator.map(|e| {
        supervised(
            "follow-up escalator",
            &ended_tx,
            crate::care::escalation::run(e, config.care.check_interval, metrics.clone(), stopped()),
        )
    });
    let dispatcher =
        dispatcher.map(|d| supervised("webhook dispatcher", &ended_tx, d.run(stopped())));
    let box_watch = box_watch.map(|w| {
        supervised(
            "box watch",
            &ended_tx,
            crate::forward::boxes::run(w, stopped()),
        )
    });
    let integration_watch = integration_watch.map(|w| {
        supervised(
            "integration watch",
            &ended_tx,
            crate::api::integrations::watch::run(w, stopped()),
        )
    });
    let risk_task = risk.map(|s| {
        supervised(
            "risk stage",
            &ended_tx,
            s.run(config.rules.dir.clone(), stopped()),
        )
    });
    drop(ended_tx);

    let unexpected = tokio::select! {
        _ = &mut shutdown => None,
        Some(component) = ended_rx.recv() => Some(component),
    };
    match unexpected {
        None => tracing::info!("shutdown requested; draining in-flight work"),
        Some(component) => tracing::error!(
            component,
            "a component stopped unexpectedly; the gateway stops (draining in-flight work) so that its service manager restarts it"
        ),
    }
    let _ = stop_tx.send(true);
    if let Some(api) = api {
        // Requests in flight finish (a pushed reading is committed and
        // answered) before the writer is closed.
        let _ = api.task.await;
    }
    let mut result = match unexpected {
        Some(component) => Err(RunError::ComponentStopped(component)),
        None => Ok(()),
    };
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            result = Err(RunError::Mqtt(e));
        }
    }
    if let Some(t) = rules_task {
        let _ = t.await;
    }
    if let Some(e) = escalator {
        let _ = e.await;
    }
    if let Some(d) = dispatcher {
        let _ = d.await;
    }
    if let Some(t) = risk_task {
        let _ = t.await;
    }
    if let Some(t) = box_watch {
        let _ = t.await;
    }
    if let Some(t) = integration_watch {
        let _ = t.await;
    }
    for t in downstream {
        let _ = t.await;
    }
    if let Some(t) = ble_task {
        let _ = t.await;
    }
    let _ = heartbeat.await;
    writer.heartbeat(run_id, true).await;
    drop(writer);
    let _ = writer_thread.await;
    tracing::info!("gateway stopped");
    result
}

/// The care loop's policy and calendars, when the care loop and the rules
/// are on (tasks open from alerts).
fn follow_up(config: &Config) -> Result<Option<Arc<crate::care::FollowUp>>, RunError> {
    if !(config.care.enabled && config.rules.enabled) {
        return Ok(None);
    }
    let policy =
        crate::care::Policy::load(config.care.policy.as_deref(), config.rules.dir.as_deref())
            .map_err(|e| RunError::Config(crate::config::ConfigErrors(e)))?;
    Ok(Some(Arc::new(crate::care::FollowUp {
        policy,
        care: config.care.clone(),
    })))
}

/// The rule evaluator on its own store connection, when rules are enabled.
fn rules_evaluator(
    config: &Config,
    metrics: Arc<Metrics>,
    delivery: Option<Arc<tokio::sync::Notify>>,
    follow_up: Option<Arc<crate::care::FollowUp>>,
) -> Result<
    Option<(
        crate::rules::evaluator::Evaluator,
        crate::rules::worker::WorkerConfig,
    )>,
    crate::rules::RulesError,
> {
    if !config.rules.enabled {
        return Ok(None);
    }
    let engine = Arc::new(crate::rules::engine(&config.rules)?);
    let cfg = crate::rules::evaluator::EvaluatorConfig {
        batch_readings: config.rules.batch_readings,
        retention_keep: config.retention.keep,
        ..Default::default()
    };
    let mut evaluator =
        crate::rules::evaluator::Evaluator::open(&config.store.path, engine, cfg, metrics)?
            .with_clock(config.rules.clock.into());
    if let Some(d) = delivery {
        evaluator = evaluator.with_delivery_waker(d);
    }
    if let Some(f) = follow_up {
        evaluator = evaluator.with_follow_up(f);
    }
    if config.rules.clock == crate::config::RulesClock::Data {
        tracing::warn!(
            "rules.clock = \"data\": missing-data rules follow the newest stored reading, not the wall clock (replays, demos and tests only, never live monitoring)"
        );
    }
    let worker = crate::rules::worker::WorkerConfig {
        rules_dir: config.rules.dir.clone(),
        engine: crate::rules::engine_config(&config.rules),
        missing_interval: config.rules.missing_interval,
    };
    Ok(Some((evaluator, worker)))
}

/// The risk stage (risk tiers) on its own store connection, when enabled.
fn risk_stage(
    config: &Config,
) -> Result<Option<crate::care::risk::RiskStage>, crate::care::risk::RiskError> {
    if !config.care.risk.enabled {
        return Ok(None);
    }
    let rules = Arc::new(crate::rules::load_rule_set(config.rules.dir.as_deref())?);
    Ok(Some(crate::care::risk::RiskStage::open(
        &config.store.path,
        rules,
        config.care.clone(),
    )?))
}

/// Starts the InfluxDB and upstream forwarders (when configured) and the
/// retention and disk task, each on its own store connection.
fn spawn_forwarding<S, F>(
    config: &Config,
    metrics: &Arc<Metrics>,
    pipeline: &Arc<Pipeline>,
    stopped: &S,
) -> Result<Vec<tokio::task::JoinHandle<()>>, RunError>
where
    S: Fn() -> F,
    F: Future<Output = ()> + Send + 'static,
{
    use crate::forward::forwarder::Sink;
    use crate::forward::{ForwarderConfig, InfluxSink, Retention, UpstreamSink};
    let mut tasks = Vec::new();
    let mut cursors = Vec::new();
    if let Some(cfg) = &config.forward.influxdb {
        let sink = InfluxSink::new(cfg)?;
        let fcfg = ForwarderConfig {
            batch_size: cfg.batch_size,
            flush_interval: cfg.flush_interval,
            max_backoff: cfg.max_backoff,
        };
        tracing::info!(batch_size = cfg.batch_size, "forwarding to influxdb");
        cursors.push(InfluxSink::CURSOR);
        tasks.push(spawn_forwarder(config, sink, fcfg, metrics, stopped())?);
    }
    if let Some(cfg) = &config.forward.upstream {
        let health = crate::forward::upstream::HealthHeaders {
            metrics: metrics.clone(),
            ble: config.sources.ble.as_ref().is_some_and(|b| b.enabled),
        };
        let sink = UpstreamSink::new(cfg, health.clone())?;
        let fcfg = ForwarderConfig {
            batch_size: cfg.batch_size,
            flush_interval: cfg.flush_interval,
            max_backoff: cfg.max_backoff,
        };
        // The URL names the hub, not a patient; the token is never logged.
        tracing::info!(batch_size = cfg.batch_size, hub = %cfg.url, "forwarding to the upstream hub");
        cursors.push(UpstreamSink::CURSOR);
        tasks.push(spawn_forwarder(config, sink, fcfg, metrics, stopped())?);
        let link = Arc::new(crate::forward::hub::HubLink::new(cfg, health)?);
        if cfg.share {
            let (store, pipeline, stop) = (
                Store::open(&config.store.path)?,
                pipeline.clone(),
                stopped(),
            );
            let link = link.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = crate::forward::hub::run_share(link, store, pipeline, stop).await {
                    tracing::error!(error = %e, "the hub share link stopped on a store error");
                }
            }));
        }
        if cfg.quarantine {
            let (store, metrics, stop) =
                (Store::open(&config.store.path)?, metrics.clone(), stopped());
            tasks.push(tokio::spawn(async move {
                if let Err(e) =
                    crate::forward::hub::run_quarantine(link, store, metrics, stop).await
                {
                    tracing::error!(error = %e, "the hub quarantine link stopped on a store error");
                }
            }));
        }
        if config.rules.enabled {
            tracing::warn!("rules are enabled on a home box: its alerts are not reconciled with the hub's (the hub runs the rules for every patient; see docs/home-boxes.md)");
        }
    }
    if let Some(cfg) = &config.forward.fhir {
        let auth = crate::forward::fhir::auth::Auth::from_config(&cfg.auth)?;
        let client =
            crate::forward::fhir::client::FhirClient::new(&cfg.base_url, auth, cfg.timeout)
                .map_err(RunError::FhirClient)?;
        let push = crate::forward::fhir::FhirPush::new(
            Store::open(&config.store.path)?.streaming()?,
            client,
            cfg.clone(),
            config.fhir.clone(),
            metrics.clone(),
        );
        // The base URL names the EHR, not a patient.
        tracing::info!(batch_size = cfg.batch_size, base_url = %cfg.base_url, "pushing to the FHIR server");
        if cfg.pushes(crate::forward::fhir::config::Push::Readings) {
            cursors.push(crate::forward::fhir::push::CURSOR);
        }
        let stop = stopped();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = push.run(stop).await {
                tracing::error!(error = %e, "the FHIR push stopped on a store error");
            }
        }));
    }
    let retention = Retention::new(
        Store::open(&config.store.path)?,
        config.retention.clone(),
        cursors,
        metrics.clone(),
    );
    tasks.push(tokio::spawn(retention.run(stopped())));
    Ok(tasks)
}

/// Runs a forwarder to `sink` on its own store connection until `stop`.
fn spawn_forwarder<K: crate::forward::forwarder::Sink>(
    config: &Config,
    sink: K,
    fcfg: crate::forward::ForwarderConfig,
    metrics: &Arc<Metrics>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, RunError> {
    let forwarder = crate::forward::Forwarder::new(
        Store::open(&config.store.path)?.streaming()?,
        sink,
        fcfg,
        metrics.clone(),
    );
    Ok(tokio::spawn(async move {
        if let Err(e) = forwarder.run(stop).await {
            tracing::error!(error = %e, sink = K::NAME, "forwarder stopped on a store error");
        }
    }))
}

/// The BLE source on the real radio (btleplug on BlueZ), or `None` (with a
/// clear log line) in a build without the `ble` feature.
fn ble_source(
    config: &Config,
    ble: crate::config::BleConfig,
    pipeline: &Arc<Pipeline>,
    writer: &Writer,
) -> Option<crate::sources::ble::BleSource> {
    #[cfg(feature = "ble")]
    {
        let profiles = config.ble_profiles().ok()?;
        let transport = Arc::new(crate::sources::ble::btleplug::BtleplugTransport::new(
            ble.adapter.clone(),
            ble.reconnect_max_backoff,
        ));
        Some(crate::sources::ble::BleSource::new(
            ble,
            profiles,
            transport,
            pipeline.clone(),
            writer.clone(),
            Some(config.store.path.clone()),
            config
                .normalize
                .utc_offset()
                .unwrap_or(chrono::FixedOffset::east_opt(0)?),
        ))
    }
    #[cfg(not(feature = "ble"))]
    {
        let _ = (config, ble, pipeline, writer);
        tracing::warn!("[sources.ble] is configured but this build has no BLE support (feature `ble`); other sources keep running");
        None
    }
}

/// Resolves on SIGINT or SIGTERM. Call it inside the runtime: the
/// handlers are installed by the call, not when the future is first polled,
/// so a signal that arrives while the gateway starts (before the supervisor
/// waits for it) stops it gracefully instead of killing it.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let handlers =
            signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)));
        async move {
            match handlers {
                Ok((mut int, mut term)) => tokio::select! {
                    _ = int.recv() => {},
                    _ = term.recv() => {},
                },
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Opens the store named in a config file (CLI commands).
pub fn open_store(config: &Config) -> Result<Store, StoreError> {
    Store::open(&config.store.path)
}

/// Loads a config file, or the defaults when `path` is None.
pub fn load_config(path: Option<&Path>) -> Result<Config, ConfigErrors> {
    match path {
        Some(p) => Config::load(p),
        None => Ok(Config::default()),
    }
}

/// Degraded mode (see [`crate::api::degraded`]): the gateway is up, its
/// store is not (yet) usable.
/// Longest wait between attempts to open the store.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Serves the degraded API (when enabled) and retries `attempt` until it
/// succeeds (`Some`, with the API's socket to hand on to [`crate::api::start`]),
/// fails for a reason time will not cure (`Err`), or `shutdown` resolves
/// (`None`).
async fn wait_for_store<T, S>(
    config: &Config,
    metrics: &Arc<Metrics>,
    first: &RunError,
    shutdown: &mut Pin<&mut S>,
    mut attempt: impl FnMut() -> Result<T, RunError>,
) -> Result<Option<(T, Option<Listener>)>, RunError>
where
    S: Future<Output = ()>,
{
    let path = &config.store.path;
    let reason = |e: &RunError| {
        store_error(e)
            .map(|s| s.reason_at(path))
            .unwrap_or_else(|| e.to_string())
    };
    metrics.set_store_unavailable(Some(reason(first)));
    tracing::error!(error = %first, "cannot start on this store; waiting in a degraded mode (health and metrics served, readiness 503, nothing ingested or acknowledged) and retrying at growing intervals up to 5 s; logged once");
    let (stop_tx, stop_rx) = watch::channel(false);
    let (server, listener) = match config.api.enabled {
        true => {
            let (task, listener) =
                crate::api::degraded::serve(&config.api, metrics.clone(), stop_rx).await?;
            (Some(task), Some(listener))
        }
        false => (None, None),
    };
    let mut backoff = Backoff::new(Duration::from_millis(500), MAX_RETRY);
    let mut attempts = 0u64;
    let outcome = loop {
        tokio::select! {
            _ = shutdown.as_mut() => break Ok(None),
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
        attempts += 1;
        match attempt() {
            Ok(t) => break Ok(Some(t)),
            Err(e) if is_transient(&e, config) => {
                tracing::debug!(error = %e, attempts, "store still unavailable");
                metrics.set_store_unavailable(Some(reason(&e)));
            }
            Err(e) => break Err(e),
        }
    };
    let _ = stop_tx.send(true);
    if let Some(task) = server {
        let _ = task.await;
    }
    match outcome {
        Ok(Some(t)) => {
            metrics.set_store_unavailable(None);
            tracing::info!(attempts, "store available again; starting");
            Ok(Some((t, listener)))
        }
        other => {
            if listener.is_some() {
                crate::api::listener::withdraw(&config.api);
            }
            other.map(|_| None)
        }
    }
}
