//! `dnspolicy node-agent`: publishes the host search list kubelet gives pods
//! on this node (from the resolv.conf kubelet reads), and when it changed, as
//! annotations on the node's Node object.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tracing::{info, warn};

use dnspolicy_crd::vocabulary::{FIELD_MANAGER, annotation};
use dnspolicy_dns::kubelet::{NodeDns, ResolvConfError};

/// The host search list kubelet gives ClusterFirst pods on this node: the
/// resolv.conf read exactly as kubelet reads it (one parser for both).
pub fn host_search(resolv_conf: &str) -> Result<Vec<String>, ResolvConfError> {
    NodeDns::parse_resolv_conf(resolv_conf).map(|node| node.host_search)
}

/// Runs until the process ends, checking the file every `interval`; API
/// errors are logged and retried on the next round.
pub async fn run(client: Client, node: String, resolv_conf: PathBuf, interval: Duration) {
    let nodes: Api<Node> = Api::all(client);
    loop {
        let observed = match tokio::fs::read_to_string(&resolv_conf).await {
            Ok(text) => host_search(&text).map_err(|e| {
                format!(
                    "{}: kubelet would refuse this file: {e}",
                    resolv_conf.display()
                )
            }),
            Err(e) => Err(format!("{}: cannot read: {e}", resolv_conf.display())),
        };
        if let Err(e) = &observed {
            warn!(node, error = %e, "host search list unknown; published as an error on the Node");
        }
        match nodes.get(&node).await {
            Ok(n) => {
                let current = n.metadata.annotations.unwrap_or_default();
                let now = k8s_openapi::jiff::Timestamp::now().to_string();
                if let Some(annotations) = node_annotations(&current, &observed, &now) {
                    let patch = json!({
                        "apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": node, "annotations": annotations},
                    });
                    match nodes
                        .patch(
                            &node,
                            &PatchParams::apply(FIELD_MANAGER).force(),
                            &Patch::Apply(&patch),
                        )
                        .await
                    {
                        Ok(_) => info!(node, ?observed, "published host search list"),
                        Err(e) => warn!(node, error = %e, "could not publish host search list"),
                    }
                }
            }
            Err(e) => warn!(node, error = %e, "could not read Node"),
        }
        tokio::time::sleep(interval).await;
    }
}

/// The agent's whole set of annotations for the Node (a server-side apply:
/// a key left out is removed), or `None` when the Node already says it.
/// A read error keeps the last list published (pods started before still
/// have it) and adds `host-search-error`, so the operator reports the node
/// instead of counting it as clean; the next good read removes the error.
pub fn node_annotations(
    current: &BTreeMap<String, String>,
    observed: &Result<Vec<String>, String>,
    now: &str,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut out = serde_json::Map::new();
    let keep = |out: &mut serde_json::Map<String, serde_json::Value>, key: &str| {
        if let Some(v) = current.get(key) {
            out.insert(key.into(), json!(v));
        }
    };
    match observed {
        Ok(search) => {
            let search = search.join(" ");
            let changed = current.get(annotation::HOST_SEARCH) != Some(&search);
            if !changed && !current.contains_key(annotation::HOST_SEARCH_ERROR) {
                return None;
            }
            out.insert(annotation::HOST_SEARCH.into(), json!(search));
            if changed {
                out.insert(annotation::HOST_SEARCH_SINCE.into(), json!(now));
                if let Some(previous) = current.get(annotation::HOST_SEARCH) {
                    out.insert(annotation::HOST_SEARCH_PREVIOUS.into(), json!(previous));
                }
            } else {
                keep(&mut out, annotation::HOST_SEARCH_SINCE);
                keep(&mut out, annotation::HOST_SEARCH_PREVIOUS);
            }
        }
        Err(error) => {
            if current.get(annotation::HOST_SEARCH_ERROR) == Some(error) {
                return None;
            }
            for key in [
                annotation::HOST_SEARCH,
                annotation::HOST_SEARCH_SINCE,
                annotation::HOST_SEARCH_PREVIOUS,
            ] {
                keep(&mut out, key);
            }
            out.insert(annotation::HOST_SEARCH_ERROR.into(), json!(error));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_tailscale_search_line() {
        let conf = "# resolv.conf(5) file generated by tailscale\nnameserver 100.100.100.100\nsearch tailb45a71.ts.net. openstacklocal\n";
        assert_eq!(
            host_search(conf).unwrap(),
            ["tailb45a71.ts.net", "openstacklocal"]
        );
        assert!(host_search("nameserver 8.8.8.8\n").unwrap().is_empty());
        assert_eq!(
            host_search("domain corp.example\nsearch a.example\n").unwrap(),
            ["a.example"]
        );
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_read_error_is_published_and_the_next_good_read_clears_it() {
        let good = annotations(&[
            (annotation::HOST_SEARCH, "tailb45a71.ts.net"),
            (annotation::HOST_SEARCH_SINCE, "t0"),
        ]);
        // Unchanged: nothing to send.
        let same = Ok(vec!["tailb45a71.ts.net".to_string()]);
        assert_eq!(node_annotations(&good, &same, "t1"), None);
        // Unreadable: the error, the last list kept.
        let broken = Err("/etc/resolv.conf: cannot read: permission denied".to_string());
        let sent = node_annotations(&good, &broken, "t1").unwrap();
        assert_eq!(
            sent[annotation::HOST_SEARCH_ERROR],
            json!(broken.clone().unwrap_err())
        );
        assert_eq!(sent[annotation::HOST_SEARCH], json!("tailb45a71.ts.net"));
        assert_eq!(sent[annotation::HOST_SEARCH_SINCE], json!("t0"));
        // The same error again: nothing to send.
        let mut erred = good.clone();
        erred.insert(
            annotation::HOST_SEARCH_ERROR.into(),
            broken.clone().unwrap_err(),
        );
        assert_eq!(node_annotations(&erred, &broken, "t2"), None);
        // Readable again, same list: sent without the error (apply drops it), since kept.
        let sent = node_annotations(&erred, &same, "t3").unwrap();
        assert!(!sent.contains_key(annotation::HOST_SEARCH_ERROR));
        assert_eq!(sent[annotation::HOST_SEARCH_SINCE], json!("t0"));
        // A new list: since is now, the old list becomes previous.
        let sent = node_annotations(&good, &Ok(vec!["openstacklocal".into()]), "t4").unwrap();
        assert_eq!(sent[annotation::HOST_SEARCH], json!("openstacklocal"));
        assert_eq!(sent[annotation::HOST_SEARCH_SINCE], json!("t4"));
        assert_eq!(
            sent[annotation::HOST_SEARCH_PREVIOUS],
            json!("tailb45a71.ts.net")
        );
    }
}
