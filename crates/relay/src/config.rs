//! The relay configuration (to be written).
