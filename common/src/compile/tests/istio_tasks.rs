//! Istio's Bookinfo tasks replayed step by step with their YAML (written out in
//! `tests/fixtures`): each step must give the routing the task describes.

use super::*;

macro_rules! doc_fixture {
    ($path:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/", $path))
    };
}

const DESTINATION_RULES: &str = doc_fixture!("destination_rule/bookinfo-all.yaml");
const ALL_V1: &str = doc_fixture!("virtual_service/good/all-v1.yaml");

/// The reviews clusters a request of `user` (no `end-user` header for `None`) may reach.
fn reviews_for(compiled: &Compiled, user: Option<&str>) -> Vec<(String, u32)> {
    let mut request = TestRequest::get("/reviews/0");
    if let Some(user) = user {
        request = request.header("end-user", user);
    }
    forwards(route_of(&compiled.tables, 9080, "reviews:9080", &request))
}

fn reviews(subset: &str) -> String {
    cluster_name("reviews", subset, 9080)
}

/// The task's later step replaces the `reviews` VirtualService: the newer text wins as it does
/// after `kubectl apply`, because it is the same object.
fn step(texts: &[&str]) -> Compiled {
    let compiled = compile_for_productpage(texts);
    let conflicts = diagnostics_of(&compiled, DiagnosticCode::HostConflict);
    assert!(conflicts.is_empty(), "one VirtualService per host in every step: {conflicts:?}");
    compiled
}

/// "Request routing": everything to v1, then the user jason to v2.
#[test]
fn request_routing_task_sends_jason_to_v2_and_everyone_else_to_v1() {
    let all_v1 = step(&[DESTINATION_RULES, ALL_V1]);
    for user in [None, Some("jason")] {
        assert_eq!(reviews_for(&all_v1, user), [(reviews("v1"), 100)], "{user:?}");
    }

    let without_reviews: String =
        ALL_V1.split("---").filter(|doc| !doc.contains("name: reviews")).collect::<Vec<_>>().join("---");
    let test_v2 =
        step(&[DESTINATION_RULES, &without_reviews, doc_fixture!("virtual_service/good/reviews-jason-v2.yaml")]);
    assert_eq!(reviews_for(&test_v2, Some("jason")), [(reviews("v2"), 100)]);
    assert_eq!(reviews_for(&test_v2, Some("Jason")), [(reviews("v1"), 100)], "exact matches are case-sensitive");
    assert_eq!(reviews_for(&test_v2, None), [(reviews("v1"), 100)]);
    let ratings = route_of(&test_v2.tables, 9080, "ratings", &TestRequest::get("/ratings/0"));
    assert_eq!(forwards(ratings), [(cluster_name("ratings", "v1", 9080), 100)], "other services keep v1");
}

/// "Traffic shifting": 50% to v3, then all of it.
#[test]
fn traffic_shifting_task_moves_reviews_to_v3_in_two_steps() {
    let half = step(&[DESTINATION_RULES, doc_fixture!("virtual_service/good/reviews-50-v3.yaml")]);
    assert_eq!(reviews_for(&half, None), [(reviews("v1"), 50), (reviews("v3"), 50)]);
    let v3 = cluster(&half.tables, REVIEWS, "v3", 9080);
    assert_eq!(endpoint_ips(v3).len(), 1, "the v3 subset selects the v3 pod only");

    let all_v3 = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts:\n  \
                  - reviews\n  http:\n  - route:\n    - destination:\n        host: reviews\n        subset: v3\n";
    let full = step(&[DESTINATION_RULES, all_v3]);
    assert_eq!(reviews_for(&full, Some("jason")), [(reviews("v3"), 100)]);
}

/// Weighted splits are per request, so the 80/20 of the canary task keeps both destinations.
#[test]
fn canary_split_keeps_weights_in_the_order_written() {
    let compiled = step(&[DESTINATION_RULES, doc_fixture!("virtual_service/good/reviews-80-20.yaml")]);
    assert_eq!(reviews_for(&compiled, None), [(reviews("v1"), 80), (reviews("v2"), 20)]);
}
