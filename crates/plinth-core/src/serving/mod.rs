//! Serving: environments and deployments (the metadata, in [`deployments`]), the one path every
//! prediction takes ([`predict`]), and the live engine that answers them ([`engine`]): traffic routing with sticky keys, shadow
//! copies, adaptive batching, worker pools that scale to zero, load shedding, the prediction log
//! and metrics.
//!
//! **Invariant:** every change to what serves goes through [`crate::Plinth::deploy`] (or its
//! siblings `set_traffic` and `rollback`, which call the same internal function), so the
//! governance layer can wrap one function with its policy check.

pub mod deployments;
pub mod engine;
pub mod figures;
pub mod input;
pub mod metrics;
pub mod predict;
pub mod predlog;
pub mod runner;
pub mod runtime;
pub mod tensor;
