//! Envoy's API schema, read from the protobuf descriptor set the envoy-types crate ships
//! (`src/generated/types.bin`: Envoy's data-plane-api protos, which meshfed's xDS types are
//! generated from), so YAML written for Envoy can be checked as Envoy's loader reads it: YAML is
//! turned into proto3 JSON, and the JSON parser refuses a key that is not a field of its message
//! (by proto or JSON name), an enum value that is not one of its names, a `typed_config` whose
//! `@type` is no message Envoy knows, and a value of the wrong JSON kind. Resources meshfed
//! serves are checked in their wire form ([`Schema::check_wire`]): every field number one of
//! its message's, every `Any` a message Envoy knows, strings UTF-8. Only the parts of
//! protobuf's wire format a descriptor set and those resources use are decoded here.

use serde_yaml::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The JSON kind a scalar field takes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scalar {
    String,
    Bool,
    Number,
}

#[derive(Debug, Clone)]
enum Kind {
    Message(String),
    Enum(String),
    Scalar(Scalar),
}

#[derive(Debug, Clone)]
struct Field {
    repeated: bool,
    kind: Kind,
    name: String,
}

#[derive(Debug, Default)]
struct Message {
    /// By proto name and by JSON name (Envoy takes both).
    fields: HashMap<String, Field>,
    /// By field number (the wire form).
    numbers: HashMap<u64, Field>,
    map_entry: bool,
}

/// Every message and enum of Envoy's API (and what it imports), by full name.
pub struct Schema {
    messages: HashMap<String, Message>,
    enums: HashMap<String, BTreeSet<String>>,
}

/// One field of a protobuf message on the wire.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(b: &[u8], at: &mut usize) -> u64 {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let byte = b[*at];
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return v;
        }
        shift += 7;
    }
}

/// The fields of one encoded message, in order.
fn decode(b: &[u8]) -> Vec<(u64, Wire<'_>)> {
    let (mut out, mut at) = (Vec::new(), 0);
    while at < b.len() {
        let key = varint(b, &mut at);
        let wire = match key & 7 {
            0 => Wire::Varint(varint(b, &mut at)),
            1 | 5 => {
                at += if key & 7 == 1 { 8 } else { 4 };
                Wire::Fixed
            }
            2 => {
                let len = varint(b, &mut at) as usize;
                at += len;
                Wire::Bytes(&b[at - len..at])
            }
            other => panic!("descriptor set: wire type {other}"),
        };
        out.push((key >> 3, wire));
    }
    out
}

fn text(w: &Wire) -> String {
    match w {
        Wire::Bytes(b) => String::from_utf8(b.to_vec()).unwrap(),
        _ => panic!("descriptor set: a string field is not length-delimited"),
    }
}

fn bytes<'a>(w: &Wire<'a>) -> &'a [u8] {
    match w {
        Wire::Bytes(b) => b,
        _ => panic!("descriptor set: a message field is not length-delimited"),
    }
}

fn number(w: &Wire) -> u64 {
    match w {
        Wire::Varint(v) => *v,
        _ => panic!("descriptor set: an enum field is not a varint"),
    }
}

/// FieldDescriptorProto: name 1, number 3, label 4, type 5, type_name 6, json_name 10.
fn field(b: &[u8]) -> (String, Option<String>, u64, Field) {
    let (mut name, mut json, mut label, mut ty, mut type_name) =
        (String::new(), None, 0, 0, String::new());
    let mut tag = 0;
    for (n, w) in decode(b) {
        match n {
            1 => name = text(&w),
            3 => tag = number(&w),
            4 => label = number(&w),
            5 => ty = number(&w),
            6 => type_name = text(&w).trim_start_matches('.').to_string(),
            10 => json = Some(text(&w)),
            _ => {}
        }
    }
    let kind = match ty {
        11 | 10 => Kind::Message(type_name),
        14 => Kind::Enum(type_name),
        8 => Kind::Scalar(Scalar::Bool),
        9 | 12 => Kind::Scalar(Scalar::String),
        _ => Kind::Scalar(Scalar::Number),
    };
    let repeated = label == 3;
    let f = Field {
        repeated,
        kind,
        name: name.clone(),
    };
    (name, json, tag, f)
}

impl Schema {
    /// The descriptor set of the envoy-types this workspace builds with.
    pub fn envoy() -> Schema {
        let path = envoy_types_dir().join("src/generated/types.bin");
        let set = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut schema = Schema {
            messages: HashMap::new(),
            enums: HashMap::new(),
        };
        // FileDescriptorSet: file 1. FileDescriptorProto: package 2, message_type 4, enum_type 5.
        for (n, file) in decode(&set) {
            assert_eq!(n, 1, "a FileDescriptorSet has only files");
            let fields = decode(bytes(&file));
            let package = fields
                .iter()
                .find(|(n, _)| *n == 2)
                .map(|(_, w)| text(w))
                .unwrap_or_default();
            for (n, w) in &fields {
                match n {
                    4 => schema.add_message(&package, bytes(w)),
                    5 => schema.add_enum(&package, bytes(w)),
                    _ => {}
                }
            }
        }
        schema
    }

    /// DescriptorProto: name 1, field 2, nested_type 3, enum_type 4, options 7 (map_entry 7).
    fn add_message(&mut self, scope: &str, b: &[u8]) {
        let fields = decode(b);
        let name = fields.iter().find(|(n, _)| *n == 1).map(|(_, w)| text(w));
        let full = format!("{scope}.{}", name.unwrap());
        let mut message = Message::default();
        for (n, w) in &fields {
            match n {
                2 => {
                    let (name, json, tag, f) = field(bytes(w));
                    message.numbers.insert(tag, f.clone());
                    if let Some(json) = json {
                        message.fields.insert(json, f.clone());
                    }
                    message.fields.insert(name, f);
                }
                3 => self.add_message(&full, bytes(w)),
                4 => self.add_enum(&full, bytes(w)),
                7 => {
                    message.map_entry = decode(bytes(w))
                        .iter()
                        .any(|(n, w)| *n == 7 && number(w) == 1)
                }
                _ => {}
            }
        }
        self.messages.insert(full, message);
    }

    /// EnumDescriptorProto: name 1, value 2 (EnumValueDescriptorProto: name 1).
    fn add_enum(&mut self, scope: &str, b: &[u8]) {
        let fields = decode(b);
        let name = fields.iter().find(|(n, _)| *n == 1).map(|(_, w)| text(w));
        let values = fields
            .iter()
            .filter(|(n, _)| *n == 2)
            .filter_map(|(_, w)| {
                decode(bytes(w))
                    .iter()
                    .find(|(n, _)| *n == 1)
                    .map(|(_, w)| text(w))
            })
            .collect();
        self.enums
            .insert(format!("{scope}.{}", name.unwrap()), values);
    }

    pub fn has_message(&self, full_name: &str) -> bool {
        self.messages.contains_key(full_name)
    }

    /// What Envoy would refuse in `bytes` decoded as the message `full_name` (a resource as
    /// xDS sends it), one line each with the path to it: a field number the message does not
    /// have, a message field that is not length-delimited, a string that is not UTF-8, an
    /// `Any` whose type is no message Envoy knows (its value checked as that message).
    pub fn check_wire(&self, full_name: &str, bytes: &[u8]) -> Vec<String> {
        let mut errors = Vec::new();
        self.wire_message(full_name, bytes, full_name, &mut errors);
        errors
    }

    fn wire_message(&self, name: &str, b: &[u8], path: &str, errors: &mut Vec<String>) {
        if name == "google.protobuf.Any" {
            return self.wire_any(b, path, errors);
        }
        let Some(message) = self.messages.get(name) else {
            return errors.push(format!("{path}: no message {name} in Envoy's API"));
        };
        for (n, w) in decode(b) {
            let Some(f) = message.numbers.get(&n) else {
                errors.push(format!("{path}: {name} has no field number {n}"));
                continue;
            };
            let at = format!("{path}.{}", f.name);
            match (&f.kind, &w) {
                (Kind::Message(m), Wire::Bytes(inner)) => self.wire_message(m, inner, &at, errors),
                (Kind::Message(_), _) => errors.push(format!("{at}: a message on the wire")),
                (Kind::Scalar(Scalar::String), Wire::Bytes(t))
                    if std::str::from_utf8(t).is_err() =>
                {
                    errors.push(format!("{at}: not UTF-8"))
                }
                _ => {}
            }
        }
    }

    /// Any: type_url 1, value 2.
    fn wire_any(&self, b: &[u8], path: &str, errors: &mut Vec<String>) {
        let fields = decode(b);
        let url = fields.iter().find(|(n, _)| *n == 1).map(|(_, w)| text(w));
        let value = fields.iter().find(|(n, _)| *n == 2).map(|(_, w)| bytes(w));
        let Some(name) = url
            .as_deref()
            .and_then(|u| u.strip_prefix("type.googleapis.com/"))
        else {
            return errors.push(format!("{path}: Any type_url {url:?}"));
        };
        self.wire_message(
            name,
            value.unwrap_or_default(),
            &format!("{path}<{name}>"),
            errors,
        );
    }

    /// What Envoy's loader would refuse in `v` read as the message `full_name`, one line each
    /// with the path to it; empty when it would take it.
    pub fn check(&self, full_name: &str, v: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.message(full_name, v, full_name, &mut errors);
        errors
    }

    fn message(&self, name: &str, v: &Value, path: &str, errors: &mut Vec<String>) {
        if self.well_known(name, v, path, errors) {
            return;
        }
        let Some(message) = self.messages.get(name) else {
            return errors.push(format!("{path}: no message {name} in Envoy's API"));
        };
        let Value::Mapping(m) = v else {
            return errors.push(format!("{path}: {name} must be a mapping, not {v:?}"));
        };
        for (key, value) in m {
            let key = key.as_str().unwrap_or_default();
            let at = format!("{path}.{key}");
            match message.fields.get(key) {
                None => errors.push(format!("{at}: {name} has no field {key:?}")),
                Some(f) => self.field(f, value, &at, errors),
            }
        }
    }

    fn field(&self, f: &Field, v: &Value, path: &str, errors: &mut Vec<String>) {
        let entry = match &f.kind {
            Kind::Message(m) => self.messages.get(m).filter(|m| m.map_entry),
            _ => None,
        };
        if let Some(entry) = entry {
            let Value::Mapping(m) = v else {
                return errors.push(format!("{path}: a map must be a mapping"));
            };
            let value = &entry.fields["value"];
            for (k, item) in m {
                self.single(&value.kind, item, &format!("{path}[{k:?}]"), errors);
            }
        } else if f.repeated {
            let Value::Sequence(items) = v else {
                return errors.push(format!("{path}: a repeated field must be a sequence"));
            };
            for (i, item) in items.iter().enumerate() {
                self.single(&f.kind, item, &format!("{path}[{i}]"), errors);
            }
        } else {
            self.single(&f.kind, v, path, errors);
        }
    }

    fn single(&self, kind: &Kind, v: &Value, path: &str, errors: &mut Vec<String>) {
        match kind {
            Kind::Message(m) => self.message(m, v, path, errors),
            Kind::Enum(e) => {
                let known = match v {
                    Value::String(s) => self.enums[e].contains(s),
                    Value::Number(n) => n.is_i64(),
                    _ => false,
                };
                if !known {
                    errors.push(format!("{path}: {v:?} is not a value of {e}"));
                }
            }
            Kind::Scalar(s) => scalar(*s, v, path, errors),
        }
    }

    /// The well-known types with their own JSON form; false for any other message.
    fn well_known(&self, name: &str, v: &Value, path: &str, errors: &mut Vec<String>) -> bool {
        let Some(short) = name.strip_prefix("google.protobuf.") else {
            return false;
        };
        match short {
            "Any" => self.any(v, path, errors),
            "Struct" if !v.is_mapping() => errors.push(format!("{path}: a Struct is a mapping")),
            "Struct" | "Value" => {}
            "ListValue" if !v.is_sequence() => errors.push(format!("{path}: a list")),
            "ListValue" => {}
            "Duration" => {
                let seconds = v.as_str().and_then(|s| s.strip_suffix('s'));
                if seconds.and_then(|s| s.parse::<f64>().ok()).is_none() {
                    errors.push(format!(
                        "{path}: a Duration is a string like \"5s\", not {v:?}"
                    ));
                }
            }
            "Timestamp" | "FieldMask" => scalar(Scalar::String, v, path, errors),
            "BoolValue" => scalar(Scalar::Bool, v, path, errors),
            "StringValue" | "BytesValue" => scalar(Scalar::String, v, path, errors),
            s if s.ends_with("Value") => scalar(Scalar::Number, v, path, errors),
            _ => return false,
        }
        true
    }

    /// An Any: `@type` names the message the other keys belong to.
    fn any(&self, v: &Value, path: &str, errors: &mut Vec<String>) {
        let Some(url) = v.get("@type").and_then(Value::as_str) else {
            return errors.push(format!("{path}: an Any needs \"@type\""));
        };
        let Some(name) = url.strip_prefix("type.googleapis.com/") else {
            return errors.push(format!(
                "{path}: @type {url} is not type.googleapis.com/..."
            ));
        };
        let mut rest = v.as_mapping().cloned().unwrap_or_default();
        rest.remove("@type");
        let rest = Value::Mapping(rest);
        if self.well_known(
            name,
            rest.get("value").unwrap_or(&Value::Null),
            path,
            errors,
        ) {
            return;
        }
        self.message(name, &rest, &format!("{path}<{name}>"), errors);
    }
}

fn scalar(s: Scalar, v: &Value, path: &str, errors: &mut Vec<String>) {
    let ok = match s {
        Scalar::String => v.is_string(),
        Scalar::Bool => v.is_bool(),
        // 64-bit integers may be strings in proto3 JSON.
        Scalar::Number => v.is_number() || v.as_str().is_some_and(|s| s.parse::<f64>().is_ok()),
    };
    if !ok {
        errors.push(format!("{path}: {v:?} is not a {s:?}"));
    }
}

/// Where the envoy-types this workspace builds with is unpacked: the dependency info cargo
/// wrote beside this test's binary names its sources (its version from Cargo.lock).
fn envoy_types_dir() -> PathBuf {
    let lock =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock")).unwrap();
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"envoy-types\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .expect("envoy-types in Cargo.lock")
        .trim_matches('"');
    let marker = format!("envoy-types-{version}/src/lib.rs");
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for entry in std::fs::read_dir(deps).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("envoy_types-") && name.ends_with(".d")) {
            continue;
        }
        let info = std::fs::read_to_string(&path).unwrap();
        if let Some(lib) = info.split_whitespace().find(|w| w.ends_with(&marker)) {
            return Path::new(lib)
                .parent()
                .unwrap()
                .parent()
                .unwrap()
                .to_path_buf();
        }
    }
    panic!("no dependency info for {marker} in {}", deps.display())
}
