//! Sizes and durations in the units people read (`1.5 GiB`, `2m 5s`).

/// Bytes in binary units with one decimal: `0 B`, `512 B`, `4.0 KiB`, `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A duration in seconds: `0s`, `350ms`, `4.2s`, `2m 5s`, `3h 0m`, `2d 4h`.
pub fn seconds(s: f64) -> String {
    if !s.is_finite() || s <= 0.0 {
        return "0s".into();
    }
    if s < 1.0 {
        return format!("{}ms", (s * 1000.0).round() as u64);
    }
    if s < 60.0 {
        return format!("{s:.1}s");
    }
    let t = s.round() as u64;
    let (d, h, m, sec) = (t / 86_400, t % 86_400 / 3600, t % 3600 / 60, t % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else {
        format!("{m}m {sec}s")
    }
}

/// Milliseconds, as [`seconds`].
pub fn millis(ms: u64) -> String {
    seconds(ms as f64 / 1000.0)
}

/// A lag: bytes and age together, `0 B` when there is none.
pub fn lag(bytes_behind: u64, seconds_behind: f64) -> String {
    if bytes_behind == 0 && seconds_behind <= 0.0 {
        return "0 B".into();
    }
    format!("{} ({})", bytes(bytes_behind), seconds(seconds_behind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(4096), "4.0 KiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn durations() {
        assert_eq!(seconds(0.0), "0s");
        assert_eq!(seconds(f64::NAN), "0s");
        assert_eq!(seconds(0.35), "350ms");
        assert_eq!(seconds(4.25), "4.2s");
        assert_eq!(seconds(125.0), "2m 5s");
        assert_eq!(seconds(3.0 * 3600.0), "3h 0m");
        assert_eq!(seconds(2.0 * 86_400.0 + 4.0 * 3600.0), "2d 4h");
        assert_eq!(millis(1500), "1.5s");
        assert_eq!(lag(0, 0.0), "0 B");
        assert_eq!(lag(8192, 2.0), "8.0 KiB (2.0s)");
    }
}
