//! A Service as the registry reads it: labels, the node selector annotation, ports, cluster
//! IP, type, ExternalName target, externalIPs and LoadBalancer ingress (what the merged view
//! and the network gateways use; `selector`, session affinity and the rest are skipped).

use super::annotations::service_meta;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ServiceLite {
    #[serde(deserialize_with = "service_meta", default)]
    pub metadata: ObjectMeta,
    pub spec: Option<ServiceSpecLite>,
    pub status: Option<ServiceStatusLite>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpecLite {
    pub ports: Option<Vec<ServicePortLite>>,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub external_name: Option<String>,
    #[serde(rename = "externalIPs")]
    pub external_ips: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePortLite {
    pub name: Option<String>,
    #[serde(default)]
    pub port: i32,
    pub protocol: Option<String>,
    pub app_protocol: Option<String>,
    pub node_port: Option<i32>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatusLite {
    pub load_balancer: Option<LoadBalancerLite>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct LoadBalancerLite {
    pub ingress: Option<Vec<IngressLite>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct IngressLite {
    pub ip: Option<String>,
    pub hostname: Option<String>,
}

resource_as!(ServiceLite, Service);
