//! The `autopath` plugin (plugin/autopath and the kubernetes plugin's
//! AutoPath, the same at 1.8.4 and 1.14.2): for a name in its zones that ends
//! in the first domain of the search path, CoreDNS strips that domain and
//! tries the base name with each search domain and finally alone, running
//! the plugins after `autopath` in the same block (other server blocks never
//! see these names). The first reply that is neither NXDOMAIN nor a failure
//! (SERVFAIL, REFUSED) is the answer, with a CNAME from the name asked and
//! the question as asked; if none, the first reply goes back as it was.
//!
//! The search path: `autopath @kubernetes` asks the kubernetes plugin, which
//! knows the pod only with `pods verified`: `<ns>.svc.<zone>`, `svc.<zone>`,
//! `<zone>`, then CoreDNS's own resolv.conf search list. `autopath FILE`
//! reads FILE's search list. The model takes CoreDNS's resolv.conf to carry
//! the node's search list, which kubelet also gives the pod after the
//! cluster's three domains, and FILE to carry the pod's whole search list.

use dnspolicy_dns::corefile::Directive;

use super::plugins::Run;
use super::{Outcome, Reply, absolute_lower, in_zone, zones_of};

impl<'c> Run<'_, 'c> {
    pub(super) fn autopath(&mut self, d: &Directive, after: &[&'c str]) -> Option<Reply> {
        let (resolv, zones) = d.args.split_last()?;
        let zones = if zones.is_empty() {
            self.block_zones()
        } else {
            zones_of(zones)
        };
        if !zones.iter().any(|z| in_zone(&self.name, z)) {
            return None;
        }
        let search = self.search_path(resolv)?;
        let first = search.first()?;
        if !in_zone(&self.name, first) {
            return None;
        }
        let Some(base) = self
            .name
            .strip_suffix(first.as_str())
            .and_then(|b| b.strip_suffix('.'))
            .filter(|b| !b.is_empty())
            .map(str::to_string)
        else {
            self.steps.push(format!(
                "autopath: {} is the first search domain itself: SERVFAIL",
                self.name
            ));
            return Some(Outcome::ServFail.into());
        };
        let asked = self.name.clone();
        self.steps.push(format!(
            "autopath: {asked} ends in {first}; CoreDNS tries {base} with each search domain"
        ));
        let mut first_reply: Option<(Reply, String)> = None;
        for domain in search.iter().map(String::as_str).chain([""]) {
            let candidate = if domain.is_empty() {
                format!("{base}.")
            } else {
                format!("{base}.{domain}")
            };
            let (reply, outcome, plugin) = self.try_candidate(&candidate, after);
            if first_reply.is_none() {
                first_reply = Some((reply.clone(), plugin.clone()));
            }
            match outcome {
                Outcome::NxDomain | Outcome::ServFail | Outcome::Refused => continue,
                // A silent upstream holds CoreDNS past the resolver's own
                // timeout (forward gives up after 5 s): the client gives up.
                Outcome::Timeout => {
                    self.steps.push(format!(
                        "autopath: waits on {candidate}; the resolver gives up first"
                    ));
                    self.plugin = format!("autopath > {plugin}");
                    return Some(Outcome::Timeout.into());
                }
                Outcome::Answer | Outcome::NoData => {
                    self.steps.push(format!(
                        "autopath: answers {asked} with {} for {candidate}{}",
                        outcome.word(),
                        if candidate == asked {
                            String::new()
                        } else {
                            format!(" (a CNAME from {asked})")
                        }
                    ));
                    self.plugin = format!("autopath > {plugin}");
                    self.name = candidate;
                    return Some(reply);
                }
            }
        }
        let (reply, plugin) = first_reply?;
        self.steps.push(format!(
            "autopath: every search domain failed; the reply for {asked} goes back as it was"
        ));
        self.plugin = format!("autopath > {plugin}");
        Some(reply)
    }

    /// The search path CoreDNS uses for this client, or `None` when it has
    /// none (autopath then passes the query on).
    fn search_path(&mut self, resolv: &str) -> Option<Vec<String>> {
        let node_search: Vec<String> = self
            .ctx
            .client
            .search
            .iter()
            .skip(3)
            .map(|s| absolute_lower(s))
            .collect();
        let Some(plugin) = resolv.strip_prefix('@') else {
            let search: Vec<String> = self
                .ctx
                .client
                .search
                .iter()
                .map(|s| absolute_lower(s))
                .collect();
            self.steps.push(format!(
                "autopath: search path from {resolv}, taken to be the pod's: {}",
                search.join(" ")
            ));
            return Some(search);
        };
        let Some(k8s) = self
            .block
            .directives
            .iter()
            .find(|d| d.name == plugin && d.name == "kubernetes")
        else {
            self.steps.push(format!(
                "autopath: @{plugin} is not a kubernetes plugin in this block; CoreDNS would not start"
            ));
            return None;
        };
        let verified = k8s
            .block
            .iter()
            .any(|l| l.name == "pods" && l.args.first().is_some_and(|a| a == "verified"));
        if !verified {
            self.steps.push(
                "autopath: kubernetes knows pods by address only with `pods verified`; passes the query on".into(),
            );
            return None;
        }
        let zones = self.zones_or_block(&k8s.args);
        let zone = zones.iter().find(|z| in_zone(&self.name, z))?.clone();
        let namespace = self.ctx.client.search.first().and_then(|s| {
            absolute_lower(s)
                .strip_suffix(&format!(".svc.{zone}"))
                .filter(|ns| !ns.contains('.'))
                .map(str::to_string)
        });
        let Some(namespace) = namespace else {
            self.steps.push(format!(
                "autopath: the client is not a pod of zone {zone}; passes the query on"
            ));
            return None;
        };
        let cluster = if zone == "." {
            vec![format!("{namespace}.svc."), "svc.".into(), ".".into()]
        } else {
            vec![
                format!("{namespace}.svc.{zone}"),
                format!("svc.{zone}"),
                zone.clone(),
            ]
        };
        Some(cluster.into_iter().chain(node_search).collect())
    }

    /// One name of the walk through the plugins after autopath: the reply,
    /// its outcome (an upstream's as the context's upstream model says) and
    /// the plugin that gave it.
    fn try_candidate(&mut self, candidate: &str, after: &[&'c str]) -> (Reply, Outcome, String) {
        let mut sub = Run {
            ctx: self.ctx,
            corefile: self.corefile,
            port: self.port,
            hop: self.hop.clone(),
            block: self.block,
            qtype: self.qtype,
            name: candidate.to_string(),
            steps: Vec::new(),
            plugin: String::new(),
            rewritten: false,
            stopped: false,
            restores_question: false,
            maps_answers: false,
            self_forwarded: false,
            answered_by: None,
        };
        let reply = sub.run_plugins(after);
        self.steps
            .extend(sub.steps.iter().map(|s| format!("  {s}")));
        let outcome = match &reply {
            Reply::Local(o) => *o,
            Reply::Upstream { name, .. } => {
                let o = (self.ctx.upstream)(name, self.qtype);
                self.steps
                    .push(format!("  the upstream answers {name} {}", o.word()));
                o
            }
        };
        (reply, outcome, sub.plugin)
    }
}
