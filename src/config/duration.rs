//! Durations as configuration files write them: a whole number with a unit,
//! `500ms`, `10s`, `2m`, `1h` (a plain number is seconds). Used for a
//! volume's `max_lag`; kept in milliseconds in the model.

/// Parses a duration into milliseconds; the error says what is wrong.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    const HINT: &str = "expected a duration like 500ms, 10s, 2m or 1h";
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = t.split_at(digits);
    if number.is_empty() || number.len() > 12 {
        return Err(HINT.into());
    }
    let n: u64 = number.parse().map_err(|_| HINT.to_string())?;
    let per: u64 = match unit.trim_start() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("{HINT}; units are ms, s, m and h")),
    };
    Ok(n * per)
}

/// The shortest exact spelling: `10s`, `1500ms`, `2m`.
pub fn format_duration_ms(ms: u64) -> String {
    for (per, unit) in [(3_600_000, "h"), (60_000, "m"), (1_000, "s")] {
        if ms != 0 && ms % per == 0 {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_back() {
        assert_eq!(parse_duration_ms("10s"), Ok(10_000));
        assert_eq!(parse_duration_ms("10"), Ok(10_000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        for bad in ["", "s", "1.5s", "-1s", "10 days", "99999999999999s"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
        for ms in [500, 10_000, 120_000, 3_600_000, 1_500] {
            assert_eq!(parse_duration_ms(&format_duration_ms(ms)), Ok(ms));
        }
        assert_eq!(format_duration_ms(10_000), "10s");
        assert_eq!(format_duration_ms(1_500), "1500ms");
    }
}
