//! What an image needs for a sandbox's own Docker Engine (`--docker`): Debian's packages of the
//! engine and its tools, the agent in the `docker` group, and Docker client settings that give
//! every container and build the proxy at the address containers reach inside the sandbox.

use paddock_wire::docker::CONTAINER_PROXY;

/// Packages added to an image for Docker: the engine (dockerd, containerd, runc), its
/// netfilter tools, Compose, and a static busybox to make images from where no registry is
/// allowed (`docker import`).
pub const PACKAGES: &[&str] = &["docker.io", "docker-compose", "iptables", "busybox-static"];

/// The image's name with Docker: `NAME-docker` (an image already named so is itself).
pub fn image_name(base: &str) -> String {
    if base.ends_with(SUFFIX) {
        base.to_owned()
    } else {
        format!("{base}{SUFFIX}")
    }
}

/// The image a Docker image is made from (`None`: the name is not one).
pub fn base_of(name: &str) -> Option<&str> {
    name.strip_suffix(SUFFIX).filter(|b| !b.is_empty())
}

const SUFFIX: &str = "-docker";

/// The Docker client's settings for root and the agent: the proxy for containers and builds
/// (loopback and the container's own names stay direct).
fn client_config() -> String {
    format!(
        r#"{{"proxies":{{"default":{{"httpProxy":"{CONTAINER_PROXY}","httpsProxy":"{CONTAINER_PROXY}","noProxy":"localhost,127.0.0.0/8"}}}}}}"#
    )
}

/// `docker compose` where the suite's Compose is the stand-alone `docker-compose` (Debian 12's
/// 1.29): a Docker CLI plugin that hands its arguments over.
const COMPOSE_PLUGIN: &str = r#"#!/bin/sh
# `docker compose`, carried out by the stand-alone docker-compose (Paddock's image).
if [ "$1" = docker-cli-plugin-metadata ]; then
  echo '{"SchemaVersion":"0.1.0","Vendor":"Paddock","Version":"1","ShortDescription":"Docker Compose (docker-compose)"}'
  exit 0
fi
shift
exec docker-compose "$@"
"#;

/// mmdebstrap's hooks on the finished tree (`$1`), after the common ones (the agent exists).
pub fn customize_hooks() -> Vec<String> {
    let config = client_config();
    let plugin = "$1/usr/libexec/docker/cli-plugins/docker-compose";
    vec![
        "chroot \"$1\" usermod --append --groups docker agent".into(),
        format!(
            "for h in root home/agent; do mkdir -p \"$1/$h/.docker\" && printf '%s\\n' '{config}' > \"$1/$h/.docker/config.json\"; done && chroot \"$1\" chown -R agent:agent /home/agent/.docker"
        ),
        format!(
            "[ -e \"{plugin}\" ] || {{ mkdir -p \"$(dirname \"{plugin}\")\" && cat > \"{plugin}\" <<'PADDOCK_EOF'\n{COMPOSE_PLUGIN}PADDOCK_EOF\nchmod 0755 \"{plugin}\"; }}"
        ),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::fs;
    use std::process::Command;

    use super::*;

    #[test]
    fn names_with_and_without_docker() {
        assert_eq!(image_name("default"), "default-docker");
        assert_eq!(image_name("default-docker"), "default-docker");
        assert_eq!(base_of("default-docker"), Some("default"));
        assert_eq!(base_of("default"), None);
        assert_eq!(base_of("-docker"), None);
    }

    #[test]
    fn the_hooks_write_the_client_settings_and_the_compose_plugin() {
        let root = tempfile::tempdir().unwrap();
        for hook in customize_hooks()
            .iter()
            .filter(|h| !h.starts_with("chroot"))
        {
            // chown needs the tree's own users: only the files are checked here.
            crate::run_hook(hook.split(" && chroot").next().unwrap(), root.path());
        }
        for home in ["root", "home/agent"] {
            let text =
                fs::read_to_string(root.path().join(home).join(".docker/config.json")).unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                v["proxies"]["default"]["httpsProxy"],
                "http://172.17.0.1:3128"
            );
        }
        let plugin = root
            .path()
            .join("usr/libexec/docker/cli-plugins/docker-compose");
        let meta = Command::new(&plugin)
            .arg("docker-cli-plugin-metadata")
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&meta.stdout).unwrap();
        assert_eq!(v["SchemaVersion"], "0.1.0");
        // The plugin gets its own name first, then the user's arguments.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("docker-compose");
        fs::write(&fake, "#!/bin/sh\necho \"$@\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        let out = Command::new(&plugin)
            .args(["compose", "up", "-d"])
            .env("PATH", dir.path())
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "up -d\n");
    }
}
