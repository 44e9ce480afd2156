//! The HTTP client behind every CLI subcommand, and the profile file that remembers the server
//! URL and API key (`plinth login`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use plinth_api::ErrorBody;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

/// A failure the server reported, with its catalogue code.
#[derive(Debug)]
pub struct ServerError {
    pub status: u16,
    pub body: ErrorBody,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.body.error.code, self.status, self.body.error.message)
    }
}

impl std::error::Error for ServerError {}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Profile {
    pub url: String,
    pub key: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Profiles {
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// `$PLINTH_PROFILES_FILE`, else `$XDG_CONFIG_HOME/plinth/profiles.toml`, else
/// `~/.config/plinth/profiles.toml`.
pub fn profiles_path() -> PathBuf {
    if let Ok(p) = std::env::var("PLINTH_PROFILES_FILE") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("plinth").join("profiles.toml")
}

pub fn read_profiles(path: &Path) -> Result<Profiles> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text)
            .with_context(|| format!("{} is not a valid profile file", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Profiles::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

pub fn write_profiles(path: &Path, profiles: &Profiles) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = toml::to_string(profiles)?;
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    pub fn new(url: &str, key: &str) -> Result<Client> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            let shown = crate::config::redact_url(url);
            anyhow::bail!(
                "the Plinth server's URL must start with http:// or https://, not '{shown}'"
            );
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("plinth-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client { http, base: url.trim_end_matches('/').to_string(), key: key.to_string() })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}{}", self.base, plinth_api::API_PREFIX, path)
    }

    async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> Result<T> {
        let status = response.status();
        let bytes = response.bytes().await?;
        if status.is_success() {
            let body = if bytes.is_empty() { b"null".as_slice() } else { &bytes[..] };
            return serde_json::from_slice(body).with_context(|| {
                format!("unexpected answer from the server: {}", String::from_utf8_lossy(&bytes))
            });
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(ServerError { status: status.as_u16(), body }.into()),
            Err(_) => {
                Err(anyhow!("the server answered {status}: {}", String::from_utf8_lossy(&bytes)))
            }
        }
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let response =
            req.bearer_auth(&self.key).send().await.with_context(|| unreachable(&self.base))?;
        Self::decode(response).await
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T> {
        self.send(self.http.get(self.url(path)).query(query)).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn put<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.send(self.http.put(self.url(path)).json(body)).await
    }

    pub async fn patch<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.send(self.http.patch(self.url(path)).json(body)).await
    }

    pub async fn delete_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T> {
        self.send(self.http.delete(self.url(path)).json(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.http.delete(self.url(path))).await
    }

    /// Uploads a file as the `artifact` part after a JSON `metadata` part, with a progress bar.
    pub async fn upload<T: DeserializeOwned>(
        &self,
        path: &str,
        metadata: &serde_json::Value,
        file: &Path,
    ) -> Result<T> {
        let (size, body, bar) = file_body(file).await?;
        let filename = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "model".into());
        let part = reqwest::multipart::Part::stream_with_length(body, size)
            .file_name(filename)
            .mime_str("application/octet-stream")?;
        let meta =
            reqwest::multipart::Part::text(metadata.to_string()).mime_str("application/json")?;
        let form = reqwest::multipart::Form::new().part("metadata", meta).part("artifact", part);
        let result = self.send(self.http.post(self.url(path)).multipart(form)).await;
        bar.finish_and_clear();
        result
    }

    /// Uploads a file as the raw request body, with a progress bar.
    pub async fn upload_raw<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        file: &Path,
    ) -> Result<T> {
        let (size, body, bar) = file_body(file).await?;
        let req = self
            .http
            .post(self.url(path))
            .query(query)
            .header("content-type", "application/octet-stream")
            .header("content-length", size)
            .body(body);
        let result = self.send(req).await;
        bar.finish_and_clear();
        result
    }

    /// POSTs JSON and returns the raw answer (status, headers, body) of a success.
    /// POSTs JSON and answers the successful response unread (for streamed answers); the
    /// request asks for trailers.
    pub async fn post_streamed(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<reqwest::Response> {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.key)
            .header(reqwest::header::TE, "trailers")
            .json(body)
            .send()
            .await
            .with_context(|| unreachable(&self.base))?;
        let status = response.status();
        if !status.is_success() {
            Self::decode::<serde_json::Value>(response).await?;
            return Err(anyhow!("the server answered {status}"));
        }
        Ok(response)
    }

    /// Fetches a text document (a report).
    pub async fn get_text(&self, path: &str) -> Result<String> {
        let response = self.http.get(self.url(path)).bearer_auth(&self.key).send().await?;
        if !response.status().is_success() {
            return Self::decode::<serde_json::Value>(response).await.map(|_| String::new());
        }
        Ok(response.text().await?)
    }

    /// Downloads to `dest` with a progress bar; the file appears only once complete.
    pub async fn download(&self, path: &str, dest: &Path) -> Result<(u64, Option<String>)> {
        let response = self.http.get(self.url(path)).bearer_auth(&self.key).send().await?;
        if !response.status().is_success() {
            return Self::decode::<serde_json::Value>(response).await.map(|_| (0, None));
        }
        let size = response.content_length().unwrap_or(0);
        let sha = response
            .headers()
            .get("x-plinth-sha256")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bar = progress_bar(size, "downloading");
        let tmp = dest.with_extension("part");
        let mut out = tokio::fs::File::create(&tmp)
            .await
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        let mut stream = response.bytes_stream();
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            out.write_all(&chunk).await?;
            written += chunk.len() as u64;
            bar.set_position(written);
        }
        out.sync_all().await?;
        drop(out);
        tokio::fs::rename(&tmp, dest).await?;
        bar.finish_and_clear();
        Ok((written, sha))
    }
}

/// A file as a streamed request body that moves a progress bar: (size, body, bar).
async fn file_body(file: &Path) -> Result<(u64, reqwest::Body, ProgressBar)> {
    let f = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    let size = f.metadata().await?.len();
    let bar = progress_bar(size, "uploading");
    let moved = bar.clone();
    let stream = tokio_util::io::ReaderStream::new(f).inspect(move |chunk| {
        if let Ok(c) = chunk {
            moved.inc(c.len() as u64);
        }
    });
    Ok((size, reqwest::Body::wrap_stream(stream), bar))
}

pub(crate) fn progress_bar(len: u64, label: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(label);
    bar
}

/// A bar for a job the server runs (an evaluation, a materialization): the job's own progress
/// in percent and its state, not bytes.
pub(crate) fn job_bar(label: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(100), indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos:>3} % {msg}, {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(label);
    bar.set_message("queued");
    bar
}

/// What to say when no server answers: most often it is not running, or not at that address.
fn unreachable(base: &str) -> String {
    format!(
        "cannot reach the Plinth server at {base}: is `plinth serve` running there? (the address comes from --url, PLINTH_URL, or the profile saved by `plinth login`)"
    )
}
