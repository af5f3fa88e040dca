//! Numbers for people: thousands separators, SI prefixes and durations, as the programs' start
//! blocks, progress lines and reports print them.

/// `1234567` → `1,234,567`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// 7800 → `7.8k`, 2.47e6 → `2.5M`.
pub fn si(x: f64) -> String {
    match x {
        x if x >= 1e6 => format!("{:.1}M", x / 1e6),
        x if x >= 1e3 => format!("{:.1}k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

/// Seconds → `1h02m`, `3m58s` or `42s`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.round().max(0.0) as u64;
    match s {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(2_907_648), "2,907,648");
        assert_eq!(thousands(999), "999");
        assert_eq!(si(7812.0), "7.8k");
        assert_eq!(si(2_470_000.0), "2.5M");
        assert_eq!(duration(42.4), "42s");
        assert_eq!(duration(238.0), "3m58s");
        assert_eq!(duration(3720.0), "1h02m");
    }
}
