//! Builds the small local image that tests, benchmarks and the demo run:
//! `FROM scratch` plus the host's static busybox and its applet links.
//!
//! No registry may be reachable, and `FROM scratch` needs none: the build
//! context is a tar assembled in memory and sent to bollard's `build_image`
//! (the classic builder, so no BuildKit session either). Nothing here runs a
//! container during the build; the applet links are written into the context,
//! which keeps a rebuild of unchanged content a cache hit.

use super::{DockerRuntime, Subject};
use crate::runtime::error::bounded;
use crate::runtime::{ContainerRuntime, RuntimeError};
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures::StreamExt;
use std::collections::VecDeque;
use std::time::Duration;

/// The tag tests and benchmarks use unless they need their own.
pub const TEST_IMAGE: &str = "flocker-test/busybox:latest";

/// Where Debian's `busybox-static` installs the binary.
pub const BUSYBOX_PATH: &str = "/bin/busybox";

/// Build output lines kept for an error message.
const BUILD_LOG_TAIL: usize = 20;

/// Every file in the context gets this mtime, so identical content makes an
/// identical context and Docker's build cache answers a rebuild.
const FIXED_MTIME: u64 = 1_577_836_800; // 2020-01-01

const DOCKERFILE: &str = "FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL flocker.test-image=busybox
CMD [\"sh\"]
";

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// Builds `tag` from [`BUSYBOX_PATH`] and returns the image id.
pub async fn build_busybox_image(
    runtime: &DockerRuntime,
    tag: &str,
) -> Result<String, RuntimeError> {
    let busybox = read_static_busybox(BUSYBOX_PATH).await?;
    let applets = list_applets(BUSYBOX_PATH).await?;
    let context = build_context(&busybox, &applets)
        .map_err(|e| RuntimeError::Other(format!("assembling the build context: {e}")))?;

    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .build();
    let after = runtime.timeouts().build;
    runtime
        .call("build", Subject::Image(tag), after, |docker| async move {
            let mut output =
                docker.build_image(options, None, Some(bollard::body_full(context.into())));
            let mut tail: VecDeque<String> = VecDeque::with_capacity(BUILD_LOG_TAIL);
            while let Some(item) = output.next().await {
                match item {
                    Ok(info) => {
                        if let Some(line) = info
                            .stream
                            .as_deref()
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                        {
                            if tail.len() == BUILD_LOG_TAIL {
                                tail.pop_front();
                            }
                            tail.push_back(line.to_string());
                        }
                    }
                    Err(bollard::errors::Error::DockerStreamError { error }) => {
                        let log = Vec::from(tail).join("\n");
                        return Err(bollard::errors::Error::DockerStreamError {
                            error: format!("{error}\n{log}"),
                        });
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| match e {
            RuntimeError::Other(m) => RuntimeError::Other(bounded(format!("building {tag}: {m}"))),
            e => e,
        })?;
    runtime.image_id(tag).await?.ok_or_else(|| {
        RuntimeError::Other(format!(
            "building {tag} succeeded but the engine does not list it"
        ))
    })
}

async fn read_static_busybox(path: &str) -> Result<Vec<u8>, RuntimeError> {
    let bytes = tokio::fs::read(path).await.map_err(|e| {
        RuntimeError::Other(format!(
            "cannot read {path} ({e}): the test image needs Debian's static busybox \
             (apt-get install busybox-static)"
        ))
    })?;
    match elf_has_interpreter(&bytes) {
        Some(false) => Ok(bytes),
        Some(true) => Err(RuntimeError::Other(format!(
            "{path} is dynamically linked and cannot run in a FROM scratch image: \
             apt-get install busybox-static"
        ))),
        None => Err(RuntimeError::Other(format!(
            "{path} is not a 64-bit little-endian ELF executable: apt-get install busybox-static"
        ))),
    }
}

/// Whether an ELF64 (little-endian) binary names a dynamic loader
/// (a `PT_INTERP` program header); `None` if it is not such a binary.
fn elf_has_interpreter(bytes: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if bytes.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let p_type = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?);
        if p_type == PT_INTERP {
            return Some(true);
        }
    }
    Some(false)
}

/// The applet paths busybox knows (`bin/sh`, `usr/bin/wget`, …).
async fn list_applets(path: &str) -> Result<Vec<String>, RuntimeError> {
    let output = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new(path)
            .arg("--list-full")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| RuntimeError::Other(format!("{path} --list-full did not finish in 10s")))?
    .map_err(|e| RuntimeError::Other(format!("running {path} --list-full: {e}")))?;
    if !output.status.success() {
        return Err(RuntimeError::Other(format!(
            "{path} --list-full failed: {}",
            bounded(String::from_utf8_lossy(&output.stderr))
        )));
    }
    let applets: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        // Only plain relative paths: the list comes from a binary on the host.
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with('/')
                && l.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
                && *l != "bin/busybox"
        })
        .map(str::to_string)
        .collect();
    if !applets.iter().any(|a| a == "bin/sh") {
        return Err(RuntimeError::Other(format!("{path} has no sh applet")));
    }
    Ok(applets)
}

fn build_context(busybox: &[u8], applets: &[String]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(FIXED_MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h
    };
    let file = |tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]| {
        tar.append_data(
            &mut header(tar::EntryType::Regular, mode, data.len() as u64),
            path,
            data,
        )
    };
    file(&mut tar, "Dockerfile", 0o644, DOCKERFILE.as_bytes())?;

    let mut dirs: Vec<String> = vec![
        "rootfs".into(),
        "rootfs/bin".into(),
        "rootfs/etc".into(),
        "rootfs/root".into(),
        "rootfs/tmp".into(),
        "rootfs/var".into(),
    ];
    for applet in applets {
        let mut parent = String::from("rootfs");
        let parts: Vec<&str> = applet.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            parent = format!("{parent}/{part}");
            if !dirs.contains(&parent) {
                dirs.push(parent.clone());
            }
        }
    }
    for dir in &dirs {
        let mode = if dir == "rootfs/tmp" { 0o1777 } else { 0o755 };
        tar.append_data(
            &mut header(tar::EntryType::Directory, mode, 0),
            format!("{dir}/"),
            std::io::empty(),
        )?;
    }
    file(&mut tar, "rootfs/bin/busybox", 0o755, busybox)?;
    file(&mut tar, "rootfs/etc/passwd", 0o644, PASSWD.as_bytes())?;
    file(&mut tar, "rootfs/etc/group", 0o644, GROUP.as_bytes())?;
    for applet in applets {
        tar.append_link(
            &mut header(tar::EntryType::Symlink, 0o777, 0),
            format!("rootfs/{applet}"),
            "/bin/busybox",
        )?;
    }
    tar.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_holds_dockerfile_busybox_and_links() {
        let ctx = build_context(b"\x7fELF", &["bin/sh".into(), "usr/bin/wget".into()]).unwrap();
        let mut archive = tar::Archive::new(&ctx[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            if path == "rootfs/usr/bin/wget" {
                assert_eq!(
                    entry.link_name().unwrap().unwrap().to_string_lossy(),
                    "/bin/busybox"
                );
            }
            seen.push(path);
        }
        for expected in [
            "Dockerfile",
            "rootfs/bin/busybox",
            "rootfs/bin/sh",
            "rootfs/usr/bin/",
            "rootfs/tmp/",
        ] {
            assert!(
                seen.iter().any(|p| p == expected),
                "{expected} missing from {seen:?}"
            );
        }
    }

    #[test]
    fn recognises_static_and_dynamic_elves() {
        assert_eq!(elf_has_interpreter(b"#!/bin/sh"), None);
        // The host's own busybox is static when busybox-static is installed;
        // /bin/ls is dynamic on every Debian.
        if let Ok(ls) = std::fs::read("/bin/ls") {
            assert_eq!(elf_has_interpreter(&ls), Some(true));
        }
    }
}
