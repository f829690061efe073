//! The `dnspolicy` command line's library, so its tests call it directly.

pub mod cli;
mod cluster;
pub mod explain;
pub mod release;
pub mod status;
