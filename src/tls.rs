//! TLS on the two listeners: loads the certificate chain, the private key and, for mutual TLS,
//! the client CA bundle (`tls_cert`, `tls_key`, `tls_client_ca`, all PEM), and builds each
//! listener's rustls server configuration (gRPC offers `h2` by ALPN, HTTP `h2` and `http/1.1`;
//! with a client CA every client must present a certificate it signed). It reloads them on
//! change: the files are read every [`RELOAD_INTERVAL`], and when their contents change both
//! configurations are rebuilt and swapped at once, so new connections get the new certificate
//! while open ones keep theirs. A change that cannot be loaded (a half-written file, a key that
//! does not match the certificate) keeps the previous configuration; each change is reported once
//! to the caller, who logs and counts it. `listener` does the handshakes; this module knows
//! nothing of connections, and imports no other module of suivi (`config` checks the files
//! with it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use tokio_util::sync::CancellationToken;

/// How often the TLS files are read to see whether they changed.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// The ALPN protocols of the gRPC listener: HTTP/2 only.
const GRPC_ALPN: &[&[u8]] = &[b"h2"];
/// The ALPN protocols of the HTTP listener, preferred first.
const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The files TLS is served from, as the settings name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (`tls_cert`).
    pub cert: PathBuf,
    /// The private key of the leaf certificate (`tls_key`).
    pub key: PathBuf,
    /// The CAs client certificates must be signed by (`tls_client_ca`); none asked when unset.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// The TLS files of the settings `tls_cert`, `tls_key` and `tls_client_ca`: none when TLS is
    /// off; an error naming the settings when they are given by halves.
    pub fn from_settings(
        cert: Option<&Path>,
        key: Option<&Path>,
        client_ca: Option<&Path>,
    ) -> anyhow::Result<Option<TlsFiles>> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                client_ca: client_ca.map(Path::to_path_buf),
            })),
            (None, None) => match client_ca {
                Some(_) => bail!(
                    "invalid tls_client_ca: client certificates need TLS, so tls_cert and tls_key too"
                ),
                None => Ok(None),
            },
            (Some(_), None) => bail!("invalid tls_cert: tls_key must be set with it"),
            (None, Some(_)) => bail!("invalid tls_key: tls_cert must be set with it"),
        }
    }
}

/// The TLS configuration one listener gives its new connections: the latest that loaded.
#[derive(Debug, Clone)]
pub struct Acceptor(Arc<ArcSwap<ServerConfig>>);

impl Acceptor {
    /// The configuration for a connection accepted now.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.0.load_full()
    }
}

/// TLS for both listeners, loaded from [`TlsFiles`]; [`Tls::reload_on_change`] keeps it up to
/// date with them.
#[derive(Debug, Clone)]
pub struct Tls {
    files: TlsFiles,
    grpc: Acceptor,
    http: Acceptor,
    /// What the files held when last read, loaded or not.
    seen: blake3::Hash,
}

impl Tls {
    /// Reads and checks the files and builds both listeners' configurations. The error names
    /// the setting whose file cannot be read or used.
    pub fn load(files: TlsFiles) -> anyhow::Result<Tls> {
        let contents = Contents::read(&files)?;
        let (grpc, http) = contents.configs(&files)?;
        Ok(Tls {
            grpc: Acceptor(Arc::new(ArcSwap::from_pointee(grpc))),
            http: Acceptor(Arc::new(ArcSwap::from_pointee(http))),
            seen: contents.fingerprint(),
            files,
        })
    }

    /// The configuration of the gRPC listener.
    pub fn grpc(&self) -> Acceptor {
        self.grpc.clone()
    }

    /// The configuration of the HTTP listener.
    pub fn http(&self) -> Acceptor {
        self.http.clone()
    }

    /// What clients of a listener with `tls` must do, in words for the logs.
    pub fn describe(tls: Option<&Tls>) -> &'static str {
        match tls {
            None => "plain text",
            Some(tls) if tls.files.client_ca.is_some() => {
                "TLS, client certificates required (mTLS)"
            }
            Some(_) => "TLS",
        }
    }

    /// Reads the files every [`RELOAD_INTERVAL`] until `stop`; when what they hold changed,
    /// rebuilds both configurations and swaps them in, or, when that fails, keeps the ones in
    /// use. Each change is told to `changed` once: `Ok` when swapped in, else why not.
    pub async fn reload_on_change(
        mut self,
        stop: CancellationToken,
        mut changed: impl FnMut(anyhow::Result<()>) + Send,
    ) {
        let mut ticks = tokio::time::interval(RELOAD_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.cancelled() => return,
            }
            let files = self.files.clone();
            let read = tokio::task::spawn_blocking(move || Contents::read(&files)).await;
            let Ok(read) = read else {
                // The runtime is shutting down.
                return;
            };
            if let Some(outcome) = self.reload(read) {
                changed(outcome);
            }
        }
    }

    /// Swaps in the configurations of `read` if it differs from what was last seen, and says
    /// how that went; `None` when nothing changed.
    fn reload(&mut self, read: anyhow::Result<Contents>) -> Option<anyhow::Result<()>> {
        let seen = match &read {
            Ok(contents) => contents.fingerprint(),
            Err(error) => blake3::hash(format!("{error:#}").as_bytes()),
        };
        if seen == self.seen {
            return None;
        }
        self.seen = seen;
        Some(
            read.and_then(|contents| contents.configs(&self.files))
                .map(|(grpc, http)| {
                    self.grpc.0.store(Arc::new(grpc));
                    self.http.0.store(Arc::new(http));
                }),
        )
    }
}

/// What the TLS files hold.
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Contents {
    /// Reads the files whole.
    fn read(files: &TlsFiles) -> anyhow::Result<Contents> {
        let read = |setting: &str, path: &Path| {
            std::fs::read(path).with_context(|| format!("cannot read {setting} {}", path.display()))
        };
        Ok(Contents {
            cert: read("tls_cert", &files.cert)?,
            key: read("tls_key", &files.key)?,
            client_ca: files
                .client_ca
                .as_deref()
                .map(|path| read("tls_client_ca", path))
                .transpose()?,
        })
    }

    /// Tells one set of contents from another, without keeping the key.
    fn fingerprint(&self) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new();
        for part in [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()] {
            match part {
                Some(bytes) => {
                    hasher.update(&(bytes.len() as u64).to_le_bytes());
                    hasher.update(bytes);
                }
                None => {
                    hasher.update(&u64::MAX.to_le_bytes());
                }
            }
        }
        hasher.finalize()
    }

    /// The server configurations of the gRPC and the HTTP listener.
    fn configs(&self, files: &TlsFiles) -> anyhow::Result<(ServerConfig, ServerConfig)> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = certificates(&self.cert)
            .with_context(|| format!("invalid tls_cert {}", files.cert.display()))?;
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|error| {
            anyhow::anyhow!(
                "invalid tls_key {}: no PEM private key in it ({error})",
                files.key.display()
            )
        })?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("the TLS provider offers no protocol version")?;
        let builder = match (&self.client_ca, &files.client_ca) {
            (Some(client_ca), Some(path)) => {
                let verifier = client_verifier(client_ca, provider)
                    .with_context(|| format!("invalid tls_client_ca {}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key).with_context(|| {
            format!(
                "invalid tls_cert {} with tls_key {}: they do not make a usable certificate",
                files.cert.display(),
                files.key.display()
            )
        })?;
        let mut http = config.clone();
        config.alpn_protocols = GRPC_ALPN.iter().map(|name| name.to_vec()).collect();
        http.alpn_protocols = HTTP_ALPN.iter().map(|name| name.to_vec()).collect();
        Ok((config, http))
    }
}

/// Every certificate of a PEM file; at least one.
fn certificates(pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| anyhow::anyhow!("not PEM certificates: {error}"))?;
    if certs.is_empty() {
        bail!("no PEM certificate in it");
    }
    Ok(certs)
}

/// Requires every client to present a certificate signed by one of the CAs of `pem`.
fn client_verifier(
    pem: &[u8],
    provider: Arc<CryptoProvider>,
) -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(pem)? {
        roots
            .add(cert)
            .context("a certificate in it is not a usable CA")?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .context("cannot verify client certificates with it")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for localhost, and its key, as PEM.
    fn self_signed() -> (String, String) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("a certificate");
        (certified.cert.pem(), certified.signing_key.serialize_pem())
    }

    /// Writes `files` (name, contents) in a new directory.
    fn written(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("a temporary dir");
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).expect("written");
        }
        dir
    }

    fn files(dir: &Path, client_ca: bool) -> TlsFiles {
        TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            client_ca: client_ca.then(|| dir.join("ca.pem")),
        }
    }

    fn error(files: TlsFiles) -> String {
        format!("{:#}", Tls::load(files).expect_err("refused"))
    }

    #[test]
    fn the_settings_go_together() {
        let (cert, key, ca) = (Path::new("c"), Path::new("k"), Path::new("a"));
        assert_eq!(
            TlsFiles::from_settings(None, None, None).expect("TLS off"),
            None
        );
        assert!(
            TlsFiles::from_settings(Some(cert), Some(key), Some(ca))
                .expect("mTLS")
                .is_some()
        );
        for (settings, named) in [
            ((Some(cert), None, None), "invalid tls_cert"),
            ((None, Some(key), None), "invalid tls_key"),
            ((None, None, Some(ca)), "invalid tls_client_ca"),
            ((Some(cert), None, Some(ca)), "invalid tls_cert"),
        ] {
            let error = TlsFiles::from_settings(settings.0, settings.1, settings.2)
                .expect_err("refused")
                .to_string();
            assert!(error.starts_with(named), "{error}");
        }
    }

    #[test]
    fn good_files_load_with_each_listeners_protocols() {
        let (cert, key) = self_signed();
        let dir = written(&[("cert.pem", &cert), ("key.pem", &key), ("ca.pem", &cert)]);
        for client_ca in [false, true] {
            let tls = Tls::load(files(dir.path(), client_ca)).expect("loads");
            assert_eq!(tls.grpc().current().alpn_protocols, vec![b"h2".to_vec()]);
            assert_eq!(
                tls.http().current().alpn_protocols,
                vec![b"h2".to_vec(), b"http/1.1".to_vec()]
            );
            assert_eq!(
                Tls::describe(Some(&tls)).contains("mTLS"),
                client_ca,
                "{}",
                Tls::describe(Some(&tls))
            );
        }
    }

    #[test]
    fn unusable_files_are_refused_naming_their_setting() {
        let (cert, key) = self_signed();
        let (_, other_key) = self_signed();
        let dir = written(&[("cert.pem", &cert), ("key.pem", &key), ("ca.pem", &cert)]);
        let mut missing = files(dir.path(), false);
        missing.cert = dir.path().join("nowhere.pem");
        assert!(error(missing).starts_with("cannot read tls_cert"));

        let bad = written(&[("cert.pem", "not PEM"), ("key.pem", &key)]);
        assert!(error(files(bad.path(), false)).starts_with("invalid tls_cert"));

        let bad = written(&[("cert.pem", &cert), ("key.pem", &cert)]);
        assert!(error(files(bad.path(), false)).starts_with("invalid tls_key"));

        let mismatched = written(&[("cert.pem", &cert), ("key.pem", &other_key)]);
        let refused = error(files(mismatched.path(), false));
        assert!(
            refused.contains("do not make a usable certificate"),
            "{refused}"
        );

        let bad_ca = written(&[("cert.pem", &cert), ("key.pem", &key), ("ca.pem", &key)]);
        assert!(error(files(bad_ca.path(), true)).starts_with("invalid tls_client_ca"));
    }

    #[test]
    fn a_change_is_swapped_in_and_a_bad_one_keeps_the_old() {
        let (cert, key) = self_signed();
        let dir = written(&[("cert.pem", &cert), ("key.pem", &key)]);
        let files = files(dir.path(), false);
        let mut tls = Tls::load(files.clone()).expect("loads");
        let first = tls.http().current();

        // Unchanged: nothing swapped, nothing said.
        assert!(tls.reload(Contents::read(&files)).is_none());
        assert!(Arc::ptr_eq(&first, &tls.http().current()));

        // Half written: the old configuration stays, and that is said once.
        std::fs::write(&files.cert, &cert[..cert.len() / 2]).expect("written");
        let outcome = tls.reload(Contents::read(&files)).expect("a change");
        assert!(format!("{:#}", outcome.expect_err("unusable")).contains("invalid tls_cert"));
        assert!(tls.reload(Contents::read(&files)).is_none());
        assert!(Arc::ptr_eq(&first, &tls.http().current()));

        // A new certificate and key: both listeners get them.
        let (cert, key) = self_signed();
        std::fs::write(&files.cert, &cert).expect("written");
        std::fs::write(&files.key, &key).expect("written");
        let grpc = tls.grpc().current();
        tls.reload(Contents::read(&files))
            .expect("a change")
            .expect("swapped in");
        assert!(!Arc::ptr_eq(&first, &tls.http().current()));
        assert!(!Arc::ptr_eq(&grpc, &tls.grpc().current()));
    }
}
