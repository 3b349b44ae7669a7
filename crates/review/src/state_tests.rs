use super::*;

fn stat(mode: u32, ino: u64, size: u64, mtime_ns: i64, ctime_ns: i64) -> Stat {
    Stat {
        dev: 1,
        ino,
        mode,
        size,
        rdev: 0,
        uid: 0,
        gid: 0,
        mtime_ns,
        ctime_ns,
    }
}

const FILE: u32 = 0o100_644;
const DIR: u32 = 0o040_755;

fn record(host: Option<Stat>) -> Record {
    Record {
        host: host.as_ref().map(HostStat::from),
        ..Record::default()
    }
}

#[test]
fn conflicts() {
    let f = stat(FILE, 7, 10, 100, 100);
    let d = stat(DIR, 8, 0, 100, 100);
    let during = Record {
        during_run: true,
        ..Record::default()
    };
    let changed = Some("changed on the host since the sandbox first saw it");
    // (record, host now, deleting a directory, conflict)
    type Case = (Option<Record>, Option<Stat>, bool, Option<&'static str>);
    let cases: Vec<Case> = vec![
        (None, Some(f), false, None),
        (
            Some(during),
            Some(f),
            false,
            Some("changed on the host while the sandbox ran"),
        ),
        (Some(record(None)), None, false, None),
        (
            Some(record(None)),
            Some(f),
            false,
            Some("the host created it after the sandbox first saw it"),
        ),
        (
            Some(record(Some(f))),
            None,
            false,
            Some("the host deleted it after the sandbox first saw it"),
        ),
        (Some(record(Some(f))), Some(f), false, None),
        (
            Some(record(Some(f))),
            Some(stat(FILE, 7, 11, 100, 100)),
            false,
            changed,
        ),
        (
            Some(record(Some(f))),
            Some(stat(FILE, 7, 10, 100, 101)),
            false,
            changed,
        ),
        (
            Some(record(Some(f))),
            Some(stat(FILE, 9, 10, 100, 100)),
            false,
            changed,
        ),
        (
            Some(record(Some(f))),
            Some(stat(0o120_777, 7, 10, 100, 100)),
            false,
            Some("the host replaced it with another type of file"),
        ),
        // A directory: new entries in it change its times, not its identity or mode.
        (
            Some(record(Some(d))),
            Some(stat(DIR, 8, 0, 200, 200)),
            false,
            None,
        ),
        (
            Some(record(Some(d))),
            Some(stat(DIR, 8, 0, 200, 200)),
            true,
            changed,
        ),
        (
            Some(record(Some(d))),
            Some(stat(0o040_700, 8, 0, 100, 100)),
            false,
            changed,
        ),
    ];
    for (i, (rec, now, deleting, want)) in cases.into_iter().enumerate() {
        assert_eq!(
            conflict(rec.as_ref(), now.as_ref(), deleting).as_deref(),
            want,
            "case {i}"
        );
    }
}

#[test]
fn seen_round_trips_and_unused_bases_go() {
    let dir = tempfile::tempdir().unwrap();
    let state = State::create(&dir.path().join("state")).unwrap();
    let kept = state.store_base_bytes(b"kept").unwrap();
    let dropped = state.store_base_bytes(b"dropped").unwrap();
    let mut seen = Seen::new();
    let odd = RelPath::new(b"odd\n\xff%".to_vec()).unwrap();
    seen.insert(
        odd.clone(),
        Record {
            base: Some(kept.clone()),
            ..record(Some(stat(FILE, 1, 4, 5, 6)))
        },
    );
    seen.insert(RelPath::new("x").unwrap(), record(None));
    state.save_seen(&seen).unwrap();
    assert_eq!(state.seen().unwrap(), seen);
    assert_eq!(state.base(&kept).unwrap(), Some(b"kept".to_vec()));
    assert_eq!(state.base(&dropped).unwrap(), None);
    assert_eq!(state.base("../meta.json").unwrap(), None);
}

#[test]
fn damaged_state_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = State::create(dir.path()).unwrap();
    std::fs::write(dir.path().join("seen.json"), "{not json").unwrap();
    let err = state.seen().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the review state file {} is damaged",
            dir.path().join("seen.json").display()
        )
    );
}
