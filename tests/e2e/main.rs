//! End-to-end tests: the built `bulkhead` binary against a cluster, driven with kube-rs and kubectl.
//!
//! The cluster is `BULKHEAD_E2E_KUBECONFIG` when set (any real cluster: kind, k3d, ...), otherwise a
//! fresh in-memory testkit API server per test. The same tests pass on both; where they would not, the
//! testkit is wrong. Tests name what they create uniquely and clean up, so they can share a real cluster.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test suite: failing loudly is the point

mod classes;
mod controller;
mod convert;
mod custom_quotas;
mod fairness;
mod faults;
mod harness;
mod harness_checks;
mod helm;
mod migration;
mod owners;
mod proxy;
mod realserver;
mod replication;
mod resource_pools;
mod rules;
mod scale;
mod scale_all;
mod startup;
mod webhook;
