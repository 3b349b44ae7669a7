//! The prompt an attached terminal shows for a request an `ask` rule holds, drawn by the relay
//! on the host's side of the terminal: the sandbox's processes cannot read it (it never goes
//! into their terminal), draw over it (their output is held while it shows) or answer it (the
//! answer is read from the user's keys, never from the sandbox's side).
//!
//! The keys are read with care: input that was typed before the prompt appeared, or that
//! came within [`GRACE`] of it, is dropped (a key meant for the agent must not answer), and so
//! is every escape sequence, whole (a terminal's reply to a query the sandbox wrote, a
//! function key), so that nothing but a key the user pressed answers.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long after a prompt appears keys are still taken as meant for what was there before.
pub const GRACE: Duration = Duration::from_millis(300);

/// The user's answer to a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Let the waiting requests through; the next identical one asks again.
    Once,
    /// A rule for this run, exactly as the request was seen.
    ForRun,
    /// A rule kept until removed, exactly as the request was seen.
    Always,
    /// A rule kept until removed, for the whole host and port.
    AlwaysHost,
    /// Refuse the waiting requests.
    Deny,
    /// Refuse them, and the host and port from now on.
    DenyAlways,
}

impl Choice {
    /// Its byte on the relay's channel.
    pub fn byte(self) -> u8 {
        match self {
            Choice::Once => b'y',
            Choice::ForRun => b'r',
            Choice::Always => b'a',
            Choice::AlwaysHost => b'h',
            Choice::Deny => b'n',
            Choice::DenyAlways => b'd',
        }
    }

    /// The choice of key `b`.
    pub fn from_byte(b: u8) -> Option<Choice> {
        Some(match b {
            b'y' | b'Y' => Choice::Once,
            b'r' | b'R' => Choice::ForRun,
            b'a' | b'A' => Choice::Always,
            b'h' | b'H' => Choice::AlwaysHost,
            b'n' | b'N' => Choice::Deny,
            b'd' | b'D' => Choice::DenyAlways,
            _ => return None,
        })
    }

    /// What it does, in words.
    pub fn words(self) -> &'static str {
        match self {
            Choice::Once => "allowed once",
            Choice::ForRun => "allowed for this run",
            Choice::Always => "allowed from now on",
            Choice::AlwaysHost => "its whole host allowed from now on",
            Choice::Deny => "denied",
            Choice::DenyAlways => "denied from now on",
        }
    }
}

/// What a key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The user answered request `id`.
    Answer(i64, Choice),
    /// The user put request `id` aside (Esc, Ctrl-C): it waits, for `paddock policy`.
    Later(i64),
}

/// Where the key reader is in an escape sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Escape {
    #[default]
    None,
    /// After ESC.
    Start,
    /// A control sequence (ESC [): until its final byte.
    Csi,
    /// A string (OSC, DCS, APC, PM, SOS): until BEL or ESC \.
    Text,
    /// SS2 or SS3 (ESC O A, an arrow key): one more byte.
    Single,
    /// ESC inside a string.
    TextEsc,
}

/// One waiting request the relay was told of.
#[derive(Debug, Clone)]
struct Ask {
    id: i64,
    text: String,
}

/// The prompts of one relay: what waits, what shows, and the key reader.
#[derive(Debug, Default)]
pub struct Prompter {
    queue: VecDeque<Ask>,
    shown: Option<(i64, Instant)>,
    escape: Escape,
}

/// The most requests one relay keeps to prompt for (the proxy holds at most 64 a sandbox).
const MAX_QUEUED: usize = 256;

impl Prompter {
    /// Adds request `id`, described by `text` (control characters are dropped).
    pub fn add(&mut self, id: i64, text: &str) {
        if self.queue.iter().any(|a| a.id == id) || self.queue.len() >= MAX_QUEUED {
            return;
        }
        let text = text
            .chars()
            .filter(|c| !c.is_control())
            .take(1024)
            .collect();
        self.queue.push_back(Ask { id, text });
    }

    /// Removes request `id` (answered elsewhere, or timed out); what to draw when it was the
    /// one shown.
    pub fn remove(&mut self, id: i64) -> Option<Vec<u8>> {
        self.queue.retain(|a| a.id != id);
        if self.shown.is_some_and(|(s, _)| s == id) {
            self.shown = None;
            return Some(
                format!(
                    "\r\x1b[2K  request {id} no longer waits: answered elsewhere, or timed out.\r\n"
                )
                .into_bytes(),
            );
        }
        None
    }

    /// Whether a prompt shows (the sandbox's output is held meanwhile).
    pub fn showing(&self) -> bool {
        self.shown.is_some()
    }

    /// Puts up the next prompt if none shows and one waits: what to draw.
    pub fn show(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.shown.is_some() {
            return None;
        }
        let ask = self.queue.front()?;
        self.shown = Some((ask.id, now));
        self.escape = Escape::None;
        let more = match self.queue.len() - 1 {
            0 => String::new(),
            n => format!(" ({n} more after it)"),
        };
        Some(
            format!(
                "\r\n\x1b[1;7m paddock \x1b[0m {}{more}\r\n  \x1b[1my\x1b[0m allow once   \x1b[1mr\x1b[0m for this run   \x1b[1ma\x1b[0m always   \x1b[1mh\x1b[0m always, whole host   \x1b[1mn\x1b[0m deny   \x1b[1md\x1b[0m always deny   \x1b[1mEsc\x1b[0m later \x1b[2m(the sandbox waits)\x1b[0m ",
                ask.text
            )
            .into_bytes(),
        )
    }

    /// Reads keys typed while a prompt shows, arriving at `now`: the step they make, if any,
    /// and what to draw for it. Keys that answer nothing are dropped.
    pub fn keys(&mut self, typed: &[u8], now: Instant) -> Option<(Step, Vec<u8>)> {
        let (id, since) = self.shown?;
        let early = now.duration_since(since) < GRACE;
        let last = typed.len().saturating_sub(1);
        for (i, &b) in typed.iter().enumerate() {
            let key = match self.escape {
                Escape::None => match b {
                    // A lone ESC at the end of a read is the Esc key; one followed by more
                    // starts a sequence.
                    0x1b if i == last => Some(b),
                    0x1b => {
                        self.escape = Escape::Start;
                        None
                    }
                    0x9b => {
                        self.escape = Escape::Csi;
                        None
                    }
                    0x8e | 0x8f => {
                        self.escape = Escape::Single;
                        None
                    }
                    0x90 | 0x98 | 0x9d | 0x9e | 0x9f => {
                        self.escape = Escape::Text;
                        None
                    }
                    _ => Some(b),
                },
                Escape::Start => {
                    self.escape = match b {
                        b'[' => Escape::Csi,
                        b']' | b'P' | b'X' | b'^' | b'_' => Escape::Text,
                        b'N' | b'O' => Escape::Single,
                        // Intermediates (ESC ( B): the sequence goes on.
                        0x20..=0x2f => Escape::Start,
                        _ => Escape::None,
                    };
                    None
                }
                Escape::Single => {
                    self.escape = Escape::None;
                    None
                }
                Escape::Csi => {
                    if (0x40..=0x7e).contains(&b) {
                        self.escape = Escape::None;
                    }
                    None
                }
                Escape::Text => {
                    match b {
                        0x07 | 0x9c => self.escape = Escape::None,
                        0x1b => self.escape = Escape::TextEsc,
                        _ => {}
                    }
                    None
                }
                Escape::TextEsc => {
                    self.escape = if b == b'\\' {
                        Escape::None
                    } else {
                        Escape::Text
                    };
                    None
                }
            };
            let Some(key) = key.filter(|_| !early) else {
                continue;
            };
            let step = match key {
                0x1b | 0x03 => Step::Later(id),
                k => match Choice::from_byte(k) {
                    Some(c) => Step::Answer(id, c),
                    None => continue,
                },
            };
            self.queue.retain(|a| a.id != id);
            self.shown = None;
            self.escape = Escape::None;
            let said = match step {
                Step::Answer(_, c) => format!("\r\x1b[2K  request {id}: {}.\r\n", c.words()),
                Step::Later(_) => format!(
                    "\r\x1b[2K  request {id} waits: answer with `paddock policy approve {id}` or `paddock policy deny {id}`.\r\n"
                ),
            };
            return Some((step, said.into_bytes()));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(p: &mut Prompter, id: i64) -> Instant {
        p.add(id, "web asks to reach GET http://up.test:80/x (request 7)");
        let t = Instant::now();
        let drawn = String::from_utf8(p.show(t).unwrap()).unwrap();
        assert!(drawn.contains("asks to reach"), "{drawn}");
        t + GRACE
    }

    #[test]
    fn a_key_answers_the_request_shown() {
        let mut p = Prompter::default();
        let later = shown(&mut p, 7);
        assert!(p.showing());
        // Other keys do nothing.
        assert_eq!(p.keys(b"xq \r", later), None);
        let (step, said) = p.keys(b"a", later).unwrap();
        assert_eq!(step, Step::Answer(7, Choice::Always));
        assert!(
            String::from_utf8(said)
                .unwrap()
                .contains("allowed from now on")
        );
        assert!(!p.showing());
        assert_eq!(p.show(later), None);
    }

    #[test]
    fn keys_typed_before_it_or_right_as_it_appeared_do_not_answer() {
        let mut p = Prompter::default();
        let later = shown(&mut p, 1);
        assert_eq!(p.keys(b"y", later - GRACE), None);
        assert!(p.showing());
        assert_eq!(
            p.keys(b"n", later).unwrap().0,
            Step::Answer(1, Choice::Deny)
        );
    }

    #[test]
    fn escape_sequences_never_answer_even_split_across_reads() {
        let mut p = Prompter::default();
        let later = shown(&mut p, 3);
        // A cursor report, a device-attributes reply, a colour reply (OSC, ended by ST and
        // by BEL), a title report (DCS), an arrow key: all have answer letters inside.
        for seq in [
            &b"\x1b[24;80R"[..],
            b"\x1b[?1;2c",
            b"\x1b]11;rgb:ffff/ffff/ffff\x1b\\",
            b"\x1b]10;rgb:aaaa/bbbb/dddd\x07",
            b"\x1bP1$r0;1;2;3;4;5m\x1b\\",
            b"\x1bOA",
            b"\x1bOy",
            b"\x8fa",
            b"\x1by",
            b"\x9b1;2y",
        ] {
            assert_eq!(p.keys(seq, later), None, "{seq:?}");
        }
        // Split: the sequence goes on in the next read.
        assert_eq!(p.keys(b"\x1b]11;rgb:ff", later), None);
        assert_eq!(p.keys(b"ff/yy/aa\x07", later), None);
        assert!(p.showing());
        // A lone ESC at the end of a read is the Esc key.
        let (step, said) = p.keys(b"\x1b", later).unwrap();
        assert_eq!(step, Step::Later(3));
        assert!(
            String::from_utf8(said)
                .unwrap()
                .contains("paddock policy approve 3")
        );
    }

    #[test]
    fn the_next_prompt_follows_and_one_answered_elsewhere_goes() {
        let mut p = Prompter::default();
        p.add(1, "one");
        p.add(2, "two");
        p.add(2, "two again");
        p.add(3, "three\x1b[2Jcleared");
        let t = Instant::now();
        let first = String::from_utf8(p.show(t).unwrap()).unwrap();
        assert!(first.contains("one (2 more after it)"), "{first}");
        // Answered elsewhere while it shows.
        assert!(p.remove(1).is_some());
        // One not shown goes quietly.
        assert_eq!(p.remove(2), None);
        let next = String::from_utf8(p.show(t).unwrap()).unwrap();
        // Control characters of a description are dropped.
        assert!(next.contains("three[2Jcleared"), "{next}");
        assert_eq!(
            p.keys(b"\x03", t + GRACE).unwrap().0,
            Step::Later(3),
            "Ctrl-C puts it aside"
        );
        assert_eq!(p.show(t), None);
    }
}
