//! `HeadScanner::feed` on arbitrary bytes, fed whole, in arbitrary chunks and a byte at a time.
//!
//! Input layout: byte 0 = `k`; the next `k % 8` bytes are chunk lengths (0 feeds an empty
//! chunk); the rest is the client's byte stream. The chunk lengths cut the stream from the
//! start; whatever is left after them is the last chunk.
//!
//! Properties (all follow from the scanner's contract, so any failure is a bug):
//! 1. The outcome (Ok, or the first violation) does not depend on how the stream is split, and
//!    neither does whether the connection ends up as a tunnel.
//! 2. `head_start` of a refusal points at a request boundary: a fresh scanner accepts the
//!    bytes of that chunk before it and refuses the bytes from it with the same violation.
//! 3. When the whole stream is accepted and contains a complete first head, that head is a
//!    complete HTTP/1.x request for httparse, ends exactly at the first blank line, has no
//!    obs-fold, at most one Content-Length, not both Content-Length and Transfer-Encoding, and
//!    a CONNECT or Upgrade request turns the connection into a tunnel.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paddock_proxy::head::{HeadScanner, Refused, Violation};

/// Feeds `chunks` in order; the first refusal with the index of its chunk, and whether the
/// scanner is a tunnel at the end.
fn scan<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Result<(), (usize, Refused)>, bool) {
    let mut s = HeadScanner::new();
    for (i, c) in chunks.into_iter().enumerate() {
        if let Err(r) = s.feed(c) {
            return (Err((i, r)), s.is_tunnel());
        }
    }
    (Ok(()), s.is_tunnel())
}

fn outcome(r: &Result<(), (usize, Refused)>) -> Result<(), Violation> {
    r.map_err(|(_, refused)| refused.violation)
}

fn check_head_start(chunks: &[&[u8]], result: &Result<(), (usize, Refused)>) {
    let Err((i, refused)) = *result else { return };
    let chunk = chunks[i];
    let Some(o) = refused.head_start else {
        // The offending request started in an earlier chunk (never so for the first one).
        assert!(i > 0, "no head_start in the first chunk: {refused:?}");
        return;
    };
    assert!(
        o <= chunk.len(),
        "head_start {o} past the chunk ({})",
        chunk.len()
    );
    // Everything before head_start (earlier chunks and the start of this one) is accepted.
    let mut before: Vec<&[u8]> = chunks[..i].to_vec();
    before.push(&chunk[..o]);
    assert_eq!(
        outcome(&scan(before).0),
        Ok(()),
        "bytes before head_start {o} of chunk {i} are refused on their own"
    );
    // And head_start is a request boundary: from there alone the same violation is found.
    let (again, _) = scan([&chunk[o..]]);
    assert_eq!(
        outcome(&again),
        Err(refused.violation),
        "the bytes from head_start {o} of chunk {i} scan differently on their own"
    );
}

fn header<'h>(req: &'h httparse::Request<'_, '_>, name: &str) -> impl Iterator<Item = &'h [u8]> {
    req.headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

fn check_first_head(stream: &[u8], tunnel: bool) {
    // Accepted, so the leading empty lines are CRLF pairs and every LF follows a CR: the first
    // head ends at the first CRLF CRLF after them.
    let lead = stream
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    if lead == stream.len() {
        // Only empty lines so far (possibly ending in the CR of the next): no head yet.
        return;
    }
    assert!(lead % 2 == 0, "accepted odd leading CR/LF run of {lead}");
    let rest = &stream[lead..];
    let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
        return;
    };
    let head = &rest[..end + 4];
    assert!(
        head.len() <= paddock_proxy::head::MAX_HEAD,
        "accepted a head of {}",
        head.len()
    );
    assert!(
        !head
            .windows(2)
            .any(|w| w[0] == b'\n' && (w[1] == b' ' || w[1] == b'\t')),
        "accepted obs-fold"
    );
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) => {
            assert_eq!(n, head.len(), "httparse ends the head elsewhere")
        }
        other => panic!("accepted a head httparse does not parse: {other:?}"),
    }
    let lengths = header(&req, "content-length").count();
    let codings: Vec<&[u8]> = header(&req, "transfer-encoding").collect();
    assert!(lengths <= 1, "accepted {lengths} Content-Length headers");
    assert!(
        lengths == 0 || codings.is_empty(),
        "accepted Content-Length with Transfer-Encoding"
    );
    assert!(
        codings.len() <= 1,
        "accepted several Transfer-Encoding headers"
    );
    for v in &codings {
        let v = std::str::from_utf8(v).map(str::trim);
        assert!(
            v.is_ok_and(|v| v.eq_ignore_ascii_case("chunked")),
            "accepted Transfer-Encoding {v:?}"
        );
    }
    for v in header(&req, "content-length") {
        let v = std::str::from_utf8(v).map(str::trim);
        assert!(
            v.is_ok_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())),
            "accepted Content-Length {v:?}"
        );
    }
    let connect = req
        .method
        .is_some_and(|m| m.eq_ignore_ascii_case("CONNECT"));
    if connect || header(&req, "upgrade").next().is_some() {
        assert!(tunnel, "CONNECT/Upgrade request did not make a tunnel");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(k % 8).min(rest.len());
    let (lens, stream) = rest.split_at(n);

    let mut split: Vec<&[u8]> = Vec::with_capacity(n + 1);
    let mut at = 0;
    for &l in lens {
        let end = (at + usize::from(l)).min(stream.len());
        split.push(&stream[at..end]);
        at = end;
    }
    split.push(&stream[at..]);
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();

    let (whole, whole_tunnel) = scan([stream]);
    let (parts, parts_tunnel) = scan(split.iter().copied());
    let (single, single_tunnel) = scan(bytes.iter().copied());

    assert_eq!(
        outcome(&whole),
        outcome(&parts),
        "whole vs chunks {:?}",
        chunk_lens(&split)
    );
    assert_eq!(
        outcome(&whole),
        outcome(&single),
        "whole vs one byte at a time"
    );
    if whole.is_ok() {
        assert_eq!(whole_tunnel, parts_tunnel, "tunnel: whole vs chunks");
        assert_eq!(
            whole_tunnel, single_tunnel,
            "tunnel: whole vs one byte at a time"
        );
    }

    check_head_start(&[stream], &whole);
    check_head_start(&split, &parts);
    check_head_start(&bytes, &single);

    if whole.is_ok() {
        check_first_head(stream, whole_tunnel);
    }
});

fn chunk_lens(chunks: &[&[u8]]) -> Vec<usize> {
    chunks.iter().map(|c| c.len()).collect()
}
