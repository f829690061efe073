//! The text one suffix becomes: its comment, the lines for the `.` block
//! (before `view`), and the server blocks for the suffix (from 1.10.0).

use std::fmt::Write as _;

use dnspolicy_crd::SuffixAction;

use super::regex::literal;
use super::{RenderContext, self_address};
use crate::corefile::token;
use crate::policy::SuffixRule;

/// The text for one suffix. Labels are `[^.]+`, dots `[.]`; names are
/// matched as CoreDNS sees them: lower-case, absolute.
pub(super) struct Stanza<'a> {
    pub(super) rule: &'a SuffixRule,
    pub(super) ctx: &'a RenderContext,
    /// `tailb45a71[.]ts[.]net`
    pub(super) suffix_re: String,
    /// Names ending `.<cluster domain>.<suffix>.` that `hostLabels` alone would
    /// count as real hosts: `Some(cluster[.]local)` when the cluster domain has
    /// fewer labels than `hostLabels`.
    pub(super) cluster_re: Option<String>,
    /// Where a `rewrite` block forwards the stripped name: CoreDNS itself.
    /// `None`: no `view` in this release, or no known address to reach
    /// itself, so artifacts are handled in the `.` block.
    gated: Option<Gate>,
}

#[derive(Clone)]
enum Gate {
    /// NXDomain: the block answers artifacts itself.
    Answer,
    /// Rewrite: the block strips the suffix and asks CoreDNS again.
    /// `ip:port` or `{$ENV}:port`.
    Forward(String),
}

impl<'a> Stanza<'a> {
    pub(super) fn new(rule: &'a SuffixRule, cluster_domain: &str, ctx: &'a RenderContext) -> Self {
        let h = usize::from(rule.host_labels);
        let cluster_re = (cluster_domain.split('.').count() < h).then(|| literal(cluster_domain));
        let gated = match rule.action {
            _ if !ctx.version.has_view() => None,
            SuffixAction::NXDomain => Some(Gate::Answer),
            SuffixAction::Rewrite => self_address(ctx).map(Gate::Forward),
        };
        Stanza {
            rule,
            ctx,
            suffix_re: literal(&rule.suffix),
            cluster_re,
            gated,
        }
    }

    /// Comment naming the rule, so an admin reading the Corefile sees why.
    fn comment(&self) -> String {
        let r = self.rule;
        let action = match r.action {
            SuffixAction::Rewrite => "Rewrite",
            SuffixAction::NXDomain => "NXDomain",
        };
        // No `name:` shape: the editor takes `# dnspolicy:` for a marker, and
        // `dnspolicy` is a valid suffix.
        let mut c = format!("# {} ({action}, hostLabels {}", r.suffix, r.host_labels);
        if !r.forward_to.is_empty() {
            let targets: Vec<String> = r.forward_to.iter().map(ToString::to_string).collect();
            write!(c, ", forwardTo {}", targets.join(" ")).unwrap();
        }
        c.push_str(")\n");
        c
    }

    fn rewrite_rules(&self, indent: &str) -> String {
        let mut out = String::new();
        for regex in self
            .cluster_capture()
            .into_iter()
            .chain([self.artifact_capture()])
        {
            writeln!(
                out,
                "{indent}rewrite stop name regex {regex} {{1}}. answer auto"
            )
            .unwrap();
        }
        out
    }

    /// Lines for the `.` block: only where no block for the suffix takes the
    /// artifacts, and never for NXDomain with forwardTo, whose block does.
    pub(super) fn dot_block(&self) -> String {
        if self.gated.is_some() {
            return String::new();
        }
        match self.rule.action {
            SuffixAction::Rewrite => self.comment() + &self.rewrite_rules(""),
            SuffixAction::NXDomain if self.rule.forward_to.is_empty() => {
                self.comment() + &self.nxdomain_template("", true)
            }
            SuffixAction::NXDomain => String::new(),
        }
    }

    /// `matching`: with the artifact regexes and `fallthrough`, for a block or
    /// zone that also sees real hosts; without, for a block that sees only
    /// artifacts.
    fn nxdomain_template(&self, indent: &str, matching: bool) -> String {
        let mut out = format!("{indent}template ANY ANY {} {{\n", self.rule.suffix);
        if matching {
            let matches: Vec<String> = self
                .cluster()
                .into_iter()
                .chain([self.artifact()])
                .collect();
            writeln!(out, "{indent}    match {}", matches.join(" ")).unwrap();
        }
        writeln!(out, "{indent}    rcode NXDOMAIN").unwrap();
        if matching {
            writeln!(out, "{indent}    fallthrough").unwrap();
        }
        writeln!(out, "{indent}}}").unwrap();
        out
    }

    /// `S:port {` and the `bind` line.
    fn open_block(&self) -> String {
        let mut out = match self.ctx.port {
            Some(port) => format!("{}:{port} {{\n", self.rule.suffix),
            None => format!("{} {{\n", self.rule.suffix),
        };
        if !self.ctx.bind.is_empty() {
            let args: Vec<String> = self.ctx.bind.iter().map(|a| token(a)).collect();
            writeln!(out, "    bind {}", args.join(" ")).unwrap();
        }
        out
    }

    fn view(&self, kind: &str, expr: &str) -> String {
        format!(
            "    view dnspolicy-{}-{kind} {{\n        expr {expr}\n    }}\n",
            self.rule.suffix
        )
    }

    /// The real hosts' `forward`: from 1.13.2 each query tries every target
    /// once at most, so a silent resolver is asked once per query and the
    /// client gets SERVFAIL after one 2 s read timeout per target (before:
    /// tries every 2 s until 5 s have passed, 3 tries and SERVFAIL after 6 s,
    /// past a stub's 5 s timeout, so the stub's retry doubles it). Health
    /// checks stay: with several targets they steer queries away from a
    /// silent one.
    fn forward_to(&self) -> String {
        let targets: Vec<String> = self
            .rule
            .forward_to
            .iter()
            .map(ToString::to_string)
            .collect();
        let mut out = format!("    forward . {}", targets.join(" "));
        if self.ctx.version.has_forward_connect_attempts() {
            write!(
                out,
                " {{\n        max_connect_attempts {}\n    }}",
                targets.len()
            )
            .unwrap();
        }
        out + "\n"
    }

    /// The artifacts' `forward` to CoreDNS itself. No health check
    /// (`max_fails 0`): its `. NS` probe would go through the `.` block to the
    /// node upstream, twice a second for as long as that is silent, and
    /// CoreDNS answering itself needs no checking. From 1.13.2 one try: the
    /// `.` block's own forward takes up to 6 s on a silent upstream, so every
    /// 2 s retry here started another inner lookup (3 of them, 9 upstream
    /// queries for one client query on 1.14.2).
    fn forward_to_itself(&self, me: &str) -> String {
        let mut out = format!("    forward . {me} {{\n        max_fails 0\n");
        if self.ctx.version.has_forward_connect_attempts() {
            out.push_str("        max_connect_attempts 1\n");
        }
        out + "    }\n"
    }

    /// The blocks for the suffix, each ending with its closing brace.
    pub(super) fn server_blocks(&self) -> Vec<String> {
        let r = self.rule;
        let mut blocks = Vec::new();
        if let Some(gate) = self.gated.clone()
            && gate_takes_artifacts(&gate, r)
        {
            let mut expr = format!("name() matches '{}'", self.artifact());
            if let Some(cluster) = self.cluster() {
                write!(expr, " || name() matches '{cluster}'").unwrap();
            }
            let mut b = self.comment()
                + &self.open_block()
                + &self.view("artifacts", &expr)
                + "    errors\n";
            match gate {
                Gate::Forward(me) => {
                    b += &self.rewrite_rules("    ");
                    b += &self.forward_to_itself(&me);
                }
                Gate::Answer => b += &self.nxdomain_template("    ", false),
            }
            blocks.push(b + "}\n");
        }
        if r.forward_to.is_empty() {
            return blocks;
        }
        let mut b = self.comment() + &self.open_block();
        match r.action {
            SuffixAction::Rewrite => {
                let mut expr = format!("name() matches '{}'", self.real_host());
                if let Some(cluster) = self.cluster() {
                    write!(expr, " && !(name() matches '{cluster}')").unwrap();
                }
                b += &self.view("hosts", &expr);
                b += "    errors\n    cache 30\n";
            }
            SuffixAction::NXDomain => {
                b += "    errors\n    cache 30\n";
                b += &self.nxdomain_template("    ", true);
            }
        }
        blocks.push(b + &self.forward_to() + "}\n");
        blocks
    }
}

/// NXDomain with forwardTo answers artifacts in its one plain block.
fn gate_takes_artifacts(gate: &Gate, rule: &SuffixRule) -> bool {
    !matches!(gate, Gate::Answer) || rule.forward_to.is_empty()
}
