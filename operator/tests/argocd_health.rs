//! The Argo CD health check (manifests/gitops/argocd/resource_customizations/
//! dnspolicy.dev/ClusterDNSPolicy/health.lua, the layout Argo CD's
//! resource_customizations directory uses) run on its
//! own test cases, in Lua 5.1 as Argo CD's gopher-lua speaks it, and kept
//! identical to the copy in the argocd-cm patch.

use std::fs;
use std::path::PathBuf;

use mlua::{Lua, LuaSerdeExt, Table};

fn dir() -> PathBuf {
    argocd_dir().join("resource_customizations/dnspolicy.dev/ClusterDNSPolicy")
}

fn argocd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/gitops/argocd")
}

fn health(script: &str, object: &serde_json::Value) -> (String, String) {
    let lua = Lua::new();
    lua.globals()
        .set("obj", lua.to_value(object).unwrap())
        .unwrap();
    let result: Table = lua.load(script).eval().unwrap();
    (
        result.get("status").unwrap(),
        result.get("message").unwrap(),
    )
}

#[test]
fn health_check_passes_its_test_cases() {
    let script = fs::read_to_string(dir().join("health.lua")).unwrap();
    let tests: serde_yaml::Value =
        serde_yaml::from_str(&fs::read_to_string(dir().join("health_test.yaml")).unwrap()).unwrap();
    let cases = tests["tests"].as_sequence().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let input = case["inputPath"].as_str().unwrap();
        let object: serde_json::Value =
            serde_yaml::from_str(&fs::read_to_string(dir().join(input)).unwrap()).unwrap();
        let (status, message) = health(&script, &object);
        assert_eq!(
            status,
            case["healthStatus"]["status"].as_str().unwrap(),
            "{input}"
        );
        assert_eq!(
            message,
            case["healthStatus"]["message"].as_str().unwrap(),
            "{input}"
        );
    }
    // A policy the operator has not seen yet is Progressing.
    let fresh = serde_json::json!({"metadata": {"name": "tailnet", "generation": 1}, "spec": {}});
    assert_eq!(health(&script, &fresh).0, "Progressing");
}

#[test]
fn the_argocd_cm_patch_carries_the_same_script() {
    let script = fs::read_to_string(dir().join("health.lua")).unwrap();
    let patch: serde_yaml::Value = serde_yaml::from_str(
        &fs::read_to_string(argocd_dir().join("argocd-cm-patch.yaml")).unwrap(),
    )
    .unwrap();
    let embedded = patch["data"]["resource.customizations.health.dnspolicy.dev_ClusterDNSPolicy"]
        .as_str()
        .unwrap();
    assert_eq!(embedded, script);
}
