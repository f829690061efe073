//! dnspolicy: keeps foreign DNS search suffixes from breaking cluster DNS.
//!
//! The pure core (no async, no client, no clock) is `corefile`, `stanza`,
//! `policy`, `kubelet`, `resolver`, `serving` and `explain`; `controller` and
//! `cli` are the I/O edges around it.

pub mod corefile;
pub mod policy;
pub mod stanza;
pub mod version;
