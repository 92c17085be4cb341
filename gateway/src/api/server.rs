//! The accept loop: plain HTTP or HTTPS (rustls) over hyper's HTTP/1.1
//! server, with a bound on connections, a deadline for the TLS handshake
//! and the request headers (slow clients cannot hold connections), and a
//! graceful shutdown that lets requests in flight finish. Each client
//! address may hold at most `max_connections_per_client` of the
//! connections, so a few idle clients cannot take them all; every request
//! carries its client's address ([`ClientAddr`]) for the rate limits.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::edge::ProblemIo;
use super::limits::ClientAddr;
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Connections held per client address.
#[derive(Default)]
struct PerClient(Mutex<HashMap<IpAddr, usize>>);

/// One held connection; released on drop.
struct Held(Arc<PerClient>, IpAddr);

impl PerClient {
    fn take(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<Held> {
        let mut m = self.0.lock().ok()?;
        let n = m.entry(ip).or_default();
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(Held(self.clone(), ip))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut m) = (self.0).0.lock() {
            if let Some(n) = m.get_mut(&self.1) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.1);
                }
            }
        }
    }
}

/// How long requests in flight may take to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(10);

/// Connection bounds (`[api]`).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Connections served at once.
    pub max_connections: usize,
    /// Of which one client address may hold.
    pub per_client: usize,
    /// Time for the TLS handshake and the request headers.
    pub header_timeout: Duration,
}

impl From<&super::config::ApiConfig> for Bounds {
    fn from(cfg: &super::config::ApiConfig) -> Self {
        Bounds {
            max_connections: cfg.max_connections,
            per_client: cfg.max_connections_per_client,
            header_timeout: cfg.header_timeout,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    bounds: Bounds,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let Bounds {
        max_connections,
        per_client,
        header_timeout,
    } = bounds;
    let permits = Arc::new(Semaphore::new(max_connections));
    let clients = Arc::new(PerClient::default());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "api: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(held) = clients.take(peer.ip(), per_client) else {
            // Over its share: closed at once, the permit freed for others.
            metrics.api_rate_limited("connections");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let client = ClientAddr(peer.ip());
        let app = tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(client);
                req
            },
        );
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let _held = held;
            match tls {
                None => {
                    connection(
                        TokioIo::new(ProblemIo::new(stream)),
                        app,
                        header_timeout,
                        watcher,
                    )
                    .await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            connection(
                                TokioIo::new(ProblemIo::new(s)),
                                app,
                                header_timeout,
                                watcher,
                            )
                            .await
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "api: TLS handshake failed"),
                        Err(_) => tracing::debug!("api: TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN) => tracing::warn!("api: connections still open after the drain period"),
    }
}

async fn connection<I, S>(
    io: TokioIo<I>,
    app: S,
    header_timeout: Duration,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<
            axum::extract::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let service = TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(io, service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "api: connection ended with an error");
    }
}
