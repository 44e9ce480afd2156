//! The `plinth` CLI as a new user runs it: log in, create a team and a key, register a model,
//! list it, download it, read the audit log; human output, `--json`, and exit codes 0 / 1 / 2.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::harness::{fixtures, shared_server_tests, unique};

pub(crate) struct Cli {
    profiles: tempfile::TempDir,
}

impl Cli {
    pub(crate) fn new() -> Cli {
        Cli { profiles: tempfile::tempdir().unwrap() }
    }

    /// `plinth ARGS` with this user's profiles and no ambient settings, not yet started.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_plinth"));
        cmd.args(args)
            .env("PLINTH_PROFILES_FILE", self.profiles.path().join("profiles.toml"))
            .env_remove("PLINTH_KEY")
            .env_remove("PLINTH_URL")
            .env_remove("PLINTH_PROFILE");
        cmd
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run plinth")
    }

    #[track_caller]
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "plinth {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[track_caller]
    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).expect("--json prints JSON")
    }

    /// `--json` output of a command that must fail with `code` (a blocked promotion prints what
    /// it decided, then exits non-zero): the JSON and the error.
    #[track_caller]
    pub(crate) fn json_failing(&self, args: &[&str], code: i32) -> (Value, String) {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.run(&a);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(code), "plinth {args:?}: {stderr}");
        (serde_json::from_slice(&out.stdout).expect("--json prints JSON"), stderr)
    }

    #[track_caller]
    pub(crate) fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "plinth {args:?}: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).unwrap()
    }
}

shared_server_tests! {
    async fn the_quick_start_works_through_the_cli(srv: &TestServer) {
        let cli = Cli::new();
        let team = unique("cli");
        let user = unique("dana");
        let fixture = fixtures().join("lightgbm_binary.txt");
        let fixture = fixture.to_str().unwrap();
        let err = cli.fails(&["team", "list"], 1);
        assert!(err.contains("plinth login"), "{err}");
        assert!(cli.ok(&["login", "--url", &srv.url, "--key", &srv.admin_key]).contains("as admin"));
        assert!(cli.ok(&["team", "create", &team]).contains(&format!("created team {team}")));
        cli.ok(&["user", "create", &user, "--email", "dana@example.com"]);
        cli.ok(&["team", "add-member", &team, &user, "--role", "developer"]);
        let key = cli.json(&["key", "create", "--principal", &user, "--name", "laptop", "--expires-in", "30d"]);
        let secret = key["secret"].as_str().unwrap();
        assert!(key["key"]["expires_at"].is_string());
        cli.ok(&["--profile", "dana", "login", "--url", &srv.url, "--key", secret]);
        let model = format!("{team}/churn");
        cli.ok(&["--profile", "dana", "model", "create", &model, "--task", "binary_classification", "--tag", "stage=dev", "--description", "who leaves"]);
        let out = cli.ok(&["--profile", "dana", "version", "upload", &model, fixture, "--description", "first cut"]);
        assert!(out.contains(&format!("registered {model}@1 (lightgbm")), "{out}");
        let table = cli.ok(&["--profile", "dana", "model", "list", "--team", &team]);
        assert!(table.contains(&model) && table.contains("stage=dev"), "{table}");
        let listed = cli.json(&["--profile", "dana", "model", "list", "--team", &team, "--tag", "stage=dev"]);
        assert_eq!(listed["items"][0]["name"], "churn");
        let shown = cli.json(&["--profile", "dana", "version", "show", &format!("{model}@1")]);
        assert_eq!(shown["artifact"]["format"], "lightgbm");
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("downloaded.txt");
        cli.ok(&["--profile", "dana", "version", "download", &format!("{model}@1"), "-o", dest.to_str().unwrap()]);
        assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(fixture).unwrap());
        let card = dir.path().join("card.json");
        std::fs::write(&card, r#"{"intended_use": "retention offers", "risk_tier": "low"}"#).unwrap();
        let carded = cli.json(&["--profile", "dana", "version", "card", &format!("{model}@1"), "--file", card.to_str().unwrap()]);
        assert_eq!(carded["card"]["risk_tier"], "low");
        let audit = cli.ok(&["audit", "--team", &team]);
        for action in ["team.create", "team.member.set", "model.create", "model_version.create", "model_version.update"] {
            assert!(audit.contains(action), "audit table lacks {action}: {audit}");
        }
        let whoami = cli.json(&["--profile", "dana", "whoami"]);
        assert_eq!(whoami["memberships"][0]["role"], "developer");

        // Errors: 1 for what the server refused, 2 for how the command was called.
        let err = cli.fails(&["--profile", "dana", "model", "show", &format!("{team}/nope")], 1);
        assert!(err.contains("not_found"), "{err}");
        let err = cli.fails(&["--profile", "dana", "version", "upload", &model, &fixtures().join("bad/truncated_lightgbm.txt").display().to_string()], 1);
        assert!(err.contains("invalid_model") && err.contains("[field: artifact]"), "{err}");
        cli.fails(&["--profile", "dana", "model", "show", "no-slash"], 2);
        cli.fails(&["frobnicate"], 2);
        cli.fails(&["model", "create", "a/b"], 2);
        let id = key["key"]["id"].as_str().unwrap();
        cli.ok(&["key", "revoke", id]);
        let err = cli.fails(&["--profile", "dana", "whoami"], 1);
        assert!(err.contains("key_revoked"), "{err}");
    }
}

shared_server_tests! {
    async fn errors_say_what_to_do_next(srv: &TestServer) {
        let t = srv.team().await;
        let cli = Cli::new();
        cli.ok(&["login", "--url", &srv.url, "--key", t.maintainer.1.key()]);
        cli.ok(&["model", "create", &format!("{}/next", t.team), "--task", "regression"]);
        // An environment that does not exist: the ones that do.
        let err = cli.fails(&["deploy", &format!("{}/next", t.team), "--env", "prod", "--traffic", "1"], 1);
        assert!(err.contains("environment 'prod' not found: the environments are") && err.contains("production"), "{err}");
        // No server at the address: is it running, and where the address came from.
        let err = cli.fails(&["--url", "http://127.0.0.1:1", "model", "list"], 1);
        assert!(err.contains("is `plinth serve` running there?") && err.contains("PLINTH_URL"), "{err}");
    }

    async fn serving_through_the_cli(srv: &TestServer) {
        let cli = Cli::new();
        let team = unique("clisrv");
        cli.ok(&["login", "--url", &srv.url, "--key", &srv.admin_key]);
        cli.ok(&["team", "create", &team]);
        let model = format!("{team}/income");
        cli.ok(&["model", "create", &model, "--task", "binary_classification"]);
        for f in ["lightgbm_binary.txt", "xgboost_binary.json"] {
            cli.ok(&["version", "upload", &model, fixtures().join(f).to_str().unwrap()]);
        }
        let out = cli.ok(&["deploy", &model, "--env", "staging", "--traffic", "1"]);
        assert!(out.contains(&format!("deployed {model}@staging (revision 1)")), "{out}");
        let d = cli.json(&["traffic", &model, "--env", "staging", "1=90", "2=10"]);
        assert_eq!(d["revision"], 2);
        assert_eq!(d["spec"]["versions"][1]["weight"], 10);
        let d = cli.json(&["rollback", &model, "--env", "staging"]);
        assert_eq!(d["spec"]["versions"], serde_json::json!([{"version": 1, "weight": 100}]));
        let history = cli.ok(&["history", &model, "--env", "staging"]);
        assert!(history.contains("rollback") && history.contains("traffic") && history.contains("deploy"), "{history}");
        // Predict from a CSV file (header = feature names; an empty cell is a missing value).
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("rows.csv");
        std::fs::write(&csv, "age,education_num,capital_gain,capital_loss,hours_per_week,sex_male\n39,13,2174,0,40,1\n50,13,0,0,13,\n").unwrap();
        let out = cli.ok(&["predict", &model, "--env", "staging", "--file", csv.to_str().unwrap()]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "row,prediction,version,p0,p1");
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[1].starts_with("0,1,1,"), "{out}");
        let json_rows = dir.path().join("rows.json");
        std::fs::write(&json_rows, r#"[[39, 13, 2174, 0, 40, 1]]"#).unwrap();
        let answers = cli.json(&["predict", &model, "--env", "staging", "--file", json_rows.to_str().unwrap()]);
        assert_eq!(answers[0]["predictions"], serde_json::json!([1]));
        let metrics = cli.json(&["deployment", "metrics", &model, "--env", "staging"]);
        assert_eq!(metrics["requests"], 2);
        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, "age,height\n1,2\n").unwrap();
        let err = cli.fails(&["predict", &model, "--env", "staging", "--file", bad.to_str().unwrap()], 1);
        assert!(err.contains("unknown_field") || err.contains("missing_field"), "{err}");
        cli.fails(&["traffic", &model, "1", "2"], 2);
        let envs = cli.json(&["environment", "list"]);
        assert!(envs.as_array().unwrap().iter().any(|e| e["name"] == "production"));
    }
}

#[test]
fn serve_refuses_unknown_configuration() {
    let cli = Cli::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("plinth.toml");
    std::fs::write(&config, "listen = '127.0.0.1:0'\nlisten_port = 9\n").unwrap();
    let err = cli.fails(&["serve", "--config", config.to_str().unwrap()], 2);
    assert!(err.contains("unknown key 'listen_port'"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_plinth"))
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .env("PLINTH_LISTN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PLINTH_LISTN"));
    assert!(
        !Path::new(&dir.path().join("plinth.db")).exists(),
        "nothing is created on a refused start"
    );
}

#[test]
fn key_generate_prints_a_usable_bootstrap_key() {
    let out = Cli::new().ok(&["key", "generate"]);
    assert!(plinth_core::auth::parse_key(out.trim()).is_some(), "{out}");
}
