//! TLS to PostgreSQL with rustls (through `tokio-postgres-rustls`), following libpq's `sslmode`
//! as [`crate::config::parse_postgres_url`] reads it: [`make_connect`] builds the connector for
//! a [`PostgresTarget`]. tokio-postgres itself decides whether TLS is tried (`prefer`) or
//! required; this module decides how the server's certificate is checked:
//!
//! - `prefer` and `require` (without `sslrootcert`): not at all, as in libpq. The [`Verifier`]
//!   accepts any certificate, but still checks the handshake's signature with the certificate's
//!   key (rustls's `dangerous` API), so the traffic is encrypted, though not authenticated.
//! - `verify-ca`: the chain must lead to a root in `sslrootcert`, or, without it, to one of the
//!   system's trusted roots (loaded with `rustls-native-certs`: the operating system's store,
//!   which is where operators install a private CA, and which `SSL_CERT_FILE` can point
//!   elsewhere; `webpki-roots`' compiled-in list could hold neither). The host name is not
//!   checked.
//! - `verify-full`: `verify-ca`, and the certificate must be valid for the host in the URL.
//!
//! The roots are read on each connection (a rotated CA file is picked up on the next one), which
//! is rare: once at start and after each failure. rustls's ring provider is named explicitly, so
//! no process-wide default provider is needed.

use std::io;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{PostgresTarget, RootCerts, TlsMode};

/// The ALPN protocol PostgreSQL 17 and later expect (libpq sends it too; older servers ignore it).
const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// The connector tokio-postgres uses to open TLS to `target`'s server.
pub fn make_connect(target: &PostgresTarget) -> anyhow::Result<MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = if target.tls.verifies() {
        Some(Arc::new(match target.roots() {
            RootCerts::File(path) => file_roots(&path)?,
            RootCerts::System => system_roots()?,
        }))
    } else {
        None
    };
    let verifier = Verifier {
        roots,
        check_host: target.tls == TlsMode::VerifyFull,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("cannot set up TLS for PostgreSQL")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(MakeRustlsConnect::new(config))
}

/// The CA certificates in a PEM file.
fn file_roots(path: &Path) -> anyhow::Result<RootCertStore> {
    let context = || format!("cannot read the sslrootcert {}", path.display());
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| io::Error::other(error.to_string()))
        .with_context(context)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| io::Error::other(error.to_string()))
        .with_context(context)?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certificates);
    anyhow::ensure!(
        added > 0,
        "the sslrootcert {} holds no usable CA certificate",
        path.display()
    );
    Ok(roots)
}

/// The operating system's trusted roots.
fn system_roots() -> anyhow::Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|error| format!(" ({error})"))
            .unwrap_or_default();
        anyhow::bail!(
            "no trusted root certificate found on this system{why} to check PostgreSQL's \
             certificate: install them (Debian: ca-certificates) or give sslrootcert"
        );
    }
    Ok(roots)
}

/// Checks the server's certificate as the mode says: not at all (`roots` is `None`), its chain,
/// or its chain and host name. The handshake's signature is always checked.
#[derive(Debug)]
struct Verifier {
    /// The roots the chain must lead to; `None` accepts any certificate.
    roots: Option<Arc<RootCertStore>>,
    /// Whether the certificate must be valid for the host name.
    check_host: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let certificate = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &certificate,
            roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if self.check_host {
            verify_server_name(&certificate, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, parse_postgres_url};

    fn connect_for(url: &str) -> anyhow::Result<MakeRustlsConnect> {
        make_connect(&parse_postgres_url(&Secret::new(url)).expect("a valid URL"))
    }

    #[test]
    fn modes_that_do_not_verify_need_no_roots() {
        for mode in ["disable", "prefer", "require"] {
            connect_for(&format!("postgres://db/r?sslmode={mode}")).expect("a connector");
        }
    }

    #[test]
    fn an_unusable_sslrootcert_is_named_in_the_error() {
        let directory = tempfile::tempdir().expect("a directory");
        let missing = directory.path().join("missing.pem");
        let empty = directory.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("written");
        for (path, message) in [
            (&missing, "cannot read the sslrootcert"),
            (&empty, "holds no usable CA certificate"),
        ] {
            let Err(error) = connect_for(&format!(
                "host=db sslmode=verify-full sslrootcert='{}'",
                path.display()
            )) else {
                panic!("a connector without roots");
            };
            let error = format!("{error:#}");
            assert!(error.contains(message), "{error}");
            assert!(error.contains(&path.display().to_string()), "{error}");
        }
    }
}
