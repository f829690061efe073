//! The shipped ValidatingAdmissionPolicies (manifests/admission.yaml) on the
//! real apiserver, with the components' own ServiceAccount tokens: what RBAC
//! allows but the job does not need is denied, and the writes the job needs
//! pass.

use anyhow::{Result, bail, ensure};
use dnspolicy_e2e::Cluster;
use dnspolicy_e2e::operator::{
    corefile, install_manifests, service_account_kubeconfig, token_kubeconfig,
};

/// kubectl as `kubeconfig`'s user; Err(stderr) when the apiserver refuses.
fn kubectl_as(c: &Cluster, kubeconfig: &std::path::Path, args: &[&str]) -> Result<String> {
    let mut all = vec!["--kubeconfig", kubeconfig.to_str().unwrap()];
    all.extend_from_slice(args);
    c.kubectl(&all)
}

fn denied_by(result: Result<String>, policy: &str) -> Result<()> {
    match result {
        Ok(out) => bail!("allowed, but {policy} should deny it: {out}"),
        Err(e) => {
            let e = format!("{e:#}");
            ensure!(
                e.contains(policy),
                "refused, but not by {policy} (RBAC?): {e}"
            );
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_admission_policies_deny_what_rbac_would_allow() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    install_manifests(&c)?;

    // The operator's token: RBAC lets it create any ConfigMap in kube-system
    // and patch the coredns Deployment.
    let operator = service_account_kubeconfig(&c, "dnspolicy-system", "dnspolicy")?;
    let policy = "dnspolicy-operator-writes";
    // Admission policies take a moment to be loaded by the apiserver.
    let mut tries = 0;
    loop {
        let r = kubectl_as(
            &c,
            &operator,
            &[
                "-n",
                "kube-system",
                "create",
                "configmap",
                "aws-auth",
                "--from-literal=mapRoles=[]",
            ],
        );
        match (&r, tries) {
            (Ok(_), t) if t < 20 => {
                c.kubectl(&["-n", "kube-system", "delete", "configmap", "aws-auth"])?;
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            _ => {
                denied_by(r, policy)?;
                break;
            }
        }
    }
    // (object, patch type, patch, allowed): what RBAC allows the operator
    // in the CoreDNS objects, and what the policy leaves of it.
    let corefile_patch = serde_json::json!({"data": {"Corefile": corefile(&c)?}}).to_string();
    let patches: [(&str, &str, &str, bool); 4] = [
        (
            "deployment",
            "json",
            r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"evil.example/coredns:latest"}]"#,
            false,
        ),
        ("configmap", "merge", r#"{"data":{"other":"x"}}"#, false),
        (
            "deployment",
            "merge",
            r#"{"spec":{"template":{"metadata":{"annotations":{"dnspolicy.dev/corefile-hash":"sha256:admission-test"}}}}}"#,
            true,
        ),
        ("configmap", "merge", &corefile_patch, true),
    ];
    for (kind, type_, patch, allowed) in patches {
        let r = kubectl_as(
            &c,
            &operator,
            &[
                "-n",
                "kube-system",
                "patch",
                kind,
                "coredns",
                &format!("--type={type_}"),
                "-p",
                patch,
            ],
        );
        if allowed {
            r.map_err(|e| anyhow::anyhow!("{kind} patch {patch} refused: {e:#}"))?;
        } else {
            denied_by(r, policy)?;
        }
    }

    // The node agent's token, bound to a pod on one node: it may annotate
    // that Node with its host search list, and nothing else.
    let nodes = c.kubectl(&["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"])?;
    let own = nodes
        .split_whitespace()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no node"))?
        .to_string();
    let own = own.as_str();
    // Another (kwok) node for the agent to be refused on.
    let other = "admission-other-node";
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {other}\n  annotations: {{kwok.x-k8s.io/node: fake}}\n  labels: {{type: kwok}}\nspec: {{}}\n"),
    )?;
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: admission-agent, namespace: dnspolicy-system}}\nspec:\n  nodeName: {own}\n  serviceAccountName: dnspolicy-node-agent\n  tolerations: [{{operator: Exists}}]\n  containers: [{{name: agent, image: registry.invalid/none}}]\n"
    );
    c.kubectl_stdin(&["apply", "-f", "-"], &pod)?;
    let token = c.kubectl(&[
        "-n",
        "dnspolicy-system",
        "create",
        "token",
        "dnspolicy-node-agent",
        "--bound-object-kind=Pod",
        "--bound-object-name=admission-agent",
        "--duration=1h",
    ])?;
    let agent = token_kubeconfig(&c, "admission-agent", &token)?;
    let policy = "dnspolicy-node-agent-writes";
    kubectl_as(
        &c,
        &agent,
        &[
            "annotate",
            "node",
            own,
            "--overwrite",
            "dnspolicy.dev/host-search=tailb45a71.ts.net",
        ],
    )?;
    denied_by(
        kubectl_as(
            &c,
            &agent,
            &[
                "annotate",
                "node",
                other,
                "--overwrite",
                "dnspolicy.dev/host-search=tailb45a71.ts.net",
            ],
        ),
        policy,
    )?;
    denied_by(
        kubectl_as(
            &c,
            &agent,
            &["label", "node", own, "--overwrite", "evil=true"],
        ),
        policy,
    )?;
    c.kubectl(&[
        "-n",
        "dnspolicy-system",
        "delete",
        "pod",
        "admission-agent",
        "--wait=false",
    ])?;
    c.kubectl(&["annotate", "node", own, "dnspolicy.dev/host-search-"])?;
    c.kubectl(&["delete", "node", other, "--wait=false"])?;

    // spec.target is immutable (CEL on the CRD): a changed target would
    // orphan the stanzas written into the old one.
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: dnspolicy.dev/v1alpha1\nkind: ClusterDNSPolicy\nmetadata: {name: admission-target}\nspec:\n  foreignSuffixes: [{suffix: openstacklocal, action: NXDomain}]\n",
    )?;
    let moved = c.kubectl(&[
        "patch",
        "cdp",
        "admission-target",
        "--type=merge",
        "-p",
        r#"{"spec":{"target":{"configMap":"other"}}}"#,
    ]);
    let refused = format!(
        "{:#}",
        moved
            .as_ref()
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default()
    );
    c.kubectl(&["delete", "cdp", "admission-target", "--wait=false"])?;
    ensure!(
        refused.contains("spec.target is immutable"),
        "changing spec.target was not refused: {moved:?}"
    );
    Ok(())
}
