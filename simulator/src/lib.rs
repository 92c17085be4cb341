//! simulator (in progress).
