//! The API's listening socket and its address file.
//!
//! `api.listen` is bound once per process. When the gateway starts on a
//! store it cannot use yet, the degraded server ([`super::degraded`]) serves
//! on the socket and then hands it to [`super::start`]: the address (a port
//! the system picked for port 0) and `api.address_file` stay the same, and a
//! client that connects in between waits in the backlog instead of being
//! refused.
//!
//! `api.address_file` tells a supervisor, a script or a test which address
//! that is, without racing the start: written once the socket is bound
//! (`127.0.0.1:41234` and a newline), whole (a temporary file renamed over
//! it), owner-only, and removed when the API stops cleanly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::net::TcpListener;

use super::config::ApiConfig;
use super::ApiStartError;

/// The bound API socket.
#[derive(Debug)]
pub struct Listener {
    socket: std::net::TcpListener,
    addr: SocketAddr,
}

impl Listener {
    /// Binds `api.listen` and writes `api.address_file` (when set).
    pub async fn bind(cfg: &ApiConfig) -> Result<Listener, ApiStartError> {
        let bind_error = |source| ApiStartError::Bind {
            addr: cfg.listen,
            source,
        };
        let listener = TcpListener::bind(cfg.listen).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let socket = listener.into_std().map_err(bind_error)?;
        if let Some(path) = &cfg.address_file {
            write_address_file(path, addr).map_err(|source| ApiStartError::AddressFile {
                path: path.clone(),
                source,
            })?;
        }
        Ok(Listener { socket, addr })
    }

    /// The address bound (the port is known even when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Another handle on the same socket, for a server that stops before
    /// the socket is handed on (the degraded one).
    pub(crate) fn shared(&self) -> Result<TcpListener, ApiStartError> {
        let addr = self.addr;
        self.socket
            .try_clone()
            .and_then(TcpListener::from_std)
            .map_err(|source| ApiStartError::Bind { addr, source })
    }

    /// The socket, for the server that keeps it.
    pub(crate) fn into_tokio(self) -> Result<TcpListener, ApiStartError> {
        let addr = self.addr;
        TcpListener::from_std(self.socket).map_err(|source| ApiStartError::Bind { addr, source })
    }
}

fn write_address_file(path: &Path, addr: SocketAddr) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // Left by a process that died between write and rename.
    if let Err(e) = std::fs::remove_file(&tmp) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(e);
        }
    }
    crate::store::files::write_private(&tmp, format!("{addr}\n").as_bytes())?;
    std::fs::rename(&tmp, path)
}

/// Removes `api.address_file` once nothing listens any more.
pub(crate) fn withdraw(cfg: &ApiConfig) {
    if let Some(path) = &cfg.address_file {
        if let Err(e) = std::fs::remove_file(path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "api: cannot remove the address file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn cfg(address_file: PathBuf) -> ApiConfig {
        ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            address_file: Some(address_file),
            ..ApiConfig::default()
        }
    }

    #[tokio::test]
    async fn port_zero_is_announced_in_the_address_file_and_withdrawn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.addr");
        // A temporary file left by a crash does not stand in the way.
        std::fs::write(dir.path().join("api.addr.tmp"), "junk").unwrap();
        let cfg = cfg(path.clone());
        let l = Listener::bind(&cfg).await.unwrap();
        let addr = l.addr();
        assert_ne!(addr.port(), 0);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{addr}\n"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.path().join("api.addr.tmp").exists());
        withdraw(&cfg);
        assert!(!path.exists());
        withdraw(&cfg);
    }

    #[tokio::test]
    async fn the_socket_outlives_a_server_that_stops_and_is_handed_on() {
        let dir = tempfile::tempdir().unwrap();
        let l = Listener::bind(&cfg(dir.path().join("api.addr")))
            .await
            .unwrap();
        let addr = l.addr();
        drop(l.shared().unwrap());
        // Connected while nobody accepts: waits in the backlog.
        let client = tokio::spawn(tokio::net::TcpStream::connect(addr));
        let kept = l.into_tokio().unwrap();
        let (_, peer) = kept.accept().await.unwrap();
        assert_eq!(peer, client.await.unwrap().unwrap().local_addr().unwrap());
    }

    #[tokio::test]
    async fn an_unwritable_address_file_fails_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let e = Listener::bind(&cfg(dir.path().join("missing/api.addr")))
            .await
            .unwrap_err();
        assert!(matches!(e, ApiStartError::AddressFile { .. }), "{e}");
    }
}
