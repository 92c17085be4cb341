//! rpm-gateway library (in progress).
