//! The command line: one subcommand per task, each a thin call to the HTTP API. The commands
//! are grouped by the core's areas, one module each (`cli/<area>.rs`), each with its own
//! `Command` enum, flattened into the top level, and one `run(&Global, Command)`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use plinth_api::identity::WhoAmI;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::client::{self, Client, Profile};
use crate::config::{self, Overrides};
use crate::output;

mod billing;
mod data;
mod evaluation;
mod features;
mod governance;
mod identity;
mod init;
mod monitoring;
mod registry;
mod serving;
mod tasks;
mod training;
mod webhooks;

/// A mistake in how the command was called (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub(crate) fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// `--entity KEY=V1,V2` (of `predict` and `features get`) as the API's `{"KEY": [V1, V2]}`:
/// numbers when every value is one.
pub(crate) fn entity_keys(specs: &[String]) -> Result<Value> {
    let mut keys = serde_json::Map::new();
    for spec in specs {
        let (key, values) = spec
            .split_once('=')
            .ok_or_else(|| usage(format!("--entity {spec:?}: give KEY=VALUE[,VALUE...]")))?;
        let values: Vec<&str> =
            values.split(',').map(str::trim).filter(|v| !v.is_empty()).collect();
        if key.is_empty() || values.is_empty() {
            return Err(usage(format!("--entity {spec:?}: give KEY=VALUE[,VALUE...]")));
        }
        let numbers: Option<Vec<i64>> = values.iter().map(|v| v.parse().ok()).collect();
        keys.insert(key.to_string(), numbers.map_or_else(|| json!(values), |n| json!(n)));
    }
    Ok(Value::Object(keys))
}

/// A spec file as JSON: TOML when its name ends in `.toml`, else JSON.
pub(crate) fn read_spec(file: &std::path::Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    if file.extension().is_some_and(|e| e == "toml") {
        let v: toml::Value =
            toml::from_str(&text).with_context(|| format!("{} is not TOML", file.display()))?;
        Ok(serde_json::to_value(v)?)
    } else {
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "plinth",
    version,
    about = "Plinth: the AI platform product teams share.",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// The command line's definition, as `--help` shows it: the client's global options
    /// (`--url`, `--profile`, `--json`) are not listed on `serve`, which does not use them.
    pub fn definition() -> clap::Command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        // Propagates the global options into every subcommand, so that serve's can be hidden.
        cmd.build();
        cmd.mut_subcommand("serve", |serve| {
            ["url", "profile", "json"]
                .into_iter()
                .fold(serve, |s, id| s.mut_arg(id, |a| a.hide(true)))
        })
    }

    /// `plinth serve`'s help without the client's options, when that is what was asked for.
    pub fn serve_help(e: &clap::Error) -> Option<String> {
        let mut args = std::env::args().skip(1);
        if e.kind() != clap::error::ErrorKind::DisplayHelp
            || args.next().as_deref() != Some("serve")
        {
            return None;
        }
        let long = args.any(|a| a == "--help");
        let mut cmd = Cli::definition();
        let serve = cmd.find_subcommand_mut("serve")?;
        Some(if long { serve.render_long_help() } else { serve.render_help() }.to_string())
    }

    /// Whether this runs the server (rather than a client command).
    pub fn is_serve(&self) -> bool {
        matches!(self.command, Command::Serve(_))
    }
}

#[derive(Args, Debug)]
pub(crate) struct Global {
    /// Print the server's JSON instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// The profile to use (see `plinth login`).
    #[arg(long, global = true, env = "PLINTH_PROFILE", default_value = "default")]
    profile: String,
    /// Server URL, overriding the profile.
    #[arg(long, global = true, env = "PLINTH_URL")]
    url: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the Plinth server.
    #[command(after_help = "Example:\n  plinth serve --config plinth.toml --listen 0.0.0.0:8080")]
    Serve(ServeArgs),
    /// Save a server URL and API key in a profile.
    #[command(after_help = "Example:\n  plinth login --url http://127.0.0.1:8080 --key plk_...")]
    Login {
        /// The server's address, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: String,
        /// The API key; `-` reads it from standard input. Default: $PLINTH_KEY.
        #[arg(long)]
        key: Option<String>,
    },
    /// Show who the current key belongs to.
    Whoami,
    /// Write a starter project for a new team: sample data, training script, model card,
    /// production policy, and a README from training to a governed production prediction.
    #[command(
        after_help = "Example:\n  plinth init classification credit --team fraud\n  plinth init --list"
    )]
    Init(init::InitArgs),
    #[command(flatten)]
    Identity(identity::Command),
    #[command(flatten)]
    Registry(registry::Command),
    #[command(flatten)]
    Serving(serving::Command),
    #[command(flatten)]
    Data(data::Command),
    #[command(flatten)]
    Evaluation(evaluation::Command),
    #[command(flatten)]
    Governance(governance::Command),
    #[command(flatten)]
    Webhooks(webhooks::Command),
    #[command(flatten)]
    Features(features::Command),
    #[command(flatten)]
    Monitoring(monitoring::Command),
    #[command(flatten)]
    Tasks(tasks::Command),
    #[command(flatten)]
    Training(training::Command),
    #[command(flatten)]
    Billing(billing::Command),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// A TOML configuration file (see config/plinth.example.toml). Default: $PLINTH_CONFIG.
    #[arg(long, env = "PLINTH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, HOST:PORT (default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<String>,
    /// Where local state lives: the SQLite database, artifacts, staging (default .plinth-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// postgres://... to keep metadata in PostgreSQL.
    #[arg(long)]
    database_url: Option<String>,
    /// The largest model artifact accepted, in bytes (default 536870912: 512 MiB).
    #[arg(long)]
    max_upload_bytes: Option<u64>,
    /// redis://... for the online feature store (default: embedded, in the data directory).
    #[arg(long)]
    online_store_url: Option<String>,
    /// nats://... to consume feature pushes from JetStream (subjects plinth.push.TEAM.VIEW).
    #[arg(long)]
    nats_url: Option<String>,
    /// Teams may declare file and folder data sources in their folder under this one.
    #[arg(long)]
    local_sources_root: Option<PathBuf>,
    /// PostgreSQL servers data sources may read (host, host:port or host:port/db; commas).
    #[arg(long)]
    postgres_source_hosts: Option<String>,
    /// Log format: text (default) or json.
    #[arg(long)]
    log_format: Option<String>,
    /// Log filter (tracing EnvFilter syntax), e.g. info (default) or plinth_core=debug,info.
    #[arg(long)]
    log_level: Option<String>,
    /// How long an idle worker watches the sockets before it sleeps, in µs (0: off).
    #[arg(long)]
    busy_poll_us: Option<u64>,
}

#[derive(Args, Debug, Default)]
pub(crate) struct PageArgs {
    /// Items per page, at most 500 (default 50).
    #[arg(long)]
    limit: Option<u32>,
    /// The next page: the cursor the previous page printed.
    #[arg(long)]
    cursor: Option<String>,
}

impl PageArgs {
    pub(crate) fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(l) = self.limit {
            q.push(("limit", l.to_string()));
        }
        if let Some(c) = &self.cursor {
            q.push(("cursor", c.clone()));
        }
        q
    }
}

pub(crate) fn split_model(s: &str) -> Result<(String, String)> {
    match s.split_once('/') {
        Some((t, m)) if !t.is_empty() && !m.is_empty() && !m.contains('/') => {
            Ok((t.to_string(), m.to_string()))
        }
        _ => Err(usage(format!("'{s}' is not TEAM/MODEL"))),
    }
}

pub(crate) fn split_version(s: &str) -> Result<(String, String, u32)> {
    let (model, v) =
        s.split_once('@').ok_or_else(|| usage(format!("'{s}' is not TEAM/MODEL@VERSION")))?;
    let (team, model) = split_model(model)?;
    let v = v.parse().map_err(|_| usage(format!("'{v}' is not a version number")))?;
    Ok((team, model, v))
}

pub(crate) fn parse_tags(tags: &[String]) -> Result<BTreeMap<String, String>> {
    tags.iter()
        .map(|t| {
            t.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| usage(format!("tag '{t}' is not key=value")))
        })
        .collect()
}

pub(crate) fn parse_duration(s: &str) -> Result<time::Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 =
        num.parse().map_err(|_| usage(format!("'{s}' is not a duration like 30d, 12h or 90m")))?;
    Ok(match unit {
        "d" => time::Duration::days(n),
        "h" => time::Duration::hours(n),
        "m" => time::Duration::minutes(n),
        "s" => time::Duration::seconds(n),
        _ => return Err(usage(format!("'{s}' is not a duration like 30d, 12h or 90m"))),
    })
}

pub(crate) fn parse_time(s: &str) -> Result<String> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t.format(&Rfc3339)?);
    }
    let ago = parse_duration(s)?;
    Ok((OffsetDateTime::now_utc() - ago).format(&Rfc3339)?)
}

pub(crate) fn read_json(path: &PathBuf) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// Like [`connect`], but a missing key is fine (public deployments).
pub(crate) fn connect_maybe(global: &Global) -> Result<Client> {
    let path = client::profiles_path();
    let profile =
        client::read_profiles(&path)?.profiles.get(&global.profile).cloned().unwrap_or_default();
    let url = global.url.clone().unwrap_or(profile.url);
    let key = std::env::var("PLINTH_KEY").ok().filter(|k| !k.is_empty()).unwrap_or(profile.key);
    if url.is_empty() {
        bail!("no server: run `plinth login --url <server> --key <api key>`, or pass --url");
    }
    Client::new(&url, &key)
}

pub(crate) fn connect(global: &Global) -> Result<Client> {
    let path = client::profiles_path();
    let profiles = client::read_profiles(&path)?;
    let profile = profiles.profiles.get(&global.profile).cloned().unwrap_or_default();
    let url = global.url.clone().unwrap_or(profile.url);
    let key = std::env::var("PLINTH_KEY").ok().filter(|k| !k.is_empty()).unwrap_or(profile.key);
    if url.is_empty() || key.is_empty() {
        bail!(
            "not logged in: run `plinth login --url <server> --key <api key>` (profile '{}', file {})",
            global.profile,
            path.display()
        );
    }
    Client::new(&url, &key)
}

pub async fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    match cli.command {
        Command::Serve(args) => {
            let mut flags = Overrides::default();
            let mut set = |k: &'static str, v: Option<String>| {
                if let Some(v) = v {
                    flags.values.insert(k, v);
                }
            };
            set("listen", args.listen);
            set("data_dir", args.data_dir.map(|p| p.display().to_string()));
            set("database_url", args.database_url);
            set("max_upload_bytes", args.max_upload_bytes.map(|v| v.to_string()));
            set("online_store_url", args.online_store_url);
            set("nats_url", args.nats_url);
            set("local_sources_root", args.local_sources_root.map(|p| p.display().to_string()));
            set("postgres_source_hosts", args.postgres_source_hosts);
            set("log_format", args.log_format);
            set("log_level", args.log_level);
            set("busy_poll_us", args.busy_poll_us.map(|v| v.to_string()));
            let env: BTreeMap<String, String> =
                std::env::vars().filter(|(k, _)| k.starts_with("PLINTH_")).collect();
            let config = config::load(args.config.as_deref(), &env, &flags)
                .map_err(|e| usage(format!("{e:#}")))?;
            crate::serve::run(config).await
        }
        Command::Login { url, key } => {
            let key = match key.as_deref() {
                Some("-") => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim().to_string()
                }
                Some(k) => k.to_string(),
                None => std::env::var("PLINTH_KEY")
                    .map_err(|_| usage("give --key <api key>, --key - (stdin) or PLINTH_KEY"))?,
            };
            let who: WhoAmI = Client::new(&url, &key)?.get("/whoami", &[]).await?;
            let path = client::profiles_path();
            let mut profiles = client::read_profiles(&path)?;
            profiles.profiles.insert(g.profile.clone(), Profile { url: url.clone(), key });
            client::write_profiles(&path, &profiles)?;
            if g.json {
                output::json(&who);
            } else {
                println!(
                    "logged in to {url} as {} (profile '{}', saved in {})",
                    who.principal.name,
                    g.profile,
                    path.display()
                );
            }
            Ok(())
        }
        Command::Init(args) => init::run(args),
        Command::Whoami => {
            let who: WhoAmI = connect(g)?.get("/whoami", &[]).await?;
            if g.json {
                output::json(&who);
            } else {
                output::fields(&[
                    ("name", who.principal.name.clone()),
                    ("kind", who.principal.kind.as_str().into()),
                    (
                        "platform role",
                        who.principal
                            .platform_role
                            .map(|r| r.as_str().to_string())
                            .unwrap_or_else(|| "-".into()),
                    ),
                    ("key", who.key_id.clone()),
                ]);
                if !who.memberships.is_empty() {
                    output::table(
                        &["team", "role"],
                        who.memberships
                            .iter()
                            .map(|m| vec![m.team.clone(), m.role.as_str().into()])
                            .collect(),
                    );
                }
            }
            Ok(())
        }
        Command::Identity(cmd) => identity::run(g, cmd).await,
        Command::Registry(cmd) => registry::run(g, cmd).await,
        Command::Serving(cmd) => serving::run(g, cmd).await,
        Command::Data(cmd) => data::run(g, cmd).await,
        Command::Evaluation(cmd) => evaluation::run(g, cmd).await,
        Command::Governance(cmd) => governance::run(g, cmd).await,
        Command::Webhooks(cmd) => webhooks::run(g, cmd).await,
        Command::Features(cmd) => features::run(g, cmd).await,
        Command::Monitoring(cmd) => monitoring::run(g, cmd).await,
        Command::Tasks(cmd) => tasks::run(g, cmd).await,
        Command::Training(cmd) => training::run(g, cmd).await,
        Command::Billing(cmd) => billing::run(g, cmd).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// A subcommand's argument with the id of a global one shadows it: `source add --url` was
    /// taken for the server's address (and its password printed), `webhook add TEAM URL` too.
    /// Only `login --url`, the same server address, may share it.
    #[test]
    fn no_subcommand_argument_takes_a_global_one_s_name() {
        fn walk(cmd: &clap::Command, path: &str, globals: &[String], found: &mut Vec<String>) {
            for sub in cmd.get_subcommands() {
                let here = format!("{path} {}", sub.get_name());
                for arg in sub.get_arguments().filter(|a| !a.is_global_set()) {
                    let id = arg.get_id().as_str().to_string();
                    if globals.contains(&id) && !(here == "plinth login" && id == "url") {
                        found.push(format!("{here}: {id}"));
                    }
                }
                walk(sub, &here, globals, found);
            }
        }
        let root = Cli::command();
        let globals: Vec<String> = root
            .get_arguments()
            .filter(|a| a.is_global_set())
            .map(|a| a.get_id().as_str().to_string())
            .collect();
        assert!(globals.contains(&"url".to_string()), "{globals:?}");
        let mut found = Vec::new();
        walk(&root, "plinth", &globals, &mut found);
        assert!(found.is_empty(), "arguments shadowing global ones: {found:?}");
    }

    /// Every argument and option of every command says what it is (`--help` is the manual).
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, found: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    found.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), found);
            }
        }
        let mut found = Vec::new();
        walk(&Cli::command(), "plinth", &mut found);
        assert!(found.is_empty(), "{} arguments without help: {found:#?}", found.len());
    }

    /// A long option name means one thing across the CLI: `--key` is an API key (a routing key
    /// is `--routing-key`, a join key `--join-key`), `--url` the server's address (a database
    /// is `--database-url`). Every other name used by several commands must keep one meaning:
    /// its uses share their value name.
    #[test]
    fn an_option_name_means_one_thing_everywhere() {
        use std::collections::BTreeMap;
        fn walk(
            cmd: &clap::Command,
            path: &str,
            seen: &mut BTreeMap<String, Vec<(String, String)>>,
        ) {
            for arg in cmd.get_arguments() {
                if let Some(long) = arg.get_long() {
                    let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                    seen.entry(long.to_string()).or_default().push((path.to_string(), help));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), seen);
            }
        }
        let mut seen = BTreeMap::new();
        walk(&Cli::command(), "plinth", &mut seen);
        let mut wrong = Vec::new();
        for (name, must_say) in [
            ("key", "API key"),
            ("url", "erver"),
            ("routing-key", "routing"),
            ("join-key", "oin key"),
        ] {
            for (path, help) in seen.get(name).into_iter().flatten() {
                if !help.contains(must_say) {
                    wrong.push(format!("{path} --{name}: {help:?} is not about {must_say:?}"));
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
        assert!(
            seen.contains_key("routing-key") && seen.contains_key("join-key"),
            "{:?}",
            seen.keys()
        );
    }

    /// `plinth serve --help` lists the server's options only.
    #[test]
    fn serve_does_not_list_the_client_s_options() {
        let mut cmd = Cli::definition();
        let serve = cmd.find_subcommand_mut("serve").unwrap();
        let help = serve.render_long_help().to_string();
        for client_only in ["--url", "--profile", "--json"] {
            assert!(!help.contains(client_only), "{client_only} in serve's help:\n{help}");
        }
        assert!(help.contains("--listen") && help.contains("--data-dir"), "{help}");
        let mut cmd = Cli::definition();
        let list = cmd.find_subcommand_mut("model").unwrap().find_subcommand_mut("list").unwrap();
        assert!(list.render_long_help().to_string().contains("--url"), "clients keep --url");
    }

    #[test]
    fn entity_keys_are_numbers_when_every_value_is_one() {
        let keys = entity_keys(&["origin=JFK,LGA".into(), "driver_id=1, 2".into()]).unwrap();
        assert_eq!(keys, serde_json::json!({"origin": ["JFK", "LGA"], "driver_id": [1, 2]}));
        for bad in ["origin", "=JFK", "origin="] {
            assert!(entity_keys(&[bad.to_string()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn model_and_version_specs_parse() {
        assert_eq!(split_version("fraud/churn@3").unwrap(), ("fraud".into(), "churn".into(), 3));
        assert!(split_model("fraud").is_err());
        assert!(split_version("fraud/churn").is_err());
        assert_eq!(parse_duration("30d").unwrap(), time::Duration::days(30));
        assert!(parse_duration("thirty").is_err());
    }
}
