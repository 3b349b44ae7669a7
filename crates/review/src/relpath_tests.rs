use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::*;

/// Input, and the valid bytes or the error message.
type Case = (&'static [u8], Result<&'static [u8], &'static str>);

#[test]
fn new_validates() {
    let cases: &[Case] = &[
        (b"a/b", Ok(b"a/b")),
        (b"a/", Ok(b"a")),
        (b"", Ok(b"")),
        (b"/a", Err("/a is absolute, not relative to the workspace")),
        (
            b"a//b",
            Err("a//b is not a plain relative path (empty component)"),
        ),
        (
            b"./a",
            Err("./a is not a plain relative path (`.` component)"),
        ),
        (
            b"a/..",
            Err("a/.. is not a plain relative path (`..` component)"),
        ),
        (
            b"a\0b",
            Err("\"a\\000b\" is not a plain relative path (it contains a NUL byte)"),
        ),
    ];
    for (input, want) in cases {
        let got = RelPath::new(input.to_vec());
        match want {
            Ok(bytes) => assert_eq!(got.map(|p| p.0), Ok(bytes.to_vec()), "{input:?}"),
            Err(msg) => assert_eq!(got.map_err(|e| e.to_string()), Err(msg.to_string())),
        }
    }
}

#[test]
fn from_user_resolves_lexically() {
    let cases: &[(&str, &str, &str, Result<&str, &str>)] = &[
        ("src/x", "/w/lib", "/w", Ok("lib/src/x")),
        ("src/x", "/elsewhere", "/w", Ok("src/x")),
        ("x", "/w2", "/w", Ok("x")),
        ("/w/a/b", "/anything", "/w", Ok("a/b")),
        ("/w", "/", "/w", Ok("")),
        (".", "/w/lib", "/w", Ok("lib")),
        ("..", "/w/lib", "/w", Ok("")),
        ("a/./b/../c", "/w", "/w", Ok("a/c")),
        ("x/", "/w/", "/w/", Ok("x")),
        ("/w/../w/k", "/", "/w", Ok("k")),
        (
            "../..",
            "/w/lib",
            "/w",
            Err("../.. is outside the workspace /w"),
        ),
        ("/wx/a", "/", "/w", Err("/wx/a is outside the workspace /w")),
        (
            "/etc/passwd",
            "/w",
            "/w",
            Err("/etc/passwd is outside the workspace /w"),
        ),
        (
            "x",
            "/",
            "w",
            Err("the workspace w is not an absolute path"),
        ),
    ];
    for (arg, cwd, ws, want) in cases {
        let got = RelPath::from_user(OsStr::new(arg), Path::new(cwd), Path::new(ws));
        let got = got
            .map(|p| String::from_utf8(p.0).unwrap())
            .map_err(|e| e.to_string());
        let want = want.map(str::to_owned).map_err(str::to_owned);
        assert_eq!(got, want, "{arg} from {cwd} in {ws}");
    }
    let bad = OsStr::from_bytes(b"/etc/\xff");
    let err = RelPath::from_user(bad, Path::new("/w"), Path::new("/w")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "\"/etc/\\377\" is outside the workspace /w"
    );
}

#[test]
fn escapes_like_git() {
    let cases: &[(&[u8], &str, bool)] = &[
        (b"plain/name.rs", "plain/name.rs", false),
        (b"back\\slash", "back\\slash", false),
        ("é".as_bytes(), "é", false),
        (b"a\nb", "a\\nb", true),
        (b"tab\there", "tab\\there", true),
        (b"\xff", "\\377", true),
        (b"\x7f", "\\177", true),
        (b"\x01", "\\001", true),
        (b"\"q", "\\\"q", true),
        (b"x\"\\\n", "x\\\"\\\\\\n", true),
        ("a\u{202e}b".as_bytes(), "a\\342\\200\\256b", true),
        ("é\n".as_bytes(), "é\\n", true),
        (b"ok\xc3", "ok\\303", true),
    ];
    for (bytes, text, escaped) in cases {
        let (t, e) = escape(bytes);
        assert_eq!((t.as_ref(), e), (*text, *escaped), "{bytes:?}");
    }
    let p = RelPath::new(b"a\nb".to_vec()).unwrap();
    assert_eq!(p.to_string(), "\"a\\nb\"");
    assert_eq!(RelPath::new("x/y").unwrap().to_string(), "x/y");
    assert_eq!(RelPath::root().to_string(), ".");
}

#[test]
fn keys_round_trip() {
    let cases: &[&[u8]] = &[
        b"a/b",
        b"100%/x",
        b"with space",
        b"\xff\xfe/\n",
        "é/ü".as_bytes(),
    ];
    for bytes in cases {
        let p = RelPath::new(bytes.to_vec()).unwrap();
        let key = p.key();
        assert!(key.bytes().all(|b| (0x21..0x7f).contains(&b)), "{key}");
        assert_eq!(RelPath::from_key(&key), Some(p));
    }
    assert_eq!(RelPath::from_key("%G0"), None);
    assert_eq!(RelPath::from_key("a/%2E%2E"), None);
}

#[test]
fn prefixes_parents_and_joins() {
    let cases: &[(&str, &str, bool)] = &[
        ("a/b", "a", true),
        ("a", "a", true),
        ("a", "", true),
        ("ab", "a", false),
        ("a", "a/b", false),
        ("a-b/c", "a", false),
    ];
    for (p, base, want) in cases {
        let (p, base) = (RelPath::new(*p).unwrap(), RelPath::new(*base).unwrap());
        assert_eq!(p.starts_with(&base), *want, "{p} under {base}");
    }
    let p = RelPath::new("a/b/c").unwrap();
    assert_eq!(p.parent(), Some(RelPath::new("a/b").unwrap()));
    assert_eq!(RelPath::new("a").unwrap().parent(), Some(RelPath::root()));
    assert_eq!(RelPath::root().parent(), None);
    assert_eq!(p.file_name(), Some(b"c".as_slice()));
    assert_eq!(p.depth(), 3);
    assert_eq!(RelPath::root().join(b"x"), RelPath::new("x"));
    assert!(p.join(b"..").is_err());
    assert!(p.join(b"x/y").is_err());
}

proptest::proptest! {
    /// Any name a sandbox can write: keys round-trip, and the shown text has no control or
    /// bidi character and reads back as the same bytes.
    #[test]
    fn any_bytes_round_trip(parts in proptest::collection::vec(
        proptest::collection::vec(1u8..=255, 1..12), 1..4)) {
        let parts: Vec<Vec<u8>> = parts
            .into_iter()
            .map(|p| p.into_iter().map(|b| if b == b'/' { b'_' } else { b }).collect())
            .filter(|p: &Vec<u8>| p != b"." && p != b"..")
            .collect();
        proptest::prop_assume!(!parts.is_empty());
        let bytes = parts.join(&b'/');
        let p = RelPath::new(bytes.clone()).unwrap();
        proptest::prop_assert_eq!(RelPath::from_key(&p.key()), Some(p.clone()));
        let (text, escaped) = p.escaped();
        proptest::prop_assert!(!text.chars().any(unsafe_char));
        proptest::prop_assert_eq!(unquote(&text, escaped), bytes);
    }
}

/// The inverse of [`escape`] (for the property above).
fn unquote(text: &str, escaped: bool) -> Vec<u8> {
    if !escaped {
        return text.as_bytes().to_vec();
    }
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let c = b[i + 1];
        let simple = match c {
            b'a' => Some(7),
            b'b' => Some(8),
            b't' => Some(9),
            b'n' => Some(10),
            b'v' => Some(11),
            b'f' => Some(12),
            b'r' => Some(13),
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            _ => None,
        };
        match simple {
            Some(v) => {
                out.push(v);
                i += 2;
            }
            None => {
                let oct = std::str::from_utf8(&b[i + 1..i + 4]).unwrap();
                out.push(u8::from_str_radix(oct, 8).unwrap());
                i += 4;
            }
        }
    }
    out
}
