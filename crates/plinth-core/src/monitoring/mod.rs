//! Monitoring of models in production: health over time ([`health`], per-minute rollups of the
//! serving figures), alerts on it with the SLA's defaults ([`alerts`]) and the incidents they open
//! ([`incidents`]), and data drift between two samples ([`drift`]), computed as Evidently
//! computes it, with the statistics it needs ([`ks`], [`special`]).

pub mod alerts;
pub mod drift;
pub mod health;
pub mod incidents;
pub mod ks;
pub mod special;
