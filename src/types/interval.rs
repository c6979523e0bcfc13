//! PostgreSQL's `interval` on the SQLite backend: months, days and microseconds kept
//! apart as PostgreSQL keeps them (a month is not 30 days, a day is not 24 hours when
//! added to a timestamp), stored as PostgreSQL's text output, and added to
//! timestamps and dates with calendar arithmetic.

use chrono::{Months, NaiveDateTime};

use crate::error::{code, PgError, PgResult};

const MICROS_PER_DAY: f64 = 86_400_000_000.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interval {
    pub months: i32,
    pub days: i32,
    pub micros: i64,
}

fn bad(input: &str) -> PgError {
    PgError::new(
        code::INVALID_DATETIME_FORMAT,
        format!("invalid input syntax for type interval: \"{input}\""),
    )
}

fn overflow() -> PgError {
    PgError::new(code::DATETIME_FIELD_OVERFLOW, "interval out of range")
}

/// Parses `[-]HH:MM[:SS[.ffffff]]` into microseconds.
fn parse_clock(s: &str) -> Option<i64> {
    let (negative, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let parts: Vec<&str> = body.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return None;
    }
    let hours: i64 = parts[0].parse().ok()?;
    let minutes: i64 = parts[1].parse().ok()?;
    let seconds: f64 = match parts.get(2) {
        Some(s) => s.parse().ok()?,
        None => 0.0,
    };
    let micros = (hours * 3600 + minutes * 60) * 1_000_000 + (seconds * 1e6).round() as i64;
    Some(if negative { -micros } else { micros })
}

impl Interval {
    /// PostgreSQL's interval input: `1 year 2 mons 3 days 04:05:06`, `7 days`,
    /// `2 hours 30 minutes`, `1.5 hours`, `-1 day`, `3 days ago`, `@ 1 day`, or a bare
    /// number with `unit` (`INTERVAL '7' DAY`; seconds when none).
    pub fn parse(input: &str, unit: Option<&str>) -> PgResult<Interval> {
        let text = input.trim().trim_start_matches('@').trim();
        let mut months = 0f64;
        let mut days = 0f64;
        let mut micros = 0f64;
        let mut words = text.split_whitespace().peekable();
        let mut ago = false;
        let mut any = false;
        while let Some(w) = words.next() {
            let lower = w.to_ascii_lowercase();
            if lower == "ago" {
                ago = true;
                continue;
            }
            if w.contains(':') {
                micros += parse_clock(w).ok_or_else(|| bad(input))? as f64;
                any = true;
                continue;
            }
            // A number, with its unit attached (`7d`) or as the next word.
            let split = lower
                .find(|c: char| c.is_ascii_alphabetic())
                .unwrap_or(lower.len());
            let (num, attached) = lower.split_at(split);
            let n: f64 = num.parse().map_err(|_| bad(input))?;
            let unit_word = if !attached.is_empty() {
                attached.to_string()
            } else if let Some(next) = words.peek().filter(|n| {
                n.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                    && !n.eq_ignore_ascii_case("ago")
            }) {
                let u = next.to_ascii_lowercase();
                words.next();
                u
            } else {
                unit.unwrap_or("second").to_ascii_lowercase()
            };
            match unit_word.trim_end_matches(',') {
                "microsecond" | "microseconds" | "us" | "usec" | "usecs" => micros += n,
                "millisecond" | "milliseconds" | "ms" | "msec" | "msecs" => micros += n * 1e3,
                "second" | "seconds" | "s" | "sec" | "secs" => micros += n * 1e6,
                "minute" | "minutes" | "m" | "min" | "mins" => micros += n * 60e6,
                "hour" | "hours" | "h" | "hr" | "hrs" => micros += n * 3600e6,
                "day" | "days" | "d" => days += n,
                "week" | "weeks" | "w" => days += n * 7.0,
                "month" | "months" | "mon" | "mons" => months += n,
                "year" | "years" | "y" | "yr" | "yrs" => months += n * 12.0,
                "decade" | "decades" => months += n * 120.0,
                "century" | "centuries" => months += n * 1200.0,
                "millennium" | "millennia" => months += n * 12000.0,
                _ => return Err(bad(input)),
            }
            any = true;
        }
        if !any {
            return Err(bad(input));
        }
        // Fractions cascade down as PostgreSQL does: a month is 30 days there.
        let whole_months = months.trunc();
        days += (months - whole_months) * 30.0;
        let whole_days = days.trunc();
        micros += (days - whole_days) * MICROS_PER_DAY;
        let mut iv = Interval {
            months: i32::try_from(whole_months as i64).map_err(|_| overflow())?,
            days: i32::try_from(whole_days as i64).map_err(|_| overflow())?,
            micros: micros.round() as i64,
        };
        if ago {
            iv = iv.negate();
        }
        Ok(iv)
    }

    pub fn negate(self) -> Interval {
        Interval {
            months: -self.months,
            days: -self.days,
            micros: -self.micros,
        }
    }

    /// PostgreSQL's output (IntervalStyle `postgres`): `1 year 2 mons 3 days 04:05:06`.
    pub fn format(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let plural =
            |n: i64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let years = i64::from(self.months / 12);
        let mons = i64::from(self.months % 12);
        if years != 0 {
            parts.push(plural(years, "year", "years"));
        }
        if mons != 0 {
            parts.push(plural(mons, "mon", "mons"));
        }
        if self.days != 0 {
            parts.push(plural(i64::from(self.days), "day", "days"));
        }
        if self.micros != 0 || parts.is_empty() {
            let sign = if self.micros < 0 {
                "-"
            } else if parts.is_empty() || (self.months >= 0 && self.days >= 0) {
                ""
            } else {
                "+"
            };
            let m = self.micros.unsigned_abs();
            let secs = m / 1_000_000;
            let frac = m % 1_000_000;
            let mut clock = format!(
                "{sign}{:02}:{:02}:{:02}",
                secs / 3600,
                (secs / 60) % 60,
                secs % 60
            );
            if frac != 0 {
                let f = format!("{frac:06}");
                clock.push('.');
                clock.push_str(f.trim_end_matches('0'));
            }
            parts.push(clock);
        }
        parts.join(" ")
    }

    /// `timestamp + interval`: months first (clamped to the month's last day), then
    /// days, then time, as PostgreSQL adds them.
    pub fn add_to(&self, dt: NaiveDateTime) -> PgResult<NaiveDateTime> {
        let dt = if self.months >= 0 {
            dt.checked_add_months(Months::new(self.months as u32))
        } else {
            dt.checked_sub_months(Months::new(self.months.unsigned_abs()))
        }
        .ok_or_else(|| PgError::new(code::DATETIME_FIELD_OVERFLOW, "timestamp out of range"))?;
        dt.checked_add_signed(chrono::Duration::days(i64::from(self.days)))
            .and_then(|d| d.checked_add_signed(chrono::Duration::microseconds(self.micros)))
            .ok_or_else(|| PgError::new(code::DATETIME_FIELD_OVERFLOW, "timestamp out of range"))
    }

    /// The interval between two timestamps as PostgreSQL's `timestamp - timestamp`
    /// gives it: whole days and the remaining time.
    pub fn between(a: NaiveDateTime, b: NaiveDateTime) -> Interval {
        let micros = (a - b).num_microseconds().unwrap_or(i64::MAX);
        let day = 86_400_000_000i64;
        Interval {
            months: 0,
            days: (micros / day) as i32,
            micros: micros % day,
        }
    }

    /// Microseconds, with a month as 30 days (`extract(epoch from …)`, comparisons).
    pub fn total_micros(&self) -> i64 {
        (i64::from(self.months) * 30 + i64::from(self.days)) * 86_400_000_000 + self.micros
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(input: &str) -> String {
        Interval::parse(input, None).unwrap().format()
    }

    #[test]
    fn parses_and_prints_like_postgresql() {
        assert_eq!(round_trip("7 days"), "7 days");
        assert_eq!(round_trip("1 day"), "1 day");
        assert_eq!(round_trip("2 hours 30 minutes"), "02:30:00");
        assert_eq!(
            round_trip("1 year 2 months 3 days 04:05:06.5"),
            "1 year 2 mons 3 days 04:05:06.5"
        );
        assert_eq!(round_trip("1.5 hours"), "01:30:00");
        assert_eq!(round_trip("1.5 days"), "1 day 12:00:00");
        assert_eq!(round_trip("-1 day"), "-1 days");
        assert_eq!(round_trip("3 days ago"), "-3 days");
        assert_eq!(round_trip("1 day -02:00:00"), "1 day -02:00:00");
        assert_eq!(round_trip("0 seconds"), "00:00:00");
        assert_eq!(round_trip("90"), "00:01:30");
        assert_eq!(
            Interval::parse("7", Some("day")).unwrap().format(),
            "7 days"
        );
        assert!(Interval::parse("seven days", None).is_err());
    }

    #[test]
    fn adds_with_calendar_months() {
        let dt = NaiveDateTime::parse_from_str("2024-01-31 10:00:00", "%Y-%m-%d %H:%M:%S").unwrap();
        let iv = Interval::parse("1 month", None).unwrap();
        assert_eq!(iv.add_to(dt).unwrap().to_string(), "2024-02-29 10:00:00");
        let iv = Interval::parse("-1 day 2 hours", None).unwrap();
        assert_eq!(iv.add_to(dt).unwrap().to_string(), "2024-01-30 12:00:00");
        let b = NaiveDateTime::parse_from_str("2024-01-29 08:30:00", "%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(Interval::between(dt, b).format(), "2 days 01:30:00");
    }
}
