//! MQTT 3.1.1 and MQTT 5 behind one small interface.
//!
//! The source's logic (subscribe when the broker has no session, ack after
//! commit, reconnect, drain) is the same for both protocol versions; only
//! the client types differ. This module maps each version's events to
//! [`Incoming`] and its acks, subscriptions and disconnects to [`Client`],
//! so that the loop in [`super`] is written once.
//!
//! MQTT 5 needs one thing 3.1.1 does not: a **session expiry interval**.
//! With clean start off but no expiry, a v5 broker discards the session the
//! moment the connection drops (Mosquitto #1728/#3202), and readings
//! published while the gateway is down are lost. [`connect`] always sets it
//! for a persistent session.

use bytes::Bytes;
use rumqttc::v5;
use rumqttc::{QoS, SubscribeFilter, Transport};

use super::config::{MqttConfig, MqttProtocol};

/// What the event loop reports, version-independent.
pub enum Incoming {
    /// CONNACK with success.
    Connected {
        /// The broker still had our session (subscriptions and queue).
        session_present: bool,
    },
    /// CONNACK refusing the connection.
    Refused(String),
    /// SUBACK.
    Subscribed,
    /// A publish to decode, commit, then acknowledge with its token.
    Publish {
        /// Topic.
        topic: String,
        /// Payload.
        payload: Bytes,
        /// Hand back to [`Client::ack`] after the commit.
        token: AckToken,
    },
    /// Our DISCONNECT went out (end of the drain).
    Disconnected,
    /// Anything else (pings, acks of our own packets).
    Other,
}

/// What [`Client::ack`] needs to acknowledge a publish: its packet id and
/// QoS, not the publish itself. A backlog can leave thousands of publishes
/// between receipt and acknowledgement; keeping their payloads (slices that
/// pin whole read buffers) would make that cost memory on a small box.
#[derive(Debug, Clone, Copy)]
pub enum AckToken {
    /// MQTT 3.1.1.
    V311 {
        /// Packet id.
        pkid: u16,
        /// QoS of the publish.
        qos: QoS,
    },
    /// MQTT 5.
    V5 {
        /// Packet id.
        pkid: u16,
        /// QoS of the publish.
        qos: v5::mqttbytes::QoS,
    },
}

/// The request side of a connection.
#[derive(Clone)]
pub enum Client {
    /// MQTT 3.1.1.
    V311(rumqttc::AsyncClient),
    /// MQTT 5.
    V5(v5::AsyncClient),
}

/// The event side of a connection (boxed: the event loops are large and
/// of different sizes).
pub enum Connection {
    /// MQTT 3.1.1.
    V311(Box<rumqttc::EventLoop>),
    /// MQTT 5.
    V5(Box<v5::EventLoop>),
}

/// Connection settings resolved from config (client id, credentials, TLS).
pub struct Settings {
    /// Client id.
    pub client_id: String,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    /// TLS transport, if configured.
    pub transport: Option<Transport>,
}

/// The largest remaining length of an MQTT packet (both versions).
pub const MQTT_MAX_REMAINING_LENGTH: usize = 268_435_455;
/// The largest MQTT packet: that remaining length and its fixed header.
const MQTT_MAX_PACKET: u32 = 268_435_455 + 5;

/// Builds a client and its event loop for the configured protocol.
pub fn connect(cfg: &MqttConfig, s: Settings, cap: usize) -> (Client, Connection) {
    match cfg.protocol {
        MqttProtocol::V311 => {
            let mut o = rumqttc::MqttOptions::new(s.client_id, cfg.host.clone(), cfg.port);
            o.set_keep_alive(cfg.keep_alive);
            o.set_clean_session(!cfg.persistent_session);
            o.set_manual_acks(true);
            // The client takes any packet MQTT allows, so that it never
            // refuses one and reconnects, only to be sent the same message
            // first again for ever; the source quarantines what is larger
            // than `max_packet_bytes` (see super::OVERSIZED_KEEP).
            o.set_max_packet_size(MQTT_MAX_REMAINING_LENGTH, 64 * 1024);
            if let Some((u, p)) = s.credentials {
                o.set_credentials(u, p);
            }
            if let Some(t) = s.transport {
                o.set_transport(t);
            }
            let (c, e) = rumqttc::AsyncClient::new(o, cap);
            (Client::V311(c), Connection::V311(Box::new(e)))
        }
        MqttProtocol::V5 => {
            let mut o = v5::MqttOptions::new(s.client_id, cfg.host.clone(), cfg.port);
            o.set_keep_alive(cfg.keep_alive);
            o.set_clean_start(!cfg.persistent_session);
            // Receive Maximum: a v5 broker sends at most this many
            // unacknowledged publishes, which bounds the acks in flight.
            o.set_receive_maximum(Some(u16::try_from(cfg.pipeline_depth).unwrap_or(u16::MAX)));
            if cfg.persistent_session {
                let secs = u32::try_from(cfg.session_expiry.as_secs()).unwrap_or(u32::MAX);
                o.set_session_expiry_interval(Some(secs));
            }
            o.set_manual_acks(true);
            // Announced to the broker as Maximum Packet Size: a v5 broker
            // silently drops a message larger than that, so the client
            // announces what MQTT allows and the source quarantines what is
            // larger than `max_packet_bytes`.
            o.set_max_packet_size(Some(MQTT_MAX_PACKET));
            if let Some((u, p)) = s.credentials {
                o.set_credentials(u, p);
            }
            if let Some(t) = s.transport {
                o.set_transport(t);
            }
            let (c, e) = v5::AsyncClient::new(o, cap);
            (Client::V5(c), Connection::V5(Box::new(e)))
        }
    }
}

impl Connection {
    /// The next event; `Err` is a lost or failed connection (the next poll
    /// reconnects).
    pub async fn poll(&mut self) -> Result<Incoming, String> {
        match self {
            Connection::V311(e) => {
                use rumqttc::{ConnectReturnCode, Event, Outgoing, Packet};
                match e.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(a)) if a.code == ConnectReturnCode::Success => {
                        Ok(Incoming::Connected {
                            session_present: a.session_present,
                        })
                    }
                    Event::Incoming(Packet::ConnAck(a)) => {
                        Ok(Incoming::Refused(format!("{:?}", a.code)))
                    }
                    Event::Incoming(Packet::SubAck(_)) => Ok(Incoming::Subscribed),
                    Event::Incoming(Packet::Publish(p)) => Ok(Incoming::Publish {
                        token: AckToken::V311 {
                            pkid: p.pkid,
                            qos: p.qos,
                        },
                        topic: p.topic,
                        payload: p.payload,
                    }),
                    Event::Outgoing(Outgoing::Disconnect) => Ok(Incoming::Disconnected),
                    _ => Ok(Incoming::Other),
                }
            }
            Connection::V5(e) => {
                use v5::mqttbytes::v5::{ConnectReturnCode, Packet};
                use v5::Event;
                match e.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(a)) if a.code == ConnectReturnCode::Success => {
                        Ok(Incoming::Connected {
                            session_present: a.session_present,
                        })
                    }
                    Event::Incoming(Packet::ConnAck(a)) => {
                        Ok(Incoming::Refused(format!("{:?}", a.code)))
                    }
                    Event::Incoming(Packet::SubAck(_)) => Ok(Incoming::Subscribed),
                    Event::Incoming(Packet::Publish(p)) => Ok(Incoming::Publish {
                        // Invalid UTF-8 cannot match a profile's topic: it
                        // is quarantined as `no_profile` with its bytes.
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        token: AckToken::V5 {
                            pkid: p.pkid,
                            qos: p.qos,
                        },
                        payload: p.payload,
                    }),
                    Event::Outgoing(rumqttc::Outgoing::Disconnect) => Ok(Incoming::Disconnected),
                    _ => Ok(Incoming::Other),
                }
            }
        }
    }
}

impl Connection {
    /// Whether [`Connection::acknowledge`] writes the acks itself (MQTT
    /// 3.1.1). MQTT 5's event loop keeps its connection private: its acks
    /// go through [`Client::ack`], one written per turn of the event loop.
    pub fn writes_acks(&self) -> bool {
        matches!(self, Connection::V311(_))
    }

    /// Writes a PUBACK for each committed publish of the current connection
    /// and flushes them together: one write for a burst of commits instead
    /// of one per publish (rumqttc sends each request it is given in its
    /// own write). Called between polls of the same task, so the event
    /// loop is not mid-write. Without a connection the acks are dropped:
    /// the broker redelivers those publishes on the next one. An `Err` is a
    /// failed write (the caller reconnects).
    pub async fn acknowledge(&mut self, tokens: &[AckToken]) -> Result<(), String> {
        let Connection::V311(e) = self else {
            return Err("batched acks need MQTT 3.1.1".into());
        };
        let e = &mut **e;
        let Some(network) = e.network.as_mut() else {
            return Ok(());
        };
        let mut written = false;
        for token in tokens {
            // The source subscribes with QoS 1, so brokers send QoS 1 or 0;
            // a QoS 0 publish has no ack.
            if let AckToken::V311 {
                pkid,
                qos: QoS::AtLeastOnce,
            } = *token
            {
                network
                    .write(rumqttc::Packet::PubAck(rumqttc::PubAck::new(pkid)))
                    .await
                    .map_err(|e| e.to_string())?;
                written = true;
            }
        }
        if written {
            network.flush().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Drops the network connection; the next [`Connection::poll`]
    /// reconnects. Pending acks are discarded (the broker redelivers).
    pub fn reconnect(&mut self) {
        match self {
            Connection::V311(e) => e.clean(),
            Connection::V5(e) => e.clean(),
        }
    }
}

impl Client {
    /// Acknowledges a committed publish (PUBACK).
    pub async fn ack(&self, token: AckToken) -> Result<(), String> {
        // The clients acknowledge a `Publish`, of which they read only the
        // packet id and QoS: a bare one carries those.
        match (self, token) {
            (Client::V311(c), AckToken::V311 { pkid, qos }) => {
                let mut p = rumqttc::Publish::new("", qos, Vec::new());
                p.pkid = pkid;
                c.ack(&p).await.map_err(|e| e.to_string())
            }
            (Client::V5(c), AckToken::V5 { pkid, qos }) => {
                let mut p = v5::mqttbytes::v5::Publish::new("", qos, Bytes::new(), None);
                p.pkid = pkid;
                c.ack(&p).await.map_err(|e| e.to_string())
            }
            _ => Err("ack token of the other protocol version".into()),
        }
    }

    /// Subscribes to every filter with QoS 1.
    pub async fn subscribe(&self, filters: &[String]) -> Result<(), String> {
        match self {
            Client::V311(c) => c
                .subscribe_many(
                    filters
                        .iter()
                        .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)),
                )
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .subscribe_many(filters.iter().map(|f| {
                    let mut filter =
                        v5::mqttbytes::v5::Filter::new(f.clone(), v5::mqttbytes::QoS::AtLeastOnce);
                    // Re-subscribing on reconnect must not replay retained
                    // messages (3.1.1 has no such option; a replay is
                    // deduplicated by reading id there).
                    filter.retain_forward_rule =
                        v5::mqttbytes::v5::RetainForwardRule::OnNewSubscribe;
                    filter
                }))
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Sends DISCONNECT without waiting (never UNSUBSCRIBE: that would
    /// discard the session's queue).
    pub fn disconnect(&self) {
        let _ = match self {
            Client::V311(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }
}
