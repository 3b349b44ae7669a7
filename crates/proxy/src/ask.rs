//! Requests an `ask` rule holds until the user answers.
//!
//! The proxy process holds the request (its client sees nothing yet) and asks the privileged
//! part over a stream of its own ([`Asker`]); the privileged part records it where the user's
//! commands see it, and sends back the user's answer, or a denial when the time runs out
//! ([`serve_asks`], over an [`AskBook`]: the state store). Identical requests wait on one
//! question and are released together. Both sides bound what waits: at most
//! [`AskSettings::limit`] distinct requests per sandbox, and [`MAX_WAITERS`] held connections
//! in all; past that a request is denied at once, saying why.
//!
//! Frames are those of [`crate::channel`]. The privileged part trusts nothing it reads here:
//! a question names only what the proxy saw (checked and bounded again), and an answer can
//! come only from the user's side.

use std::collections::HashMap;
use std::io::{self, BufReader};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paddock_policy::net::{Host, Kind, Target, parse_method};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::channel::{MAX_FRAME, MAX_UNTRUSTED_FRAME, read_frame, send};

/// How many connections may wait for answers at once, over every question.
pub const MAX_WAITERS: usize = 1024;

/// How often the privileged part looks for the user's answers while something waits.
const POLL: Duration = Duration::from_millis(150);

/// How long a request waits, and how many distinct ones may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskSettings {
    /// How long a request waits for an answer before it is denied.
    pub timeout_ms: u64,
    /// How many distinct requests of the sandbox may wait at once.
    pub limit: usize,
}

impl Default for AskSettings {
    fn default() -> AskSettings {
        AskSettings {
            timeout_ms: 60_000,
            limit: 64,
        }
    }
}

/// What the proxy saw of a held request: what the user is asked about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    /// `connect` (only host and port are visible), `http`, or `https` (inside an intercepted
    /// tunnel).
    pub kind: String,
    /// The canonical host.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The method, where visible.
    pub method: Option<String>,
    /// The path (without the query), where visible.
    pub path: Option<String>,
    /// The ask rule that held it.
    pub rule: Option<i64>,
    /// The client's address as the proxy saw it (`127.0.0.1:41234` where the sandbox reaches
    /// it over TCP): for the supervisor to find the requesting process where it can.
    #[serde(default)]
    pub client: Option<String>,
}

impl Question {
    /// The question about `target` from `client`, held by `rule`.
    pub fn of(target: &Target, rule: Option<i64>, client: &str) -> Question {
        let (kind, method, path) = match &target.kind {
            Kind::Connect => ("connect", None, None),
            Kind::Http { method, path } => ("http", Some(method.clone()), Some(path.clone())),
            Kind::Https { method, path } => ("https", Some(method.clone()), Some(path.clone())),
        };
        Question {
            kind: kind.into(),
            host: target.host.to_string(),
            port: target.port,
            method,
            path,
            rule,
            client: Some(client.to_owned()),
        }
    }

    /// Checks a question that arrived from the proxy process: a known kind, a canonical host,
    /// a method and a path as a request carries them, all bounded.
    fn checked(self) -> Result<Question, String> {
        let visible = self.kind != "connect";
        if !matches!(self.kind.as_str(), "connect" | "http" | "https") {
            return Err(format!("unknown kind {:?}", self.kind));
        }
        match Host::parse(&self.host) {
            Ok(h) if h.to_string() == self.host => {}
            _ => return Err(format!("host {:?} is not canonical", self.host)),
        }
        if visible != (self.method.is_some() && self.path.is_some()) {
            return Err("method and path go with plain and intercepted requests only".into());
        }
        if let Some(m) = &self.method {
            parse_method(m).map_err(|e| e.to_string())?;
        }
        if let Some(p) = &self.path
            && (!p.starts_with('/') || p.len() > 2048 || p.chars().any(char::is_control))
        {
            return Err("a path must start with '/' and hold no control character".into());
        }
        // Only an address and port: anything else is dropped, not refused.
        let client = self
            .client
            .filter(|c| c.parse::<std::net::SocketAddr>().is_ok());
        Ok(Question { client, ..self })
    }

    /// The request in words: `CONNECT host:443`, `GET http://host/path`.
    pub fn request(&self) -> String {
        let authority = match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        };
        match (&self.method, &self.path) {
            (Some(m), Some(p)) if self.kind == "https" => format!("{m} https://{authority}{p}"),
            (Some(m), Some(p)) => format!("{m} http://{authority}{p}"),
            _ => format!("CONNECT {authority}"),
        }
    }
}

/// The answer to a question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    /// Let the request through.
    pub allow: bool,
    /// The question's id, as the user saw it (none when it was never recorded).
    pub request: Option<i64>,
    /// Who decided, in words: `the user`, `the user (always)`, `no answer within 60 s`.
    pub by: String,
    /// The rule an approval made (the proxy decides again with it), if any.
    pub rule: Option<i64>,
}

impl Verdict {
    fn refused(by: impl Into<String>) -> Verdict {
        Verdict {
            allow: false,
            request: None,
            by: by.into(),
            rule: None,
        }
    }

    /// Who decided and how long the request waited, for the audit log and the client.
    pub fn account(&self, held: Duration) -> String {
        let what = if self.allow { "allowed" } else { "denied" };
        match self.request {
            Some(id) => format!(
                "request {id} {what} by {} after {:.1} s",
                self.by,
                held.as_secs_f64()
            ),
            None => format!("{what}: {}", self.by),
        }
    }
}

/// A message from the proxy process.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case", deny_unknown_fields)]
enum ToBook {
    /// A new question, under the proxy's token.
    Ask { token: u64, question: Question },
    /// One more identical request waits on the question of `token`.
    Join { token: u64 },
}

/// An answer to the proxy process.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToProxy {
    token: u64,
    verdict: Verdict,
}

/// The proxy's side: holds requests and asks for them.
#[derive(Debug, Clone)]
pub struct Asker(Arc<AskerInner>);

#[derive(Debug)]
struct AskerInner {
    out: Mutex<UnixStream>,
    settings: AskSettings,
    held: Mutex<Held>,
    broken: AtomicBool,
}

#[derive(Debug, Default)]
struct Held {
    next: u64,
    /// Question → its token and the answer's channel.
    questions: HashMap<Question, (u64, watch::Sender<Option<Verdict>>)>,
    by_token: HashMap<u64, Question>,
    waiters: usize,
}

impl Asker {
    /// Asks over `stream` (the privileged part runs [`serve_asks`] on its other end); a thread
    /// of its own reads the answers.
    pub fn start(stream: UnixStream, settings: AskSettings) -> io::Result<Asker> {
        let reader = stream.try_clone()?;
        let asker = Asker(Arc::new(AskerInner {
            out: Mutex::new(stream),
            settings,
            held: Mutex::new(Held::default()),
            broken: AtomicBool::new(false),
        }));
        let inner = asker.0.clone();
        std::thread::Builder::new()
            .name("paddock-asks".into())
            .spawn(move || inner.read_answers(reader))?;
        Ok(asker)
    }

    /// Holds the request `question` is about until it is answered; an answer never comes
    /// later than the settings' timeout (and a little more, should the privileged part be
    /// stuck).
    pub async fn ask(&self, question: Question) -> Verdict {
        let mut rx = match self.0.enter(question) {
            Ok(rx) => rx,
            Err(v) => return v,
        };
        let _leave = Leave(&self.0);
        let limit = Duration::from_millis(self.0.settings.timeout_ms) + Duration::from_secs(5);
        let answered = tokio::time::timeout(limit, rx.wait_for(Option::is_some)).await;
        match answered {
            Ok(Ok(v)) => v.clone().unwrap_or_else(|| Verdict::refused("nobody")),
            Ok(Err(_)) => Verdict::refused("the supervisor, which is gone"),
            Err(_) => Verdict::refused("no answer came from the supervisor"),
        }
    }
}

/// Counts a waiter out when its request stops waiting (answered, or its client gone).
struct Leave<'a>(&'a AskerInner);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        if let Ok(mut held) = self.0.held.lock() {
            held.waiters = held.waiters.saturating_sub(1);
        }
    }
}

impl AskerInner {
    fn enter(&self, question: Question) -> Result<watch::Receiver<Option<Verdict>>, Verdict> {
        if self.broken.load(Ordering::Relaxed) {
            return Err(Verdict::refused(
                "the proxy, which can no longer ask (the supervisor is gone)",
            ));
        }
        let mut held = self
            .held
            .lock()
            .map_err(|_| Verdict::refused("the proxy (a failure inside it)"))?;
        if held.waiters >= MAX_WAITERS {
            return Err(Verdict::refused(format!(
                "the proxy: {MAX_WAITERS} requests already wait for answers"
            )));
        }
        // Identical requests wait together whichever connection they came on (the first
        // one's client is the one the user is told of).
        let key = Question {
            client: None,
            ..question.clone()
        };
        let msg = match held.questions.get(&key) {
            Some((token, tx)) => {
                let rx = tx.subscribe();
                let token = *token;
                held.waiters += 1;
                drop(held);
                let _ = self.send(&ToBook::Join { token });
                return Ok(rx);
            }
            None if held.questions.len() >= self.settings.limit => {
                return Err(Verdict::refused(format!(
                    "the proxy: {} distinct requests of this sandbox already wait for answers, the most it may have",
                    self.settings.limit
                )));
            }
            None => {
                held.next += 1;
                let token = held.next;
                let (tx, rx) = watch::channel(None);
                held.questions.insert(key.clone(), (token, tx));
                held.by_token.insert(token, key);
                held.waiters += 1;
                (ToBook::Ask { token, question }, rx)
            }
        };
        drop(held);
        let (msg, rx) = msg;
        if self.send(&msg).is_err() {
            self.fail_all();
        }
        Ok(rx)
    }

    fn send(&self, msg: &ToBook) -> io::Result<()> {
        let mut out = self.out.lock().map_err(|_| io::Error::other("poisoned"))?;
        send(&mut *out, msg)
    }

    fn read_answers(&self, stream: UnixStream) {
        let mut input = BufReader::new(stream);
        while let Ok(Some(body)) = read_frame(&mut input, MAX_FRAME) {
            let Ok(ToProxy { token, verdict }) = serde_json::from_slice(&body) else {
                break;
            };
            let Ok(mut held) = self.held.lock() else {
                break;
            };
            if let Some(q) = held.by_token.remove(&token)
                && let Some((_, tx)) = held.questions.remove(&q)
            {
                let _ = tx.send(Some(verdict));
            }
        }
        self.fail_all();
    }

    /// Denies everything waiting, and every later question: fail closed.
    fn fail_all(&self) {
        self.broken.store(true, Ordering::Relaxed);
        if let Ok(mut held) = self.held.lock() {
            held.by_token.clear();
            for (_, (_, tx)) in held.questions.drain() {
                let _ = tx.send(Some(Verdict::refused(
                    "the proxy, which can no longer ask (the supervisor is gone)",
                )));
            }
        }
    }
}

/// Where a question went in the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Recorded under this id.
    New(i64),
    /// An identical question waits under this id.
    Joined(i64),
    /// The sandbox has as many questions waiting as it may.
    Full,
}

/// An answer in the book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// The question.
    pub id: i64,
    /// Allowed.
    pub allow: bool,
    /// Who answered.
    pub by: String,
    /// The rule the approval made.
    pub rule: Option<i64>,
}

/// Where the privileged part records questions and finds answers (the state store).
pub trait AskBook {
    /// Why the book could not answer.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Records `question` of `sandbox`, denied unless answered by `expires_at` (ms since the
    /// epoch); at most `limit` distinct questions of a sandbox wait.
    fn record(
        &self,
        sandbox: &str,
        question: &Question,
        expires_at: i64,
        limit: usize,
    ) -> Result<Slot, Self::Error>;

    /// Counts one more request waiting on question `id`.
    fn join(&self, id: i64) -> Result<(), Self::Error>;

    /// The answers for `sandbox` not yet taken, taken now.
    fn answers(&self, sandbox: &str) -> Result<Vec<Answered>, Self::Error>;

    /// Removes question `id` unanswered; `false` when an answer came first.
    fn expire(&self, id: i64) -> Result<bool, Self::Error>;
}

/// What [`serve_asks`] tells its caller, to tell the user.
#[derive(Debug, Clone, Copy)]
pub enum Told<'a> {
    /// A new question, with its id in the book.
    Asked(i64, &'a Question),
    /// Question `id` no longer waits: it was answered, or it timed out.
    Gone(i64),
}

/// Answers the questions of one proxy process for `sandbox` from `book` until the process
/// closes `stream`. `told` hears of each new question (with its id) and of each that stops
/// waiting, to tell the user. Everything still waiting at the end is removed from the book by
/// the caller's end of run.
pub fn serve_asks<B: AskBook>(
    stream: UnixStream,
    book: &B,
    sandbox: &str,
    settings: AskSettings,
    told: &dyn Fn(Told<'_>),
) -> io::Result<()> {
    let (tx, rx) = mpsc::channel::<ToBook>();
    let reader = stream.try_clone()?;
    std::thread::Builder::new()
        .name("paddock-asks-in".into())
        .spawn(move || {
            let mut input = BufReader::new(reader);
            while let Ok(Some(body)) = read_frame(&mut input, MAX_UNTRUSTED_FRAME) {
                match serde_json::from_slice::<ToBook>(&body) {
                    Ok(m) => {
                        if tx.send(m).is_err() {
                            break;
                        }
                    }
                    Err(e) => tracing::warn!("a malformed question from the proxy process: {e}"),
                }
            }
        })?;
    let mut out = stream;
    let timeout = Duration::from_millis(settings.timeout_ms);
    // Question id → the proxy's tokens waiting on it, and when it expires.
    let mut waiting: HashMap<i64, (Vec<u64>, Instant)> = HashMap::new();
    let answer = |out: &mut UnixStream, tokens: &[u64], verdict: &Verdict| {
        tokens.iter().try_for_each(|t| {
            send(
                out,
                &ToProxy {
                    token: *t,
                    verdict: verdict.clone(),
                },
            )
        })
    };
    let mut tokens_seen: HashMap<u64, i64> = HashMap::new();
    loop {
        let wait = if waiting.is_empty() {
            Duration::from_secs(3600)
        } else {
            POLL
        };
        match rx.recv_timeout(wait) {
            Ok(ToBook::Ask { token, question }) => {
                let refuse = |why: String| Verdict::refused(why);
                let verdict = match question.checked() {
                    Err(e) => Some(refuse(format!(
                        "the supervisor: a malformed question ({e})"
                    ))),
                    Ok(q) => {
                        let expires = crate::audit::now_ms()
                            + i64::try_from(settings.timeout_ms).unwrap_or(i64::MAX / 2);
                        match book.record(sandbox, &q, expires, settings.limit) {
                            Ok(Slot::New(id)) => {
                                told(Told::Asked(id, &q));
                                waiting.insert(id, (vec![token], Instant::now() + timeout));
                                tokens_seen.insert(token, id);
                                None
                            }
                            Ok(Slot::Joined(id)) => {
                                if let Some((tokens, _)) = waiting.get_mut(&id) {
                                    tokens.push(token);
                                }
                                tokens_seen.insert(token, id);
                                None
                            }
                            Ok(Slot::Full) => Some(refuse(format!(
                                "the supervisor: {} distinct requests of this sandbox already wait for answers, the most it may have",
                                settings.limit
                            ))),
                            Err(e) => Some(refuse(format!(
                                "the supervisor, which cannot record the request ({e})"
                            ))),
                        }
                    }
                };
                if let Some(v) = verdict {
                    answer(&mut out, &[token], &v)?;
                }
            }
            Ok(ToBook::Join { token }) => {
                // Counted in the book (an identical question joins), so `policy pending`
                // shows how many wait.
                if let Some(id) = tokens_seen.get(&token)
                    && waiting.contains_key(id)
                {
                    book.join(*id).map_err(io::Error::other)?;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        if waiting.is_empty() {
            continue;
        }
        let answers = book.answers(sandbox).map_err(io::Error::other)?;
        for a in answers {
            if let Some((tokens, _)) = waiting.remove(&a.id) {
                tokens.iter().for_each(|t| {
                    tokens_seen.remove(t);
                });
                let v = Verdict {
                    allow: a.allow,
                    request: Some(a.id),
                    by: a.by,
                    rule: a.rule,
                };
                answer(&mut out, &tokens, &v)?;
                told(Told::Gone(a.id));
            }
        }
        let now = Instant::now();
        let due: Vec<i64> = waiting
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            // An answer that came first is delivered by the next look at the book.
            if book.expire(id).map_err(io::Error::other)?
                && let Some((tokens, _)) = waiting.remove(&id)
            {
                let v = Verdict {
                    allow: false,
                    request: Some(id),
                    by: format!("no answer within {} s", timeout.as_secs()),
                    rule: None,
                };
                answer(&mut out, &tokens, &v)?;
                told(Told::Gone(id));
            }
        }
    }
}
