//! Gateway proxies: listeners from the Gateways that select them, routed by the
//! VirtualServices bound to those Gateways.

use super::*;

fn ingress(texts: &[&str]) -> Compiled {
    let resources = resources(texts);
    let registry = registry_with(&resources);
    let labels = [("istio".to_string(), "ingressgateway".to_string())].into();
    compile(&resources, &registry, &ProxyIdentity::gateway("istio-system", "ingress-1", labels))
}

fn istio_sample(path: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn istio_bookinfo_gateway_routes_its_paths_to_productpage() {
    let (gateway, routes) = (
        istio_sample("gateway/good/bookinfo-gateway.yaml"),
        istio_sample("virtual_service/good/bookinfo-ingress.yaml"),
    );
    let compiled = ingress(&[&gateway, &routes]);
    let tables = &compiled.tables;
    assert_eq!(tables.outbound.keys().copied().collect::<Vec<_>>(), [8080], "only the server's port");
    let listener = tables.listener(8080).unwrap();
    assert_eq!(listener.servers.len(), 1);
    let host = listener.virtual_host_for_authority("bookinfo.example.com").expect("`*` takes any host");
    let mut request = TestRequest::get("/productpage");
    request.authority = "bookinfo.example.com".into();
    let route = host.route_request(&request).expect("/productpage is routed");
    assert_eq!(forwards(route), vec![(cluster_name("productpage", "", 9080), 100)]);
    assert!(host.route_request(&TestRequest::get("/admin")).is_none(), "no route: the gateway answers 404");
    assert_eq!(endpoint_ips(cluster(tables, "productpage.default.svc.cluster.local", "", 9080)), ["10.1.0.10"]);
}

#[test]
fn a_gateway_ignores_routes_bound_to_mesh_and_gateways_that_do_not_select_it() {
    let gateway = istio_sample("gateway/good/bookinfo-gateway.yaml");
    let mesh_only = fixture!("reviews-80-20.yaml");
    let compiled = ingress(&[&gateway, mesh_only]);
    let listener = compiled.tables.listener(8080).unwrap();
    assert!(listener.virtual_hosts.is_empty(), "reviews' VirtualService is bound to mesh only");
    assert!(compiled.tables.listener(9080).is_none(), "a gateway has no per-service listeners");

    let other_pod =
        ProxyIdentity::gateway("istio-system", "egress-1", [("istio".into(), "egressgateway".into())].into());
    let resources = resources(&[&gateway]);
    let compiled = compile(&resources, &registry_with(&[]), &other_pod);
    assert!(compiled.tables.outbound.is_empty());
}

#[test]
fn server_hosts_admit_virtual_services_by_namespace_and_host() {
    let compiled = ingress(&[fixture!("gateway-routes.yaml")]);
    let tables = &compiled.tables;
    let https = tables.listener(443).unwrap();
    assert_eq!(https.protocol, crate::registry::Protocol::Http, "TLS is terminated, then routed as HTTP");
    assert_eq!(https.servers[0].tls.as_ref().map(|tls| tls.credential_name.as_str()), Some("httpbin-credential"));
    let httpbin = https.virtual_host_for_authority("httpbin.example.com").unwrap();
    assert_eq!(httpbin.http_routes.len(), 1, "only prod's VirtualService is admitted by prod/httpbin.example.com");
    assert_eq!(httpbin.http_routes[0].origin.resource.as_ref().unwrap().namespace, "prod");
    assert_eq!(
        forwards(&httpbin.http_routes[0]),
        vec![("outbound|8000||httpbin.prod.svc.cluster.local".to_string(), 100)]
    );

    let passthrough = tables.listener(8443).unwrap();
    assert_eq!(passthrough.protocol, crate::registry::Protocol::Tls);
    let secure = passthrough.virtual_host_for_authority("app.secure.example.com").unwrap();
    let destination = secure.route_connection("10.0.0.1".parse().unwrap(), Some("app.secure.example.com")).unwrap();
    assert_eq!(destination.clusters[0].cluster.to_string(), cluster_name("reviews", "", 9080));
}
