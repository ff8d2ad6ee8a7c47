//! Kubernetes resource quantities (`50m`, `48Mi`, `1.5`, `2e3`), checked before they go
//! into a patch: the API server would refuse the whole pod for a malformed one, and the
//! operator should learn which annotation or key was wrong instead.
//!
//! The grammar is apimachinery's `resource.Quantity`: a signed decimal number followed by
//! an optional binary suffix (`Ki` .. `Ei`), decimal suffix (`n u m k M G T P E`) or
//! decimal exponent (`e3`, `E-2`). Resource requests and limits must not be negative.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Longest quantity accepted; real ones are a handful of characters.
const MAX_LEN: usize = 64;

/// `raw` as a non-negative quantity, or why it is not one.
pub fn parse(raw: &str) -> Result<Quantity, String> {
    if raw.is_empty() {
        return Err("expected a quantity such as 50m or 128Mi, got an empty value".into());
    }
    if raw.len() > MAX_LEN || !is_quantity(raw) {
        return Err(format!(
            "`{raw}` is not a Kubernetes quantity (such as 50m, 0.5 or 128Mi)"
        ));
    }
    if raw.starts_with('-') {
        return Err(format!("`{raw}` is negative; resources cannot be"));
    }
    Ok(Quantity(raw.to_string()))
}

fn is_quantity(raw: &str) -> bool {
    let rest = raw.strip_prefix(['+', '-']).unwrap_or(raw);
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let rest = &rest[digits..];
    let (fraction, rest) = match rest.strip_prefix('.') {
        Some(r) => {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            (n, &r[n..])
        }
        None => (0, rest),
    };
    if digits + fraction == 0 {
        return false;
    }
    match rest {
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => true,
        "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => true,
        _ => {
            let Some(exp) = rest.strip_prefix(['e', 'E']) else {
                return false;
            };
            let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            !exp.is_empty() && exp.bytes().all(|b| b.is_ascii_digit())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every suffix kind is accepted; junk, empty numbers, unknown suffixes and negative
    /// values are refused.
    #[test]
    fn quantities() {
        for good in [
            "50m", "48Mi", "1", "0.5", ".5", "1.", "2Gi", "100k", "1e3", "1E-2", "+1", "10n",
        ] {
            assert!(parse(good).is_ok(), "{good}");
        }
        for bad in [
            "", "m", "Mi", "1MB", "1 Mi", "1.2.3", "e3", "1e", "1e+", "abc", "1mi", "0x10",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("-1").unwrap_err().contains("negative"));
        assert!(parse(&"9".repeat(65)).is_err());
    }
}
