//! ResourcePools: which claims bind, and what each selected namespace's ResourceQuota holds.
//!
//! A namespace takes from its pool, per resource, the larger of what its ResourceQuota grants (the
//! pool's defaults plus its bound claims) and what it uses. Counting use as well as grants is what
//! closes capsule#1662: a claim released while what it paid for still runs leaves that use counted in
//! the namespace, so a claim elsewhere cannot take the same room again. A claim binds when what it
//! adds to its namespace's take fits in what the pool has left. Bound claims keep their place; the
//! rest queue by creation time, then name, then namespace.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quota::{format_millis, parse_millis};

/// Amounts in thousandths, by resource name.
pub type Amounts = BTreeMap<String, i128>;

/// A pool as [`plan`] needs it.
#[derive(Clone, Debug, Default)]
pub struct Pool {
    /// Its name, for messages.
    pub name: String,
    /// What it holds.
    pub hard: Amounts,
    /// What every namespace's quota holds before claims (any resource, as written).
    pub defaults: BTreeMap<String, Quantity>,
    /// Every pooled resource starts at 0 in each namespace.
    pub defaults_zero: bool,
    /// Claims bind strictly in order.
    pub ordered_queue: bool,
}

/// A claim as [`plan`] needs it.
#[derive(Clone, Debug, Default)]
pub struct Claim {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its creation time (RFC 3339: sorts as text).
    pub created: String,
    /// What it claims, as written.
    pub claim: BTreeMap<String, Quantity>,
    /// Whether it is bound to this pool now, with these amounts (bound claims keep their place).
    pub bound: bool,
}

/// A namespace's pool quota as observed: the limits in force and what is used.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// `spec.hard` (the higher of the cached and the last written).
    pub in_force: BTreeMap<String, Quantity>,
    /// `status.used`.
    pub used: BTreeMap<String, Quantity>,
}

/// Why a claim is not bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Bound.
    Bound,
    /// The pool has not enough left: per resource, asked and left.
    PoolExhausted(Vec<(String, i128, i128)>),
    /// An older claim waits for these resources (ordered queue).
    QueueExhausted(Vec<String>),
    /// It can never bind as it is.
    Failed(String),
}

impl Outcome {
    /// The `Bound` condition's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Outcome::Bound => "Succeeded",
            Outcome::PoolExhausted(_) => "PoolExhausted",
            Outcome::QueueExhausted(_) => "QueueExhausted",
            Outcome::Failed(_) => "Failed",
        }
    }

    /// The `Bound` condition's message.
    pub fn message(&self, claim: &BTreeMap<String, Quantity>) -> String {
        match self {
            Outcome::Bound => "claimed resources".to_owned(),
            Outcome::PoolExhausted(short) => {
                let asked: Vec<String> = short
                    .iter()
                    .map(|(r, a, _)| format!("{r}={}", format_millis(*a)))
                    .collect();
                let left: Vec<String> = short
                    .iter()
                    .map(|(r, _, l)| format!("{r}={}", format_millis(*l)))
                    .collect();
                format!("requested: {}, available: {}", asked.join(","), left.join(","))
            }
            Outcome::QueueExhausted(resources) => {
                let asked: Vec<String> = resources
                    .iter()
                    .map(|r| format!("{r}={}", claim.get(r).map_or("", |q| q.0.as_str())))
                    .collect();
                format!(
                    "requested: {}; an older claim is queued for {} (orderedQueue)",
                    asked.join(","),
                    resources.join(",")
                )
            }
            Outcome::Failed(why) => why.clone(),
        }
    }
}

/// What [`plan`] decides.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Per claim (same order as given): the outcome, and whether what its namespace uses needs it.
    pub claims: Vec<(Outcome, bool)>,
    /// What each selected namespace's quota should hold.
    pub hard: BTreeMap<String, BTreeMap<String, Quantity>>,
    /// Per pooled resource: what is taken.
    pub claimed: Amounts,
    /// Per pooled resource: what queued claims ask for in all, when more than is left.
    pub exhausted: Amounts,
}

/// The claims' amounts parsed; a resource the pool does not hold, or an amount that is not a
/// non-negative quantity, fails the claim.
fn parse_claim(pool: &Pool, claim: &Claim) -> Result<Amounts, String> {
    let mut out = Amounts::new();
    for (resource, q) in &claim.claim {
        let Some(millis) = parse_millis(&q.0).filter(|m| *m >= 0) else {
            return Err(format!("{resource}: {:?} is not a quantity", q.0));
        };
        if !pool.hard.contains_key(resource) {
            return Err(format!(
                "resource {resource} cannot be claimed from ResourcePool {}: it holds {}",
                pool.name,
                pool.hard.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        out.insert(resource.clone(), millis);
    }
    Ok(out)
}

fn amount(map: &BTreeMap<String, Quantity>, resource: &str) -> Option<i128> {
    map.get(resource).and_then(|q| parse_millis(&q.0))
}

/// Decides which of `claims` bind, given the selected namespaces and their quotas as observed.
/// Claims in namespaces not selected fail.
pub fn plan(
    pool: &Pool,
    namespaces: &BTreeSet<String>,
    claims: &[Claim],
    observed: &BTreeMap<String, Observed>,
) -> Plan {
    // What each namespace's quota grants before claims.
    let mut grant: BTreeMap<String, BTreeMap<String, i128>> = BTreeMap::new();
    for ns in namespaces {
        let g = grant.entry(ns.clone()).or_default();
        if pool.defaults_zero {
            for r in pool.hard.keys() {
                g.insert(r.clone(), 0);
            }
        }
        for (r, q) in &pool.defaults {
            if let Some(m) = parse_millis(&q.0) {
                g.insert(r.clone(), m);
            }
        }
    }
    let used = |ns: &str, r: &str| -> i128 { observed.get(ns).and_then(|o| amount(&o.used, r)).unwrap_or(0) };
    // What a namespace takes of a pooled resource: the larger of grant and use; a resource its quota
    // does not name is not limited there, and its use is not tracked.
    let take = |g: Option<i128>, u: i128| g.map_or(0, |g| g.max(u));
    let mut claimed = Amounts::new();
    for r in pool.hard.keys() {
        let total = namespaces
            .iter()
            .map(|ns| take(grant[ns].get(r).copied(), used(ns, r)))
            .sum();
        claimed.insert(r.clone(), total);
    }
    let mut order: Vec<usize> = (0..claims.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&claims[a], &claims[b]);
        (!x.bound, &x.created, &x.name, &x.namespace).cmp(&(!y.bound, &y.created, &y.name, &y.namespace))
    });
    let mut outcomes: Vec<Option<Outcome>> = vec![None; claims.len()];
    let mut parsed: Vec<Amounts> = vec![Amounts::new(); claims.len()];
    let mut blocked: BTreeSet<String> = BTreeSet::new();
    let mut exhausted = Amounts::new();
    for i in order {
        let claim = &claims[i];
        if !namespaces.contains(&claim.namespace) {
            outcomes[i] = Some(Outcome::Failed(format!(
                "namespace {} may not claim from ResourcePool {}: the pool's selectors do not select it",
                claim.namespace, pool.name
            )));
            continue;
        }
        let amounts = match parse_claim(pool, claim) {
            Ok(a) => a,
            Err(why) => {
                outcomes[i] = Some(Outcome::Failed(why));
                continue;
            }
        };
        let g = grant.get(&claim.namespace).cloned().unwrap_or_default();
        let costs: Vec<(String, i128)> = amounts
            .iter()
            .map(|(r, add)| {
                let u = used(&claim.namespace, r);
                let before = take(g.get(r).copied(), u);
                let after = take(Some(g.get(r).copied().unwrap_or(0) + add), u);
                (r.clone(), after - before)
            })
            .collect();
        if !claim.bound && pool.ordered_queue {
            let waiting: Vec<String> = amounts.keys().filter(|r| blocked.contains(*r)).cloned().collect();
            if !waiting.is_empty() {
                for r in &waiting {
                    *exhausted.entry(r.clone()).or_default() += amounts[r];
                }
                outcomes[i] = Some(Outcome::QueueExhausted(waiting));
                continue;
            }
        }
        let short: Vec<(String, i128, i128)> = costs
            .iter()
            .filter(|(r, cost)| claimed[r] + cost > pool.hard[r])
            .map(|(r, _)| (r.clone(), amounts[r], (pool.hard[r] - claimed[r]).max(0)))
            .collect();
        if !short.is_empty() {
            for (r, asked, _) in &short {
                *exhausted.entry(r.clone()).or_default() += asked;
                if pool.ordered_queue {
                    blocked.insert(r.clone());
                }
            }
            outcomes[i] = Some(Outcome::PoolExhausted(short));
            continue;
        }
        for (r, cost) in costs {
            *claimed.entry(r).or_default() += cost;
        }
        let g = grant.entry(claim.namespace.clone()).or_default();
        for (r, add) in &amounts {
            *g.entry(r.clone()).or_default() += add;
        }
        parsed[i] = amounts;
        outcomes[i] = Some(Outcome::Bound);
    }
    // Exhaustion is reported against what is left after every bound claim.
    exhausted.retain(|r, asked| *asked > pool.hard[r] - claimed[r]);
    let hard: BTreeMap<String, BTreeMap<String, Quantity>> = grant
        .iter()
        .map(|(ns, g)| {
            (
                ns.clone(),
                g.iter()
                    .map(|(r, m)| {
                        // A default the pool does not hold stays as written (`count/pvc: 3`).
                        let q = match pool.defaults.get(r) {
                            Some(written) if !pool.hard.contains_key(r) => written.clone(),
                            _ => Quantity(format_millis(*m)),
                        };
                        (r.clone(), q)
                    })
                    .collect(),
            )
        })
        .collect();
    let claims_out = claims
        .iter()
        .zip(outcomes)
        .zip(&parsed)
        .map(|((claim, outcome), amounts)| {
            let outcome = outcome.unwrap_or(Outcome::Failed("not planned".into()));
            let in_use = outcome == Outcome::Bound
                && amounts.iter().any(|(r, add)| {
                    let granted = grant
                        .get(&claim.namespace)
                        .and_then(|g| g.get(r))
                        .copied()
                        .unwrap_or(0);
                    used(&claim.namespace, r) > granted - add
                });
            (outcome, in_use)
        })
        .collect();
    Plan {
        claims: claims_out,
        hard,
        claimed,
        exhausted,
    }
}

/// A claim's amounts that are not non-negative quantities, as `resource: "text"`; `None` when all are.
/// The webhook (and `bulkhead check`) refuse such a claim with this message.
pub fn bad_quantities(name: &str, claim: &BTreeMap<String, Quantity>) -> Option<String> {
    let bad: Vec<String> = claim
        .iter()
        .filter(|(_, q)| parse_millis(&q.0).is_none_or(|m| m < 0))
        .map(|(r, q)| format!("{r}: {:?}", q.0))
        .collect();
    (!bad.is_empty()).then(|| {
        format!(
            "ResourcePoolClaim {name}: not a non-negative quantity: {}",
            bad.join(", ")
        )
    })
}

/// The resources of a bound claim (`allocation`) that its namespace's quota (`hard`, `used`) cannot
/// do without: releasing the claim would leave less than is used. Empty when the claim may go.
pub fn needed(
    allocation: &BTreeMap<String, Quantity>,
    hard: &BTreeMap<String, Quantity>,
    used: &BTreeMap<String, Quantity>,
) -> Vec<String> {
    allocation
        .iter()
        .filter_map(|(r, q)| {
            let add = parse_millis(&q.0)?;
            let h = amount(hard, r)?;
            let u = amount(used, r).unwrap_or(0);
            (u > h - add).then(|| {
                format!(
                    "{r}: {} used of {}, {} without this claim",
                    format_millis(u),
                    format_millis(h),
                    format_millis(h - add)
                )
            })
        })
        .collect()
}

/// Resources whose `hard` a pool update lowers below what is taken (`claimed`, from its status).
pub fn shrinks_below_claimed(
    new_hard: &BTreeMap<String, Quantity>,
    claimed: &BTreeMap<String, Quantity>,
) -> Vec<String> {
    claimed
        .iter()
        .filter_map(|(r, q)| {
            let taken = parse_millis(&q.0)?;
            if taken <= 0 {
                return None;
            }
            match amount(new_hard, r) {
                Some(h) if h >= taken => None,
                Some(h) => Some(format!(
                    "{r}: {} is taken, more than the new {}",
                    format_millis(taken),
                    format_millis(h)
                )),
                None => Some(format!(
                    "{r}: {} is taken; it cannot be removed",
                    format_millis(taken)
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
            .collect()
    }

    fn pool(hard: &[(&str, &str)]) -> Pool {
        Pool {
            name: "p".into(),
            hard: q(hard)
                .into_iter()
                .map(|(k, v)| (k, parse_millis(&v.0).unwrap()))
                .collect(),
            defaults_zero: true,
            ..Pool::default()
        }
    }

    fn claim(ns: &str, name: &str, created: &str, amounts: &[(&str, &str)], bound: bool) -> Claim {
        Claim {
            namespace: ns.into(),
            name: name.into(),
            created: created.into(),
            claim: q(amounts),
            bound,
        }
    }

    fn namespaces(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn claims_bind_in_order_while_there_is_room_and_a_smaller_later_one_skips_the_line() {
        let p = pool(&[("requests.memory", "2Gi")]);
        let claims = [
            claim(
                "a",
                "first",
                "2026-01-01T00:00:00Z",
                &[("requests.memory", "1536Mi")],
                false,
            ),
            claim(
                "a",
                "big",
                "2026-01-01T00:00:01Z",
                &[("requests.memory", "1Gi")],
                false,
            ),
            claim(
                "b",
                "small",
                "2026-01-01T00:00:02Z",
                &[("requests.memory", "512Mi")],
                false,
            ),
        ];
        let plan = plan(&p, &namespaces(&["a", "b"]), &claims, &BTreeMap::new());
        assert_eq!(plan.claims[0].0, Outcome::Bound);
        assert!(matches!(plan.claims[1].0, Outcome::PoolExhausted(_)));
        assert_eq!(
            plan.claims[1].0.message(&claims[1].claim),
            "requested: requests.memory=1Gi, available: requests.memory=512Mi"
        );
        assert_eq!(plan.claims[2].0, Outcome::Bound);
        assert_eq!(plan.hard["a"]["requests.memory"].0, "1536Mi");
        assert_eq!(plan.hard["b"]["requests.memory"].0, "512Mi");
        // With an ordered queue the small one waits behind the big one.
        let ordered = Pool {
            ordered_queue: true,
            ..p
        };
        let plan = super::plan(&ordered, &namespaces(&["a", "b"]), &claims, &BTreeMap::new());
        assert!(matches!(plan.claims[1].0, Outcome::PoolExhausted(_)));
        assert_eq!(
            plan.claims[2].0,
            Outcome::QueueExhausted(vec!["requests.memory".into()])
        );
        assert_eq!(plan.hard["b"]["requests.memory"].0, "0");
    }

    #[test]
    fn use_beyond_a_released_claim_still_counts_so_moving_claims_frees_nothing() {
        // capsule#1662: namespace a used all 4 CPUs under a claim since deleted; a claim in b must not
        // get them again.
        let p = pool(&[("requests.cpu", "4")]);
        let claims = [claim(
            "b",
            "moved",
            "2026-01-01T00:00:00Z",
            &[("requests.cpu", "4")],
            false,
        )];
        let observed = BTreeMap::from([(
            "a".to_owned(),
            Observed {
                in_force: q(&[("requests.cpu", "0")]),
                used: q(&[("requests.cpu", "4")]),
            },
        )]);
        let plan = plan(&p, &namespaces(&["a", "b"]), &claims, &observed);
        assert!(
            matches!(plan.claims[0].0, Outcome::PoolExhausted(_)),
            "{:?}",
            plan.claims
        );
        assert_eq!(plan.claimed["requests.cpu"], 4000);
        assert_eq!(plan.hard["b"]["requests.cpu"].0, "0");
        // A claim in a itself costs only what it adds beyond the use already counted.
        let claims = [claim(
            "a",
            "again",
            "2026-01-01T00:00:00Z",
            &[("requests.cpu", "4")],
            false,
        )];
        let plan = super::plan(&p, &namespaces(&["a", "b"]), &claims, &observed);
        assert_eq!(plan.claims[0], (Outcome::Bound, true));
    }

    #[test]
    fn a_bound_claim_keeps_its_place_and_a_changed_one_queues_again() {
        let p = pool(&[("pods", "10")]);
        let claims = [
            claim("a", "old", "2026-01-01T00:00:00Z", &[("pods", "6")], false),
            claim("a", "young", "2026-01-02T00:00:00Z", &[("pods", "6")], true),
        ];
        let plan = plan(&p, &namespaces(&["a"]), &claims, &BTreeMap::new());
        assert!(matches!(plan.claims[0].0, Outcome::PoolExhausted(_)));
        assert_eq!(plan.claims[1].0, Outcome::Bound);
    }

    #[test]
    fn claims_for_resources_the_pool_lacks_or_from_namespaces_it_does_not_select_fail() {
        let p = pool(&[("pods", "10")]);
        let claims = [
            claim("a", "cpu", "t", &[("requests.cpu", "1")], false),
            claim("z", "pods", "t", &[("pods", "1")], false),
            claim("a", "bad", "t", &[("pods", "many")], false),
        ];
        let plan = plan(&p, &namespaces(&["a"]), &claims, &BTreeMap::new());
        for (outcome, _) in &plan.claims {
            assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
        }
        assert!(
            plan.claims[0]
                .0
                .message(&claims[0].claim)
                .contains("cannot be claimed")
        );
    }

    #[test]
    fn defaults_are_granted_and_unpooled_defaults_stay_as_written() {
        let mut p = pool(&[("requests.cpu", "2")]);
        p.defaults = q(&[("count/persistentvolumeclaims", "3")]);
        let plan = plan(&p, &namespaces(&["a"]), &[], &BTreeMap::new());
        assert_eq!(
            plan.hard["a"],
            q(&[("count/persistentvolumeclaims", "3"), ("requests.cpu", "0")])
        );
        p.defaults_zero = false;
        let plan = super::plan(&p, &namespaces(&["a"]), &[], &BTreeMap::new());
        assert_eq!(plan.hard["a"], q(&[("count/persistentvolumeclaims", "3")]));
    }

    #[test]
    fn a_claim_is_needed_while_use_exceeds_what_is_left_without_it() {
        let alloc = q(&[("requests.cpu", "2")]);
        assert_eq!(
            needed(&alloc, &q(&[("requests.cpu", "4")]), &q(&[("requests.cpu", "3")])),
            ["requests.cpu: 3 used of 4, 2 without this claim"]
        );
        assert!(needed(&alloc, &q(&[("requests.cpu", "4")]), &q(&[("requests.cpu", "2")])).is_empty());
        assert_eq!(
            shrinks_below_claimed(&q(&[("pods", "3")]), &q(&[("pods", "5"), ("cpu", "1")])),
            [
                "cpu: 1 is taken; it cannot be removed",
                "pods: 5 is taken, more than the new 3"
            ]
        );
    }
}
