//! Docker image references: `name[:tag][@digest]`, where the name may start
//! with a registry host (`registry.local:5000/team/app:1.2`). Checked here
//! against Docker's reference grammar, so a bad image is reported when the
//! files are checked rather than when a node first tries to pull it.

use super::model::ImageRef;

const MAX_NAME: usize = 255;
const MAX_TAG: usize = 128;
/// A whole reference: repository, tag and a SHA-512 digest fit with room.
const MAX_REFERENCE: usize = 1024;
/// Hex digits of a digest: SHA-512 has 128.
const MAX_DIGEST_HEX: usize = 128;

impl ImageRef {
    /// Parses and checks a reference; without a tag or digest the tag is
    /// `latest`.
    pub fn parse(text: &str) -> Result<ImageRef, String> {
        if text.trim().is_empty() {
            return Err("the image is empty".into());
        }
        if text.len() > MAX_REFERENCE {
            return Err(format!(
                "the image reference is {} bytes, longer than the limit of {MAX_REFERENCE}",
                text.len()
            ));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "invalid image '{}': it contains white space",
                text.escape_debug()
            ));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((r, d)) => (r, Some(d)),
            None => (text, None),
        };
        // A ':' after the last '/' starts the tag; one before it belongs to a
        // registry's port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        check_name(name).map_err(|why| format!("invalid image '{text}': {why}"))?;
        if let Some(tag) = tag {
            check_tag(tag).map_err(|why| format!("invalid image '{text}': {why}"))?;
        }
        if let Some(digest) = digest {
            check_digest(digest).map_err(|why| format!("invalid image '{text}': {why}"))?;
        }
        let tag = match (tag, digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t.map(str::to_string),
        };
        Ok(ImageRef {
            name: name.to_string(),
            tag,
            digest: digest.map(str::to_string),
        })
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the repository name is empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "the repository name is longer than {MAX_NAME} characters"
        ));
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let first = parts[0];
    let has_host =
        parts.len() > 1 && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_host {
        check_host(first)?;
        parts.remove(0);
    }
    for part in parts {
        check_path_component(part)?;
    }
    Ok(())
}

fn check_host(host: &str) -> Result<(), String> {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    let name_ok = !name.is_empty()
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if name_ok && port_ok {
        Ok(())
    } else {
        Err(format!(
            "registry host '{host}' is not a host name with an optional port"
        ))
    }
}

/// Lowercase letters and digits, separated by single `.`, single or double
/// `_`, or runs of `-`.
fn check_path_component(part: &str) -> Result<(), String> {
    let bytes = part.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut ok = !bytes.is_empty() && alnum(bytes[0]) && alnum(bytes[bytes.len() - 1]);
    let mut i = 0;
    while ok && i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &part[start..i];
        ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
    }
    if ok {
        Ok(())
    } else if part.bytes().any(|b| b.is_ascii_uppercase()) {
        Err(format!("'{part}' must be lower case"))
    } else {
        Err(format!(
            "'{part}' is not lowercase letters and digits separated by '.', '_', '__' or '-'"
        ))
    }
}

fn check_tag(tag: &str) -> Result<(), String> {
    let bytes = tag.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_TAG
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag '{tag}' is not 1-{MAX_TAG} letters, digits, '_', '.' and '-' (not starting with '.' or '-')"
        ))
    }
}

fn check_digest(digest: &str) -> Result<(), String> {
    let ok = match digest.split_once(':') {
        Some((algorithm, hex)) => {
            !algorithm.is_empty()
                && algorithm
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
                && (32..=MAX_DIGEST_HEX).contains(&hex.len())
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "digest '{digest}' is not algorithm:hex (e.g. sha256:…)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(text: &str) -> (String, Option<String>, Option<String>) {
        let r = ImageRef::parse(text).unwrap();
        (r.name, r.tag, r.digest)
    }

    #[test]
    fn tags_default_to_latest_and_ports_are_not_tags() {
        assert_eq!(
            parts("nginx"),
            ("nginx".into(), Some("latest".into()), None)
        );
        assert_eq!(
            parts("mysql:5.6.17"),
            ("mysql".into(), Some("5.6.17".into()), None)
        );
        assert_eq!(
            parts("registry.local:5000/team/app"),
            (
                "registry.local:5000/team/app".into(),
                Some("latest".into()),
                None
            )
        );
        assert_eq!(
            parts("localhost:5000/app:v1"),
            ("localhost:5000/app".into(), Some("v1".into()), None)
        );
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            parts(&format!("redis@{digest}")),
            ("redis".into(), None, Some(digest.clone()))
        );
        assert_eq!(
            ImageRef::parse("nginx").unwrap().to_string(),
            "nginx:latest"
        );
        assert_eq!(
            ImageRef::parse("nginx").unwrap(),
            ImageRef::parse("nginx:latest").unwrap()
        );
    }

    #[test]
    fn bad_references_are_explained() {
        assert_eq!(ImageRef::parse(" "), Err("the image is empty".into()));
        for bad in [
            "Nginx",
            "nginx:",
            "nginx:-x",
            "my app",
            "a//b",
            "a/-b",
            "x@sha256:zz",
            "bad_host:99999/app",
            ":tag",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(ImageRef::parse("Nginx").unwrap_err().contains("lower case"));
    }
}
