//! Datasets: a team's named tables, each upload a new immutable version. The uploaded bytes are
//! kept as they came (content-hashed, in the artifact store); the schema, row count and column
//! profile are read once, at upload, and stored with the version.

use plinth_api::Code;
use plinth_api::data::{Dataset, DatasetRef, DatasetVersion, UploadDataset};
use plinth_api::identity::TeamRole;
use serde_json::json;
use sqlx::any::AnyRow;

use super::{FileFormat, LocalFile, Table};
use crate::Plinth;
use crate::audit::{self, Target};
use crate::auth::{Principal, TeamRef};
use crate::error::{Error, Result};
use crate::store::artifacts::StagedFile;
use crate::store::{Sql, col};
use crate::util::{check_name, check_text, micros_to_time, new_id, now_micros};

const VERSION_SELECT: &str = "SELECT v.*, d.name AS dataset_name, t.name AS team_name, COALESCE(p.name, v.created_by) AS created_by_name
    FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id JOIN teams t ON t.id = d.team_id
    LEFT JOIN principals p ON p.id = v.created_by";

fn version_from_row(row: &AnyRow) -> Result<DatasetVersion> {
    Ok(DatasetVersion {
        team: col(row, "team_name")?,
        dataset: col(row, "dataset_name")?,
        version: col::<i64>(row, "version")? as u32,
        format: col(row, "format")?,
        sha256: col(row, "sha256")?,
        size_bytes: col::<i64>(row, "size_bytes")? as u64,
        rows: col::<i64>(row, "row_count")? as u64,
        columns: serde_json::from_str(&col::<String>(row, "profile")?)?,
        source: col(row, "source")?,
        created_at: micros_to_time(col(row, "created_at")?),
        created_by: col(row, "created_by_name")?,
    })
}

/// A dataset version found for a caller, with its row id.
pub(crate) struct ResolvedVersion {
    pub id: String,
    pub info: DatasetVersion,
}

impl Plinth {
    /// Stores an uploaded file as the next version of dataset `name` (created on first upload).
    /// The file is read completely first: a file that is not a readable table stores nothing.
    pub async fn upload_dataset(
        &self,
        who: &Principal,
        team: &str,
        name: &str,
        req: UploadDataset,
        staged: StagedFile,
    ) -> Result<DatasetVersion> {
        let team = self.team_ref(who, team).await?;
        who.require(&team, TeamRole::Developer, "uploading a dataset")?;
        check_name("name", name)?;
        self.check_storage_quota(&team.id, staged.size).await?;
        let description = req.description.unwrap_or_default();
        check_text("description", &description, 10_000)?;
        let source = req.source.unwrap_or_else(|| "upload".to_string());
        check_text("source", &source, 1000)?;
        let path = staged.path().to_path_buf();
        let format = match req.format.as_deref() {
            None => {
                let mut head = [0u8; 4];
                let n = tokio::io::AsyncReadExt::read(
                    &mut tokio::fs::File::open(&path).await?,
                    &mut head,
                )
                .await?;
                FileFormat::detect(&head[..n])
            }
            Some(f) => FileFormat::parse(f)
                .ok_or_else(|| Error::invalid("format", "must be csv or parquet"))?,
        };
        // Profiled as it is read, one batch at a time: a long file is never held whole.
        let tables = self.tables.clone();
        let (rows, profile) = tokio::task::spawn_blocking(move || {
            let mut profiler = super::Profiler::default();
            tables.scan(&path, format, None, &mut |t| profiler.add(&t))?;
            Ok::<_, String>((profiler.rows(), profiler.finish()))
        })
        .await
        .map_err(Error::internal)?
        .map_err(|e| Error::new(Code::InvalidData, e).with_field("file"))?;

        let existing = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT id FROM datasets WHERE team_id = $1 AND name = $2",
                [team.id.clone().into(), name.into()],
            ))
            .await?;
        let now = now_micros();
        let dataset_id = match &existing {
            Some(r) => col::<String>(r, "id")?,
            None => new_id("ds"),
        };
        let version_id = new_id("dsv");
        let key = format!("datasets/{}/{dataset_id}/{version_id}.{}", team.id, format.as_str());
        let (sha256, size) = (staged.sha256.clone(), staged.size);
        self.artifacts.put(&key, staged).await?;
        let result: Result<()> = async {
            let mut tx = self.db.begin().await?;
            if existing.is_none() {
                Sql::with(
                    "INSERT INTO datasets (id, team_id, name, description, latest_version, created_at, created_by) VALUES ($1, $2, $3, $4, 0, $5, $6)",
                    [dataset_id.clone().into(), team.id.clone().into(), name.into(), description.clone().into(), now.into(), who.id.clone().into()],
                )
                .execute_unique(&mut tx, || Error::conflict("the dataset was created concurrently; retry"))
                .await?;
            }
            let row = Sql::with(
                "UPDATE datasets SET latest_version = latest_version + 1 WHERE id = $1 RETURNING latest_version",
                [dataset_id.clone().into()],
            )
            .fetch_optional_tx(&mut tx)
            .await?
            .ok_or_else(|| Error::internal("dataset vanished"))?;
            let version: i64 = col(&row, "latest_version")?;
            Sql::with(
                "INSERT INTO dataset_versions (id, dataset_id, version, format, artifact_key, sha256, size_bytes, row_count, profile, source, created_at, created_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                [
                    version_id.clone().into(),
                    dataset_id.clone().into(),
                    version.into(),
                    format.as_str().into(),
                    key.clone().into(),
                    sha256.clone().into(),
                    (size as i64).into(),
                    (rows as i64).into(),
                    serde_json::to_string(&profile)?.into(),
                    source.clone().into(),
                    now.into(),
                    who.id.clone().into(),
                ],
            )
            .execute(&mut tx)
            .await?;
            let object = format!("{name}@{version}");
            let t = Target { team_id: Some(&team.id), object_type: "dataset_version", object_id: &version_id, object_name: &object };
            audit::record(&mut tx, who, "dataset_version.create", t, json!({"sha256": sha256, "rows": rows, "format": format.as_str(), "source": source})).await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = result {
            if let Err(d) = self.artifacts.delete(&key).await {
                tracing::warn!(error = %d, key, "could not delete the file of a failed dataset upload");
            }
            return Err(e);
        }
        let row = self
            .db
            .fetch_optional(&Sql::with(
                &format!("{VERSION_SELECT} WHERE v.id = $1"),
                [version_id.into()],
            ))
            .await?
            .ok_or_else(|| Error::internal("dataset version vanished"))?;
        version_from_row(&row)
    }

    pub(crate) async fn read_table(&self, bytes: Vec<u8>, format: FileFormat) -> Result<Table> {
        let reader = self.tables.clone();
        tokio::task::spawn_blocking(move || reader.read(bytes, format))
            .await
            .map_err(Error::internal)?
            .map_err(|e| Error::new(Code::InvalidData, e).with_field("file"))
    }

    pub async fn list_datasets(&self, who: &Principal, team: &str) -> Result<Vec<Dataset>> {
        let team = self.team_ref(who, team).await?;
        let rows = self
            .db
            .fetch_all(&Sql::with(
                "SELECT d.*, COALESCE(p.name, d.created_by) AS created_by_name FROM datasets d
                 LEFT JOIN principals p ON p.id = d.created_by WHERE d.team_id = $1 ORDER BY d.name",
                [team.id.clone().into()],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Dataset {
                    id: col(r, "id")?,
                    team: team.name.clone(),
                    name: col(r, "name")?,
                    description: col(r, "description")?,
                    latest_version: col::<i64>(r, "latest_version")? as u32,
                    created_at: micros_to_time(col(r, "created_at")?),
                    created_by: col(r, "created_by_name")?,
                })
            })
            .collect()
    }

    pub async fn list_dataset_versions(
        &self,
        who: &Principal,
        team: &str,
        name: &str,
    ) -> Result<Vec<DatasetVersion>> {
        let team = self.team_ref(who, team).await?;
        let rows = self
            .db
            .fetch_all(&Sql::with(
                &format!(
                    "{VERSION_SELECT} WHERE d.team_id = $1 AND d.name = $2 ORDER BY v.version"
                ),
                [team.id.clone().into(), name.into()],
            ))
            .await?;
        if rows.is_empty() {
            return Err(Error::not_found("dataset", format!("{}/{name}", team.name)));
        }
        rows.iter().map(version_from_row).collect()
    }

    pub async fn get_dataset_version(
        &self,
        who: &Principal,
        team: &str,
        r: &DatasetRef,
    ) -> Result<DatasetVersion> {
        let team = self.team_ref(who, team).await?;
        Ok(self.resolve_dataset(&team, r, "dataset").await?.info)
    }

    /// Finds a dataset version of a team (the latest when none is given).
    pub(crate) async fn resolve_dataset(
        &self,
        team: &TeamRef,
        r: &DatasetRef,
        field: &str,
    ) -> Result<ResolvedVersion> {
        let mut sql = Sql::new(&format!("{VERSION_SELECT} WHERE d.team_id = "));
        sql.bind(team.id.clone()).push(" AND d.name = ").bind(r.name.clone());
        match r.version {
            Some(v) => {
                sql.push(" AND v.version = ").bind(i64::from(v));
            }
            None => {
                sql.push(" AND v.version = d.latest_version");
            }
        }
        let row = self.db.fetch_optional(&sql).await?.ok_or_else(|| {
            let what = match r.version {
                Some(v) => format!("{}/{}@{v}", team.name, r.name),
                None => format!("{}/{}", team.name, r.name),
            };
            Error::not_found("dataset", what).with_field(field)
        })?;
        Ok(ResolvedVersion { id: col(&row, "id")?, info: version_from_row(&row)? })
    }

    /// A dataset version's artifact key and file format.
    pub(crate) async fn artifact_of(&self, version_id: &str) -> Result<(String, FileFormat)> {
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT artifact_key, format FROM dataset_versions WHERE id = $1",
                [version_id.into()],
            ))
            .await?
            .ok_or_else(|| Error::internal("dataset version vanished"))?;
        let format = FileFormat::parse(&col::<String>(&row, "format")?).unwrap_or(FileFormat::Csv);
        Ok((col(&row, "artifact_key")?, format))
    }

    /// The stored bytes of a dataset version.
    pub(crate) async fn dataset_bytes(&self, version_id: &str) -> Result<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let mut r = self.artifacts.open(&self.artifact_of(version_id).await?.0).await?;
        let mut b = Vec::new();
        r.reader.read_to_end(&mut b).await?;
        Ok(b)
    }

    /// A dataset version as a file on this machine, for readers that scan it instead of
    /// holding it: the artifact itself when the store is local, else a copy in staging.
    pub(crate) async fn dataset_file(&self, version_id: &str) -> Result<LocalFile> {
        let (key, format) = self.artifact_of(version_id).await?;
        if let Some(path) = self.artifacts.local_path(&key) {
            return Ok(LocalFile::new(path, format));
        }
        let mut r = self.artifacts.open(&key).await?;
        let copy = self.staging().receive(&mut r.reader, u64::MAX).await?;
        Ok(LocalFile::staged(copy, format))
    }
}
