//! The four priorities and the mapping from alert severities.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// How urgent a job is. Each priority has its own stream; workers always take
/// the most urgent waiting job first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Served before everything else.
    Critical,
    /// Served when nothing critical waits.
    High,
    /// The default priority.
    #[default]
    Medium,
    /// Served only when nothing else waits.
    Low,
}

impl Priority {
    /// All priorities, most urgent first: the order workers read them in.
    pub const ALL: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Medium,
        Priority::Low,
    ];

    /// Maps an alert severity to a priority, ignoring case: `critical` is
    /// Critical; `high` and `error` are High; `warning` and `medium` are
    /// Medium; anything else is Low.
    pub fn from_severity(severity: &str) -> Priority {
        let severity = severity.trim();
        let is = |name: &str| severity.eq_ignore_ascii_case(name);
        if is("critical") {
            Priority::Critical
        } else if is("high") || is("error") {
            Priority::High
        } else if is("warning") || is("medium") {
            Priority::Medium
        } else {
            Priority::Low
        }
    }

    /// The lowercase name used in key names, counters and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Medium => "medium",
            Priority::Low => "low",
        }
    }

    /// Position in [`Priority::ALL`]: 0 for Critical to 3 for Low.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The 1-based index the Lua scripts use (1 = critical .. 4 = low).
    pub(crate) fn lua_index(self) -> u8 {
        self as u8 + 1
    }

    pub(crate) fn from_lua_index(index: i64) -> Option<Priority> {
        usize::try_from(index - 1)
            .ok()
            .and_then(|i| Priority::ALL.get(i).copied())
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = Error;

    /// Parses a priority name (`critical`, `high`, `medium`, `low`, any case).
    /// Unlike [`Priority::from_severity`], an unknown name is an error.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| Error::UnknownPriority(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_map_to_priorities() {
        let cases = [
            ("critical", Priority::Critical),
            ("CRITICAL", Priority::Critical),
            ("high", Priority::High),
            ("error", Priority::High),
            ("warning", Priority::Medium),
            ("Medium", Priority::Medium),
            ("info", Priority::Low),
            ("debug", Priority::Low),
            ("", Priority::Low),
        ];
        for (severity, expected) in cases {
            assert_eq!(Priority::from_severity(severity), expected, "{severity}");
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_errors() {
        for p in Priority::ALL {
            assert_eq!(p.as_str().parse::<Priority>().ok(), Some(p));
            assert_eq!(Priority::from_lua_index(i64::from(p.lua_index())), Some(p));
        }
        assert!(matches!(
            "urgent".parse::<Priority>(),
            Err(Error::UnknownPriority(name)) if name == "urgent"
        ));
        assert_eq!(Priority::from_lua_index(0), None);
        assert_eq!(Priority::from_lua_index(5), None);
    }
}
