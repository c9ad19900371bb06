//! The posting rate limit: at most N posts in any 60 seconds (a sliding
//! window over the times of the last N posts).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The window a limit counts over.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// The times of recent posts.
#[derive(Debug)]
pub(crate) struct Pace {
    per_window: usize,
    sent: VecDeque<Instant>,
}

impl Pace {
    pub(crate) fn new(per_window: u32) -> Pace {
        let per_window = usize::try_from(per_window).unwrap_or(usize::MAX).max(1);
        Pace {
            per_window,
            sent: VecDeque::new(),
        }
    }

    /// How many posts may go now.
    pub(crate) fn available(&mut self, now: Instant) -> usize {
        while self
            .sent
            .front()
            .is_some_and(|&at| now.saturating_duration_since(at) >= WINDOW)
        {
            self.sent.pop_front();
        }
        self.per_window.saturating_sub(self.sent.len())
    }

    /// When the next post may go (now, when one may).
    pub(crate) fn next_free(&mut self, now: Instant) -> Instant {
        if self.available(now) > 0 {
            return now;
        }
        self.sent.front().map_or(now, |&at| at + WINDOW)
    }

    pub(crate) fn record(&mut self, now: Instant) {
        self.sent.push_back(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_posts_in_the_last_minute_only() {
        let start = Instant::now();
        let mut pace = Pace::new(2);
        assert_eq!(pace.available(start), 2);
        pace.record(start);
        pace.record(start + Duration::from_secs(10));
        assert_eq!(pace.available(start + Duration::from_secs(59)), 0);
        assert_eq!(
            pace.next_free(start + Duration::from_secs(59)),
            start + WINDOW
        );
        assert_eq!(pace.available(start + WINDOW), 1);
        assert_eq!(pace.available(start + Duration::from_secs(70)), 2);
        assert_eq!(
            Pace::new(0).available(start),
            1,
            "at least one post a minute"
        );
    }
}
