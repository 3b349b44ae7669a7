//! Network policy: canonical hosts, address classes, rules and the decision over them.

mod addr;
mod host;
mod rule;
mod upstream;

pub use addr::{AddrClass, classify};
pub use host::{Host, HostError, canonical_ip, parse_ipv4_any, split_host_port};
pub use rule::{
    Action, Decision, HostPattern, Kind, PathGlob, PortSpec, Rule, RuleError, Scope, StoredRule,
    Target, Tunnel, decide, decide_address, interception_rule, needs_interception, normalize_path,
    parse_method, tunnel,
};
pub use upstream::{DEFAULT_PROXY_PORT, NoProxy, ProxyUrl, UpstreamError, UpstreamProxy};
