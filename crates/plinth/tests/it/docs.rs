//! The documentation runs as written: every `bash` block of docs/getting-started.md, in order,
//! in one shell, against a fresh `plinth serve` started as a user starts it. Blocks under a
//! line "*Not run by the test...*" build or start the server, or set what this test sets
//! (the server's URL, the admin key, `plinth` on the PATH). A guide that drifts from Plinth
//! fails here.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::Server;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The `bash` blocks of a Markdown file that the test runs.
fn runnable_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let (mut skip_next, mut current): (bool, Option<String>) = (false, None);
    for line in markdown.lines() {
        match &mut current {
            Some(block) if line.trim_start().starts_with("```") => {
                if !skip_next {
                    blocks.push(std::mem::take(block));
                }
                skip_next = false;
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None if line.trim_start().starts_with("```bash") => current = Some(String::new()),
            None if line.starts_with("*Not run by the test") => skip_next = true,
            None => {}
        }
    }
    assert!(current.is_none(), "an unclosed code block");
    blocks
}

/// Runs `doc`'s blocks against a fresh server; answers the shell's output.
fn run_doc(doc: &str) -> String {
    let markdown = std::fs::read_to_string(repo().join(doc)).unwrap();
    let blocks = runnable_blocks(&markdown);
    assert!(blocks.len() >= 5, "{doc}: only {} blocks to run", blocks.len());
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("clone");
    std::fs::create_dir(&work).unwrap();
    // The guide runs from a clone: its data and examples are where a clone has them.
    for dir in ["testdata", "examples"] {
        std::os::unix::fs::symlink(repo().join(dir), work.join(dir)).unwrap();
    }
    let (_, admin_key, _) = plinth_core::auth::generate_key();
    let mut server = Server::spawn(&tmp.path().join("data"), None, &admin_key, None);
    let bin = Path::new(env!("CARGO_BIN_EXE_plinth")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let script = format!("set -euo pipefail\nset -x\n{}", blocks.join("\n"));
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&work)
        .env("PATH", path)
        .env("PLINTH_URL", &server.url)
        .env("PLINTH_KEY", &admin_key)
        .env("PLINTH_PROFILES_FILE", tmp.path().join("profiles.toml"))
        .env_remove("PLINTH_PROFILE")
        .output()
        .expect("bash");
    server.kill();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{doc} does not run as written:\n{text}");
    text
}

#[test]
fn getting_started_runs_as_written() {
    let out = run_doc("docs/getting-started.md");
    // It reached a governed production prediction.
    assert!(out.contains("approved") || out.contains("deployed"), "{out}");
    assert!(out.contains("\"predictions\""), "the curl prediction: {out}");
}

#[test]
fn blocks_marked_not_run_are_left_out() {
    let md = "text\n*Not run by the test:*\n\n```bash\nserve\n```\n\n```bash\na\nb\n```\n```python\nx\n```\n";
    assert_eq!(runnable_blocks(md), vec!["a\nb\n".to_string()]);
}
