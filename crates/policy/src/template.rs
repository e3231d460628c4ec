//! Templates in replication resources, as Capsule writes them.
//!
//! Two kinds:
//! - the short form `{{tenant.name}}` and `{{namespace}}` in raw items, in `additionalMetadata`, and in
//!   the namespace and selector of `namespacedItems` and `context` objects ([`fast`], [`fast_value`]);
//! - `generators`: Go templates (the `gotmpl` crate, a port of Go's `text/template`) over
//!   `$.tenant`, `$.namespace` and the `context` objects, with the Sprig functions Capsule's examples
//!   use ([`render`]). Each renders YAML, any number of documents separated by `---`.
//!
//! Pure: the caller reads the context objects and decides where the results go.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use bulkhead_api::replication::MissingKey;
use gotmpl::{FuncMap, Template, TemplateError, Value as T};
use serde_json::Value;

/// The values of the short form: `{{tenant.name}}` and `{{namespace}}`, where they are known.
#[derive(Clone, Debug, Default)]
pub struct FastVars<'a> {
    /// The tenant's name (absent in scope `None`).
    pub tenant: Option<&'a str>,
    /// The target namespace (present in scope `Namespace` only).
    pub namespace: Option<&'a str>,
}

/// Replaces the short-form tags `{{tenant.name}}` and `{{namespace}}` (spaces and a leading `.`
/// inside the braces allowed). Other `{{...}}` text is kept as written: a ConfigMap may carry
/// templates meant for another tool. (Capsule blanks unknown tags; keeping them loses nothing.)
pub fn fast(text: &str, vars: &FastVars<'_>) -> String {
    if !text.contains("{{") {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let tag = after[..end].trim();
        let tag = tag.strip_prefix('.').unwrap_or(tag);
        let value = match tag {
            "tenant.name" => vars.tenant,
            "namespace" => vars.namespace,
            _ => None,
        };
        match value {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// [`fast`] on every string of a JSON value, map keys included.
pub fn fast_value(value: &Value, vars: &FastVars<'_>) -> Value {
    match value {
        Value::String(s) => Value::String(fast(s, vars)),
        Value::Array(items) => Value::Array(items.iter().map(|v| fast_value(v, vars)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (fast(k, vars), fast_value(v, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A JSON value as template data.
pub fn to_template(value: &Value) -> T {
    match value {
        Value::Null => T::Nil,
        Value::Bool(b) => T::Bool(*b),
        Value::Number(n) => n
            .as_i64()
            .map(T::Int)
            .or_else(|| n.as_u64().map(T::Uint))
            .unwrap_or_else(|| T::Float(n.as_f64().unwrap_or_default())),
        Value::String(s) => T::String(Arc::from(s.as_str())),
        Value::Array(items) => T::List(items.iter().map(to_template).collect()),
        Value::Object(map) => T::Map(Arc::new(
            map.iter()
                .map(|(k, v)| (Arc::from(k.as_str()), to_template(v)))
                .collect(),
        )),
    }
}

/// Template data as JSON (functions are dropped).
fn to_json(value: &T) -> Value {
    match value {
        T::Bool(b) => Value::Bool(*b),
        T::Int(i) => Value::from(*i),
        T::Uint(u) => Value::from(*u),
        T::Float(f) => Value::from(*f),
        T::String(s) => Value::String(s.to_string()),
        T::List(items) => Value::Array(items.iter().map(to_json).collect()),
        T::Map(map) => Value::Object(map.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect()),
        _ => Value::Null,
    }
}

fn fail(message: String) -> TemplateError {
    TemplateError::Exec(message)
}

fn text(args: &[T], i: usize, func: &str) -> Result<String, TemplateError> {
    match args.get(i) {
        Some(T::String(s)) => Ok(s.to_string()),
        Some(T::Nil) | None => Ok(String::new()),
        Some(other) => match other {
            T::Int(_) | T::Uint(_) | T::Float(_) | T::Bool(_) => Ok(other.to_string()),
            _ => Err(fail(format!("{func}: argument {} must be a string", i + 1))),
        },
    }
}

fn int(args: &[T], i: usize, func: &str) -> Result<usize, TemplateError> {
    args.get(i)
        .and_then(T::as_int)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            fail(format!(
                "{func}: argument {} must be a non-negative number",
                i + 1
            ))
        })
}

/// The most a generator may render: a TenantResource's templates are a tenant's input, run in
/// Bulkhead's controller, so their output is bounded (Kubernetes objects are smaller anyway).
pub const MAX_OUTPUT: usize = 1 << 20;

/// The widest `indent` / `nindent` (a template must not make the controller allocate at will).
const MAX_INDENT: usize = 256;

/// A `fmt::Write` that refuses to grow past [`MAX_OUTPUT`].
struct Bounded(String);

impl std::fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.0.len() + s.len() > MAX_OUTPUT {
            return Err(std::fmt::Error);
        }
        self.0.push_str(s);
        Ok(())
    }
}

fn width(args: &[T], func: &str) -> Result<usize, TemplateError> {
    let n = int(args, 0, func)?;
    if n > MAX_INDENT {
        return Err(fail(format!("{func}: at most {MAX_INDENT} spaces")));
    }
    Ok(n)
}

fn indent_by(spaces: usize, s: &str) -> String {
    let pad = " ".repeat(spaces);
    s.split('\n')
        .map(|line| format!("{pad}{line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Sprig's idea of empty: nil, false, 0, "", an empty list or map.
fn empty(v: &T) -> bool {
    match v {
        T::Nil => true,
        T::Bool(b) => !b,
        T::Int(i) => *i == 0,
        T::Uint(u) => *u == 0,
        T::Float(f) => *f == 0.0,
        T::String(s) => s.is_empty(),
        T::List(l) => l.is_empty(),
        T::Map(m) => m.is_empty(),
        _ => false,
    }
}

fn to_yaml(v: &T) -> Result<String, TemplateError> {
    let json = to_json(v);
    let text = serde_saphyr::to_string(&json).map_err(|e| fail(format!("toYaml: {e}")))?;
    Ok(text.trim_end_matches('\n').to_owned())
}

type F = fn(&[T]) -> Result<T, TemplateError>;

/// The Sprig functions available in generators (Capsule offers all of Sprig; these are the ones its
/// documentation and common templates use). docs/replication.md lists them.
fn sprig() -> FuncMap {
    let mut m: BTreeMap<&str, F> = BTreeMap::new();
    m.insert("default", |a| {
        // {{ default "x" .value }}: the value, or the default when the value is empty.
        let given = a.get(1).unwrap_or(&T::Nil);
        Ok(if empty(given) {
            a.first().cloned().unwrap_or(T::Nil)
        } else {
            given.clone()
        })
    });
    m.insert("dig", |a| {
        // {{ dig "a" "b" default map }}
        if a.len() < 2 {
            return Err(fail("dig: needs keys, a default and a map".into()));
        }
        let (keys, rest) = a.split_at(a.len() - 2);
        let mut current = rest[1].clone();
        for key in keys {
            let k = key
                .as_str()
                .ok_or_else(|| fail("dig: keys must be strings".into()))?;
            match current.field(k) {
                Some(next) => current = next.clone(),
                None => return Ok(rest[0].clone()),
            }
        }
        Ok(current)
    });
    m.insert("empty", |a| Ok(T::Bool(empty(a.first().unwrap_or(&T::Nil)))));
    m.insert("coalesce", |a| {
        Ok(a.iter().find(|v| !empty(v)).cloned().unwrap_or(T::Nil))
    });
    m.insert("ternary", |a| {
        let cond = a.get(2).is_some_and(|v| !empty(v));
        Ok(a.get(if cond { 0 } else { 1 }).cloned().unwrap_or(T::Nil))
    });
    m.insert("required", |a| {
        let v = a.get(1).unwrap_or(&T::Nil);
        if empty(v) && !matches!(v, T::Bool(false)) {
            return Err(fail(text(a, 0, "required")?));
        }
        Ok(v.clone())
    });
    for name in ["toYaml", "toYAML"] {
        m.insert(name, |a| {
            Ok(T::String(Arc::from(to_yaml(a.first().unwrap_or(&T::Nil))?)))
        });
    }
    for name in ["toJson", "toJSON"] {
        m.insert(name, |a| {
            Ok(T::String(Arc::from(
                to_json(a.first().unwrap_or(&T::Nil)).to_string(),
            )))
        });
    }
    m.insert("fromYaml", |a| {
        let v: Value =
            serde_saphyr::from_str(&text(a, 0, "fromYaml")?).map_err(|e| fail(format!("fromYaml: {e}")))?;
        Ok(to_template(&v))
    });
    m.insert("fromJson", |a| {
        let v: Value =
            serde_json::from_str(&text(a, 0, "fromJson")?).map_err(|e| fail(format!("fromJson: {e}")))?;
        Ok(to_template(&v))
    });
    m.insert("indent", |a| {
        Ok(T::String(Arc::from(indent_by(
            width(a, "indent")?,
            &text(a, 1, "indent")?,
        ))))
    });
    m.insert("nindent", |a| {
        Ok(T::String(Arc::from(format!(
            "\n{}",
            indent_by(width(a, "nindent")?, &text(a, 1, "nindent")?)
        ))))
    });
    m.insert("quote", |a| {
        let parts: Vec<String> = a
            .iter()
            .filter(|v| !matches!(v, T::Nil))
            .map(|v| format!("{:?}", v.to_string()))
            .collect();
        Ok(T::String(Arc::from(parts.join(" "))))
    });
    m.insert("squote", |a| {
        let parts: Vec<String> = a
            .iter()
            .filter(|v| !matches!(v, T::Nil))
            .map(|v| format!("'{v}'"))
            .collect();
        Ok(T::String(Arc::from(parts.join(" "))))
    });
    m.insert("lower", |a| {
        Ok(T::String(Arc::from(text(a, 0, "lower")?.to_lowercase())))
    });
    m.insert("upper", |a| {
        Ok(T::String(Arc::from(text(a, 0, "upper")?.to_uppercase())))
    });
    m.insert("trim", |a| Ok(T::String(Arc::from(text(a, 0, "trim")?.trim()))));
    m.insert("trimPrefix", |a| {
        let (p, t) = (text(a, 0, "trimPrefix")?, text(a, 1, "trimPrefix")?);
        Ok(T::String(Arc::from(t.strip_prefix(&p).unwrap_or(&t))))
    });
    m.insert("trimSuffix", |a| {
        let (p, t) = (text(a, 0, "trimSuffix")?, text(a, 1, "trimSuffix")?);
        Ok(T::String(Arc::from(t.strip_suffix(&p).unwrap_or(&t))))
    });
    m.insert("replace", |a| {
        let (from, to, t) = (
            text(a, 0, "replace")?,
            text(a, 1, "replace")?,
            text(a, 2, "replace")?,
        );
        Ok(T::String(Arc::from(t.replace(&from, &to))))
    });
    m.insert("trunc", |a| {
        let n = int(a, 0, "trunc")?;
        Ok(T::String(Arc::from(
            text(a, 1, "trunc")?.chars().take(n).collect::<String>(),
        )))
    });
    m.insert("contains", |a| {
        Ok(T::Bool(
            text(a, 1, "contains")?.contains(&text(a, 0, "contains")?),
        ))
    });
    m.insert("hasPrefix", |a| {
        Ok(T::Bool(text(a, 1, "hasPrefix")?.starts_with(&text(
            a,
            0,
            "hasPrefix",
        )?)))
    });
    m.insert("hasSuffix", |a| {
        Ok(T::Bool(text(a, 1, "hasSuffix")?.ends_with(&text(
            a,
            0,
            "hasSuffix",
        )?)))
    });
    m.insert("toString", |a| Ok(T::String(Arc::from(text(a, 0, "toString")?))));
    m.insert("join", |a| {
        let sep = text(a, 0, "join")?;
        let items: Vec<String> = match a.get(1) {
            Some(T::List(l)) => l.iter().map(ToString::to_string).collect(),
            Some(other) => vec![other.to_string()],
            None => Vec::new(),
        };
        Ok(T::String(Arc::from(items.join(&sep))))
    });
    m.insert("splitList", |a| {
        let (sep, t) = (text(a, 0, "splitList")?, text(a, 1, "splitList")?);
        Ok(T::List(
            t.split(sep.as_str()).map(|p| T::String(Arc::from(p))).collect(),
        ))
    });
    m.insert("list", |a| Ok(T::List(a.iter().cloned().collect())));
    m.insert("dict", |a| {
        let mut map = BTreeMap::new();
        for pair in a.chunks(2) {
            let key = pair[0].to_string();
            map.insert(Arc::from(key.as_str()), pair.get(1).cloned().unwrap_or(T::Nil));
        }
        Ok(T::Map(Arc::new(map)))
    });
    m.insert("hasKey", |a| {
        let key = text(a, 1, "hasKey")?;
        Ok(T::Bool(a.first().and_then(|m| m.field(&key)).is_some()))
    });
    m.insert("keys", |a| match a.first() {
        Some(T::Map(map)) => Ok(T::List(map.keys().map(|k| T::String(k.clone())).collect())),
        _ => Err(fail("keys: argument must be a map".into())),
    });
    m.insert("b64enc", |a| {
        Ok(T::String(Arc::from(
            base64::engine::general_purpose::STANDARD.encode(text(a, 0, "b64enc")?),
        )))
    });
    m.insert("b64dec", |a| {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text(a, 0, "b64dec")?)
            .map_err(|e| fail(format!("b64dec: {e}")))?;
        Ok(T::String(Arc::from(String::from_utf8_lossy(&bytes).as_ref())))
    });
    m.into_iter()
        .map(|(name, f)| (name.to_owned(), Arc::new(f) as gotmpl::ValueFunc))
        .collect()
}

/// Names of the functions [`render`] offers besides Go's own.
pub fn function_names() -> Vec<String> {
    sprig().into_keys().collect()
}

/// A generator's template, parsed once, to render for every tenant or namespace.
pub struct Compiled(Template);

/// Parses a generator's template with its `missingKey` option and the Sprig functions.
pub fn compile(template: &str, missing: MissingKey) -> Result<Compiled, String> {
    let missing = match missing {
        MissingKey::Zero => gotmpl::MissingKey::ZeroValue,
        MissingKey::Invalid => gotmpl::MissingKey::Invalid,
        MissingKey::Error => gotmpl::MissingKey::Error,
    };
    Template::new("generator")
        .missing_key(missing)
        .max_range_iters(100_000)
        .funcs(sprig())
        .parse(template)
        .map(Compiled)
        .map_err(|e| format!("the template does not parse: {e}"))
}

impl Compiled {
    /// Renders over `data` and reads the YAML documents produced (empty ones skipped). Errors name the
    /// template problem or the YAML that does not parse.
    pub fn render(&self, data: &Value) -> Result<Vec<Value>, String> {
        let mut out = Bounded(String::new());
        self.0
            .execute_fmt(&mut out, &to_template(data))
            .map_err(|e| match e {
                TemplateError::Write => format!("the template's output is larger than {MAX_OUTPUT} bytes"),
                e => format!("the template fails: {e}"),
            })?;
        let docs: Vec<Value> = serde_saphyr::from_multiple(&out.0)
            .map_err(|e| format!("the template's output is not YAML: {e}"))?;
        Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
    }
}

/// Renders a short text (a RoleBinding subject's name in a namespace rule) over `data`, a missing key
/// being an error. Text without `{{` is returned as it is.
pub fn render_text(text: &str, data: &Value) -> Result<String, String> {
    if !text.contains("{{") {
        return Ok(text.to_owned());
    }
    let template = Template::new("text")
        .missing_key(gotmpl::MissingKey::Error)
        .max_range_iters(100_000)
        .funcs(sprig())
        .parse(text)
        .map_err(|e| format!("`{text}` does not parse: {e}"))?;
    let mut out = Bounded(String::new());
    template
        .execute_fmt(&mut out, &to_template(data))
        .map_err(|e| format!("`{text}` fails: {e}"))?;
    Ok(out.0)
}

/// [`compile`] and [`Compiled::render`] in one.
pub fn render(template: &str, missing: MissingKey, data: &Value) -> Result<Vec<Value>, String> {
    compile(template, missing)?.render(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tenant() -> Value {
        json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "solar", "labels": {"team": "sun"}},
            "spec": {"data": {"repos": ["https://git.example/solar/a", "https://git.example/solar/b"]}},
            "status": {"namespaces": ["solar-dev", "solar-prod"],
                "owners": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "solar-admins"}]}})
    }

    #[test]
    fn the_short_form_replaces_known_tags_only() {
        let vars = FastVars {
            tenant: Some("solar"),
            namespace: Some("solar-dev"),
        };
        assert_eq!(
            fast("{{tenant.name}}-{{ namespace }}-{{.namespace}}", &vars),
            "solar-solar-dev-solar-dev"
        );
        assert_eq!(
            fast("{{ .Values.x }} and {{tenant.name}}", &vars),
            "{{ .Values.x }} and solar"
        );
        assert_eq!(fast("open {{tenant.name", &vars), "open {{tenant.name");
        let none = FastVars::default();
        assert_eq!(fast("{{tenant.name}}", &none), "{{tenant.name}}");
        let v = fast_value(&json!({"{{tenant.name}}.conf": ["x-{{namespace}}", 3]}), &vars);
        assert_eq!(v, json!({"solar.conf": ["x-solar-dev", 3]}));
    }

    #[test]
    fn a_generator_renders_documents_over_the_tenant() {
        // As Capsule's argo-cd-permission example: a range over the owners.
        let template = "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: argocd-rbac-cm\ndata:\n  {{ $.tenant.metadata.name }}.csv: |\n    {{- range $.tenant.status.owners }}\n    p, {{ .name }}, applications, sync, {{ $.tenant.metadata.name }}/*, allow\n    {{- end }}\n---\n";
        let docs = render(template, MissingKey::Zero, &json!({"tenant": tenant()})).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(
            docs[0]["data"]["solar.csv"],
            "p, alice, applications, sync, solar/*, allow\np, solar-admins, applications, sync, solar/*, allow\n"
        );
    }

    #[test]
    fn sprig_functions_capsule_examples_use() {
        let template = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ $.tenant.metadata.name | upper | lower }}\ndata:\n  meta: |\n    {{- toYAML $.tenant.metadata | nindent 4 }}\n  rate: {{ $.tenant | dig \"spec\" \"data\" \"limits\" \"rate\" 10000 | quote }}\n  repos: {{ join \",\" $.tenant.spec.data.repos | quote }}\n  d: {{ default \"none\" $.tenant.spec.data.missing | quote }}\n  b: {{ b64enc \"hi\" }}\n";
        let docs = render(template, MissingKey::Zero, &json!({"tenant": tenant()})).unwrap();
        let data = &docs[0]["data"];
        assert_eq!(docs[0]["metadata"]["name"], "solar");
        let meta: Value = serde_saphyr::from_str(data["meta"].as_str().unwrap()).unwrap();
        assert_eq!(meta, json!({"name": "solar", "labels": {"team": "sun"}}));
        assert_eq!(data["rate"], "10000");
        assert_eq!(
            data["repos"],
            "https://git.example/solar/a,https://git.example/solar/b"
        );
        assert_eq!(data["d"], "none");
        assert_eq!(data["b"], "aGk=");
    }

    #[test]
    fn missing_keys_follow_the_option() {
        let t = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata:\n  value: \"{{ $.custom.account }}\"\n";
        let zero = render(t, MissingKey::Zero, &json!({"tenant": tenant()})).unwrap();
        assert_eq!(zero[0]["data"]["value"], "<no value>");
        let err = render(t, MissingKey::Error, &json!({"tenant": tenant()})).unwrap_err();
        assert!(err.contains("custom"), "{err}");
    }

    #[test]
    fn a_template_cannot_make_the_controller_allocate_at_will() {
        // A TenantResource's templates come from a tenant: output and indentation are bounded, and so
        // are range iterations and recursion (gotmpl's own limits).
        let data = json!({"tenant": tenant()});
        let wide = "{{ printf \"%65535d\" 1 }}".repeat(10);
        let t = format!(
            "{{{{ range $.tenant.status.namespaces }}}}{{{{ range $.tenant.status.namespaces }}}}{wide}{{{{ end }}}}{{{{ end }}}}"
        );
        let e = render(&t, MissingKey::Zero, &data).unwrap_err();
        assert_eq!(
            e,
            format!("the template's output is larger than {MAX_OUTPUT} bytes")
        );
        let e = render("{{ nindent 100000000 \"x\" }}", MissingKey::Zero, &data).unwrap_err();
        assert!(e.contains("nindent: at most 256 spaces"), "{e}");
        let e = render(
            "{{ define \"a\" }}{{ template \"a\" }}{{ end }}{{ template \"a\" }}",
            MissingKey::Zero,
            &data,
        )
        .unwrap_err();
        assert!(e.starts_with("the template fails"), "{e}");
    }

    #[test]
    fn bad_templates_and_bad_yaml_are_errors_not_panics() {
        let e = render("{{ range }}", MissingKey::Zero, &json!({})).unwrap_err();
        assert!(e.starts_with("the template does not parse"), "{e}");
        let e = render("{{ nosuchfunc 1 }}", MissingKey::Zero, &json!({})).unwrap_err();
        assert!(e.contains("nosuchfunc"), "{e}");
        let e = render("a: [b\n", MissingKey::Zero, &json!({})).unwrap_err();
        assert!(e.starts_with("the template's output is not YAML"), "{e}");
        assert!(
            render("{{/* nothing */}}\n---\n", MissingKey::Zero, &json!({}))
                .unwrap()
                .is_empty()
        );
    }
}
