//! Plinth's integration tests: everything a user does, through the HTTP API and the CLI, against
//! in-process servers on port 0, on both metadata backends (SQLite and PostgreSQL).

mod harness;

mod api;
mod backbone;
mod bad_input;
mod billing;
mod cli;
mod conformance;
mod docs;
mod drift;
mod features;
mod governance;
mod health;
mod helm;
mod hostile;
mod isolation;
mod mlflow;
mod monitoring;
mod persistence;
mod query;
mod registry;
mod replicas;
mod separation;
mod serving;
mod training;
mod triton;
mod ui;
