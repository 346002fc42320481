use super::*;
use serde_json::json;

fn from<K: DeserializeOwned>(v: serde_json::Value) -> K {
    serde_json::from_value(v).unwrap()
}

/// Istio (getPodLocality): the GA topology labels first, else the legacy
/// `failure-domain.beta.kubernetes.io/region|zone` labels older clusters still carry; the node's
/// ExternalIP addresses are kept for NodePort gateways (InternalIPs are not).
#[test]
fn nodes_read_legacy_failure_domain_labels_and_external_ips() {
    let node: NodeLite = from(json!({
        "metadata": {"name": "n1", "labels": {
            "failure-domain.beta.kubernetes.io/region": "old-region",
            "failure-domain.beta.kubernetes.io/zone": "old-zone",
            "topology.kubernetes.io/zone": "new-zone",
            "topology.istio.io/subzone": "rack1"
        }},
        "status": {"addresses": [
            {"type": "InternalIP", "address": "10.0.0.1"},
            {"type": "ExternalIP", "address": "203.0.113.1"}
        ]}
    }));
    let (name, info) = node.entry().unwrap();
    assert_eq!(name, "n1");
    assert_eq!(
        info.locality,
        Locality::new("old-region", "new-zone", "rack1")
    );
    assert_eq!(info.external_ips, ["203.0.113.1"]);
}

fn slice(address_type: &str, conditions: serde_json::Value) -> EndpointSliceLite {
    from(json!({
        "metadata": {"name": "hw-abc", "namespace": "sample",
            "labels": {"kubernetes.io/service-name": "helloworld"}},
        "addressType": address_type,
        "ports": [{"name": "http", "port": 5000}],
        "endpoints": [{"addresses": ["10.10.0.5"], "conditions": conditions}]
    }))
}

/// Istio (updateEndpointCacheForSlice): FQDN EndpointSlices are skipped, not read as
/// addresses; a terminating endpoint's condition is kept so it can be left out.
#[test]
fn fqdn_slices_are_skipped_and_terminating_is_read() {
    assert!(slice("FQDN", json!({"ready": true})).entry().is_none());
    let (_, info) = slice("IPv4", json!({"ready": false, "terminating": true}))
        .entry()
        .unwrap();
    assert!(info.endpoints[0].terminating && !info.endpoints[0].ready);
    let (_, info) = slice("IPv4", json!({})).entry().unwrap();
    assert!(!info.endpoints[0].terminating && info.endpoints[0].ready);
}

/// Istio (getNodeSelectorsForService): `traffic.istio.io/nodeSelector` is a JSON label map;
/// one that does not parse selects every node.
#[test]
fn the_node_selector_annotation_is_read() {
    let svc = |annotation: &str| -> ServiceLite {
        from(json!({
            "metadata": {"name": "gw", "namespace": "istio-system",
                "annotations": {"traffic.istio.io/nodeSelector": annotation}},
            "spec": {"type": "NodePort", "ports": [{"port": 15443, "nodePort": 31443}]}
        }))
    };
    let (_, info) = svc(r#"{"gateway": "yes"}"#).entry().unwrap();
    let want: BTreeMap<String, String> = [("gateway".to_string(), "yes".to_string())].into();
    assert_eq!(info.node_selector, Some(want));
    assert_eq!(info.ports[0].node_port, Some(31443));
    let (_, info) = svc("not json").entry().unwrap();
    assert_eq!(info.node_selector, Some(BTreeMap::new()));
}
