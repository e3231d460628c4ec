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
