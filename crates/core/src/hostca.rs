//! The host's extra certificate authorities: those its trust store holds and the image's does
//! not (a company's TLS-inspecting proxy, a private registry's CA). A sandbox trusts them too
//! unless it was made with `--no-host-ca`, so that clients inside accept what the host's own
//! clients accept.
//!
//! The host's trust store is the file `SSL_CERT_FILE` names (as for OpenSSL and the egress
//! proxy's upstream checks), else Debian's bundle.

use std::path::{Path, PathBuf};

use crate::backend::TRUST_STORE;

/// One certificate the host trusts and the image does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCa {
    /// Its PEM text, ending in a newline.
    pub pem: String,
    /// Its subject's common name, when it has one (for messages).
    pub name: Option<String>,
}

/// The host's trust store: `SSL_CERT_FILE` when set to an absolute path, else the system
/// bundle.
pub fn host_bundle() -> PathBuf {
    std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from(TRUST_STORE))
}

/// Where Debian keeps the CAs its `ca-certificates` package ships (the host's own; a local CA
/// is added under `/usr/local/share/ca-certificates` instead).
const DISTRIBUTION_CAS: &str = "/usr/share/ca-certificates";

/// The certificates of the host's trust store that the image at `rootfs` lacks and the host's
/// distribution did not ship: CAs the host's owner added (a company's, a mirror's). A CA that
/// only differs because the host's `ca-certificates` is another version (one the image's
/// dropped as distrusted, say) is not carried in. An unreadable host bundle gives none (the
/// sandbox then trusts what the image trusts).
pub fn extras(rootfs: &Path) -> Vec<HostCa> {
    let host = std::fs::read(host_bundle()).unwrap_or_default();
    let mut known =
        std::fs::read(rootfs.join(TRUST_STORE.trim_start_matches('/'))).unwrap_or_default();
    known.push(b'\n');
    known.extend(distribution_bundle(Path::new(DISTRIBUTION_CAS)));
    missing(&host, &known)
}

/// [`extras`] as one PEM text, remembered in `cache` (a directory of Paddock's own) under a key
/// made of what it depends on: the host's bundle, the image's and the distribution's
/// directory of CAs (device, inode, size and modification time of each, and of each
/// subdirectory of the last). A start then reads one small file instead of parsing some 400
/// certificates; a change to any input makes a new key.
pub fn extras_pem(rootfs: &Path, cache: &Path) -> String {
    let host = host_bundle();
    let image = rootfs.join(TRUST_STORE.trim_start_matches('/'));
    let mut inputs = vec![host.clone(), image, PathBuf::from(DISTRIBUTION_CAS)];
    if let Ok(entries) = std::fs::read_dir(DISTRIBUTION_CAS) {
        inputs.extend(entries.filter_map(Result::ok).map(|e| e.path()));
    }
    let mut material = Vec::new();
    for p in &inputs {
        use std::os::unix::fs::MetadataExt;
        material.extend_from_slice(p.as_os_str().as_encoded_bytes());
        if let Ok(m) = std::fs::metadata(p) {
            for n in [
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime() as u64,
                m.mtime_nsec() as u64,
            ] {
                material.extend_from_slice(&n.to_le_bytes());
            }
        }
    }
    let key = crate::stable_hash(&material);
    let file = cache.join(format!("{key:016x}.pem"));
    if let Ok(text) = std::fs::read_to_string(&file) {
        return text;
    }
    let text: String = extras(rootfs).into_iter().map(|c| c.pem).collect();
    // Best effort: a cache that cannot be written costs the next start the parse again.
    if std::fs::create_dir_all(cache).is_ok() {
        if let Ok(old) = std::fs::read_dir(cache) {
            for e in old.filter_map(Result::ok) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let tmp = cache.join(format!(".{key:016x}.{}", std::process::id()));
        if std::fs::write(&tmp, &text).is_ok() {
            let _ = std::fs::rename(&tmp, &file);
        }
    }
    text
}

/// Every `*.crt` under `dir` (its subdirectories included), one after the other.
fn distribution_bundle(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(distribution_bundle(&p)),
            Ok(t) if t.is_file() && p.extension().is_some_and(|x| x == "crt") => {
                out.extend(std::fs::read(&p).unwrap_or_default());
                out.push(b'\n');
            }
            _ => {}
        }
    }
    out
}

/// The certificates in the PEM bundle `host` that are not in `image`, in the host's order,
/// each once.
pub fn missing(host: &[u8], image: &[u8]) -> Vec<HostCa> {
    let certs = |bundle: &[u8]| -> Vec<pem::Pem> {
        pem::parse_many(bundle)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.tag() == "CERTIFICATE")
            .collect()
    };
    let have: std::collections::HashSet<Vec<u8>> = certs(image)
        .into_iter()
        .map(|p| p.into_contents())
        .collect();
    let mut seen = std::collections::HashSet::new();
    certs(host)
        .into_iter()
        .filter(|p| !have.contains(p.contents()) && seen.insert(p.contents().to_vec()))
        .map(|p| HostCa {
            name: common_name(p.contents()),
            pem: pem::encode_config(
                &p,
                pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
            ),
        })
        .collect()
}

/// The first common name (OID 2.5.4.3) in a certificate's DER: the issuer's, which for the
/// self-signed roots of a trust store is also the subject's. Only for messages.
fn common_name(der: &[u8]) -> Option<String> {
    const CN: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
    let at = der.windows(CN.len()).position(|w| w == CN)? + CN.len();
    let (tag, len) = (*der.get(at)?, usize::from(*der.get(at + 1)?));
    // UTF8String, PrintableString, IA5String or T61String, with a short-form length.
    if !matches!(tag, 0x0c | 0x13 | 0x16 | 0x14) || len >= 0x80 {
        return None;
    }
    let text = std::str::from_utf8(der.get(at + 2..at + 2 + len)?).ok()?;
    Some(text.chars().filter(|c| !c.is_control()).collect())
}

/// A short list of names for messages: `"Corp Root CA", "Proxy CA" and 2 more`.
pub fn describe(cas: &[HostCa]) -> String {
    let names: Vec<String> = cas
        .iter()
        .map(|c| {
            c.name
                .as_deref()
                .map_or("(unnamed)".into(), |n| format!("{n:?}"))
        })
        .collect();
    match names.len() {
        0..=3 => names.join(", "),
        n => format!("{} and {} more", names[..3].join(", "), n - 3),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ca(name: &str) -> String {
        // A minimal DER shape with a common name where a certificate has one; the bundle
        // logic compares contents and never verifies them.
        let mut der = vec![
            0x30,
            0x00,
            0x06,
            0x03,
            0x55,
            0x04,
            0x03,
            0x0c,
            name.len() as u8,
        ];
        der.extend_from_slice(name.as_bytes());
        pem::encode(&pem::Pem::new("CERTIFICATE", der))
    }

    #[test]
    fn the_host_certificates_the_image_lacks_once_each_in_order() {
        let (a, b, c) = (ca("Shared Root"), ca("Corp Proxy CA"), ca("Corp Mirror CA"));
        let key = pem::encode(&pem::Pem::new("PRIVATE KEY", vec![1, 2, 3]));
        let host = format!("{a}{b}junk between\n{key}{c}{b}");
        let image = a.clone();
        let got = missing(host.as_bytes(), image.as_bytes());
        let names: Vec<_> = got.iter().map(|c| c.name.clone().unwrap()).collect();
        assert_eq!(names, ["Corp Proxy CA", "Corp Mirror CA"]);
        assert!(got[0].pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(got[0].pem.ends_with("-----END CERTIFICATE-----\n"));
        assert_eq!(describe(&got), "\"Corp Proxy CA\", \"Corp Mirror CA\"");
        assert!(missing(image.as_bytes(), host.as_bytes()).is_empty());
        assert!(missing(b"", image.as_bytes()).is_empty());
        let many: Vec<HostCa> = (0..5)
            .map(|i| HostCa {
                pem: String::new(),
                name: Some(format!("CA {i}")),
            })
            .collect();
        assert_eq!(describe(&many), "\"CA 0\", \"CA 1\", \"CA 2\" and 2 more");
    }

    #[test]
    fn the_distributions_own_cas_are_not_extras() {
        let dir = tempfile::tempdir().unwrap();
        let (shipped, local) = (ca("Shipped Root"), ca("Local Corp CA"));
        std::fs::create_dir_all(dir.path().join("mozilla")).unwrap();
        std::fs::write(dir.path().join("mozilla/Shipped_Root.crt"), &shipped).unwrap();
        std::fs::write(dir.path().join("README"), "not a certificate").unwrap();
        let known = distribution_bundle(dir.path());
        let host = format!("{shipped}{local}");
        let names: Vec<_> = missing(host.as_bytes(), &known)
            .into_iter()
            .map(|c| c.name.unwrap())
            .collect();
        assert_eq!(names, ["Local Corp CA"]);
    }

    #[test]
    fn the_extras_are_remembered_until_an_input_changes() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        let store = rootfs.join(TRUST_STORE.trim_start_matches('/'));
        std::fs::create_dir_all(store.parent().unwrap()).unwrap();
        // The image trusts nothing: every CA the host added or shipped is an extra here.
        std::fs::write(&store, "").unwrap();
        let cache = dir.path().join("cache");
        let first = extras_pem(&rootfs, &cache);
        let files = || std::fs::read_dir(&cache).unwrap().count();
        assert_eq!(files(), 1);
        assert_eq!(extras_pem(&rootfs, &cache), first);
        // The image's bundle changes: a new key, the old file goes.
        std::fs::write(&store, first.as_bytes()).unwrap();
        assert_eq!(extras_pem(&rootfs, &cache), "");
        assert_eq!(files(), 1);
    }

    #[test]
    fn a_real_certificate_names_its_subject() {
        let host = std::fs::read(TRUST_STORE).expect("the system's CA bundle (ca-certificates)");
        let all = missing(&host, b"");
        assert!(all.len() > 10, "{} certificates", all.len());
        assert!(all.iter().filter(|c| c.name.is_some()).count() * 2 > all.len());
    }
}
