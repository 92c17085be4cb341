//! Delivery: alerts reach care managers as signed webhooks.
//!
//! ```text
//! outbox ──► fanout ──► deliveries ──► dispatch (per-endpoint workers) ──► HTTPS POST
//!  (rules,    route by    one row per     retry policy, circuit breaker,     Standard Webhooks
//!   API)      filter      (event, endpoint) attempt log, dead letters        signatures
//! ```
//!
//! Everything is driven from the store: the fan-out follows the outbox after
//! the durable cursor `delivery.fanout` and inserts deliveries in the same
//! transaction as the cursor; a delivery is `pending` until an attempt's
//! outcome is committed, so an attempt in flight at a crash is simply
//! attempted again, with the same `webhook-id`.

pub mod breaker;
pub mod config;
pub mod dispatch;
pub mod endpoints;
pub mod fanout;
pub mod ops;
pub mod receiver;
pub mod retry;
pub mod route;
pub mod signing;
pub mod ssrf;

use crate::store::Store;

/// Start-up failures of delivery.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The HTTP client or TLS.
    #[error(transparent)]
    Dispatch(#[from] dispatch::DispatchError),
    /// A configured endpoint could not be stored.
    #[error("webhook `{id}`: {source}")]
    Endpoint {
        /// The endpoint's id.
        id: String,
        /// What went wrong storing it.
        source: endpoints::EndpointError,
    },
}

/// Brings the `[[webhooks]]` of the config into the store (see
/// [`endpoints::apply_config`]).
pub fn apply_config_endpoints(
    store: &mut Store,
    delivery: &config::DeliveryConfig,
    webhooks: &[config::WebhookConfig],
) -> Result<(), DeliveryError> {
    for w in webhooks {
        let err = |source| DeliveryError::Endpoint {
            id: w.id.clone(),
            source,
        };
        let new = w.to_endpoint().map_err(|message| {
            err(endpoints::EndpointError::Invalid {
                field: "secret",
                message,
            })
        })?;
        let tx = store
            .transaction()
            .map_err(|e| err(endpoints::EndpointError::Store(e)))?;
        endpoints::apply_config(&tx, &new, delivery.url_policy()).map_err(err)?;
        tx.commit()
            .map_err(|e| err(endpoints::EndpointError::Store(e.into())))?;
    }
    // Secrets written in plain text before sealing existed are sealed now.
    let err = |source| DeliveryError::Endpoint {
        id: "*".into(),
        source,
    };
    let tx = store
        .transaction()
        .map_err(|e| err(endpoints::EndpointError::Store(e)))?;
    endpoints::seal_plaintext(&tx).map_err(err)?;
    tx.commit()
        .map_err(|e| err(endpoints::EndpointError::Store(e.into())))?;
    Ok(())
}
