//! Wiring: builds the components from a validated config and runs them until
//! shutdown, then drains them in order (sources first, the writer last).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use crate::config::{Config, ConfigErrors};
use crate::decode::Decoder;
use crate::metrics::Metrics;
use crate::normalize::Normalizer;
use crate::pipeline::Pipeline;
use crate::sources::mqtt::{MqttError, MqttSource};
use crate::store::writer::{Writer, WriterConfig};
use crate::store::{Store, StoreError};

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
    /// The InfluxDB forwarder could not start.
    #[error(transparent)]
    Forward(#[from] crate::forward::sink::SinkError),
}

/// Builds the pipeline from config.
pub fn pipeline(config: &Config, metrics: Arc<Metrics>) -> Result<Pipeline, ConfigErrors> {
    let profiles = config.profile_set()?;
    Ok(Pipeline {
        decoder: Decoder::new(profiles, config.normalize.max_payload_bytes),
        normalizer: Normalizer::new(config.normalize.clock_policy()),
        metrics,
    })
}

/// Applies the config's device assignments. A device registered at run time
/// (CLI, API) keeps that assignment: config only fills in the devices the
/// registry does not know, or that config itself registered.
pub fn apply_config_devices(
    store: &mut Store,
    config: &Config,
    pipeline: &Pipeline,
) -> Result<(), StoreError> {
    for d in &config.devices {
        let existing = store.device(&d.id)?;
        if existing.as_ref().is_some_and(|e| e.origin != "config") {
            continue;
        }
        if existing.as_ref().and_then(|e| e.patient_id.as_deref()) == Some(d.patient.as_str()) {
            continue;
        }
        store.assign_device(&d.id, &d.patient, "config", |q| pipeline.reprocess(q))?;
    }
    Ok(())
}

/// Opens the store and writes what a run starts with (config devices,
/// patients and endpoints, the run's row); returns the store and the run id.
pub fn prepare_store(config: &Config, pipeline: &Pipeline) -> Result<(Store, i64), RunError> {
    let mut store = Store::open(&config.store.path)?;
    apply_config_devices(&mut store, config, pipeline)?;
    crate::rules::apply_config_patients(&mut store, config)?;
    crate::delivery::apply_config_endpoints(&mut store, config)?;
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
    let (store, run_id) = match prepare_store(&config, &pipeline) {
        Ok(s) => s,
        Err(e) if is_transient(&e, &config) => {
            match crate::api::degraded::wait_for_store(&config, &metrics, &e, &mut shutdown, || {
                prepare_store(&config, &pipeline)
            })
            .await?
            {
                Some(s) => s,
                // Stopped before the store came back.
                None => return Ok(()),
            }
        }
        Err(e) => return Err(e),
    };
    let evaluator = rules_evaluator(&config, metrics.clone())?;
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

    let downstream = spawn_forwarding(&config, &metrics, &stopped)?;

    let mut tasks = Vec::new();
    if let Some(mqtt) = config.sources.mqtt.clone() {
        let filters = pipeline.decoder.profiles().filters();
        let source = MqttSource::new(mqtt, filters, metrics.clone(), writer.clone());
        let stop = stopped();
        tasks.push(tokio::spawn(async move { source.run(stop).await }));
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
        let reload = crate::rules::task::reload_signal();
        tokio::spawn(crate::rules::task::run(
            cfg,
            evaluator,
            writer.committed(),
            reload,
            metrics.clone(),
            stopped(),
        ))
    });
    let dispatcher = dispatcher.map(|d| tokio::spawn(d.run(stopped())));

    (&mut shutdown).await;
    tracing::info!("shutdown requested; draining in-flight work");
    let _ = stop_tx.send(true);
    if let Some(api) = api {
        // Requests in flight finish (a pushed reading is committed and
        // answered) before the writer is closed.
        let _ = api.task.await;
    }
    let mut result = Ok(());
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            result = Err(RunError::Mqtt(e));
        }
    }
    if let Some(t) = rules_task {
        let _ = t.await;
    }
    if let Some(d) = dispatcher {
        let _ = d.await;
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
    let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
    tracing::info!("gateway stopped");
    result
}

/// The rule evaluator on its own store connection, when rules are enabled.
fn rules_evaluator(
    config: &Config,
    metrics: Arc<Metrics>,
) -> Result<
    Option<(
        crate::rules::evaluator::Evaluator,
        crate::rules::task::TaskConfig,
    )>,
    crate::rules::RulesError,
> {
    if !config.rules.enabled {
        return Ok(None);
    }
    let engine = Arc::new(crate::rules::engine(&config.rules)?);
    let cfg = crate::rules::evaluator::EvaluatorConfig {
        batch_readings: config.rules.batch_readings,
        ..Default::default()
    };
    let evaluator =
        crate::rules::evaluator::Evaluator::open(&config.store.path, engine, cfg, metrics)?
            .with_clock(config.rules.clock.into());
    if config.rules.clock == crate::config::RulesClock::Data {
        tracing::warn!(
            "rules.clock = \"data\": missing-data rules follow the newest stored reading, not the wall clock (replays, demos and tests only, never live monitoring)"
        );
    }
    let task = crate::rules::task::TaskConfig {
        rules_dir: config.rules.dir.clone(),
        engine: crate::rules::engine_config(&config.rules),
        missing_interval: config.rules.missing_interval,
    };
    Ok(Some((evaluator, task)))
}

/// Starts the InfluxDB forwarder (when configured) and the retention and
/// disk task, each on its own store connection.
fn spawn_forwarding<S, F>(
    config: &Config,
    metrics: &Arc<Metrics>,
    stopped: &S,
) -> Result<Vec<tokio::task::JoinHandle<()>>, RunError>
where
    S: Fn() -> F,
    F: Future<Output = ()> + Send + 'static,
{
    use crate::forward::{Forwarder, ForwarderConfig, InfluxSink, Retention};
    let mut tasks = Vec::new();
    let influx = config.forward.influxdb.as_ref();
    if let Some(cfg) = influx {
        let sink = InfluxSink::new(cfg)?;
        let fcfg = ForwarderConfig {
            batch_size: cfg.batch_size,
            flush_interval: cfg.flush_interval,
            max_backoff: cfg.max_backoff,
        };
        let forwarder = Forwarder::new(
            Store::open(&config.store.path)?,
            sink,
            fcfg,
            metrics.clone(),
        );
        let stop = stopped();
        tracing::info!(batch_size = cfg.batch_size, "forwarding to influxdb");
        tasks.push(tokio::spawn(async move {
            if let Err(e) = forwarder.run(stop).await {
                tracing::error!(error = %e, "influxdb forwarder stopped on a store error");
            }
        }));
    }
    let retention = Retention::new(
        Store::open(&config.store.path)?,
        config.retention.clone(),
        influx.is_some(),
        metrics.clone(),
    );
    tasks.push(tokio::spawn(retention.run(stopped())));
    Ok(tasks)
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

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
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
