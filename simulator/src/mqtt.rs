//! Publishing emissions to an MQTT broker (QoS 1).
