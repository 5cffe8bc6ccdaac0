//! The durable queue (to be written).
