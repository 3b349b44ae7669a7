//! The built-in services (data in `services.toml`).

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// How the proxy puts a secret into a request to one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Injection {
    /// The header is set to `prefix` + the value, replacing what the client sent.
    Header {
        /// The host (exact, lower case).
        host: String,
        /// Header name.
        header: String,
        /// Written before the value (`Bearer `).
        #[serde(default)]
        prefix: String,
    },
    /// HTTP basic authentication with `user` and the value as the password.
    Basic {
        /// The host.
        host: String,
        /// The user name.
        user: String,
    },
    /// Only the placeholder is replaced, wherever it appears in the request head.
    Placeholder {
        /// The host.
        host: String,
    },
}

impl Injection {
    /// The host this injection is for.
    pub fn host(&self) -> &str {
        match self {
            Injection::Header { host, .. }
            | Injection::Basic { host, .. }
            | Injection::Placeholder { host } => host,
        }
    }
}

/// A built-in service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Its name (`paddock secret set NAME`).
    pub name: String,
    /// Other names accepted for it.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Variables the agent's tools read; they hold the placeholder inside the sandbox.
    pub env: Vec<String>,
    /// Where and how the value goes.
    pub inject: Vec<Injection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    service: Vec<Service>,
}

/// Every built-in service.
pub fn services() -> &'static [Service] {
    static TABLE: OnceLock<Vec<Service>> = OnceLock::new();
    TABLE.get_or_init(|| {
        toml::from_str::<Table>(include_str!("services.toml"))
            .map(|t| t.service)
            .unwrap_or_default()
    })
}

/// The service called `name` (or one of its aliases).
pub fn find_service(name: &str) -> Option<&'static Service> {
    let name = name.to_ascii_lowercase();
    services()
        .iter()
        .find(|s| s.name == name || s.aliases.contains(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses_and_names_the_issue_services() {
        let t: Table = toml::from_str(include_str!("services.toml")).unwrap();
        assert_eq!(t.service.len(), services().len());
        for name in [
            "anthropic",
            "openai",
            "gemini",
            "google",
            "mistral",
            "groq",
            "xai",
            "github",
        ] {
            assert!(find_service(name).is_some(), "{name}");
        }
        let gh = find_service("github").unwrap();
        assert!(
            gh.inject
                .iter()
                .any(|i| matches!(i, Injection::Basic { host, .. } if host == "github.com"))
        );
        assert!(gh.env.contains(&"GH_TOKEN".to_owned()));
        for s in services() {
            for i in &s.inject {
                assert_eq!(i.host(), i.host().to_ascii_lowercase());
            }
        }
    }
}
