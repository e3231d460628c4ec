#!/usr/bin/env python3
"""Generates crates/testkit/src/proto_schema.rs: the protobuf field numbers of the built-in kinds kubectl
sends as protobuf (`kubectl create <kind>`, `kubectl run`, `kubectl auth can-i`).

Field numbers and kinds come from the k8s-pb crate (Kubernetes' generated.proto, through prost); JSON
field names from k8s-openapi's deserializers. Both must be in the cargo registry: run
`cargo fetch` in a project depending on k8s-pb, then `python3 crates/testkit/tools/gen_proto_schema.py`.
"""
import glob
import os
import re
import sys

REGISTRY = glob.glob(os.path.expanduser("~/.cargo/registry/src/*/"))
PB = sorted(glob.glob(REGISTRY[0] + "k8s-pb-*/src"))[-1]
OPENAPI = sorted(glob.glob(REGISTRY[0] + "k8s-openapi-0.29*/src/v1_33"))[-1]

# (apiVersion, kind, message) of the kinds decoded from protobuf.
ROOTS = [
    ("v1", "Namespace", "api.core.v1.Namespace"),
    ("v1", "ConfigMap", "api.core.v1.ConfigMap"),
    ("v1", "Secret", "api.core.v1.Secret"),
    ("v1", "ServiceAccount", "api.core.v1.ServiceAccount"),
    ("v1", "Pod", "api.core.v1.Pod"),
    ("v1", "Service", "api.core.v1.Service"),
    ("v1", "ResourceQuota", "api.core.v1.ResourceQuota"),
    ("v1", "LimitRange", "api.core.v1.LimitRange"),
    ("v1", "PersistentVolumeClaim", "api.core.v1.PersistentVolumeClaim"),
    ("apps/v1", "Deployment", "api.apps.v1.Deployment"),
    ("rbac.authorization.k8s.io/v1", "Role", "api.rbac.v1.Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", "api.rbac.v1.RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", "api.rbac.v1.ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "api.rbac.v1.ClusterRoleBinding"),
    ("scheduling.k8s.io/v1", "PriorityClass", "api.scheduling.v1.PriorityClass"),
    ("networking.k8s.io/v1", "Ingress", "api.networking.v1.Ingress"),
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview", "api.authorization.v1.SelfSubjectAccessReview"),
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview", "api.authorization.v1.SelfSubjectRulesReview"),
    ("authorization.k8s.io/v1", "SubjectAccessReview", "api.authorization.v1.SubjectAccessReview"),
    ("authorization.k8s.io/v1", "LocalSubjectAccessReview", "api.authorization.v1.LocalSubjectAccessReview"),
    ("authentication.k8s.io/v1", "TokenReview", "api.authentication.v1.TokenReview"),
]
# Messages with a JSON form of their own, decoded by hand.
SPECIAL = {
    "apimachinery.pkg.apis.meta.v1.Time", "apimachinery.pkg.apis.meta.v1.MicroTime",
    "apimachinery.pkg.util.intstr.IntOrString", "apimachinery.pkg.api.resource.Quantity",
    "apimachinery.pkg.runtime.RawExtension", "apimachinery.pkg.apis.meta.v1.FieldsV1",
    "apimachinery.pkg.apis.meta.v1.Duration",
}


def parse_module(path):
    src = open(path).read()
    package = os.path.relpath(os.path.dirname(path), PB).replace("/", ".")
    out = {}
    for m in re.finditer(r"pub struct (\w+) \{(.*?)\n\}", src, re.S):
        fields = []
        for chunk in m.group(2).split("#[prost(")[1:]:
            f = re.match(r"(.*?)\)\]\s*pub (?:r#)?(\w+):\s*(.*)", chunk, re.S)
            if not f:
                continue
            ty_text = "\n".join(l for l in f.group(3).split("\n") if not l.strip().startswith("//"))
            attr, name, ty = f.group(1), f.group(2), " ".join(ty_text.split()).rstrip(",").replace(", >", ">")
            tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
            kind = attr.split(",")[0].split("=")[0].strip()
            repeated = "repeated" in attr
            if kind in ("map", "btree_map"):
                key, value = [t.strip() for t in re.search(r'map = "([^"]*)"', attr).group(1).split(",")]
                if value == "message":
                    if "," not in ty:
                        sys.exit(f"{package}.{m.group(1)}.{name}: cannot read the map value type from {ty!r}")
                    inner = ty.rstrip(">").rsplit(",", 1)[1].strip()
                    parts = [p for p in inner.split("::") if p]
                    ups = parts.count("super")
                    rest = [p for p in parts if p != "super"]
                    base = package.split(".")
                    value = ".".join(base[: len(base) - ups] + rest)
                fields.append((tag, name, "map", value, repeated, None))
            elif kind == "message":
                inner = ty
                for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"):
                    inner = inner.replace(wrapper, "")
                inner = inner.rstrip(">").strip()
                parts = [p for p in inner.split("::") if p]
                ups = parts.count("super")
                rest = [p for p in parts if p != "super"]
                base = package.split(".")
                base = base[: len(base) - ups]
                fields.append((tag, name, "message", ".".join(base + rest), repeated, None))
            else:
                fields.append((tag, name, kind.split()[0], None, repeated, None))
        out[package + "." + m.group(1)] = fields
    return out


def json_names():
    names = {}
    for path in glob.glob(OPENAPI + "/**/*.rs", recursive=True):
        for json_key, field in re.findall(r'"([A-Za-z0-9$_-]+)" => Field::Key_(\w+)', open(path).read()):
            names.setdefault(field, json_key)
    return names


# Fields Go embeds with `json:",inline"`: their message's fields appear on the parent in JSON.
INLINE = {
    ("api.core.v1.Probe", "handler"),
    ("api.core.v1.Volume", "volume_source"),
    ("api.core.v1.PersistentVolumeSpec", "persistent_volume_source"),
    ("api.core.v1.EphemeralContainer", "ephemeral_container_common"),
    ("api.networking.v1.IngressRule", "ingress_rule_value"),
}


def inline(message, field, kind, target):
    return kind == "message" and ((message, field) in INLINE or field == "local_object_reference")


def camel(name):
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def main():
    messages = {}
    for path in glob.glob(PB + "/**/mod.rs", recursive=True):
        messages.update(parse_module(path))
    names = json_names()
    needed, queue = {}, [r[2] for r in ROOTS]
    while queue:
        name = queue.pop()
        if name in needed or name in SPECIAL:
            continue
        if name not in messages:
            sys.exit(f"unknown message {name}")
        needed[name] = messages[name]
        for _, _, kind, target, _, _ in messages[name]:
            if kind == "message" and target not in needed:
                queue.append(target)
            if kind == "map" and target not in ("string", "bytes") and "." in (target or ""):
                queue.append(target)
    out = ["// Generated by crates/testkit/tools/gen_proto_schema.py from k8s-pb and k8s-openapi. Do not edit.",
           "//! Protobuf field numbers of the built-in kinds the testkit decodes.", "",
           "use crate::protobuf::{Field, Kind};", "",
           "/// (apiVersion, kind, message) of every kind the testkit decodes from protobuf.",
           "pub(crate) static ROOTS: &[(&str, &str, &str)] = &["]
    out += [f'    ("{a}", "{k}", "{m}"),' for a, k, m in ROOTS]
    out += ["];", "", "/// Every message: its name and fields.", "pub(crate) static MESSAGES: &[(&str, &[Field])] = &["]
    scalar = {"string": "String", "bytes": "Bytes", "int32": "Int32", "int64": "Int64", "bool": "Bool", "double": "Double"}
    for name in sorted(needed):
        out.append(f'    ("{name}", &[')
        for tag, field, kind, target, repeated, _ in sorted(needed[name]):
            json = names.get(field) or camel(field)
            if kind == "message":
                k = f'Kind::Message("{target}")'
            elif kind == "map":
                k = "Kind::MapBytes" if target == "bytes" else "Kind::MapString" if target == "string" else f'Kind::MapMessage("{target}")'
            else:
                k = f"Kind::{scalar[kind]}"
            flat = str(inline(name, field, kind, target)).lower()
            out.append(f'        Field {{ tag: {tag}, json: "{json}", kind: {k}, repeated: {str(repeated).lower()}, inline: {flat} }},')
        out.append("    ]),")
    out += ["];", ""]
    dest = os.path.join(os.path.dirname(__file__), "..", "src", "proto_schema.rs")
    open(dest, "w").write("\n".join(out))
    print(f"wrote {len(needed)} messages to {os.path.normpath(dest)}")


main()
