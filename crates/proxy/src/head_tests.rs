use super::*;

fn scan(chunks: &[&[u8]]) -> Result<(), Refused> {
    let mut s = HeadScanner::new();
    for c in chunks {
        s.feed(c)?;
    }
    Ok(())
}

fn violation(bytes: &[u8]) -> Option<Violation> {
    scan(&[bytes]).err().map(|r| r.violation)
}

#[test]
fn good_requests_pass_in_any_split() {
    let stream: &[u8] = b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n\
        POST http://a.test/x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhe\nlo\
        POST http://a.test/y HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
        3\r\na\nb\r\n0\r\nX-T: 1\r\n\r\n\
        GET http://a.test/z HTTP/1.1\r\nHost: a.test\r\n\r\n";
    for split in 1..stream.len() {
        let (a, b) = stream.split_at(split);
        assert_eq!(scan(&[a, b]), Ok(()), "split at {split}");
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(scan(&bytes), Ok(()));
}

#[test]
fn smuggling_shapes_are_refused() {
    let cases: &[(&[u8], Violation)] = &[
        (b"GET http://a.test/ HTTP/1.1\nHost: a.test\n\n", Violation::BareLf),
        (b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\n\r\n", Violation::BareLf),
        (b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\nX: a\r\n b\r\n\r\n", Violation::ObsFold),
        (
            b"POST http://a.test/ HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            Violation::LengthAndChunked,
        ),
        (
            b"POST http://a.test/ HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            Violation::DuplicateLength,
        ),
        (
            b"POST http://a.test/ HTTP/1.1\r\nHost: a.test\r\nContent-Length: +3\r\n\r\n",
            Violation::BadLength,
        ),
        (
            b"POST http://a.test/ HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            Violation::BadTransferEncoding,
        ),
        (
            b"POST http://a.test/ HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            Violation::BadTransferEncoding,
        ),
        (
            b"POST http://a.test/ HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            Violation::BadChunk,
        ),
        (
            b"POST http://a.test/ HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n",
            Violation::BareLf,
        ),
        (
            b"POST http://a.test/ HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX",
            Violation::BadChunk,
        ),
        (b"\x00GET / HTTP/1.1\r\n\r\n", Violation::Malformed),
    ];
    for (bytes, want) in cases {
        assert_eq!(
            violation(bytes),
            Some(*want),
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn second_request_on_keep_alive_is_checked() {
    let first: &[u8] = b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n";
    let second: &[u8] = b"GET http://a.test/ HTTP/1.1\nHost: a.test\n\n";
    let joined = [first, second].concat();
    let mut s = HeadScanner::new();
    assert_eq!(
        s.feed(&joined),
        Err(Refused {
            violation: Violation::BareLf,
            head_start: Some(first.len()),
        })
    );
    // A body that contains what looks like a bad head is not a head.
    let mut s = HeadScanner::new();
    assert_eq!(
        s.feed(b"POST http://a.test/ HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n\n\n\n\n"),
        Ok(())
    );
}

#[test]
fn connect_becomes_a_tunnel() {
    let mut s = HeadScanner::new();
    assert_eq!(
        s.feed(b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n\x16\x03\n\n"),
        Ok(())
    );
    assert!(s.is_tunnel());
}

#[test]
fn oversized_head_is_refused() {
    let mut head = b"GET http://a.test/ HTTP/1.1\r\n".to_vec();
    while head.len() <= MAX_HEAD {
        head.extend_from_slice(
            b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        );
    }
    assert_eq!(violation(&head), Some(Violation::TooLarge));
}

/// Found by `cargo fuzz` (fuzz/targets/head.rs) and by reading: each input must get the same
/// verdict whole, in pieces, and a byte at a time.
#[test]
fn verdict_does_not_depend_on_how_reads_split_the_bytes() {
    let mut long_ext =
        b"POST http://a.test/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
    long_ext.extend(std::iter::repeat_n(b'x', 5000));
    long_ext.extend_from_slice(b"\r\nz\r\n0\r\n\r\n");
    let mut long_trailer =
        b"POST http://a.test/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: "
            .to_vec();
    long_trailer.extend(std::iter::repeat_n(b'y', 70_000));
    long_trailer.extend_from_slice(b"\r\n\r\n");
    let mut big_bare = b"GET http://a.test/ HTTP/1.1\nHost: a\r\nX: ".to_vec();
    big_bare.extend(std::iter::repeat_n(b'z', 70_000));
    big_bare.extend_from_slice(b"\r\n\r\n");
    let inputs: Vec<Vec<u8>> = vec![
        b"\r\nGET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec(),
        b"POST http://a.test/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\r\nGET http://a.test/ HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        long_ext,
        long_trailer,
        big_bare,
    ];
    for input in &inputs {
        let whole = scan(&[input]).map_err(|r| r.violation);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        let single = scan(&bytes).map_err(|r| r.violation);
        assert_eq!(
            whole,
            single,
            "{:?}",
            String::from_utf8_lossy(&input[..input.len().min(80)])
        );
        for cut in [1, 2, 3, input.len() / 2, input.len() - 1] {
            let (a, b) = input.split_at(cut);
            assert_eq!(
                scan(&[a, b]).map_err(|r| r.violation),
                whole,
                "cut at {cut}"
            );
        }
    }
    assert_eq!(scan(&[&inputs[0]]), Ok(()));
    assert_eq!(scan(&[&inputs[1]]), Ok(()));
}
