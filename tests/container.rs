//! The `Containerfile`: what it copies exists, and where podman is available, the image builds
//! from the binary and runs it (`--version`, and `check` on a mounted configuration). No
//! registry may be reachable, so the build part is skipped, saying why, without podman or
//! without its base image.

use std::path::Path;
use std::process::Command;

const CONTAINERFILE: &str = include_str!("../Containerfile");

#[test]
fn the_containerfile_copies_what_exists_and_runs_the_binary_it_copies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut copied = Vec::new();
    for line in CONTAINERFILE.lines().filter(|l| l.starts_with("COPY ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (source, destination) = (words[1], words[2]);
        if source != "${BINARY}" {
            assert!(root.join(source).exists(), "COPY {source}: no such path");
        }
        copied.push(destination.to_string());
    }
    assert!(copied.contains(&"/usr/bin/do-scaler".to_string()));
    assert!(CONTAINERFILE.contains("ENTRYPOINT [\"/usr/bin/do-scaler\"]"));
    // A small image: a distroless or empty base, never a full distribution.
    let base = CONTAINERFILE
        .lines()
        .find(|l| l.starts_with("FROM "))
        .unwrap();
    assert!(
        base.contains("distroless") || base.contains("scratch"),
        "{base}"
    );
    // The daemon runs unprivileged.
    assert!(CONTAINERFILE.contains("USER nonroot"));
}

fn podman(args: &[&str]) -> Option<std::process::Output> {
    Command::new("podman").args(args).output().ok()
}

#[test]
fn the_image_builds_and_runs_where_podman_is_available() {
    if podman(&["--version"]).is_none_or(|o| !o.status.success()) {
        eprintln!("SKIPPED: podman is absent: the container image is not built here");
        return;
    }
    let base = CONTAINERFILE
        .lines()
        .find_map(|l| l.strip_prefix("FROM "))
        .unwrap()
        .trim();
    let present = podman(&["image", "exists", base]).is_some_and(|o| o.status.success())
        || podman(&["pull", "-q", base]).is_some_and(|o| o.status.success());
    if !present {
        eprintln!("SKIPPED: cannot pull {base} (no registry reachable): the image is not built");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let context = tempfile::tempdir().unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_do-scaler"),
        context.path().join("do-scaler"),
    )
    .unwrap();
    std::fs::write(context.path().join("Containerfile"), CONTAINERFILE).unwrap();
    for dir in ["actions", "examples"] {
        std::fs::create_dir(context.path().join(dir)).unwrap();
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(
                entry.path(),
                context.path().join(dir).join(entry.file_name()),
            )
            .unwrap();
        }
    }
    let tag = format!("localhost/do-scaler-test:{}", std::process::id());
    let context_path = context.path().to_str().unwrap();
    let built = podman(&[
        "build",
        "-q",
        "-f",
        "Containerfile",
        "--build-arg",
        "BINARY=do-scaler",
        "-t",
        &tag,
        context_path,
    ])
    .unwrap();
    assert!(
        built.status.success(),
        "podman build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let version = podman(&["run", "--rm", "--network", "none", &tag, "--version"]).unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("do-scaler "));
    // The configuration mounted as the README shows, checked by the image's binary.
    let config = tempfile::tempdir().unwrap();
    for file in [
        "do-scaler.toml",
        "conf.d/web.toml",
        "cloud-init/do-agent.yaml",
    ] {
        let to = config.path().join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root.join(file), to).unwrap();
    }
    let mount = format!("{}:/etc/do-scaler:ro", config.path().display());
    let checked = podman(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &mount,
        &tag,
        "check",
        "--config",
        "/etc/do-scaler/do-scaler.toml",
    ])
    .unwrap();
    let _ = podman(&["rmi", "-f", &tag]);
    assert!(
        checked.status.success(),
        "check in the container: {}",
        String::from_utf8_lossy(&checked.stdout)
    );
}
