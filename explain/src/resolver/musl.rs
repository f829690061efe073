//! musl's stub resolver: `name_from_dns_search` and `name_from_dns`
//! (lookup_name.c) over `__res_msend_rc` (res_msend.c).

use std::time::Duration;

use super::{Failure, Lookup, Outcome, Query, Run, Then, sendable};

/// One `name_from_dns`: A and AAAA sent together to every nameserver.
/// `Ok(true)` resolved, `Ok(false)` go on (NXDOMAIN), `Err` ends the lookup.
fn musl_query<F: FnMut(&Query) -> Outcome>(
    run: &mut Run<'_, F>,
    name: &str,
) -> Result<bool, Failure> {
    // __res_mkquery fails on a name that does not fit: name_from_dns returns 0.
    if !sendable(name) {
        run.record(
            name,
            vec![],
            Duration::ZERO,
            Some("longer than a DNS name can be"),
        );
        return Ok(false);
    }
    let queries = run.ask(name);
    // __res_msend_rc accepts only rcode 0 and 3; SERVFAIL is resent and then
    // ignored, REFUSED ignored: both wait out the whole `timeout` like silence.
    let accepted = |o: Outcome| o.is_response();
    let cost = if queries.iter().all(|(_, o)| accepted(*o)) {
        Duration::ZERO
    } else {
        Duration::from_secs(run.config.timeout_secs as u64)
    };
    let index = run.record(name, queries.clone(), cost, None);
    // name_from_dns: for each query in order (A first), no reply -> EAI_AGAIN,
    // NXDOMAIN -> 0 (search goes on); then any address -> success; else EAI_NODATA.
    let mut verdict = None;
    for (_, outcome) in &queries {
        if !accepted(*outcome) {
            verdict = Some(Err(Failure::TryAgain));
            break;
        }
        if *outcome == Outcome::NxDomain {
            verdict = Some(Ok(false));
            break;
        }
    }
    let verdict = verdict.unwrap_or_else(|| {
        if queries.iter().any(|(_, o)| *o == Outcome::Answer) {
            Ok(true)
        } else {
            Err(Failure::NoData)
        }
    });
    run.then(
        index,
        match verdict {
            Ok(true) => Then::Resolved,
            Ok(false) => Then::Next,
            Err(f) => Then::Abort(f),
        },
    );
    verdict
}

/// `name_from_dns_search` (lookup_name.c).
pub(super) fn musl_search<F: FnMut(&Query) -> Outcome>(run: &mut Run<'_, F>, name: &str) -> Lookup {
    let config = run.config;
    let dots = name.matches('.').count() as u32;
    let trailing_dot = name.ends_with('.');
    // "suppress search when >=ndots or name ends in a dot"
    let search: &[String] = if dots >= config.ndots || trailing_dot {
        &[]
    } else {
        &config.searches
    };
    let bare = name.strip_suffix('.').unwrap_or(name);
    let l = bare.len();
    for domain in search {
        // `if (z-p < 256 - l - 1)`: a candidate that would not fit is skipped.
        if domain.len() >= 256 - l - 1 {
            continue;
        }
        let candidate = format!("{bare}.{domain}");
        match musl_query(run, &candidate) {
            Ok(true) => return Lookup::Resolved(candidate),
            Ok(false) => {}
            Err(failure) => return Lookup::Failed(failure),
        }
    }
    // The name as written comes last, or alone.
    match musl_query(run, bare) {
        Ok(true) => Lookup::Resolved(bare.to_string()),
        // NXDOMAIN everywhere: __lookup_name turns 0 results into EAI_NONAME.
        Ok(false) => {
            if let Some(e) = run.exchanges.last_mut() {
                e.then = Then::Abort(Failure::NotFound);
            }
            Lookup::Failed(Failure::NotFound)
        }
        Err(failure) => Lookup::Failed(failure),
    }
}
