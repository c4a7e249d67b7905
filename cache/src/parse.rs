//! Parsing of cache settings: sizes, durations and RFC 3339 times.

use std::time::Duration;

use super::CacheError;

/// Splits `text` into a decimal number (`123`, `1.5`) and the rest.
fn split_number(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    text.split_at(end)
}

/// `number × unit` for a decimal `number` (`12`, `1.5`, `.5`), rounded down; `None` on
/// malformed numbers or overflow of `u128`.
fn scale(number: &str, unit: u128) -> Option<u128> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|c| c.is_ascii_digit()) || !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut value = int.checked_mul(unit)?;
    // Fraction digits beyond 30 cannot matter for units up to 2^64.
    let frac = &frac[..frac.len().min(30)];
    if !frac.is_empty() {
        let digits: u128 = frac.parse().ok()?;
        let denominator = 10u128.checked_pow(frac.len() as u32)?;
        value = value.checked_add(digits.checked_mul(unit)? / denominator)?;
    }
    Some(value)
}

/// Parses a size for `--cache-dir-max-size`: a decimal number (fractions allowed) with an
/// optional unit, case-insensitive, optionally separated by spaces. `B`; SI units `K`/`KB`,
/// `M`/`MB`, `G`/`GB`, `T`/`TB`, `P`/`PB` (powers of 1000); binary units `Ki`/`KiB`,
/// `Mi`/`MiB`, `Gi`/`GiB`, `Ti`/`TiB`, `Pi`/`PiB` (powers of 1024). A bare number is bytes.
pub fn parse_size(text: &str) -> Result<u64, CacheError> {
    let bad = |reason: &str| CacheError::InvalidSize {
        input: text.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(bad("it is empty"));
    }
    if trimmed.starts_with('-') {
        return Err(bad("a size cannot be negative"));
    }
    let (number, unit) = split_number(trimmed);
    if number.is_empty() {
        return Err(bad("it does not start with a number"));
    }
    let unit = unit.trim().to_ascii_lowercase();
    let multiplier: u128 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1000u128.pow(2),
        "g" | "gb" => 1000u128.pow(3),
        "t" | "tb" => 1000u128.pow(4),
        "p" | "pb" => 1000u128.pow(5),
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        "pi" | "pib" => 1 << 50,
        _ => {
            return Err(bad(&format!(
                "unknown unit {unit:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            )))
        }
    };
    let value = scale(number, multiplier).ok_or_else(|| bad("malformed number"))?;
    u64::try_from(value).map_err(|_| bad("too large"))
}

/// `bytes` for people, in the binary units [`parse_size`] reads back: `512 B`, `1.5 KiB`,
/// `20.0 MiB`, `3.2 GiB` (one decimal; GiB is the largest unit).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// Parses a duration for `--cache-ttl` in Go's syntax as kaniko takes it: a sequence of
/// decimal numbers (fractions allowed) each with a unit — `ns`, `us` (or `µs`), `ms`, `s`,
/// `m`, `h` — plus `d` (24 hours) and `w` (7 days): `336h`, `2h30m`, `1.5h`, `14d`. A lone
/// `0` is zero.
pub fn parse_ttl(text: &str) -> Result<Duration, CacheError> {
    let bad = |reason: &str| CacheError::InvalidDuration {
        input: text.to_string(),
        reason: reason.to_string(),
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad("it is empty"));
    }
    if rest.starts_with('-') {
        return Err(bad("a duration cannot be negative"));
    }
    rest = rest.strip_prefix('+').unwrap_or(rest);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let (number, after) = split_number(rest);
        if number.is_empty() {
            return Err(bad(&format!("expected a number at {rest:?}")));
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        const SECOND: u128 = 1_000_000_000;
        let per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => SECOND,
            "m" => 60 * SECOND,
            "h" => 3600 * SECOND,
            "d" => 86_400 * SECOND,
            "w" => 7 * 86_400 * SECOND,
            "" => {
                return Err(bad(&format!(
                    "missing unit after {number:?} (e.g. h, m, s, d)"
                )))
            }
            _ => {
                return Err(bad(&format!(
                    "unknown unit {unit:?} (use ns, us, ms, s, m, h, d, w)"
                )))
            }
        };
        let part = scale(number, per_unit).ok_or_else(|| bad("malformed number"))?;
        nanos = nanos.checked_add(part).ok_or_else(|| bad("too large"))?;
        rest = next;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad("too large"))?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Parses an RFC 3339 time (`2024-05-01T12:00:00Z`, `2024-05-01T12:00:00.5+02:00`) to
/// whole seconds since the Unix epoch (may be negative).
pub(crate) fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let part = text
            .get(range.clone())
            .filter(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
            .ok_or_else(|| format!("expected digits at position {}", range.start))?;
        part.parse::<i64>().map_err(|e| e.to_string())
    };
    let sep = |i: usize, allowed: &[u8]| -> Result<(), String> {
        match b.get(i) {
            Some(c) if allowed.contains(c) => Ok(()),
            _ => Err(format!(
                "expected one of {:?} at position {i}",
                String::from_utf8_lossy(allowed)
            )),
        }
    };
    let year = num(0..4)?;
    sep(4, b"-")?;
    let month = num(5..7)?;
    sep(7, b"-")?;
    let day = num(8..10)?;
    sep(10, b"Tt ")?;
    let hour = num(11..13)?;
    sep(13, b":")?;
    let minute = num(14..16)?;
    sep(16, b":")?;
    let second = num(17..19)?;
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return Err("empty fraction of a second".into());
        }
    }
    let offset = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() => {
            let h = num(i + 1..i + 3)?;
            sep(i + 3, b":")?;
            let m = num(i + 4..i + 6)?;
            if h > 23 || m > 59 {
                return Err("time zone offset out of range".into());
            }
            let off = h * 3600 + m * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return Err("expected a time zone (Z or ±HH:MM) at the end".into()),
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(format!("month {month} out of range")),
    };
    if day < 1 || day > days_in_month {
        return Err(format!("day {day} out of range"));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err("time of day out of range".into());
    }
    let days = ocibuild_image::time::days_from_civil(year, month, day);
    Ok(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_shown_in_binary_units_that_parse_back() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(20 << 20), "20.0 MiB");
        assert_eq!(format_size(5 << 40), "5120.0 GiB");
        for bytes in [1536u64, 20 << 20, 3 << 30] {
            assert_eq!(parse_size(&format_size(bytes)).unwrap(), bytes);
        }
    }

    #[test]
    fn rfc3339_round_trips_with_the_formatter() {
        for secs in [0u64, 951_782_400, 1_795_435_200, 4_102_444_799] {
            let text = ocibuild_image::time::rfc3339(secs);
            assert_eq!(parse_rfc3339(&text), Ok(secs as i64), "{text}");
        }
        assert_eq!(parse_rfc3339("1970-01-01T02:00:00.123+02:00"), Ok(0));
        assert_eq!(parse_rfc3339("1969-12-31T23:00:00-01:00"), Ok(0));
        for bad in [
            "",
            "2024-02-30T00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01 00:00:00Zjunk",
            "2024-13-01T00:00:00Z",
            "24-01-01T00:00:00Z",
            "2024-01-01T00:00:00.Z",
            "２０２４-01-01T00:00:00Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?}");
        }
    }
}
