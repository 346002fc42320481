use super::*;
use crate::sidecar::OutlierPolicy;
use meshfed_model::Locality;
use std::time::Duration;

fn host(addr: &str, priority: u32, region: &str, locality_weight: u32, weight: u32) -> Host {
    Host {
        addr: addr.parse().unwrap(),
        priority,
        locality: Locality::new(region, "zone1", ""),
        locality_weight,
        weight,
        healthy: true,
        tls: true,
    }
}

fn upstream(endpoints: Vec<Host>, locality_weighted: bool, outlier: bool) -> Upstream {
    Upstream {
        connect_timeout: Duration::from_secs(1),
        locality_weighted,
        outlier: outlier.then_some(OutlierPolicy {
            consecutive_failures: 2,
            base_ejection: Duration::from_secs(60),
        }),
        tls: None,
        limits: Default::default(),
        endpoints,
    }
}

fn counts(b: &mut Balancer, up: &Upstream, n: usize, now: Instant) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let h = b.pick("c", up, &[], now).expect("a host");
        *out.entry(h.addr.to_string()).or_default() += 1;
    }
    out
}

const V1: &str = "10.1.0.5:5000";
const GW2: &str = "172.31.0.12:15443";

#[test]
fn locality_weights_split_exactly_eighty_twenty() {
    let up = upstream(
        vec![
            host(V1, 0, "region1", 80, 1),
            host(GW2, 0, "region2", 20, 1),
        ],
        true,
        false,
    );
    let mut b = Balancer::default();
    let got = counts(&mut b, &up, 100, Instant::now());
    assert_eq!(got[V1], 80);
    assert_eq!(got[GW2], 20);
}

#[test]
fn without_locality_weights_hosts_share_by_their_own_weight() {
    // A gateway standing for two endpoints gets twice a local pod's share.
    let up = upstream(
        vec![host(V1, 0, "region1", 1, 1), host(GW2, 0, "region2", 2, 2)],
        false,
        false,
    );
    let got = counts(&mut Balancer::default(), &up, 30, Instant::now());
    assert_eq!((got[V1], got[GW2]), (10, 20));
}

#[test]
fn the_lowest_priority_with_a_usable_host_wins() {
    let mut up = upstream(
        vec![host(V1, 0, "region1", 1, 1), host(GW2, 1, "region2", 1, 1)],
        false,
        true,
    );
    let now = Instant::now();
    let mut b = Balancer::default();
    assert_eq!(counts(&mut b, &up, 5, now)[V1], 5);
    // Excluded (already tried for this request): the next priority.
    let v1 = V1.parse().unwrap();
    assert_eq!(b.pick("c", &up, &[v1], now).unwrap().addr.to_string(), GW2);
    // Not ready: the next priority.
    up.endpoints[0].healthy = false;
    assert_eq!(counts(&mut b, &up, 5, now)[GW2], 5);
}

#[test]
fn consecutive_failures_eject_for_the_base_time_times_ejections() {
    let up = upstream(
        vec![host(V1, 0, "region1", 1, 1), host(GW2, 1, "region2", 1, 1)],
        false,
        true,
    );
    let v1 = V1.parse().unwrap();
    let t0 = Instant::now();
    let mut b = Balancer::default();
    assert!(!b.failed("c", &up, v1, t0), "one failure of two");
    b.succeeded("c", v1);
    assert!(!b.failed("c", &up, v1, t0), "a success resets the count");
    assert!(b.failed("c", &up, v1, t0));
    assert_eq!(b.ejected("c", t0), [v1]);
    assert_eq!(b.pick("c", &up, &[], t0).unwrap().addr.to_string(), GW2);
    // Back after 60 s; a second ejection lasts 120 s.
    let t1 = t0 + Duration::from_secs(61);
    assert_eq!(b.pick("c", &up, &[], t1).unwrap().addr.to_string(), V1);
    b.failed("c", &up, v1, t1);
    assert!(b.failed("c", &up, v1, t1));
    assert!(b.is_ejected("c", v1, t1 + Duration::from_secs(119)));
    assert!(!b.is_ejected("c", v1, t1 + Duration::from_secs(121)));
}

#[test]
fn no_outlier_detection_means_no_ejection_and_all_ejected_means_panic() {
    let v1 = V1.parse().unwrap();
    let now = Instant::now();
    let plain = upstream(vec![host(V1, 0, "region1", 1, 1)], false, false);
    let mut b = Balancer::default();
    for _ in 0..10 {
        assert!(!b.failed("c", &plain, v1, now));
    }
    let single = upstream(vec![host(V1, 0, "region1", 1, 1)], false, true);
    b.failed("c", &single, v1, now);
    assert!(b.failed("c", &single, v1, now));
    assert_eq!(
        b.pick("c", &single, &[], now).unwrap().addr,
        v1,
        "panic mode"
    );
}

#[test]
fn hosts_that_turn_unhealthy_or_vanish_forget_their_ejection() {
    let mut up = upstream(vec![host(V1, 0, "region1", 1, 1)], false, true);
    let v1 = V1.parse().unwrap();
    let now = Instant::now();
    let mut b = Balancer::default();
    b.failed("c", &up, v1, now);
    b.failed("c", &up, v1, now);
    let mut table = BTreeMap::from([("c".to_string(), up.clone())]);
    b.sync(&table);
    assert!(b.is_ejected("c", v1, now), "still listed healthy: kept");
    up.endpoints[0].healthy = false;
    table.insert("c".into(), up);
    b.sync(&table);
    assert!(!b.is_ejected("c", v1, now));
}
