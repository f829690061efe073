//! dnspolicy: keeps foreign DNS search suffixes from breaking cluster DNS.
//!
//! The pure core (no async, no client, no clock) is `corefile`, `stanza`,
//! `version`, `policy`, `kubelet`, `resolver`, `serving` and `explain`; the
//! controller and the command line are the I/O edges around it.

pub mod cli;
pub mod controller;
pub mod corefile;
pub mod explain;
pub mod kubelet;
pub mod metrics;
pub mod node_agent;
pub mod plan;
pub mod policy;
pub mod pollution;
pub mod resolver;
pub mod serving;
pub mod stanza;
pub mod status;
pub mod telemetry;
pub mod version;
