//! `export` and `export_commits` on real overlay layers: the agent's content of each change as
//! a stream, and the commits an agent made with git inside, found through the overlay's view
//! of `.git` (loose refs, `packed-refs`, whiteouts).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, rel};
use paddock_review::export::{Kind, New, ObjectFile, Reader, Record};
use paddock_review::{Error, HeadError, RelPath};

/// The records of a stream, each with its data.
fn records(bytes: &[u8]) -> Vec<(Record, Vec<u8>)> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    loop {
        let rec = r.next_record().unwrap();
        if rec == Record::End {
            return out;
        }
        let mut data = Vec::new();
        r.data(&mut data).unwrap();
        out.push((rec, data));
    }
}

fn git(fx: &Fixture, args: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "git -c user.name=t -c user.email=t@t -c init.defaultBranch=main {args}"
        ))
        .current_dir(&fx.ws)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn each_change_comes_with_the_agents_content() {
    let fx = Fixture::new();
    fx.host(
        "mkdir .git; printf 'x' > .git/config; printf 'one\\n' > a.txt; printf 'gone\\n' > d.txt; \
         printf 'moving on\\n' > old.txt; printf 'x\\n' > run.sh",
    );
    fx.agent(
        "printf 'two\\n' > a.txt; rm d.txt; mv old.txt new.txt; chmod +x run.sh; \
         ln -s /etc evil; mkfifo pipe; printf 'y' > .git/config; mkdir -p n/e; printf 'w' > n/e/w",
    );
    let mut out = Vec::new();
    fx.layer().export(&[], fx.since(), &mut out).unwrap();
    let mut got = records(&out);
    got.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
    let change = |kind, path: &str, from: Option<RelPath>, new, data: &[u8]| {
        (
            Record::Change {
                kind,
                path: rel(path),
                from,
                new,
                len: data.len() as u64,
            },
            data.to_vec(),
        )
    };
    let mut want = vec![
        change(
            Kind::Modified,
            "a.txt",
            None,
            New::File { exec: false },
            b"two\n",
        ),
        change(Kind::Deleted, "d.txt", None, New::Absent, b""),
        change(Kind::Added, "evil", None, New::Symlink, b"/etc"),
        change(Kind::Added, "n/e/w", None, New::File { exec: false }, b"w"),
        change(
            Kind::Renamed,
            "new.txt",
            Some(rel("old.txt")),
            New::File { exec: false },
            b"moving on\n",
        ),
        change(Kind::Mode, "run.sh", None, New::File { exec: true }, b"x\n"),
        (
            Record::Skipped {
                path: rel(".git/config"),
                reason: paddock_review::GIT_INTERNAL.into(),
            },
            Vec::new(),
        ),
        (
            Record::Skipped {
                path: rel("pipe"),
                reason: "a fifo, socket or device: never committed".into(),
            },
            Vec::new(),
        ),
    ];
    want.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
    assert_eq!(got, want);

    // A selection exports only what it selects.
    let mut out = Vec::new();
    fx.layer()
        .export(&[rel("a.txt")], fx.since(), &mut out)
        .unwrap();
    assert_eq!(records(&out).len(), 1);
}

#[test]
fn the_agents_commits_are_found_through_the_overlay() {
    let fx = Fixture::new();
    git(&fx, "init -q");
    fx.host("printf 'one\\n' > a.txt");
    git(
        &fx,
        "add a.txt && git -c user.name=t -c user.email=t@t commit -qm base",
    );
    git(&fx, "pack-refs --all");
    let base = git(&fx, "rev-parse HEAD");
    // Before the agent did anything, HEAD is the host's (from packed-refs).
    let mut out = Vec::new();
    fx.layer().export_commits(&mut out).unwrap();
    let got = records(&out);
    assert_eq!(
        got[0].0,
        Record::Head {
            id: base.clone(),
            branch: Some("refs/heads/main".into())
        }
    );
    assert_eq!(got.len(), 1, "no objects yet: {got:?}");

    fx.agent(
        "printf 'two\\n' > a.txt; \
         git -c user.name=a -c user.email=a@b commit -qam agent; \
         git rev-parse HEAD > .agent-head",
    );
    let agent_head = std::fs::read_to_string(fx.upper.join(".agent-head")).unwrap();
    let mut out = Vec::new();
    fx.layer().export_commits(&mut out).unwrap();
    let got = records(&out);
    assert_eq!(
        got[0].0,
        Record::Head {
            id: agent_head.trim().to_owned(),
            branch: Some("refs/heads/main".into())
        }
    );
    // The commit, its tree and the new blob: three loose objects, one of them the commit.
    let names: Vec<String> = got[1..]
        .iter()
        .map(|(r, _)| match r {
            Record::Object {
                kind: ObjectFile::Loose,
                name,
                ..
            } => name.replace('/', ""),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.contains(&agent_head.trim().to_owned()));

    // The agent deletes its branch and detaches: the whiteout hides the host's packed ref.
    fx.agent("git checkout -q --detach && git branch -qD main && git pack-refs --all");
    let mut out = Vec::new();
    fx.layer().export_commits(&mut out).unwrap();
    assert_eq!(
        records(&out)[0].0,
        Record::Head {
            id: agent_head.trim().to_owned(),
            branch: None
        }
    );
    fx.agent("rm -rf .git");
    let err = fx.layer().export_commits(&mut Vec::new()).unwrap_err();
    assert!(matches!(err, Error::Head(HeadError::NoHead)), "{err}");
}

#[test]
fn a_branch_without_commits_gives_an_empty_stream() {
    let fx = Fixture::new();
    git(&fx, "init -q");
    fx.agent("printf x > f");
    let mut out = Vec::new();
    fx.layer().export_commits(&mut out).unwrap();
    assert_eq!(records(&out), Vec::new());
}
