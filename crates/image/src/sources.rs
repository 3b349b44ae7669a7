//! Reading the host's apt sources (one-line and deb822 formats).

use std::fs;

/// One `deb` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    /// Mirror URI.
    pub uri: String,
    /// Suite.
    pub suite: String,
}

impl AptSource {
    /// The one-line form mmdebstrap takes.
    pub fn line(&self) -> String {
        format!("deb {} {} main", self.uri, self.suite)
    }
}

/// The host's Debian codename (`bookworm` when unknown or not Debian).
pub fn host_suite() -> String {
    let text = fs::read_to_string("/etc/os-release").unwrap_or_default();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim_matches('"').to_owned())
    };
    match (get("ID="), get("VERSION_CODENAME=")) {
        (Some(id), Some(code)) if id == "debian" && !code.is_empty() => code,
        _ => "bookworm".to_owned(),
    }
}

/// Parses sources text in either format into (types, uris, suites).
pub fn parse(text: &str, deb822: bool) -> Vec<AptSource> {
    let mut out = Vec::new();
    if deb822 {
        for stanza in text.split("\n\n") {
            let mut types = vec![];
            let mut uris = vec![];
            let mut suites = vec![];
            let mut enabled = true;
            for line in stanza.lines() {
                if line.trim_start().starts_with('#') {
                    continue;
                }
                let Some((k, v)) = line.split_once(':') else {
                    continue;
                };
                let vals: Vec<String> = v.split_whitespace().map(str::to_owned).collect();
                match k.trim().to_ascii_lowercase().as_str() {
                    "types" => types = vals,
                    "uris" => uris = vals,
                    "suites" => suites = vals,
                    "enabled" => enabled = v.trim() != "no",
                    _ => {}
                }
            }
            if enabled && types.iter().any(|t| t == "deb") {
                for u in &uris {
                    for s in &suites {
                        out.push(AptSource {
                            uri: u.clone(),
                            suite: s.clone(),
                        });
                    }
                }
            }
        }
    } else {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            let mut parts = line.split_whitespace().peekable();
            if parts.next() != Some("deb") {
                continue;
            }
            if parts.peek().is_some_and(|p| p.starts_with('[')) {
                for p in parts.by_ref() {
                    if p.ends_with(']') {
                        break;
                    }
                }
            }
            if let (Some(uri), Some(suite)) = (parts.next(), parts.next()) {
                out.push(AptSource {
                    uri: uri.to_owned(),
                    suite: suite.to_owned(),
                });
            }
        }
    }
    out
}

/// The host's sources for `suite` and its `-updates`/`-security` companions.
pub fn debian_sources(suite: &str) -> Vec<AptSource> {
    let mut all = Vec::new();
    if let Ok(t) = fs::read_to_string("/etc/apt/sources.list") {
        all.extend(parse(&t, false));
    }
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let Ok(t) = fs::read_to_string(&f) else {
                continue;
            };
            match f.extension().and_then(|e| e.to_str()) {
                Some("list") => all.extend(parse(&t, false)),
                Some("sources") => all.extend(parse(&t, true)),
                _ => {}
            }
        }
    }
    let wanted = [
        suite.to_owned(),
        format!("{suite}-updates"),
        format!("{suite}-security"),
    ];
    let mut out: Vec<AptSource> = all
        .into_iter()
        .filter(|s| wanted.contains(&s.suite))
        .collect();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_formats() {
        let one = "deb http://m.example/debian bookworm main\n# deb http://x y z\ndeb [arch=amd64 signed-by=/k] http://n.example/d bookworm-updates main\ndeb-src http://s b main\n";
        assert_eq!(
            parse(one, false),
            vec![
                AptSource {
                    uri: "http://m.example/debian".into(),
                    suite: "bookworm".into()
                },
                AptSource {
                    uri: "http://n.example/d".into(),
                    suite: "bookworm-updates".into()
                },
            ]
        );
        let d822 = "Types: deb\n# comment\nURIs: http://m.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://other.example/x\nSuites: nodistro\nEnabled: no\n";
        assert_eq!(parse(d822, true).len(), 2);
    }
}
