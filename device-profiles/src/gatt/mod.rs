//! Bluetooth SIG GATT health characteristics (issue 3): decoders and encoders.
//! Work in progress in this module; see README "Bluetooth devices".
