//! Unix milliseconds as ISO 8601 UTC text, for HAR's `startedDateTime` and the HTML report.

/// `2026-12-04T13:46:03.120Z`.
pub fn iso8601_utc(unix_ms: f64) -> String {
    let ms_total = unix_ms.max(0.0).round() as i64;
    let (days, ms_of_day) = (
        ms_total.div_euclid(86_400_000),
        ms_total.rem_euclid(86_400_000),
    );
    let (y, m, d) = civil_from_days(days);
    let s = ms_of_day / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms_of_day % 1000
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (the era arithmetic of Howard Hinnant's
/// `civil_from_days`, which stays exact across leap centuries).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(iso8601_utc(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_utc(951_782_400_000.0), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601_utc(1_796_305_563_120.0), "2026-12-03T13:46:03.120Z");
        assert_eq!(iso8601_utc(4_107_542_399_999.0), "2100-02-28T23:59:59.999Z");
    }
}
