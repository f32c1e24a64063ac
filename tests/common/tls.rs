#![allow(dead_code)]
//! TLS for the tests: a certificate authority and a server certificate for
//! 127.0.0.1 made with the `openssl` command, and stunnel (Debian's
//! `stunnel4`, installed by `make test`) terminating TLS in front of a
//! plaintext broker.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A CA and a server certificate signed by it.
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl (make test installs it)");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Certs {
    pub fn make(dir: &Path) -> Certs {
        std::fs::create_dir_all(dir).unwrap();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend([
            "-days",
            "2",
            "-subj",
            "/CN=skipflow test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(dir, &a);
        let mut a = vec!["req"];
        a.extend(ec);
        a.extend(["-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr"]);
        openssl(dir, &a);
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.ext",
                "-out",
                "server.pem",
            ],
        );
        Certs {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}

fn stunnel_binary() -> &'static str {
    for b in ["stunnel4", "stunnel"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return b;
        }
    }
    panic!("stunnel is not installed: run `make test` (it installs Debian's stunnel4)")
}

/// stunnel accepting TLS on `accept` and forwarding to `connect`; killed when dropped.
pub struct Stunnel {
    child: Child,
    pub accept: String,
}

impl Stunnel {
    pub fn start(dir: &Path, accept: &str, connect: &str, certs: &Certs) -> Stunnel {
        let conf = dir.join("stunnel.conf");
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\ndebug = 4\noutput = {}\n[kafka]\naccept = {accept}\nconnect = {connect}\ncert = {}\nkey = {}\n",
                dir.join("stunnel.log").display(),
                certs.cert.display(),
                certs.key.display()
            ),
        )
        .unwrap();
        let child = Command::new(stunnel_binary())
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting stunnel");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(accept).is_err() {
            assert!(Instant::now() < deadline, "stunnel did not listen on {accept}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Stunnel {
            child,
            accept: accept.to_string(),
        }
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
