//! The demo's VirtualService steps (issue 20): Istio's traffic management across the two
//! clusters. Each step applies `samples/vs-subsets-dr.yaml` and its VirtualService in both
//! clusters (each federation reads only its own cluster's rules), waits until sleep's
//! sidecar holds the routes over RDS, judges what sleep saw (which version answered, through
//! which address, with which status and how fast), and deletes the VirtualService again so
//! later steps see plain routing.

use super::super::{Bed, ClusterBed, HELLO_URL, HOST, READY, http::Answer, wait_table};
use super::{Outcome, apply_everywhere, cluster_name, pair};
use crate::sidecar::Table;
use crate::sidecar::routes::{Abort, Action, Route};
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SUBSETS: &str = include_str!("../../../../samples/vs-subsets-dr.yaml");
const SHIFT: &str = include_str!("../../../../samples/vs-traffic-shift.yaml");
const HEADER: &str = include_str!("../../../../samples/vs-header-route.yaml");
const FAULT: &str = include_str!("../../../../samples/vs-fault.yaml");
const TIMEOUT: &str = include_str!("../../../../samples/vs-timeout.yaml");

/// The Host sleep's requests carry (HELLO_URL's authority): the virtual host they match.
const AUTHORITY: &str = "helloworld.sample:5000";
const JASON: (&str, &str) = ("end-user", "jason");
const TESTER: (&str, &str) = ("end-user", "tester");

/// helloworld's subset cluster for `subset` (`outbound|5000|v1|fqdn`).
fn subset(version: &str) -> String {
    format!("outbound|5000|{version}|{HOST}")
}

/// The clusters a route forwards to, with their weights (none for a direct response).
fn targets(r: &Route) -> Vec<(&str, u32)> {
    match &r.action {
        Action::Forward(f) => f
            .clusters
            .iter()
            .map(|c| (c.name.as_str(), c.weight))
            .collect(),
        Action::Direct { .. } => Vec::new(),
    }
}

/// Forwards everything to `cluster` alone.
fn only_to(r: &Route, cluster: &str) -> bool {
    matches!(targets(r).as_slice(), [(c, _)] if *c == cluster)
}

/// Matches on `end-user` (the seed's header routes).
fn on_end_user(r: &Route) -> bool {
    r.headers.iter().any(|h| h.name == "end-user")
}

/// How long a sidecar may take to have its HTTP proxy listener and routes at all: they come
/// with its first LDS/RDS, not with a rule.
const FIRST_ROUTES: Duration = Duration::from_secs(5);

/// Until `c`'s sidecar routes helloworld's virtual host as `ok` says over RDS, and has every
/// cluster those routes name with a healthy host over CDS/EDS (as Envoy warms clusters
/// before a route uses them). Fails at once when the sidecar has no routes at all.
async fn wait_routes(
    c: &ClusterBed,
    what: &str,
    ok: impl Fn(&[Route]) -> bool,
) -> anyhow::Result<()> {
    let port = c.addrs.sleep_proxy.port();
    wait_table(&c.sleep, FIRST_ROUTES, |t| t.http_proxy(port).is_some())
        .await
        .with_context(|| {
            format!(
                "{}'s sidecar has no HTTP proxy listener {} with its routes (LDS/RDS)",
                c.spec.name,
                Table::http_proxy_name(port)
            )
        })?;
    wait_table(&c.sleep, READY, |t| {
        let Some(vhost) = t.http_proxy(port).and_then(|(_, rt)| rt.vhost(AUTHORITY)) else {
            return false;
        };
        let warm = vhost.routes.iter().flat_map(targets).all(|(name, _)| {
            t.clusters
                .get(name)
                .is_some_and(|u| u.endpoints.iter().any(|h| h.healthy))
        });
        warm && ok(&vhost.routes)
    })
    .await
    .with_context(|| format!("{}'s sidecar never got {what} over RDS", c.spec.name))
}

/// Applies the subsets and `vs` everywhere, then waits in every cluster until `ok`; how long
/// the rule took from `kubectl apply` to both sidecars' routes.
async fn apply_and_wait(
    bed: &Bed,
    vs: &str,
    what: &str,
    ok: impl Fn(&[Route]) -> bool + Copy,
) -> anyhow::Result<Duration> {
    apply_everywhere(bed, SUBSETS).await?;
    let start = Instant::now();
    apply_everywhere(bed, vs).await?;
    for c in &bed.clusters[..2] {
        wait_routes(c, what, ok).await?;
    }
    Ok(start.elapsed())
}

/// How long a rule took from `kubectl apply` to both sidecars' routes, for the details.
fn in_sidecars(took: Duration) -> String {
    format!("rule in both sidecars {} ms after apply", took.as_millis())
}

/// Deletes the VirtualService everywhere and waits until every sidecar is back on Istio's
/// default route (the service's own cluster): later steps see plain routing.
async fn restore(bed: &Bed) -> anyhow::Result<()> {
    for c in &bed.clusters {
        // Every vs-*.yaml is VirtualService sample/helloworld: deleting one deletes it.
        c.kube(
            move |client| async move { super::super::objects::delete_istio(&client, SHIFT).await },
        )
        .await
        .with_context(|| format!("deleting the VirtualService in {}", c.spec.name))?;
    }
    let default = cluster_name(HOST);
    for c in &bed.clusters[..2] {
        if c.sleep
            .table()
            .borrow()
            .http_proxy(c.addrs.sleep_proxy.port())
            .is_none()
        {
            continue; // no routes: the sidecar sends helloworld to its own cluster
        }
        wait_routes(c, "the default route back", |routes| {
            routes.iter().all(|r| only_to(r, &default))
        })
        .await?;
    }
    Ok(())
}

/// Runs `judge` (which applies the VirtualService and judges), then restores plain routing
/// even when it failed; a failed restore fails the step.
async fn with_restore(bed: &Bed, judge: impl std::future::Future<Output = Outcome>) -> Outcome {
    let judged = judge.await;
    let restored = restore(bed).await;
    let (ok, detail) = judged?;
    restored?;
    Ok((ok, detail))
}

/// What `n` requests from one sleep saw: answers per version, the upstream of each version's
/// answers, statuses and bodies of the rest, and the slowest and fastest request.
#[derive(Default)]
struct Seen {
    versions: BTreeMap<String, usize>,
    upstreams: BTreeMap<String, Vec<String>>,
    failures: Vec<String>,
    statuses: BTreeMap<u16, usize>,
    bodies: Vec<String>,
    times: Vec<Duration>,
}

impl Seen {
    async fn requests(c: &ClusterBed, n: usize, headers: &[(&str, &str)]) -> Seen {
        let mut seen = Seen::default();
        for _ in 0..n {
            match c.curl_with(HELLO_URL, headers).await {
                Ok((a, took)) => seen.add(&a, took),
                Err(e) => seen.failures.push(format!("{e:#}")),
            }
        }
        seen
    }

    fn add(&mut self, a: &Answer, took: Duration) {
        *self.statuses.entry(a.status).or_insert(0) += 1;
        self.times.push(took);
        if a.status == 200 {
            let v = a.version().unwrap_or("?").to_string();
            *self.versions.entry(v.clone()).or_insert(0) += 1;
            let up = a.upstream().unwrap_or("?").to_string();
            self.upstreams.entry(v).or_default().push(up);
        } else {
            self.bodies.push(a.body.trim().to_string());
        }
    }

    fn count(&self, version: &str) -> usize {
        self.versions.get(version).copied().unwrap_or(0)
    }

    fn status(&self, code: u16) -> usize {
        self.statuses.get(&code).copied().unwrap_or(0)
    }

    /// Every answer from `version` came through `upstream`.
    fn all_via(&self, version: &str, upstream: &str) -> bool {
        self.upstreams
            .get(version)
            .is_none_or(|u| u.iter().all(|x| x == upstream))
    }

    fn min(&self) -> Duration {
        self.times.iter().min().copied().unwrap_or_default()
    }

    fn max(&self) -> Duration {
        self.times.iter().max().copied().unwrap_or_default()
    }

    /// `v1 x50, v2 x50 in 3-41 ms`, with other statuses (`500 x20 "fault filter abort"`)
    /// and failures.
    fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .versions
            .iter()
            .map(|(v, n)| format!("{v} x{n}"))
            .collect();
        let first = self.bodies.first().map(String::as_str).unwrap_or("");
        parts.extend(
            self.statuses
                .iter()
                .filter(|(s, _)| **s != 200)
                .map(|(s, n)| format!("{s} x{n} {first:?}")),
        );
        if let Some(f) = self.failures.first() {
            parts.push(format!("{} failed ({f})", self.failures.len()));
        }
        format!(
            "{} in {}-{} ms",
            parts.join(", "),
            self.min().as_millis(),
            self.max().as_millis()
        )
    }
}

/// Istio's weighted routing (`route[].weight`) across networks: with v1 weight 50 in
/// cluster1 and v2 weight 50 in cluster2, 100 requests from each cluster's sleep split 50/50
/// (±5; the sidecar's weighted clusters are smooth round robin, so exactly), none fails, and
/// the other cluster's version answers through its east-west gateway.
pub(super) async fn traffic_shift(bed: &Bed) -> Outcome {
    let (c1, c2) = pair(bed)?;
    let (v1, v2) = (subset(&c1.spec.version), subset(&c2.spec.version));
    let weighted = |routes: &[Route]| {
        routes.first().is_some_and(|r| {
            let mut t = targets(r);
            t.sort();
            t == [(v1.as_str(), 50), (v2.as_str(), 50)]
        })
    };
    with_restore(bed, async {
        let took = apply_and_wait(bed, SHIFT, "the 50/50 weighted route", &weighted).await?;
        let mut ok = true;
        let mut details = vec![in_sidecars(took)];
        for (c, other) in [(c1, c2), (c2, c1)] {
            let seen = Seen::requests(c, 100, &[]).await;
            let gateway = other.addrs.gateway.to_string();
            let (own, theirs) = (seen.count(&c.spec.version), seen.count(&other.spec.version));
            let via = seen.all_via(&other.spec.version, &gateway);
            ok &= seen.failures.is_empty()
                && seen.status(200) == 100
                && (45..=55).contains(&own)
                && (45..=55).contains(&theirs)
                && via;
            details.push(format!(
                "sleep in {}: {} (want 50/50 +- 5); {} {} via {}'s gateway {gateway}",
                c.spec.name,
                seen.summary(),
                other.spec.version,
                if via { "all" } else { "NOT all" },
                other.spec.name,
            ));
        }
        Ok((ok, details.join("; ")))
    })
    .await
}

/// Istio's header match (`match[].headers.end-user.exact: jason`, the seed's reviews-test-v2
/// rule): jason's requests from cluster1 all go to v2 in cluster2 through its gateway, everyone
/// else's to v1 in cluster1 directly; from cluster2 the same rule keeps jason local and sends
/// everyone else to cluster1.
pub(super) async fn header_route(bed: &Bed) -> Outcome {
    let (c1, c2) = pair(bed)?;
    let (v1, v2) = (subset(&c1.spec.version), subset(&c2.spec.version));
    let by_header = |routes: &[Route]| match routes {
        [jason, rest, ..] => on_end_user(jason) && only_to(jason, &v2) && only_to(rest, &v1),
        _ => false,
    };
    with_restore(bed, async {
        let took = apply_and_wait(bed, HEADER, "the end-user header route", &by_header).await?;
        let mut ok = true;
        let mut details = vec![in_sidecars(took)];
        for (c, n) in [(c1, 20), (c2, 10)] {
            let jason = Seen::requests(c, n, &[JASON]).await;
            let others = Seen::requests(c, n, &[]).await;
            let where_v2 = if c.spec.name == c2.spec.name {
                c2.addrs.helloworld.to_string()
            } else {
                c2.addrs.gateway.to_string()
            };
            let where_v1 = if c.spec.name == c1.spec.name {
                c1.addrs.helloworld.to_string()
            } else {
                c1.addrs.gateway.to_string()
            };
            ok &= jason.count(&c2.spec.version) == n
                && jason.all_via(&c2.spec.version, &where_v2)
                && others.count(&c1.spec.version) == n
                && others.all_via(&c1.spec.version, &where_v1);
            details.push(format!(
                "sleep in {}: end-user jason -> {} (want {} x{n} via {where_v2}), others -> {} (want {} x{n} via {where_v1})",
                c.spec.name,
                jason.summary(),
                c2.spec.version,
                others.summary(),
                c1.spec.version,
            ));
        }
        Ok((ok, details.join("; ")))
    })
    .await
}

/// Requests both helloworlds have been sent so far.
async fn hello_requests(bed: &Bed) -> u64 {
    let mut n = 0;
    for c in &bed.clusters {
        if let Some(hw) = c.helloworld.lock().await.as_ref() {
            n += hw.requests();
        }
    }
    n
}

/// Istio's fault injection (`fault.abort.httpStatus` and `fault.delay.fixedDelay` at 100%,
/// the seed's ratings-test-abort and -delay rules): jason's requests are answered 500 `fault
/// filter abort` by the sidecar and never reach helloworld (its request counters do not
/// move); tester's are held 1 s and then answered by v1; everyone else's are answered at once.
pub(super) async fn fault(bed: &Bed) -> Outcome {
    let (c1, _) = pair(bed)?;
    let v1 = subset(&c1.spec.version);
    let faults = |routes: &[Route]| match routes {
        [abort, delay, rest, ..] => {
            let aborts = abort.fault.as_ref().and_then(|f| f.abort);
            let delays = delay.fault.as_ref().and_then(|f| f.delay);
            matches!(aborts, Some((Abort::Http(500), 1_000_000)))
                && delays == Some((Duration::from_secs(1), 1_000_000))
                && rest.fault.is_none()
                && only_to(rest, &v1)
        }
        _ => false,
    };
    with_restore(bed, async {
        let took = apply_and_wait(bed, FAULT, "the abort and delay faults", &faults).await?;
        let before = hello_requests(bed).await;
        let jason = Seen::requests(c1, 20, &[JASON]).await;
        let after = hello_requests(bed).await;
        let tester = Seen::requests(c1, 5, &[TESTER]).await;
        let others = Seen::requests(c1, 10, &[]).await;
        let aborted = jason.status(500) == 20
            && jason.bodies.iter().all(|b| b == "fault filter abort")
            && after == before;
        let delayed = tester.count(&c1.spec.version) == 5 && tester.min() >= Duration::from_secs(1);
        let prompt = others.count(&c1.spec.version) == 10 && others.max() < Duration::from_millis(300);
        let detail = format!(
            "{}; sleep in {}: end-user jason -> {} (want 500 \"fault filter abort\" x20; requests reaching helloworld {before} -> {after}); \
             end-user tester -> {} (want {} x5, each >= 1000 ms); others -> {} (want {} x10, each < 300 ms)",
            in_sidecars(took),
            c1.spec.name,
            jason.summary(),
            tester.summary(),
            c1.spec.version,
            others.summary(),
            c1.spec.version,
        );
        Ok((aborted && delayed && prompt, detail))
    })
    .await
}

/// How slow v2 is made for the timeout step, and the rule's timeout (vs-timeout.yaml).
const SLOW: Duration = Duration::from_millis(1500);
const RULE_TIMEOUT: Duration = Duration::from_millis(500);

/// Sets the delay of `c`'s helloworld.
async fn set_delay(c: &ClusterBed, delay: Duration) -> anyhow::Result<()> {
    match c.helloworld.lock().await.as_ref() {
        Some(hw) => {
            hw.set_delay(delay);
            Ok(())
        }
        None => bail!("{}'s helloworld is not running", c.spec.name),
    }
}

/// vs-timeout.yaml without its `timeout` line: the same route, with Istio's default of no
/// route timeout.
fn without_timeout(vs: &str) -> String {
    vs.lines()
        .filter(|l| !l.trim_start().starts_with("timeout:"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Istio's request timeout (`http[].timeout: 0.5s`, the seed's timeouts rule) across the
/// network: with v2 in cluster2 answering after 1.5 s, every request from cluster1 is cut off
/// by the sidecar with 504 `upstream request timeout` after 0.5 s (under 1 s); the same rule
/// without the timeout waits and gets v2's answer after 1.5 s, so the delay was real.
pub(super) async fn timeout(bed: &Bed) -> Outcome {
    let (c1, c2) = pair(bed)?;
    let v2 = subset(&c2.spec.version);
    let with_timeout = |routes: &[Route]| {
        routes.first().is_some_and(|r| {
            only_to(r, &v2)
                && matches!(&r.action, Action::Forward(f) if f.timeout == Some(RULE_TIMEOUT))
        })
    };
    let no_timeout = |routes: &[Route]| {
        routes.first().is_some_and(|r| {
            only_to(r, &v2) && matches!(&r.action, Action::Forward(f) if f.timeout.is_none())
        })
    };
    set_delay(c2, SLOW).await?;
    let judged = async {
        let took = apply_and_wait(bed, TIMEOUT, "the 0.5s timeout route", &with_timeout).await?;
        let cut = Seen::requests(c1, 5, &[]).await;
        let timed_out = cut.status(504) == 5
            && cut.bodies.iter().all(|b| b == "upstream request timeout")
            && cut.min() >= RULE_TIMEOUT
            && cut.max() < Duration::from_secs(1);
        let again = apply_and_wait(
            bed,
            &without_timeout(TIMEOUT),
            "the route without timeout",
            &no_timeout,
        )
        .await?;
        let waited = Seen::requests(c1, 1, &[]).await;
        let answered = waited.count(&c2.spec.version) == 1 && waited.min() >= SLOW;
        let detail = format!(
            "{} in {} slowed to {} ms; {}; sleep in {} with timeout 0.5s: {} (want 504 \"upstream request timeout\" x5 in 500-999 ms); \
             without the timeout ({} ms to the sidecars): {} (want {} after >= {} ms)",
            c2.spec.version,
            c2.spec.name,
            SLOW.as_millis(),
            in_sidecars(took),
            c1.spec.name,
            cut.summary(),
            again.as_millis(),
            waited.summary(),
            c2.spec.version,
            SLOW.as_millis(),
        );
        Ok((timed_out && answered, detail))
    };
    let outcome = with_restore(bed, judged).await;
    set_delay(c2, Duration::ZERO).await?;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The second half of the timeout step applies the seed-style rule minus its `timeout`,
    /// which in Istio means no route timeout at all; everything else stays.
    #[test]
    fn without_timeout_drops_only_the_timeout() {
        let stripped = without_timeout(TIMEOUT);
        assert!(TIMEOUT.contains("timeout: 0.5s"));
        assert!(!stripped.contains("timeout: 0.5s"));
        assert_eq!(stripped.lines().count() + 1, TIMEOUT.lines().count());
        assert!(stripped.contains("subset: v2"));
    }
}
