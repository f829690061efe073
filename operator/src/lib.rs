//! dnspolicy: keeps foreign DNS search suffixes from breaking cluster DNS.
//!
//! The pure core (no async, no client, no clock) is `corefile`, `stanza`,
//! `version`, `policy`, `kubelet`, `resolver`, `serving` and `explain`; the
//! controller and the command line are the I/O edges around it.

pub mod corefile;
pub mod explain;
pub mod kubelet;
pub mod policy;
pub mod resolver;
pub mod serving;
pub mod stanza;
pub mod version;
