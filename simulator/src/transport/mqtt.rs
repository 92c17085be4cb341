//! MQTT: virtual devices publish with QoS 1, as real devices do.
//!
//! A [`Publisher`] owns one client connection (any number of virtual
//! devices can share it: the topic names the device). `flush` waits until
//! the broker has acknowledged every publish, so a caller knows exactly what
//! the broker accepted (the ground truth for "every reading arrived exactly
//! once").

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing as MqttOutgoing, Packet, QoS};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

use super::{Transport, TransportError};
use crate::payload::{encode, Message};
use crate::plan::Outgoing;

/// Publisher failures.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The client request queue is closed.
    #[error("mqtt client closed: {0}")]
    Client(#[from] rumqttc::ClientError),
    /// The broker did not acknowledge in time.
    #[error("broker acknowledged {acked} of {sent} publishes before the timeout")]
    Timeout {
        /// publishes acknowledged
        acked: u64,
        /// publishes sent
        sent: u64,
    },
    /// `HOST:PORT` could not be parsed.
    #[error("`{0}` is not HOST:PORT")]
    Address(String),
    /// No connection to the broker for longer than [`UNREACHABLE_AFTER`].
    #[error("broker unreachable for {0:?}")]
    Unreachable(Duration),
}

/// How long the broker may be out of reach before publishes fail instead of
/// queueing (a run against a wrong address ends instead of hanging).
pub const UNREACHABLE_AFTER: Duration = Duration::from_secs(10);

/// Splits `HOST:PORT` (the `--mqtt` argument).
pub fn parse_addr(s: &str) -> Result<(String, u16), PublishError> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| PublishError::Address(s.to_string()))?;
    let port = port
        .parse()
        .map_err(|_| PublishError::Address(s.to_string()))?;
    if host.is_empty() {
        return Err(PublishError::Address(s.to_string()));
    }
    Ok((host.to_string(), port))
}

/// One device-side MQTT connection.
pub struct Publisher {
    client: AsyncClient,
    sent: u64,
    acked: Arc<AtomicU64>,
    progress: Arc<Notify>,
    /// Since when the broker has been out of reach (`None`: connected).
    down_since: Arc<Mutex<Option<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Connects (lazily: the first poll connects) to `host:port` as
    /// `client_id`, with a clean session (devices keep no session).
    pub fn connect(host: &str, port: u16, client_id: &str) -> Publisher {
        let mut o = MqttOptions::new(client_id, host, port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(1 << 20, 1 << 20);
        o.set_inflight(200);
        if let (Ok(u), Ok(p)) = (
            std::env::var("RPM_SIM_MQTT_USERNAME"),
            std::env::var("RPM_SIM_MQTT_PASSWORD"),
        ) {
            o.set_credentials(u, p);
        }
        let (client, mut eventloop) = AsyncClient::new(o, 1024);
        let acked = Arc::new(AtomicU64::new(0));
        let progress = Arc::new(Notify::new());
        let down_since = Arc::new(Mutex::new(Some(Instant::now())));
        let (a, p, d) = (acked.clone(), progress.clone(), down_since.clone());
        let set_down = move |down: bool| {
            if let Ok(mut g) = d.lock() {
                match (down, g.is_some()) {
                    (true, false) => *g = Some(Instant::now()),
                    (false, true) => *g = None,
                    _ => {}
                }
            }
        };
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => set_down(false),
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        p.notify_waiters();
                    }
                    Ok(Event::Outgoing(MqttOutgoing::Disconnect)) => break,
                    Ok(_) => {}
                    // rumqttc retransmits unacknowledged QoS 1 publishes
                    // after it reconnects.
                    Err(_) => {
                        set_down(true);
                        p.notify_waiters();
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                }
            }
        });
        Publisher {
            client,
            sent: 0,
            acked,
            progress,
            down_since,
            task,
        }
    }

    /// How long the broker has been out of reach, if it is.
    fn down_for(&self) -> Option<Duration> {
        self.down_since
            .lock()
            .ok()
            .and_then(|g| g.map(|t| t.elapsed()))
    }

    /// Fails once the broker has been out of reach for [`UNREACHABLE_AFTER`].
    fn check_reachable(&self) -> Result<(), PublishError> {
        match self.down_for() {
            Some(d) if d > UNREACHABLE_AFTER => Err(PublishError::Unreachable(d)),
            _ => Ok(()),
        }
    }

    /// Publishes one message with QoS 1.
    pub async fn publish(&mut self, m: &Message) -> Result<(), PublishError> {
        self.check_reachable()?;
        self.client
            .publish(m.topic.clone(), QoS::AtLeastOnce, false, m.payload.clone())
            .await?;
        self.sent += 1;
        Ok(())
    }

    /// Publishes sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Publishes the broker acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// A counter of acknowledged publishes, readable from another task.
    pub fn acked_counter(&self) -> Arc<AtomicU64> {
        self.acked.clone()
    }

    /// Waits until the broker acknowledged every publish.
    pub async fn flush(&self, timeout: Duration) -> Result<(), PublishError> {
        let wait = async {
            while self.acked.load(Ordering::SeqCst) < self.sent {
                let notified = self.progress.notified();
                if self.acked.load(Ordering::SeqCst) >= self.sent {
                    break;
                }
                self.check_reachable()?;
                let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
            }
            Ok(())
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| PublishError::Timeout {
                acked: self.acked.load(Ordering::SeqCst),
                sent: self.sent,
            })?
    }

    /// Flushes and disconnects.
    pub async fn close(self, timeout: Duration) -> Result<(), PublishError> {
        let r = self.flush(timeout).await;
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
        r
    }
}

impl Transport for Publisher {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    async fn send(&mut self, o: &Outgoing) -> Result<(), TransportError> {
        Ok(self.publish(&encode(&o.emission, o.format)).await?)
    }

    async fn close(self, timeout: Duration) -> Result<(), TransportError> {
        Ok(Publisher::close(self, timeout).await?)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses() {
        assert_eq!(
            super::parse_addr("127.0.0.1:1883").unwrap(),
            ("127.0.0.1".to_string(), 1883)
        );
        assert!(super::parse_addr("localhost").is_err());
        assert!(super::parse_addr(":1883").is_err());
        assert!(super::parse_addr("h:99999").is_err());
    }
}
