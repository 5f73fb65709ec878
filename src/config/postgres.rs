//! The `postgres_url` setting read: a URL or libpq key=value string, with libpq's `sslmode` and
//! `sslrootcert`, which tokio-postgres does not know, taken out and kept in a [`PostgresTarget`].
//! Errors never repeat the URL (it may hold a password).

use std::fmt;
use std::path::PathBuf;

use anyhow::bail;

use super::{DEFAULT_POSTGRES_CONNECT_TIMEOUT, Secret};

/// How suivi secures its connection to PostgreSQL: libpq's `sslmode` (see `postgres_url`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, else plain; the certificate is not checked.
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not checked.
    Require,
    /// TLS, with the certificate chain checked against the trusted roots.
    VerifyCa,
    /// TLS, with the chain checked and the certificate naming the host.
    VerifyFull,
}

impl TlsMode {
    /// The mode as libpq spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the server's certificate is checked at all.
    pub fn verifies(self) -> bool {
        matches!(self, TlsMode::VerifyCa | TlsMode::VerifyFull)
    }
}

/// Where the certificates that a verifying [`TlsMode`] trusts come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// The system's trusted roots (`sslrootcert` unset, or `system`).
    System,
    /// The CA certificates in this PEM file (`sslrootcert=<path>`).
    File(PathBuf),
}

/// A parsed `postgres_url`: tokio-postgres's config (whose own `ssl_mode` says whether TLS is
/// tried and whether it is required) and what tokio-postgres does not know: how the server's
/// certificate is checked.
#[derive(Clone)]
pub struct PostgresTarget {
    /// Everything but the certificate checks.
    pub config: tokio_postgres::Config,
    /// The mode in force: `require` with an `sslrootcert` is already `verify-ca` here.
    pub tls: TlsMode,
    /// The `sslrootcert` file, if any (`None` for `system` or unset).
    pub root_cert: Option<PathBuf>,
}

impl PostgresTarget {
    /// The roots a verifying mode trusts.
    pub fn roots(&self) -> RootCerts {
        self.root_cert
            .clone()
            .map_or(RootCerts::System, RootCerts::File)
    }
}

impl fmt::Debug for PostgresTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config holds the password: only the TLS part is shown.
        f.debug_struct("PostgresTarget")
            .field("tls", &self.tls)
            .field("root_cert", &self.root_cert)
            .finish_non_exhaustive()
    }
}

/// Parses a PostgreSQL URL (`postgres://user@host:port/database?…`) or key=value string, adding
/// suivi's connect timeout and application name when it sets none. `sslmode` and `sslrootcert`
/// are taken out and read here (tokio-postgres knows only `disable`, `prefer` and `require`,
/// and no `sslrootcert`); the rest goes to tokio-postgres. Errors never repeat the URL.
pub fn parse_postgres_url(url: &Secret) -> anyhow::Result<PostgresTarget> {
    let (rest, tls_params) = take_tls_params(url.expose());
    let mut config =
        <tokio_postgres::Config as std::str::FromStr>::from_str(&rest).map_err(|error| {
            // tokio-postgres's message is only "invalid connection string": its cause says why.
            let mut text = error.to_string();
            let mut cause = std::error::Error::source(&error);
            while let Some(error) = cause {
                text = format!("{text}: {error}");
                cause = error.source();
            }
            anyhow::anyhow!("invalid postgres_url: {}", redact(&text, url.expose()))
        })?;
    let mode = match tls_params.sslmode.as_deref() {
        None => None,
        Some("disable") => Some(TlsMode::Disable),
        Some("prefer") => Some(TlsMode::Prefer),
        Some("require") => Some(TlsMode::Require),
        Some("verify-ca") => Some(TlsMode::VerifyCa),
        Some("verify-full") => Some(TlsMode::VerifyFull),
        Some("allow") => {
            bail!("invalid postgres_url: sslmode=allow is not supported (use prefer or disable)")
        }
        Some(_) => bail!(
            "invalid postgres_url: sslmode must be disable, prefer, require, verify-ca or \
             verify-full"
        ),
    };
    let (tls, root_cert) = match tls_params.sslrootcert {
        // As libpq: the system's roots imply verify-full, and a weaker mode is refused.
        Some(root) if root == "system" => match mode {
            None | Some(TlsMode::VerifyFull) => (TlsMode::VerifyFull, None),
            Some(mode) => bail!(
                "invalid postgres_url: sslrootcert=system needs sslmode=verify-full, not {}",
                mode.as_str()
            ),
        },
        Some(root) if root.is_empty() => (mode.unwrap_or_default(), None),
        Some(root) => {
            let mode = match mode.unwrap_or_default() {
                // As libpq: a root certificate makes require check the chain.
                TlsMode::Require => TlsMode::VerifyCa,
                mode => mode,
            };
            (mode, Some(PathBuf::from(root)))
        }
        None => (mode.unwrap_or_default(), None),
    };
    config.ssl_mode(match tls {
        TlsMode::Disable => tokio_postgres::config::SslMode::Disable,
        TlsMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_POSTGRES_CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("suivi");
    }
    Ok(PostgresTarget {
        config,
        tls,
        root_cert,
    })
}

/// The TLS parameters [`take_tls_params`] takes out of a connection string (the last of each
/// wins, as in libpq).
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsParams {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

impl TlsParams {
    /// Keeps `value` when `key` is one of the TLS parameters, and says whether it was.
    fn take(&mut self, key: &str, value: String) -> bool {
        match key {
            "sslmode" => self.sslmode = Some(value),
            "sslrootcert" => self.sslrootcert = Some(value),
            _ => return false,
        }
        true
    }
}

/// Splits `sslmode` and `sslrootcert` off a URL's query or a key=value string, returning the
/// rest as it was written. A string it cannot read is returned whole, for tokio-postgres to
/// refuse.
fn take_tls_params(url: &str) -> (String, TlsParams) {
    let mut params = TlsParams::default();
    let prefix = ["postgres://", "postgresql://"]
        .into_iter()
        .find(|prefix| url.starts_with(prefix));
    if let Some(prefix) = prefix {
        // As tokio-postgres reads it: credentials up to the first `@`, then the query after
        // the first `?`.
        let body = &url[prefix.len()..];
        let after_credentials = body.find('@').map_or(0, |at| at + 1);
        let Some(question) = body[after_credentials..].find('?') else {
            return (url.to_owned(), params);
        };
        let query_start = prefix.len() + after_credentials + question + 1;
        let mut kept = Vec::new();
        for pair in url[query_start..].split('&') {
            let taken = pair.split_once('=').is_some_and(|(key, value)| {
                match (percent_decode(key), percent_decode(value)) {
                    (Some(key), Some(value)) => params.take(&key, value),
                    _ => false,
                }
            });
            if !taken {
                kept.push(pair);
            }
        }
        let mut rest = url[..query_start - 1].to_owned();
        if !kept.is_empty() {
            rest.push('?');
            rest.push_str(&kept.join("&"));
        }
        (rest, params)
    } else {
        match take_key_value_tls_params(url) {
            Some((rest, params)) => (rest, params),
            None => (url.to_owned(), TlsParams::default()),
        }
    }
}

/// [`take_tls_params`] for libpq's `key = value` form (values bare or single-quoted, with
/// backslash escapes); `None` when the string does not read as one.
fn take_key_value_tls_params(text: &str) -> Option<(String, TlsParams)> {
    let mut params = TlsParams::default();
    let mut kept = Vec::new();
    let mut chars = text.char_indices().peekable();
    let skip_whitespace = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_whitespace(&mut chars);
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        skip_whitespace(&mut chars);
        chars.next_if(|(_, c)| *c == '=')?;
        skip_whitespace(&mut chars);
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next()? {
                    (_, '\'') => break,
                    (_, '\\') => value.push(chars.next()?.1),
                    (_, c) => value.push(c),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next()?.1);
                } else {
                    value.push(c);
                }
            }
        }
        let end = chars.peek().map_or(text.len(), |&(index, _)| index);
        if !params.take(&key, value) {
            kept.push(&text[start..end]);
        }
    }
    Some((kept.join(" "), params))
}

/// Decodes `%XX` escapes, as tokio-postgres does in a URL; `None` when the result is not UTF-8
/// or an escape is cut short.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

fn redact(text: &str, secret: &str) -> String {
    let mut redacted = text.replace(secret, "[redacted]");
    if let Some(password) = url_password(secret)
        && !password.is_empty()
    {
        redacted = redacted.replace(password, "[redacted]");
    }
    redacted
}

fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let credentials = rest.split_once('@')?.0;
    Some(credentials.split_once(':')?.1)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bad_postgres_url_is_refused_without_repeating_it() {
        for url in [
            "postgres://suivi:hunter2@db:notaport/suivi",
            "host=db password=hunter2 port=x",
        ] {
            let error = format!(
                "{:#}",
                parse_postgres_url(&Secret::new(url)).expect_err("an invalid URL")
            );
            assert!(error.starts_with("invalid postgres_url"), "{error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn a_good_postgres_url_gets_a_connect_timeout_and_a_name() {
        let config = parse_postgres_url(&Secret::new("postgres://suivi:hunter2@db:5433/reports"))
            .expect("a URL")
            .config;
        assert_eq!(
            config.get_connect_timeout(),
            Some(&DEFAULT_POSTGRES_CONNECT_TIMEOUT)
        );
        assert_eq!(config.get_application_name(), Some("suivi"));
    }

    fn target(url: &str) -> PostgresTarget {
        parse_postgres_url(&Secret::new(url)).expect("a valid URL")
    }

    fn tokio_mode(target: &PostgresTarget) -> tokio_postgres::config::SslMode {
        target.config.get_ssl_mode()
    }

    #[test]
    fn every_sslmode_is_read_in_both_forms_and_the_rest_reaches_tokio_postgres() {
        use tokio_postgres::config::SslMode;
        for (mode, tls, tokio) in [
            ("disable", TlsMode::Disable, SslMode::Disable),
            ("prefer", TlsMode::Prefer, SslMode::Prefer),
            ("require", TlsMode::Require, SslMode::Require),
            ("verify-ca", TlsMode::VerifyCa, SslMode::Require),
            ("verify-full", TlsMode::VerifyFull, SslMode::Require),
        ] {
            for url in [
                format!("postgres://suivi:hunter2@db:5433/reports?sslmode={mode}"),
                format!(
                    "postgresql://suivi@db/reports?application_name=x&sslmode={mode}&connect_timeout=9"
                ),
                format!("host=db user=suivi dbname=reports sslmode={mode} port=5433"),
                format!("host=db  sslmode = '{mode}'  dbname=reports"),
            ] {
                let parsed = target(&url);
                assert_eq!(parsed.tls, tls, "{url}");
                assert_eq!(tokio_mode(&parsed), tokio, "{url}");
                assert_eq!(parsed.root_cert, None, "{url}");
                assert_eq!(parsed.roots(), RootCerts::System, "{url}");
                assert_eq!(parsed.config.get_dbname(), Some("reports"), "{url}");
                assert_eq!(
                    parsed.config.get_hosts(),
                    [tokio_postgres::config::Host::Tcp("db".to_owned())],
                    "{url}"
                );
            }
        }
        let kept = target(
            "postgres://suivi@db/reports?application_name=x&sslmode=verify-ca&connect_timeout=9",
        );
        assert_eq!(kept.config.get_application_name(), Some("x"));
        assert_eq!(
            kept.config.get_connect_timeout(),
            Some(&Duration::from_secs(9))
        );
    }

    #[test]
    fn without_sslmode_tls_is_preferred_as_in_libpq() {
        for url in ["postgres://suivi@db/reports", "host=db dbname=reports"] {
            let parsed = target(url);
            assert_eq!(parsed.tls, TlsMode::Prefer);
            assert_eq!(tokio_mode(&parsed), tokio_postgres::config::SslMode::Prefer);
        }
    }

    #[test]
    fn sslrootcert_names_the_ca_and_makes_require_verify_the_chain() {
        for (url, tls, root) in [
            (
                "postgres://db/r?sslmode=verify-full&sslrootcert=/etc/suivi/ca.pem",
                TlsMode::VerifyFull,
                Some("/etc/suivi/ca.pem"),
            ),
            (
                "postgres://db/r?sslrootcert=%2Fsrv%2Fmy%20ca.pem&sslmode=verify-ca",
                TlsMode::VerifyCa,
                Some("/srv/my ca.pem"),
            ),
            (
                "host=db sslmode=require sslrootcert='/srv/my ca\\'s.pem'",
                TlsMode::VerifyCa,
                Some("/srv/my ca's.pem"),
            ),
            (
                "postgres://db/r?sslmode=require&sslrootcert=ca.pem",
                TlsMode::VerifyCa,
                Some("ca.pem"),
            ),
            (
                "postgres://db/r?sslmode=prefer&sslrootcert=ca.pem",
                TlsMode::Prefer,
                Some("ca.pem"),
            ),
            (
                "postgres://db/r?sslrootcert=system",
                TlsMode::VerifyFull,
                None,
            ),
            (
                "host=db sslrootcert=system sslmode=verify-full",
                TlsMode::VerifyFull,
                None,
            ),
            (
                "postgres://db/r?sslmode=verify-full&sslmode=disable",
                TlsMode::Disable,
                None,
            ),
        ] {
            let parsed = target(url);
            assert_eq!(parsed.tls, tls, "{url}");
            assert_eq!(parsed.root_cert.as_deref(), root.map(Path::new), "{url}");
            assert_eq!(
                parsed.roots(),
                root.map_or(RootCerts::System, |root| RootCerts::File(root.into())),
                "{url}"
            );
        }
    }

    #[test]
    fn a_bad_sslmode_is_refused_without_repeating_the_url() {
        for (url, message) in [
            (
                "postgres://suivi:hunter2@db/r?sslmode=verify",
                "sslmode must be",
            ),
            (
                "host=db password=hunter2 sslmode=allow",
                "sslmode=allow is not supported",
            ),
            (
                "postgres://suivi:hunter2@db/r?sslmode=require&sslrootcert=system",
                "sslrootcert=system needs sslmode=verify-full",
            ),
            (
                "postgres://suivi:hunter2@db/r?sslcert=x.pem",
                "invalid postgres_url",
            ),
        ] {
            let error = format!(
                "{:#}",
                parse_postgres_url(&Secret::new(url)).expect_err("an invalid URL")
            );
            assert!(error.contains(message), "{error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }
}
