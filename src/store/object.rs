//! An object store bucket (S3 or GCS, through the `object_store` crate) as
//! the output: credentials and endpoints from each cloud's standard
//! environment variables, overridden by the job file's `[storage]` table.
//!
//! A partition file is uploaded to its final key as a multipart upload in
//! parts of 8 MiB (no local copy of a whole file) and left uncompleted;
//! publishing completes it, which replaces the object atomically. Until
//! then the upload is recorded in a small manifest object under
//! `.skipflow/staging/<process>/uploads/`, so a run that died is cleaned
//! up by the next one (its uploads aborted); a failed run aborts its own.

use super::{StagedFile, PART_FILE};
use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use parquet::file::metadata::{FooterTail, ParquetMetaData, ParquetMetaDataReader};
use std::collections::BTreeMap;
use std::str::FromStr;

/// Part size of multipart uploads (S3 wants at least 5 MiB but for the last).
const PART_BYTES: usize = 8 << 20;

/// The part size: `PART_BYTES`, or `SKIPFLOW_PART_BYTES` (a test hook that
/// sends small files through the multipart path).
fn part_bytes() -> usize {
    static SIZE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        std::env::var("SKIPFLOW_PART_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(PART_BYTES)
    })
}

enum Client {
    S3(object_store::aws::AmazonS3),
    Gcs(object_store::gcp::GoogleCloudStorage),
}

pub(super) struct Bucket {
    pub url: String,
    client: Client,
    prefix: String,
    rt: tokio::runtime::Runtime,
}

fn bad(msg: String) -> anyhow::Error {
    crate::error::bad(msg)
}

impl Bucket {
    /// Opens `scheme://rest` (`rest` = BUCKET/PREFIX) and checks it is reachable.
    pub(super) fn open(scheme: &str, rest: &str, url: &str, settings: &BTreeMap<String, String>) -> Result<Bucket> {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad(format!("{url}: no bucket name; write {scheme}://BUCKET/PREFIX")));
        }
        let settings = settings.iter().filter(|(k, _)| k.as_str() != "lease");
        let client = match scheme {
            "s3" | "s3a" => {
                let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
                for (k, v) in settings {
                    let key = object_store::aws::AmazonS3ConfigKey::from_str(k)
                        .map_err(|_| bad(format!("[storage] {k:?} is not an S3 setting (e.g. endpoint, region, access_key_id, allow_http)")))?;
                    b = b.with_config(key, v);
                }
                Client::S3(b.build().map_err(|e| bad(format!("{url}: {e}")))?)
            }
            "gs" => {
                let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
                for (k, v) in settings {
                    let key = object_store::gcp::GoogleConfigKey::from_str(k)
                        .map_err(|_| bad(format!("[storage] {k:?} is not a GCS setting (e.g. service_account, service_account_key)")))?;
                    b = b.with_config(key, v);
                }
                Client::Gcs(b.build().map_err(|e| bad(format!("{url}: {e}")))?)
            }
            other => {
                return Err(bad(format!(
                    "unsupported output URL scheme {other}:// in {url}; use a local path, s3://BUCKET/PREFIX or gs://BUCKET/PREFIX"
                )))
            }
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("skipflow-store")
            .enable_all()
            .build()
            .context("starting the object store client")?;
        let b = Bucket {
            url: url.to_string(),
            client,
            prefix: prefix.trim_matches('/').to_string(),
            rt,
        };
        b.check(bucket)?;
        Ok(b)
    }

    /// Lists the root once: a missing bucket or missing credentials are
    /// usage errors (exit 2), anything else says it cannot reach the store.
    fn check(&self, bucket: &str) -> Result<()> {
        let prefix = self.path("");
        let Err(e) = self.rt.block_on(self.store().list_with_delimiter(Some(&prefix))) else {
            return Ok(());
        };
        let text = e.to_string().replace(['\n', '\r'], " ");
        let denied = matches!(
            e,
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
        );
        if text.contains("NoSuchBucket") || matches!(e, object_store::Error::NotFound { .. }) {
            return Err(bad(format!(
                "{}: bucket {bucket} does not exist; create it, or check --output and the endpoint",
                self.url
            )));
        }
        // Without credentials the client asks the instance metadata service.
        let no_credentials = text.contains("169.254.169.254") || text.to_ascii_lowercase().contains("credential");
        if denied || no_credentials {
            let how = match self.client {
                Client::S3(_) => "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                Client::Gcs(_) => "GOOGLE_SERVICE_ACCOUNT (a service account key file)",
            };
            return Err(bad(format!(
                "{}: no credentials or no access ({}); set {how}, or the job file's [storage] table",
                self.url,
                short(&text)
            )));
        }
        Err(anyhow!("cannot reach {}: {}", self.url, short(&text)))
    }

    fn store(&self) -> &dyn ObjectStore {
        match &self.client {
            Client::S3(s) => s,
            Client::Gcs(s) => s,
        }
    }

    fn multipart(&self) -> &dyn MultipartStore {
        match &self.client {
            Client::S3(s) => s,
            Client::Gcs(s) => s,
        }
    }

    /// The object path of a key under the prefix.
    fn path(&self, key: &str) -> ObjectPath {
        let key = key.trim_matches('/');
        match (self.prefix.is_empty(), key.is_empty()) {
            (true, _) => ObjectPath::from(key),
            (false, true) => ObjectPath::from(self.prefix.as_str()),
            (false, false) => ObjectPath::from(format!("{}/{key}", self.prefix)),
        }
    }

    pub(super) fn read(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.read_versioned(key)?.map(|(b, _)| b))
    }

    /// The bytes of `key` and their version (for a conditional update).
    pub(super) fn read_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, UpdateVersion)>> {
        let path = self.path(key);
        let got = self.rt.block_on(async {
            let r = self.store().get_opts(&path, Default::default()).await?;
            let v = UpdateVersion {
                e_tag: r.meta.e_tag.clone(),
                version: r.meta.version.clone(),
            };
            Ok::<_, object_store::Error>((r.bytes().await?, v))
        });
        match got {
            Ok((b, v)) => Ok(Some((b.to_vec(), v))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(anyhow!("reading {}/{key}: {e}", self.url)),
        }
    }

    pub(super) fn write(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.put(key, bytes, PutMode::Overwrite)
            .map(|_| ())
            .map_err(|e| anyhow!("writing {}/{key}: {e}", self.url))
    }

    /// A put with `mode`: the new version, or the store's refusal.
    pub(super) fn put(&self, key: &str, bytes: &[u8], mode: PutMode) -> Result<UpdateVersion, object_store::Error> {
        let path = self.path(key);
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        let payload = PutPayload::from(Bytes::copy_from_slice(bytes));
        let r = self.rt.block_on(self.store().put_opts(&path, payload, opts))?;
        Ok(UpdateVersion {
            e_tag: r.e_tag,
            version: r.version,
        })
    }

    pub(super) fn delete(&self, key: &str) -> Result<()> {
        match self.rt.block_on(self.store().delete(&self.path(key))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(anyhow!("deleting {}/{key}: {e}", self.url)),
        }
    }

    /// One level of listing under `key`: its "directories" and objects.
    fn list_level(&self, key: &str) -> Result<object_store::ListResult> {
        self.rt
            .block_on(self.store().list_with_delimiter(Some(&self.path(key))))
            .map_err(|e| anyhow!("listing {}/{key}: {e}", self.url))
    }

    /// Names of the "directories" directly under `key`.
    pub(super) fn list_dirs(&self, key: &str) -> Result<Vec<String>> {
        let r = self.list_level(key)?;
        Ok(r.common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect())
    }

    /// Names of the objects directly under `key`.
    pub(super) fn list_files(&self, key: &str) -> Result<Vec<String>> {
        let r = self.list_level(key)?;
        Ok(r.objects
            .iter()
            .filter_map(|m| m.location.filename().map(str::to_string))
            .collect())
    }

    /// Every object under `key`, with its key relative to the root.
    fn list_objects(&self, key: &str) -> Result<Vec<(String, object_store::ObjectMeta)>> {
        let dir = self.path(key);
        let metas: Vec<object_store::ObjectMeta> = self
            .rt
            .block_on(self.store().list(Some(&dir)).try_collect())
            .map_err(|e| anyhow!("listing {}/{key}: {e}", self.url))?;
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        Ok(metas
            .into_iter()
            .map(|m| (m.location.as_ref()[strip..].to_string(), m))
            .collect())
    }

    /// Keys (relative to the root) of every object under `key`.
    fn list_keys(&self, key: &str) -> Result<Vec<String>> {
        Ok(self.list_objects(key)?.into_iter().map(|(k, _)| k).collect())
    }

    /// The footers of a partition's data files, fetched by ranges (the last
    /// 8 bytes, then the metadata), not whole objects: (key, size, metadata).
    pub(super) fn footers(&self, dir: &str) -> Result<Vec<(String, u64, ParquetMetaData)>> {
        let mut files: Vec<(String, object_store::ObjectMeta)> = self
            .list_objects(dir)?
            .into_iter()
            .filter(|(k, _)| k.ends_with(".parquet"))
            .collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::new();
        for (key, m) in files {
            let what = || format!("reading the footer of {}/{key}", self.url);
            let (size, at) = (m.size, &m.location);
            let tail = self
                .rt
                .block_on(self.store().get_range(at, size.saturating_sub(8)..size));
            let tail: [u8; 8] = tail.with_context(what)?.as_ref().try_into().with_context(what)?;
            let len = FooterTail::try_new(&tail).with_context(what)?.metadata_length() as u64;
            let start = size.checked_sub(8 + len).with_context(what)?;
            let buf = self
                .rt
                .block_on(self.store().get_range(at, start..size - 8))
                .with_context(what)?;
            let meta = ParquetMetaDataReader::decode_metadata(&buf).with_context(what)?;
            out.push((key, size, meta));
        }
        Ok(out)
    }

    pub(super) fn read_partition(&self, key: &str, columns: Option<&[&str]>) -> Result<Vec<arrow_array::RecordBatch>> {
        let mut files: Vec<String> = self
            .list_keys(key)?
            .into_iter()
            .filter(|k| k.ends_with(".parquet"))
            .collect();
        files.sort();
        let mut batches = Vec::new();
        for f in files {
            let Some(bytes) = self.read(&f)? else { continue };
            let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes))
                .with_context(|| format!("reading {}/{f}", self.url))?;
            let reader = super::project(builder, columns).with_batch_size(64 * 1024).build()?;
            for b in reader {
                batches.push(b.with_context(|| format!("reading {}/{f}", self.url))?);
            }
        }
        Ok(batches)
    }

    /// Makes a staged partition file visible under its key, replacing the
    /// old object at once: an upload is completed, a staged object copied
    /// (a copy is atomic per object). `_SUCCESS` is taken away first when the
    /// partition is not final, or added after when it is.
    pub(super) fn publish(&self, dir: &str, file: &StagedFile, success: bool) -> Result<()> {
        let marker = format!("{dir}/_SUCCESS");
        if !success {
            self.delete(&marker)?;
        }
        match file {
            StagedFile::Upload {
                key,
                id,
                parts,
                manifest,
            } => {
                let parts: Vec<PartId> = parts.iter().map(|p| PartId { content_id: p.clone() }).collect();
                self.rt
                    .block_on(self.multipart().complete_multipart(&self.path(key), id, parts))
                    .map_err(|e| anyhow!("publishing {}/{key}: {e}", self.url))?;
                self.delete(manifest)?;
            }
            StagedFile::Object { staged, key } => {
                self.rt
                    .block_on(self.store().copy(&self.path(staged), &self.path(key)))
                    .map_err(|e| anyhow!("publishing {}/{key}: {e}", self.url))?;
                self.delete(staged)?;
            }
            _ => anyhow::bail!("not an object-store staged file"),
        }
        // Any other data file in the partition would be read along with ours.
        for other in self.list_keys(dir)? {
            if other.ends_with(".parquet") && !other.ends_with(&format!("/{PART_FILE}")) {
                self.delete(&other)?;
            }
        }
        if success {
            self.write(&marker, b"")?;
        }
        Ok(())
    }

    /// Deletes every object of a partition; whether there were any.
    pub(super) fn remove(&self, dir: &str) -> Result<bool> {
        let keys = self.list_keys(dir)?;
        // The data file first: a reader never sees a partition without it but with a marker.
        let (data, rest): (Vec<_>, Vec<_>) = keys.iter().partition(|k| k.ends_with(".parquet"));
        for k in data.into_iter().chain(rest) {
            self.delete(k)?;
        }
        Ok(!keys.is_empty())
    }

    /// Removes what runs of process `own` staged and never published (they
    /// died): aborts their recorded uploads and deletes their staged objects.
    pub(super) fn clean_staging(&self, own: &str) -> Result<()> {
        let dir = format!(".skipflow/staging/{own}");
        for m in self.list_keys(&format!("{dir}/uploads"))? {
            let record = self
                .read(&m)?
                .and_then(|b| serde_json::from_slice::<(String, Option<String>)>(&b).ok());
            match record {
                Some((key, Some(id))) => {
                    let _ = self
                        .rt
                        .block_on(self.multipart().abort_multipart(&self.path(&key), &id));
                }
                Some((key, None)) => tracing::warn!(
                    "a run that died may have left an incomplete upload of {}/{key} (it died before recording \
                     its id); incomplete uploads are invisible, and a bucket lifecycle rule \
                     (AbortIncompleteMultipartUpload) removes them",
                    self.url
                ),
                None => {}
            }
        }
        for k in self.list_keys(&dir)? {
            self.delete(&k)?;
        }
        Ok(())
    }

    /// A writer of a partition file under `dir` (`store` is this bucket's):
    /// a file under one part is put as a staged object; a larger one goes to
    /// its final key as a multipart upload.
    pub(super) fn part_writer(&self, store: super::Store, dir: &str, own: &str, run: &str) -> Result<UploadWriter> {
        let flat = dir.replace('/', "-");
        Ok(UploadWriter {
            store,
            key: format!("{dir}/{PART_FILE}"),
            staged: format!(".skipflow/staging/{own}/{run}/{flat}.parquet"),
            manifest: format!(".skipflow/staging/{own}/uploads/{run}-{flat}.json"),
            id: None,
            buf: Vec::with_capacity(part_bytes()),
            parts: Vec::new(),
            bytes: 0,
        })
    }

    /// Drops staged files of a failed run or commit.
    pub(super) fn discard(&self, staged: &[StagedFile]) {
        for f in staged {
            match f {
                StagedFile::Upload { key, id, manifest, .. } => {
                    let _ = self.rt.block_on(self.multipart().abort_multipart(&self.path(key), id));
                    let _ = self.delete(manifest);
                }
                StagedFile::Object { staged, .. } => {
                    let _ = self.delete(staged);
                }
                _ => {}
            }
        }
    }

    fn upload_part(&self, key: &str, id: &str, idx: usize, data: Vec<u8>) -> Result<String> {
        let payload = PutPayload::from(Bytes::from(data));
        let id = id.to_string();
        let part = self
            .rt
            .block_on(self.multipart().put_part(&self.path(key), &id, idx, payload))
            .map_err(|e| anyhow!("uploading {}/{key}: {e}", self.url))?;
        Ok(part.content_id)
    }
}

/// An error text cut to a line an operator reads.
fn short(text: &str) -> String {
    let t: String = text.chars().take(300).collect();
    if t.len() < text.len() {
        format!("{t}...")
    } else {
        t
    }
}

/// A partition file being staged: buffered up to one part; beyond, an
/// upload in parts to its final key, recorded in a manifest object first.
pub struct UploadWriter {
    /// The store of the bucket.
    store: super::Store,
    /// The partition file's key.
    key: String,
    /// Where a one-part file is staged.
    staged: String,
    /// The record of the upload until it is completed.
    manifest: String,
    /// The multipart upload, once the file outgrew one part.
    id: Option<String>,
    buf: Vec<u8>,
    parts: Vec<String>,
    bytes: u64,
}

impl UploadWriter {
    fn bucket(&self) -> &Bucket {
        match &*self.store.backend {
            super::Backend::Object(b) => b,
            super::Backend::Local(_) => unreachable!("an upload to a local directory"),
        }
    }

    /// Starts the multipart upload: the manifest names the key before the
    /// upload exists and its id right after, so a run that dies is cleaned up.
    fn start(&mut self) -> Result<String> {
        let b = self.bucket();
        b.write(&self.manifest, &serde_json::to_vec(&(&self.key, None::<String>))?)?;
        let id =
            b.rt.block_on(b.multipart().create_multipart(&b.path(&self.key)))
                .map_err(|e| anyhow!("starting the upload of {}/{}: {e}", b.url, self.key))?;
        b.write(&self.manifest, &serde_json::to_vec(&(&self.key, Some(&id)))?)?;
        self.id = Some(id.clone());
        Ok(id)
    }

    fn ship(&mut self) -> Result<()> {
        let id = match &self.id {
            Some(id) => id.clone(),
            None => self.start()?,
        };
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(part_bytes()));
        let idx = self.parts.len();
        let part = self.bucket().upload_part(&self.key, &id, idx, data)?;
        self.parts.push(part);
        Ok(())
    }

    pub(super) fn finish(mut self) -> Result<(StagedFile, u64)> {
        let f = match self.id.is_some() {
            true => {
                if !self.buf.is_empty() {
                    self.ship()?;
                }
                StagedFile::Upload {
                    key: self.key.clone(),
                    id: self.id.clone().expect("an upload"),
                    parts: std::mem::take(&mut self.parts),
                    manifest: self.manifest.clone(),
                }
            }
            false => {
                let data = std::mem::take(&mut self.buf);
                let b = self.bucket();
                b.write(&self.staged, &data)?;
                StagedFile::Object {
                    staged: self.staged.clone(),
                    key: self.key.clone(),
                }
            }
        };
        // Test hook (`SKIPFLOW_FAULT=upload:error`): the second file staged
        // by the process fails after its bytes are up, one staged before it.
        static FINISHED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        if FINISHED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            if let Err(e) = crate::error::inject("upload", 0, 1) {
                self.bucket().discard(std::slice::from_ref(&f));
                self.id = None;
                return Err(e);
            }
        }
        self.id = None;
        Ok((f, self.bytes))
    }
}

impl std::io::Write for UploadWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        self.bytes += data.len() as u64;
        if self.buf.len() >= part_bytes() {
            self.ship().map_err(std::io::Error::other)?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for UploadWriter {
    /// A writer dropped before `finish` (an error while writing) aborts its upload.
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let b = self.bucket();
            let _ = b.rt.block_on(b.multipart().abort_multipart(&b.path(&self.key), &id));
            let _ = b.delete(&self.manifest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(scheme: &str, rest: &str, settings: &[(&str, &str)]) -> String {
        let settings: BTreeMap<String, String> = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let e = Bucket::open(scheme, rest, &format!("{scheme}://{rest}"), &settings)
            .err()
            .expect("a usage error");
        assert!(e.downcast_ref::<crate::error::ConfigError>().is_some(), "{e:#}");
        e.to_string()
    }

    #[test]
    fn outputs_are_checked_before_any_request() {
        assert!(usage("ftp", "b/p", &[]).contains("unsupported output URL scheme ftp://"));
        assert!(usage("s3", "", &[]).contains("no bucket name"));
        assert!(usage("gs", "", &[]).contains("no bucket name"));
        assert!(usage("s3", "b/p", &[("endpont", "http://x")]).contains("not an S3 setting"));
        assert!(usage("gs", "b/p", &[("endpoint", "http://x")]).contains("not a GCS setting"));
    }
}
