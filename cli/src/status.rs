//! `dnspolicy status`: policies and polluted pods by namespace, for a terminal.

use dnspolicy_crd::ClusterDNSPolicy;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::cli::CliError;

pub async fn print() -> Result<(), CliError> {
    let client = crate::cli::client().await?;
    let api: Api<ClusterDNSPolicy> = Api::all(client);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| CliError::Failed(format!("cannot list ClusterDNSPolicies: {e}")))?;
    print!("{}", format_status(&list.items));
    Ok(())
}

/// The table `status` prints; pure so tests read it.
pub fn format_status(policies: &[ClusterDNSPolicy]) -> String {
    if policies.is_empty() {
        return "No ClusterDNSPolicy found.\n".into();
    }
    let mut out = format!(
        "{:<24} {:<8} {:<10} {:<40} {}\n",
        "POLICY", "READY", "POLLUTED", "SUFFIXES", "REASON"
    );
    for p in policies {
        let status = p.status.clone().unwrap_or_default();
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        let suffixes: Vec<&str> = p
            .spec
            .foreign_suffixes
            .iter()
            .map(|s| s.suffix.as_str())
            .collect();
        let polluted = status
            .pods
            .map(|c| format!("{}/{}", c.polluted, c.total))
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<24} {:<8} {:<10} {:<40} {}\n",
            p.name_any(),
            ready.map(|c| c.status.as_str()).unwrap_or("Unknown"),
            polluted,
            suffixes.join(","),
            ready
                .map(|c| format!("{}: {}", c.reason, c.message))
                .unwrap_or_default(),
        ));
    }
    for p in policies {
        let status = p.status.clone().unwrap_or_default();
        if status.namespaces.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "\nPolluted pods for {} (most first):\n",
            p.name_any()
        ));
        out.push_str(&format!(
            "  {:<40} {:>8} {:>8}\n",
            "NAMESPACE", "PODS", "POLLUTED"
        ));
        for ns in &status.namespaces {
            out.push_str(&format!(
                "  {:<40} {:>8} {:>8}\n",
                ns.name, ns.pods, ns.polluted
            ));
        }
        out.push_str("  Pods keep the search list they started with: recreate them once their node is clean.\n");
    }
    out
}
