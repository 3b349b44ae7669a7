//! The checked-in `docs/openapi.json` is the document the server serves: regenerate it with
//! `PADDOCK_UPDATE_OPENAPI=1 cargo test -p paddock-api --test openapi`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[test]
fn checked_in_document_is_current() {
    let document = paddock_api::openapi();
    let generated = format!("{}\n", serde_json::to_string_pretty(&document).unwrap());
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    if std::env::var_os("PADDOCK_UPDATE_OPENAPI").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/openapi.json differs from the routes' annotations; regenerate it with \
         PADDOCK_UPDATE_OPENAPI=1 cargo test -p paddock-api --test openapi\n\n{}",
        first_difference(&checked_in, &generated)
    );
}

/// The first line that differs, to say where without printing both documents.
fn first_difference(old: &str, new: &str) -> String {
    let (mut old_lines, mut new_lines) = (old.lines(), new.lines());
    for n in 1.. {
        match (old_lines.next(), new_lines.next()) {
            (None, None) => break,
            (a, b) if a == b => continue,
            (a, b) => return format!("line {n}:\n  checked in: {a:?}\n  generated:  {b:?}"),
        }
    }
    String::new()
}
