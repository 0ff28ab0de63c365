//! Shell completions and man pages, generated from the command-line definition: they name
//! every subcommand and its options, and the shells that are present accept the scripts.

use std::process::Command;

fn binary(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_do-scaler"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

const SUBCOMMANDS: &[&str] = &[
    "check",
    "sim",
    "demo",
    "status",
    "history",
    "pause",
    "resume",
    "reload",
    "migrate",
    "state",
    "record",
    "run",
    "plan",
    "completions",
    "man",
    "query",
];

/// Whether `shell` accepts `script` without running it.
fn shell_accepts(shell: &str, check_flag: &str, script: &str) -> Option<bool> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("completion");
    std::fs::write(&path, script).unwrap();
    Command::new(shell)
        .arg(check_flag)
        .arg(&path)
        .output()
        .ok()
        .map(|o| o.status.success())
}

#[test]
fn completions_name_every_subcommand_and_parse_in_their_shell() {
    for (shell, check_flag) in [("bash", "-n"), ("zsh", "-n"), ("fish", "--no-execute")] {
        let script = binary(&["completions", shell]);
        for subcommand in SUBCOMMANDS {
            assert!(script.contains(subcommand), "{shell}: no {subcommand}");
        }
        assert!(
            script.contains("token-file"),
            "{shell}: options are completed"
        );
        match shell_accepts(shell, check_flag, &script) {
            Some(accepted) => assert!(accepted, "{shell} {check_flag} refuses the script"),
            None => eprintln!("{shell} is absent: its completion script is not parsed here"),
        }
    }
}

#[test]
fn the_man_pages_cover_the_command_and_each_subcommand() {
    let page = binary(&["man"]);
    assert!(
        page.starts_with(".ie") || page.contains(".TH do-scaler 1"),
        "{page}"
    );
    for subcommand in SUBCOMMANDS {
        assert!(
            page.contains(subcommand),
            "do-scaler(1) does not list {subcommand}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    binary(&["man", "--out-dir", dir.path().to_str().unwrap()]);
    for subcommand in SUBCOMMANDS {
        let path = dir.path().join(format!("do-scaler-{subcommand}.1"));
        assert!(path.exists(), "no {}", path.display());
    }
    let run = std::fs::read_to_string(dir.path().join("do-scaler-run.1")).unwrap();
    assert!(
        run.contains("dry"),
        "do-scaler-run(1) documents --dry-run: {run}"
    );
    assert!(dir.path().join("do-scaler.1").exists());
    // Where groff is present, the pages render without a warning.
    for name in ["do-scaler.1", "do-scaler-run.1", "do-scaler-status.1"] {
        let Ok(output) = Command::new("groff")
            .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
            .arg(dir.path().join(name))
            .output()
        else {
            eprintln!("groff is absent: {name} is not rendered here");
            continue;
        };
        let warnings = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && warnings.is_empty(),
            "{name}: {warnings}"
        );
    }
}
