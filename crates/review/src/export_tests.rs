#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

fn p(s: &[u8]) -> RelPath {
    RelPath::new(s.to_vec()).unwrap()
}

/// Writes `records` with their data (`(record, data)`), as the helper does.
fn stream(records: &[(Record, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    write_magic(&mut out).unwrap();
    for (r, data) in records {
        write_record(&mut out, r).unwrap();
        write_data(&mut out, &mut &data[..], data.len() as u64).unwrap();
    }
    out
}

const ID: &str = "0123456789abcdef0123456789abcdef01234567";

#[test]
fn records_and_their_data_round_trip() {
    let records: Vec<(Record, &[u8])> = vec![
        (
            Record::Change {
                kind: Kind::Modified,
                path: p(b"a\nb/\xffc"),
                from: None,
                new: New::File { exec: true },
                len: 5,
            },
            b"hello",
        ),
        (
            Record::Change {
                kind: Kind::Renamed,
                path: p(b"new"),
                from: Some(p(b"old")),
                new: New::Symlink,
                len: 4,
            },
            b"/etc",
        ),
        (
            Record::Change {
                kind: Kind::Deleted,
                path: p(b"gone"),
                from: None,
                new: New::Absent,
                len: 0,
            },
            b"",
        ),
        (
            Record::Skipped {
                path: p(b".git/x"),
                reason: "git internals".into(),
            },
            b"",
        ),
        (
            Record::Head {
                id: ID.into(),
                branch: Some("refs/heads/main".into()),
            },
            b"",
        ),
        (
            Record::Object {
                kind: ObjectFile::Loose,
                name: format!("01/{}", &ID[2..]),
                len: 3,
            },
            b"xyz",
        ),
        (Record::End, b""),
    ];
    let bytes = stream(&records);
    let mut r = Reader::new(&bytes[..]);
    for (i, (want, data)) in records.iter().enumerate() {
        assert_eq!(&r.next_record().unwrap(), want);
        // Every other record's data is read; the others are skipped by `next`.
        if i % 2 == 0 {
            let mut got = Vec::new();
            r.data(&mut got).unwrap();
            assert_eq!(&got, data);
        }
    }
    assert_eq!(r.next_record().unwrap(), Record::End);
}

#[test]
fn a_truncated_or_foreign_stream_is_an_error() {
    let full = stream(&[
        (
            Record::Change {
                kind: Kind::Added,
                path: p(b"f"),
                from: None,
                new: New::File { exec: false },
                len: 3,
            },
            b"abc",
        ),
        (Record::End, b""),
    ]);
    // Every proper prefix fails somewhere before End.
    for cut in 0..full.len() {
        let mut r = Reader::new(&full[..cut]);
        let mut ended = false;
        for _ in 0..4 {
            match r.next_record() {
                Ok(Record::End) => {
                    ended = true;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        assert!(!ended, "a stream cut at {cut} reached its end");
    }
    assert!(matches!(
        Reader::new(&b"PDKEXP2\nE"[..]).next_record(),
        Err(WireError::Magic)
    ));
}

#[test]
fn bad_fields_are_refused() {
    let with = |body: &[u8]| {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(body);
        Reader::new(&b[..]).next_record().map_err(|e| e.to_string())
    };
    let field = |s: &[u8]| {
        let mut b = (s.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(s);
        b
    };
    // A path with `..`.
    let mut c = b"CAf".to_vec();
    c.extend(field(b"../x"));
    c.extend(field(b""));
    c.extend(0u64.to_be_bytes());
    assert!(with(&c).unwrap_err().contains("damaged"));
    // Data after a deletion.
    let mut c = b"CD-".to_vec();
    c.extend(field(b"x"));
    c.extend(field(b""));
    c.extend(7u64.to_be_bytes());
    assert!(with(&c).is_err());
    // A rename without a source.
    let mut c = b"CRf".to_vec();
    c.extend(field(b"x"));
    c.extend(field(b""));
    c.extend(0u64.to_be_bytes());
    assert!(with(&c).is_err());
    // HEAD that is a short or upper-case id, or a ref out of refs/.
    for (id, branch) in [
        ("0123", ""),
        (&ID.to_uppercase()[..], ""),
        (ID, "HEAD"),
        (ID, "refs/heads/../x"),
    ] {
        let mut h = b"H".to_vec();
        h.extend(field(id.as_bytes()));
        h.extend(field(branch.as_bytes()));
        assert!(with(&h).is_err(), "{id} {branch}");
    }
    // Object names.
    for (t, name) in [
        (b'O', "0/1"),
        (b'O', "zz/0123456789abcdef0123456789abcdef012345"),
        (b'O', "../../etc/passwd"),
        (b'P', "pack-1234.pack"),
        (b'P', "pack-0123456789abcdef0123456789abcdef01234567.idx"),
    ] {
        let mut o = vec![t];
        o.extend(field(name.as_bytes()));
        o.extend(0u64.to_be_bytes());
        assert!(with(&o).is_err(), "{name}");
    }
    // A field longer than allowed.
    let mut s = b"S".to_vec();
    s.extend(((MAX_FIELD + 1) as u32).to_be_bytes());
    assert!(with(&s).unwrap_err().contains("bytes"));
    assert!(with(b"Z").is_err());
}

#[test]
fn names_are_checked() {
    assert!(is_object_id(ID));
    assert!(is_object_id(&"ab".repeat(32)));
    assert!(!is_object_id(&ID[1..]));
    assert!(object_file_name(
        ObjectFile::Loose,
        &format!("01/{}", &ID[2..])
    ));
    assert!(object_file_name(
        ObjectFile::Pack,
        &format!("pack-{ID}.pack")
    ));
    assert!(!object_file_name(
        ObjectFile::Loose,
        &format!("tmp_obj_{ID}")
    ));
    assert!(is_ref_name("refs/heads/feature/x-1"));
    for bad in [
        "refs/heads/a..b",
        "refs/heads/.x",
        "refs/heads/x.lock",
        "refs/heads/a b",
        "refs/heads/",
        "heads/x",
        "refs/heads/x@{1}",
    ] {
        assert!(!is_ref_name(bad), "{bad}");
    }
}

proptest! {
    /// Whatever bytes arrive, the reader returns records or an error, never panics, and ends.
    #[test]
    fn any_bytes_are_read_without_panic(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = MAGIC.to_vec();
        bytes.extend(tail);
        let mut r = Reader::new(&bytes[..]);
        for _ in 0..600 {
            match r.next_record() {
                Ok(Record::End) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}
