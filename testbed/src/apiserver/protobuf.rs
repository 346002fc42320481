//! Kubernetes protobuf request bodies, turned into the JSON the store keeps.
//!
//! client-go's generated clients always send built-in kinds as protobuf (`kubectl create
//! namespace|secret|token`, istioctl), with no fallback to JSON. This decodes the kinds those
//! commands create, from field tables checked against k8s-pb. A field the tables do not know
//! is refused with 415, never dropped.

use super::error::ApiError;
use base64::Engine;
use serde_json::{Map, Value};

pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\x00";

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    Bytes,
    Msg(&'static [Field]),
    Time,
    IntOrString,
}

#[derive(Clone, Copy)]
enum Card {
    One,
    Many,
    /// map<string, T>: entries are messages {key = 1, value = 2}.
    Map,
}

struct Field(u32, &'static str, Ty, Card);

use Card::*;
use Ty::*;

static OBJECT_META: &[Field] = &[
    Field(1, "name", Str, One),
    Field(2, "generateName", Str, One),
    Field(3, "namespace", Str, One),
    Field(4, "selfLink", Str, One),
    Field(5, "uid", Str, One),
    Field(6, "resourceVersion", Str, One),
    Field(7, "generation", Int, One),
    Field(8, "creationTimestamp", Time, One),
    Field(9, "deletionTimestamp", Time, One),
    Field(10, "deletionGracePeriodSeconds", Int, One),
    Field(11, "labels", Str, Map),
    Field(12, "annotations", Str, Map),
    Field(13, "ownerReferences", Msg(OWNER_REF), Many),
    Field(14, "finalizers", Str, Many),
];
static OWNER_REF: &[Field] = &[
    Field(1, "kind", Str, One),
    Field(3, "name", Str, One),
    Field(4, "uid", Str, One),
    Field(5, "apiVersion", Str, One),
    Field(6, "controller", Bool, One),
    Field(7, "blockOwnerDeletion", Bool, One),
];
static OBJECT_REF: &[Field] = &[
    Field(1, "kind", Str, One),
    Field(2, "namespace", Str, One),
    Field(3, "name", Str, One),
    Field(4, "uid", Str, One),
    Field(5, "apiVersion", Str, One),
    Field(6, "resourceVersion", Str, One),
    Field(7, "fieldPath", Str, One),
];
static LOCAL_REF: &[Field] = &[Field(1, "name", Str, One)];
static NAMESPACE: &[Field] = &[
    Field(1, "metadata", Msg(OBJECT_META), One),
    Field(2, "spec", Msg(&[Field(1, "finalizers", Str, Many)]), One),
    Field(3, "status", Msg(&[Field(1, "phase", Str, One)]), One),
];
static SECRET: &[Field] = &[
    Field(1, "metadata", Msg(OBJECT_META), One),
    Field(2, "data", Bytes, Map),
    Field(3, "type", Str, One),
    Field(4, "stringData", Str, Map),
    Field(5, "immutable", Bool, One),
];
static CONFIG_MAP: &[Field] = &[
    Field(1, "metadata", Msg(OBJECT_META), One),
    Field(2, "data", Str, Map),
    Field(3, "binaryData", Bytes, Map),
    Field(4, "immutable", Bool, One),
];
static SERVICE_ACCOUNT: &[Field] = &[
    Field(1, "metadata", Msg(OBJECT_META), One),
    Field(2, "secrets", Msg(OBJECT_REF), Many),
    Field(3, "imagePullSecrets", Msg(LOCAL_REF), Many),
    Field(4, "automountServiceAccountToken", Bool, One),
];
static SERVICE_PORT: &[Field] = &[
    Field(1, "name", Str, One),
    Field(2, "protocol", Str, One),
    Field(3, "port", Int, One),
    Field(4, "targetPort", IntOrString, One),
    Field(5, "nodePort", Int, One),
    Field(6, "appProtocol", Str, One),
];
static SERVICE_SPEC: &[Field] = &[
    Field(1, "ports", Msg(SERVICE_PORT), Many),
    Field(2, "selector", Str, Map),
    Field(3, "clusterIP", Str, One),
    Field(4, "type", Str, One),
    Field(5, "externalIPs", Str, Many),
    Field(7, "sessionAffinity", Str, One),
    Field(8, "loadBalancerIP", Str, One),
    Field(9, "loadBalancerSourceRanges", Str, Many),
    Field(10, "externalName", Str, One),
    Field(11, "externalTrafficPolicy", Str, One),
    Field(12, "healthCheckNodePort", Int, One),
    Field(13, "publishNotReadyAddresses", Bool, One),
    Field(17, "ipFamilyPolicy", Str, One),
    Field(18, "clusterIPs", Str, Many),
    Field(19, "ipFamilies", Str, Many),
    Field(20, "allocateLoadBalancerNodePorts", Bool, One),
    Field(21, "loadBalancerClass", Str, One),
    Field(22, "internalTrafficPolicy", Str, One),
    Field(23, "trafficDistribution", Str, One),
];
static LB_INGRESS: &[Field] = &[
    Field(1, "ip", Str, One),
    Field(2, "hostname", Str, One),
    Field(3, "ipMode", Str, One),
];
static SERVICE_STATUS: &[Field] = &[Field(
    1,
    "loadBalancer",
    Msg(&[Field(1, "ingress", Msg(LB_INGRESS), Many)]),
    One,
)];
static SERVICE: &[Field] = &[
    Field(1, "metadata", Msg(OBJECT_META), One),
    Field(2, "spec", Msg(SERVICE_SPEC), One),
    Field(3, "status", Msg(SERVICE_STATUS), One),
];
static TOKEN_REQUEST: &[Field] = &[
    Field(1, "metadata", Msg(OBJECT_META), One),
    Field(
        2,
        "spec",
        Msg(&[
            Field(1, "audiences", Str, Many),
            Field(
                3,
                "boundObjectRef",
                Msg(&[
                    Field(1, "kind", Str, One),
                    Field(2, "apiVersion", Str, One),
                    Field(3, "name", Str, One),
                    Field(4, "uid", Str, One),
                ]),
                One,
            ),
            Field(4, "expirationSeconds", Int, One),
        ]),
        One,
    ),
    Field(
        3,
        "status",
        Msg(&[
            Field(1, "token", Str, One),
            Field(2, "expirationTimestamp", Time, One),
        ]),
        One,
    ),
];
/// client-go's typed clients (istiod's among them) send TokenReviews as protobuf; only the
/// spec is read from a request.
static TOKEN_REVIEW: &[Field] = &[
    Field(1, "metadata", Msg(OBJECT_META), One),
    Field(
        2,
        "spec",
        Msg(&[
            Field(1, "token", Str, One),
            Field(2, "audiences", Str, Many),
        ]),
        One,
    ),
];
static POLICY_RULE: &[Field] = &[
    Field(1, "verbs", Str, Many),
    Field(2, "apiGroups", Str, Many),
    Field(3, "resources", Str, Many),
    Field(4, "resourceNames", Str, Many),
    Field(5, "nonResourceURLs", Str, Many),
];
static ROLE: &[Field] = &[
    Field(1, "metadata", Msg(OBJECT_META), One),
    Field(2, "rules", Msg(POLICY_RULE), Many),
];
static SUBJECT: &[Field] = &[
    Field(1, "kind", Str, One),
    Field(2, "apiGroup", Str, One),
    Field(3, "name", Str, One),
    Field(4, "namespace", Str, One),
];
static ROLE_REF: &[Field] = &[
    Field(1, "apiGroup", Str, One),
    Field(2, "kind", Str, One),
    Field(3, "name", Str, One),
];
static BINDING: &[Field] = &[
    Field(1, "metadata", Msg(OBJECT_META), One),
    Field(2, "subjects", Msg(SUBJECT), Many),
    Field(3, "roleRef", Msg(ROLE_REF), One),
];
static DELETE_OPTIONS: &[Field] = &[
    Field(1, "gracePeriodSeconds", Int, One),
    Field(
        2,
        "preconditions",
        Msg(&[
            Field(1, "uid", Str, One),
            Field(2, "resourceVersion", Str, One),
        ]),
        One,
    ),
    Field(3, "orphanDependents", Bool, One),
    Field(4, "propagationPolicy", Str, One),
    Field(5, "dryRun", Str, Many),
];

fn schema(kind: &str) -> Option<&'static [Field]> {
    Some(match kind {
        "Namespace" => NAMESPACE,
        "Secret" => SECRET,
        "ConfigMap" => CONFIG_MAP,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "Service" => SERVICE,
        "TokenRequest" => TOKEN_REQUEST,
        "TokenReview" => TOKEN_REVIEW,
        "Role" | "ClusterRole" => ROLE,
        "RoleBinding" | "ClusterRoleBinding" => BINDING,
        "DeleteOptions" => DELETE_OPTIONS,
        _ => return None,
    })
}

fn unsupported(msg: impl Into<String>) -> ApiError {
    ApiError::new(415, "UnsupportedMediaType", msg)
}

/// Decodes a `k8s\0`-prefixed runtime.Unknown envelope into the JSON object it carries.
pub fn to_json(body: &[u8]) -> Result<Value, ApiError> {
    let inner = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| ApiError::bad_request("protobuf body without the k8s magic prefix"))?;
    let envelope = decode(
        inner,
        &[
            Field(
                1,
                "typeMeta",
                Msg(&[Field(1, "apiVersion", Str, One), Field(2, "kind", Str, One)]),
                One,
            ),
            Field(2, "raw", Bytes, One),
            Field(3, "contentEncoding", Str, One),
            Field(4, "contentType", Str, One),
        ],
    )?;
    let api_version = envelope["typeMeta"]["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let kind = envelope["typeMeta"]["kind"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let fields = schema(&kind).ok_or_else(|| {
        unsupported(format!(
            "the test bed does not decode protobuf {kind}; send it as JSON (kubectl apply)"
        ))
    })?;
    let raw = envelope["raw"]
        .as_str()
        .map(b64_decode)
        .transpose()?
        .unwrap_or_default();
    let mut obj =
        decode(&raw, fields).map_err(|e| unsupported(format!("{kind}: {}", e.message)))?;
    obj.insert("apiVersion".into(), api_version.into());
    obj.insert("kind".into(), kind.into());
    Ok(Value::Object(obj))
}

fn b64_decode(s: &str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| ApiError::bad_request("bad bytes"))
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or_else(truncated)?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(ApiError::bad_request("protobuf varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ApiError> {
        if n > self.buf.len() {
            return Err(truncated());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
}

fn truncated() -> ApiError {
    ApiError::bad_request("truncated protobuf body")
}

/// One wire value: a varint or a length-delimited slice (the only wire types these kinds use).
enum Wire<'a> {
    Varint(u64),
    Len(&'a [u8]),
}

fn decode(buf: &[u8], fields: &[Field]) -> Result<Map<String, Value>, ApiError> {
    let mut r = Reader { buf };
    let mut out = Map::new();
    while !r.buf.is_empty() {
        let tag = r.varint()?;
        let (number, wire) = ((tag >> 3) as u32, tag & 7);
        let value = match wire {
            0 => Wire::Varint(r.varint()?),
            2 => {
                let n = usize::try_from(r.varint()?).map_err(|_| truncated())?;
                Wire::Len(r.take(n)?)
            }
            other => {
                return Err(unsupported(format!(
                    "protobuf wire type {other} in field {number}"
                )));
            }
        };
        let field = fields.iter().find(|f| f.0 == number).ok_or_else(|| {
            unsupported(format!(
                "protobuf field {number} is not supported by the test bed"
            ))
        })?;
        store(&mut out, field, value)?;
    }
    Ok(out)
}

fn store(out: &mut Map<String, Value>, f: &Field, wire: Wire) -> Result<(), ApiError> {
    match f.3 {
        One => {
            if let Some(v) = scalar(f.2, wire)? {
                out.insert(f.1.into(), v);
            }
        }
        Many => {
            let v = scalar(f.2, wire)?.unwrap_or(Value::Object(Map::new()));
            if let Some(a) = out
                .entry(f.1)
                .or_insert_with(|| Value::Array(Vec::new()))
                .as_array_mut()
            {
                a.push(v)
            }
        }
        Map => {
            let Wire::Len(entry) = wire else {
                return Err(unsupported(format!("{} is not a map entry", f.1)));
            };
            let entry = decode(
                entry,
                &[Field(1, "key", Str, One), Field(2, "value", f.2, One)],
            )?;
            let key = entry
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            // Map values keep empty strings: a Secret key with an empty value is still a key.
            let value = entry
                .get("value")
                .cloned()
                .unwrap_or_else(|| Value::String(String::new()));
            out.entry(f.1)
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .map(|m| m.insert(key, value));
        }
    }
    Ok(())
}

/// A field's JSON value; None for the zero values Go's JSON encoding omits.
fn scalar(ty: Ty, wire: Wire) -> Result<Option<Value>, ApiError> {
    let mismatch = || ApiError::bad_request("protobuf wire type does not match the field");
    Ok(match (ty, wire) {
        (Int, Wire::Varint(v)) => (v != 0).then(|| Value::from(v as i64)),
        (Bool, Wire::Varint(v)) => (v != 0).then_some(Value::Bool(true)),
        (Str, Wire::Len(b)) => {
            let s = std::str::from_utf8(b)
                .map_err(|_| ApiError::bad_request("protobuf string is not UTF-8"))?;
            (!s.is_empty()).then(|| Value::from(s))
        }
        (Bytes, Wire::Len(b)) => Some(Value::from(
            base64::engine::general_purpose::STANDARD.encode(b),
        )),
        (Msg(fields), Wire::Len(b)) => {
            let m = decode(b, fields)?;
            (!m.is_empty()).then_some(Value::Object(m))
        }
        (Time, Wire::Len(b)) => {
            let m = decode(
                b,
                &[Field(1, "seconds", Int, One), Field(2, "nanos", Int, One)],
            )?;
            let secs = m.get("seconds").and_then(Value::as_i64).unwrap_or(0);
            match secs {
                0 => None,
                s => time::OffsetDateTime::from_unix_timestamp(s)
                    .ok()
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .map(Value::from),
            }
        }
        (IntOrString, Wire::Len(b)) => {
            let m = decode(
                b,
                &[
                    Field(1, "type", Int, One),
                    Field(2, "intVal", Int, One),
                    Field(3, "strVal", Str, One),
                ],
            )?;
            if m.get("type").and_then(Value::as_i64) == Some(1) {
                Some(m.get("strVal").cloned().unwrap_or_else(|| Value::from("")))
            } else {
                Some(m.get("intVal").cloned().unwrap_or_else(|| Value::from(0)))
            }
        }
        _ => return Err(mismatch()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn ld(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(field << 3 | 2), out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }
    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut tm = Vec::new();
        ld(1, api_version.as_bytes(), &mut tm);
        ld(2, kind.as_bytes(), &mut tm);
        let mut body = MAGIC.to_vec();
        ld(1, &tm, &mut body);
        ld(2, raw, &mut body);
        ld(3, b"", &mut body);
        ld(4, b"", &mut body);
        body
    }

    #[test]
    fn secret_with_labels_bytes_and_empty_go_fields() {
        let mut meta = Vec::new();
        ld(1, b"cacerts", &mut meta);
        ld(2, b"", &mut meta); // Go writes empty optional strings.
        ld(3, b"istio-system", &mut meta);
        let mut label = Vec::new();
        ld(1, b"app", &mut label);
        ld(2, b"istio", &mut label);
        ld(11, &label, &mut meta);
        ld(8, b"", &mut meta); // zero creationTimestamp
        let mut raw = Vec::new();
        ld(1, &meta, &mut raw);
        let mut entry = Vec::new();
        ld(1, b"ca-cert.pem", &mut entry);
        ld(2, b"\x00\xffPEM", &mut entry);
        ld(2, &entry, &mut raw);
        ld(3, b"Opaque", &mut raw);
        let v = to_json(&envelope("v1", "Secret", &raw)).unwrap();
        assert_eq!(
            v,
            json!({
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "cacerts", "namespace": "istio-system", "labels": {"app": "istio"}},
                "data": {"ca-cert.pem": base64::engine::general_purpose::STANDARD.encode(b"\x00\xffPEM")},
            })
        );
    }

    #[test]
    fn token_request_token_review_and_service_ports() {
        let mut spec = Vec::new();
        ld(1, b"istio-ca", &mut spec);
        varint(4 << 3, &mut spec);
        varint(600, &mut spec);
        let mut raw = Vec::new();
        ld(2, &spec, &mut raw);
        let v = to_json(&envelope("authentication.k8s.io/v1", "TokenRequest", &raw)).unwrap();
        assert_eq!(
            v["spec"],
            json!({"audiences": ["istio-ca"], "expirationSeconds": 600})
        );

        let mut spec = Vec::new();
        ld(1, b"a.b.c", &mut spec);
        ld(2, b"istio-ca", &mut spec);
        let mut raw = Vec::new();
        ld(2, &spec, &mut raw);
        let v = to_json(&envelope("authentication.k8s.io/v1", "TokenReview", &raw)).unwrap();
        assert_eq!(
            v["spec"],
            json!({"token": "a.b.c", "audiences": ["istio-ca"]})
        );

        let mut target = Vec::new();
        varint(1 << 3, &mut target);
        varint(1, &mut target);
        ld(3, b"http", &mut target);
        let mut port = Vec::new();
        varint(3 << 3, &mut port);
        varint(5000, &mut port);
        ld(4, &target, &mut port);
        let mut spec = Vec::new();
        ld(1, &port, &mut spec);
        ld(4, b"ClusterIP", &mut spec);
        let mut raw = Vec::new();
        ld(2, &spec, &mut raw);
        let v = to_json(&envelope("v1", "Service", &raw)).unwrap();
        assert_eq!(
            v["spec"],
            json!({"ports": [{"port": 5000, "targetPort": "http"}], "type": "ClusterIP"})
        );
    }

    #[test]
    fn unknown_kinds_and_fields_are_refused_not_dropped() {
        let err = to_json(&envelope("v1", "Pod", b"")).unwrap_err();
        assert_eq!(err.code, 415);
        let mut raw = Vec::new();
        ld(99, b"x", &mut raw);
        let err = to_json(&envelope("v1", "Secret", &raw)).unwrap_err();
        assert!(err.message.contains("field 99"), "{}", err.message);
        assert_eq!(to_json(b"{}").unwrap_err().code, 400);
        let mut cut = envelope("v1", "Secret", b"");
        cut.truncate(cut.len() - 3);
        assert!(to_json(&cut).is_err());
    }
}
