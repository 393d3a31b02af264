//! Byte sizes as Flocker and Docker write them: a whole number of bytes, or
//! a number with a unit, `500M`, `2.5G`, `512m`, `1GiB`.
//!
//! Units are binary, as in Flocker (`K` = 1024 bytes, `M` = 1024², `G` =
//! 1024³, `T` = 1024⁴) and in Docker's `mem_limit`; case does not matter, and
//! a trailing `B` or `iB` changes nothing (`1G`, `1GB` and `1GiB` are all
//! 1073741824 bytes). A fraction is rounded up to a whole byte, as Flocker
//! did, so a limit is never smaller than what was asked. Zero is refused.

/// Parses a size; the error says what is wrong with it.
pub fn parse_size(text: &str) -> Result<u64, String> {
    const HINT: &str = "expected bytes or a size like 500M or 2.5G";
    let t = text.trim();
    let number_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(number_end);
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || whole.len() > 20
        || fraction.len() > 18
        || !digits_ok(whole)
        || !digits_ok(fraction)
        || (number.contains('.') && fraction.is_empty())
    {
        return Err(HINT.into());
    }
    let multiplier: u128 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("{HINT}; units are K, M, G and T (binary)")),
    };
    let scale = 10u128.pow(fraction.len() as u32);
    let scaled = whole.parse::<u128>().map_err(|_| HINT.to_string())? * scale
        + fraction.parse::<u128>().unwrap_or(0);
    let bytes = scaled
        .checked_mul(multiplier)
        .map(|n| n.div_ceil(scale))
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| "too large: at most 16 exbibytes".to_string())?;
    if bytes == 0 {
        return Err("must be more than 0 bytes".into());
    }
    Ok(bytes)
}

/// The shortest exact spelling: `2G`, `1536M`, or the bytes themselves.
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(40, 'T'), (30, 'G'), (20, 'M'), (10, 'K')] {
        if bytes != 0 && bytes % (1u64 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_binary_and_case_free() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("500M"), Ok(500 * 1024 * 1024));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1gb"), Ok(1 << 30));
        assert_eq!(parse_size("2 T"), Ok(2 << 40));
        assert_eq!(parse_size("100b"), Ok(100));
    }

    #[test]
    fn fractions_round_up_to_a_whole_byte() {
        assert_eq!(parse_size("2.5G"), Ok(2_684_354_560));
        // Flocker's own example: 2.1M is 2202009.6 bytes.
        assert_eq!(parse_size("2.1M"), Ok(2_202_010));
        assert_eq!(parse_size("0.5K"), Ok(512));
    }

    #[test]
    fn nonsense_zero_and_overflow_are_refused() {
        for bad in [
            "", "M", "-1M", "1.M", ".5G", "1X", "1 MiBs", "1e9", "0x10", "1,5G",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse_size("0"), Err("must be more than 0 bytes".into()));
        assert_eq!(parse_size("0.0000001K"), Ok(1));
        assert!(parse_size("16777216T").unwrap_err().contains("too large"));
        assert!(parse_size(&"9".repeat(25)).is_err());
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn formatting_reads_back_exactly() {
        for bytes in [1, 1000, 1024, 1536, 2 << 30, 2_684_354_560, u64::MAX] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes), "{bytes}");
        }
        assert_eq!(format_size(2 << 30), "2G");
        assert_eq!(format_size(1536), "1536");
        assert_eq!(format_size(1536 << 10), "1536K");
    }
}
