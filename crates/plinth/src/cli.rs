//! The command line: one subcommand per task, each a thin call to the HTTP API.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use plinth_api::identity::{PrincipalInfo, WhoAmI};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::client::{self, Client, Profile};
use crate::config::{self, Overrides};
use crate::output;

mod features;
mod governance;
mod identity;
mod registry;
mod serving;
mod tasks;

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
    /// Whether this runs the server (rather than a client command).
    pub fn is_serve(&self) -> bool {
        matches!(self.command, Command::Serve(_))
    }
}

#[derive(Args, Debug)]
struct Global {
    /// Print the server's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
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
    Serve(ServeArgs),
    /// Save a server URL and API key in a profile.
    Login {
        #[arg(long)]
        url: String,
        /// The API key; `-` reads it from standard input. Default: $PLINTH_KEY.
        #[arg(long)]
        key: Option<String>,
    },
    /// Show who the current key belongs to.
    Whoami,
    /// Teams and their members.
    #[command(subcommand)]
    Team(TeamCmd),
    /// Users (platform admins).
    #[command(subcommand)]
    User(UserCmd),
    /// Service accounts owned by a team.
    #[command(subcommand, name = "service-account")]
    ServiceAccount(ServiceAccountCmd),
    /// API keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Registered models.
    #[command(subcommand)]
    Model(ModelCmd),
    /// Model versions: upload, inspect, edit the card, download.
    #[command(subcommand)]
    Version(VersionCmd),
    /// Read the audit log.
    Audit(AuditArgs),
    /// Deploy versions of a model to an environment (replaces what is deployed there).
    Deploy(DeployArgs),
    /// Change the traffic split of a deployment: VERSION=PERCENT ...
    Traffic {
        model: String,
        #[arg(long, default_value = "production")]
        env: String,
        /// VERSION=PERCENT, e.g. 3=90 4=10
        #[arg(required = true)]
        split: Vec<String>,
        /// Shadow versions (replaces the current shadows; --shadow none clears them).
        #[arg(long = "shadow")]
        shadows: Option<Vec<String>>,
    },
    /// Go back to an earlier revision of a deployment (default: the previous one).
    Rollback {
        model: String,
        #[arg(long, default_value = "production")]
        env: String,
        #[arg(long)]
        to_revision: Option<u32>,
    },
    /// What served in an environment, when, and who changed it.
    History {
        model: String,
        #[arg(long, default_value = "production")]
        env: String,
        /// Instead of the list: what served at this time (RFC 3339, or `now`), who approved it,
        /// with which evidence.
        #[arg(long)]
        at: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Datasets: upload CSV or Parquet files as immutable versions, list, show profiles.
    #[command(subcommand)]
    Dataset(governance::DatasetCmd),
    /// Evaluate a model version on a dataset (metrics, fairness, slices, comparison).
    Evaluate(governance::EvaluateArgs),
    /// Print an evaluation's Markdown report.
    Report {
        evaluation: String,
        /// Write it to a file instead.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Request the promotion of a version to an environment.
    Promote(governance::PromoteArgs),
    /// Review promotions: queue, show, approve, reject, request-changes.
    #[command(subcommand)]
    Review(governance::ReviewCmd),
    /// Promotion policies per team and environment.
    #[command(subcommand)]
    Policy(governance::PolicyCmd),
    /// Webhooks on promotion events, and their delivery log.
    #[command(subcommand)]
    Webhook(governance::WebhookCmd),
    /// SQL over a team's datasets and sources, and the ones granted to it.
    Query(governance::QueryArgs),
    /// Data sources: files and folders under the server's sources root, PostgreSQL tables.
    #[command(subcommand)]
    Source(governance::SourceCmd),
    /// Fairness and classification metrics of a predictions file (offline; Fairlearn's layout).
    Fairness(governance::FairnessArgs),
    /// Online features (get, push) and point-in-time training sets from files (pit).
    #[command(subcommand)]
    Features(features::FeaturesCmd),
    /// Entities of the feature store (their join keys).
    #[command(subcommand)]
    Entity(features::EntityCmd),
    /// Feature views: typed features of an entity over a dataset, with freshness.
    #[command(subcommand, name = "feature-view")]
    FeatureView(features::FeatureViewCmd),
    /// Feature services: named sets of features.
    #[command(subcommand, name = "feature-service")]
    FeatureService(features::FeatureServiceCmd),
    /// Materialize a feature view (TEAM/VIEW) into the online store, and follow the job.
    Materialize {
        view: String,
        /// Rewrite everything instead of the rows newer than the watermark.
        #[arg(long)]
        full: bool,
    },
    /// Predict from a JSON or CSV file of rows.
    Predict(PredictArgs),
    /// Deployments: list, show, metrics, grants, the prediction log.
    #[command(subcommand)]
    Deployment(DeploymentCmd),
    /// Environments (staging, production, and the ones admins add).
    #[command(subcommand)]
    Environment(EnvironmentCmd),
    /// Background tasks: list, show, logs, cancel.
    #[command(subcommand)]
    Task(tasks::TaskCmd),
}

#[derive(Args, Debug)]
pub(crate) struct DeployArgs {
    /// TEAM/MODEL
    model: String,
    #[arg(long, default_value = "production")]
    env: String,
    /// A version to serve (all traffic), or VERSION=PERCENT; repeat for a canary or A/B split.
    #[arg(long = "traffic", value_name = "VERSION[=PERCENT]", required_unless_present = "spec")]
    versions: Vec<String>,
    /// A version that gets a copy of every request (answers logged, never returned).
    #[arg(long = "shadow")]
    shadows: Vec<u32>,
    /// Anyone may call it without an API key.
    #[arg(long)]
    public: bool,
    #[arg(long)]
    max_batch_size: Option<u32>,
    #[arg(long)]
    max_wait_us: Option<u32>,
    #[arg(long)]
    max_workers: Option<u32>,
    #[arg(long)]
    idle_seconds: Option<u32>,
    #[arg(long)]
    timeout_ms: Option<u32>,
    #[arg(long)]
    log_sample_rate: Option<f64>,
    /// A JSON file with the whole deployment spec (other flags are then ignored).
    #[arg(long)]
    spec: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct PredictArgs {
    /// TEAM/MODEL
    model: String,
    #[arg(long, default_value = "production")]
    env: String,
    /// Rows: a .csv file with a header row, or a .json file (an array of rows, or {"rows": [...]}).
    #[arg(long)]
    file: PathBuf,
    /// Sticky routing key: the same key always reaches the same version.
    #[arg(long)]
    key: Option<String>,
    /// Rows per request.
    #[arg(long, default_value_t = 1000)]
    batch_rows: usize,
}

#[derive(Subcommand, Debug)]
pub(crate) enum DeploymentCmd {
    List {
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        env: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    Show {
        model: String,
        #[arg(long, default_value = "production")]
        env: String,
    },
    Metrics {
        model: String,
        #[arg(long, default_value = "production")]
        env: String,
    },
    /// Let another team call this deployment.
    Grant {
        model: String,
        #[arg(long, default_value = "production")]
        env: String,
        #[arg(long)]
        team: String,
    },
    Revoke {
        model: String,
        #[arg(long, default_value = "production")]
        env: String,
        #[arg(long)]
        team: String,
    },
    /// Logged predictions (RFC 3339 times or durations ago, e.g. 1h).
    Log {
        model: String,
        #[arg(long, default_value = "production")]
        env: String,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        shadow: Option<bool>,
        #[arg(long)]
        limit: Option<u32>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum EnvironmentCmd {
    List,
    Create {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// A TOML configuration file (see config/plinth.example.toml). Default: $PLINTH_CONFIG.
    #[arg(long, env = "PLINTH_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long)]
    listen: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// postgres://... to keep metadata in PostgreSQL.
    #[arg(long)]
    database_url: Option<String>,
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
    #[arg(long)]
    log_format: Option<String>,
    #[arg(long)]
    log_level: Option<String>,
    /// How long an idle worker watches the sockets before it sleeps, in µs (0: off).
    #[arg(long)]
    busy_poll_us: Option<u64>,
}

#[derive(Subcommand, Debug)]
enum TeamCmd {
    Create {
        name: String,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    List(PageArgs),
    Show {
        name: String,
    },
    Members {
        team: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Add a member or change its role: viewer, developer or maintainer.
    AddMember {
        team: String,
        principal: String,
        #[arg(long)]
        role: String,
    },
    RemoveMember {
        team: String,
        principal: String,
    },
}

#[derive(Subcommand, Debug)]
enum UserCmd {
    Create {
        name: String,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// reviewer or admin
        #[arg(long)]
        platform_role: Option<String>,
    },
    List(PageArgs),
}

#[derive(Subcommand, Debug)]
enum ServiceAccountCmd {
    Create {
        team: String,
        name: String,
        /// The account's role in its team (default viewer).
        #[arg(long)]
        role: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum KeyCmd {
    /// Create a key (shown once).
    Create {
        #[arg(long)]
        name: Option<String>,
        /// Whose key: a user name or team/service-account (default: you).
        #[arg(long)]
        principal: Option<String>,
        /// Expiry as a duration from now: 30d, 12h, 90m.
        #[arg(long, conflicts_with = "expires_at")]
        expires_in: Option<String>,
        /// Expiry as an RFC 3339 time.
        #[arg(long)]
        expires_at: Option<String>,
    },
    List {
        #[arg(long)]
        principal: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    Revoke {
        id: String,
    },
    /// Print a new random key without contacting a server (for PLINTH_BOOTSTRAP_ADMIN_KEY).
    Generate,
}

#[derive(Subcommand, Debug)]
enum ModelCmd {
    /// Register a model: TEAM/NAME.
    Create {
        model: String,
        /// binary_classification, multiclass_classification or regression
        #[arg(long)]
        task: String,
        #[arg(long)]
        description: Option<String>,
        /// key=value, repeatable
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long = "owner")]
        owners: Vec<String>,
    },
    /// List or search models.
    List(ModelListArgs),
    Show {
        model: String,
    },
    Update {
        model: String,
        #[arg(long)]
        description: Option<String>,
        /// Replace all tags (key=value, repeatable).
        #[arg(long = "tag")]
        tags: Option<Vec<String>>,
        #[arg(long = "owner")]
        owners: Option<Vec<String>>,
    },
    Archive {
        model: String,
    },
}

#[derive(Args, Debug)]
struct ModelListArgs {
    #[arg(long)]
    team: Option<String>,
    /// Name contains this text.
    #[arg(long)]
    q: Option<String>,
    /// key or key=value
    #[arg(long)]
    tag: Option<String>,
    #[arg(long)]
    format: Option<String>,
    #[arg(long)]
    task: Option<String>,
    #[arg(long)]
    include_archived: bool,
    #[command(flatten)]
    page: PageArgs,
}

#[derive(Subcommand, Debug)]
enum VersionCmd {
    /// Upload a model file as a new version of TEAM/NAME.
    Upload {
        model: String,
        file: PathBuf,
        #[arg(long)]
        description: Option<String>,
        /// Refuse unless the file is this format: onnx, lightgbm or xgboost.
        #[arg(long)]
        format: Option<String>,
        /// A JSON file with the signature (required when the format carries none).
        #[arg(long)]
        signature: Option<PathBuf>,
        /// A JSON file with the model card.
        #[arg(long)]
        card: Option<PathBuf>,
        /// A JSON file with the lineage.
        #[arg(long)]
        lineage: Option<PathBuf>,
    },
    List {
        model: String,
        #[arg(long)]
        include_archived: bool,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show TEAM/NAME@VERSION.
    Show {
        #[arg(value_name = "TEAM/MODEL@VERSION")]
        spec: String,
    },
    /// Replace the model card of TEAM/NAME@VERSION from a JSON file.
    Card {
        #[arg(value_name = "TEAM/MODEL@VERSION")]
        spec: String,
        #[arg(long)]
        file: PathBuf,
    },
    Archive {
        #[arg(value_name = "TEAM/MODEL@VERSION")]
        spec: String,
    },
    Download {
        #[arg(value_name = "TEAM/MODEL@VERSION")]
        spec: String,
        /// Where to write (default: the artifact's file name).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
struct AuditArgs {
    #[arg(long)]
    team: Option<String>,
    /// Action prefix, e.g. model. or key.revoke
    #[arg(long)]
    action: Option<String>,
    #[arg(long)]
    actor: Option<String>,
    /// RFC 3339 time or a duration ago (e.g. 24h).
    #[arg(long)]
    since: Option<String>,
    #[arg(long)]
    until: Option<String>,
    #[command(flatten)]
    page: PageArgs,
}

#[derive(Args, Debug, Default)]
pub(crate) struct PageArgs {
    #[arg(long)]
    limit: Option<u32>,
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

fn parse_tags(tags: &[String]) -> Result<BTreeMap<String, String>> {
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
fn connect_maybe(global: &Global) -> Result<Client> {
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

fn connect(global: &Global) -> Result<Client> {
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
        Command::Team(cmd) => identity::team(g, cmd).await,
        Command::User(cmd) => identity::user(g, cmd).await,
        Command::ServiceAccount(ServiceAccountCmd::Create { team, name, role }) => {
            let p: PrincipalInfo = connect(g)?
                .post(
                    &format!("/teams/{team}/service-accounts"),
                    &json!({"name": name, "role": role}),
                )
                .await?;
            if g.json {
                output::json(&p);
            } else {
                println!("created service account {} ({})", p.name, p.id);
            }
            Ok(())
        }
        Command::Key(cmd) => identity::key(g, cmd).await,
        Command::Model(cmd) => registry::model(g, cmd).await,
        Command::Version(cmd) => registry::version(g, cmd).await,
        Command::Audit(args) => identity::audit(g, args).await,
        Command::Deploy(args) => serving::deploy(&connect(g)?, g.json, args).await,
        Command::Traffic { model, env, split, shadows } => {
            serving::traffic(&connect(g)?, g.json, &model, &env, &split, shadows).await
        }
        Command::Rollback { model, env, to_revision } => {
            serving::rollback(&connect(g)?, g.json, &model, &env, to_revision).await
        }
        Command::History { model, env, at: Some(at), .. } => {
            let at = if at == "now" { OffsetDateTime::now_utc().format(&Rfc3339)? } else { at };
            governance::served(&connect(g)?, g.json, &model, &env, &at).await
        }
        Command::History { model, env, at: None, page } => {
            serving::history(&connect(g)?, g.json, &model, &env, page.query()).await
        }
        Command::Dataset(cmd) => governance::dataset(&connect(g)?, g.json, cmd).await,
        Command::Evaluate(args) => governance::evaluate(&connect(g)?, g.json, args).await,
        Command::Report { evaluation, out } => {
            governance::report(&connect(g)?, &evaluation, out).await
        }
        Command::Promote(args) => governance::promote(&connect(g)?, g.json, args).await,
        Command::Review(cmd) => governance::review(&connect(g)?, g.json, cmd).await,
        Command::Policy(cmd) => governance::policy(&connect(g)?, g.json, cmd).await,
        Command::Webhook(cmd) => governance::webhook(&connect(g)?, g.json, cmd).await,
        Command::Fairness(args) => governance::fairness(args),
        Command::Query(args) => governance::query(&connect(g)?, g.json, args).await,
        Command::Source(cmd) => governance::source(&connect(g)?, g.json, cmd).await,
        Command::Features(cmd @ features::FeaturesCmd::Pit { .. }) => features::features(cmd),
        Command::Features(cmd) => features::features_remote(&connect(g)?, g.json, cmd).await,
        Command::Entity(cmd) => features::entity(&connect(g)?, g.json, cmd).await,
        Command::FeatureView(cmd) => features::feature_view(&connect(g)?, g.json, cmd).await,
        Command::FeatureService(cmd) => features::feature_service(&connect(g)?, g.json, cmd).await,
        Command::Materialize { view, full } => {
            features::materialize(&connect(g)?, g.json, &view, full).await
        }
        Command::Predict(args) => serving::predict(&connect_maybe(g)?, g.json, args).await,
        Command::Deployment(cmd) => serving::deployment(&connect(g)?, g.json, cmd).await,
        Command::Environment(cmd) => serving::environment(&connect(g)?, g.json, cmd).await,
        Command::Task(cmd) => tasks::task(&connect(g)?, g.json, cmd).await,
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

    #[test]
    fn model_and_version_specs_parse() {
        assert_eq!(split_version("fraud/churn@3").unwrap(), ("fraud".into(), "churn".into(), 3));
        assert!(split_model("fraud").is_err());
        assert!(split_version("fraud/churn").is_err());
        assert_eq!(parse_duration("30d").unwrap(), time::Duration::days(30));
        assert!(parse_duration("thirty").is_err());
    }
}
