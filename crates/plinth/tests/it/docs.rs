//! The documentation runs as written: every `bash` block of docs/getting-started.md (and of the
//! README of every `plinth init` template), in order,
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

/// Runs `doc`'s blocks (those of its `section` only, when given: from that heading to the next
/// of its level) against a fresh server, from a clone; answers the shell's output.
fn run_doc(doc: &str, section: Option<&str>, key_var: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("clone");
    std::fs::create_dir(&work).unwrap();
    // The guide runs from a clone: its data and examples are where a clone has them.
    for dir in ["testdata", "examples", "templates"] {
        std::os::unix::fs::symlink(repo().join(dir), work.join(dir)).unwrap();
    }
    let mut markdown = std::fs::read_to_string(repo().join(doc)).unwrap();
    if let Some(heading) = section {
        let start = markdown
            .find(&format!("\n{heading}\n"))
            .unwrap_or_else(|| panic!("{doc} has no {heading}"));
        let rest = &markdown[start + heading.len() + 2..];
        let level = heading.split(' ').next().unwrap();
        let end = rest.find(&format!("\n{level} ")).map_or(rest.len(), |e| e + 1);
        markdown = rest[..end].to_string();
    }
    let file = tmp.path().join("doc.md");
    std::fs::write(&file, markdown).unwrap();
    run_markdown(&file, &work, "", &[], key_var)
}

/// Runs the blocks of `markdown` in `work`, after `setup`, with `plinth` (and `path`) first on
/// the PATH, against a fresh server as its admin.
/// The admin key is in the variable `key_var` (`PLINTH_KEY`, which the CLI reads, or one the
/// document logs in with).
fn run_markdown(
    markdown: &Path,
    work: &Path,
    setup: &str,
    path: &[PathBuf],
    key_var: &str,
) -> String {
    let doc = markdown.display();
    let blocks = runnable_blocks(&std::fs::read_to_string(markdown).unwrap());
    assert!(blocks.len() >= 4, "{doc}: only {} blocks to run", blocks.len());
    let tmp = tempfile::tempdir().unwrap();
    let (_, admin_key, _) = plinth_core::auth::generate_key();
    let mut server = Server::spawn(&tmp.path().join("data"), None, &admin_key, None);
    let mut dirs = path.to_vec();
    dirs.push(Path::new(env!("CARGO_BIN_EXE_plinth")).parent().unwrap().to_path_buf());
    let path = format!(
        "{}:{}",
        dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":"),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = format!("set -euo pipefail\nset -x\n{setup}\n{}", blocks.join("\n"));
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(work)
        .env("PATH", path)
        .env("PLINTH_URL", &server.url)
        .env(key_var, &admin_key)
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

/// Every template of `plinth init`, written as a new team would, followed as its README says:
/// trained with LightGBM here, registered, evaluated, promoted under its policy, predicting.
#[test]
fn every_template_goes_from_training_to_a_production_prediction() {
    let python = std::env::var("PLINTH_TEST_PYTHON").expect("PLINTH_TEST_PYTHON: run the suite with scripts/test, which makes a virtualenv with lightgbm");
    let venv_bin = Path::new(&python).parent().unwrap().to_path_buf();
    for template in ["classification", "regression", "features"] {
        let tmp = tempfile::tempdir().unwrap();
        let project = tmp.path().join("project");
        let out = Command::new(env!("CARGO_BIN_EXE_plinth"))
            .args(["init", template])
            .arg(&project)
            .args(["--team", "starters"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "plinth init {template}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A second init into the same directory is refused, and writes nothing.
        let again = Command::new(env!("CARGO_BIN_EXE_plinth"))
            .args(["init", template])
            .arg(&project)
            .output()
            .unwrap();
        assert_eq!(again.status.code(), Some(2), "{}", String::from_utf8_lossy(&again.stderr));
        let readme = project.join("README.md");
        assert!(
            !std::fs::read_to_string(&readme).unwrap().contains("{{"),
            "placeholders left in {template}'s README"
        );
        let out = run_markdown(
            &readme,
            &project,
            "plinth team create starters",
            std::slice::from_ref(&venv_bin),
            "PLINTH_KEY",
        );
        assert!(out.contains("deployed"), "{template}: the promotion deployed: {out}");
        assert!(project.join("model.txt").exists(), "{template}: trained");
    }
}

#[test]
fn getting_started_runs_as_written() {
    let out = run_doc("docs/getting-started.md", None, "PLINTH_KEY");
    // It reached a governed production prediction.
    assert!(out.contains("approved") || out.contains("deployed"), "{out}");
    assert!(out.contains("\"predictions\""), "the curl prediction: {out}");
}

/// The README's quick start, as a new user types it: logging in with the admin key, profiles,
/// the feature store and SQL on data the repository carries.
#[test]
fn the_readme_quick_start_runs_as_written() {
    let out = run_doc("README.md", Some("## Quick start"), "ADMIN");
    assert!(out.contains("approved by") || out.contains("deployed"), "{out}");
    assert!(out.contains("\"predictions\""), "the curl prediction: {out}");
}

#[test]
fn blocks_marked_not_run_are_left_out() {
    let md = "text\n*Not run by the test:*\n\n```bash\nserve\n```\n\n```bash\na\nb\n```\n```python\nx\n```\n";
    assert_eq!(runnable_blocks(md), vec!["a\nb\n".to_string()]);
}

/// docs/troubleshooting.md says what to do about every error code there is.
#[test]
fn troubleshooting_covers_every_error_code() {
    let catalogue = std::fs::read_to_string(repo().join("docs/errors.md")).unwrap();
    let page = std::fs::read_to_string(repo().join("docs/troubleshooting.md")).unwrap();
    let codes: Vec<&str> = catalogue
        .lines()
        .filter_map(|l| l.strip_prefix("| `").and_then(|l| l.split('`').next()))
        .collect();
    assert!(codes.len() > 20, "{codes:?}");
    let missing: Vec<&&str> =
        codes.iter().filter(|c| !page.contains(&format!("| `{c}` |"))).collect();
    assert!(missing.is_empty(), "docs/troubleshooting.md has nothing on {missing:?}");
}
