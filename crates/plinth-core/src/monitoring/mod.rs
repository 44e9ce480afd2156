//! Monitoring of models in production: health over time ([`health`], per-minute rollups of the
//! serving figures); served traffic captured off the request's path ([`capture`]) into
//! mergeable summaries ([`summary`]) and predictions kept for their labels ([`feedback`]: live
//! performance against the evaluation, CBPE before labels); drift of that traffic against its
//! baseline ([`served`]) and between two files ([`drift`], computed as Evidently computes it,
//! with the statistics it needs: [`ks`], [`special`]); alert rules with the SLA's defaults and
//! each deployment's settings ([`rules`], [`settings`]), evaluated into alerts ([`alerts`]),
//! silenced ([`silences`]) and notified in Alertmanager's and PagerDuty's shapes ([`notify`]),
//! and the incidents they open ([`incidents`]).

pub mod alerts;
pub mod capture;
pub mod drift;
pub mod feedback;
pub mod health;
pub mod incidents;
pub mod ks;
pub mod notify;
pub mod rules;
pub mod served;
pub mod settings;
pub mod silences;
pub mod special;
pub mod summary;
