//! Problem documents for the refusals hyper makes itself.
//!
//! A request that cannot be parsed (a NUL in the path, a URI or header
//! block over the limits, too many headers) never reaches the router:
//! hyper answers it with an empty 400, 414 or 431 and closes. Clients and
//! monitoring then get no machine-readable reason, unlike every other
//! refusal of the API. [`ProblemIo`] sits under hyper on each connection
//! and replaces such a bodiless answer by an RFC 9457 problem document.
//! It recognizes hyper's own answers by what they lack: every response the
//! router makes passes through the outermost middleware, which always sets
//! `x-content-type-options`.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::problem::{Problem, PROBLEM_JSON};

/// Unread request bytes discarded before closing after a refusal, so the
/// close is a FIN the client reads the answer before, not a reset.
const DRAIN_LIMIT: usize = 1 << 20;

/// A connection whose hyper-made error answers become problem documents.
pub struct ProblemIo<I> {
    inner: I,
    /// The replacement answer still to write, and how much is written.
    pending: Option<(Vec<u8>, usize)>,
    /// An answer was replaced: the connection is closing.
    replaced: bool,
}

impl<I> ProblemIo<I> {
    /// Wraps a connection.
    pub fn new(inner: I) -> Self {
        ProblemIo {
            inner,
            pending: None,
            replaced: false,
        }
    }
}

/// The status of a bodiless error head written by hyper, if `buf` is one.
fn hyper_error(buf: &[u8]) -> Option<u16> {
    let rest = buf.strip_prefix(b"HTTP/1.1 ")?;
    let status: u16 = std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()?;
    if !(400..600).contains(&status) {
        return None;
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    (!head.contains("\r\nx-content-type-options:") && head.contains("\r\ncontent-length: 0"))
        .then_some(status)
}

/// The replacement answer for `status`.
fn answer(status: u16) -> Vec<u8> {
    let (slug, detail) = match status {
        414 => (
            "uri-too-long",
            "the request URI is longer than this API accepts",
        ),
        431 => (
            "headers-too-large",
            "the request has too many headers or they are too large",
        ),
        400 => (
            "bad-request",
            "the request could not be parsed (request line, path or headers malformed)",
        ),
        _ => ("bad-request", "the request could not be processed"),
    };
    let code =
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_REQUEST);
    let title = code.canonical_reason().unwrap_or("Error");
    let body = serde_json::to_vec(&Problem {
        kind: format!("urn:rpm-gateway:problem:{slug}"),
        title: title.to_string(),
        status,
        detail: detail.to_string(),
    })
    .unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {status} {title}\r\ncontent-type: {PROBLEM_JSON}\r\ncontent-length: {}\r\ncache-control: no-store\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

impl<I: AsyncWrite + Unpin> ProblemIo<I> {
    /// Writes what is left of the replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.pending {
            if *done >= bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for ProblemIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ProblemIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        if let Some(status) = hyper_error(buf) {
            this.pending = Some((answer(status), 0));
            this.replaced = true;
            // Taken whole; the rest goes out on flush or shutdown.
            let _ = this.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        if this.replaced {
            // Discard the rest of the refused request that already arrived.
            let mut scratch = [0u8; 8192];
            let mut drained = 0;
            while drained < DRAIN_LIMIT {
                let mut rb = ReadBuf::new(&mut scratch);
                match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) if !rb.filled().is_empty() => drained += rb.filled().len(),
                    _ => break,
                }
            }
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_only_hyper_answers() {
        let hyper =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(hyper_error(hyper), Some(431));
        let ours = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/problem+json\r\nx-content-type-options: nosniff\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(hyper_error(ours), None);
        assert_eq!(
            hyper_error(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            None
        );
        let a = String::from_utf8(answer(414)).unwrap();
        assert!(a.starts_with("HTTP/1.1 414 URI Too Long\r\n") && a.contains("uri-too-long"));
    }
}
