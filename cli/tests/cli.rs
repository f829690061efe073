//! The `dnspolicy` binary as a person runs it: render's laws on every
//! fixture, explain on the seed's example, exit codes for bad input, and the
//! committed CRD.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The address the Tailscale example's DNSConfig would publish, for render
/// to use offline in place of its forwardToRef.
const TS_NAMESERVER: &str = "--forward-ref-address=tailb45a71.ts.net=10.96.0.77";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dnspolicy"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(repo().join("dns/tests/fixtures/corefiles"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "Corefile"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "fixtures missing: {files:?}");
    files
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or("").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn example(name: &str) -> String {
    repo()
        .join("manifests/examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn render_laws_hold_for_every_fixture_and_example() {
    for fixture in fixtures() {
        let f = fixture.to_str().unwrap();
        let original = fs::read_to_string(&fixture).unwrap();
        for policy in ["tailscale.yaml", "openstack.yaml", "eks.yaml"] {
            let first = run(
                &[
                    "render",
                    "--corefile",
                    f,
                    "--policy",
                    &example(policy),
                    TS_NAMESERVER,
                ],
                None,
            );
            assert!(first.status.success(), "{f} + {policy}: {}", stderr(&first));
            let rendered = stdout(&first);
            // Rendering the output again changes nothing.
            let again = run(
                &[
                    "render",
                    "--corefile",
                    "-",
                    "--policy",
                    &example(policy),
                    TS_NAMESERVER,
                ],
                Some(&rendered),
            );
            assert!(
                again.status.success(),
                "{f} + {policy} again: {}",
                stderr(&again)
            );
            assert_eq!(
                stdout(&again),
                rendered,
                "{f} + {policy}: render is not idempotent"
            );
            // With no policy, the managed text goes and the fixture comes back byte for byte.
            let stripped = run(&["render", "--corefile", "-"], Some(&rendered));
            assert!(stripped.status.success(), "{f}: {}", stderr(&stripped));
            assert_eq!(
                stdout(&stripped),
                original,
                "{f} + {policy}: strip does not restore the fixture"
            );
        }
    }
}

#[test]
fn k3s_and_aks_get_coredns_custom_keys_instead() {
    for name in ["k3s-66c487bd.Corefile", "aks-2023.Corefile"] {
        let f = repo().join("dns/tests/fixtures/corefiles").join(name);
        let o = run(
            &[
                "render",
                "--corefile",
                f.to_str().unwrap(),
                "--policy",
                &example("tailscale.yaml"),
                TS_NAMESERVER,
                "--output",
                "custom",
            ],
            None,
        );
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let keys = stdout(&o);
        // From CoreDNS 1.10 the stanzas are whole server blocks: the `.server` key.
        assert!(
            keys.contains("# coredns-custom key dnspolicy.server"),
            "{name}: {keys}"
        );
        assert!(keys.contains("tailb45a71.ts.net:53 {"), "{name}: {keys}");
        let old = run(
            &[
                "render",
                "--corefile",
                f.to_str().unwrap(),
                "--policy",
                &example("eks.yaml"),
                "--output",
                "custom",
                "--coredns-version",
                "1.8.4",
            ],
            None,
        );
        assert!(old.status.success(), "{name}: {}", stderr(&old));
        // Before `view`, the rules go into the `.` block: the `.override` key.
        assert!(
            stdout(&old).contains("# coredns-custom key dnspolicy.override"),
            "{name}: {}",
            stdout(&old)
        );
    }
}

#[test]
fn explain_shows_the_leak_and_its_fix() {
    let kubeadm = repo().join("dns/tests/fixtures/corefiles/kubeadm-v1.36.3.Corefile");
    let base = [
        "explain",
        "frigate.video-management-system.svc.cluster.local",
        "--search",
        "workflow-engine.svc.cluster.local svc.cluster.local cluster.local tailb45a71.ts.net",
        "--ndots",
        "5",
        "--resolver",
        "musl",
        "--corefile",
        kubeadm.to_str().unwrap(),
    ];
    let before = run(&base, None);
    assert!(before.status.success(), "{}", stderr(&before));
    let text = stdout(&before);
    assert!(
        text.contains("frigate.video-management-system.svc.cluster.local.tailb45a71.ts.net"),
        "{text}"
    );
    let tailscale = example("tailscale.yaml");
    let mut with_policy = base.to_vec();
    with_policy.extend(["--policy", tailscale.as_str(), TS_NAMESERVER]);
    let after = run(&with_policy, None);
    assert!(after.status.success(), "{}", stderr(&after));
    let fixed = stdout(&after);
    assert_ne!(text, fixed);
    println!("--- before\n{text}--- after\n{fixed}");
}

/// With the node-local Corefile too, explain follows each query through the
/// cache and says which hop sends it upstream; without --corefile it refuses.
#[test]
fn explain_through_a_node_local_cache_names_the_hop() {
    let fixtures = repo().join("dns/tests/fixtures/corefiles");
    let kubeadm = fixtures.join("kubeadm-v1.36.3.Corefile");
    let cache = fixtures.join("nodelocaldns-kubespray-46dbdd39.Corefile");
    let base = [
        "explain",
        "frigate.video-management-system.svc.cluster.local",
        "--search",
        "workflow-engine.svc.cluster.local svc.cluster.local cluster.local tailb45a71.ts.net",
        "--resolver",
        "musl",
        "--corefile",
        kubeadm.to_str().unwrap(),
        "--node-local-corefile",
        cache.to_str().unwrap(),
    ];
    let before = run(&base, None);
    assert!(before.status.success(), "{}", stderr(&before));
    let text = stdout(&before);
    assert!(text.contains("node-local .:53"), "{text}");
    assert!(text.contains("FAILED"), "{text}");
    let tailscale = example("tailscale.yaml");
    let mut with_policy = base.to_vec();
    with_policy.extend(["--policy", tailscale.as_str(), TS_NAMESERVER]);
    let after = run(&with_policy, None);
    assert!(after.status.success(), "{}", stderr(&after));
    let fixed = stdout(&after);
    assert!(
        fixed.contains("node-local tailb45a71.ts.net:53 > CoreDNS tailb45a71.ts.net:53"),
        "{fixed}"
    );
    assert!(fixed.contains("no query reaches an upstream"), "{fixed}");

    let alone = run(&[&base[..6], &base[8..]].concat(), None);
    assert_eq!(alone.status.code(), Some(2), "{}", stderr(&alone));
    assert!(stderr(&alone).contains("--node-local-corefile needs --corefile"));
}

/// The block dnspolicy adds to a node-local cache for the tailnet example.
fn node_local_block(bind: &str, forward: &str) -> String {
    format!(
        "# dnspolicy:begin server-blocks (managed by dnspolicy; edits here are reverted)\n\
         # tailb45a71.ts.net (policy tailnet): every name in it goes to the cluster DNS, which applies the policy\n\
         tailb45a71.ts.net:53 {{\n    errors\n    cache {{\n        success 9984 30\n        denial 9984 5\n    }}\n    reload\n    loop\n    bind {bind}\n    forward . {forward} {{\n        force_tcp\n    }}\n    prometheus :9253\n}}\n\
         # dnspolicy:end server-blocks\n"
    )
}

#[test]
fn node_local_caches_send_each_suffix_to_coredns() {
    let dir = repo().join("dns/tests/fixtures/corefiles");
    for (file, bind, forward, listen) in [
        (
            "nodelocaldns-kubernetes-v1.36.3.Corefile",
            "__PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__",
            "__PILLAR__CLUSTER__DNS__",
            "listening on the addresses node-cache fills in from its -localip flag",
        ),
        (
            "nodelocaldns-kubespray-46dbdd39.Corefile",
            "169.254.25.10",
            "10.233.0.3",
            "listening link-local, on 169.254.25.10",
        ),
    ] {
        let path = dir.join(file);
        let f = path.to_str().unwrap();
        let original = fs::read_to_string(&path).unwrap();
        let out = run(
            &[
                "render",
                "--corefile",
                f,
                "--policy",
                &example("tailscale.yaml"),
                TS_NAMESERVER,
            ],
            None,
        );
        assert!(out.status.success(), "{file}: {}", stderr(&out));
        // No `view` (node-cache lacks it) and nothing that points back at the cache.
        assert_eq!(
            stdout(&out),
            format!("{original}{}", node_local_block(bind, forward)),
            "{file}"
        );
        assert!(
            stderr(&out).contains("NodeLocal DNSCache"),
            "{}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(listen), "{}", stderr(&out));
        // node-cache imports no coredns-custom
        let custom = run(
            &[
                "render",
                "--corefile",
                f,
                "--policy",
                &example("tailscale.yaml"),
                TS_NAMESERVER,
                "--output",
                "custom",
            ],
            None,
        );
        assert!(custom.status.success(), "{}", stderr(&custom));
        assert_eq!(stdout(&custom), "");
        // With no policy the cache's own Corefile comes back byte for byte.
        let stripped = run(&["render", "--corefile", "-"], Some(&stdout(&out)));
        assert!(stripped.status.success(), "{}", stderr(&stripped));
        assert_eq!(stdout(&stripped), original, "{file}");
        assert_eq!(stderr(&stripped), "");
    }
}

#[test]
fn a_node_local_zone_around_the_suffix_is_refused_by_line() {
    let kubespray = fs::read_to_string(
        repo().join("dns/tests/fixtures/corefiles/nodelocaldns-kubespray-46dbdd39.Corefile"),
    )
    .unwrap();
    // Kubespray's nodelocaldns_external_zones puts its blocks first.
    let path = write_temp(
        "nodelocal-external-zone.Corefile",
        &format!(
            "ts.net:53 {{\n    bind 169.254.25.10\n    forward . 100.100.100.100\n}}\n{kubespray}"
        ),
    );
    let out = run(
        &[
            "render",
            "--corefile",
            path.to_str().unwrap(),
            "--policy",
            &example("tailscale.yaml"),
            TS_NAMESERVER,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("nodelocal-external-zone.Corefile"), "{err}");
    assert!(err.contains("\"ts.net:53\" (line 1)"), "{err}");
    assert!(err.contains("remove that block"), "{err}");
    assert_eq!(stdout(&out), "");
}

fn write_temp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dnspolicy-cli-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn bad_input_exits_2_naming_the_field_file_or_line() {
    let kubeadm = repo().join("dns/tests/fixtures/corefiles/kubeadm-v1.36.3.Corefile");
    let k = kubeadm.to_str().unwrap();
    let policy = |spec: &str| {
        format!(
            "apiVersion: dnspolicy.dev/v1alpha1\nkind: ClusterDNSPolicy\nmetadata: {{name: bad}}\nspec:\n{spec}"
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (
            policy("  foreignSuffixes: [{suffix: \"x }\\nforward . 6.6.6.6\"}]\n"),
            "spec.foreignSuffixes[0].suffix",
        ),
        (
            policy("  foreignSuffixes: [{suffix: \"evil.com #\"}]\n"),
            "spec.foreignSuffixes[0].suffix",
        ),
        (
            policy("  foreignSuffixes: [{suffix: ok.example, forwardTo: [\"8.8.8.8; rm\"]}]\n"),
            "spec.foreignSuffixes[0].forwardTo[0]",
        ),
        (
            policy("  foreignSuffixes: [{suffix: svc.cluster.local}]\n"),
            "spec.foreignSuffixes[0].suffix",
        ),
        (
            policy("  foreignSuffixes: [{suffix: local}]\n"),
            "spec.foreignSuffixes[0].suffix",
        ),
        (
            policy("  foreignSuffixes: [{suffix: a.example}, {suffix: a.example}]\n"),
            "spec.foreignSuffixes[1].suffix",
        ),
        (policy("  foreignSuffixes: []\n"), "spec.foreignSuffixes"),
        ("kind: ConfigMap\n".to_string(), "not ClusterDNSPolicy"),
        ("foreignSuffixes: [\n".to_string(), "line"),
    ];
    for (i, (yaml, needle)) in cases.iter().enumerate() {
        let p = write_temp(&format!("bad{i}.yaml"), yaml);
        let o = run(
            &["render", "--corefile", k, "--policy", p.to_str().unwrap()],
            None,
        );
        assert_eq!(
            o.status.code(),
            Some(2),
            "case {i} ({yaml:?}) exit {:?}: {}",
            o.status,
            stderr(&o)
        );
        assert!(
            stderr(&o).contains(needle),
            "case {i}: {:?} does not name {needle:?}",
            stderr(&o)
        );
        assert!(stdout(&o).is_empty(), "case {i} printed a Corefile");
    }
    // A Corefile that does not parse: exit 2 with its line.
    let broken = write_temp(
        "broken.Corefile",
        ".:53 {\n    errors\n    forward . 8.8.8.8 {\n",
    );
    let o = run(
        &[
            "render",
            "--corefile",
            broken.to_str().unwrap(),
            "--policy",
            &example("tailscale.yaml"),
            TS_NAMESERVER,
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("line"), "{}", stderr(&o));
    // No `.` block: refused, nothing printed.
    let no_dot = write_temp("nodot.Corefile", "example.org:53 {\n    whoami\n}\n");
    let o = run(
        &[
            "render",
            "--corefile",
            no_dot.to_str().unwrap(),
            "--policy",
            &example("tailscale.yaml"),
            TS_NAMESERVER,
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // A missing file and a bad version are input errors too.
    let o = run(&["render", "--corefile", "/nonexistent/Corefile"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/Corefile"));
    let o = run(
        &[
            "render",
            "--corefile",
            k,
            "--policy",
            &example("tailscale.yaml"),
            TS_NAMESERVER,
            "--coredns-version",
            "1.7.0",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

fn refused_fixture(name: &str) -> String {
    repo()
        .join("dns/tests/fixtures/corefiles/refused")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Issue 10: every layout where the lookup would not work exits 2 with its
/// reason, naming the line or field, and prints no Corefile.
#[test]
fn render_refuses_layouts_where_the_lookup_would_break() {
    let kubeadm = repo().join("dns/tests/fixtures/corefiles/kubeadm-v1.36.3.Corefile");
    let k = kubeadm.to_str().unwrap().to_string();
    let policy = |name: &str, spec: &str| {
        write_temp(
            &format!("{name}.yaml"),
            &format!(
                "apiVersion: dnspolicy.dev/v1alpha1\nkind: ClusterDNSPolicy\nmetadata: {{name: {name}}}\nspec:\n{spec}"
            ),
        )
        .to_string_lossy()
        .into_owned()
    };
    let tailnet = policy(
        "tailnet",
        "  foreignSuffixes: [{suffix: tailb45a71.ts.net}]\n",
    );
    let domain = policy(
        "domain",
        "  clusterDomain: corp.internal\n  foreignSuffixes: [{suffix: tailb45a71.ts.net}]\n",
    );
    let stub = policy("stub", "  foreignSuffixes: [{suffix: dev.corp.example}]\n");
    let arpa = policy("arpa", "  foreignSuffixes: [{suffix: in-addr.arpa}]\n");
    let nested = policy(
        "nested",
        "  foreignSuffixes: [{suffix: ts.net}, {suffix: tailb45a71.ts.net}]\n",
    );
    let nested_a = policy("nested-a", "  foreignSuffixes: [{suffix: ts.net}]\n");
    let loopback = policy(
        "loopback",
        "  foreignSuffixes: [{suffix: corp.example, forwardTo: ['169.254.20.10']}]\n",
    );
    let service = policy(
        "service",
        "  foreignSuffixes: [{suffix: corp.example, action: NXDomain, forwardTo: ['10.96.0.10']}]\n",
    );
    let apex = policy(
        "apex",
        "  foreignSuffixes: [{suffix: corp.example, hostLabels: 2}]\n",
    );
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (
            vec![
                refused_fixture("kubernetes-serves-k8s-internal.Corefile"),
                domain,
            ],
            "ClusterDomainNotServed",
            "line 4",
        ),
        (
            vec![refused_fixture("stub-forward-corp-example.Corefile"), stub],
            "ZoneTaken",
            "line 8",
        ),
        (
            vec![k.clone(), arpa],
            "ZoneTaken",
            "kubernetes plugin on line 7",
        ),
        (
            vec![k.clone(), nested],
            "InvalidSpec",
            "spec.foreignSuffixes[1].suffix",
        ),
        (
            vec![k.clone(), nested_a, tailnet.clone()],
            "Conflict",
            "overlaps",
        ),
        (
            vec![k.clone(), loopback],
            "InvalidSpec",
            "spec.foreignSuffixes[0].forwardTo[0]",
        ),
        (
            vec![k.clone(), service, "--cluster-dns-ip=10.96.0.10".into()],
            "ForwardLoops",
            "10.96.0.10",
        ),
        (
            vec![refused_fixture("autopath.Corefile"), tailnet.clone()],
            "AutopathInDotBlock",
            "line 3",
        ),
        (
            vec![refused_fixture("acl.Corefile"), tailnet.clone()],
            "ClientIPPolicyInDotBlock",
            "line 3",
        ),
        (
            vec![refused_fixture("view-client-ip.Corefile"), tailnet.clone()],
            "ClientIPPolicyInDotBlock",
            "line 3",
        ),
        (
            vec![
                refused_fixture("separate-cluster-block-bind-interface.Corefile"),
                tailnet.clone(),
            ],
            "StrippedNameNotRouted",
            "line 15",
        ),
        (
            vec![
                refused_fixture("user-rewrite.Corefile"),
                tailnet.clone(),
                "--coredns-version=1.8.4".into(),
            ],
            "UserRewriteOnOldCoreDNS",
            "line 3",
        ),
        (
            vec![k.clone(), apex],
            "InvalidSpec",
            "spec.foreignSuffixes[0].hostLabels",
        ),
    ];
    for (i, (args, reason, needle)) in cases.iter().enumerate() {
        let mut argv = vec!["render".to_string(), "--corefile".into(), args[0].clone()];
        for a in &args[1..] {
            if a.starts_with("--") {
                argv.push(a.clone());
            } else {
                argv.extend(["--policy".to_string(), a.clone()]);
            }
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let o = run(&argv, None);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "case {i} ({reason}): {err}");
        let shown_reason = if *reason == "InvalidSpec" || *reason == "Conflict" {
            // Spec errors name the field; merge conflicts the policy.
            true
        } else {
            err.contains(reason)
        };
        assert!(shown_reason, "case {i}: {reason} not in {err}");
        assert!(err.contains(needle), "case {i}: {needle} not in {err}");
        assert!(stdout(&o).is_empty(), "case {i} printed a Corefile");
    }
    // The warning for CoreDNS 1.8 without `cache` goes to stderr; the Corefile to stdout.
    let no_cache = write_temp(
        "nocache.Corefile",
        ".:53 {\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa\n    forward . /etc/resolv.conf\n}\n",
    );
    let o = run(
        &[
            "render",
            "--corefile",
            no_cache.to_str().unwrap(),
            "--policy",
            &tailnet,
            "--coredns-version",
            "1.8.4",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning: CoreDNS 1.8.4 without `cache`"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).contains("rewrite stop name regex"));
}

#[test]
fn the_committed_crd_is_what_the_binary_prints() {
    let o = run(&["crd"], None);
    assert!(o.status.success());
    let committed = fs::read_to_string(repo().join("manifests/crd.yaml")).unwrap();
    assert!(
        stdout(&o) == committed,
        "manifests/crd.yaml is stale: run `just crd`"
    );
}

/// release/kustomization.yaml is what `just release-overlay` writes for the
/// digest it pins, and passes the check; the same overlay with a tag fails
/// it, and the tool refuses a tag-only or malformed IMAGE, naming the fix.
#[test]
fn the_committed_release_overlay_pins_the_image_by_digest() {
    let file = repo().join("release/kustomization.yaml");
    let f = file.to_str().unwrap();
    let o = run(&["release-overlay", "--check", f], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let pinned = stdout(&o).trim().to_string();
    assert!(
        pinned.starts_with("ghcr.io/dnspolicy/dnspolicy@sha256:"),
        "{pinned}"
    );
    let o = run(&["release-overlay", &pinned], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let committed = fs::read_to_string(&file).unwrap();
    assert!(
        stdout(&o) == committed,
        "release/kustomization.yaml is not what `just release-overlay {pinned}` writes"
    );

    let digest = pinned.split_once('@').unwrap().1;
    let tagged = committed.replace(&format!("digest: {digest}"), "newTag: 0.1.0");
    assert_ne!(tagged, committed);
    let t = write_temp("release-tagged.yaml", &tagged);
    let o = run(&["release-overlay", "--check", t.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("newTag \"0.1.0\"") && stderr(&o).contains("just release-overlay"),
        "{}",
        stderr(&o)
    );

    for (image, says) in [
        ("ghcr.io/dnspolicy/dnspolicy:0.1.0", "is a tag only"),
        ("ghcr.io/dnspolicy/dnspolicy", "has no digest"),
        ("ghcr.io/dnspolicy/dnspolicy@sha256:abc", "is not sha256:"),
    ] {
        let o = run(&["release-overlay", image], None);
        assert_eq!(o.status.code(), Some(2), "{image}");
        assert!(stdout(&o).is_empty(), "{image}");
        let e = stderr(&o);
        assert!(
            e.contains(&format!("IMAGE {image:?}"))
                && e.contains(says)
                && e.contains("IMAGE@sha256:"),
            "{image}: {e}"
        );
    }
}

#[test]
fn a_forward_ref_needs_its_address_offline_and_renders_it() {
    let k = repo().join("dns/tests/fixtures/corefiles/kubeadm-v1.36.3.Corefile");
    let k = k.to_str().unwrap();
    let tailscale = example("tailscale.yaml");
    let without = run(&["render", "--corefile", k, "--policy", &tailscale], None);
    assert_eq!(without.status.code(), Some(2), "{}", stderr(&without));
    assert!(
        stderr(&without).contains("--forward-ref-address tailb45a71.ts.net=IP"),
        "{}",
        stderr(&without)
    );
    let with = run(
        &[
            "render",
            "--corefile",
            k,
            "--policy",
            &tailscale,
            TS_NAMESERVER,
        ],
        None,
    );
    assert!(with.status.success(), "{}", stderr(&with));
    assert!(
        stdout(&with).contains("forward . 10.96.0.77:53"),
        "{}",
        stdout(&with)
    );
}

/// The Corefile copied out of a cluster where dnspolicy runs is explained as
/// given: its blocks work, so the lookup works. `--before-after` shows the
/// Corefile without them first.
#[test]
fn explain_takes_the_corefile_as_given_and_shows_before_after_when_asked() {
    let kubeadm = repo().join("dns/tests/fixtures/corefiles/kubeadm-v1.36.3.Corefile");
    let tailscale = example("tailscale.yaml");
    let rendered = run(
        &[
            "render",
            "--corefile",
            kubeadm.to_str().unwrap(),
            "--policy",
            &tailscale,
            TS_NAMESERVER,
        ],
        None,
    );
    assert!(rendered.status.success(), "{}", stderr(&rendered));
    let dir = std::env::temp_dir().join(format!("dnspolicy-explain-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let running = dir.join("running.Corefile");
    fs::write(&running, stdout(&rendered)).unwrap();

    let query = [
        "explain",
        "frigate.video-management-system.svc.cluster.local",
        "--search",
        "workflow-engine.svc.cluster.local svc.cluster.local cluster.local tailb45a71.ts.net",
        "--resolver",
        "musl",
        "--corefile",
    ];
    let explain = |corefile: &Path, extra: &[&str]| {
        let mut args = query.to_vec();
        args.push(corefile.to_str().unwrap());
        args.extend(extra);
        let out = run(&args, None);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let as_given = explain(&running, &[]);
    let with_policy = explain(&kubeadm, &["--policy", &tailscale, TS_NAMESERVER]);
    let stock = explain(&kubeadm, &[]);
    assert_eq!(
        as_given, with_policy,
        "the running Corefile explains as the policy rendered it"
    );
    assert_ne!(
        as_given, stock,
        "the stock Corefile leaks the suffixed name"
    );
    assert!(stock.contains("FAILED"), "{stock}");
    assert!(!as_given.contains("FAILED"), "{as_given}");

    let both = explain(&running, &["--before-after"]);
    let (before, after) = both.split_once("=== after: ").expect("an after section");
    assert!(
        before.starts_with(&format!(
            "=== before: {} without dnspolicy's managed text\n",
            running.display()
        )),
        "{both}"
    );
    assert!(before.ends_with(&format!("{stock}\n")), "{both}");
    assert_eq!(
        after,
        format!("{} as given\n{as_given}", running.display()),
        "{both}"
    );

    let alone = run(&[&query[..6], &["--before-after"][..]].concat(), None);
    assert_eq!(alone.status.code(), Some(2));
    assert!(stderr(&alone).contains("--before-after needs --corefile"));
    fs::remove_dir_all(&dir).unwrap();
}

/// `--from-cluster` reads the Corefile and policies itself: files are refused;
/// with no cluster to reach it fails (exit 1) naming what it could not do.
#[test]
fn explain_from_cluster_takes_no_files_and_names_an_unreachable_cluster() {
    let kubeadm = repo().join("dns/tests/fixtures/corefiles/kubeadm-v1.36.3.Corefile");
    let base = [
        "explain",
        "frigate",
        "--search",
        "cluster.local",
        "--from-cluster",
    ];
    let both = run(
        &[&base[..], &["--corefile", kubeadm.to_str().unwrap()]].concat(),
        None,
    );
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));
    assert!(stderr(&both).contains("--corefile"), "{}", stderr(&both));

    let dir = std::env::temp_dir().join(format!("dnspolicy-kubeconfig-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("config");
    // 127.0.0.1:9 (discard): nothing answers there.
    fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:9\"}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n",
    )
    .unwrap();
    let out = bin()
        .args(base)
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot read the ClusterDNSPolicies"),
        "{}",
        stderr(&out)
    );
    fs::remove_dir_all(&dir).unwrap();
}
