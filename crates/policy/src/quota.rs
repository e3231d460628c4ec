//! Resource quantities, and how a tenant-scope quota is shared by the tenant's namespaces.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A quantity in thousandths of its unit (`500m` -> 500, `2` -> 2000, `1Ki` -> 1_024_000).
/// `None` for text that is not a Kubernetes quantity.
pub fn parse_millis(text: &str) -> Option<i128> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (multiplier, exponent): (i128, i32) = match suffix {
        "" => (1, 0),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        s if s.starts_with(['e', 'E']) => (1, s[1..].parse().ok()?),
        _ => return None,
    };
    let negative = number.starts_with('-');
    let digits = number.trim_start_matches(['+', '-']);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let mantissa: i128 = format!("{whole}{fraction}").parse().ok()?;
    // value = mantissa * 10^(exponent - fraction digits) * multiplier, in thousandths, rounded up.
    let scale = exponent + 3 - i32::try_from(fraction.len()).ok()?;
    let value = if scale >= 0 {
        mantissa
            .checked_mul(10i128.checked_pow(u32::try_from(scale).ok()?)?)?
            .checked_mul(multiplier)?
    } else {
        let divisor = 10i128.checked_pow(u32::try_from(-scale).ok()?)?;
        (mantissa.checked_mul(multiplier)? + divisor - 1) / divisor
    };
    Some(if negative { -value } else { value })
}

/// Thousandths back to a quantity: binary suffixes where exact (`16Gi`), else whole units, else `m`.
pub fn format_millis(millis: i128) -> String {
    if millis % 1000 != 0 {
        return format!("{millis}m");
    }
    let units = millis / 1000;
    for (suffix, size) in [
        ("Ei", 1i128 << 60),
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if units != 0 && units % size == 0 && units.abs() >= size {
            return format!("{}{suffix}", units / size);
        }
    }
    units.to_string()
}

/// How a tenant-wide hard limit is shared by the tenant's namespaces: each may use what it uses now plus
/// an equal share of what the tenant as a whole has left (in whole units when the limit is whole; the
/// remainder goes one unit each to the first namespaces by name). The shares never add up to more than
/// the limit, so namespaces consuming at the same moment cannot overshoot it together; a namespace that
/// needs more than its share gets more as the controller shares again after each change of usage.
/// A resource whose limit cannot be read is given to every namespace as written.
pub fn share_tenant_hard<'a>(
    total: &BTreeMap<String, Quantity>,
    namespaces: &[&str],
    used: impl Fn(&str) -> Option<&'a BTreeMap<String, Quantity>>,
) -> BTreeMap<String, BTreeMap<String, Quantity>> {
    let mut sorted: Vec<&str> = namespaces.to_vec();
    sorted.sort_unstable();
    let mut out: BTreeMap<String, BTreeMap<String, Quantity>> = BTreeMap::new();
    for (resource, limit) in total {
        let usage_of = |ns: &str| {
            used(ns)
                .and_then(|u| u.get(resource))
                .and_then(|q| parse_millis(&q.0))
                .unwrap_or(0)
        };
        let Some(limit) = parse_millis(&limit.0) else {
            for ns in &sorted {
                out.entry((*ns).to_owned())
                    .or_default()
                    .insert(resource.clone(), limit.clone());
            }
            continue;
        };
        if sorted.is_empty() {
            continue;
        }
        let used_total: i128 = sorted.iter().map(|ns| usage_of(ns)).sum();
        let left = (limit - used_total).max(0);
        // Whole limits are shared in whole units (a quota of 7 pods is not split into 1750m each).
        let unit: i128 = if limit % 1000 == 0 { 1000 } else { 1 };
        let units = left / unit;
        let n = sorted.len() as i128;
        let (each, extra) = (units / n, units % n);
        for (i, ns) in sorted.iter().enumerate() {
            let share = (each + i128::from((i as i128) < extra)) * unit;
            let hard = usage_of(ns) + share;
            out.entry((*ns).to_owned())
                .or_default()
                .insert(resource.clone(), Quantity(format_millis(hard)));
        }
    }
    out
}

/// What may be applied now on the way to `shares` (from [`share_tenant_hard`]) so that the limits in
/// force never add up to more than the tenant's, whichever of the writes has landed and however stale
/// the usage the shares were computed from. A namespace may hold `max(limit in force, used)`; lowering
/// is always safe, and raises are paid only from what nobody may hold now (the tenant's limit minus
/// the sum of those). What a lowering frees is spent on the next pass, once the lowered quota is seen.
/// Usage read a moment late could otherwise hand the same pod to two namespaces.
pub fn raise_within_slack<'a>(
    total: &BTreeMap<String, Quantity>,
    mut shares: BTreeMap<String, BTreeMap<String, Quantity>>,
    used: impl Fn(&str) -> Option<&'a BTreeMap<String, Quantity>>,
    in_force: impl Fn(&str) -> Option<&'a BTreeMap<String, Quantity>>,
) -> BTreeMap<String, BTreeMap<String, Quantity>> {
    let names: Vec<String> = shares.keys().cloned().collect();
    for (resource, limit) in total {
        let Some(limit) = parse_millis(&limit.0) else {
            continue;
        };
        let read = |map: Option<&BTreeMap<String, Quantity>>| {
            map.and_then(|m| m.get(resource)).and_then(|q| parse_millis(&q.0))
        };
        let holds = |ns: &str| {
            let used = read(used(ns)).unwrap_or(0);
            read(in_force(ns)).map_or(used, |hard| hard.max(used))
        };
        let mut slack = (limit - names.iter().map(|ns| holds(ns)).sum::<i128>()).max(0);
        for ns in &names {
            let Some(wanted) = shares
                .get(ns)
                .and_then(|h| h.get(resource))
                .and_then(|q| parse_millis(&q.0))
            else {
                continue;
            };
            let now = holds(ns);
            if wanted <= now {
                continue;
            }
            let raise = (wanted - now).min(slack);
            slack -= raise;
            if let Some(hard) = shares.get_mut(ns) {
                hard.insert(resource.clone(), Quantity(format_millis(now + raise)));
            }
        }
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_like_kubernetes() {
        for (text, millis) in [
            ("1", 1000),
            ("500m", 500),
            ("0.5", 500),
            ("1.5", 1500),
            ("2k", 2_000_000),
            ("1Ki", 1_024_000),
            ("16Gi", 16 * (1i128 << 30) * 1000),
            ("1e3", 1_000_000),
            ("0.1m", 1),
            ("-2", -2000),
        ] {
            assert_eq!(parse_millis(text), Some(millis), "{text}");
        }
        for bad in ["", "abc", "1X", "1.2.3"] {
            assert_eq!(parse_millis(bad), None, "{bad}");
        }
        assert_eq!(format_millis(500), "500m");
        assert_eq!(format_millis(3000), "3");
        assert_eq!(format_millis(16 * (1i128 << 30) * 1000), "16Gi");
        assert_eq!(format_millis(1536 * 1000), "1536");
    }

    fn q(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
            .collect()
    }

    #[test]
    fn each_namespace_gets_its_usage_plus_an_equal_share_of_what_is_left() {
        let total = q(&[("pods", "10"), ("requests.memory", "4Gi")]);
        let usage = BTreeMap::from([
            ("a", q(&[("pods", "3"), ("requests.memory", "1Gi")])),
            ("b", q(&[("pods", "2")])),
        ]);
        let shared = share_tenant_hard(&total, &["c", "a", "b"], |ns| usage.get(ns));
        // 5 pods are left: 2, 2 and 1 by name; 3Gi of memory: 1Gi each.
        assert_eq!(shared["a"], q(&[("pods", "5"), ("requests.memory", "2Gi")]));
        assert_eq!(shared["b"], q(&[("pods", "4"), ("requests.memory", "1Gi")]));
        assert_eq!(shared["c"], q(&[("pods", "1"), ("requests.memory", "1Gi")]));
        // Over budget (usage counted before a lowered limit): nobody gets more than they use.
        let over = share_tenant_hard(&q(&[("pods", "4")]), &["a", "b"], |ns| usage.get(ns));
        assert_eq!(over["a"], q(&[("pods", "3")]));
        assert_eq!(over["b"], q(&[("pods", "2")]));
        // Fractional limits are shared in thousandths.
        let cpu = share_tenant_hard(&q(&[("requests.cpu", "1500m")]), &["a", "b"], |_| None);
        assert_eq!(cpu["a"], q(&[("requests.cpu", "750m")]));
    }

    #[test]
    fn raises_wait_for_the_lowerings_they_need() {
        let limit = q(&[("pods", "10")]);
        // a used 6 with 6 in force; b and c hold 2 each. Stale usage said a used 5: the shares give
        // b and c more than the tenant has left.
        let in_force = BTreeMap::from([
            ("a", q(&[("pods", "6")])),
            ("b", q(&[("pods", "2")])),
            ("c", q(&[("pods", "2")])),
        ]);
        let used = BTreeMap::from([
            ("a", q(&[("pods", "6")])),
            ("b", q(&[("pods", "1")])),
            ("c", q(&[("pods", "0")])),
        ]);
        let shares = BTreeMap::from([
            ("a".to_owned(), q(&[("pods", "5")])),
            ("b".to_owned(), q(&[("pods", "3")])),
            ("c".to_owned(), q(&[("pods", "2")])),
        ]);
        let now = raise_within_slack(&limit, shares.clone(), |ns| used.get(ns), |ns| in_force.get(ns));
        // Nothing is free yet (6 + 2 + 2): b waits; a's lowering (to 5, below its use) goes ahead.
        assert_eq!(now["a"], q(&[("pods", "5")]));
        assert_eq!(now["b"], q(&[("pods", "2")]));
        assert_eq!(now["c"], q(&[("pods", "2")]));
        // No quota in force yet (a new tenant): everything is free, the shares go through.
        let first = raise_within_slack(&limit, shares, |_| None, |_| None);
        assert_eq!(first["b"], q(&[("pods", "3")]));
    }

    #[test]
    fn whatever_lands_first_the_limits_in_force_stay_within_the_tenants() {
        // Random usage, limits in force and (possibly stale) shares: the sum over namespaces of
        // max(in force, new) never passes the limit, so no order of writes can overshoot it.
        for seed in 0..500u64 {
            let mut x = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut next = |m: u64| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 33) % m
            };
            let limit = 10 + next(20) as i128;
            let names: Vec<String> = (0..1 + next(5)).map(|i| format!("ns{i}")).collect();
            let mut in_force = BTreeMap::new();
            let mut used = BTreeMap::new();
            let mut budget = limit;
            for n in &names {
                let hard = next(budget as u64 + 1) as i128;
                budget -= hard;
                let use_now = next(hard as u64 + 1) as i128;
                in_force.insert(n.clone(), q(&[("pods", &hard.to_string())]));
                used.insert(n.clone(), q(&[("pods", &use_now.to_string())]));
            }
            let stale: BTreeMap<String, BTreeMap<String, Quantity>> = names
                .iter()
                .map(|n| (n.clone(), q(&[("pods", &next(limit as u64).to_string())])))
                .collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let total = q(&[("pods", &limit.to_string())]);
            let shares = share_tenant_hard(&total, &refs, |ns| stale.get(ns));
            let now = raise_within_slack(&total, shares, |ns| used.get(ns), |ns| in_force.get(ns));
            let worst: i128 = names
                .iter()
                .map(|n| {
                    let new = parse_millis(&now[n]["pods"].0).unwrap();
                    let old = parse_millis(&in_force[n]["pods"].0).unwrap();
                    new.max(old)
                })
                .sum();
            assert!(worst <= limit * 1000, "seed {seed}: {worst} > {limit}");
        }
    }

    #[test]
    fn the_shares_never_add_up_to_more_than_the_limit() {
        // Any usage, any number of namespaces: the sum of the hard limits is the limit, or the usage when over.
        for limit in [0i128, 1, 7, 10, 33, 100] {
            for namespaces in 1..=6usize {
                for seed in 0..20u64 {
                    let names: Vec<String> = (0..namespaces).map(|i| format!("ns{i}")).collect();
                    let usage: BTreeMap<String, BTreeMap<String, Quantity>> = names
                        .iter()
                        .enumerate()
                        .map(|(i, n)| {
                            (
                                n.clone(),
                                q(&[("pods", &((seed as usize * 7 + i * 3) % 6).to_string())]),
                            )
                        })
                        .collect();
                    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                    let shared =
                        share_tenant_hard(&q(&[("pods", &limit.to_string())]), &refs, |ns| usage.get(ns));
                    let sum: i128 = shared.values().map(|h| parse_millis(&h["pods"].0).unwrap()).sum();
                    let used: i128 = usage.values().map(|u| parse_millis(&u["pods"].0).unwrap()).sum();
                    assert_eq!(
                        sum,
                        (limit * 1000).max(used),
                        "limit {limit}, {namespaces} namespaces, seed {seed}"
                    );
                    for (n, hard) in &shared {
                        assert!(
                            parse_millis(&hard["pods"].0).unwrap()
                                >= parse_millis(&usage[n]["pods"].0).unwrap()
                        );
                    }
                }
            }
        }
    }
}
