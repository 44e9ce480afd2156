//! Artifact storage: uploads are staged locally (streamed, hashed, size-limited), validated, and
//! only then published under their final key, so a half-written artifact is never visible.
//!
//! [`ArtifactStore`] is the seam for object storage: the local folder implements it now, an S3
//! backend will implement the same trait and be chosen by configuration.

use std::path::{Path, PathBuf};
use std::pin::Pin;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};

/// A finished upload in the staging area: complete, hashed and fsynced. Deleted on drop unless
/// published.
pub struct StagedFile {
    path: tempfile::TempPath,
    pub sha256: String,
    pub size: u64,
}

impl StagedFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Where uploads land while they stream in.
#[derive(Clone)]
pub struct Staging {
    dir: PathBuf,
}

impl Staging {
    /// Uses (and empties) `dir`: anything there is left over from an interrupted upload.
    pub fn open(dir: PathBuf) -> Result<Staging> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(Staging { dir })
    }

    /// Streams `reader` to a staging file, hashing as it goes. More than `limit` bytes fails with
    /// `payload_too_large` and leaves nothing behind.
    pub async fn receive(
        &self,
        reader: &mut (dyn AsyncRead + Unpin + Send),
        limit: u64,
    ) -> Result<StagedFile> {
        let tmp = tempfile::Builder::new().prefix("upload-").tempfile_in(&self.dir)?;
        let (file, path) = tmp.into_parts();
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf).await.map_err(|e| {
                if e.kind() == std::io::ErrorKind::Other && e.to_string().contains("length limit") {
                    too_large(limit)
                } else {
                    Error::new(
                        plinth_api::Code::InvalidRequest,
                        format!("the upload was interrupted: {e}"),
                    )
                }
            })?;
            if n == 0 {
                break;
            }
            size += n as u64;
            if size > limit {
                return Err(too_large(limit));
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).await?;
        }
        file.sync_all().await?;
        drop(file);
        Ok(StagedFile { path, sha256: hex::encode(hasher.finalize()), size })
    }
}

fn too_large(limit: u64) -> Error {
    Error::new(
        plinth_api::Code::PayloadTooLarge,
        format!("the upload is larger than the limit of {limit} bytes"),
    )
    .with_field("artifact")
}

/// A readable artifact.
pub struct ArtifactReader {
    pub size: u64,
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
}

/// Durable storage for artifacts, addressed by key (`models/<team>/<model>/<version>/<file>`).
#[async_trait::async_trait]
pub trait ArtifactStore: Send + Sync {
    /// Publishes a staged file under `key`, atomically: readers see all of it or nothing.
    async fn put(&self, key: &str, staged: StagedFile) -> Result<()>;
    async fn open(&self, key: &str) -> Result<ArtifactReader>;
    async fn delete(&self, key: &str) -> Result<()>;
    /// Every key under `prefix` (for garbage collection of unreferenced artifacts).
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// A short description for logs, e.g. `local:/var/lib/plinth/artifacts`.
    fn describe(&self) -> String;
    /// Where the artifact is on this machine's filesystem, when the store keeps it there
    /// (readers that need random access, like Parquet's, use it in place); `None` otherwise.
    fn local_path(&self, _key: &str) -> Option<PathBuf> {
        None
    }
}

/// Artifacts in a local folder. Publishing is a rename within one filesystem, followed by an
/// fsync of the directory, so a crash leaves either the old state or the whole file.
pub struct LocalArtifacts {
    root: PathBuf,
}

impl LocalArtifacts {
    pub fn open(root: PathBuf) -> Result<LocalArtifacts> {
        std::fs::create_dir_all(&root)?;
        Ok(LocalArtifacts { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        if key.is_empty()
            || key.starts_with('/')
            || key.split('/').any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(Error::internal(format!("invalid artifact key {key:?}")));
        }
        Ok(self.root.join(key))
    }
}

#[async_trait::async_trait]
impl ArtifactStore for LocalArtifacts {
    async fn put(&self, key: &str, staged: StagedFile) -> Result<()> {
        let dest = self.path(key)?;
        let parent = dest.parent().expect("keys have a directory").to_path_buf();
        tokio::task::spawn_blocking(move || -> Result<()> {
            std::fs::create_dir_all(&parent)?;
            match staged.path.persist_noclobber(&dest) {
                Ok(()) => {}
                Err(e) => {
                    // Different filesystems: copy to a temporary name beside the destination,
                    // fsync, then rename.
                    let tmp = parent.join(format!(".incoming-{}", uuid::Uuid::now_v7().simple()));
                    std::fs::copy(&e.path, &tmp)?;
                    std::fs::File::open(&tmp)?.sync_all()?;
                    std::fs::rename(&tmp, &dest)?;
                }
            }
            std::fs::File::open(&parent)?.sync_all()?;
            Ok(())
        })
        .await
        .map_err(Error::internal)?
    }

    async fn open(&self, key: &str) -> Result<ArtifactReader> {
        let path = self.path(key)?;
        let file = tokio::fs::File::open(&path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::internal(format!("artifact {key} is missing from the store"))
            } else {
                Error::from(e)
            }
        })?;
        let size = file.metadata().await?.len();
        Ok(ArtifactReader { size, reader: Box::pin(file) })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let root = self.root.clone();
        let start = self.path(prefix.trim_end_matches('/'))?;
        tokio::task::spawn_blocking(move || -> Result<Vec<String>> {
            let mut out = Vec::new();
            let mut stack = vec![start];
            while let Some(dir) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                };
                for entry in entries {
                    let entry = entry?;
                    let path = entry.path();
                    if entry.file_type()?.is_dir() {
                        stack.push(path);
                    } else if let Ok(rel) = path.strip_prefix(&root) {
                        let key = rel.to_string_lossy().replace('\\', "/");
                        if !key.rsplit('/').next().unwrap_or("").starts_with(".incoming-") {
                            out.push(key);
                        }
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(Error::internal)?
    }

    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path(key).ok()
    }
}
