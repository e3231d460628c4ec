//! Decoding of Kubernetes protobuf request bodies into JSON, for the built-in kinds kubectl sends as
//! protobuf (`kubectl create namespace|deployment|configmap|...`, `kubectl run`, `kubectl auth can-i`).
//! The field numbers are generated from Kubernetes' own `.proto` files (see `proto_schema.rs`).
//!
//! Like the API server's Go structs with `omitempty`, empty strings and zero timestamps decode to
//! absent fields.

use std::collections::HashMap;
use std::sync::OnceLock;

use base64::Engine;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::proto_schema::{MESSAGES, ROOTS};

/// One field of a message.
pub(crate) struct Field {
    pub tag: u32,
    pub json: &'static str,
    pub kind: Kind,
    pub repeated: bool,
    /// Embedded with `json:",inline"` in Go: its fields go on the parent.
    pub inline: bool,
}

/// How a field is encoded. (`Bytes` and `Double` appear only if the generator is given kinds with such fields.)
#[allow(dead_code)]
pub(crate) enum Kind {
    String,
    Bytes,
    Int32,
    Int64,
    Bool,
    Double,
    Message(&'static str),
    MapString,
    MapBytes,
    MapMessage(&'static str),
}

/// The magic prefix of a Kubernetes protobuf body.
const MAGIC: &[u8] = b"k8s\x00";

fn table() -> &'static HashMap<&'static str, &'static [Field]> {
    static TABLE: OnceLock<HashMap<&'static str, &'static [Field]>> = OnceLock::new();
    TABLE.get_or_init(|| MESSAGES.iter().map(|(name, fields)| (*name, *fields)).collect())
}

/// Decodes a `application/vnd.kubernetes.protobuf` body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or("the body does not start with the Kubernetes protobuf prefix")?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for item in Reader::new(envelope) {
        let (tag, value) = item?;
        match (tag, value) {
            (1, Wire::Bytes(type_meta)) => {
                for item in Reader::new(type_meta) {
                    match item? {
                        (1, Wire::Bytes(b)) => api_version = String::from_utf8_lossy(b).into_owned(),
                        (2, Wire::Bytes(b)) => kind = String::from_utf8_lossy(b).into_owned(),
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let (_, _, message) = ROOTS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
        .ok_or_else(|| format!("no protobuf decoding for {api_version}/{kind} in the testkit: send JSON"))?;
    let mut object = message_to_json(message, raw)?;
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(object)
}

fn message_to_json(name: &str, bytes: &[u8]) -> Result<Value, String> {
    match name.rsplit('.').next().unwrap_or("") {
        "Time" | "MicroTime" => {
            let (mut seconds, mut nanos) = (0i64, 0i64);
            for item in Reader::new(bytes) {
                match item? {
                    (1, Wire::Varint(v)) => seconds = v as i64,
                    (2, Wire::Varint(v)) => nanos = i64::from(v as i32),
                    _ => {}
                }
            }
            if seconds == 0 && nanos == 0 {
                return Ok(Value::Null);
            }
            let t = Timestamp::new(seconds, nanos as i32).map_err(|e| e.to_string())?;
            return Ok(json!(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()));
        }
        "IntOrString" => {
            let (mut kind, mut int, mut text) = (0u64, 0i64, String::new());
            for item in Reader::new(bytes) {
                match item? {
                    (1, Wire::Varint(v)) => kind = v,
                    (2, Wire::Varint(v)) => int = i64::from(v as i32),
                    (3, Wire::Bytes(b)) => text = String::from_utf8_lossy(b).into_owned(),
                    _ => {}
                }
            }
            return Ok(if kind == 1 { json!(text) } else { json!(int) });
        }
        "Quantity" => return first_string(bytes).map(Value::String),
        "RawExtension" | "FieldsV1" => {
            for item in Reader::new(bytes) {
                if let (1, Wire::Bytes(b)) = item? {
                    return Ok(serde_json::from_slice(b)
                        .unwrap_or_else(|_| json!(base64::engine::general_purpose::STANDARD.encode(b))));
                }
            }
            return Ok(Value::Null);
        }
        "Duration" => {
            for item in Reader::new(bytes) {
                if let (1, Wire::Varint(v)) = item? {
                    return Ok(json!(format!("{}s", (v as i64) / 1_000_000_000)));
                }
            }
            return Ok(json!("0s"));
        }
        "ExtraValue" => {
            let mut items = Vec::new();
            for item in Reader::new(bytes) {
                if let (1, Wire::Bytes(b)) = item? {
                    items.push(json!(String::from_utf8_lossy(b)));
                }
            }
            return Ok(Value::Array(items));
        }
        _ => {}
    }
    let fields = table()
        .get(name)
        .ok_or_else(|| format!("no protobuf schema for {name}"))?;
    let mut out = Map::new();
    for item in Reader::new(bytes) {
        let (tag, wire) = item?;
        let Some(field) = fields.iter().find(|f| f.tag == tag) else {
            continue;
        };
        let value = match (&field.kind, wire) {
            (Kind::String, Wire::Bytes(b)) => json!(String::from_utf8_lossy(b)),
            (Kind::Bytes, Wire::Bytes(b)) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
            (Kind::Int32, Wire::Varint(v)) => json!(v as i32),
            (Kind::Int64, Wire::Varint(v)) => json!(v as i64),
            (Kind::Bool, Wire::Varint(v)) => json!(v != 0),
            (Kind::Double, Wire::Fixed64(v)) => json!(f64::from_bits(v)),
            (Kind::Message(inner), Wire::Bytes(b)) => message_to_json(inner, b)?,
            (Kind::MapString | Kind::MapBytes | Kind::MapMessage(_), Wire::Bytes(entry)) => {
                let (mut key, mut value) = (String::new(), Value::Null);
                for item in Reader::new(entry) {
                    match (item?, &field.kind) {
                        ((1, Wire::Bytes(k)), _) => key = String::from_utf8_lossy(k).into_owned(),
                        ((2, Wire::Bytes(v)), Kind::MapString) => value = json!(String::from_utf8_lossy(v)),
                        ((2, Wire::Bytes(v)), Kind::MapBytes) => {
                            value = json!(base64::engine::general_purpose::STANDARD.encode(v))
                        }
                        ((2, Wire::Bytes(v)), Kind::MapMessage(inner)) => value = message_to_json(inner, v)?,
                        _ => {}
                    }
                }
                let map = out.entry(field.json).or_insert_with(|| json!({}));
                if let Some(m) = map.as_object_mut() {
                    m.insert(key, value);
                }
                continue;
            }
            _ => return Err(format!("{name}.{}: unexpected wire type", field.json)),
        };
        if field.inline {
            if let Value::Object(inner) = value {
                out.extend(inner);
            }
        } else if field.repeated {
            if let Some(list) = out.entry(field.json).or_insert_with(|| json!([])).as_array_mut() {
                list.push(value);
            }
        } else if !is_empty_scalar(&value) {
            out.insert(field.json.to_owned(), value);
        }
    }
    Ok(Value::Object(out))
}

/// What Go's `omitempty` leaves out: null, "", 0 and false. (A pointer field explicitly set to 0 or false,
/// such as `replicas: 0`, is lost too: the wire format does not say which fields are pointers.)
fn is_empty_scalar(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

fn first_string(bytes: &[u8]) -> Result<String, String> {
    for item in Reader::new(bytes) {
        if let (1, Wire::Bytes(b)) = item? {
            return Ok(String::from_utf8_lossy(b).into_owned());
        }
    }
    Ok(String::new())
}

enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32,
}

/// Iterates over the (field number, value) pairs of a protobuf message.
struct Reader<'a> {
    buf: &'a [u8],
    failed: bool,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, failed: false }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err("truncated field".into());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<(u32, Wire<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() || self.failed {
            return None;
        }
        let result = (|| {
            let key = self.varint()?;
            let tag = u32::try_from(key >> 3).map_err(|_| "field number too large")?;
            let wire = match key & 7 {
                0 => Wire::Varint(self.varint()?),
                1 => Wire::Fixed64(u64::from_le_bytes(
                    self.take(8)?.try_into().map_err(|_| "bad fixed64")?,
                )),
                2 => {
                    let len = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
                    Wire::Bytes(self.take(len)?)
                }
                5 => {
                    self.take(4)?;
                    Wire::Fixed32
                }
                other => return Err(format!("unsupported wire type {other}")),
            };
            Ok((tag, wire))
        })();
        if result.is_err() {
            self.failed = true;
        }
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(tag: u32, data: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(tag) << 3 | 2, out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut type_meta = Vec::new();
        bytes_field(1, api_version.as_bytes(), &mut type_meta);
        bytes_field(2, kind.as_bytes(), &mut type_meta);
        let mut out = MAGIC.to_vec();
        bytes_field(1, &type_meta, &mut out);
        bytes_field(2, raw, &mut out);
        out
    }

    #[test]
    fn a_namespace_with_labels_decodes_like_its_json() {
        let mut meta = Vec::new();
        bytes_field(1, b"team-a", &mut meta);
        bytes_field(2, b"", &mut meta); // empty generateName, as Go writes it
        let mut label = Vec::new();
        bytes_field(1, b"env", &mut label);
        bytes_field(2, b"prod", &mut label);
        bytes_field(11, &label, &mut meta);
        bytes_field(8, &[], &mut meta); // zero creationTimestamp
        let mut ns = Vec::new();
        bytes_field(1, &meta, &mut ns);
        bytes_field(2, &[], &mut ns);
        let object = decode(&envelope("v1", "Namespace", &ns)).unwrap();
        assert_eq!(
            object,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a", "labels": {"env": "prod"}}, "spec": {}})
        );
    }

    #[test]
    fn deployment_replicas_ports_and_quantities() {
        let mut port = Vec::new();
        varint(3 << 3, &mut port); // containerPort = 8080
        varint(8080, &mut port);
        let mut quantity = Vec::new();
        bytes_field(1, b"500m", &mut quantity);
        let mut limit = Vec::new();
        bytes_field(1, b"cpu", &mut limit);
        bytes_field(2, &quantity, &mut limit);
        let mut resources = Vec::new();
        bytes_field(1, &limit, &mut resources);
        let mut container = Vec::new();
        bytes_field(1, b"web", &mut container);
        bytes_field(2, b"nginx:1.27", &mut container);
        bytes_field(6, &port, &mut container);
        bytes_field(8, &resources, &mut container);
        let mut pod_spec = Vec::new();
        bytes_field(2, &container, &mut pod_spec);
        let mut template = Vec::new();
        bytes_field(2, &pod_spec, &mut template);
        let mut spec = Vec::new();
        varint(1 << 3, &mut spec);
        varint(3, &mut spec);
        bytes_field(3, &template, &mut spec);
        let mut meta = Vec::new();
        bytes_field(1, b"web", &mut meta);
        let mut deployment = Vec::new();
        bytes_field(1, &meta, &mut deployment);
        bytes_field(2, &spec, &mut deployment);
        let object = decode(&envelope("apps/v1", "Deployment", &deployment)).unwrap();
        assert_eq!(object["spec"]["replicas"], 3);
        let c = &object["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "nginx:1.27");
        assert_eq!(c["ports"], json!([{"containerPort": 8080}]));
        assert_eq!(c["resources"], json!({"limits": {"cpu": "500m"}}));
    }

    #[test]
    fn unknown_kinds_and_garbage_are_errors_not_panics() {
        assert!(
            decode(&envelope("example.com/v1", "Widget", &[]))
                .unwrap_err()
                .contains("send JSON")
        );
        assert!(decode(b"{}").is_err());
        let mut bad = MAGIC.to_vec();
        bad.extend_from_slice(&[0x0a, 0xff]);
        assert!(decode(&bad).is_err());
    }
}
