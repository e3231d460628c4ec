//! Who is calling: bearer tokens reviewed by the API server (results cached for a short TTL, failures
//! too), client certificates verified during the TLS handshake, and `Impersonate-*` headers honoured
//! only when a SubjectAccessReview allows them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_policy::Caller;
use http::{HeaderMap, HeaderValue, Method, header};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::metrics::ProxyMetrics;
use crate::upstream::{ApiServer, UpstreamError};

/// The group every authenticated caller is in.
const AUTHENTICATED: &str = "system:authenticated";

/// How many distinct tokens the cache holds before it drops the expired ones (and, if still full,
/// everything): a flood of random tokens costs memory only up to this bound.
const MAX_TOKENS: usize = 50_000;

/// How many TokenReviews the proxy has in flight at most: however many unknown tokens arrive at once
/// (random ones, from an attacker), the API server sees no more than this many reviews at a time.
pub const REVIEWS_IN_FLIGHT: usize = 16;

/// How many requests with an unknown token may wait for a review; beyond that they are answered 429
/// at once, so a flood of random tokens queues neither memory nor work without bound.
pub const REVIEWS_WAITING: usize = 256;

/// Why a caller was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    /// 401: no credentials, or ones the API server rejects.
    Unauthenticated(String),
    /// 403: authenticated, but asked for something it may not (impersonation).
    Forbidden(String),
    /// 503: the API server could not be asked.
    Unavailable(String),
    /// 429: too many unknown tokens are waiting for a review.
    Busy(String),
}

/// Why a review could not be made.
enum ReviewFailed {
    Upstream(UpstreamError),
    Busy,
}

/// One request counted among those waiting for a review, for as long as this lives.
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    /// Counts one more, unless `bound` are waiting already.
    fn enter(count: &'a std::sync::atomic::AtomicUsize, bound: usize) -> Option<Waiting<'a>> {
        use std::sync::atomic::Ordering;
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < bound).then_some(n + 1)
            })
            .ok()
            .map(|_| Waiting(count))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The identity from a verified client certificate, attached to each request of the connection.
#[derive(Clone, Debug)]
pub struct ClientCertificate(pub Caller);

type Outcome = Result<Caller, String>;

struct Slot {
    created: Instant,
    outcome: OnceCell<Outcome>,
}

/// Bearer-token authentication with a TTL cache of TokenReview answers, shared by all requests: a
/// token is reviewed at most once per TTL, however many requests carry it at once.
pub struct Authenticator {
    api: ApiServer,
    ttl: Duration,
    slots: Mutex<HashMap<[u8; 32], Arc<Slot>>>,
    metrics: ProxyMetrics,
    reviews: tokio::sync::Semaphore,
    waiting: std::sync::atomic::AtomicUsize,
}

impl Authenticator {
    /// An authenticator that asks `api` and remembers answers for `ttl`.
    pub fn new(api: ApiServer, ttl: Duration, metrics: ProxyMetrics) -> Authenticator {
        Authenticator {
            api,
            ttl,
            slots: Mutex::new(HashMap::new()),
            metrics,
            reviews: tokio::sync::Semaphore::new(REVIEWS_IN_FLIGHT),
            waiting: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The caller behind a request: its client certificate, else its bearer token; then, if it asks to
    /// impersonate someone, that identity once the API server confirms the caller may.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        certificate: Option<&ClientCertificate>,
    ) -> Result<Caller, Rejection> {
        let caller = match bearer_token(headers) {
            Some(token) => self.review(token).await?,
            None => match certificate {
                Some(ClientCertificate(caller)) => caller.clone(),
                None => {
                    return Err(Rejection::Unauthenticated(
                        "Unauthorized: anonymous requests are not accepted".into(),
                    ));
                }
            },
        };
        let caller = self.impersonated(caller, headers).await?;
        forwardable(&caller).map_err(Rejection::Forbidden)?;
        Ok(caller)
    }

    async fn review(&self, token: &str) -> Result<Caller, Rejection> {
        let key = ring_sha256(token.as_bytes());
        let slot = {
            let mut slots = self.slots.lock();
            let now = Instant::now();
            match slots.get(&key) {
                Some(slot) if now.duration_since(slot.created) < self.ttl => slot.clone(),
                _ => {
                    if slots.len() >= MAX_TOKENS {
                        slots.retain(|_, s| now.duration_since(s.created) < self.ttl);
                        if slots.len() >= MAX_TOKENS {
                            slots.clear();
                        }
                    }
                    let slot = Arc::new(Slot {
                        created: now,
                        outcome: OnceCell::new(),
                    });
                    slots.insert(key, slot.clone());
                    slot
                }
            }
        };
        let mut reviewed = false;
        let outcome = slot
            .outcome
            .get_or_try_init(|| {
                reviewed = true;
                self.token_review(token)
            })
            .await;
        self.metrics
            .token_cache
            .with_label_values(&[if reviewed { "miss" } else { "hit" }])
            .inc();
        match outcome {
            Ok(Ok(caller)) => Ok(caller.clone()),
            Ok(Err(reason)) => Err(Rejection::Unauthenticated(reason.clone())),
            Err(failed) => {
                // Not remembered: the next request asks again.
                self.slots.lock().remove(&key);
                Err(match failed {
                    ReviewFailed::Upstream(error) => {
                        Rejection::Unavailable(format!("cannot authenticate the request: {error}"))
                    }
                    ReviewFailed::Busy => Rejection::Busy(
                        "too many requests with new credentials are waiting to be authenticated; retry"
                            .into(),
                    ),
                })
            }
        }
    }

    async fn token_review(&self, token: &str) -> Result<Outcome, ReviewFailed> {
        // Counted as waiting until a permit is had, also when the request goes away meanwhile.
        let waiting = Waiting::enter(&self.waiting, REVIEWS_WAITING).ok_or(ReviewFailed::Busy)?;
        let permit = self.reviews.acquire().await;
        drop(waiting);
        let answer = self
            .create_review("authentication.k8s.io", "TokenReview", json!({"token": token}))
            .await
            .map_err(ReviewFailed::Upstream)?;
        drop(permit);
        Ok(token_review_outcome(&answer))
    }

    /// Creates a review object (TokenReview, SubjectAccessReview) as Bulkhead and returns the answer.
    async fn create_review(&self, group: &str, kind: &str, spec: Value) -> Result<Value, UpstreamError> {
        let review = json!({"apiVersion": format!("{group}/v1"), "kind": kind, "spec": spec});
        let path = format!("/apis/{group}/v1/{}s", kind.to_lowercase());
        let (status, answer) = self.api.json(Method::POST, &path, Some(&review)).await?;
        if !status.is_success() {
            return Err(UpstreamError::Malformed(format!(
                "{kind} answered {status}: {}",
                answer["message"].as_str().unwrap_or_default()
            )));
        }
        Ok(answer)
    }

    async fn impersonated(&self, caller: Caller, headers: &HeaderMap) -> Result<Caller, Rejection> {
        let user = headers.get("impersonate-user");
        // Header values as the API server reads them: raw bytes as UTF-8 (Go's strings), none dropped.
        let groups: Vec<&str> = headers
            .get_all("impersonate-group")
            .iter()
            .map(header_text)
            .collect::<Result<_, _>>()?;
        let others: Vec<&str> = headers
            .keys()
            .map(|k| k.as_str())
            .filter(|k| {
                k.starts_with("impersonate-") && *k != "impersonate-user" && *k != "impersonate-group"
            })
            .collect();
        if user.is_none() && groups.is_empty() && others.is_empty() {
            return Ok(caller);
        }
        if !others.is_empty() {
            return Err(Rejection::Forbidden(format!(
                "impersonation headers {} are not supported through the proxy",
                others.join(", ")
            )));
        }
        let user = user.map(header_text).transpose()?;
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            return Err(Rejection::Forbidden(
                "requested impersonation of groups without impersonating a user".into(),
            ));
        };
        let mut asks = vec![impersonation_attributes("users", user)];
        asks.extend(groups.iter().map(|g| impersonation_attributes("groups", g)));
        for attributes in asks {
            let allowed = self
                .access_review(&caller, &attributes)
                .await
                .map_err(|e| Rejection::Unavailable(format!("cannot check impersonation: {e}")))?;
            if !allowed {
                let what = attributes["resource"].as_str().unwrap_or_default();
                let name = attributes["name"].as_str().unwrap_or_default();
                return Err(Rejection::Forbidden(format!(
                    "{what} \"{name}\" is forbidden: User \"{}\" cannot impersonate resource \"{what}\" in \
                     API group \"\" at the cluster scope",
                    caller.user
                )));
            }
        }
        let mut impersonated_groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        if !impersonated_groups.iter().any(|g| g == AUTHENTICATED) {
            impersonated_groups.push(AUTHENTICATED.to_owned());
        }
        Ok(Caller::new(user, impersonated_groups))
    }

    /// Whether the API server's authorizer allows `caller` what `attributes` describe.
    pub async fn access_review(&self, caller: &Caller, attributes: &Value) -> Result<bool, UpstreamError> {
        let spec = json!({"user": caller.user, "groups": caller.groups, "resourceAttributes": attributes});
        let answer = self
            .create_review("authorization.k8s.io", "SubjectAccessReview", spec)
            .await?;
        Ok(answer["status"]["allowed"].as_bool() == Some(true))
    }
}

/// What impersonating `name` as a `resource` (users or groups) takes; a service account's user name
/// is checked as the service account, as the API server does.
fn impersonation_attributes(resource: &str, name: &str) -> Value {
    if resource == "users"
        && let Some(rest) = name.strip_prefix(bulkhead_api::owner::SERVICE_ACCOUNT_PREFIX)
        && let Some((namespace, account)) = rest.split_once(':')
    {
        return json!({"verb": "impersonate", "resource": "serviceaccounts", "namespace": namespace, "name": account});
    }
    json!({"verb": "impersonate", "resource": resource, "name": name})
}

/// The bearer token of a request, if it carries one.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The caller a TokenReview answer names, or why it names none.
pub fn token_review_outcome(answer: &Value) -> Outcome {
    let status = &answer["status"];
    if status["authenticated"].as_bool() != Some(true) {
        let error = status["error"].as_str().filter(|e| !e.is_empty());
        return Err(format!(
            "Unauthorized: {}",
            error.unwrap_or("the token was not accepted")
        ));
    }
    let user = status["user"]["username"].as_str().unwrap_or_default();
    if user.is_empty() {
        return Err("Unauthorized: the token names no user".into());
    }
    let mut groups: Vec<String> = status["user"]["groups"]
        .as_array()
        .map(|g| g.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    if !groups.iter().any(|g| g == AUTHENTICATED) {
        groups.push(AUTHENTICATED.to_owned());
    }
    Ok(Caller::new(user, groups))
}

/// A header value as the API server reads it (Go keeps the bytes as a string): UTF-8, or refused.
fn header_text(value: &HeaderValue) -> Result<&str, Rejection> {
    std::str::from_utf8(value.as_bytes())
        .map_err(|_| Rejection::Forbidden("an impersonation header is not UTF-8".into()))
}

/// Whether `caller`'s user and groups reach the API server exactly as the proxy judged them, in the
/// Impersonate-User and Impersonate-Group headers: HTTP trims a value's leading and trailing spaces
/// and tabs, and a control character cannot be sent at all, so a name with either would arrive as
/// another name, or not at all (and the request would go as Bulkhead). Such a caller is refused.
pub fn forwardable(caller: &Caller) -> Result<(), String> {
    let exact = |text: &str| {
        !text.starts_with([' ', '\t'])
            && !text.ends_with([' ', '\t'])
            && HeaderValue::from_bytes(text.as_bytes()).is_ok()
    };
    if caller.user.is_empty() {
        return Err("the caller has no user name".into());
    }
    if !exact(&caller.user) {
        return Err(format!(
            "user {:?} cannot pass through the proxy: a leading or trailing space or tab, or a control character, would reach the API server as another name",
            caller.user
        ));
    }
    if let Some(group) = caller.groups.iter().find(|g| !exact(g)) {
        return Err(format!(
            "group {group:?} of user {:?} cannot pass through the proxy: a leading or trailing space or tab, or a control character, would reach the API server as another name",
            caller.user
        ));
    }
    Ok(())
}

/// The identity of a client certificate, as the API server reads it: the subject's common name is the
/// user, its organizations are the groups. A subject the API server might read otherwise is refused:
/// more than one common name (Go keeps the last, a first-match reader the first), or a name or
/// organization in a string type that does not decode here (it would be a group the API server sees
/// and the proxy does not).
pub fn certificate_identity(der: &[u8]) -> Option<Caller> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = certificate.subject();
    let mut names = subject.iter_common_name();
    let user = names.next()?.as_str().ok()?.to_owned();
    if user.is_empty() || names.next().is_some() {
        return None;
    }
    let mut groups: Vec<String> = subject
        .iter_organization()
        .map(|o| o.as_str().map(str::to_owned))
        .collect::<Result<_, _>>()
        .ok()?;
    groups.push(AUTHENTICATED.to_owned());
    Some(Caller::new(user, groups))
}

fn ring_sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_stops_counting_as_waiting_however_it_ends() {
        let count = std::sync::atomic::AtomicUsize::new(0);
        let first = Waiting::enter(&count, 2).unwrap();
        let second = Waiting::enter(&count, 2).unwrap();
        assert!(Waiting::enter(&count, 2).is_none(), "the bound holds");
        // A request that goes away while waiting (its future dropped) frees its place.
        drop(second);
        let third = Waiting::enter(&count, 2).unwrap();
        drop((first, third));
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn token_reviews_become_callers_or_reasons() {
        let ok =
            json!({"status": {"authenticated": true, "user": {"username": "alice", "groups": ["devs"]}}});
        assert_eq!(
            token_review_outcome(&ok),
            Ok(Caller::new("alice", ["devs", AUTHENTICATED]))
        );
        let bad = json!({"status": {"authenticated": false, "error": "token expired"}});
        assert_eq!(
            token_review_outcome(&bad),
            Err("Unauthorized: token expired".into())
        );
        assert!(token_review_outcome(&json!({})).is_err());
        let nameless = json!({"status": {"authenticated": true, "user": {}}});
        assert!(token_review_outcome(&nameless).is_err());
    }

    #[test]
    fn bearer_tokens_are_read_strictly() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "bearer   ".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, "Basic YTpi".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
    }

    #[test]
    fn impersonating_a_service_account_is_checked_as_the_service_account() {
        assert_eq!(
            impersonation_attributes("users", "system:serviceaccount:ci:deployer"),
            json!({"verb": "impersonate", "resource": "serviceaccounts", "namespace": "ci", "name": "deployer"})
        );
        assert_eq!(
            impersonation_attributes("users", "admin"),
            json!({"verb": "impersonate", "resource": "users", "name": "admin"})
        );
    }

    #[test]
    fn certificates_name_user_and_groups() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "carol");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "solar-devs");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            certificate_identity(cert.der()),
            Some(Caller::new("carol", ["solar-devs", AUTHENTICATED]))
        );
        assert_eq!(certificate_identity(b"not a certificate"), None);
    }

    #[test]
    fn only_names_that_reach_the_api_server_unchanged_are_forwarded() {
        let caller = |user: &str, group: &str| Caller::new(user, [group]);
        assert_eq!(forwardable(&caller("josé", "équipe")), Ok(()));
        assert_eq!(forwardable(&caller("a b", "x y")), Ok(()));
        for (user, group) in [
            (" alice", "g"),
            ("alice ", "g"),
            ("alice\t", "g"),
            ("al\nice", "g"),
            ("alice", " admins"),
            ("alice", "admins\r"),
            ("alice", "a\u{0}"),
        ] {
            assert!(forwardable(&caller(user, group)).is_err(), "{user:?} {group:?}");
        }
        assert!(forwardable(&caller("", "g")).is_err());
    }
}
