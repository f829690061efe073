//! kube-apiserver audit log (level Metadata, every request, blocking backend):
//! lets tests count API writes per user, field manager or object.

use std::path::PathBuf;

#[derive(Clone, Debug, Default)]
pub struct AuditEvent {
    pub verb: String,
    pub user: String,
    pub user_agent: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// `fieldManager` query parameter of the request, if any (always set for server-side apply).
    pub field_manager: Option<String>,
    pub request_uri: String,
    pub code: i64,
}

impl AuditEvent {
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }
}

#[derive(Clone, Debug)]
pub struct AuditLog {
    pub path: PathBuf,
}

fn query_param(uri: &str, key: &str) -> Option<String> {
    let q = uri.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.replace("%3A", ":").replace("%2F", "/"))
    })
}

impl AuditLog {
    pub fn mark(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Completed requests logged after `mark`.
    pub fn since(&self, mark: u64) -> Vec<AuditEvent> {
        let data = std::fs::read(&self.path).unwrap_or_default();
        let tail = String::from_utf8_lossy(data.get(mark as usize..).unwrap_or(&[])).to_string();
        tail.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["stage"] == "ResponseComplete")
            .map(|v| {
                let s = |p: &serde_json::Value| p.as_str().unwrap_or_default().to_string();
                let uri = s(&v["requestURI"]);
                AuditEvent {
                    verb: s(&v["verb"]),
                    user: s(&v["user"]["username"]),
                    user_agent: s(&v["userAgent"]),
                    resource: s(&v["objectRef"]["resource"]),
                    subresource: s(&v["objectRef"]["subresource"]),
                    namespace: s(&v["objectRef"]["namespace"]),
                    name: s(&v["objectRef"]["name"]),
                    field_manager: query_param(&uri, "fieldManager"),
                    request_uri: uri,
                    code: v["responseStatus"]["code"].as_i64().unwrap_or(0),
                }
            })
            .collect()
    }

    /// Writes (create/update/patch/delete) after `mark` by a user name.
    pub fn writes_by_user(&self, mark: u64, user: &str) -> Vec<AuditEvent> {
        self.since(mark)
            .into_iter()
            .filter(|e| e.is_write() && e.user == user)
            .collect()
    }

    /// Writes after `mark` that named this field manager.
    pub fn writes_by_field_manager(&self, mark: u64, manager: &str) -> Vec<AuditEvent> {
        self.since(mark)
            .into_iter()
            .filter(|e| e.is_write() && e.field_manager.as_deref() == Some(manager))
            .collect()
    }
}
