//! The scenarios' cluster states and what each must show: the seed before
//! and after a policy, the answering upstream with three suffixes, the old
//! CoreDNS refusing what it cannot do.

use super::*;

/// Scenario 1, before any policy: the seed's lookup on the stock Corefile.
pub async fn seed_before(p: &Probe<'_>, f: &mut Figures, w: &Workloads) -> Result<()> {
    let bh = p.c.blackhole();
    let mark = bh.mark();
    let g = p
        .lookup(f, Resolver::Glibc, FRIGATE, SEED_SEARCH, 5)
        .await?;
    ensure!(
        g.ok && g.addrs == vec![w.frigate],
        "glibc must resolve {FRIGATE}, late: {g:?}"
    );
    // CoreDNS answers the suffixed A and AAAA queries SERVFAIL after
    // forward's 2 s each time glibc asks: 6.0 s measured on 1.14.2 and 1.8.4.
    ensure!(
        g.elapsed >= Duration::from_secs(5),
        "glibc resolved {FRIGATE} in {:?}: the black hole was not in the way",
        g.elapsed
    );
    let m = p.lookup(f, Resolver::Musl, FRIGATE, SEED_SEARCH, 5).await?;
    ensure!(
        !m.ok && m.output.contains("EAI"),
        "musl must fail on the SERVFAIL of the suffixed query: {m:?}"
    );
    let sent = bh.names_ending_with(mark, TAILNET);
    println!("black hole got {sent:?}");
    ensure!(
        sent.contains(&format!("{FRIGATE}.{TAILNET}.")),
        "the black hole did not see the suffixed query: {sent:?}"
    );
    Ok(())
}

/// Scenario 1 and 2 with forwardTo, on the black-holed upstream: the seed's
/// lookups fast on glibc and musl, every in-cluster artifact answered by
/// CoreDNS, real hosts through MagicDNS, nothing suffixed to the black hole.
pub async fn seed_after(
    p: &Probe<'_>,
    f: &mut Figures,
    w: &Workloads,
    up: &Upstreams,
    action: Action,
) -> Result<()> {
    let bh = p.c.blackhole();
    let mark = bh.mark();
    let magic = up.magicdns.log.mark();
    for r in [Resolver::Glibc, Resolver::Musl] {
        p.fast(f, r, SEED_SEARCH, (FRIGATE, 5, w.frigate)).await?;
        // A missing Service fails fast and cleanly on both.
        let l = p.lookup(f, r, MISSING, SEED_SEARCH, 5).await?;
        ensure!(
            !l.ok && l.elapsed < FAST,
            "{r:?} {MISSING}: want a fast failure, got {l:?}"
        );
    }
    p.in_cluster(w, TAILNET, action).await?;
    let tailnet_a: IpAddr = MYHOST_TAILNET.parse()?;
    for (qtype, want) in [(A, tailnet_a), (AAAA, "fd7a:115c:a1e0::7".parse()?)] {
        let r = p.ask(MYHOST, qtype).await?;
        ensure!(
            r.rcode == dns::RCODE_NOERROR && r.addrs == vec![want],
            "{}: {MYHOST} through forwardTo: {r:?}",
            p.state
        );
    }
    let sent = bh.names_ending_with(mark, TAILNET);
    ensure!(sent.is_empty(), "{}: the black hole got {sent:?}", p.state);
    // The operator's reachability probe asks for the suffix itself (SOA).
    let probe = format!("{TAILNET}.");
    let mut asked = up.magicdns.log.names_ending_with(magic, TAILNET);
    asked.retain(|name| *name != probe);
    ensure!(
        asked == vec![format!("{MYHOST}.")],
        "{}: MagicDNS should see only the real host, got {asked:?}",
        p.state
    );
    println!("black hole got nothing for {TAILNET}; MagicDNS got {asked:?}");

    // The real host looked up as a pod does (2 dots < ndots 5): its artifact
    // `myhost.S.S` must resolve as `myhost.S` does, through forwardTo.
    let mark = bh.mark();
    let mut failures = Vec::new();
    for qtype in [A, AAAA] {
        if let Err(e) = p.artifact(MYHOST, TAILNET, action, qtype).await {
            failures.push(format!("{e:#}"));
        }
    }
    for r in [Resolver::Glibc, Resolver::Musl] {
        if let Err(e) = p.fast(f, r, SEED_SEARCH, (MYHOST, 5, tailnet_a)).await {
            failures.push(format!("{e:#}"));
        }
    }
    let sent = bh.names_ending_with(mark, TAILNET);
    if !sent.is_empty() {
        failures.push(format!(
            "{}: the black hole got {sent:?} for {MYHOST}",
            p.state
        ));
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// What the answering upstream's clients see for names outside the
/// suffixes' artifacts, recorded before any policy (docs/design.md §3 cases 3 and 5).
pub const UNCHANGED: &[&str] = &[
    KUBERNETES,
    FRIGATE,
    MISSING,
    "api.github.com",
    "example.org",
    "nosuch.example.org",
    MYHOST,
    OPENSTACK_HOST,
    AWS_HOST,
];

pub async fn baseline(p: &Probe<'_>) -> Result<BTreeMap<(String, u16), Answer>> {
    let up = p.c.upstream();
    let mut out = BTreeMap::new();
    for name in UNCHANGED {
        for qtype in [A, AAAA] {
            out.insert(
                (name.to_string(), qtype),
                p.ask(name, qtype).await?.answer(),
            );
        }
    }
    // Without a policy the artifacts leave CoreDNS: what the checks below rule out.
    for suffix in [TAILNET, OPENSTACK, AWS] {
        let mark = up.mark();
        p.ask(&format!("api.github.com.{suffix}"), A).await?;
        p.ask(&format!("{FRIGATE}.{suffix}"), A).await?;
        let sent = leaked(&up, mark, suffix, &[]);
        ensure!(
            sent.len() == 2,
            "without a policy the upstream should get both artifacts of {suffix}: {sent:?}"
        );
    }
    Ok(out)
}

/// Scenarios 2 and 3 on the answering upstream, three suffixes, no forwardTo.
pub async fn three_suffixes(
    p: &Probe<'_>,
    f: &mut Figures,
    w: &Workloads,
    before: &BTreeMap<(String, u16), Answer>,
    actions: [(&str, Action); 3],
) -> Result<()> {
    let up = p.c.upstream();
    let mark = up.mark();
    for (suffix, action) in actions {
        p.in_cluster(w, suffix, action).await?;
        for qtype in [A, AAAA] {
            p.artifact("api.github.com", suffix, action, qtype).await?;
            p.artifact("nosuch.example.org", suffix, action, qtype)
                .await?;
        }
    }
    // Real hosts in the suffixes and names without them: as before the policy.
    for ((name, qtype), was) in before {
        let now = p.ask(name, *qtype).await?.answer();
        ensure!(
            now == *was,
            "{}: {} {name} changed: before {was:?}, now {now:?}",
            p.state,
            dns::qtype_name(*qtype)
        );
    }
    let upstream_myhost: IpAddr = MYHOST_UPSTREAM.parse()?;
    let mut names = frigate_lookups(w).to_vec();
    names.extend([
        ("api.github.com", 5, "140.82.112.6".parse()?),
        ("github.com", 2, "140.82.112.3".parse()?),
        // Without forwardTo the real host still goes to the upstream, as before.
        ("myhost", 2, upstream_myhost),
        (MYHOST, 5, upstream_myhost),
    ]);
    p.all_fast(f, CLOUD_SEARCH, &names).await?;
    for suffix in [TAILNET, OPENSTACK, AWS] {
        let sent = leaked(&up, mark, suffix, &[MYHOST, OPENSTACK_HOST, AWS_HOST]);
        ensure!(
            sent.is_empty(),
            "{}: search artifacts of {suffix} reached the upstream: {sent:?}",
            p.state
        );
    }
    let hosts: Vec<String> = [MYHOST, OPENSTACK_HOST, AWS_HOST]
        .iter()
        .filter(|h| !up.names_ending_with(mark, h).contains(&format!("{h}.")))
        .map(|h| h.to_string())
        .collect();
    ensure!(
        hosts.is_empty(),
        "{}: real hosts {hosts:?} no longer reach the upstream",
        p.state
    );
    Ok(())
}

/// Scenarios 2 and 3 for `version`, after the seed's states: the answering
/// upstream, the tailnet policy without forwardTo beside the cloud policy,
/// both actions for every suffix.
pub async fn outside_names(
    c: &Cluster,
    op: &Operator,
    f: &mut Figures,
    w: &Workloads,
    corefile: &str,
    tag: &str,
) -> Result<()> {
    clear_policies(c)?;
    answering_upstream(c, corefile).await?;
    let p = Probe::new(c, &format!("{tag} upstream, no policy")).await?;
    let before = baseline(&p).await?;

    // Every suffix's action flips between the two states.
    for [tailnet, openstack, aws] in [
        [Action::Rewrite, Action::NXDomain, Action::Rewrite],
        [Action::NXDomain, Action::Rewrite, Action::NXDomain],
    ] {
        tailnet_and_cloud(c, op, tailnet, false, (openstack, aws)).await?;
        let p = Probe::new(c, &format!("{tag} {tailnet:?}/{openstack:?}/{aws:?}")).await?;
        let actions = [(TAILNET, tailnet), (OPENSTACK, openstack), (AWS, aws)];
        three_suffixes(&p, f, w, &before, actions).await?;
    }
    Ok(())
}

/// The tailnet policy (`tailnet`, with forwardTo or not), then the cloud
/// policy (OpenStack's action, AWS's), each Ready with CoreDNS rolled.
pub async fn tailnet_and_cloud(
    c: &Cluster,
    op: &Operator,
    tailnet: Action,
    forward_to: bool,
    (openstack, aws): (Action, Action),
) -> Result<()> {
    let t = apply_ready(c, op, &tailnet_policy(tailnet, forward_to)?, &["tailnet"]).await?;
    let cloud = cloud_policy(openstack, aws);
    let t2 = apply_ready(c, op, &cloud, &["cloud", "tailnet"]).await?;
    println!(
        "tailnet {tailnet:?}{} + cloud {openstack:?}/{aws:?} applied and rolled in {t:?} + {t2:?}",
        if forward_to { " + forwardTo" } else { "" }
    );
    Ok(())
}

/// Scenario 4: forwardTo with Rewrite needs `view` (CoreDNS 1.10), so on the
/// old CoreDNS the Tailscale example is refused with a condition that says
/// what to do, and nothing is written: not the Corefile, not `coredns-custom`,
/// no rollout.
pub async fn refused_before_view(c: &Cluster, op: &Operator, stock: &str) -> Result<()> {
    let hash = template_hash(c)?;
    let custom = custom_keys(c)?;
    apply(c, &tailnet_policy(Action::Rewrite, true)?)?;
    let (reason, message) = wait_for("tailnet Stalled on the old CoreDNS", WAIT, || {
        let p = policy(c, "tailnet")?;
        Ok(condition(&p, "Stalled")
            .filter(|s| s.0 == "True")
            .map(|s| (s.1, s.2)))
    })
    .await
    .with_context(|| op.log_text())?;
    println!("Stalled {reason}: {message}");
    // The brief named UnsupportedCoreDNS; the planner now keeps the
    // renderer's more specific NeedsNewerCoreDNS (42958d2).
    ensure!(
        ["UnsupportedCoreDNS", "NeedsNewerCoreDNS"].contains(&reason.as_str()),
        "Stalled reason {reason}: {message}"
    );
    ensure!(
        message.contains("1.10") && message.contains("NXDomain"),
        "the message does not say what to do: {message}"
    );
    let p = policy(c, "tailnet")?;
    ensure!(
        !is_ready(&p),
        "a refused policy reports Ready: {}",
        p["status"]
    );
    // Give a wrong write the time it would need before looking.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = corefile(c)?;
    ensure!(now == stock, "the refused policy was written:\n{now}");
    ensure!(
        custom_keys(c)? == custom,
        "the refused policy was written into coredns-custom"
    );
    ensure!(
        template_hash(c)? == hash,
        "CoreDNS was rolled for a refused policy"
    );
    Ok(())
}
