//! The real node (kubelet, containerd, CNI, kube-proxy in a netns; see
//! e2e/src/cluster/node.rs): the kubelet model (dns/src/kubelet.rs) against
//! the resolv.conf real kubelet gives real pods, and a stop that leaves
//! nothing behind on the host.
//!
//! Each test starts the node and stops it again, so suites that run after
//! this one find the cluster as `up` left it (kwok nodes only).

use anyhow::{Context, Result, bail};
use dnspolicy_dns::kubelet::{
    ClusterDns, DnsPolicy, NodeDns, PodDns, PodDnsConfig, PodDnsOption, pod_resolv_conf,
};
use dnspolicy_e2e::Cluster;
use dnspolicy_e2e::cluster::node::{self, NodeOptions, ResolvConf};
use dnspolicy_e2e::env;
use dnspolicy_e2e::operator::{self, Operator};
use dnspolicy_e2e::seed_pods;

const NS: &str = "realnode-kubelet";

/// One pod: its DNS fields, and the node resolv.conf kubelet reads when it
/// creates the pod's sandbox (None: the node's usual file).
struct Case {
    name: &'static str,
    policy: &'static str,
    host_network: bool,
    config: Option<PodDnsConfig>,
    node_file: Option<String>,
}

fn s(items: &[&str]) -> Vec<String> {
    items.iter().map(|i| i.to_string()).collect()
}

fn case(name: &'static str, policy: &'static str, host_network: bool) -> Case {
    Case {
        name,
        policy,
        host_network,
        config: None,
        node_file: None,
    }
}

fn config(
    nameservers: &[&str],
    searches: &[String],
    options: &[(&str, Option<&str>)],
) -> PodDnsConfig {
    PodDnsConfig {
        nameservers: s(nameservers),
        searches: searches.to_vec(),
        options: options
            .iter()
            .map(|(n, v)| PodDnsOption::new(n, *v))
            .collect(),
    }
}

/// The cases of dns/tests/kubelet_table.rs that a pod or the node file can
/// express (the API server rejects pod searches over 253 characters, so
/// those come from the node file).
fn cases() -> Vec<Case> {
    let node_search =
        |search: &str| Some(format!("nameserver {}\nsearch {search}\n", node::HOST_IP));
    let mut v = vec![
        case("cluster-first", "ClusterFirst", false),
        case("default", "Default", false),
        case("host-network-cluster-first", "ClusterFirst", true),
        case(
            "host-network-cluster-first-with-host-net",
            "ClusterFirstWithHostNet",
            true,
        ),
        case(
            "cluster-first-with-host-net",
            "ClusterFirstWithHostNet",
            false,
        ),
        case("host-network-default", "Default", true),
    ];
    let mut none = case("none", "None", false);
    none.config = Some(config(
        &["10.96.0.10"],
        &s(&[&format!("{NS}.svc.cluster.local"), "svc.cluster.local"]),
        &[("ndots", Some("2"))],
    ));
    v.push(none);
    let mut merged = case("dns-config-searches", "ClusterFirst", false);
    merged.config = Some(config(
        &[],
        &s(&["tailb45a71.ts.net", "corp.example.com", "svc.cluster.local"]),
        &[("single-request-reopen", None)],
    ));
    v.push(merged);
    let mut options = case("dns-config-options", "ClusterFirst", false);
    options.config = Some(config(
        &["10.0.0.53"],
        &[],
        &[
            ("ndots", Some("3")),
            ("debug", None),
            ("attempts", Some("3")),
        ],
    ));
    v.push(options);
    let mut default_config = case("default-with-dns-config", "Default", false);
    default_config.config = Some(config(
        &["10.0.0.53", "10.0.0.54", "10.0.0.55"],
        &s(&["corp.example.com"]),
        &[("edns0", None)],
    ));
    v.push(default_config);
    // 3 cluster entries + the tailnet + 29 of the pod's: 33, cut to 32.
    let mut many = case("search-over-32-entries", "ClusterFirst", false);
    many.config = Some(config(
        &[],
        &(1..=29)
            .map(|i| format!("d{i}.example"))
            .collect::<Vec<_>>(),
        &[],
    ));
    v.push(many);
    // Ten 202-character entries (2029 with spaces, within the API's 2048):
    // with the cluster entries in front, the line passes 2048 and is cut.
    let mut long = case("search-over-2048-chars", "ClusterFirst", false);
    long.config = Some(config(
        &[],
        &(0..10)
            .map(|i| {
                format!(
                    "{}.{}.{}.e{i}.example",
                    "a".repeat(63),
                    "b".repeat(63),
                    "c".repeat(63)
                )
            })
            .collect::<Vec<_>>(),
        &[],
    ));
    v.push(long);
    let mut dup = case("node-search-repeats-cluster-local", "ClusterFirst", false);
    dup.node_file = node_search("cluster.local tailb45a71.ts.net.");
    v.push(dup);
    let mut long_entry = case("node-search-entry-over-253", "ClusterFirst", false);
    long_entry.node_file = node_search(&format!("{}.ts.net tailb45a71.ts.net", "a".repeat(250)));
    v.push(long_entry);
    let mut too_many = case("node-search-pushes-suffix-out", "ClusterFirst", false);
    let mut host: Vec<String> = (1..=29).map(|i| format!("corp{i}.example.com")).collect();
    host.push("tailb45a71.ts.net".into());
    too_many.node_file = node_search(&host.join(" "));
    v.push(too_many);
    let busy_node = format!(
        "# managed by man:systemd-resolved(8)\nnameserver {}\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nnameserver 10.0.0.4\nsearch openstacklocal tailb45a71.ts.net\noptions edns0 trust-ad\n",
        node::HOST_IP
    );
    for (name, policy) in [
        ("node-options-default", "Default"),
        ("node-options-cluster-first", "ClusterFirst"),
    ] {
        let mut c = case(name, policy, false);
        c.node_file = Some(busy_node.clone());
        v.push(c);
    }
    v
}

fn pod_yaml(c: &Case, image: &str) -> String {
    let mut dns_config = String::new();
    if let Some(cfg) = &c.config {
        let list = |v: &[String]| {
            v.iter()
                .map(|x| format!("\"{x}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let options: Vec<String> = cfg
            .options
            .iter()
            .map(|o| match &o.value {
                Some(v) => format!("{{name: \"{}\", value: \"{v}\"}}", o.name),
                None => format!("{{name: \"{}\"}}", o.name),
            })
            .collect();
        dns_config = format!(
            "  dnsConfig:\n    nameservers: [{}]\n    searches: [{}]\n    options: [{}]\n",
            list(&cfg.nameservers),
            list(&cfg.searches),
            options.join(", ")
        );
    }
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {NS}}}
spec:
  nodeSelector: {{{key}: "true"}}
  tolerations: [{toleration}]
  hostNetwork: {host_network}
  dnsPolicy: {policy}
{dns_config}  terminationGracePeriodSeconds: 1
  containers: [{{name: pause, image: "{image}", imagePullPolicy: Never}}]
"#,
        name = c.name,
        key = node::TAINT_KEY,
        toleration = node::TOLERATION,
        host_network = c.host_network,
        policy = c.policy,
    )
}

/// What the model says kubelet writes for `c`, given the node file it read.
fn model(c: &Case, node_file: &str) -> Result<String> {
    let node = NodeDns::parse_resolv_conf(node_file).context("node resolv.conf")?;
    let pod = PodDns {
        namespace: NS.into(),
        dns_policy: DnsPolicy::from_spec(Some(c.policy)),
        host_network: c.host_network,
        dns_config: c.config.clone(),
    };
    let cluster = ClusterDns {
        domain: env::CLUSTER_DOMAIN.into(),
        cluster_dns_ips: s(&[env::DNS_SVC_IP]),
    };
    Ok(pod_resolv_conf(&pod, &node, &cluster).render())
}

/// The node file as containerd writes it for a Default pod: search first.
fn usual_as_written(usual: &str) -> String {
    let mut lines: Vec<&str> = usual.lines().collect();
    lines.sort_by_key(|l| !l.starts_with("search"));
    lines.join("\n") + "\n"
}

/// kubelet merges options through a Go map: their order is random. Every
/// other line, and the order of lines, must match exactly.
fn options_unordered(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix("options ") {
            Some(o) => {
                let mut v: Vec<&str> = o.split_whitespace().collect();
                v.sort();
                format!("options {}", v.join(" "))
            }
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn wait_ready(c: &Cluster, name: &str) -> Result<()> {
    c.kubectl(&[
        "-n",
        NS,
        "wait",
        "--for=condition=Ready",
        &format!("pod/{name}"),
        "--timeout=180s",
    ])
    .map(|_| ())
}

async fn compare_every_case(c: &Cluster, how: ResolvConf) -> Result<()> {
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n"),
    )?;
    let image = node::image("pause")?;
    let node_file_path = node::resolv_conf_file(&c.layout);
    let usual = node::resolv_conf_contents();
    let cases = cases();
    // Pods on the usual node file: created together.
    let (plain, node_side): (Vec<&Case>, Vec<&Case>) =
        cases.iter().partition(|k| k.node_file.is_none());
    for k in &plain {
        c.kubectl_stdin(&["apply", "-f", "-"], &pod_yaml(k, &image))?;
    }
    for k in &plain {
        wait_ready(c, k.name)?;
    }
    // kubelet reads the node file again for each new sandbox: one at a time.
    for k in &node_side {
        std::fs::write(&node_file_path, k.node_file.as_ref().unwrap())?;
        c.kubectl_stdin(&["apply", "-f", "-"], &pod_yaml(k, &image))?;
        wait_ready(c, k.name)?;
    }
    std::fs::write(&node_file_path, &usual)?;
    let mut diffs = Vec::new();
    let mut real = std::collections::BTreeMap::new();
    for k in &cases {
        let node_file = k.node_file.clone().unwrap_or_else(|| usual.clone());
        let want = model(k, &node_file)?;
        let got = node::pod_resolv_conf(&c.layout, NS, k.name)?;
        eprintln!("[real_node] {}:\n{got}", k.name);
        real.insert(k.name, got.clone());
        if options_unordered(&got) != options_unordered(&want) {
            diffs.push(format!(
                "{} ({how:?}): real kubelet wrote\n{got}\nthe model says\n{want}",
                k.name
            ));
        }
    }
    eprintln!(
        "[real_node] {} cases compared with the real kubelet ({how:?}), {} differ",
        cases.len(),
        diffs.len()
    );
    if !diffs.is_empty() {
        bail!("{}", diffs.join("\n---\n"));
    }
    // Without the model: what the seed is about, read straight off the real files.
    assert_eq!(
        real["cluster-first"],
        format!(
            "search {NS}.svc.cluster.local svc.cluster.local cluster.local tailb45a71.ts.net\nnameserver 10.96.0.10\noptions ndots:5\n"
        )
    );
    assert_eq!(real["default"], usual_as_written(&usual));
    assert!(!real["search-over-32-entries"].contains("d29.example"));
    assert!(!real["node-search-pushes-suffix-out"].contains("tailb45a71"));
    assert!(!real["node-options-default"].contains("10.0.0.4"));
    Ok(())
}

/// The real node for one test: stopped (and what the seed test changed put
/// back) by [`NodeRun::finish`], or on drop when the test panics, so the
/// next test and suite find the cluster as `up` left it.
struct NodeRun<'a> {
    c: &'a Cluster,
    seed: bool,
    done: bool,
}

impl<'a> NodeRun<'a> {
    fn start(c: &'a Cluster, opts: &NodeOptions, seed: bool) -> Result<Self> {
        // Not a node left by an earlier run: its recorded host state is ours.
        c.stop_node()?;
        let run = NodeRun {
            c,
            seed,
            done: false,
        };
        c.ensure_node(opts)?;
        Ok(run)
    }

    fn cleanup(&self) -> Result<()> {
        let c = self.c;
        if self.seed {
            seed_pods::restore(c);
            let _ = operator::clear_policies(c);
        }
        let _ = c.kubectl(&[
            "delete",
            "namespace",
            NS,
            "--ignore-not-found",
            "--wait=false",
        ]);
        c.stop_node()
    }

    fn finish(mut self) -> Result<()> {
        self.done = true;
        self.cleanup()
    }
}

impl Drop for NodeRun<'_> {
    fn drop(&mut self) {
        if !self.done
            && let Err(e) = self.cleanup()
        {
            eprintln!("[real_node] cleanup after a failure: {e:#}");
        }
    }
}

/// Every case of the kubelet table that a pod can express, on the real
/// node, with the node file reached through a systemd-resolved-style symlink.
#[tokio::test]
async fn kubelet_model_matches_the_real_kubelet() -> Result<()> {
    let c = Cluster::ensure().await?;
    let run = NodeRun::start(
        &c,
        &NodeOptions {
            resolv_conf: ResolvConf::SystemdSymlink,
        },
        false,
    )?;
    let link = node::kubelet_resolv_conf(&c.layout, ResolvConf::SystemdSymlink);
    assert!(
        link.symlink_metadata()?.file_type().is_symlink(),
        "{} is a symlink",
        link.display()
    );
    compare_every_case(&c, ResolvConf::SystemdSymlink).await?;
    run.finish()
}

/// What the running node changes on the host (each kind seen while it runs,
/// so the check after the stop cannot pass by looking in the wrong place),
/// then nothing once it is stopped; the host's iptables and the sysctls
/// kubelet sets are as they were before.
#[tokio::test]
async fn stopping_the_node_leaves_nothing_behind() -> Result<()> {
    let c = Cluster::ensure().await?;
    // A node left by an earlier run would make "before" its state, not the host's.
    c.stop_node()?;
    let sysctls_before = node::host_sysctls();
    let iptables_before = host_iptables()?;
    let run = NodeRun::start(&c, &NodeOptions::default(), false)?;
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n"),
    )?;
    let pod = case("cleanup-probe", "ClusterFirst", false);
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod_yaml(&pod, &node::image("busybox")?).replace(
            "imagePullPolicy: Never}",
            "imagePullPolicy: Never, command: [/bin/busybox, sleep, \"3600\"]}",
        ),
    )?;
    wait_ready(&c, pod.name)?;
    // The pod is a real process on a CNI address.
    let ip = c.kubectl(&[
        "-n",
        NS,
        "get",
        "pod",
        pod.name,
        "-o",
        "jsonpath={.status.podIP}",
    ])?;
    assert!(
        ip.starts_with("10.244.250."),
        "pod IP {ip:?} from the node's bridge"
    );

    let running = node::leftovers(&c.layout);
    for kind in [
        "process ",
        "mount ",
        "netns ",
        "link ",
        "cgroup ",
        "socket ",
        "log link ",
        "CNI result ",
    ] {
        assert!(
            running.iter().any(|l| l.starts_with(kind)),
            "while the node runs, the check finds a {kind:?}: {running:#?}"
        );
    }
    assert_eq!(
        node::host_sysctls(),
        [
            ("vm/overcommit_memory", "1"),
            ("kernel/panic", "10"),
            ("kernel/panic_on_oops", "1")
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec(),
        "kubelet sets these while it runs"
    );
    assert_eq!(
        host_iptables()?,
        iptables_before,
        "kube-proxy and kubelet rules stay in the netns"
    );

    run.finish()?;
    let left = node::leftovers(&c.layout);
    assert!(left.is_empty(), "left behind: {left:#?}");
    assert_eq!(node::host_sysctls(), sysctls_before);
    assert_eq!(host_iptables()?, iptables_before);
    let nodes = c.kubectl(&["get", "nodes", "-o", "name"])?;
    assert!(
        !nodes.contains(node::NODE_NAME),
        "Node object removed: {nodes}"
    );
    Ok(())
}

/// The host's iptables rules (nat and filter), without counters.
fn host_iptables() -> Result<String> {
    let out = std::process::Command::new("iptables-save")
        .output()
        .context("run iptables-save (apt-get install iptables)")?;
    if !out.status.success() {
        bail!("iptables-save: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" [").next().unwrap_or(l).to_string())
        .collect::<Vec<_>>()
        .join("\n"))
}

/// The seed, from inside real pods: a glibc pod and a musl pod on the real
/// node (their resolv.conf written by real kubelet, with the node's tailnet
/// suffix) look the seed's Service up through the kube-dns Service IP
/// (kube-proxy's iptables rules) served by real CoreDNS pods whose upstream
/// is a black hole (`dnspolicy_e2e::seed_pods`). Before: the polluted query
/// reaches the black hole, musl fails and glibc answers only after its tries
/// through the suffix time out. After the example policy (kubectl apply, the
/// operator writes the Corefile): both answer and nothing polluted goes
/// upstream.
#[tokio::test]
async fn seed_lookup_from_real_glibc_and_musl_pods() -> Result<()> {
    let c = Cluster::ensure().await?;
    // The kube-dns Service's selector is cluster-wide state.
    let _x = c.exclusive()?;
    let run = NodeRun::start(&c, &NodeOptions::default(), true)?;
    let blackhole = c.start_dns_server(
        format!("{}:53", node::HOST_IP).parse()?,
        "",
        dnspolicy_e2e::dns::Action::Drop,
    )?;
    seed_from_real_pods(&c, &blackhole).await?;
    run.finish()
}

async fn seed_from_real_pods(c: &Cluster, blackhole: &dnspolicy_e2e::DnsServer) -> Result<()> {
    // Stock CoreDNS and no policies, whatever ran before.
    operator::fresh(
        c,
        dnspolicy_e2e::Flavor::Kubeadm,
        &env::coredns_kubeadm_version(),
    )
    .await?;
    let frigate_ip = c.deploy_frigate(seed_pods::SEED_NS, 1, "e2e-test")?;
    seed_pods::start(c).await?;
    let resolv = node::pod_resolv_conf(&c.layout, "default", seed_pods::GLIBC_POD)?;
    assert!(
        resolv.contains(env::NODE_SEARCH) && resolv.contains(env::DNS_SVC_IP),
        "real kubelet's resolv.conf: {resolv}"
    );
    let polluted = format!("{}.{}.", seed_pods::SEED_NAME, env::NODE_SEARCH);
    let mark = blackhole.log.mark();
    let (glibc, musl) = seed_pods::seed_lookups(c);
    eprintln!(
        "[real_node] glibc pod: ok={} in {:.1}s: {}",
        glibc.ok,
        glibc.secs,
        glibc.output.trim()
    );
    eprintln!(
        "[real_node] musl pod: ok={} in {:.1}s: {}",
        musl.ok,
        musl.secs,
        musl.output.trim()
    );
    let seen = blackhole.log.names_ending_with(mark, env::NODE_SEARCH);
    assert!(
        seen.contains(&polluted),
        "the polluted query reached the black hole: {seen:?}"
    );
    assert!(
        glibc.ok && glibc.output.contains(&frigate_ip.to_string()),
        "glibc answers in the end: {}",
        glibc.output
    );
    assert!(
        !musl.ok && musl.output.contains("EAI -3"),
        "musl gives up with EAI_AGAIN: {}",
        musl.output
    );

    // The example policy, applied with kubectl and written by the operator;
    // the real CoreDNS pods are restarted to read the managed Corefile (the
    // operator rolls the harness's CoreDNS Deployment, not this one).
    operator::install_crd(c)?;
    let mut op = Operator::start(c, "real-node", &[])?;
    // Its forwardToRef needs Tailscale's DNSConfig (a tailnet): the tailnet
    // resolver is the harness's answering upstream, as a literal forwardTo.
    let policy = operator::tailscale_forwarding_to(&env::UPSTREAM_IP.to_string());
    c.kubectl_stdin(&["apply", "-f", "-"], &policy)?;
    let after = async {
        op.ready(c, "tailnet", std::time::Duration::from_secs(120))
            .await?;
        seed_pods::restart_coredns(c).await?;
        let mark = blackhole.log.mark();
        let (glibc, musl) = seed_pods::seed_lookups(c);
        eprintln!(
            "[real_node] after the policy, glibc pod: ok={} in {:.1}s: {}",
            glibc.ok,
            glibc.secs,
            glibc.output.trim()
        );
        eprintln!(
            "[real_node] after the policy, musl pod: ok={} in {:.1}s: {}",
            musl.ok,
            musl.secs,
            musl.output.trim()
        );
        let seen = blackhole.log.names_ending_with(mark, env::NODE_SEARCH);
        assert!(
            seen.is_empty(),
            "nothing polluted goes upstream now: {seen:?}"
        );
        assert!(
            glibc.ok && glibc.output.contains(&frigate_ip.to_string()),
            "glibc: {}",
            glibc.output
        );
        assert!(
            musl.ok && musl.output.contains(&format!("ADDR {frigate_ip}")),
            "musl: {}",
            musl.output
        );
        anyhow::Ok(())
    }
    .await;
    let stopped = op.delete_policies_and_stop(c);
    after?;
    stopped
}
