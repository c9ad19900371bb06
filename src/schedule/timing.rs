//! When a schedule's ticks fall: a fixed interval aligned to the Unix epoch,
//! or a cron expression in a time zone (`croner` with `chrono-tz`). Pure
//! computation, no Redis.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

use crate::time::millis;

/// When a schedule ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Timing {
    /// Every `interval`, at the multiples of it since the Unix epoch (every
    /// hour ticks at each full hour UTC), so every process computes the
    /// same ticks.
    Every(Duration),
    /// A cron expression (five fields, minute first, or six with seconds
    /// first; `@daily` and friends), evaluated in an IANA time zone such as
    /// `Europe/Paris` or `UTC`. Daylight-saving changes follow the zone.
    Cron {
        /// The expression, as given.
        expression: String,
        /// The IANA time zone name.
        time_zone: String,
    },
}

/// A [`Timing`] checked and ready to compute ticks.
#[derive(Debug, Clone)]
pub(crate) enum Ticks {
    Every(u64),
    Cron(Box<Cron>, Tz),
}

impl Timing {
    /// Checks the timing: every problem in words.
    pub(crate) fn parse(&self) -> Result<Ticks, Vec<String>> {
        match self {
            Timing::Every(interval) => {
                let ms = millis(*interval);
                if ms == 0 {
                    Err(vec!["schedule interval must be at least 1 ms".to_owned()])
                } else {
                    Ok(Ticks::Every(ms))
                }
            }
            Timing::Cron {
                expression,
                time_zone,
            } => {
                let mut problems = Vec::new();
                let cron = CronParser::builder()
                    .seconds(Seconds::Optional)
                    .build()
                    .parse(expression)
                    .map_err(|e| problems.push(format!("cron expression {expression:?}: {e}")))
                    .ok();
                let tz = Tz::from_str(time_zone)
                    .map_err(|_| problems.push(format!("unknown time zone {time_zone:?}")))
                    .ok();
                match (cron, tz) {
                    (Some(cron), Some(tz)) if problems.is_empty() => {
                        let ticks = Ticks::Cron(Box::new(cron), tz);
                        // A valid pattern that never matches (Feb 30) has no tick.
                        match ticks.after(0) {
                            Some(_) => Ok(ticks),
                            None => Err(vec![format!(
                                "cron expression {expression:?} never matches"
                            )]),
                        }
                    }
                    _ => Err(problems),
                }
            }
        }
    }
}

impl Ticks {
    /// The first tick strictly after `after_ms` (Unix ms); `None` when there
    /// is none (a cron pattern with no future match).
    pub(crate) fn after(&self, after_ms: u64) -> Option<u64> {
        match self {
            Ticks::Every(interval) => (after_ms / interval)
                .checked_add(1)
                .and_then(|n| n.checked_mul(*interval)),
            Ticks::Cron(cron, tz) => {
                let start: DateTime<Utc> = Utc
                    .timestamp_millis_opt(i64::try_from(after_ms).ok()?)
                    .single()?;
                let next = cron
                    .find_next_occurrence(&start.with_timezone(tz), false)
                    .ok()?;
                u64::try_from(next.timestamp_millis()).ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> u64 {
        let t = DateTime::parse_from_rfc3339(rfc3339).expect("a valid time");
        u64::try_from(t.timestamp_millis()).expect("after 1970")
    }

    #[test]
    fn intervals_tick_at_multiples_since_the_epoch() {
        let ticks = Timing::Every(Duration::from_secs(60))
            .parse()
            .expect("valid");
        assert_eq!(ticks.after(0), Some(60_000));
        assert_eq!(ticks.after(59_999), Some(60_000));
        assert_eq!(ticks.after(60_000), Some(120_000));
        assert!(Timing::Every(Duration::ZERO).parse().is_err());
    }

    #[test]
    fn cron_follows_the_time_zone_across_daylight_saving() {
        let daily = Timing::Cron {
            expression: "0 9 * * *".to_owned(),
            time_zone: "Europe/Paris".to_owned(),
        }
        .parse()
        .expect("valid");
        // 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer.
        assert_eq!(
            daily.after(ms("2026-01-10T12:00:00Z")),
            Some(ms("2026-01-11T08:00:00Z"))
        );
        assert_eq!(
            daily.after(ms("2026-07-10T12:00:00Z")),
            Some(ms("2026-07-11T07:00:00Z"))
        );
        let seconds = Timing::Cron {
            expression: "*/10 * * * * *".to_owned(),
            time_zone: "UTC".to_owned(),
        }
        .parse()
        .expect("six fields: seconds first");
        assert_eq!(
            seconds.after(ms("2026-01-01T00:00:01Z")),
            Some(ms("2026-01-01T00:00:10Z"))
        );
    }

    #[test]
    fn bad_timings_say_everything_wrong_at_once() {
        let problems = Timing::Cron {
            expression: "61 * * * *".to_owned(),
            time_zone: "Mars/Olympus".to_owned(),
        }
        .parse()
        .expect_err("invalid");
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
