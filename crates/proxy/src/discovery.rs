//! Which resources are namespaced, from the API server's discovery documents, asked per group
//! version on first need and refreshed when older than a minute (or sooner when a resource is missing:
//! a CRD installed since).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use http::Method;
use parking_lot::Mutex;

use crate::upstream::ApiServer;

const FRESH: Duration = Duration::from_secs(60);
const RETRY_MISSING: Duration = Duration::from_secs(5);

struct Entry {
    fetched: Instant,
    namespaced: HashMap<String, bool>,
}

pub(crate) struct Discovery {
    api: ApiServer,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Discovery {
    pub(crate) fn new(api: ApiServer) -> Discovery {
        Discovery {
            api,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `resource` of `group`/`version` is namespaced; `None` when the API server does not
    /// know it.
    pub(crate) async fn namespaced(&self, group: &str, version: &str, resource: &str) -> Option<bool> {
        let key = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        {
            let entries = self.entries.lock();
            if let Some(entry) = entries.get(&key) {
                let age = entry.fetched.elapsed();
                match entry.namespaced.get(resource) {
                    Some(namespaced) if age < FRESH => return Some(*namespaced),
                    None if age < RETRY_MISSING => return None,
                    _ => {}
                }
            }
        }
        let (status, list) = self.api.json(Method::GET, &key, None).await.ok()?;
        if !status.is_success() {
            return None;
        }
        let namespaced: HashMap<String, bool> = list["resources"]
            .as_array()
            .map(|resources| {
                resources
                    .iter()
                    .filter_map(|r| Some((r["name"].as_str()?.to_owned(), r["namespaced"].as_bool()?)))
                    .collect()
            })
            .unwrap_or_default();
        let answer = namespaced.get(resource).copied();
        self.entries.lock().insert(
            key,
            Entry {
                fetched: Instant::now(),
                namespaced,
            },
        );
        answer
    }
}
