//! Artifact storage: uploads are staged locally (streamed, hashed, size-limited), validated, and
//! only then published under their final key, so a half-written artifact is never visible.
//!
//! [`ArtifactStore`] is the seam for object storage: the local folder implements it here, S3 in
//! the `plinth-objects` crate, chosen by configuration; [`conformance`] is the one suite both
//! pass. Publishing creates a key only if it is absent: a version's bytes are never replaced.

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
    /// The staging folder (scratch space of this process).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

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

fn key_of(path: &Path) -> String {
    path.display().to_string()
}

/// The answer to publishing under a key that holds bytes already.
pub fn already_there(key: impl std::fmt::Display) -> Error {
    Error::new(
        plinth_api::Code::Conflict,
        format!("artifact {key} exists: a key's bytes are never replaced"),
    )
}

/// The answer to reading a key that holds nothing.
pub fn missing(key: impl std::fmt::Display) -> Error {
    Error::new(plinth_api::Code::NotFound, format!("artifact {key} is missing from the store"))
}

/// A key in a listing, and when its bytes were written (microseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub modified: i64,
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
    /// Every key under `prefix`, with when it was written (for garbage collection of
    /// unreferenced artifacts, and the prediction log's segments).
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>>;
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
                // Create if absent: a key's bytes are never replaced.
                Err(_) if dest.exists() => return Err(already_there(key_of(&dest))),
                Err(e) => {
                    // Different filesystems: copy to a temporary name beside the destination,
                    // fsync, then rename.
                    let tmp = parent.join(format!(".incoming-{}", uuid::Uuid::now_v7().simple()));
                    std::fs::copy(&e.path, &tmp)?;
                    std::fs::File::open(&tmp)?.sync_all()?;
                    // A hard link fails when the name exists (a rename would replace it).
                    let linked = std::fs::hard_link(&tmp, &dest);
                    let _ = std::fs::remove_file(&tmp);
                    if linked.is_err() && dest.exists() {
                        return Err(already_there(key_of(&dest)));
                    }
                    linked?;
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
            if e.kind() == std::io::ErrorKind::NotFound { missing(key) } else { Error::from(e) }
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

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let root = self.root.clone();
        let start = self.path(prefix.trim_end_matches('/'))?;
        tokio::task::spawn_blocking(move || -> Result<Vec<Listed>> {
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
                            let meta = entry.metadata()?;
                            let modified = meta
                                .modified()
                                .ok()
                                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                                .map_or(0, |d| d.as_micros() as i64);
                            out.push(Listed { key, size: meta.len(), modified });
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

/// The behaviour every [`ArtifactStore`] must have, as one suite its implementations run:
/// publish and read back whole (streamed), refuse to replace a key's bytes, publish a large file
/// (multipart where the store has it), list by prefix, delete, and a clear error for a key that
/// holds nothing.
#[doc(hidden)]
pub mod conformance {
    use super::*;

    async fn staged(staging: &Staging, bytes: &[u8]) -> StagedFile {
        let mut reader = bytes;
        staging.receive(&mut reader, u64::MAX).await.expect("stage")
    }

    async fn read_all(store: &dyn ArtifactStore, key: &str) -> Vec<u8> {
        let mut r = store.open(key).await.expect("open");
        let mut out = Vec::new();
        r.reader.read_to_end(&mut out).await.expect("read");
        assert_eq!(out.len() as u64, r.size, "{key}: the size announced is the size read");
        out
    }

    /// Runs the suite under `prefix` (a fresh one per run).
    pub async fn check(store: &dyn ArtifactStore, staging: &Staging, prefix: &str) {
        let key = format!("{prefix}/a/model.bin");
        store.put(&key, staged(staging, b"first bytes").await).await.expect("put");
        assert_eq!(read_all(store, &key).await, b"first bytes");
        // Create if absent: the second put is refused and the first bytes stay.
        let e = store.put(&key, staged(staging, b"other bytes").await).await.unwrap_err();
        assert_eq!(e.code, plinth_api::Code::Conflict, "{e}");
        assert_eq!(read_all(store, &key).await, b"first bytes");
        // A large file: 24 MiB of a pattern, read back in a stream.
        let big: Vec<u8> =
            (0..24 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        let big_key = format!("{prefix}/b/big.bin");
        store.put(&big_key, staged(staging, &big).await).await.expect("put a large file");
        let back = read_all(store, &big_key).await;
        assert!(back == big, "the large file reads back as written");
        // Create if absent holds for a large (multipart) put too.
        let other: Vec<u8> = big.iter().map(|b| b ^ 0x5a).collect();
        let e = store.put(&big_key, staged(staging, &other).await).await.unwrap_err();
        assert_eq!(e.code, plinth_api::Code::Conflict, "{e}");
        assert!(read_all(store, &big_key).await == big, "the first large file stays");
        let before = crate::util::now_micros() - 60_000_000;
        let listed = store.list(prefix).await.expect("list");
        assert!(
            listed.iter().all(|l| l.modified > before),
            "{listed:?} carry when they were written"
        );
        let mut keys: Vec<String> = listed.into_iter().map(|l| l.key).collect();
        keys.sort();
        assert_eq!(keys, vec![key.clone(), big_key.clone()]);
        store.delete(&big_key).await.expect("delete");
        store.delete(&big_key).await.expect("deleting twice is fine");
        let missing = format!("{prefix}/nothing/here.bin");
        let e = store.open(&missing).await.err().expect("a missing key is an error");
        assert_eq!(e.code, plinth_api::Code::NotFound, "{e}");
        assert!(e.message.contains("missing"), "{e}");
        let keys: Vec<String> =
            store.list(prefix).await.expect("list").into_iter().map(|l| l.key).collect();
        assert_eq!(keys, vec![key]);
    }

    #[cfg(test)]
    mod tests {
        #[tokio::test]
        async fn the_local_folder_passes() {
            let dir = tempfile::tempdir().unwrap();
            let store = super::LocalArtifacts::open(dir.path().join("artifacts")).unwrap();
            let staging = super::Staging::open(dir.path().join("staging")).unwrap();
            super::check(&store, &staging, "suite").await;
        }
    }
}
