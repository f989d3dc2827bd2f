use super::*;
use crate::outlier::OutlierPolicy;
use common::api::networking::destination_rule::{ConsistentHashLb, MagLev, OutlierDetection};

/// Endpoints 10.0.0.1:80, 10.0.0.2:80, ... with these weights.
pub(crate) fn endpoints(weights: &[u32]) -> Vec<Arc<Endpoint>> {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            Arc::new(Endpoint::new(format!("10.0.{}.{}:80", i / 200, i % 200 + 1).parse().unwrap(), *w, None))
        })
        .collect()
}

/// Over 20000 keys: the share whose endpoint changed from `before` to `after`, and the share of
/// keys that moved although their endpoint is still in `after`'s set (the prefix of `all`
/// without its last endpoint).
pub(crate) fn moved_share(
    all: &[Arc<Endpoint>],
    before: impl Fn(u64) -> Option<usize>,
    after: impl Fn(u64) -> Option<usize>,
) -> (f64, f64) {
    let keys = 20_000;
    let (mut moved, mut of_survivors) = (0, 0);
    for k in 0..keys {
        let h = hash::hash_bytes(format!("user-{k}").as_bytes(), 0);
        let (b, a) = (before(h).unwrap(), after(h).unwrap());
        if b != a {
            moved += 1;
            if b < all.len() - 1 {
                of_survivors += 1;
            }
        }
    }
    (f64::from(moved) / f64::from(keys), f64::from(of_survivors) / f64::from(keys))
}

fn settings(simple: SimpleLb) -> LoadBalancerSettings {
    LoadBalancerSettings { simple: Some(simple), ..Default::default() }
}

fn pick(balancer: &Balancer, eligible: &Eligible<'_>) -> usize {
    balancer.pick(&PickContext::default(), eligible).index.unwrap()
}

fn eject(endpoint: &Endpoint, policy: &OutlierPolicy) {
    endpoint.state.health.eject(policy, crate::outlier::now());
}

#[test]
fn round_robin_honours_weights_and_the_default_is_least_request() {
    let eps = endpoints(&[2, 1]);
    let rr = Balancer::new(Some(&settings(SimpleLb::RoundRobin)), &eps);
    let all = Eligible::new(&eps, &[], None);
    let picks: Vec<usize> = (0..6).map(|_| pick(&rr, &all)).collect();
    assert_eq!(picks, [0, 1, 0, 0, 1, 0]);
    assert_eq!(Balancer::new(None, &eps).algorithm(), Algorithm::LeastRequest);
    let deprecated = Balancer::new(Some(&settings(SimpleLb::LeastConn)), &eps);
    assert_eq!(deprecated.algorithm(), Algorithm::LeastRequest);
}

#[test]
fn least_request_prefers_fewer_requests_in_flight_and_takes_turns_when_idle() {
    let eps = endpoints(&[1, 1, 1]);
    let lr = Balancer::new(None, &eps);
    let all = Eligible::new(&eps, &[], None);
    let idle: Vec<usize> = (0..6).map(|_| pick(&lr, &all)).collect();
    assert_eq!(idle, [0, 1, 2, 0, 1, 2], "ties go to the endpoint in turn");
    let _busy: Vec<_> = (0..5).map(|_| eps[0].start_request()).collect();
    let picks: Vec<usize> = (0..300).map(|_| pick(&lr, &all)).collect();
    assert!(!picks.contains(&0), "endpoint 0 with 5 in flight loses every comparison");
}

#[test]
fn random_spreads_within_tolerance() {
    let eps = endpoints(&[1; 4]);
    let random = Balancer::new(Some(&settings(SimpleLb::Random)), &eps);
    let all = Eligible::new(&eps, &[], None);
    let mut counts = [0u32; 4];
    for _ in 0..8000 {
        counts[pick(&random, &all)] += 1;
    }
    assert!(counts.iter().all(|c| (1700..2300).contains(c)), "{counts:?}");
}

#[test]
fn picks_skip_ejected_endpoints_unless_the_cluster_is_below_min_health() {
    let eps = endpoints(&[1; 4]);
    let policy = OutlierPolicy::new(&OutlierDetection { min_health_percent: Some(50), ..Default::default() });
    eject(&eps[1], &policy);
    for balancer in [
        Balancer::new(Some(&settings(SimpleLb::RoundRobin)), &eps),
        Balancer::new(None, &eps),
        Balancer::new(Some(&settings(SimpleLb::Random)), &eps),
    ] {
        let eligible = Eligible::new(&eps, &[], Some(&policy));
        assert!((0..100).all(|_| pick(&balancer, &eligible) != 1), "{:?}", balancer.algorithm());
    }
    eject(&eps[2], &policy);
    eject(&eps[3], &policy);
    let rr = Balancer::new(Some(&settings(SimpleLb::RoundRobin)), &eps);
    let eligible = Eligible::new(&eps, &[], Some(&policy));
    let picks: Vec<usize> = (0..4).map(|_| pick(&rr, &eligible)).collect();
    assert_eq!(picks, [0, 1, 2, 3], "1 of 4 healthy is below 50%: every endpoint takes traffic");
    let without = Eligible::new(&eps, &[], None);
    assert_eq!(pick(&rr, &without), 0, "no outlier detection in force: ejections are not looked at");
}

#[test]
fn every_endpoint_ejected_and_no_min_health_means_no_endpoint() {
    let eps = endpoints(&[1; 2]);
    let policy = OutlierPolicy::new(&OutlierDetection::default());
    eject(&eps[0], &policy);
    eject(&eps[1], &policy);
    let balancer = Balancer::new(None, &eps);
    assert_eq!(balancer.pick(&PickContext::default(), &Eligible::new(&eps, &[], Some(&policy))).index, None);
}

#[test]
fn retries_prefer_untried_endpoints_then_go_back_to_a_tried_one() {
    let eps = endpoints(&[1; 3]);
    let tried = [eps[0].address, eps[1].address];
    for balancer in [Balancer::new(None, &eps), Balancer::new(Some(&settings(SimpleLb::RoundRobin)), &eps)] {
        let eligible = Eligible::new(&eps, &tried, None);
        assert!((0..20).all(|_| pick(&balancer, &eligible) == 2));
    }
    let all_tried = [eps[0].address, eps[1].address, eps[2].address];
    let eligible = Eligible::new(&eps, &all_tried, None);
    assert!(Balancer::new(None, &eps).pick(&PickContext::default(), &eligible).index.is_some());
}

#[test]
fn a_consistent_hash_keeps_a_key_on_one_endpoint_and_walks_past_an_ejected_one() {
    let eps = endpoints(&[1; 5]);
    let header = |maglev: Option<MagLev>| LoadBalancerSettings {
        consistent_hash: Some(ConsistentHashLb {
            http_header_name: Some("x-user".into()),
            maglev,
            ..Default::default()
        }),
        ..Default::default()
    };
    let policy = OutlierPolicy::new(&OutlierDetection::default());
    for balancer in
        [Balancer::new(Some(&header(None)), &eps), Balancer::new(Some(&header(Some(MagLev::default()))), &eps)]
    {
        let request = http::Request::get("/").header("x-user", "alice").body(()).unwrap().into_parts().0;
        let ctx = PickContext { request: Some(&request), ..Default::default() };
        let eligible = Eligible::new(&eps, &[], Some(&policy));
        let first = balancer.pick(&ctx, &eligible).index.unwrap();
        assert!((0..1000).all(|_| balancer.pick(&ctx, &eligible).index == Some(first)));
        eject(&eps[first], &policy);
        let eligible = Eligible::new(&eps, &[], Some(&policy));
        let stand_in = balancer.pick(&ctx, &eligible).index.unwrap();
        assert_ne!(stand_in, first);
        assert!((0..100).all(|_| balancer.pick(&ctx, &eligible).index == Some(stand_in)));
        eps[first].state.health.take_back(u64::MAX);
    }
}

#[test]
fn passthrough_leaves_the_choice_to_the_original_destination() {
    let eps = endpoints(&[1; 2]);
    let balancer = Balancer::new(Some(&settings(SimpleLb::Passthrough)), &eps);
    assert_eq!(balancer.algorithm(), Algorithm::Passthrough);
    assert_eq!(balancer.pick(&PickContext::default(), &Eligible::new(&eps, &[], None)).index, None);
}
