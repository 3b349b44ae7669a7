//! What the in-sandbox Docker Engine (`--docker`) and the image's Docker client settings agree
//! on.

/// The address of the engine's default bridge (`docker0`) inside the sandbox, with its prefix
/// length: the engine is started with it, and the sandbox's helper serves the egress proxy
/// there too, so that containers reach the proxy.
pub const BRIDGE_CIDR: &str = "172.17.0.1/16";

/// The bridge's own address: containers' proxy is `http://BRIDGE_ADDR:3128`.
pub const BRIDGE_ADDR: [u8; 4] = [172, 17, 0, 1];

/// The proxy URL containers get (`HTTP(S)_PROXY`, written into the image's Docker client
/// settings, which pass it to every container and build).
pub const CONTAINER_PROXY: &str = "http://172.17.0.1:3128";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_spellings_of_the_bridge_agree() {
        let dotted = BRIDGE_ADDR.map(|b| b.to_string()).join(".");
        assert_eq!(BRIDGE_CIDR.split('/').next(), Some(dotted.as_str()));
        assert_eq!(
            CONTAINER_PROXY,
            format!("http://{dotted}:{}", crate::vm::PROXY_PORT)
        );
    }
}
