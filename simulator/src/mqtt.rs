//! Publishing emissions to an MQTT broker, QoS 1, as real devices do.
//!
//! A [`Publisher`] owns one client connection; `flush` waits until the broker
//! has acknowledged every publish, so a caller knows exactly what the broker
//! accepted (the ground truth for "every reading arrived exactly once").

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

use crate::payload::Message;

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
}

/// One device-side MQTT connection.
pub struct Publisher {
    client: AsyncClient,
    sent: u64,
    acked: Arc<AtomicU64>,
    progress: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Connects (lazily: the first poll connects) to `host:port` as `client_id`.
    pub fn connect(host: &str, port: u16, client_id: &str) -> Publisher {
        let mut o = MqttOptions::new(client_id, host, port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(1 << 20, 1 << 20);
        o.set_inflight(200);
        let (client, mut eventloop) = AsyncClient::new(o, 1024);
        let acked = Arc::new(AtomicU64::new(0));
        let progress = Arc::new(Notify::new());
        let (a, p) = (acked.clone(), progress.clone());
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        p.notify_waiters();
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Publisher {
            client,
            sent: 0,
            acked,
            progress,
            task,
        }
    }

    /// Publishes one message with QoS 1.
    pub async fn publish(&mut self, m: &Message) -> Result<(), PublishError> {
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

    /// Waits until the broker acknowledged every publish.
    pub async fn flush(&self, timeout: Duration) -> Result<(), PublishError> {
        let wait = async {
            while self.acked.load(Ordering::SeqCst) < self.sent {
                let notified = self.progress.notified();
                if self.acked.load(Ordering::SeqCst) >= self.sent {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| PublishError::Timeout {
                acked: self.acked.load(Ordering::SeqCst),
                sent: self.sent,
            })
    }

    /// Flushes and disconnects.
    pub async fn close(self, timeout: Duration) -> Result<(), PublishError> {
        let r = self.flush(timeout).await;
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
        r
    }
}
