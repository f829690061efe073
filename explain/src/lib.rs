//! The explain model: which queries a resolver sends for a name, which
//! CoreDNS server block and plugin answers each, and what it costs. Only the
//! command line links it; the controller does not.
//!
//! - `answer`: the words the others share (`QType`, `Outcome`, `Reply`, `Served`).
//! - `resolver`: glibc and musl search-list walks.
//! - `serving`: how CoreDNS routes and answers one query under a Corefile.
//! - `explain`: the two together, as `dnspolicy explain` prints them.
//! - `custom`: the Corefile with its `coredns-custom` keys spliced in.
//! - `nodelocal`: the same through a NodeLocal DNSCache in front of CoreDNS.

pub mod answer;
pub mod custom;
pub mod explain;
pub mod nodelocal;
pub mod resolver;
pub mod serving;
