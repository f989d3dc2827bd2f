use super::*;
use common::api::Duration as ApiDuration;

fn policy(settings: OutlierDetection) -> OutlierPolicy {
    OutlierPolicy::new(&settings)
}

fn count(policy: &OutlierPolicy, health: &EndpointHealth, outcomes: &[Outcome]) -> Vec<Option<Trip>> {
    outcomes.iter().map(|o| policy.record(health, *o, 1)).collect()
}

#[test]
fn five_5xx_in_a_row_trip_and_a_success_starts_over() {
    let p = policy(OutlierDetection { consecutive_5xx_errors: Some(5), ..Default::default() });
    let health = EndpointHealth::default();
    let trips = count(&p, &health, &[Outcome::Response(500); 4]);
    assert!(trips.iter().all(Option::is_none));
    assert_eq!(p.record(&health, Outcome::Response(200), 1), None, "a success resets the run");
    let trips = count(&p, &health, &[Outcome::Response(500); 5]);
    assert_eq!(trips[4], Some(Trip { kind: TripKind::Consecutive5xx, count: 5 }));
}

#[test]
fn gateway_errors_are_502_503_504_and_a_500_breaks_their_run() {
    let p = policy(OutlierDetection {
        consecutive_gateway_errors: Some(3),
        consecutive_5xx_errors: Some(0),
        ..Default::default()
    });
    let health = EndpointHealth::default();
    let trips = count(&p, &health, &[Outcome::Response(502), Outcome::Response(503), Outcome::Response(500)]);
    assert!(trips.iter().all(Option::is_none), "500 is not a gateway error: {trips:?}");
    let trips = count(&p, &health, &[Outcome::Response(502), Outcome::Response(504), Outcome::Response(503)]);
    assert_eq!(trips[2], Some(Trip { kind: TripKind::ConsecutiveGateway, count: 3 }));
    let trips = count(&p, &health, &[Outcome::Response(500); 10]);
    assert!(trips.iter().all(Option::is_none), "the 5xx check is off with 0");
}

#[test]
fn deprecated_consecutive_errors_counts_gateway_errors_only() {
    let p = policy(OutlierDetection { consecutive_errors: Some(2), ..Default::default() });
    assert_eq!((p.consecutive_gateway, p.consecutive_5xx), (Some(2), None));
}

#[test]
fn local_failures_count_as_gateway_errors_unless_split() {
    let joined = policy(OutlierDetection { consecutive_gateway_errors: Some(2), ..Default::default() });
    let health = EndpointHealth::default();
    let trips = count(&joined, &health, &[Outcome::ConnectFailure, Outcome::Timeout]);
    assert_eq!(trips[1].map(|t| t.kind), Some(TripKind::ConsecutiveGateway));

    let split = policy(OutlierDetection {
        split_external_local_origin_errors: Some(true),
        consecutive_local_origin_failures: Some(3),
        consecutive_gateway_errors: Some(2),
        ..Default::default()
    });
    let health = EndpointHealth::default();
    let trips = count(&split, &health, &[Outcome::ConnectFailure, Outcome::Reset]);
    assert!(trips.iter().all(Option::is_none), "local failures no longer count as gateway errors");
    assert_eq!(split.record(&health, Outcome::Timeout, 1).map(|t| t.kind), Some(TripKind::ConsecutiveLocalOrigin));
    let trips = count(&split, &health, &[Outcome::Response(503), Outcome::Response(503)]);
    assert_eq!(trips[1].map(|t| t.kind), Some(TripKind::ConsecutiveGateway), "answers are counted on their own");
    let health = EndpointHealth::default();
    count(&split, &health, &[Outcome::ConnectFailure, Outcome::ConnectFailure, Outcome::Response(200)]);
    assert_eq!(split.record(&health, Outcome::ConnectFailure, 1), None, "an answer resets the local run");
}

#[test]
fn each_ejection_lasts_longer_and_the_multiplier_decays_while_healthy() {
    let p = policy(OutlierDetection {
        base_ejection_time: Some(ApiDuration::from_millis(1000)),
        interval: Some(ApiDuration::from_millis(100)),
        ..Default::default()
    });
    let health = EndpointHealth::default();
    let until = health.eject(&p, 10);
    assert_eq!(until, 1010);
    assert!(health.is_ejected(1009) && !health.is_ejected(1010));
    assert_eq!(p.record(&health, Outcome::Response(500), 500), None, "outcomes while ejected are ignored");
    assert!(health.take_back(1010) && !health.take_back(1010), "one caller takes it back");
    assert_eq!(health.eject(&p, 1050), 1050 + 2000, "second ejection: twice the base");
    // 3050 + 3 intervals healthy: the multiplier decays from 2 to 0, so the next is 1x again.
    assert_eq!(health.eject(&p, 3050 + 300), 3350 + 1000);
    assert_eq!(health.view(3351).ejections, 3);
    assert_eq!(p.ejection_time(1000), MAX_EJECTION_TIME);
}

#[test]
fn limits_follow_istio_defaults() {
    let p = policy(OutlierDetection::default());
    assert_eq!((p.consecutive_5xx, p.consecutive_gateway, p.consecutive_local_origin), (Some(5), None, None));
    assert_eq!(p.max_ejected(5), 1, "10% of 5 rounds down, but one may always be ejected");
    assert_eq!(p.max_ejected(30), 3);
    let none = policy(OutlierDetection { max_ejection_percent: Some(0), ..Default::default() });
    assert_eq!(none.max_ejected(10), 0);
    let min = policy(OutlierDetection { min_health_percent: Some(50), ..Default::default() });
    assert!(min.below_min_health(1, 3) && !min.below_min_health(2, 4));
    assert!(!p.below_min_health(0, 3), "0% (the default) never stops ejections");
}
