//! What `sealpost seal` shows on a terminal while it works: one line redrawn in place
//! with the messages and bytes looked at, the rate and the time left. A pipe or a log
//! gets only the plain line per mailbox ([`Progress::line`]).

use std::time::{Duration, Instant};

use super::seal::Progress;

/// The state of the line being redrawn.
#[derive(Debug)]
pub struct Bar {
    mailbox: String,
    started: Instant,
    messages: usize,
    bytes: u64,
}

impl Bar {
    pub fn new() -> Self {
        Bar {
            mailbox: String::new(),
            started: Instant::now(),
            messages: 0,
            bytes: 0,
        }
    }

    /// What to write to the terminal for `p` at `now`: the redrawn line, or the line
    /// cleared and the mailbox's plain line in its place.
    pub fn update(&mut self, p: &Progress<'_>, now: Instant) -> String {
        const CLEAR: &str = "\r\x1b[K";
        match *p {
            Progress::Started {
                mailbox,
                messages,
                bytes,
            } => {
                self.mailbox = mailbox.to_string();
                self.started = now;
                self.messages = messages;
                self.bytes = bytes;
                format!("{CLEAR}{}", self.render(0, 0, Duration::ZERO))
            }
            Progress::Batch {
                done, bytes_done, ..
            } => {
                let elapsed = now.saturating_duration_since(self.started);
                format!("{CLEAR}{}", self.render(done, bytes_done, elapsed))
            }
            Progress::Finished { .. } => {
                format!("{CLEAR}{}\n", p.line().unwrap_or_default())
            }
        }
    }

    /// `INBOX [#####-----] 500/1000 messages, 1.2/2.4 MB, 0.6 MB/s, 0:02 left`
    fn render(&self, done: usize, bytes_done: u64, elapsed: Duration) -> String {
        const WIDTH: usize = 20;
        let fraction = if self.bytes > 0 {
            bytes_done as f64 / self.bytes as f64
        } else if self.messages > 0 {
            done as f64 / self.messages as f64
        } else {
            1.0
        }
        .clamp(0.0, 1.0);
        let filled = (fraction * WIDTH as f64).round() as usize;
        let bar = format!("{}{}", "#".repeat(filled), "-".repeat(WIDTH - filled));
        let mb = |b: u64| b as f64 / 1_000_000.0;
        let secs = elapsed.as_secs_f64();
        let (rate, left) = if secs > 0.0 && bytes_done > 0 {
            let rate = bytes_done as f64 / secs;
            let left = self.bytes.saturating_sub(bytes_done) as f64 / rate;
            (format!("{:.1} MB/s", rate / 1_000_000.0), clock(left))
        } else {
            ("- MB/s".to_string(), "-:--".to_string())
        };
        format!(
            "{} [{bar}] {done}/{} messages, {:.1}/{:.1} MB, {rate}, {left} left",
            self.mailbox,
            self.messages,
            mb(bytes_done),
            mb(self.bytes)
        )
    }
}

impl Default for Bar {
    fn default() -> Self {
        Bar::new()
    }
}

/// `h:mm:ss` or `m:ss`.
fn clock(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::seal::Summary;

    #[test]
    fn the_line_shows_messages_bytes_rate_and_time_left() {
        let t0 = Instant::now();
        let mut bar = Bar::new();
        let start = bar.update(
            &Progress::Started {
                mailbox: "INBOX",
                messages: 1000,
                bytes: 4_000_000,
            },
            t0,
        );
        assert_eq!(
            start,
            "\r\x1b[KINBOX [--------------------] 0/1000 messages, 0.0/4.0 MB, - MB/s, -:-- left"
        );
        let half = bar.update(
            &Progress::Batch {
                mailbox: "INBOX",
                done: 500,
                bytes_done: 2_000_000,
            },
            t0 + Duration::from_secs(4),
        );
        assert_eq!(
            half,
            "\r\x1b[KINBOX [##########----------] 500/1000 messages, 2.0/4.0 MB, 0.5 MB/s, 0:04 left"
        );
        let summary = Summary {
            sealed: 990,
            already_encrypted: 10,
            ..Summary::default()
        };
        let end = bar.update(
            &Progress::Finished {
                mailbox: "INBOX",
                summary: &summary,
                unseal: false,
            },
            t0 + Duration::from_secs(8),
        );
        assert_eq!(
            end,
            "\r\x1b[KINBOX: 990 sealed, 10 already encrypted, 0 finished from an earlier run, 0 failed\n"
        );
        assert_eq!(clock(3725.0), "1:02:05");
    }

    #[test]
    fn an_empty_mailbox_is_shown_as_done() {
        let mut bar = Bar::new();
        let line = bar.update(
            &Progress::Started {
                mailbox: "Archive",
                messages: 0,
                bytes: 0,
            },
            Instant::now(),
        );
        assert!(
            line.contains("[####################] 0/0 messages"),
            "{line}"
        );
    }
}
