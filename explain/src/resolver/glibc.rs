//! glibc's stub resolver: `__res_context_search` (res_query.c) over
//! `__res_context_query` and `send_dg` (res_send.c), with their timing.

use std::time::Duration;

use super::{Failure, Lookup, Outcome, Query, ResolverConfig, Run, Then, sendable};

impl ResolverConfig {
    /// glibc `send_dg`: `seconds = retrans << ns; if (ns > 0) seconds /= nscount;`
    /// at least 1, for nameserver index `ns`.
    fn glibc_try_timeout(&self, ns: u32) -> Duration {
        let mut seconds = (self.timeout_secs as u64) << ns;
        if ns > 0 {
            seconds /= self.nameservers as u64;
        }
        Duration::from_secs(seconds.max(1))
    }

    /// glibc `__res_context_send`: `attempts` rounds over every nameserver.
    fn glibc_all_tries(&self) -> Duration {
        (0..self.nameservers)
            .map(|ns| self.glibc_try_timeout(ns))
            .sum::<Duration>()
            * self.attempts
    }
}

/// glibc's `h_errno` after one `__res_context_query`, and the rcode left in the
/// answer buffer (the search loop looks at both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HErrno {
    Success,
    HostNotFound,
    NoData,
    /// TRY_AGAIN with SERVFAIL in the buffer: the search goes on.
    TryAgainServFail,
    /// TRY_AGAIN after a timeout or REFUSED: the search stops.
    TryAgain,
    NoRecovery,
}

impl HErrno {
    fn failure(self) -> Failure {
        match self {
            HErrno::HostNotFound | HErrno::Success => Failure::NotFound,
            HErrno::NoData => Failure::NoData,
            HErrno::TryAgain | HErrno::TryAgainServFail => Failure::TryAgain,
            HErrno::NoRecovery => Failure::Fail,
        }
    }
}

/// One `__res_context_query` (A and AAAA in one `send_dg`), with its cost.
fn glibc_query<F: FnMut(&Query) -> Outcome>(run: &mut Run<'_, F>, name: &str) -> (HErrno, usize) {
    // res_mkquery fails on a name that does not fit: NO_RECOVERY, nothing sent.
    if !sendable(name) {
        let i = run.record(
            name,
            vec![],
            Duration::ZERO,
            Some("longer than a DNS name can be"),
        );
        return (HErrno::NoRecovery, i);
    }
    let queries = run.ask(name);
    let outcomes: Vec<Outcome> = queries.iter().map(|(_, o)| *o).collect();
    let config = run.config;
    let responses: Vec<Outcome> = outcomes
        .iter()
        .copied()
        .filter(|o| o.is_response())
        .collect();
    let timeouts = outcomes.contains(&Outcome::Timeout);

    let (herrno, cost) = if !timeouts {
        if responses.is_empty() {
            // send_dg: SERVFAIL/REFUSED -> next nameserver, next try; all spent ->
            // ETIMEDOUT, TRY_AGAIN, the first reply's rcode left in the buffer.
            let herrno = if outcomes[0] == Outcome::ServFail {
                HErrno::TryAgainServFail
            } else {
                HErrno::TryAgain
            };
            (herrno, Duration::ZERO)
        } else {
            // An error reply beside a real one is skipped; the real one decides.
            (glibc_rcode(&responses), Duration::ZERO)
        }
    } else if responses.is_empty() {
        // Every try of every nameserver times out (or only error replies came
        // before the timeout): TRY_AGAIN; SERVFAIL in the buffer lets the search go on.
        let herrno =
            if outcomes.contains(&Outcome::ServFail) && !outcomes.contains(&Outcome::Refused) {
                HErrno::TryAgainServFail
            } else {
                HErrno::TryAgain
            };
        (herrno, config.glibc_all_tries())
    } else if outcomes[0].is_response() {
        // send_dg timeout after one good reply: retry in single-request mode,
        // then single-request-reopen, then return the reply it has.
        let rounds = if config.single_request_reopen {
            1
        } else if config.single_request {
            2
        } else {
            3
        };
        (
            glibc_rcode(&responses),
            config.glibc_try_timeout(0) * rounds,
        )
    } else {
        // The first query (A) is the one lost: the single-request retry loses it
        // again and every later try does too.
        (
            HErrno::TryAgain,
            config.glibc_all_tries() + config.glibc_try_timeout(0),
        )
    };
    let index = run.record(name, queries, cost, None);
    (herrno, index)
}

/// `__res_context_query`: success when any reply has an answer; otherwise the
/// first reply's rcode, or the second's when the first is NOERROR.
fn glibc_rcode(responses: &[Outcome]) -> HErrno {
    if responses.contains(&Outcome::Answer) {
        return HErrno::Success;
    }
    let first = responses[0];
    let decisive = if first == Outcome::NoData {
        *responses.last().unwrap()
    } else {
        first
    };
    match decisive {
        Outcome::NxDomain => HErrno::HostNotFound,
        _ => HErrno::NoData,
    }
}

/// `__res_context_search` (res_query.c).
pub(super) fn glibc_search<F: FnMut(&Query) -> Outcome>(
    run: &mut Run<'_, F>,
    name: &str,
) -> Lookup {
    let config = run.config;
    let dots = name.matches('.').count() as u32;
    let trailing_dot = name.ends_with('.');
    let bare = name.strip_suffix('.').unwrap_or(name);
    let mut saved: Option<HErrno> = None;
    let mut last = HErrno::HostNotFound; // "True if we never query."
    let mut tried_as_is = false;
    let mut searched = false;
    let mut root_on_list = false;
    let mut got_nodata = false;
    let mut got_servfail = false;

    // "If there are enough dots in the name, let's just give it a try 'as is'."
    if dots >= config.ndots || trailing_dot {
        let (h, i) = glibc_query(run, bare);
        if h == HErrno::Success {
            run.then(i, Then::Resolved);
            return Lookup::Resolved(bare.to_string());
        }
        if trailing_dot {
            run.then(i, Then::Abort(h.failure()));
            return Lookup::Failed(h.failure());
        }
        saved = Some(h);
        last = h;
        tried_as_is = true;
    }

    // RES_DEFNAMES and RES_DNSRCH are on by default: search when the name has
    // no trailing dot.
    if !trailing_dot {
        for domain in &config.searches {
            searched = true;
            // A leading dot is dropped; "" (the root) means the name itself.
            let domain = domain.strip_prefix('.').unwrap_or(domain);
            if domain.is_empty() {
                root_on_list = true;
            }
            let candidate = if domain.is_empty() {
                bare.to_string()
            } else {
                format!("{bare}.{domain}")
            };
            let (h, i) = glibc_query(run, &candidate);
            last = h;
            match h {
                HErrno::Success => {
                    run.then(i, Then::Resolved);
                    return Lookup::Resolved(candidate);
                }
                // "On a NO_DATA error, keep trying"; HOST_NOT_FOUND: keep trying.
                HErrno::NoData => got_nodata = true,
                HErrno::HostNotFound => {}
                // TRY_AGAIN with SERVFAIL: "try next search element, if any".
                HErrno::TryAgainServFail => got_servfail = true,
                // "anything else implies that we're done".
                HErrno::TryAgain | HErrno::NoRecovery => {
                    run.then(i, Then::StopSearch);
                    break;
                }
            }
        }
    }

    // "If the query has not already been tried as is then try it unless
    // RES_NOTLDQUERY is set and there were no dots." (kept in glibc's shape)
    #[allow(clippy::nonminimal_bool)]
    if (dots > 0 || !searched || !config.no_tld_query) && !(tried_as_is || root_on_list) {
        let (h, i) = glibc_query(run, bare);
        last = h;
        if h == HErrno::Success {
            run.then(i, Then::Resolved);
            return Lookup::Resolved(bare.to_string());
        }
    }

    // The initial as-is query's error wins, then NO_DATA, then SERVFAIL's TRY_AGAIN.
    let failure = match saved {
        Some(h) => h.failure(),
        None if got_nodata => Failure::NoData,
        None if got_servfail => Failure::TryAgain,
        None => last.failure(),
    };
    if let Some(e) = run.exchanges.last_mut() {
        e.then = Then::Abort(failure);
    }
    Lookup::Failed(failure)
}

#[cfg(test)]
mod tests {
    use super::super::Resolver;
    use super::*;

    #[test]
    fn glibc_try_timeouts_follow_send_dg() {
        let mut c = ResolverConfig::new(Resolver::Glibc, vec![]);
        assert_eq!(c.glibc_all_tries(), Duration::from_secs(10));
        c.nameservers = 3;
        // 5, (10/3)=3, (20/3)=6 per try, two tries.
        assert_eq!(c.glibc_try_timeout(1), Duration::from_secs(3));
        assert_eq!(c.glibc_try_timeout(2), Duration::from_secs(6));
        assert_eq!(c.glibc_all_tries(), Duration::from_secs(28));
    }
}
