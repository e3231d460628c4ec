//! CustomQuota and GlobalCustomQuota: what an object adds to a quota, and whether a write fits.
//!
//! Paths are Kubernetes JSONPath as kubectl and Capsule write them (`.spec.containers[*].resources.limits.cpu`,
//! `.spec.accessModes[?(@=="ReadWriteOnce")]`), evaluated by `serde_json_path` (RFC 9535) after a
//! translation of the dotted names: Kubernetes allows `-` and `/` in a dotted name
//! (`.metadata.labels.app\.kubernetes\.io/name`), RFC 9535 only in a bracketed one.
//!
//! Admission is exact under concurrency because a quota's usage and its in-flight writes live in one
//! object: `status.claims` (the objects the controller counted) and `status.reservations` (writes the
//! webhook admitted that the controller has not counted yet). The webhook reads both, decides with
//! [`admit`], and writes the reservation back only if the object did not change meanwhile
//! (its resourceVersion), so two webhooks admitting at once see each other's reservations.

use std::collections::{BTreeMap, HashMap};

use bulkhead_api::custom_quota::{QuotaClaim, QuotaDefinition, QuotaOp, QuotaReservation};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

use crate::quota::{format_millis, parse_millis};
use crate::selector;

/// How long a reservation counts without its object being counted: a write admitted and then refused
/// by another webhook, or lost, stops holding its share after this. The controller counts an object
/// within a second or two of its creation.
pub const RESERVATION_TTL_SECONDS: i64 = 60;

/// A compiled Kubernetes JSONPath.
#[derive(Clone, Debug)]
pub struct JsonPath {
    text: String,
    query: serde_json_path::JsonPath,
}

impl PartialEq for JsonPath {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl JsonPath {
    /// Parses a path written as kubectl's `-o jsonpath` takes it (with or without `{}`), starting with
    /// a dot.
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let trimmed = text.trim();
        let inner = trimmed
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(trimmed)
            .trim();
        if inner.is_empty() {
            return Err("a path cannot be empty".to_owned());
        }
        if inner.len() > 1024 {
            return Err("a path may have at most 1024 characters".to_owned());
        }
        if inner.contains(['\n', '\r', '\t']) {
            return Err(format!("path `{inner}` contains a newline or tab"));
        }
        let inner = inner.strip_prefix('$').unwrap_or(inner);
        if !inner.starts_with(['.', '[']) {
            return Err(format!("path `{inner}` must start with a dot (`.spec.field`)"));
        }
        let rfc = translate(inner).map_err(|e| format!("path `{inner}`: {e}"))?;
        let query = serde_json_path::JsonPath::parse(&rfc)
            .map_err(|e| format!("path `{inner}` is not a JSONPath: {e}"))?;
        Ok(JsonPath {
            text: inner.to_owned(),
            query,
        })
    }

    /// The path as written (without `{}` or `$`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// What the path finds in `value`.
    pub fn query<'a>(&self, value: &'a Value) -> Vec<&'a Value> {
        self.query.query(value).all()
    }
}

/// Kubernetes JSONPath to RFC 9535: `$` in front, each dotted name bracketed and quoted (`\.` in a
/// name is a dot of the name), brackets kept as written.
fn translate(path: &str) -> Result<String, String> {
    let mut out = String::from("$");
    let chars: Vec<char> = path.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                if chars.get(i) == Some(&'.') {
                    out.push_str("..");
                    i += 1;
                }
                if chars.get(i) == Some(&'[') {
                    continue;
                }
                let mut name = String::new();
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    if chars[i] == '\\' && chars.get(i + 1) == Some(&'.') {
                        name.push('.');
                        i += 2;
                    } else {
                        name.push(chars[i]);
                        i += 1;
                    }
                }
                if name.is_empty() {
                    return Err("a dot must be followed by a name".to_owned());
                }
                if name == "*" {
                    out.push_str("[*]");
                } else {
                    out.push_str("['");
                    for c in name.chars() {
                        if c == '\'' || c == '\\' {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                    out.push_str("']");
                }
            }
            '[' => {
                let start = i;
                let mut depth = 0;
                let mut quote: Option<char> = None;
                while i < chars.len() {
                    let c = chars[i];
                    match quote {
                        Some(q) if c == '\\' => {
                            let _ = q;
                            i += 1;
                        }
                        Some(q) if c == q => quote = None,
                        Some(_) => {}
                        None if c == '\'' || c == '"' => quote = Some(c),
                        None if c == '[' => depth += 1,
                        None if c == ']' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        None => {}
                    }
                    i += 1;
                }
                if i >= chars.len() {
                    return Err("a `[` is never closed".to_owned());
                }
                out.extend(&chars[start..=i]);
                i += 1;
            }
            c => return Err(format!("unexpected `{c}`")),
        }
    }
    Ok(out)
}

/// One `fieldSelectors` entry.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldCondition {
    /// A bare path: holds when it finds something other than `false`, `0`, `""` or null.
    Truthy(JsonPath),
    /// `path=value` or `path==value`: holds when the path finds the value (compared as text).
    Equals(JsonPath, String),
    /// `path!=value`: holds when the path does not find the value.
    NotEquals(JsonPath, String),
}

impl FieldCondition {
    /// Parses an entry: an operator counts only outside brackets and quotes, so a filter's `==`
    /// (`[?(@=="RWO")]`) belongs to its path.
    pub fn parse(text: &str) -> Result<FieldCondition, String> {
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let mut depth = 0i32;
        let mut quote: Option<char> = None;
        let mut k = 0;
        while k < chars.len() {
            let (at, c) = chars[k];
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '\'' | '"' => quote = Some(c),
                    '[' | '(' => depth += 1,
                    ']' | ')' => depth -= 1,
                    '!' | '=' if depth == 0 => {
                        let next = chars.get(k + 1).map(|(_, c)| *c);
                        let (operator_len, negated) = match (c, next) {
                            ('!', Some('=')) => (2, true),
                            ('=', Some('=')) => (2, false),
                            ('=', _) => (1, false),
                            _ => {
                                k += 1;
                                continue;
                            }
                        };
                        let path = JsonPath::parse(&text[..at])?;
                        let value = unquote(text[at + operator_len..].trim());
                        return Ok(if negated {
                            FieldCondition::NotEquals(path, value)
                        } else {
                            FieldCondition::Equals(path, value)
                        });
                    }
                    _ => {}
                },
            }
            k += 1;
        }
        Ok(FieldCondition::Truthy(JsonPath::parse(text)?))
    }

    fn holds(&self, subject: &dyn Subject) -> bool {
        match self {
            FieldCondition::Truthy(path) => subject.query(path).iter().any(truthy),
            FieldCondition::Equals(path, value) => {
                let found = subject.query(path);
                if found.is_empty() {
                    value.is_empty()
                } else {
                    found.iter().any(|v| as_text(v) == *value)
                }
            }
            FieldCondition::NotEquals(path, value) => {
                let found = subject.query(path);
                if found.is_empty() {
                    !value.is_empty()
                } else {
                    !found.iter().any(|v| as_text(v) == *value)
                }
            }
        }
    }

    /// The path it reads.
    pub fn path(&self) -> &JsonPath {
        match self {
            FieldCondition::Truthy(p) | FieldCondition::Equals(p, _) | FieldCondition::NotEquals(p, _) => p,
        }
    }
}

fn unquote(text: &str) -> String {
    for q in ['"', '\''] {
        if text.len() >= 2 && text.starts_with(q) && text.ends_with(q) {
            return text[1..text.len() - 1].to_owned();
        }
    }
    text.to_owned()
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !(s.is_empty() || s.eq_ignore_ascii_case("false") || s == "0"),
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// What [`usage`] reads of an object: its labels and what paths find in it. A whole object answers
/// directly; the controller's cache keeps only these answers ([`Projection`]).
pub trait Subject {
    /// The object's labels.
    fn labels(&self) -> &BTreeMap<String, String>;
    /// What `path` finds.
    fn query(&self, path: &JsonPath) -> Vec<Value>;
}

/// A whole object, with its labels read once.
pub struct Whole<'a> {
    object: &'a Value,
    labels: BTreeMap<String, String>,
}

impl<'a> Whole<'a> {
    /// Wraps an object.
    pub fn new(object: &'a Value) -> Whole<'a> {
        Whole {
            object,
            labels: labels_of(object),
        }
    }
}

fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

impl Subject for Whole<'_> {
    fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }
    fn query(&self, path: &JsonPath) -> Vec<Value> {
        path.query(self.object).into_iter().cloned().collect()
    }
}

/// What the controller keeps of an object: its labels and what each path of its kind found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Projection {
    /// The object's labels.
    pub labels: BTreeMap<String, String>,
    /// Each path's findings, by the path's text.
    pub found: Vec<(String, Vec<Value>)>,
}

impl Projection {
    /// Projects `object` on `paths`.
    pub fn of(object: &Value, paths: &[JsonPath]) -> Projection {
        Projection {
            labels: labels_of(object),
            found: paths
                .iter()
                .map(|p| (p.text.clone(), p.query(object).into_iter().cloned().collect()))
                .collect(),
        }
    }
}

impl Subject for Projection {
    fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }
    fn query(&self, path: &JsonPath) -> Vec<Value> {
        self.found
            .iter()
            .find(|(p, _)| *p == path.text)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

/// A kind by group, version and kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gvk {
    /// API group (`""` for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
}

impl Gvk {
    /// `group/version` (`v1` for the core group).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// One source, compiled.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    /// The kind counted.
    pub gvk: Gvk,
    /// How.
    pub op: QuotaOp,
    /// The path summed (add, sub).
    pub path: Option<JsonPath>,
    /// Label selector and field conditions of each `selectors` entry (any entry may match).
    pub selectors: Vec<(LabelSelector, Vec<FieldCondition>)>,
}

impl Source {
    /// Every path this source reads (its own and its field conditions').
    pub fn paths(&self) -> impl Iterator<Item = &JsonPath> {
        self.path.iter().chain(
            self.selectors
                .iter()
                .flat_map(|(_, f)| f.iter().map(FieldCondition::path)),
        )
    }
}

/// A quota, compiled.
#[derive(Clone, Debug, PartialEq)]
pub struct Quota {
    /// The limit, in thousandths.
    pub limit: i128,
    /// Its sources.
    pub sources: Vec<Source>,
    /// Its scope selectors (any may match; none means every object).
    pub scope_selectors: Vec<LabelSelector>,
    /// A CustomQuota's namespace.
    pub namespace: Option<String>,
    /// A GlobalCustomQuota's namespace selectors.
    pub namespace_selectors: Vec<LabelSelector>,
}

/// Compiles a quota, or says everything wrong with it.
pub fn compile(definition: &QuotaDefinition<'_>) -> Result<Quota, Vec<String>> {
    let mut problems = Vec::new();
    let limit = parse_millis(&definition.limit.0);
    if limit.is_none() {
        problems.push(format!("limit `{}` is not a quantity", definition.limit.0));
    }
    let mut sources = Vec::new();
    for (i, source) in definition.sources.iter().enumerate() {
        let (group, version) = source.group_version();
        if version.is_empty() {
            problems.push(format!("sources[{i}]: give apiVersion, or group and version"));
        }
        let path = match (&source.op, &source.path) {
            (QuotaOp::Count, None) => None,
            (QuotaOp::Count, Some(_)) => {
                problems.push(format!("sources[{i}]: path is not allowed with op count"));
                None
            }
            (_, None) => {
                problems.push(format!("sources[{i}]: path is required with op add or sub"));
                None
            }
            (_, Some(p)) => match JsonPath::parse(p) {
                Ok(p) => Some(p),
                Err(e) => {
                    problems.push(format!("sources[{i}]: {e}"));
                    None
                }
            },
        };
        let mut selectors = Vec::new();
        for (j, s) in source.selectors.iter().enumerate() {
            let mut fields = Vec::new();
            for (k, f) in s.field_selectors.iter().enumerate() {
                match FieldCondition::parse(f) {
                    Ok(f) => fields.push(f),
                    Err(e) => problems.push(format!("sources[{i}].selectors[{j}].fieldSelectors[{k}]: {e}")),
                }
            }
            selectors.push((s.label_selector(), fields));
        }
        sources.push(Source {
            gvk: Gvk {
                group,
                version,
                kind: source.kind.clone(),
            },
            op: source.op,
            path,
            selectors,
        });
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Quota {
        limit: limit.unwrap_or_default(),
        sources,
        scope_selectors: definition.scope_selectors.to_vec(),
        namespace: definition.namespace.map(str::to_owned),
        namespace_selectors: definition.namespace_selectors.to_vec(),
    })
}

impl Quota {
    /// Whether the objects of namespace `name` (with `labels`) count.
    pub fn selects_namespace(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        match &self.namespace {
            Some(own) => own == name,
            None => self
                .namespace_selectors
                .iter()
                .any(|s| selector::matches_namespace(s, labels)),
        }
    }

    /// Whether any source counts objects of `gvk`.
    pub fn counts_kind(&self, gvk: &Gvk) -> bool {
        self.sources.iter().any(|s| s.gvk == *gvk)
    }

    /// What an object of `gvk` adds, in thousandths: `None` when it does not count (no source of its
    /// kind selects it, or the scope selectors leave it out), an error when a path finds something
    /// that is not a quantity.
    pub fn usage(&self, gvk: &Gvk, subject: &dyn Subject) -> Result<Option<i128>, String> {
        if !self.scope_selectors.is_empty()
            && !self
                .scope_selectors
                .iter()
                .any(|s| selector::matches(s, subject.labels()))
        {
            return Ok(None);
        }
        let mut total: Option<i128> = None;
        for source in self.sources.iter().filter(|s| s.gvk == *gvk) {
            let selected = source.selectors.is_empty()
                || source.selectors.iter().any(|(labels, fields)| {
                    selector::matches(labels, subject.labels()) && fields.iter().all(|f| f.holds(subject))
                });
            if !selected {
                continue;
            }
            let amount = match (source.op, &source.path) {
                (QuotaOp::Count, _) => 1000,
                (op, Some(path)) => {
                    let mut sum: i128 = 0;
                    for value in subject.query(path) {
                        let text = match &value {
                            Value::String(s) => s.clone(),
                            Value::Number(n) => n.to_string(),
                            Value::Null => continue,
                            other => {
                                return Err(format!("`{}` found {other}, not a quantity", path.text));
                            }
                        };
                        let millis = parse_millis(&text)
                            .ok_or_else(|| format!("`{}` found `{text}`, not a quantity", path.text))?;
                        sum = sum.saturating_add(millis);
                    }
                    if op == QuotaOp::Sub { -sum } else { sum }
                }
                (_, None) => 0,
            };
            total = Some(total.unwrap_or(0).saturating_add(amount));
        }
        Ok(total)
    }
}

/// The paths each kind's objects are read at, over `quotas`: what the controller's cache keeps.
pub fn paths_by_kind<'a>(quotas: impl IntoIterator<Item = &'a Quota>) -> BTreeMap<Gvk, Vec<JsonPath>> {
    let mut out: BTreeMap<Gvk, Vec<JsonPath>> = BTreeMap::new();
    for quota in quotas {
        for source in &quota.sources {
            let paths = out.entry(source.gvk.clone()).or_default();
            for path in source.paths() {
                if !paths.iter().any(|p| p.text == path.text) {
                    paths.push(path.clone());
                }
            }
        }
    }
    for paths in out.values_mut() {
        paths.sort_by(|a, b| a.text.cmp(&b.text));
    }
    out
}

/// Why a write does not fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exceeded {
    /// What the write adds, in thousandths.
    pub requested: i128,
    /// What the counted objects use.
    pub used: i128,
    /// What admitted writes not yet counted add.
    pub in_flight: i128,
    /// The limit.
    pub limit: i128,
}

impl Exceeded {
    /// `requested 1, used 3, in flight 1, limit 3 (available 0)`.
    pub fn describe(&self) -> String {
        let available = (self.limit - self.used - self.in_flight).max(0);
        format!(
            "requested {}, used {}, in flight {}, limit {} (available {})",
            format_millis(self.requested),
            format_millis(self.used),
            format_millis(self.in_flight),
            format_millis(self.limit),
            format_millis(available)
        )
    }
}

/// Seconds since the epoch of an RFC 3339 time, `None` if it is not one.
pub fn epoch_seconds(time: &str) -> Option<i64> {
    time.parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second())
}

/// Whether a reservation still counts at `now` (seconds since the epoch).
pub fn is_live(reservation: &QuotaReservation, now: i64) -> bool {
    epoch_seconds(&reservation.time).is_some_and(|t| now - t < RESERVATION_TTL_SECONDS && t <= now + 5)
}

/// What each object counts for now: its claim, or a live reservation when that is more (a write
/// admitted and not counted yet).
fn effective(
    claims: &[QuotaClaim],
    reservations: &[QuotaReservation],
    now: i64,
) -> (i128, i128, HashMap<String, (i128, i128)>) {
    let mut by_uid: HashMap<String, (i128, i128)> = HashMap::new();
    let mut used = 0i128;
    for claim in claims {
        let usage = parse_millis(&claim.usage.0).unwrap_or(0);
        used += usage;
        by_uid.entry(claim.uid.clone()).or_insert((0, 0)).0 += usage;
    }
    let mut in_flight = 0i128;
    for r in reservations.iter().filter(|r| is_live(r, now)) {
        let usage = parse_millis(&r.usage.0).unwrap_or(0);
        let entry = by_uid.entry(r.uid.clone()).or_insert((0, i128::MIN));
        entry.1 = entry.1.max(usage);
    }
    for (claimed, reserved) in by_uid.values() {
        if *reserved != i128::MIN && reserved > claimed {
            in_flight += reserved - claimed;
        }
    }
    (used, in_flight, by_uid)
}

/// Decides whether object `uid` may now use `usage` (thousandths) of a quota whose status holds
/// `claims` and `reservations`: `Ok(None)` when it uses no more than it is counted for already (no
/// reservation needed: a write that lowers usage is always admitted, as a ResourceQuota admits it),
/// `Ok(Some(reservations))` with the reservations to write back (this one added, expired ones
/// dropped), or why it does not fit.
pub fn admit(
    limit: i128,
    claims: &[QuotaClaim],
    reservations: &[QuotaReservation],
    reservation: QuotaReservation,
    usage: i128,
    now: i64,
) -> Result<Option<Vec<QuotaReservation>>, Exceeded> {
    let (used, in_flight, by_uid) = effective(claims, reservations, now);
    let current = by_uid
        .get(&reservation.uid)
        .map(|(claimed, reserved)| (*claimed).max(*reserved))
        .unwrap_or(0);
    if usage <= current {
        return Ok(None);
    }
    let requested = usage - current;
    if used + in_flight + requested > limit {
        return Err(Exceeded {
            requested,
            used,
            in_flight,
            limit,
        });
    }
    let mut kept: Vec<QuotaReservation> = reservations
        .iter()
        .filter(|r| is_live(r, now) && r.uid != reservation.uid)
        .cloned()
        .collect();
    kept.push(reservation);
    Ok(Some(kept))
}

/// The reservations the controller keeps when it writes a quota's status: every live one whose object
/// it has not seen deleted. A reservation is kept while its object is counted too (the object counts
/// for the larger of the two, never both): another writer whose view of the objects is older (a
/// leader handing over) may write the claims without it, and the reservation then still holds its
/// share until the TTL, by which time every view has the object.
pub fn pending_reservations(
    reservations: &[QuotaReservation],
    now: i64,
    deleted: impl Fn(&str) -> bool,
) -> Vec<QuotaReservation> {
    reservations
        .iter()
        .filter(|r| is_live(r, now) && !deleted(&r.uid))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_api::custom_quota::{QuotaSource, SourceSelector};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use serde_json::json;

    fn pod_gvk() -> Gvk {
        Gvk {
            group: String::new(),
            version: "v1".into(),
            kind: "Pod".into(),
        }
    }

    fn quota(limit: &str, sources: Vec<QuotaSource>) -> Quota {
        let limit = Quantity(limit.into());
        compile(&QuotaDefinition {
            limit: &limit,
            sources: &sources,
            scope_selectors: &[],
            namespace: Some("team-a"),
            namespace_selectors: &[],
            per_claim_metrics: false,
        })
        .unwrap()
    }

    fn source(kind: &str, op: QuotaOp, path: Option<&str>, fields: &[&str]) -> QuotaSource {
        QuotaSource {
            api_version: Some("v1".into()),
            kind: kind.into(),
            op,
            path: path.map(str::to_owned),
            selectors: if fields.is_empty() {
                vec![]
            } else {
                vec![SourceSelector {
                    field_selectors: fields.iter().map(|f| (*f).to_owned()).collect(),
                    ..Default::default()
                }]
            },
            ..Default::default()
        }
    }

    #[test]
    fn kubernetes_paths_find_what_kubectl_finds() {
        let pod = json!({"metadata": {"labels": {"app.kubernetes.io/name": "web"}},
            "spec": {"containers": [
                {"resources": {"limits": {"cpu": "250m"}}},
                {"resources": {"limits": {"cpu": "1"}}}]}});
        let p = JsonPath::parse(".spec.containers[*].resources.limits.cpu").unwrap();
        assert_eq!(p.query(&pod), vec![&json!("250m"), &json!("1")]);
        let p = JsonPath::parse(r"{.metadata.labels.app\.kubernetes\.io/name}").unwrap();
        assert_eq!(p.query(&pod), vec![&json!("web")]);
        let p = JsonPath::parse("..cpu").unwrap();
        assert_eq!(p.query(&pod).len(), 2);
        for bad in ["", "spec.x", ".spec[", ".spec.\tx", ".spec..", ".a[?(@==)]"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn field_selectors_compare_outside_brackets_only() {
        let pvc = json!({"spec": {"accessModes": ["ReadWriteOnce"], "type": "LoadBalancer", "suspend": false},
            "status": {"phase": "Bound"}});
        let holds = |text: &str| FieldCondition::parse(text).unwrap().holds(&Whole::new(&pvc));
        assert!(matches!(
            FieldCondition::parse(r#".spec.accessModes[?(@=="ReadWriteOnce")]"#).unwrap(),
            FieldCondition::Truthy(_)
        ));
        assert!(holds(r#".spec.accessModes[?(@=="ReadWriteOnce")]"#));
        assert!(!holds(r#".spec.accessModes[?(@=="ReadWriteMany")]"#));
        for form in [
            ".spec.type=LoadBalancer",
            ".spec.type==LoadBalancer",
            r#".spec.type=="LoadBalancer""#,
            ".spec.type=='LoadBalancer'",
        ] {
            assert!(holds(form), "{form}");
        }
        assert!(!holds(".spec.type=ClusterIP"));
        assert!(holds(".status.phase!=Succeeded"));
        assert!(!holds(".status.phase!=Bound"));
        assert!(
            holds(".missing!=Bound"),
            "a missing field is not equal to a value"
        );
        assert!(!holds(".spec.suspend"), "false is not truthy");
        assert!(!holds(".spec.missing"));
        assert!(holds(".status.phase"));
    }

    #[test]
    fn usage_sums_counts_and_subtracts_what_the_selectors_select() {
        let q = quota(
            "2",
            vec![
                source(
                    "Pod",
                    QuotaOp::Add,
                    Some(".spec.containers[*].resources.requests.cpu"),
                    &[],
                ),
                source(
                    "Pod",
                    QuotaOp::Add,
                    Some(".spec.initContainers[*].resources.requests.cpu"),
                    &[".spec.initContainers"],
                ),
                source("Pod", QuotaOp::Sub, Some(".metadata.annotations.discount"), &[]),
            ],
        );
        let pod = json!({"metadata": {"annotations": {"discount": "100m"}},
            "spec": {"containers": [{"resources": {"requests": {"cpu": "500m"}}}, {"resources": {"requests": {"cpu": 1}}}],
                     "initContainers": [{"resources": {"requests": {"cpu": "0.25"}}}]}});
        assert_eq!(q.usage(&pod_gvk(), &Whole::new(&pod)), Ok(Some(1650)));
        let projected = Projection::of(&pod, &paths_by_kind([&q])[&pod_gvk()]);
        assert_eq!(
            q.usage(&pod_gvk(), &projected),
            Ok(Some(1650)),
            "a projection counts the same"
        );
        let svc = Gvk {
            kind: "Service".into(),
            ..pod_gvk()
        };
        assert_eq!(q.usage(&svc, &Whole::new(&pod)), Ok(None), "not a source kind");
        let bad = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "lots"}}}]}});
        assert!(
            q.usage(&pod_gvk(), &Whole::new(&bad))
                .unwrap_err()
                .contains("`lots`, not a quantity")
        );
        let counted = quota(
            "3",
            vec![source(
                "Service",
                QuotaOp::Count,
                None,
                &[r#".spec.type=="LoadBalancer""#],
            )],
        );
        let lb = json!({"spec": {"type": "LoadBalancer"}});
        let cip = json!({"spec": {"type": "ClusterIP"}});
        assert_eq!(counted.usage(&svc, &Whole::new(&lb)), Ok(Some(1000)));
        assert_eq!(counted.usage(&svc, &Whole::new(&cip)), Ok(None));
    }

    #[test]
    fn broken_quotas_say_every_problem() {
        let limit = Quantity("lots".into());
        let sources = vec![
            source("Pod", QuotaOp::Count, Some(".spec"), &[]),
            source("Pod", QuotaOp::Add, None, &["spec.x"]),
        ];
        let problems = compile(&QuotaDefinition {
            limit: &limit,
            sources: &sources,
            scope_selectors: &[],
            namespace: None,
            namespace_selectors: &[],
            per_claim_metrics: false,
        })
        .unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    fn claim(uid: &str, usage: &str) -> QuotaClaim {
        QuotaClaim {
            uid: uid.into(),
            usage: Quantity(usage.into()),
            ..Default::default()
        }
    }

    fn reservation(uid: &str, usage: &str, time: i64) -> QuotaReservation {
        QuotaReservation {
            uid: uid.into(),
            usage: Quantity(usage.into()),
            time: k8s_openapi::jiff::Timestamp::from_second(time)
                .unwrap()
                .to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn reservations_hold_a_share_until_expired_or_deleted() {
        let now = 1_800_000_000;
        let claims = [claim("a", "1"), claim("b", "1")];
        // A third object fits a limit of 3; its reservation then holds the last unit.
        let held = admit(3000, &claims, &[], reservation("c", "1", now), 1000, now)
            .unwrap()
            .unwrap();
        assert_eq!(held.len(), 1);
        let refused = admit(3000, &claims, &held, reservation("d", "1", now), 1000, now).unwrap_err();
        assert_eq!(
            refused.describe(),
            "requested 1, used 2, in flight 1, limit 3 (available 0)"
        );
        // Once counted, the reservation is no longer in flight (never counted twice); the controller
        // keeps it until the TTL, or until it sees the object deleted.
        let counted = [claim("a", "1"), claim("b", "1"), claim("c", "1")];
        let refused = admit(3000, &counted, &held, reservation("d", "1", now), 1000, now).unwrap_err();
        assert_eq!((refused.used, refused.in_flight), (3000, 0));
        assert_eq!(pending_reservations(&held, now, |_| false).len(), 1);
        assert!(pending_reservations(&held, now, |uid| uid == "c").is_empty());
        // A writer whose view lacks `c` writes the claims without it: the reservation still holds.
        assert!(admit(3000, &claims, &held, reservation("d", "1", now), 1000, now).is_err());
        // A reservation whose write never happened stops counting after the TTL.
        let later = now + RESERVATION_TTL_SECONDS;
        assert!(admit(3000, &claims, &held, reservation("d", "1", later), 1000, later).is_ok());
        assert!(pending_reservations(&held, later, |_| false).is_empty());
        // A write that does not raise an object's usage needs no reservation, even over the limit.
        let over = [claim("a", "5")];
        assert_eq!(
            admit(3000, &over, &[], reservation("a", "4", now), 4000, now),
            Ok(None)
        );
        // An update that raises it asks only for the difference.
        let grown = admit(6000, &over, &[], reservation("a", "6", now), 6000, now)
            .unwrap()
            .unwrap();
        assert_eq!(grown.len(), 1);
        assert!(admit(6000, &over, &grown, reservation("b", "1", now), 1000, now).is_err());
        let counted_grown = [claim("a", "6")];
        let refused = admit(
            7000,
            &counted_grown,
            &grown,
            reservation("b", "2", now),
            2000,
            now,
        )
        .unwrap_err();
        assert_eq!(
            (refused.used, refused.in_flight),
            (6000, 0),
            "the claim and reservation of `a` count once"
        );
    }
}
