//! The parts of Gateway API routes (`gateway.networking.k8s.io/v1` HTTPRoute, GRPCRoute, TLSRoute)
//! Bulkhead reads: their hostnames and what they match, for the tenant's hostname rules and the
//! collision check. Every other field is ignored when reading. These are views of another project's
//! kinds: Bulkhead never generates or installs their CRDs.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An HTTPRoute as Bulkhead reads it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    namespaced
)]
pub struct HTTPRouteSpec {
    /// The hostnames the route serves (none: every hostname of the listeners it attaches to).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Its rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<HTTPRouteRule>,
}

/// An HTTPRoute rule: what it matches.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct HTTPRouteRule {
    /// Its matches (none: every request).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HTTPRouteMatch>,
}

/// One HTTPRoute match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct HTTPRouteMatch {
    /// The path it matches (none: `/` as a prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HTTPPathMatch>,
}

/// An HTTPRoute path match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct HTTPPathMatch {
    /// `PathPrefix` (the default), `Exact` or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// The path (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A GRPCRoute as Bulkhead reads it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "GRPCRoute",
    namespaced
)]
pub struct GRPCRouteSpec {
    /// The hostnames the route serves (none: every hostname of the listeners it attaches to).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Its rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<GRPCRouteRule>,
}

/// A GRPCRoute rule: what it matches.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct GRPCRouteRule {
    /// Its matches (none: every request).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<GRPCRouteMatch>,
}

/// One GRPCRoute match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct GRPCRouteMatch {
    /// The gRPC method it matches (none: every method).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GRPCMethodMatch>,
}

/// A GRPCRoute method match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct GRPCMethodMatch {
    /// The service (`package.Service`); none: every service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The method; none: every method of the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A TLSRoute as Bulkhead reads it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "TLSRoute",
    namespaced
)]
pub struct TLSRouteSpec {
    /// The SNI names the route serves (none: every name of the listeners it attaches to).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
}

/// A GatewayClass as Bulkhead reads it: its name and labels (for `gatewayOptions.allowedClasses`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(group = "gateway.networking.k8s.io", version = "v1", kind = "GatewayClass")]
pub struct GatewayClassSpec {
    /// The controller that manages Gateways of this class.
    #[serde(default, rename = "controllerName", skip_serializing_if = "String::is_empty")]
    pub controller_name: String,
}

/// A DeviceClass (dynamic resource allocation, `resource.k8s.io/v1`) as Bulkhead reads it: its name
/// and labels (for `deviceClasses`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(group = "resource.k8s.io", version = "v1", kind = "DeviceClass")]
pub struct DeviceClassSpec {}
