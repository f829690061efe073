//! The real-CoreDNS matrix's cells, shared by the test binaries that run
//! them (dns/tests/coredns_matrix.rs: the plan against real CoreDNS;
//! explain/tests/matrix_agreement.rs: explain's serving model against real
//! CoreDNS): the versions, the Corefile layouts as the cluster has them and
//! as the run serves them, the zones standing for the `kubernetes` plugin,
//! and the one policy. Each binary includes it next to `kit`:
//! `#[path = ".../kit/matrix.rs"] mod matrix;`.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use dnspolicy_crd::SuffixAction;
use dnspolicy_crd::vocabulary::Reason;
use dnspolicy_dns::policy::MergedPolicies;
use dnspolicy_dns::version::CoreDnsVersion;

use crate::kit::{e2e_policies, e2e_rule};

pub const REWRITE: &str = "tailb45a71.ts.net";
pub const NXDOMAIN: &str = "openstacklocal";
pub const FORWARD_TO: &str = "eu-west-1.compute.internal";
pub const SUFFIXES: [&str; 3] = [REWRITE, NXDOMAIN, FORWARD_TO];

pub const VERSIONS: [&str; 4] = ["1.8.4", "1.9.4", "1.10.0", "1.14.2"];

// ---- layouts ----

/// How the `.` block and the blocks around it are laid out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Layout {
    Kubeadm,
    ClusterBlock,
    StubDomain,
    StubInDot,
    BindLo,
    BindIp,
    Autopath,
    Acl,
    View,
    UserRewrite,
    DnsPortFlag,
}

pub const LAYOUTS: [Layout; 11] = [
    Layout::Kubeadm,
    Layout::ClusterBlock,
    Layout::StubDomain,
    Layout::StubInDot,
    Layout::BindLo,
    Layout::BindIp,
    Layout::Autopath,
    Layout::Acl,
    Layout::View,
    Layout::UserRewrite,
    Layout::DnsPortFlag,
];

/// One cell's addresses.
pub struct Cell {
    pub net: u8,
    pub port: u16,
}

impl Cell {
    pub fn ip(&self, host: u8) -> String {
        format!("127.0.{}.{host}", self.net)
    }
    pub fn resolver(&self, host: u8) -> String {
        format!("{}:5300", self.ip(host))
    }
    /// The client blocked by the `acl` layout.
    pub fn blocked_client(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, self.net, 8))
    }
}

/// kubeadm's `kubernetes` block, and what the run serves in its place.
pub const KUBERNETES: &str = "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n       pods insecure\n       fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }\n";
/// The same in the fixtures (no `ttl`).
pub const KUBERNETES_FIXTURE: &str = "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n       pods insecure\n       fallthrough in-addr.arpa ip6.arpa\n    }\n";
pub const KUBERNETES_CLUSTER_ONLY: &str =
    "    kubernetes cluster.local {\n       pods insecure\n       ttl 30\n    }\n";

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Kubeadm => "kubeadm default",
            Layout::ClusterBlock => "separate `cluster.local` block",
            Layout::StubDomain => "stub domain block",
            Layout::StubInDot => "stub domain `forward` in `.`",
            Layout::BindLo => "`bind lo`",
            Layout::BindIp => "`bind <ip>`",
            Layout::Autopath => "`autopath @kubernetes`",
            Layout::Acl => "`acl`",
            Layout::View => "client-IP `view`",
            Layout::UserRewrite => "user `rewrite`",
            Layout::DnsPortFlag => "`-dns.port` (key `.`)",
        }
    }

    pub fn change(self) -> &'static str {
        match self {
            Layout::Kubeadm => "kubeadm's `.` block (key `.:PORT`, no `bind`)",
            Layout::ClusterBlock => {
                "`kubernetes` moved out of `.` into a `cluster.local:PORT` block (cf. fixture `refused/separate-cluster-block-bind-interface`)"
            }
            Layout::StubDomain => {
                "a `corp.example:PORT` block forwarding to the stub's resolver (kubeadm's stubDomains translation)"
            }
            Layout::StubInDot => {
                "fixture `refused/stub-forward-corp-example` as is but for addresses and port: `forward corp.example STUB` before `forward .` in `.`"
            }
            Layout::BindLo => "`bind lo` in `.` (NodeLocal-style: no IP to reach CoreDNS again)",
            Layout::BindIp => "`bind 127.0.N.1` in `.`, standing for the pod IP",
            Layout::Autopath => "`autopath @kubernetes` in `.` (fixture `refused/autopath`)",
            Layout::Acl => {
                "`acl { block net 127.0.N.8/32 }` in `.` (cf. fixture `refused/acl`); the blocked client is asked too"
            }
            Layout::View => {
                "`view pods { expr incidr(client_ip(), '127.0.0.0/8') }` in `.` (cf. fixture `refused/view-client-ip`)"
            }
            Layout::UserRewrite => {
                "`rewrite name regex (.*)\\.old\\.example {1}.new.example` in `.` (fixture `refused/user-rewrite`); its own name is asked too"
            }
            Layout::DnsPortFlag => "key `.` without a port, CoreDNS started with `-dns.port PORT`",
        }
    }

    /// The reason `plan::desired` must refuse the layout for, on `version`.
    pub fn expected_refusal(self, version: CoreDnsVersion) -> Option<Reason> {
        let view = version.has_view();
        match self {
            Layout::ClusterBlock | Layout::StubDomain if !view => {
                Some(Reason::StrippedNameNotRouted)
            }
            Layout::Autopath => Some(Reason::AutopathInDotBlock),
            Layout::Acl | Layout::View if view => Some(Reason::ClientIPPolicyInDotBlock),
            Layout::UserRewrite if version < CoreDnsVersion::REWRITE_REVERTS_FAILURES => {
                Some(Reason::UserRewriteOnOldCoreDNS)
            }
            _ => None,
        }
    }

    /// The Corefile as the cluster has it (with `kubernetes`), and the
    /// `-dns.port` CoreDNS runs with.
    pub fn corefile(self, cell: &Cell) -> (String, Option<u16>) {
        let port = cell.port;
        let dot = |key: &str, top: &str, kubernetes: &str| {
            format!(
                "{key} {{\n    errors\n{top}{kubernetes}    forward . {up} {{\n       max_concurrent 1000\n    }}\n    cache 30\n    loop\n    reload\n    loadbalance\n}}\n",
                up = cell.resolver(2)
            )
        };
        let key = format!(".:{port}");
        let text = match self {
            Layout::Kubeadm => dot(&key, "", KUBERNETES),
            Layout::ClusterBlock => format!(
                "{}\ncluster.local:{port} {{\n    errors\n{KUBERNETES_CLUSTER_ONLY}    cache 30\n}}\n",
                dot(&key, "", "")
            ),
            Layout::StubDomain => format!(
                "{}\ncorp.example:{port} {{\n    errors\n    cache 30\n    forward . {stub}\n}}\n",
                dot(&key, "", KUBERNETES),
                stub = cell.resolver(4)
            ),
            Layout::StubInDot => fixture("refused/stub-forward-corp-example.Corefile")
                .replace(".:53 {", &format!("{key} {{"))
                .replace(
                    "forward corp.example 10.0.0.53",
                    &format!("forward corp.example {}", cell.resolver(4)),
                )
                .replace(
                    "forward . /etc/resolv.conf",
                    &format!("forward . {}", cell.resolver(2)),
                ),
            Layout::BindLo => dot(&key, "    bind lo\n", KUBERNETES),
            Layout::BindIp => dot(&key, &format!("    bind {}\n", cell.ip(1)), KUBERNETES),
            Layout::Autopath => dot(&key, "    autopath @kubernetes\n", KUBERNETES),
            Layout::Acl => dot(
                &key,
                &format!(
                    "    acl {{\n        block net {}/32\n    }}\n",
                    cell.blocked_client()
                ),
                KUBERNETES,
            ),
            Layout::View => dot(
                &key,
                "    view pods {\n        expr incidr(client_ip(), '127.0.0.0/8')\n    }\n",
                KUBERNETES,
            ),
            Layout::UserRewrite => dot(
                &key,
                "    rewrite name regex (.*)\\.old\\.example {1}.new.example\n",
                KUBERNETES,
            ),
            Layout::DnsPortFlag => return (dot(".", "", KUBERNETES), Some(port)),
        };
        (text, None)
    }

    /// Why the layout cannot exist on `version`, and what CoreDNS says when
    /// it refuses the Corefile at start-up.
    pub fn absent_on(self, version: CoreDnsVersion) -> Option<(&'static str, &'static str)> {
        match self {
            Layout::View if !version.has_view() => Some(("plugin absent", "view")),
            Layout::StubInDot if version < CoreDnsVersion::new(1, 9, 0) => Some((
                "one `forward` per server block",
                "can only be used once per Server Block",
            )),
            _ => None,
        }
    }

    /// Where a client reaches the `.` block.
    pub fn server(self, cell: &Cell) -> SocketAddr {
        let ip = match self {
            Layout::BindIp => cell.ip(1),
            _ => "127.0.0.1".into(),
        };
        format!("{ip}:{}", cell.port).parse().unwrap()
    }
}

pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dns/tests/fixtures/corefiles")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `corefile` as the run serves it: `kubernetes` replaced by `file` zones.
pub fn runnable(corefile: &str, db: &Path, reverse: &Path) -> String {
    let file = format!(
        "    file {} cluster.local\n    file {} 0.96.10.in-addr.arpa\n",
        db.display(),
        reverse.display()
    );
    let only = format!("    file {} cluster.local\n", db.display());
    let out = corefile
        .replace(KUBERNETES, &file)
        .replace(KUBERNETES_FIXTURE, &file)
        .replace(KUBERNETES_CLUSTER_ONLY, &only);
    assert!(!out.contains("kubernetes"), "{out}");
    loopback_only(&out)
}

/// `corefile` with `bind 127.0.0.1` in every server block that binds
/// nothing, so no cell listens beyond loopback. The plan read those blocks
/// unbound and self-forwards to 127.0.0.1 on their port, which this keeps
/// serving; clients ask 127.0.0.1 (`Layout::server`).
pub fn loopback_only(corefile: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    let mut header_end = 0;
    let mut binds = false;
    for line in corefile.lines() {
        let trimmed = line.trim();
        let opens = line.matches('{').count();
        let closes = line.matches('}').count();
        out.push_str(line);
        out.push('\n');
        if depth == 0 && trimmed.ends_with('{') {
            header_end = out.len();
            binds = false;
        } else if depth == 1 && trimmed.starts_with("bind ") {
            binds = true;
        }
        depth = (depth + opens).saturating_sub(closes);
        if depth == 0 && closes > opens && !binds {
            out.insert_str(header_end, "    bind 127.0.0.1\n");
            binds = true;
        }
    }
    out
}

/// The zones standing for the kubernetes plugin: a Service, an SRV record
/// for its port, an ExternalName Service (a CNAME out of the cluster), and
/// the Service IP's PTR.
pub fn write_zones(dir: &Path) -> (PathBuf, PathBuf) {
    let db = dir.join("cluster.local.db");
    std::fs::write(
        &db,
        "$ORIGIN cluster.local.\n\
         @ 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30\n\
         @ 30 IN NS ns.dns.cluster.local.\n\
         ns.dns 30 IN A 10.96.0.10\n\
         frigate.video-management-system.svc 5 IN A 10.96.0.50\n\
         _http._tcp.frigate.video-management-system.svc 5 IN SRV 0 100 80 frigate.video-management-system.svc.cluster.local.\n\
         ext.default.svc 5 IN CNAME www.cname.test.\n\
         in.default.svc 5 IN CNAME web.in.default.svc.cluster.local.\n\
         web.in.default.svc 5 IN A 10.96.0.60\n",
    )
    .unwrap();
    let reverse = dir.join("reverse.db");
    std::fs::write(
        &reverse,
        "$ORIGIN 0.96.10.in-addr.arpa.\n\
         @ 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30\n\
         @ 30 IN NS ns.dns.cluster.local.\n\
         50 5 IN PTR frigate.video-management-system.svc.cluster.local.\n",
    )
    .unwrap();
    (db, reverse)
}

pub fn policy(cell: &Cell) -> MergedPolicies {
    let forward_to = [cell.resolver(3)];
    let mut rules = vec![
        e2e_rule(REWRITE, SuffixAction::Rewrite, 1, &[]),
        e2e_rule(NXDOMAIN, SuffixAction::NXDomain, 1, &[]),
        e2e_rule(FORWARD_TO, SuffixAction::NXDomain, 1, &forward_to),
    ];
    rules.sort_by(|a, b| a.suffix.cmp(&b.suffix));
    e2e_policies(rules)
}

/// Runs `run` on every (version, layout) of the matrix: a thread per
/// version with its own 127.0.{first_net + version}.0/24, stand-in resolvers
/// made by `resolvers(net)`, a scratch dir `what`, and CoreDNS on port
/// `first_port + 20 * version + layout`. Rows by version, cells by layout.
pub fn every_cell<R, T: Send>(
    what: &str,
    first_net: u8,
    first_port: u16,
    resolvers: impl Fn(u8) -> R + Sync,
    run: impl Fn(&Path, CoreDnsVersion, Layout, &Cell, &R, &Path) -> T + Sync,
) -> Vec<Vec<T>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = VERSIONS
            .iter()
            .enumerate()
            .map(|(vi, v)| {
                let (resolvers, run) = (&resolvers, &run);
                scope.spawn(move || {
                    let version: CoreDnsVersion = v.parse().unwrap();
                    let bin = crate::kit::stock_coredns(v);
                    let net = first_net + vi as u8;
                    let stand_ins = resolvers(net);
                    let dir = crate::kit::scratch_dir(what, net);
                    let row = LAYOUTS
                        .iter()
                        .enumerate()
                        .map(|(li, layout)| {
                            let cell = Cell {
                                net,
                                port: first_port + 20 * vi as u16 + li as u16,
                            };
                            run(&bin, version, *layout, &cell, &stand_ins, &dir)
                        })
                        .collect();
                    let _ = std::fs::remove_dir_all(&dir);
                    row
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}
