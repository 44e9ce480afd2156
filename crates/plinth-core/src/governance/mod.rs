//! Governance: promotion policies per team and environment, and the promotion workflow that
//! applies them (automated checks, self-serve approval, human review, deploy, history).

mod compat;
mod policy;
mod promotion;
mod review;
