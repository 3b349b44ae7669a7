//! A strict check of HTTP/1.1 request framing, run on the raw bytes before hyper parses them.
//!
//! hyper is the parser; this scanner only refuses shapes that hyper tolerates but that make
//! proxies and servers disagree on where a request ends (request smuggling): bare-LF line
//! endings, obs-folded headers, both `Content-Length` and `Transfer-Encoding`, several
//! `Content-Length` headers, and transfer codings other than `chunked`. It follows the framing of
//! each request (fixed-length and chunked bodies, with `httparse` for the head and chunk sizes)
//! so every request on a keep-alive connection is checked, not only the first. After a CONNECT or
//! an upgrade request the bytes are a tunnel and are no longer looked at.

/// The largest request head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
const MAX_CHUNK_LINE: usize = 4096;

/// A request shape that is refused with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// a line ends in LF without CR
    #[error("bare LF line ending")]
    BareLf,
    /// a header continues on the next line (obs-fold)
    #[error("obs-folded header line")]
    ObsFold,
    /// both Content-Length and Transfer-Encoding
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndChunked,
    /// more than one Content-Length
    #[error("duplicate Content-Length")]
    DuplicateLength,
    /// Content-Length is not a plain decimal number
    #[error("invalid Content-Length")]
    BadLength,
    /// a Transfer-Encoding other than `chunked`
    #[error("unsupported Transfer-Encoding")]
    BadTransferEncoding,
    /// the head is not valid HTTP/1.x
    #[error("malformed request head")]
    Malformed,
    /// the head is too large
    #[error("request head larger than 64 KiB")]
    TooLarge,
    /// a chunk-size line or chunk terminator is malformed
    #[error("malformed chunked body")]
    BadChunk,
}

/// Where a violation was found, so the bytes of earlier, valid requests still reach hyper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// What was wrong.
    pub violation: Violation,
    /// Offset in the chunk just fed where the offending request's head starts, if it starts
    /// there (otherwise it started in an earlier chunk).
    pub head_start: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading a request head (bytes so far in `buf`).
    Head,
    /// Skipping a fixed-length body.
    Body(u64),
    /// Reading a chunk-size line (in `buf`).
    ChunkSize,
    /// Skipping chunk data, then its CRLF.
    ChunkData(u64),
    /// Expecting the CRLF after chunk data (`0`: none seen yet, `1`: CR seen).
    ChunkEnd(u8),
    /// Reading trailer lines after the last chunk (in `buf`).
    Trailers,
    /// Opaque bytes (after CONNECT or an upgrade request).
    Tunnel,
    /// A violation was found; nothing more is accepted.
    Failed,
}

/// Follows the framing of the requests on one connection.
#[derive(Debug)]
pub struct HeadScanner {
    state: State,
    buf: Vec<u8>,
    /// A CR of an empty line before a request line was the last byte fed.
    pending_cr: bool,
}

impl Default for HeadScanner {
    fn default() -> Self {
        HeadScanner::new()
    }
}

impl HeadScanner {
    /// A scanner at the start of a connection.
    pub fn new() -> HeadScanner {
        HeadScanner {
            state: State::Head,
            buf: Vec::new(),
            pending_cr: false,
        }
    }

    /// Whether the connection has become an opaque tunnel.
    pub fn is_tunnel(&self) -> bool {
        self.state == State::Tunnel
    }

    /// Feeds the next bytes read from the client.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), Refused> {
        let mut i = 0;
        let mut head_start =
            (self.state == State::Head && self.buf.is_empty() && !self.pending_cr).then_some(0);
        while i < data.len() {
            let step = match self.state {
                State::Failed => Err(Violation::Malformed),
                State::Tunnel => return Ok(()),
                State::Head => {
                    if self.buf.is_empty() && !self.pending_cr {
                        head_start = Some(i);
                    }
                    self.head_bytes(&data[i..])
                }
                State::Body(n) => {
                    let take = n.min((data.len() - i) as u64);
                    self.state = if take == n {
                        State::Head
                    } else {
                        State::Body(n - take)
                    };
                    Ok(take as usize)
                }
                State::ChunkSize => self.chunk_size_bytes(&data[i..]),
                State::ChunkData(n) => {
                    let take = n.min((data.len() - i) as u64);
                    self.state = if take == n {
                        State::ChunkEnd(0)
                    } else {
                        State::ChunkData(n - take)
                    };
                    Ok(take as usize)
                }
                State::ChunkEnd(seen) => match (seen, data[i]) {
                    (0, b'\r') => {
                        self.state = State::ChunkEnd(1);
                        Ok(1)
                    }
                    (1, b'\n') => {
                        self.state = State::ChunkSize;
                        Ok(1)
                    }
                    _ => Err(Violation::BadChunk),
                },
                State::Trailers => self.trailer_bytes(&data[i..]),
            };
            match step {
                Ok(n) => i += n,
                Err(violation) => {
                    self.state = State::Failed;
                    self.buf.clear();
                    return Err(Refused {
                        violation,
                        head_start,
                    });
                }
            }
        }
        Ok(())
    }

    /// Consumes head bytes up to and including the blank line; returns how many were used.
    fn head_bytes(&mut self, data: &[u8]) -> Result<usize, Violation> {
        // Empty lines before a request line are allowed (RFC 9112 section 2.2); their CR and LF
        // may arrive in different reads.
        if self.buf.is_empty() {
            let mut n = 0;
            for b in data {
                match (*b, self.pending_cr) {
                    (b'\r', false) => self.pending_cr = true,
                    (b'\n', true) => self.pending_cr = false,
                    (b'\n', false) => return Err(Violation::BareLf),
                    (_, true) => return Err(Violation::Malformed),
                    (_, false) => break,
                }
                n += 1;
            }
            if n > 0 {
                return Ok(n);
            }
        }
        let before = self.buf.len();
        let end = find_head_end(&self.buf, data);
        let used = end.unwrap_or(data.len());
        // Only the first MAX_HEAD bytes of a head are ever looked at, so the verdict does not
        // depend on how the bytes were split into reads.
        let room = MAX_HEAD - before;
        let take = used.min(room);
        self.buf.extend_from_slice(&data[..take]);
        check_line_endings(&self.buf[before.saturating_sub(1)..], before > 0)?;
        if used > room {
            return Err(Violation::TooLarge);
        }
        if end.is_some() {
            let next = check_head(&self.buf)?;
            self.buf.clear();
            self.state = next;
        }
        Ok(used)
    }

    fn chunk_size_bytes(&mut self, data: &[u8]) -> Result<usize, Violation> {
        match data.iter().position(|b| *b == b'\n') {
            None => {
                self.buf.extend_from_slice(data);
                if self.buf.len() > MAX_CHUNK_LINE {
                    return Err(Violation::BadChunk);
                }
                Ok(data.len())
            }
            Some(p) => {
                self.buf.extend_from_slice(&data[..=p]);
                if self.buf.len() > MAX_CHUNK_LINE + 1 {
                    return Err(Violation::BadChunk);
                }
                let line = std::mem::take(&mut self.buf);
                if line.len() < 2 || line[line.len() - 2] != b'\r' {
                    return Err(Violation::BareLf);
                }
                let size = match httparse::parse_chunk_size(&line) {
                    Ok(httparse::Status::Complete((_, size))) => size,
                    _ => return Err(Violation::BadChunk),
                };
                self.state = if size == 0 {
                    State::Trailers
                } else {
                    State::ChunkData(size)
                };
                Ok(p + 1)
            }
        }
    }

    fn trailer_bytes(&mut self, data: &[u8]) -> Result<usize, Violation> {
        match data.iter().position(|b| *b == b'\n') {
            None => {
                self.buf.extend_from_slice(data);
                if self.buf.len() > MAX_HEAD {
                    return Err(Violation::TooLarge);
                }
                Ok(data.len())
            }
            Some(p) => {
                self.buf.extend_from_slice(&data[..=p]);
                if self.buf.len() > MAX_HEAD + 1 {
                    return Err(Violation::TooLarge);
                }
                let line = std::mem::take(&mut self.buf);
                if line.len() < 2 || line[line.len() - 2] != b'\r' {
                    return Err(Violation::BareLf);
                }
                if line.len() == 2 {
                    self.state = State::Head;
                } else if line[0] == b' ' || line[0] == b'\t' {
                    return Err(Violation::ObsFold);
                }
                Ok(p + 1)
            }
        }
    }
}

/// Where the head ends in `data` (index just past the blank line), given what is buffered.
/// Looks only at the LFs in `data` and the two bytes before each, so many small heads in one
/// read cost linear time.
fn find_head_end(buf: &[u8], data: &[u8]) -> Option<usize> {
    let at = |k: isize| -> Option<u8> {
        if k >= 0 {
            data.get(k as usize).copied()
        } else {
            let back = (-k) as usize;
            buf.len().checked_sub(back).map(|i| buf[i])
        }
    };
    let mut from = 0;
    while let Some(off) = data[from..].iter().position(|b| *b == b'\n') {
        let j = (from + off) as isize;
        let blank = match at(j - 1) {
            Some(b'\n') => true,
            Some(b'\r') => at(j - 2) == Some(b'\n'),
            _ => false,
        };
        if blank {
            return Some(j as usize + 1);
        }
        from += off + 1;
    }
    None
}

/// Every LF must follow a CR. `continued`: the first byte of `bytes` is the last one already
/// checked (so a CR at the boundary is seen).
fn check_line_endings(bytes: &[u8], continued: bool) -> Result<(), Violation> {
    for (j, b) in bytes.iter().enumerate() {
        if continued && j == 0 {
            continue;
        }
        if *b == b'\n' && (j == 0 || bytes[j - 1] != b'\r') {
            return Err(Violation::BareLf);
        }
    }
    Ok(())
}

/// Checks a complete head and says what follows it.
fn check_head(head: &[u8]) -> Result<State, Violation> {
    // obs-fold: a header line that starts with whitespace.
    if head
        .windows(3)
        .any(|w| w[0] == b'\n' && (w[1] == b' ' || w[1] == b'\t'))
    {
        return Err(Violation::ObsFold);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(Violation::Malformed),
    }
    let mut lengths = 0usize;
    let mut length: u64 = 0;
    let mut chunked = false;
    let mut te = false;
    let mut upgrade = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            let v = std::str::from_utf8(h.value)
                .map_err(|_| Violation::BadLength)?
                .trim();
            if v.is_empty() || v.len() > 18 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Violation::BadLength);
            }
            length = v.parse().map_err(|_| Violation::BadLength)?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if te {
                return Err(Violation::BadTransferEncoding);
            }
            te = true;
            let v = std::str::from_utf8(h.value).map_err(|_| Violation::BadTransferEncoding)?;
            if !v.trim().eq_ignore_ascii_case("chunked") {
                return Err(Violation::BadTransferEncoding);
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    if lengths > 1 {
        return Err(Violation::DuplicateLength);
    }
    if lengths == 1 && te {
        return Err(Violation::LengthAndChunked);
    }
    if req
        .method
        .is_some_and(|m| m.eq_ignore_ascii_case("CONNECT"))
        || upgrade
    {
        return Ok(State::Tunnel);
    }
    Ok(if chunked {
        State::ChunkSize
    } else if length > 0 {
        State::Body(length)
    } else {
        State::Head
    })
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
