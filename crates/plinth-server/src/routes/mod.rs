//! The REST routes, one module per area.

pub mod audit;
pub mod billing;
pub mod data;
pub mod evaluation;
pub mod features;
pub mod governance;
pub mod health;
pub mod identity;
pub mod mlflow;
pub mod monitoring;
pub mod oip;
pub mod registry;
pub mod serving;
pub mod tasks;
pub mod training;
pub mod ui;
pub mod webhooks;
