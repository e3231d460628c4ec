//! Authentication by static bearer tokens, and impersonation for callers RBAC allows to impersonate.

use std::collections::HashMap;

use axum::http::HeaderMap;

use crate::rbac::{Attributes, Authorizer};
use crate::status::ApiError;

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// Groups, including `system:authenticated`.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// A user with these groups plus `system:authenticated` (and, for a service account, its groups).
    pub fn new(name: &str, groups: &[&str]) -> UserInfo {
        let mut all: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        if let Some(ns) = name
            .strip_prefix("system:serviceaccount:")
            .and_then(|r| r.split_once(':'))
            .map(|(ns, _)| ns)
        {
            for g in [
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{ns}"),
            ] {
                if !all.contains(&g) {
                    all.push(g);
                }
            }
        }
        if !all.iter().any(|g| g == "system:authenticated") {
            all.push("system:authenticated".to_owned());
        }
        UserInfo {
            name: name.to_owned(),
            groups: all,
        }
    }
}

/// How tokens issued by TokenRequest begin (they are bound to their service account).
pub const BOUND_TOKEN_PREFIX: &str = "testkit-sa-";

/// The token table.
#[derive(Debug, Default, Clone)]
pub struct Tokens(HashMap<String, UserInfo>);

impl Tokens {
    /// Adds a token.
    pub fn insert(&mut self, token: String, user: UserInfo) {
        self.0.insert(token, user);
    }

    /// Removes a token (a revoked credential).
    pub fn revoke(&mut self, token: &str) {
        self.0.remove(token);
    }

    /// Revokes the TokenRequest tokens of a service account (it was deleted).
    pub fn revoke_bound(&mut self, user: &str) {
        self.0
            .retain(|token, info| !(token.starts_with(BOUND_TOKEN_PREFIX) && info.name == user));
    }

    /// The user a token stands for.
    pub fn lookup(&self, token: &str) -> Option<&UserInfo> {
        self.0.get(token)
    }

    /// Authenticates a request by its bearer token. Anonymous requests are refused.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(ApiError::unauthorized)?;
        self.lookup(token).cloned().ok_or_else(ApiError::unauthorized)
    }
}

/// Applies `Impersonate-User` / `Impersonate-Group`, if present, after checking the caller may
/// impersonate each of them.
pub fn impersonate(
    caller: UserInfo,
    headers: &HeaderMap,
    authorizer: &Authorizer<'_>,
) -> Result<UserInfo, ApiError> {
    // As the API server reads them: the raw bytes (Go strings), UTF-8 included.
    let text = |v: &axum::http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    let user = headers.get("impersonate-user").map(text);
    let groups: Vec<String> = headers.get_all("impersonate-group").iter().map(text).collect();
    let Some(user) = user else {
        if groups.is_empty() {
            return Ok(caller);
        }
        return Err(ApiError::internal(format!(
            "requested [{}] without impersonating a user",
            groups
                .iter()
                .map(|g| format!("{{Group  {g}  authentication.k8s.io/v1  }}"))
                .collect::<Vec<_>>()
                .join(" ")
        )));
    };
    let check = |attrs: Attributes| -> Result<(), ApiError> {
        if authorizer.allows(&caller, &attrs) {
            Ok(())
        } else {
            Err(ApiError::forbidden(attrs.forbidden_message(&caller.name)))
        }
    };
    match user
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, name)) => check(Attributes::resource(
            "impersonate",
            "",
            "serviceaccounts",
            Some(ns),
            Some(name),
        ))?,
        None => check(Attributes::resource(
            "impersonate",
            "",
            "users",
            None,
            Some(&user),
        ))?,
    }
    for group in &groups {
        check(Attributes::resource(
            "impersonate",
            "",
            "groups",
            None,
            Some(group),
        ))?;
    }
    let group_refs: Vec<&str> = groups.iter().map(String::as_str).collect();
    Ok(UserInfo::new(&user, &group_refs))
}
