//! A name the agent wrote to its review layer, as the review shows and selects it.
//!
//! Properties:
//! - `RelPath::new` accepts exactly relative paths of non-empty components other than `.` and
//!   `..`, with no NUL byte (a trailing `/` dropped, the empty path the workspace itself), and
//!   keeps their bytes;
//! - the shown form of an accepted path holds no control character (nothing a terminal acts
//!   on), and is marked as escaped whenever it differs from the raw bytes;
//! - a path starts with itself and its parent, and the parent has one component less.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paddock_review::RelPath;

fuzz_target!(|data: &[u8]| {
    // A trailing `/` is dropped; the empty path is the workspace itself.
    let mut d = data;
    while d.len() > 1 && d.ends_with(b"/") {
        d = &d[..d.len() - 1];
    }
    let valid = !d.starts_with(b"/")
        && !d.contains(&0)
        && (d.is_empty()
            || d
                .split(|&b| b == b'/')
                .all(|c| !c.is_empty() && c != b"." && c != b".."));
    let Ok(p) = RelPath::new(data.to_vec()) else {
        assert!(!valid, "{data:?} refused");
        return;
    };
    assert!(valid, "{data:?} accepted");
    assert_eq!(p.as_bytes(), d, "{data:?}");
    let (shown, escaped) = p.escaped();
    assert!(
        !shown.chars().any(|c| c.is_control()),
        "{data:?} shows as {shown:?}"
    );
    if shown.as_bytes() != p.as_bytes() {
        assert!(escaped, "{data:?} shows as {shown:?} unmarked");
    }
    assert!(p.starts_with(&p));
    if let Some(parent) = p.parent() {
        assert!(p.starts_with(&parent));
        assert_eq!(parent.depth() + 1, p.depth());
    }
});
