//! The shipped alerts (`manifests/monitoring/prometheusrule.yaml`, the same
//! rules the chart renders) under the real promtool (built from the Go module
//! proxy by `build-deps.sh promtool`): `promtool check rules`, and
//! `promtool test rules` on series whose names and labels are those of the
//! operator's real `/metrics` (`fixtures/operator-metrics.txt`, scraped from
//! `dnspolicy-operator run` on the local cluster by tests/helm.rs), with the
//! target labels a ServiceMonitor scrape adds.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use dnspolicy_e2e::env;
use serde_json::{Value, json};

const PROMTOOL_VERSION: &str = "v0.316.0";
const REAL_METRICS: &str = include_str!("fixtures/operator-metrics.txt");
/// What the ServiceMonitor's scrape adds to every series of the operator.
const TARGET: &str = r#"namespace="dnspolicy-system", job="dnspolicy-metrics", service="dnspolicy-metrics", pod="dnspolicy-7d9f8-abcde", instance="10.244.1.7:8080""#;

fn promtool() -> Result<PathBuf> {
    let bin = env::cache_dir()
        .join("promtool")
        .join(PROMTOOL_VERSION)
        .join("promtool");
    if !bin.is_file() {
        bail!(
            "{} is missing: run `bash e2e/scripts/build-deps.sh promtool` (builds it from the Go module proxy)",
            bin.display()
        );
    }
    Ok(bin)
}

fn run_promtool(args: &[&str], dir: &std::path::Path) -> Result<String> {
    let out = Command::new(promtool()?)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "promtool {args:?} failed:\n{text}");
    Ok(text)
}

/// The rule groups of the PrometheusRule, as a plain rules file.
fn rules() -> Result<Value> {
    let p = env::repo_root().join("manifests/monitoring/prometheusrule.yaml");
    let rule: serde_yaml::Value = serde_yaml::from_str(&fs::read_to_string(&p)?)?;
    let v: Value = serde_json::to_value(&rule)?;
    ensure!(
        v["kind"] == "PrometheusRule",
        "{} is not a PrometheusRule",
        p.display()
    );
    Ok(v["spec"].clone())
}

fn work_dir(name: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("dnspolicy-promtool-{name}-{}", std::process::id()));
    fs::create_dir_all(&d)?;
    Ok(d)
}

/// Series of the real scrape: metric name -> label names.
fn real_series() -> BTreeMap<String, BTreeSet<String>> {
    dnspolicy_e2e::operator::metric_series(REAL_METRICS)
}

/// `name{labels}` of the operator, checked against the real scrape, with the target labels.
fn op_series(name: &str, labels: &[(&str, &str)]) -> Result<String> {
    let real = real_series();
    let have = real.get(name).with_context(|| {
        format!("{name} is not in the operator's real /metrics (fixtures/operator-metrics.txt)")
    })?;
    let want: BTreeSet<String> = labels.iter().map(|(k, _)| k.to_string()).collect();
    ensure!(
        *have == want,
        "{name} carries labels {have:?} in the real /metrics, the test uses {want:?}"
    );
    let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    l.push(TARGET.to_string());
    Ok(format!("{name}{{{}}}", l.join(", ")))
}

/// The alert's annotations as Prometheus expands them for these labels and value.
fn annotations(rules: &Value, alert: &str, labels: &[(&str, &str)], value: &str) -> Result<Value> {
    let rule = rules["groups"][0]["rules"]
        .as_array()
        .context("rules")?
        .iter()
        .find(|r| r["alert"] == alert)
        .with_context(|| format!("no alert {alert}"))?;
    let mut out = serde_json::Map::new();
    for (k, v) in rule["annotations"].as_object().context("annotations")? {
        let mut s = v
            .as_str()
            .unwrap_or_default()
            .replace("{{ $value }}", value);
        for (lk, lv) in labels {
            s = s.replace(&format!("{{{{ $labels.{lk} }}}}"), lv);
        }
        ensure!(
            !s.contains("{{"),
            "{alert}.{k}: unexpanded template in the test's model: {s}"
        );
        out.insert(k.clone(), Value::String(s));
    }
    Ok(Value::Object(out))
}

#[test]
fn the_rules_pass_promtool_check() -> Result<()> {
    let dir = work_dir("check")?;
    fs::write(dir.join("rules.yaml"), serde_yaml::to_string(&rules()?)?)?;
    let out = run_promtool(&["check", "rules", "rules.yaml"], &dir)?;
    println!("{out}");
    ensure!(out.contains("SUCCESS"), "{out}");
    Ok(())
}

#[test]
fn the_alerts_fire_on_real_series_and_only_then() -> Result<()> {
    let rules = rules()?;
    let dir = work_dir("test")?;
    fs::write(dir.join("rules.yaml"), serde_yaml::to_string(&rules)?)?;
    let ns = "dnspolicy-system";
    // 10 samples at 30 s = one reconcile every 5 min, as the 300 s requeue does.
    let every_5m = |from: u32, n: u32| -> String {
        (0..n)
            .map(|i| format!("{}+0x9", from + i))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let alert = |name: &str, at: &str, labels: &[(&str, &str)], value: &str| -> Result<Value> {
        let mut exp = serde_json::Map::new();
        for (k, v) in labels {
            exp.insert(k.to_string(), json!(v));
        }
        Ok(json!({"eval_time": at, "alertname": name, "exp_alerts": [{
            "exp_labels": exp,
            "exp_annotations": annotations(&rules, name, labels, value)?,
        }]}))
    };
    let none = |name: &str, at: &str| json!({"eval_time": at, "alertname": name, "exp_alerts": []});
    let with_severity = |mut v: Value, sev: &str| {
        v["exp_alerts"][0]["exp_labels"]["severity"] = json!(sev);
        v
    };

    let tests = json!([
        {
            "name": "a target stalled for good: DNSPolicyNotReady after 10 min, not before",
            "interval": "30s",
            "input_series": [
                {"series": op_series("dnspolicy_reconciles_total", &[("result", "stalled")])?, "values": every_5m(1, 6)},
            ],
            "alert_rule_test": [
                none("DNSPolicyNotReady", "9m"),
                with_severity(alert("DNSPolicyNotReady", "25m", &[("namespace", ns), ("result", "stalled")], "")?, "warning"),
            ],
        },
        {
            "name": "one stalled reconcile, then rolled out: no DNSPolicyNotReady",
            "interval": "30s",
            "input_series": [
                {"series": op_series("dnspolicy_reconciles_total", &[("result", "stalled")])?, "values": "0x9 1+0x50"},
                {"series": op_series("dnspolicy_reconciles_total", &[("result", "rolled-out")])?, "values": every_5m(1, 6)},
            ],
            "alert_rule_test": [none("DNSPolicyNotReady", "12m"), none("DNSPolicyNotReady", "25m")],
        },
        {
            "name": "the first rollback (a new series) and a later one fire DNSPolicyRolledBack",
            "interval": "1m",
            "input_series": [
                {"series": op_series("dnspolicy_rollouts_total", &[("outcome", "rolled-back")])?, "values": "_x10 1+0x30 2+0x20"},
                {"series": op_series("dnspolicy_rollouts_total", &[("outcome", "finished")])?, "values": "1+0x60"},
            ],
            "alert_rule_test": [
                none("DNSPolicyRolledBack", "5m"),
                with_severity(alert("DNSPolicyRolledBack", "12m", &[("namespace", ns)], "1")?, "warning"),
                none("DNSPolicyRolledBack", "35m"),
                with_severity(alert("DNSPolicyRolledBack", "45m", &[("namespace", ns)], "1")?, "warning"),
            ],
        },
        {
            "name": "polluted pods for 30 min: DNSPolicyPollutedPods with the count",
            "interval": "1m",
            "input_series": [
                {"series": op_series("dnspolicy_polluted_pods", &[("policy", "tailnet")])?, "values": "3x40"},
                {"series": op_series("dnspolicy_polluted_pods", &[("policy", "openstack")])?, "values": "0x40"},
            ],
            "alert_rule_test": [
                none("DNSPolicyPollutedPods", "20m"),
                with_severity(alert("DNSPolicyPollutedPods", "35m", &[("namespace", ns), ("policy", "tailnet")], "3")?, "info"),
            ],
        },
        {
            "name": "a node without its agent for 15 min: DNSPolicyNodeAgentMissing",
            "interval": "1m",
            "input_series": [
                {"series": "kube_daemonset_status_desired_number_scheduled{namespace=\"dnspolicy-system\", daemonset=\"dnspolicy-node-agent\", job=\"kube-state-metrics\"}", "values": "3x30"},
                {"series": "kube_daemonset_status_number_available{namespace=\"dnspolicy-system\", daemonset=\"dnspolicy-node-agent\", job=\"kube-state-metrics\"}", "values": "3x5 2x25"},
            ],
            "alert_rule_test": [
                none("DNSPolicyNodeAgentMissing", "15m"),
                with_severity(alert("DNSPolicyNodeAgentMissing", "25m", &[("namespace", ns), ("daemonset", "dnspolicy-node-agent"), ("job", "kube-state-metrics")], "1")?, "warning"),
            ],
        },
        {
            "name": "no replica scraped for 10 min: DNSPolicyOperatorDown",
            "interval": "1m",
            "input_series": [
                {"series": format!("up{{{TARGET}}}"), "values": "1x5 0x20"},
            ],
            "alert_rule_test": [
                none("DNSPolicyOperatorDown", "5m"),
                with_severity(alert("DNSPolicyOperatorDown", "20m", &[], "1")?, "warning"),
            ],
        },
    ]);
    let file = json!({"rule_files": ["rules.yaml"], "evaluation_interval": "30s", "tests": tests});
    fs::write(dir.join("alerts_test.yaml"), serde_yaml::to_string(&file)?)?;
    let out = run_promtool(&["test", "rules", "alerts_test.yaml"], &dir)?;
    println!("{out}");
    ensure!(out.contains("SUCCESS"), "{out}");
    Ok(())
}

#[test]
fn the_fixture_is_a_real_scrape_of_every_family() -> Result<()> {
    // The helm cluster test checks the live /metrics has the families the pack reads;
    // this checks the fixture the alert tests draw their series from is such a scrape.
    for family in [
        "dnspolicy_reconciles_total",
        "dnspolicy_rollouts_total",
        "dnspolicy_polluted_pods",
        "dnspolicy_watched_pods",
        "dnspolicy_reconcile_duration_seconds_bucket",
        "dnspolicy_api_writes_total",
    ] {
        ensure!(
            real_series().contains_key(family),
            "fixtures/operator-metrics.txt has no {family}: refresh it from a real scrape"
        );
    }
    Ok(())
}
