//! The secrets kept on the host, as the front ends may show them: names, scopes, hosts and
//! variables, never values.

use crate::{Engine, Result};

impl Engine {
    /// The secrets kept on the host, without their values; with `sandbox`, those a sandbox of
    /// that name gets (its own and the global ones).
    pub fn secrets(&self, sandbox: Option<&str>) -> Result<Vec<paddock_secrets::EntryInfo>> {
        let own = match sandbox {
            Some(s) => Some(format!("sandbox {}", crate::sandboxes::parse_name(s)?)),
            None => None,
        };
        let all = paddock_secrets::SecretStore::at_default(self.dirs.home()).list()?;
        Ok(all
            .into_iter()
            .filter(|e| {
                own.as_ref()
                    .is_none_or(|o| e.scope == "global" || e.scope == *o)
            })
            .collect())
    }
}
