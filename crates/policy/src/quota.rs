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

/// How a tenant-wide hard limit is shared: each namespace may use what it uses now plus what the tenant
/// as a whole has left. A resource whose total or usage cannot be read keeps the total.
pub fn share_tenant_hard<'a>(
    total: &BTreeMap<String, Quantity>,
    namespaces: &[&str],
    used: impl Fn(&str) -> Option<&'a BTreeMap<String, Quantity>>,
) -> BTreeMap<String, BTreeMap<String, Quantity>> {
    let mut out: BTreeMap<String, BTreeMap<String, Quantity>> = BTreeMap::new();
    for (resource, limit) in total {
        let usage_of = |ns: &str| {
            used(ns)
                .and_then(|u| u.get(resource))
                .and_then(|q| parse_millis(&q.0))
                .unwrap_or(0)
        };
        let Some(limit) = parse_millis(&limit.0) else {
            for ns in namespaces {
                out.entry((*ns).to_owned())
                    .or_default()
                    .insert(resource.clone(), limit.clone());
            }
            continue;
        };
        let used_total: i128 = namespaces.iter().map(|ns| usage_of(ns)).sum();
        let left = (limit - used_total).max(0);
        for ns in namespaces {
            let hard = usage_of(ns) + left;
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
    fn each_namespace_gets_its_usage_plus_what_the_tenant_has_left() {
        let total = q(&[("pods", "10"), ("requests.memory", "4Gi")]);
        let usage = BTreeMap::from([
            ("a", q(&[("pods", "3"), ("requests.memory", "1Gi")])),
            ("b", q(&[("pods", "2")])),
        ]);
        let shared = share_tenant_hard(&total, &["a", "b", "c"], |ns| usage.get(ns));
        // 5 pods and 3Gi are left for the tenant.
        assert_eq!(shared["a"], q(&[("pods", "8"), ("requests.memory", "4Gi")]));
        assert_eq!(shared["b"], q(&[("pods", "7"), ("requests.memory", "3Gi")]));
        assert_eq!(shared["c"], q(&[("pods", "5"), ("requests.memory", "3Gi")]));
        // Over budget (usage counted before a lowered limit): nobody gets more than they use.
        let over = share_tenant_hard(&q(&[("pods", "4")]), &["a", "b"], |ns| usage.get(ns));
        assert_eq!(over["a"], q(&[("pods", "3")]));
        assert_eq!(over["b"], q(&[("pods", "2")]));
    }
}
