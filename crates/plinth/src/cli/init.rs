//! `plinth init`: a starter project for a new team, written from the templates in the
//! repository's `templates/` (embedded in the binary, so it works offline and anywhere): real
//! sample data, a training script, a model card, a production policy, and a README whose
//! commands take the team to a governed production prediction (they run in the test suite).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use super::usage;

/// One starter project: its files, by path within the project.
struct Template {
    name: &'static str,
    about: &'static str,
    /// The model's name in the project's commands unless `--model` says otherwise.
    model: &'static str,
    files: &'static [(&'static str, &'static str)],
}

macro_rules! files {
    ($dir:literal: $($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../templates/", $dir, "/", $path)))),*]
    };
}

const TEMPLATES: &[Template] = &[
    Template {
        name: "classification",
        about: "binary classification with a fairness check (Adult census sample: income over $50K, sex and race as sensitive attributes)",
        model: "credit-risk",
        files: files!("classification": "README.md", "train.py", "card.json", "policy.json", "example-rows.json", "data/train.csv", "data/holdout.csv"),
    },
    Template {
        name: "regression",
        about: "regression with error bounds and a regression guard against production (Ames house prices)",
        model: "house-price",
        files: files!("regression": "README.md", "train.py", "card.json", "policy.json", "example-rows.json", "data/train.csv", "data/holdout.csv"),
    },
    Template {
        name: "features",
        about: "the feature store: a feature view, point-in-time training data, predictions by entity key (NYC flights and weather: will a departure be late?)",
        model: "flight-delays",
        files: files!("features": "README.md", "train.py", "card.json", "policy.json", "view.json", "data/weather.csv", "data/flights.csv", "data/holdout-flights.csv"),
    },
];

#[derive(Args, Debug)]
pub(crate) struct InitArgs {
    /// The template: classification, regression or features (`--list` describes them).
    template: Option<String>,
    /// The directory to write the project in: created, or empty if it exists.
    dir: Option<PathBuf>,
    /// The team the project's commands act in.
    #[arg(long, default_value = "my-team")]
    team: String,
    /// The model's name in the project's commands (default: the template's, e.g. credit-risk).
    #[arg(long)]
    model: Option<String>,
    /// List the templates and what each is for.
    #[arg(long)]
    list: bool,
}

/// The naming rule of teams and models (the server checks it too; here the project's commands
/// are written with the names, so a bad one is refused before any file is).
fn check_name(what: &str, name: &str) -> Result<()> {
    plinth_core::util::check_name(&format!("--{what}"), name).map_err(|e| usage(e.message))
}

pub(crate) fn run(args: InitArgs) -> Result<()> {
    let list = || {
        TEMPLATES
            .iter()
            .map(|t| format!("  {:<16} {}", t.name, t.about))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if args.list {
        println!("{}", list());
        return Ok(());
    }
    let (Some(name), Some(dir)) = (args.template, args.dir) else {
        return Err(usage(format!(
            "give a template and a directory: plinth init TEMPLATE DIR\n\ntemplates:\n{}",
            list()
        )));
    };
    let Some(template) = TEMPLATES.iter().find(|t| t.name == name) else {
        return Err(usage(format!("no template {name:?}; there are:\n{}", list())));
    };
    let model = args.model.unwrap_or_else(|| template.model.to_string());
    check_name("team", &args.team)?;
    check_name("model", &model)?;
    if dir.exists()
        && std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        return Err(usage(format!(
            "{} is not empty: plinth init writes a new project into an empty or new directory",
            dir.display()
        )));
    }
    for (path, text) in template.files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let text = text.replace("{{team}}", &args.team).replace("{{model}}", &model);
        std::fs::write(&target, text).with_context(|| format!("writing {}", target.display()))?;
    }
    println!("Wrote a {} project for {}/{} in {}:", template.name, args.team, model, dir.display());
    for (path, _) in template.files {
        println!("  {}", Path::new(path).display());
    }
    println!("Next: follow {}", dir.join("README.md").display());
    Ok(())
}
