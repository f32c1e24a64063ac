#![allow(dead_code)]
//! moto's S3 server (PyPI `moto[server]`, installed by `make test` into the
//! test venv) started by the tests, path-style, and the helpers that look at
//! the bucket from outside (boto3, and pyarrow's S3 filesystem).

use super::tansu::free_port;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The test venv's Python (pyarrow, DuckDB, boto3, moto).
pub fn python() -> PathBuf {
    PathBuf::from(std::env::var("SKIPFLOW_PYTHON").expect(
        "the object-store tests need moto and pyarrow: run `make test` (it installs them into a venv and sets SKIPFLOW_PYTHON)",
    ))
}

fn tool() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/s3_tool.py")
}

/// A moto S3 server on a free port; killed when dropped.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        Moto::start_with(&[])
    }

    /// A server with extra settings in its environment. A port taken between
    /// choosing it and moto binding it costs one more try on another port.
    pub fn start_with(env: &[(&str, &str)]) -> Moto {
        let moto = python().parent().unwrap().join("moto_server");
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new(&moto)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e} (run `make test`: it installs moto)", moto.display()));
            if answers_http(&mut child, port) {
                let endpoint = format!("http://127.0.0.1:{port}");
                return Moto { child, endpoint };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("moto did not start on three ports in a row");
    }

    /// Runs the S3 tool; its standard output.
    pub fn tool(&self, args: &[&str]) -> Vec<u8> {
        let o = Command::new(python())
            .arg(tool())
            .arg(&self.endpoint)
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "s3_tool {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o.stdout
    }

    pub fn bucket(&self, name: &str) {
        self.tool(&["mkbucket", name]);
    }

    /// The environment a `skipflow` process reaches this server with.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// The same as a job file's `[storage]` table (runs inside the test process).
    pub fn storage(&self) -> BTreeMap<String, String> {
        [
            ("endpoint", self.endpoint.as_str()),
            ("allow_http", "true"),
            ("access_key_id", "test"),
            ("secret_access_key", "test"),
            ("region", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Copies `bucket/prefix` into `dir` with pyarrow's S3 filesystem.
    pub fn download(&self, bucket: &str, prefix: &str, dir: &Path) {
        self.tool(&["download", bucket, prefix, dir.to_str().unwrap()]);
    }

    /// Keys of the open multipart uploads of `bucket`.
    pub fn uploads(&self, bucket: &str) -> Vec<String> {
        lines(&self.tool(&["uploads", bucket]))
    }

    /// Object keys under `bucket/prefix`.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        lines(&self.tool(&["keys", bucket, prefix]))
    }

    /// An object's bytes, if it exists.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let o = Command::new(python())
            .arg(tool())
            .arg(&self.endpoint)
            .args(["get", bucket, key])
            .output()
            .unwrap();
        o.status.success().then_some(o.stdout)
    }

    /// Records covered by the checkpoint of the output at `bucket/prefix`.
    pub fn checkpointed(&self, bucket: &str, prefix: &str) -> i64 {
        self.get(bucket, &format!("{prefix}/.skipflow/checkpoint.json"))
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map_or(0, |c| {
                c["offsets"]
                    .as_object()
                    .map_or(0, |o| o.values().map(|v| v.as_i64().unwrap()).sum())
            })
    }
}

/// Waits until `child` answers an HTTP request on `port`; false if it exits
/// first (its port was taken) or stays silent for 30 s.
fn answers_http(child: &mut Child, port: u16) -> bool {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = [0u8; 5];
            let asked = s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok();
            if asked && s.read_exact(&mut head).is_ok() && &head == b"HTTP/" {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn lines(b: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(b).lines().map(str::to_string).collect()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
