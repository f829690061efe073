//! dnspolicy's pure DNS core: plain functions over values, no async, no
//! client, no clock. The controller and the command line call into it.
//!
//! - `corefile`: a faithful Corefile lexer, parser and marker-region editor.
//! - `names`: checking, normalising and comparing DNS names.
//! - `version`: CoreDNS versions and what each accepts.
//! - `policy`: validating specs and merging the policies of one CoreDNS.
//! - `stanza`: the Corefile text a merged policy set becomes.
//! - `served`: what a Corefile serves, and the policies it cannot take.
//! - `plan`: what to write, roll or roll back for one target, given its objects.
//! - `kubelet`: the resolv.conf kubelet writes for a pod, and resolv.conf parsing.
//! - `nodelocal`: the NodeLocal DNSCache Corefile, recognised and given a block per suffix.

pub mod corefile;
pub mod kubelet;
pub mod names;
pub mod nodelocal;
pub mod plan;
pub mod policy;
pub mod served;
pub mod stanza;
pub mod version;
