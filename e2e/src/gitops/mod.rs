//! GitOps tools against the operator: Flux's controllers (built from the Go
//! module proxy) reading a git repository served on 127.0.0.1, kstatus (the
//! status library Flux's health checks use), and Argo CD's own health code
//! with dnspolicy's Lua check loaded.

pub mod argocd;
pub mod flux;
pub mod git_server;
pub mod kstatus;
