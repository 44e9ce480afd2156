//! Models and versions: register, list, show, upload, edit cards, download.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use plinth_api::Page;
use plinth_api::registry::{Model, ModelVersion};
use serde_json::json;

use super::{Global, PageArgs, connect, parse_tags, read_json, split_model, split_version};
use crate::output;

/// Models and their versions.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Registered models.
    #[command(subcommand)]
    Model(ModelCmd),
    /// Model versions: upload, inspect, edit the card, download.
    #[command(subcommand)]
    Version(VersionCmd),
}

#[derive(Subcommand, Debug)]
pub(crate) enum ModelCmd {
    /// Register a model: TEAM/NAME.
    #[command(
        after_help = "Example:\n  plinth model create fraud/income --task binary_classification"
    )]
    Create {
        /// The model to register, TEAM/NAME.
        model: String,
        /// binary_classification, multiclass_classification or regression
        #[arg(long)]
        task: String,
        /// What the model predicts, for its readers.
        #[arg(long)]
        description: Option<String>,
        /// key=value, repeatable
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// An owner: a person or group, free text (repeatable; default: you).
        #[arg(long = "owner")]
        owners: Vec<String>,
    },
    /// List or search models.
    List(ModelListArgs),
    Show {
        /// The model, TEAM/MODEL.
        model: String,
    },
    Update {
        /// The model, TEAM/MODEL.
        model: String,
        /// A new description.
        #[arg(long)]
        description: Option<String>,
        /// Replace all tags (key=value, repeatable).
        #[arg(long = "tag")]
        tags: Option<Vec<String>>,
        /// Replace all owners: a person or group, free text (repeatable).
        #[arg(long = "owner")]
        owners: Option<Vec<String>>,
    },
    Archive {
        /// The model, TEAM/MODEL.
        model: String,
    },
}

#[derive(Args, Debug)]
pub(crate) struct ModelListArgs {
    /// Only this team's models.
    #[arg(long)]
    team: Option<String>,
    /// Name contains this text.
    #[arg(long)]
    q: Option<String>,
    /// key or key=value
    #[arg(long)]
    tag: Option<String>,
    /// Only models with a version of this format: onnx, lightgbm or xgboost.
    #[arg(long)]
    format: Option<String>,
    /// Only models of this task: binary_classification, multiclass_classification or regression.
    #[arg(long)]
    task: Option<String>,
    /// List archived models too.
    #[arg(long)]
    include_archived: bool,
    #[command(flatten)]
    page: PageArgs,
}

#[derive(Subcommand, Debug)]
pub(crate) enum VersionCmd {
    /// Upload a model file as a new version of TEAM/NAME.
    #[command(
        after_help = "Example:\n  plinth version upload fraud/income model.txt --card card.json"
    )]
    Upload {
        /// The model, TEAM/MODEL (registered with `plinth model create`).
        model: String,
        /// The model file: ONNX, a LightGBM text model or an XGBoost JSON model.
        file: PathBuf,
        /// What changed in this version.
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
        /// A feature service of the team whose features are the model's inputs: callers may
        /// then predict by entity key (`plinth predict --entity`).
        #[arg(long)]
        feature_service: Option<String>,
    },
    List {
        /// The model, TEAM/MODEL.
        model: String,
        /// List archived versions too.
        #[arg(long)]
        include_archived: bool,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show TEAM/NAME@VERSION.
    Show {
        /// The version, TEAM/MODEL@VERSION (e.g. fraud/income@3).
        #[arg(value_name = "TEAM/MODEL@VERSION")]
        spec: String,
    },
    /// Replace the model card of TEAM/NAME@VERSION from a JSON file.
    Card {
        /// The version, TEAM/MODEL@VERSION (e.g. fraud/income@3).
        #[arg(value_name = "TEAM/MODEL@VERSION")]
        spec: String,
        /// The new model card, a .json file.
        #[arg(long)]
        file: PathBuf,
    },
    Archive {
        /// The version, TEAM/MODEL@VERSION (e.g. fraud/income@3).
        #[arg(value_name = "TEAM/MODEL@VERSION")]
        spec: String,
    },
    Download {
        /// The version, TEAM/MODEL@VERSION (e.g. fraud/income@3).
        #[arg(value_name = "TEAM/MODEL@VERSION")]
        spec: String,
        /// Where to write (default: the artifact's file name).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

pub(crate) async fn run(g: &Global, cmd: Command) -> Result<()> {
    match cmd {
        Command::Model(cmd) => model(g, cmd).await,
        Command::Version(cmd) => version(g, cmd).await,
    }
}

fn model_rows(models: &[Model]) -> Vec<Vec<String>> {
    models
        .iter()
        .map(|m| {
            vec![
                format!("{}/{}", m.team, m.name),
                m.task.as_str().into(),
                m.latest_version.to_string(),
                m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
                output::time(&m.updated_at),
                if m.archived_at.is_some() { "archived".into() } else { String::new() },
            ]
        })
        .collect()
}

pub(super) async fn model(g: &Global, cmd: ModelCmd) -> Result<()> {
    let c = connect(g)?;
    match cmd {
        ModelCmd::Create { model, task, description, tags, owners } => {
            let (team, name) = split_model(&model)?;
            let owners = (!owners.is_empty()).then_some(owners);
            let m: Model = c
                .post(&format!("/teams/{team}/models"), &json!({"name": name, "task": task, "description": description, "tags": parse_tags(&tags)?, "owners": owners}))
                .await?;
            if g.json {
                output::json(&m)
            } else {
                println!("registered model {}/{} ({})", m.team, m.name, m.id)
            }
        }
        ModelCmd::List(a) => {
            let mut q = a.page.query();
            for (k, v) in [
                ("team", a.team),
                ("q", a.q),
                ("tag", a.tag),
                ("format", a.format),
                ("task", a.task),
            ] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            if a.include_archived {
                q.push(("include_archived", "true".into()));
            }
            let p: Page<Model> = c.get("/models", &q).await?;
            if g.json {
                output::json(&p);
            } else {
                output::table(
                    &["model", "task", "latest", "tags", "updated", ""],
                    model_rows(&p.items),
                );
                output::more(&p.next_cursor);
            }
        }
        ModelCmd::Show { model } => {
            let (team, name) = split_model(&model)?;
            let m: Model = c.get(&format!("/teams/{team}/models/{name}"), &[]).await?;
            if g.json {
                output::json(&m);
            } else {
                output::fields(&[
                    ("model", format!("{}/{}", m.team, m.name)),
                    ("id", m.id.clone()),
                    ("task", m.task.as_str().into()),
                    ("description", m.description.clone()),
                    ("owners", m.owners.join(", ")),
                    (
                        "tags",
                        m.tags
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(" "),
                    ),
                    ("latest version", m.latest_version.to_string()),
                    ("created", format!("{} by {}", output::time(&m.created_at), m.created_by)),
                    ("archived", output::opt_time(&m.archived_at)),
                ]);
            }
        }
        ModelCmd::Update { model, description, tags, owners } => {
            let (team, name) = split_model(&model)?;
            let tags = tags.map(|t| parse_tags(&t)).transpose()?;
            let m: Model = c
                .patch(
                    &format!("/teams/{team}/models/{name}"),
                    &json!({"description": description, "tags": tags, "owners": owners}),
                )
                .await?;
            if g.json { output::json(&m) } else { println!("updated {}/{}", m.team, m.name) }
        }
        ModelCmd::Archive { model } => {
            let (team, name) = split_model(&model)?;
            let m: Model =
                c.post(&format!("/teams/{team}/models/{name}/archive"), &json!({})).await?;
            if g.json { output::json(&m) } else { println!("archived {}/{}", m.team, m.name) }
        }
    }
    Ok(())
}

fn show_version(g: &Global, v: &ModelVersion) {
    if g.json {
        output::json(v);
        return;
    }
    let sig = |ts: &[plinth_api::registry::TensorSpec]| {
        ts.iter()
            .map(|t| format!("{} {:?} {:?}", t.name, t.datatype, t.shape))
            .collect::<Vec<_>>()
            .join("; ")
    };
    output::fields(&[
        ("version", format!("{}/{}@{}", v.team, v.model, v.version)),
        ("id", v.id.clone()),
        ("format", v.artifact.format.as_str().into()),
        ("file", format!("{} ({})", v.artifact.filename, output::size(v.artifact.size_bytes))),
        ("sha256", v.artifact.sha256.clone()),
        ("inputs", sig(&v.signature.inputs)),
        ("outputs", sig(&v.signature.outputs)),
        (
            "features",
            v.signature.feature_names.as_ref().map(|f| f.join(", ")).unwrap_or_else(|| "-".into()),
        ),
        (
            "risk tier",
            v.card.risk_tier.map(|r| format!("{r:?}").to_lowercase()).unwrap_or_else(|| "-".into()),
        ),
        ("approval", crate::output::words(&v.approval)),
        ("lineage", lineage_line(&v.lineage)),
        ("created", format!("{} by {}", output::time(&v.created_at), v.created_by)),
    ]);
}

/// Where a version came from, in a line: its source by its API name, and what made it.
fn lineage_line(l: &plinth_api::registry::Lineage) -> String {
    let source = serde_json::to_value(l.source)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut parts = Vec::new();
    if let Some(run) = &l.training_job {
        parts.push(format!("run {run}"));
    }
    if let Some(d) = &l.dataset_version {
        parts.push(format!("data {d}"));
    }
    if let Some(r) = l.parameters.get("recipe") {
        parts.push(format!("recipe {r}"));
    }
    if parts.is_empty() { source } else { format!("{source} ({})", parts.join(", ")) }
}

pub(super) async fn version(g: &Global, cmd: VersionCmd) -> Result<()> {
    let c = connect(g)?;
    match cmd {
        VersionCmd::Upload {
            model,
            file,
            description,
            format,
            signature,
            card,
            lineage,
            feature_service,
        } => {
            let (team, name) = split_model(&model)?;
            let mut meta = json!({});
            if let Some(d) = description {
                meta["description"] = json!(d);
            }
            if let Some(f) = format {
                meta["format"] = json!(f);
            }
            if let Some(s) = feature_service {
                meta["feature_service"] = json!(s);
            }
            for (k, path) in [("signature", signature), ("card", card), ("lineage", lineage)] {
                if let Some(p) = path {
                    meta[k] = read_json(&p)?;
                }
            }
            let v: ModelVersion =
                c.upload(&format!("/teams/{team}/models/{name}/versions"), &meta, &file).await?;
            if g.json {
                output::json(&v);
            } else {
                println!(
                    "registered {}/{}@{} ({}, {}, sha256 {})",
                    v.team,
                    v.model,
                    v.version,
                    v.artifact.format.as_str(),
                    output::size(v.artifact.size_bytes),
                    v.artifact.sha256
                );
            }
        }
        VersionCmd::List { model, include_archived, page } => {
            let (team, name) = split_model(&model)?;
            let mut q = page.query();
            if include_archived {
                q.push(("include_archived", "true".into()));
            }
            let p: Page<ModelVersion> =
                c.get(&format!("/teams/{team}/models/{name}/versions"), &q).await?;
            if g.json {
                output::json(&p);
            } else {
                output::table(
                    &["version", "format", "size", "sha256", "created", "by", ""],
                    p.items
                        .iter()
                        .map(|v| {
                            vec![
                                v.version.to_string(),
                                v.artifact.format.as_str().into(),
                                v.artifact.size_bytes.to_string(),
                                v.artifact.sha256[..12].to_string(),
                                output::time(&v.created_at),
                                v.created_by.clone(),
                                if v.archived_at.is_some() {
                                    "archived".into()
                                } else {
                                    String::new()
                                },
                            ]
                        })
                        .collect(),
                );
                output::more(&p.next_cursor);
            }
        }
        VersionCmd::Show { spec } => {
            let (team, name, v) = split_version(&spec)?;
            let v: ModelVersion =
                c.get(&format!("/teams/{team}/models/{name}/versions/{v}"), &[]).await?;
            show_version(g, &v);
        }
        VersionCmd::Card { spec, file } => {
            let (team, name, v) = split_version(&spec)?;
            let v: ModelVersion = c
                .patch(
                    &format!("/teams/{team}/models/{name}/versions/{v}"),
                    &json!({"card": read_json(&file)?}),
                )
                .await?;
            show_version(g, &v);
        }
        VersionCmd::Archive { spec } => {
            let (team, name, v) = split_version(&spec)?;
            let v: ModelVersion = c
                .post(&format!("/teams/{team}/models/{name}/versions/{v}/archive"), &json!({}))
                .await?;
            if g.json {
                output::json(&v)
            } else {
                println!("archived {}/{}@{}", v.team, v.model, v.version)
            }
        }
        VersionCmd::Download { spec, output: out } => {
            let (team, name, v) = split_version(&spec)?;
            let info: ModelVersion =
                c.get(&format!("/teams/{team}/models/{name}/versions/{v}"), &[]).await?;
            let dest = out.unwrap_or_else(|| PathBuf::from(&info.artifact.filename));
            let (bytes, sha) = c
                .download(&format!("/teams/{team}/models/{name}/versions/{v}/artifact"), &dest)
                .await?;
            if g.json {
                output::json(&json!({"path": dest, "bytes": bytes, "sha256": sha}));
            } else {
                println!(
                    "wrote {} ({bytes} bytes, sha256 {})",
                    dest.display(),
                    sha.unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}
