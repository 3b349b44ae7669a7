//! The sandbox's environment: nothing of the host's except the terminal type and locale.

use paddock_policy::EnvVar;

/// Builds the complete environment for a command running as `uid` inside.
pub fn environment(
    host: impl IntoIterator<Item = (String, String)>,
    extra: &[EnvVar],
    uid: u32,
    tty: bool,
    hostname: &str,
    proxy: bool,
) -> Vec<(String, String)> {
    let (home, user) = match uid {
        0 => ("/root".to_owned(), "root".to_owned()),
        1000 => ("/home/agent".to_owned(), "agent".to_owned()),
        n => ("/".to_owned(), n.to_string()),
    };
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOME".into(), home),
        ("USER".into(), user.clone()),
        ("LOGNAME".into(), user),
        ("SHELL".into(), "/bin/bash".into()),
        ("HOSTNAME".into(), hostname.to_owned()),
        ("PADDOCK".into(), "1".into()),
        ("PADDOCK_SANDBOX".into(), hostname.to_owned()),
    ];
    let mut term = None;
    for (k, v) in host {
        if k == "TERM" {
            term = Some(v);
        } else if k == "LANG" || k == "LANGUAGE" || k.starts_with("LC_") {
            env.push((k, v));
        }
    }
    if proxy {
        let url = format!("http://127.0.0.1:{}", paddock_core::PROXY_PORT);
        for k in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
            env.push((k.into(), url.clone()));
            env.push((k.to_ascii_lowercase(), url.clone()));
        }
        env.push(("NO_PROXY".into(), "localhost,127.0.0.1".into()));
        env.push(("no_proxy".into(), "localhost,127.0.0.1".into()));
    }
    match term {
        Some(t) => env.push(("TERM".into(), t)),
        None if tty => env.push(("TERM".into(), "xterm-256color".into())),
        None => {}
    }
    for e in extra {
        env.retain(|(k, _)| *k != e.name);
        env.push((e.name.clone(), e.value.clone()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_term_and_locale_pass() {
        let host = [
            ("TERM", "xterm"),
            ("LANG", "C.UTF-8"),
            ("LC_ALL", "C"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
            ("HOME", "/root"),
            ("SSH_AUTH_SOCK", "/tmp/s"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let extra = vec!["FOO=bar".parse().unwrap(), "HOME=/w".parse().unwrap()];
        let env = environment(host, &extra, 1000, false, "box", false);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("TERM"), Some("xterm"));
        assert_eq!(get("LC_ALL"), Some("C"));
        assert_eq!(get("AWS_SECRET_ACCESS_KEY"), None);
        assert_eq!(get("SSH_AUTH_SOCK"), None);
        assert_eq!(get("HOME"), Some("/w"));
        assert_eq!(get("FOO"), Some("bar"));
        assert_eq!(get("USER"), Some("agent"));
    }
}
