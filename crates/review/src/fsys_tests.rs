use super::*;

#[test]
fn binary_detection() {
    let mut big_text = vec![b'a'; 9000];
    big_text.push(0);
    let cases: &[(&[&[u8]], bool)] = &[
        (&[b"plain text\n"], false),
        (&[b""], false),
        (&[b"a\0b"], true),
        (&[b"\xff"], true),
        (&["é".as_bytes()], false),
        // A character split across chunks is still UTF-8.
        (&[b"caf\xc3", b"\xa9!"], false),
        // Cut short at the end: not UTF-8.
        (&[b"caf\xc3"], true),
        // A NUL after the first 8 KiB is valid UTF-8 and does not count.
        (&[&big_text], false),
        (&[&[b'a'; 8191], b"\0"], true),
    ];
    for (chunks, want) in cases {
        let mut s = Sniff::default();
        for c in *chunks {
            s.feed(c);
        }
        assert_eq!(s.binary(), *want, "{chunks:?}");
    }
}

#[test]
fn stream_helpers() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.path().join(name), bytes).unwrap();
        File::open(dir.path().join(name)).unwrap()
    };
    let long: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut other = long.clone();
    other[150_000] ^= 1;
    assert!(same_content(&mut write("a", &long), &mut write("b", &long)).unwrap());
    assert!(!same_content(&mut write("c", &long), &mut write("d", &other)).unwrap());
    assert!(!same_content(&mut write("e", &long), &mut write("f", &long[..1000])).unwrap());
    assert_eq!(
        read_limited(&mut write("g", b"12345"), 5).unwrap(),
        Some(b"12345".to_vec())
    );
    assert_eq!(read_limited(&mut write("h", b"123456"), 5).unwrap(), None);
    assert_eq!(
        hex(&hash(&mut write("i", b"abc")).unwrap()),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn never_follows_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("real")).unwrap();
    std::fs::write(root.join("real/f"), "x").unwrap();
    std::os::unix::fs::symlink("real", root.join("link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("out")).unwrap();
    let fd = open_own_dir(&root).unwrap();
    let rel = |s: &str| RelPath::new(s).unwrap();
    assert!(open_file(fd.as_fd(), &rel("real/f")).is_ok());
    let loop_err = |r: io::Result<File>| r.err().and_then(|e| e.raw_os_error());
    // The symlinked parent is refused (ENOTDIR or ELOOP), never entered.
    assert!(matches!(
        loop_err(open_file(fd.as_fd(), &rel("link/f"))),
        Some(20 | 40)
    ));
    assert!(open_file(fd.as_fd(), &rel("out")).is_err());
    assert_eq!(
        stat_rel(fd.as_fd(), &rel("out")).unwrap().map(|s| s.kind()),
        Some(Kind::Symlink)
    );
    assert!(stat_rel(fd.as_fd(), &rel("link/f")).is_err());
    assert_eq!(stat_rel(fd.as_fd(), &rel("missing/f")).unwrap(), None);
    // Removing a tree removes the link, never what it points to.
    std::os::unix::fs::symlink(root.join("real"), root.join("real2")).unwrap();
    std::fs::create_dir(root.join("t")).unwrap();
    std::os::unix::fs::symlink(root.join("real"), root.join("t/inner")).unwrap();
    remove_tree(fd.as_fd(), b"t").unwrap();
    assert!(!root.join("t").exists());
    assert!(root.join("real/f").exists());
}
