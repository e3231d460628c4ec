//! The fuzz targets' harness (see `harness.rs`).

pub mod harness;
