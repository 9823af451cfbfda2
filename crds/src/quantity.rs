//! Sizes: a Kubernetes quantity (`10Gi`, `500M`, `1048576`) to bytes.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Why a quantity is not a size in bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "quantity {0:?} is not a number with an optional suffix (Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E)"
    )]
    ParseQuantity(String),
    #[error("quantity {0:?} is not a whole number of bytes")]
    FractionalBytes(String),
    #[error("quantity {0:?} is larger than 2^64-1 bytes")]
    TooLarge(String),
}

/// Bytes of a quantity. Decimal fractions are accepted when the result is a
/// whole number of bytes (`1.5Gi`).
pub fn parse_bytes(q: &Quantity) -> Result<u64, QuantityError> {
    parse_bytes_str(&q.0)
}

/// [`parse_bytes`] on a plain string.
pub fn parse_bytes_str(s: &str) -> Result<u64, QuantityError> {
    let t = s.trim();
    let err = || QuantityError::ParseQuantity(s.to_string());
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    if num.is_empty() || num.matches('.').count() > 1 || num.starts_with('.') {
        return Err(err());
    }
    let mult: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        _ => return Err(err()),
    };
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    let digits = format!("{int_part}{frac_part}");
    if digits.len() > 30 {
        return Err(QuantityError::TooLarge(s.to_string()));
    }
    let n: u128 = digits.parse().map_err(|_| err())?;
    let scale = 10u128.pow(frac_part.len() as u32);
    let total = n
        .checked_mul(mult)
        .ok_or_else(|| QuantityError::TooLarge(s.to_string()))?;
    if total % scale != 0 {
        return Err(QuantityError::FractionalBytes(s.to_string()));
    }
    u64::try_from(total / scale).map_err(|_| QuantityError::TooLarge(s.to_string()))
}

/// The shortest binary-suffixed quantity for `bytes` (`256Mi`, `3Gi`, or
/// plain bytes when no suffix divides it), as people write sizes.
pub fn from_bytes(bytes: u64) -> Quantity {
    const SUFFIXES: [(&str, u32); 6] = [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ];
    let text = SUFFIXES
        .iter()
        .find(|(_, shift)| bytes != 0 && bytes.trailing_zeros() >= *shift)
        .map(|(suffix, shift)| format!("{}{suffix}", bytes >> shift))
        .unwrap_or_else(|| bytes.to_string());
    Quantity(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_bytes_is_short_and_parses_back() {
        for (bytes, text) in [
            (0u64, "0"),
            (4096, "4Ki"),
            (256 << 20, "256Mi"),
            (3 << 30, "3Gi"),
            ((1 << 30) + 4096, "1048580Ki"),
            (1000, "1000"),
        ] {
            let q = from_bytes(bytes);
            assert_eq!(q.0, text);
            assert_eq!(parse_bytes(&q), Ok(bytes));
        }
    }

    #[test]
    fn table() {
        let ok = [
            ("0", 0u64),
            ("1048576", 1 << 20),
            ("1Ki", 1024),
            ("64Mi", 64 << 20),
            ("10Gi", 10 << 30),
            ("1.5Gi", 3 << 29),
            ("2k", 2000),
            ("3M", 3_000_000),
            ("1T", 1_000_000_000_000),
            ("15Ei", 15 << 60),
        ];
        for (s, want) in ok {
            assert_eq!(parse_bytes_str(s), Ok(want), "{s}");
        }
        for s in [
            "",
            "Gi",
            "1.2.3Gi",
            "1Q",
            "-1",
            "1.5",
            "0.1k0",
            "99999999999Ei",
            ".5Gi",
        ] {
            assert!(parse_bytes_str(s).is_err(), "{s} should fail");
        }
    }
}
