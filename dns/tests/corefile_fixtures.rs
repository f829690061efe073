//! Every default Corefile in tests/fixtures/corefiles (see its README for where
//! each comes from) parses, has a `.` block dnspolicy can find, and obeys the
//! editing laws with the Tailscale stanzas.

use std::path::PathBuf;

use dnspolicy_dns::corefile::{
    Channel, DOT_BEGIN, DOT_END, ManagedText, SERVER_BEGIN, SERVER_END, channel, custom_keys,
    dot_server, parse, render, strip,
};

struct Fixture {
    file: &'static str,
    port: u16,
    bind: &'static [&'static str],
    /// `Some((override glob, server glob))` where the distribution imports coredns-custom.
    custom: Option<(&'static str, &'static str)>,
    blocks: usize,
}

const FIXTURES: &[Fixture] = &[
    Fixture {
        file: "kubeadm-v1.36.3.Corefile",
        port: 53,
        bind: &[],
        custom: None,
        blocks: 1,
    },
    Fixture {
        file: "kubeadm-v1.19.16.Corefile",
        port: 53,
        bind: &[],
        custom: None,
        blocks: 1,
    },
    Fixture {
        file: "kubeadm-v1.14.10.Corefile",
        port: 53,
        bind: &[],
        custom: None,
        blocks: 1,
    },
    Fixture {
        file: "eks-addon.Corefile",
        port: 53,
        bind: &[],
        custom: None,
        blocks: 1,
    },
    Fixture {
        file: "k3s-66c487bd.Corefile",
        port: 53,
        bind: &[],
        custom: Some((
            "/etc/coredns/custom/*.override",
            "/etc/coredns/custom/*.server",
        )),
        blocks: 1,
    },
    Fixture {
        file: "aks-2023.Corefile",
        port: 53,
        bind: &[],
        custom: Some(("custom/*.override", "custom/*.server")),
        blocks: 1,
    },
    Fixture {
        file: "aks-2025-nxdomain-templates.Corefile",
        port: 53,
        bind: &[],
        custom: Some(("custom/*.override", "custom/*.server")),
        blocks: 1,
    },
    Fixture {
        file: "openshift-cluster-dns-operator-061cf58f.Corefile",
        port: 5353,
        bind: &[],
        custom: None,
        blocks: 2,
    },
    Fixture {
        file: "rke2-coredns-chart-1.19.400.Corefile",
        port: 53,
        bind: &[],
        custom: None,
        blocks: 1,
    },
    Fixture {
        file: "nodelocaldns-kubernetes-v1.36.3.Corefile",
        port: 53,
        bind: &["__PILLAR__LOCAL__DNS__", "__PILLAR__DNS__SERVER__"],
        custom: None,
        blocks: 4,
    },
    Fixture {
        file: "nodelocaldns-kubespray-46dbdd39.Corefile",
        port: 53,
        bind: &["169.254.25.10"],
        custom: None,
        blocks: 4,
    },
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corefiles")
}

fn read(file: &str) -> String {
    std::fs::read_to_string(dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn tailnet() -> ManagedText {
    ManagedText {
        dot_block: "rewrite stop {\n    name regex ^(.+)[.]tailb45a71[.]ts[.]net[.]$ {1}.\n    answer auto\n}\n".into(),
        server_blocks: "tailb45a71.ts.net:53 {\n    forward . 100.100.100.100\n}\n".into(),
    }
}

#[test]
fn every_fixture_file_is_in_the_table() {
    let mut files: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".Corefile"))
        .collect();
    files.sort();
    let mut listed: Vec<String> = FIXTURES.iter().map(|f| f.file.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed);
}

#[test]
fn fixtures_parse_and_name_their_dot_block() {
    for fixture in FIXTURES {
        let text = read(fixture.file);
        let corefile = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", fixture.file));
        assert_eq!(corefile.blocks.len(), fixture.blocks, "{}", fixture.file);
        let dot = dot_server(&corefile).unwrap_or_else(|e| panic!("{}: {e}", fixture.file));
        assert_eq!(dot.port, fixture.port, "{}", fixture.file);
        assert_eq!(dot.bind, fixture.bind, "{}", fixture.file);
        let expected = match fixture.custom {
            Some((override_glob, server_glob)) => Channel::Custom {
                override_glob: override_glob.into(),
                server_glob: Some(server_glob.into()),
            },
            None => Channel::Main,
        };
        assert_eq!(channel(&corefile).unwrap(), expected, "{}", fixture.file);
    }
}

#[test]
fn fixtures_obey_the_editing_laws() {
    for fixture in FIXTURES {
        let original = read(fixture.file);
        assert_eq!(
            strip(&original).unwrap(),
            original,
            "{}: a fixture has no managed region",
            fixture.file
        );

        let rendered =
            render(&original, &tailnet()).unwrap_or_else(|e| panic!("{}: {e}", fixture.file));
        for marker in [DOT_BEGIN, DOT_END, SERVER_BEGIN, SERVER_END] {
            assert_eq!(
                rendered.matches(marker).count(),
                1,
                "{}: {marker}",
                fixture.file
            );
        }
        assert_eq!(
            render(&rendered, &tailnet()).unwrap(),
            rendered,
            "{}: render is idempotent",
            fixture.file
        );
        assert_eq!(
            strip(&rendered).unwrap(),
            original,
            "{}: strip restores the original",
            fixture.file
        );
        assert_eq!(
            render(&rendered, &ManagedText::default()).unwrap(),
            original,
            "{}",
            fixture.file
        );

        let after = parse(&rendered).unwrap_or_else(|e| panic!("{}: {e}", fixture.file));
        let before = parse(&original).unwrap();
        assert_eq!(
            after.blocks.len(),
            before.blocks.len() + 1,
            "{}",
            fixture.file
        );
        let dot = dot_server(&after).unwrap();
        let directives = &after.blocks[dot.index].directives;
        assert_eq!(
            directives.len(),
            before.blocks[dot.index].directives.len() + 1,
            "{}",
            fixture.file
        );
        let rewrite = directives.last().unwrap();
        assert_eq!(
            (rewrite.name.as_str(), rewrite.args.as_slice()),
            ("rewrite", ["stop".to_string()].as_slice())
        );
        assert_eq!(
            rewrite.block[0].args,
            ["regex", "^(.+)[.]tailb45a71[.]ts[.]net[.]$", "{1}."]
        );
        let added = after.blocks.last().unwrap();
        assert_eq!(added.keys[0].zone, "tailb45a71.ts.net.");
        assert_eq!(added.directives[0].args, [".", "100.100.100.100"]);
    }
}

#[test]
fn the_dot_region_is_indented_like_the_blocks_directives() {
    let rendered = render(&read("kubeadm-v1.36.3.Corefile"), &tailnet()).unwrap();
    assert!(rendered.contains(&format!(
        "    loadbalance\n    {DOT_BEGIN}\n    rewrite stop {{\n        name regex ^(.+)[.]tailb45a71[.]ts[.]net[.]$ {{1}}.\n        answer auto\n    }}\n    {DOT_END}\n}}\n{SERVER_BEGIN}\n"
    )));
    // NodeLocal DNSCache indents its closing braces; the region follows the directives
    let rendered = render(
        &read("nodelocaldns-kubernetes-v1.36.3.Corefile"),
        &tailnet(),
    )
    .unwrap();
    assert!(
        rendered.contains(&format!(
            "    prometheus :9253\n    {DOT_BEGIN}\n    rewrite stop {{\n"
        )),
        "{rendered}"
    );
    assert!(
        rendered.contains(&format!("    {DOT_END}\n    }}\n{SERVER_BEGIN}\n")),
        "{rendered}"
    );
}

#[test]
fn k3s_and_aks_get_coredns_custom_keys_instead() {
    for file in [
        "k3s-66c487bd.Corefile",
        "aks-2023.Corefile",
        "aks-2025-nxdomain-templates.Corefile",
    ] {
        let corefile = parse(&read(file)).unwrap();
        let keys = custom_keys(&tailnet(), &channel(&corefile).unwrap()).unwrap();
        let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["dnspolicy.override", "dnspolicy.server"], "{file}");
        assert!(
            keys[0].1.starts_with("# managed by dnspolicy")
                && keys[0].1.ends_with(&tailnet().dot_block)
        );
        assert!(keys[1].1.ends_with(&tailnet().server_blocks));
    }
}

#[test]
fn the_aks_nxdomain_regex_is_read_whole() {
    let corefile = parse(&read("aks-2025-nxdomain-templates.Corefile")).unwrap();
    let template = corefile.blocks[0]
        .directives
        .iter()
        .find(|d| d.name == "template")
        .unwrap();
    assert_eq!(template.args, ["ANY", "ANY", "internal.cloudapp.net"]);
    assert_eq!(
        template.block[0].args,
        [r"^(?:[^.]+\.){4,}internal\.cloudapp\.net\.$"]
    );
}
