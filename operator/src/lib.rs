//! The dnspolicy operator: the controller (watch, plan with the DNS core,
//! apply, write status), the node agent, pollution accounting and metrics.
//! Everything here is I/O around `dnspolicy_dns`.

pub mod cli;
pub mod controller;
pub mod metrics;
pub mod metrics_access;
pub mod metrics_tls;
pub mod node_agent;
pub mod pollution;
pub mod telemetry;
