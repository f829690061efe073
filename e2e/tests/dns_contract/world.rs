//! The cluster the contract runs in: the app's Services and pod, the
//! upstreams, policies applied and waited on, the Corefile pointed at the
//! answering upstream, what `coredns-custom` holds.

use super::*;

/// In-cluster objects: Service frigate, headless Service frigate-db with one pod.
pub struct Workloads {
    pub frigate: IpAddr,
    pub db_pod: IpAddr,
}

impl Workloads {
    pub async fn create(c: &Cluster) -> Result<Workloads> {
        let yaml = format!(
            r#"apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Service
metadata: {{name: frigate, namespace: {NS}}}
spec:
  selector: {{app: frigate}}
  ports: [{{port: 5000}}]
---
apiVersion: v1
kind: Service
metadata: {{name: frigate-db, namespace: {NS}}}
spec:
  clusterIP: None
  selector: {{app: frigate-db}}
  ports: [{{port: 5432}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: frigate-db-0, namespace: {NS}, labels: {{app: frigate-db}}}}
spec:
  hostname: frigate-db-0
  subdomain: frigate-db
  containers: [{{name: postgres, image: "postgres:16"}}]
"#
        );
        c.apply_as("e2e-dns-contract", &yaml)?;
        c.kubectl(&[
            "-n",
            NS,
            "wait",
            "--for=condition=Ready",
            "pod/frigate-db-0",
            "--timeout=60s",
        ])?;
        let get = |kind: &str, name: &str, path: &str| -> Result<IpAddr> {
            let v = c.kubectl(&[
                "-n",
                NS,
                "get",
                kind,
                name,
                "-o",
                &format!("jsonpath={{{path}}}"),
            ])?;
            v.trim()
                .parse()
                .with_context(|| format!("{kind}/{name} {path}: {v:?}"))
        };
        Ok(Workloads {
            frigate: get("service", "frigate", ".spec.clusterIP")?,
            db_pod: get("pod", "frigate-db-0", ".status.podIP")?,
        })
    }

    pub fn delete(c: &Cluster) -> Result<()> {
        c.kubectl(&[
            "-n",
            NS,
            "delete",
            "service/frigate-db",
            "pod/frigate-db-0",
            "--ignore-not-found",
            "--wait=false",
        ])?;
        Ok(())
    }

    /// docs/design.md §3 case 1 names and what CoreDNS answers for them (A).
    pub fn names(&self) -> Vec<(&'static str, Want)> {
        vec![
            (FRIGATE, Want::Addr(self.frigate)),
            (HEADLESS, Want::Addr(self.db_pod)),
            (HEADLESS_POD, Want::Addr(self.db_pod)),
            (POD_NAME, Want::Addr("1.2.3.4".parse().unwrap())),
            (MISSING, Want::NxDomain),
        ]
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    Addr(IpAddr),
    NxDomain,
}

/// The tailnet's resolver on loopback, and the upstream's records; the
/// upstream's table is put back by `restore`.
pub struct Upstreams {
    pub magicdns: DnsServer,
    pub table_was: String,
}

impl Upstreams {
    pub fn start(c: &Cluster) -> Result<Upstreams> {
        let magicdns = c.start_dns_server(
            format!("{MAGICDNS}:53").parse()?,
            &format!("{MYHOST} A {MYHOST_TAILNET}\n{MYHOST} AAAA fd7a:115c:a1e0::7\n"),
            dns::Action::Nxdomain,
        )?;
        let table_was = std::fs::read_to_string(c.upstream_table()).unwrap_or_default();
        std::fs::write(c.upstream_table(), UPSTREAM_TABLE)?;
        Ok(Upstreams {
            magicdns,
            table_was,
        })
    }

    pub fn restore(&self, c: &Cluster) -> Result<()> {
        std::fs::write(c.upstream_table(), &self.table_was)?;
        Ok(())
    }
}

/// Apply a policy and wait until every policy is Ready for its generation
/// (CoreDNS rolled).
pub async fn apply_ready(
    c: &Cluster,
    op: &Operator,
    yaml: &str,
    names: &[&str],
) -> Result<Duration> {
    let t0 = Instant::now();
    apply(c, yaml)?;
    for n in names {
        wait_ready(c, n, WAIT)
            .await
            .with_context(|| format!("operator log:\n{}", op.log_text()))?;
    }
    Ok(t0.elapsed())
}

/// The stock Corefile's `forward` pointed at the answering upstream, rolled out.
pub async fn answering_upstream(c: &Cluster, corefile: &str) -> Result<()> {
    let answering = corefile.replace(
        "forward . /etc/resolv.conf",
        &format!("forward . {}", env::UPSTREAM_IP),
    );
    ensure!(
        answering != corefile,
        "no `forward . /etc/resolv.conf` in\n{corefile}"
    );
    c.set_corefile(&answering)?;
    c.restart_coredns()?;
    rolled(c).await?;
    Ok(())
}

/// `coredns-custom`'s data, empty when it does not exist.
pub fn custom_keys(c: &Cluster) -> Result<BTreeMap<String, String>> {
    let found = c.kubectl(&[
        "-n",
        "kube-system",
        "get",
        "configmap",
        "--ignore-not-found",
        "-o",
        "name",
        "coredns-custom",
    ])?;
    if found.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let cm = get_json(c, &["-n", "kube-system", "configmap", "coredns-custom"])?;
    Ok(cm["data"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect())
}

/// A failed state check goes on to the next state; the Corefile it ran is
/// printed for the report.
pub fn show_on_failure(c: &Cluster, checked: &Result<()>) -> Result<()> {
    if let Err(e) = checked {
        println!("FAILED, going on with the next state: {e:#}");
        println!("--- Corefile\n{}", corefile(c)?);
        if let Ok(custom) = get_json(c, &["-n", "kube-system", "configmap", "coredns-custom"]) {
            for (k, v) in custom["data"].as_object().into_iter().flatten() {
                println!("--- coredns-custom {k}\n{}", v.as_str().unwrap_or_default());
            }
        }
    }
    Ok(())
}
