//! The API's own store connections.
//!
//! SQLite calls block, so they run on tokio's blocking pool, each holding one
//! of a few connections (WAL: readers never wait for the ingest writer).
//! Changes made by the API (assignments, patients, re-processing) are their
//! own short `BEGIN IMMEDIATE` transactions on these connections; readings
//! pushed over HTTP go through the shared writer instead, like MQTT input.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

use super::problem::ApiError;
use crate::store::Store;

/// A small pool of store connections.
pub struct Db {
    path: PathBuf,
    idle: Mutex<Vec<Store>>,
    permits: Semaphore,
}

impl Db {
    /// Opens `n` connections to the store at `path`.
    pub fn open(path: PathBuf, n: usize) -> Result<Arc<Db>, crate::store::StoreError> {
        let mut idle = Vec::with_capacity(n);
        for _ in 0..n {
            idle.push(Store::open(&path)?);
        }
        Ok(Arc::new(Db {
            path,
            idle: Mutex::new(idle),
            permits: Semaphore::new(n),
        }))
    }

    /// Runs `f` with a connection on the blocking pool.
    pub async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, ApiError> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ApiError::Unavailable("the API is shutting down".into()))?;
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let taken = db.idle.lock().ok().and_then(|mut v| v.pop());
            // A connection lost to a panic is replaced.
            let mut store = match taken {
                Some(s) => s,
                None => Store::open(&db.path)?,
            };
            let result = f(&mut store);
            if let Ok(mut v) = db.idle.lock() {
                v.push(store);
            }
            result
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "api: store task failed");
            ApiError::Internal
        })?
    }
}
