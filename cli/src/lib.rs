//! The `dnspolicy` command line's library, so its tests call it directly.

pub mod cli;
pub mod explain;
pub mod status;
