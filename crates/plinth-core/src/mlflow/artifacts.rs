//! MLflow's artifact proxy (`mlflow-artifacts`): a run's or a logged model's files, kept in the
//! artifact store under `mlflow/<team id>/<experiment id>/...`. A path's first segment must be
//! one of the team's experiments, so no team reaches another's files, whatever it asks for.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::Plinth;
use crate::auth::{Principal, TeamRef};
use crate::error::{Error, Result};
use crate::store::artifacts::{ArtifactReader, StagedFile};
use crate::store::{Sql, col};

/// One entry of a listing: a file or a directory, by its name within the listed directory.
#[derive(Debug, Clone, Serialize)]
pub struct ArtifactFile {
    pub path: String,
    pub is_dir: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
}

/// Checks an artifact path (relative, `/`-separated, no `.` or `..`, no empty or hidden
/// staging names) and answers it without surrounding slashes.
pub(crate) fn clean_path(path: &str) -> Result<&str> {
    let path = path.trim_matches('/');
    let bad = |why: &str| Err(Error::invalid("path", format!("{why}: {path:?}")));
    if path.is_empty() {
        return bad("an artifact path is needed");
    }
    if path.len() > 1024 {
        return bad("longer than 1024 bytes");
    }
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return bad("no empty, '.' or '..' segments");
        }
        if part.starts_with(".incoming-") || part.chars().any(|c| c.is_control() || c == '\\') {
            return bad("not a file name Plinth keeps");
        }
    }
    Ok(path)
}

impl Plinth {
    /// The store key of `path`, after checking its experiment is the team's.
    pub(crate) async fn mlflow_artifact_key(&self, team: &TeamRef, path: &str) -> Result<String> {
        let path = clean_path(path)?;
        let experiment = path.split('/').next().unwrap_or_default();
        let found = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT id FROM mlflow_experiments WHERE id = $1 AND team_id = $2",
                [experiment.into(), team.id.clone().into()],
            ))
            .await?;
        if found.is_none() {
            return Err(Error::not_found("artifact", path).with_field("path"));
        }
        Ok(format!("mlflow/{}/{path}", team.id))
    }

    /// Stores a file; one already at that path is replaced (MLflow's semantics).
    pub async fn mlflow_put_artifact(
        &self,
        who: &Principal,
        team: &TeamRef,
        path: &str,
        staged: StagedFile,
    ) -> Result<()> {
        who.require(team, plinth_api::identity::TeamRole::Developer, "logging artifacts")?;
        let key = self.mlflow_artifact_key(team, path).await?;
        self.check_storage_quota(&team.id, staged.size).await?;
        self.artifacts.delete(&key).await?;
        self.artifacts.put(&key, staged).await
    }

    pub async fn mlflow_open_artifact(
        &self,
        who: &Principal,
        team: &TeamRef,
        path: &str,
    ) -> Result<ArtifactReader> {
        who.require(team, plinth_api::identity::TeamRole::Viewer, "reading artifacts")?;
        let key = self.mlflow_artifact_key(team, path).await?;
        self.artifacts.open(&key).await.map_err(|e| {
            if e.code == plinth_api::Code::NotFound {
                Error::not_found("artifact", path).with_field("path")
            } else {
                e
            }
        })
    }

    pub async fn mlflow_delete_artifact(
        &self,
        who: &Principal,
        team: &TeamRef,
        path: &str,
    ) -> Result<()> {
        who.require(team, plinth_api::identity::TeamRole::Developer, "deleting artifacts")?;
        let key = self.mlflow_artifact_key(team, path).await?;
        // A directory goes with everything in it.
        for listed in self.artifacts.list(&format!("{key}/")).await? {
            self.artifacts.delete(&listed.key).await?;
        }
        self.artifacts.delete(&key).await
    }

    /// The files and directories directly in `path`, by name, sorted.
    pub async fn mlflow_list_artifacts(
        &self,
        who: &Principal,
        team: &TeamRef,
        path: &str,
    ) -> Result<Vec<ArtifactFile>> {
        who.require(team, plinth_api::identity::TeamRole::Viewer, "reading artifacts")?;
        let key = self.mlflow_artifact_key(team, path).await?;
        let prefix = format!("{key}/");
        let mut entries: BTreeMap<String, ArtifactFile> = BTreeMap::new();
        for listed in self.artifacts.list(&prefix).await? {
            let Some(rest) = listed.key.strip_prefix(&prefix) else { continue };
            match rest.split_once('/') {
                Some((dir, _)) => {
                    entries.entry(dir.to_string()).or_insert(ArtifactFile {
                        path: dir.to_string(),
                        is_dir: true,
                        file_size: None,
                    });
                }
                None => {
                    entries.insert(
                        rest.to_string(),
                        ArtifactFile {
                            path: rest.to_string(),
                            is_dir: false,
                            file_size: Some(listed.size),
                        },
                    );
                }
            }
        }
        Ok(entries.into_values().collect())
    }

    /// Every file under `path` (recursively), relative to it, with its key: a model directory.
    pub(crate) async fn mlflow_files_under(
        &self,
        team: &TeamRef,
        path: &str,
    ) -> Result<Vec<(String, String)>> {
        let key = self.mlflow_artifact_key(team, path).await?;
        let prefix = format!("{key}/");
        let mut out: Vec<(String, String)> = self
            .artifacts
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|l| l.key.strip_prefix(&prefix).map(|rel| (rel.to_string(), l.key.clone())))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The experiment a run belongs to, for paths built from run ids.
    pub(crate) async fn mlflow_run_experiment(
        &self,
        team: &TeamRef,
        run_id: &str,
    ) -> Result<String> {
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT experiment_id FROM mlflow_runs WHERE id = $1 AND team_id = $2",
                [run_id.into(), team.id.clone().into()],
            ))
            .await?
            .ok_or_else(|| Error::not_found("run", run_id).with_field("run_id"))?;
        col(&row, "experiment_id")
    }
}

#[cfg(test)]
mod tests {
    use super::clean_path;

    #[test]
    fn artifact_paths_stay_inside_their_root() {
        assert_eq!(
            clean_path("/1/abc/artifacts/model/MLmodel").unwrap(),
            "1/abc/artifacts/model/MLmodel"
        );
        for bad in ["", "/", "1/../2", "1//2", "1/./x", "1/.incoming-x", "1/a\\b"] {
            assert!(clean_path(bad).is_err(), "{bad}");
        }
    }
}
