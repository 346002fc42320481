//! An EndpointSlice as the registry reads it: the service-name label, address type, port
//! names and numbers, and per endpoint its addresses, ready and terminating conditions, Pod
//! reference, node and hostname (`zone`, hints and `serving` are skipped).

use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSliceLite {
    #[serde(deserialize_with = "super::meta", default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub address_type: String,
    #[serde(default)]
    pub endpoints: Vec<EndpointLite>,
    pub ports: Option<Vec<EndpointPortLite>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointLite {
    #[serde(default)]
    pub addresses: Vec<String>,
    pub conditions: Option<ConditionsLite>,
    pub target_ref: Option<TargetRefLite>,
    pub node_name: Option<String>,
    pub hostname: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ConditionsLite {
    pub ready: Option<bool>,
    pub terminating: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct TargetRefLite {
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct EndpointPortLite {
    pub name: Option<String>,
    pub port: Option<i32>,
}

resource_as!(EndpointSliceLite, EndpointSlice);
