//! Monitoring of models in production. Today: data drift between two samples ([`drift`]),
//! computed as Evidently computes it, with the statistics it needs ([`ks`], [`special`]).

pub mod drift;
pub mod ks;
pub mod special;
