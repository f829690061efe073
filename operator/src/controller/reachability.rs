//! Do the forward targets answer? After a rollout, and then on a schedule
//! with backoff, the operator sends each forward target one query for its
//! suffix (`SOA <suffix>.`, recursion desired). Any DNS reply with the
//! query's id counts as answering (NXDOMAIN and REFUSED too: the resolver is
//! there); silence until `PROBE_TIMEOUT` does not.
//!
//! Why from the operator, not from CoreDNS's `forward` health-check metrics:
//! the operator's pod sits on the pod network like CoreDNS's, so what it
//! reaches CoreDNS reaches; CoreDNS's health check asks for `.` NS, not for
//! the suffix, and its metrics would have to be scraped from every CoreDNS
//! pod's metrics port, which the Corefile need not expose.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::net::UdpSocket;

/// How long a target has to answer one probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The probe interval while a target answers.
pub const ANSWERING_INTERVAL: Duration = Duration::from_secs(30);
/// The first retry after a silent probe; doubled per silent probe up to
/// `ANSWERING_INTERVAL`, so a dead target is looked at often at first and
/// the report stays within a minute of a change either way.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);

/// Sends one query for `suffix` to `target`; true when any reply came back.
pub async fn answers(target: SocketAddr, suffix: &str) -> bool {
    let Ok(query) = probe_query(suffix) else {
        return false;
    };
    let Ok(bytes) = query.to_vec() else {
        return false;
    };
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let Ok(socket) = UdpSocket::bind(bind).await else {
        return false;
    };
    if socket.connect(target).await.is_err() || socket.send(&bytes).await.is_err() {
        return false;
    }
    let id = query.metadata.id;
    let wait_for_reply = async {
        let mut buf = [0u8; 4096];
        loop {
            // An ICMP port unreachable surfaces as an error: no resolver there.
            let n = socket.recv(&mut buf).await.ok()?;
            if let Ok(reply) = Message::from_vec(&buf[..n])
                && reply.metadata.id == id
                && reply.metadata.message_type == MessageType::Response
            {
                return Some(());
            }
        }
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, wait_for_reply).await,
        Ok(Some(()))
    )
}

fn probe_query(suffix: &str) -> Result<Message, hickory_proto::ProtoError> {
    let name = Name::from_ascii(format!("{suffix}."))?;
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name, RecordType::SOA));
    Ok(message)
}

/// What the last probe of one (suffix, target) found, and when to probe next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeState {
    pub answering: bool,
    /// Silent probes in a row.
    pub silent: u32,
    pub next_due: Instant,
}

/// The delay before the next probe after `silent` silent probes in a row.
pub fn next_delay(silent: u32) -> Duration {
    if silent == 0 {
        return ANSWERING_INTERVAL;
    }
    FIRST_RETRY
        .saturating_mul(1 << (silent - 1).min(8))
        .min(ANSWERING_INTERVAL)
}

/// Probe results by (suffix, target), shared by the reconciles.
#[derive(Debug, Default)]
pub struct Probes {
    states: Mutex<HashMap<(String, SocketAddr), ProbeState>>,
}

impl Probes {
    /// The last state, probing first when it is due (or never probed).
    pub async fn check(&self, suffix: &str, target: SocketAddr, now: Instant) -> ProbeState {
        let key = (suffix.to_string(), target);
        let last = self.states.lock().expect("probes lock").get(&key).copied();
        if let Some(s) = last.filter(|s| s.next_due > now) {
            return s;
        }
        let answering = answers(target, suffix).await;
        let silent = match (answering, last) {
            (true, _) => 0,
            (false, Some(s)) => s.silent + 1,
            (false, None) => 1,
        };
        let state = ProbeState {
            answering,
            silent,
            next_due: Instant::now() + next_delay(silent),
        };
        self.states.lock().expect("probes lock").insert(key, state);
        state
    }

    /// Forget targets no longer in use, so the map stays as small as the config.
    pub fn retain(&self, keep: impl Fn(&str, SocketAddr) -> bool) {
        self.states
            .lock()
            .expect("probes lock")
            .retain(|(suffix, target), _| keep(suffix, *target));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_targets_are_retried_sooner_then_backed_off_to_the_interval() {
        assert_eq!(next_delay(0), ANSWERING_INTERVAL);
        assert_eq!(next_delay(1), FIRST_RETRY);
        assert_eq!(next_delay(2), FIRST_RETRY * 2);
        assert_eq!(next_delay(3), FIRST_RETRY * 4);
        assert_eq!(next_delay(4), ANSWERING_INTERVAL);
        assert_eq!(next_delay(40), ANSWERING_INTERVAL);
    }

    #[test]
    fn the_probe_asks_for_the_suffix_soa_with_recursion() {
        let q = probe_query("tailb45a71.ts.net").unwrap();
        assert!(q.metadata.recursion_desired);
        assert_eq!(q.queries[0].name().to_ascii(), "tailb45a71.ts.net.");
        assert_eq!(q.queries[0].query_type(), RecordType::SOA);
    }

    /// A real UDP socket that reads queries and never answers: silent.
    #[tokio::test]
    async fn a_socket_that_never_answers_is_not_answering() {
        let black_hole = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = black_hole.local_addr().unwrap();
        assert!(!answers(target, "corp.example").await);
    }

    /// A real UDP socket that answers REFUSED: any reply counts.
    #[tokio::test]
    async fn any_reply_counts_as_answering() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = server.local_addr().unwrap();
        let responder = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            let query = Message::from_vec(&buf[..n]).unwrap();
            let reply = Message::error_msg(
                query.metadata.id,
                query.metadata.op_code,
                hickory_proto::op::ResponseCode::Refused,
            );
            server
                .send_to(&reply.to_vec().unwrap(), from)
                .await
                .unwrap();
        });
        assert!(answers(target, "corp.example").await);
        responder.await.unwrap();
    }
}
