//! Artifacts and datasets in S3-compatible object storage, through the `object_store` crate: the
//! second [`ArtifactStore`] of Plinth's core, chosen by configuration when replicas share one
//! store (the local folder stays the embedded default).
//!
//! - **Create if absent.** A key's bytes are never replaced: files up to [`SINGLE_PUT`] are put
//!   with `If-None-Match: *`; larger ones are uploaded in parts to a key of their own, then
//!   copied under their final key by a multipart copy completed with `If-None-Match: *`, and the
//!   uploaded copy deleted.
//! - **Streaming reads**: a reader over the object's byte stream, never the whole object.
//!
//! Kept in its own crate: the S3 client (with its XML, signing and HTTP stack) is not the core's.

use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, S3CopyIfNotExists};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, WriteMultipart};
use plinth_core::Error;
use plinth_core::store::artifacts::{
    ArtifactReader, ArtifactStore, Listed, StagedFile, already_there, missing,
};
use tokio::io::AsyncReadExt;

/// Files up to this size are put in one request; larger ones in parts.
pub const SINGLE_PUT: u64 = 16 * 1024 * 1024;

/// The size of each part of a multipart upload.
const PART: usize = 8 * 1024 * 1024;

/// Where the objects are and how to reach them.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// `s3://bucket` or `s3://bucket/prefix`.
    pub url: String,
    /// The S3 API's address, for stores other than AWS (MinIO, moto, Ceph): `http://host:port`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Credentials; when absent, the usual `AWS_*` environment variables and instance roles.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

/// Artifacts in an S3 bucket, under a prefix.
pub struct S3Artifacts {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    describe: String,
}

fn internal(e: object_store::Error) -> Error {
    Error::internal(e)
}

impl S3Artifacts {
    pub fn open(opts: &S3Options) -> Result<S3Artifacts, String> {
        let rest = opts
            .url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("'{}' is not an s3://bucket[/prefix] URL", opts.url))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("'{}' names no bucket", opts.url));
        }
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_copy_if_not_exists(S3CopyIfNotExists::Multipart);
        if let Some(endpoint) = &opts.endpoint {
            b = b.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(region) = &opts.region {
            b = b.with_region(region);
        }
        if let (Some(id), Some(secret)) = (&opts.access_key_id, &opts.secret_access_key) {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        let store = b.build().map_err(|e| format!("cannot open the object store: {e}"))?;
        Ok(S3Artifacts {
            store: Arc::new(store),
            prefix: prefix.trim_matches('/').to_string(),
            describe: format!("s3:{}", opts.url),
        })
    }

    fn path(&self, key: &str) -> Result<Path, Error> {
        if key.is_empty()
            || key.starts_with('/')
            || key.split('/').any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(Error::internal(format!("invalid artifact key {key:?}")));
        }
        let full =
            if self.prefix.is_empty() { key.to_string() } else { format!("{}/{key}", self.prefix) };
        Path::parse(full).map_err(|e| Error::internal(format!("invalid artifact key {key:?}: {e}")))
    }

    /// Uploads a large file in parts under a key of its own, then copies it under `dest` only if
    /// `dest` is absent.
    async fn put_in_parts(&self, key: &str, dest: &Path, staged: &StagedFile) -> Result<(), Error> {
        let upload = self.path(&format!(".incoming/{}", uuid::Uuid::now_v7().simple()))?;
        let mut file = tokio::fs::File::open(staged.path()).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(
            self.store.put_multipart(&upload).await.map_err(internal)?,
            PART,
        );
        let mut buf = vec![0u8; PART];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            writer.wait_for_capacity(4).await.map_err(internal)?;
            writer.write(&buf[..n]);
        }
        writer.finish().await.map_err(internal)?;
        let copied = self.store.copy_if_not_exists(&upload, dest).await;
        let _ = self.store.delete(&upload).await;
        match copied {
            Ok(()) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(already_there(key)),
            Err(e) => Err(internal(e)),
        }
    }
}

#[async_trait::async_trait]
impl ArtifactStore for S3Artifacts {
    async fn put(&self, key: &str, staged: StagedFile) -> plinth_core::Result<()> {
        let dest = self.path(key)?;
        if staged.size > SINGLE_PUT {
            return self.put_in_parts(key, &dest, &staged).await;
        }
        let bytes = tokio::fs::read(staged.path()).await?;
        let opts = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        match self.store.put_opts(&dest, bytes.into(), opts).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(already_there(key)),
            Err(e) => Err(internal(e)),
        }
    }

    async fn open(&self, key: &str) -> plinth_core::Result<ArtifactReader> {
        let got = match self.store.get(&self.path(key)?).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Err(missing(key)),
            Err(e) => return Err(internal(e)),
        };
        let size = got.meta.size;
        let stream = got.into_stream().map_err(std::io::Error::other);
        Ok(ArtifactReader { size, reader: Box::pin(tokio_util::io::StreamReader::new(stream)) })
    }

    async fn delete(&self, key: &str) -> plinth_core::Result<()> {
        match self.store.delete(&self.path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(internal(e)),
        }
    }

    async fn list(&self, prefix: &str) -> plinth_core::Result<Vec<Listed>> {
        let at = self.path(prefix.trim_end_matches('/'))?;
        let strip =
            if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
        let mut out = Vec::new();
        let mut listing = self.store.list(Some(&at));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(internal)?;
            let location = meta.location.to_string();
            if let Some(key) = location.strip_prefix(&strip)
                && !key.starts_with(".incoming/")
            {
                let modified = meta.last_modified.timestamp_micros();
                out.push(Listed { key: key.to_string(), size: meta.size, modified });
            }
        }
        Ok(out)
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}
