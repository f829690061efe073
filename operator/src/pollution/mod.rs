//! Pollution accounting: which pods carry a declared suffix in their search
//! list. `index` is the pure, synchronous model (tests feed it objects);
//! `watch` keeps it current from the API and publishes per-policy counts.

mod index;
mod watch;

pub use index::{
    NodeFacts, PodFacts, PolicyCounts, PolicyInputs, PollutionIndex, node_facts, pod_facts,
    policy_counts,
};
pub use watch::watch;
