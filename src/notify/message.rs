//! Dead letters as Slack-compatible messages: `{"text": ..., "blocks":
//! [...]}`, where `text` is the plain fallback (notifications, clients
//! without blocks) and `blocks` the Block Kit layout. docs/notify.md shows
//! both shapes. Every field is cut well below Slack's limits, on a
//! character boundary, so a huge error or payload never gets a message
//! refused.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::admin::dead_letters::DeadLetter;
use crate::admin::json::cut;

/// Characters of an error shown in a message (Slack allows 3,000 per
/// section).
const ERROR_CHARS: usize = 1_500;

/// Characters of the error in the fallback text.
const TEXT_ERROR_CHARS: usize = 200;

/// Characters of a name or id shown (Slack allows 2,000 per field).
const FIELD_CHARS: usize = 200;

/// How many distinct errors a summary lists.
const SUMMARY_ERRORS: usize = 3;

/// The message for one dead letter: queue, job id, name, priority,
/// attempts, error, and the payload as JSON cut to `preview_chars`
/// characters.
pub fn letter_message(queue: &str, letter: &DeadLetter, preview_chars: usize) -> Value {
    let job = if letter.job_id.as_str().is_empty() {
        "(unreadable job)".to_owned()
    } else {
        cut(letter.job_id.as_str(), FIELD_CHARS)
    };
    let name = if letter.name.is_empty() {
        "(none)".to_owned()
    } else {
        cut(&letter.name, FIELD_CHARS)
    };
    let text = format!(
        "Dead letter on queue {queue}: job {job} ({name}) failed after {} attempt{}: {}",
        letter.attempts,
        if letter.attempts == 1 { "" } else { "s" },
        cut(&letter.error, TEXT_ERROR_CHARS)
    );
    let preview = letter.payload_preview(preview_chars);
    json!({
        "text": escape(&text),
        "blocks": [
            {
                "type": "header",
                "text": { "type": "plain_text", "text": cut(&format!("Dead letter on queue {queue}"), 150) },
            },
            {
                "type": "section",
                "fields": [
                    field("Job", &format!("`{}`", code(&job))),
                    field("Name", &escape(&name)),
                    field("Attempts", &letter.attempts.to_string()),
                    field("Priority", letter.priority.as_str()),
                ],
            },
            {
                "type": "section",
                "text": { "type": "mrkdwn", "text": format!("*Error*\n```{}```", code(&cut(&letter.error, ERROR_CHARS))) },
            },
            {
                "type": "section",
                "text": { "type": "mrkdwn", "text": format!("*Payload*\n```{}```", code(&preview)) },
            },
            {
                "type": "context",
                "elements": [{
                    "type": "mrkdwn",
                    "text": format!(
                        "dead letter `{}` · failed {} · `streamq dlq --queue {} show {}`",
                        letter.id,
                        when(letter.failed_ms),
                        escape(queue),
                        letter.id
                    ),
                }],
            },
        ],
    })
}

/// The one message standing for `letters` when posting each would pass the
/// rate limit: how many, on which queue, the most common errors, and how
/// to list them (`after`: the position before the first of them).
pub fn summary_message(queue: &str, letters: &[DeadLetter], after: &str) -> Value {
    let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
    for letter in letters {
        *errors.entry(letter.error.as_str()).or_default() += 1;
    }
    let mut common: Vec<(&str, usize)> = errors.into_iter().collect();
    common.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let listed: Vec<String> = common
        .iter()
        .take(SUMMARY_ERRORS)
        .map(|(error, n)| format!("• {n} × `{}`", code(&cut(error, 300))))
        .collect();
    let others = common.len().saturating_sub(SUMMARY_ERRORS);
    let text = format!(
        "…and {} more dead letters on queue {queue} (not posted one by one: over the rate limit)",
        letters.len()
    );
    let mut errors_text = format!("*Most common errors*\n{}", listed.join("\n"));
    if others > 0 {
        errors_text.push_str(&format!("\n…and {others} other errors"));
    }
    let range = match (letters.first(), letters.last()) {
        (Some(first), Some(last)) => format!("dead letters `{}` to `{}`", first.id, last.id),
        _ => "no dead letters".to_owned(),
    };
    json!({
        "text": escape(&text),
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": escape(&text) } },
            { "type": "section", "text": { "type": "mrkdwn", "text": errors_text } },
            {
                "type": "context",
                "elements": [{
                    "type": "mrkdwn",
                    "text": format!(
                        "{range} · `streamq dlq --queue {} list --after {after}`",
                        escape(queue)
                    ),
                }],
            },
        ],
    })
}

fn field(title: &str, value: &str) -> Value {
    json!({ "type": "mrkdwn", "text": format!("*{title}*\n{value}") })
}

/// Text for Slack's mrkdwn: `&`, `<` and `>` escaped, as Slack asks.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text inside a code span or block: escaped, and with no backtick run that
/// would close the block early.
fn code(text: &str) -> String {
    escape(text).replace('`', "ˋ")
}

/// A time as Slack shows it in the reader's zone, with an RFC 3339 UTC
/// fallback for clients that do not.
fn when(ms: u64) -> String {
    let fallback = i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || format!("{ms} ms"),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
    format!(
        "<!date^{}^{{date_short_pretty}} {{time_secs}}|{fallback}>",
        ms / 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mrkdwn_is_escaped_and_code_cannot_be_closed_early() {
        assert_eq!(escape("a<b>&c"), "a&lt;b&gt;&amp;c");
        assert_eq!(code("```x```"), "ˋˋˋxˋˋˋ");
        assert!(when(1_700_000_000_000).starts_with("<!date^1700000000^"));
        assert!(when(1_700_000_000_000).ends_with("|2023-11-14T22:13:20Z>"));
    }
}
