//! Issue 10 part 3a: what a glibc client reads back from a Rewrite answer
//! (docs/design.md, "What a Rewrite client reads back"). Real glibc
//! (`getent ahosts`, which asks getaddrinfo for AI_CANONNAME and prints it)
//! under `unshare --mount` with a resolv.conf bind-mounted over
//! /etc/resolv.conf (`search tailb45a71.ts.net`, `ndots:5`), against real
//! CoreDNS on 127.0.95.1:53 (resolv.conf has no port) edited by
//! `plan::desired` for a Rewrite policy. musl the same way, through
//! `e2e/probe/musl-canon.c` (getaddrinfo with AI_CANONNAME, built static by
//! `build-deps.sh musl-canon`). Needs root, like the e2e resolvers.
//! The upstream (127.0.95.2:5300, tests/kit) answers every A query.

mod kit;

use std::path::Path;
use std::process::Command;

use dnspolicy_crd::SuffixAction;
use dnspolicy_dns::plan::{ClusterDns, desired};
use dnspolicy_dns::version::CoreDnsVersion;
use kit::{Process, answering_resolver, e2e_policies, e2e_rule, scratch_dir, stock_coredns};
use sha2::{Digest, Sha256};

const NET: u8 = 95;

/// `program args... name` in a mount namespace whose /etc/resolv.conf is
/// `resolv`; its stdout.
fn with_resolv_conf(resolv: &Path, program: &[&str], name: &str) -> String {
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$0\" /etc/resolv.conf && shift && exec \"$@\"")
        .arg(resolv)
        .arg("--")
        .args(program)
        .arg(name)
        .output()
        .expect("unshare (util-linux) must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program:?} {name} ({}; this test needs root for unshare --mount): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The musl probe, `~/.cache/dnspolicy-e2e/musl-canon/<source hash>/musl-canon`.
fn musl_canon() -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/probe/musl-canon.c");
    let hash = format!("{:x}", Sha256::digest(std::fs::read(&src).unwrap()));
    let cache = std::env::var_os("DNSPOLICY_E2E_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var("HOME").unwrap()).join(".cache/dnspolicy-e2e"));
    let bin = cache
        .join("musl-canon")
        .join(&hash[..12])
        .join("musl-canon");
    assert!(
        bin.exists(),
        "{} is missing: run `bash e2e/scripts/build-deps.sh musl-canon`",
        bin.display()
    );
    bin.display().to_string()
}

/// musl's canonical name for `name` and the addresses it returned.
fn musl_getaddrinfo(resolv: &Path, bin: &str, name: &str) -> (String, Vec<String>) {
    let stdout = with_resolv_conf(resolv, &[bin], name);
    let canonical = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CANON "))
        .unwrap_or_default()
        .to_string();
    let mut addrs: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ADDR ").map(String::from))
        .collect();
    addrs.dedup();
    (canonical, addrs)
}

/// glibc's canonical name for `name` and the addresses it returned.
fn getent_ahosts(resolv: &Path, name: &str) -> (String, Vec<String>) {
    let stdout = with_resolv_conf(resolv, &["getent", "ahosts"], name);
    // `ADDR  STREAM CANONNAME` first, then the other socket types.
    let first = stdout.lines().next().unwrap_or_default();
    let canonical = first
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string();
    let mut addrs: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    addrs.dedup();
    (canonical, addrs)
}

#[test]
fn glibc_and_musl_read_the_suffixed_name_as_canonical_and_targets_outside_it_unchanged() {
    let musl = musl_canon();
    let dir = scratch_dir("readback", NET);
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        format!(
            "nameserver 127.0.{NET}.1\nsearch tailb45a71.ts.net\noptions ndots:5 attempts:1 timeout:2\n"
        ),
    )
    .unwrap();
    let upstream = answering_resolver(&format!("127.0.{NET}.2:5300"), 2);
    let base = format!(
        ".:53 {{\n    bind 127.0.{NET}.1\n    errors\n    forward . 127.0.{NET}.2:5300\n    cache 30\n    loop\n}}\n"
    );
    let merged = e2e_policies(vec![e2e_rule(
        "tailb45a71.ts.net",
        SuffixAction::Rewrite,
        1,
        &[],
    )]);
    for version in ["1.8.4", "1.14.2"] {
        let edited = desired(
            &base,
            &merged,
            Ok(version.parse::<CoreDnsVersion>().unwrap()),
            &ClusterDns::default(),
        )
        .unwrap()
        .corefile;
        let mut coredns = Process::start(&stock_coredns(version), &dir, version, &edited);
        coredns.wait_serving(format!("127.0.{NET}.1:53").parse().unwrap(), "ready.test.");
        // No CNAME: the canonical name is the name asked, suffix included
        // (without the policy a tailnet NXDOMAIN would have led glibc on to
        // `example.com` itself).
        assert_eq!(
            getent_ahosts(&resolv, "example.com"),
            (
                "example.com.tailb45a71.ts.net".into(),
                vec!["198.51.100.2".into()]
            ),
            "CoreDNS {version}"
        );
        // musl likewise (A and AAAA asked at once, the search list first).
        assert_eq!(
            musl_getaddrinfo(&resolv, &musl, "example.com"),
            (
                "example.com.tailb45a71.ts.net".into(),
                vec!["198.51.100.2".into()]
            ),
            "CoreDNS {version}"
        );
        // The answers came through the Rewrite: only stripped names went upstream.
        let seen = std::mem::take(&mut *upstream.lock().unwrap());
        assert!(seen.contains(&"example.com. 1".to_string()), "{seen:?}");
        assert!(
            !seen.iter().any(|n| n.contains("tailb45a71")),
            "CoreDNS {version}: {seen:?}"
        );
        // A CNAME out of the asked name: its target, unchanged.
        assert_eq!(
            getent_ahosts(&resolv, "www.cname.test"),
            ("edge.cdn.test".into(), vec!["198.51.100.2".into()]),
            "CoreDNS {version}"
        );
        assert_eq!(
            musl_getaddrinfo(&resolv, &musl, "www.cname.test"),
            ("edge.cdn.test".into(), vec!["198.51.100.2".into()]),
            "CoreDNS {version}"
        );
        coredns.stop();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
