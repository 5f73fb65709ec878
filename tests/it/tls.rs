//! TLS on both listeners, through real clients: HTTPS with reqwest and gRPC with tonic, both
//! trusting a CA made by the test (rcgen); plain text refused and counted; client certificates
//! required and checked with `tls_client_ca`; certificates replaced on disk served to new
//! connections within seconds, and a broken replacement leaving the old one in use.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use reqwest::StatusCode;
use serde_json::Value;
use suivi::config::Settings;
use suivi::proto::ingest_service_client::IngestServiceClient;
use tempfile::TempDir;
use tonic::transport::{Channel, ClientTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{PATIENCE, TestApp, enrolments, json_batch, proto_batch, start_app_with};

/// A certificate authority made for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("a CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("a CA certificate"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params = CertificateParams::new(
            names
                .iter()
                .map(|name| (*name).to_owned())
                .collect::<Vec<_>>(),
        )
        .expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("a leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("a leaf");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost.
    fn server(&self) -> Leaf {
        self.leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate.
    fn client(&self, name: &str) -> Leaf {
        self.leaf(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// The TLS files of a test service, in a directory of their own.
struct Files {
    dir: TempDir,
}

impl Files {
    fn new(server: &Leaf, client_ca: Option<&Ca>) -> Files {
        let files = Files {
            dir: tempfile::tempdir().expect("a temporary dir"),
        };
        files.replace(server);
        if let Some(ca) = client_ca {
            std::fs::write(files.path("client-ca.pem"), ca.pem()).expect("written");
        }
        files
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces the certificate and key as an operator would: each written beside, then renamed
    /// over the one in use.
    fn replace(&self, server: &Leaf) {
        for (name, contents) in [("key.pem", &server.key), ("cert.pem", &server.cert)] {
            let beside = self.path(&format!("{name}.new"));
            std::fs::write(&beside, contents).expect("written");
            std::fs::rename(&beside, self.path(name)).expect("renamed");
        }
    }

    fn settings(&self, settings: &mut Settings, client_ca: bool) {
        settings.tls_cert = Some(self.path("cert.pem"));
        settings.tls_key = Some(self.path("key.pem"));
        settings.tls_client_ca = client_ca.then(|| self.path("client-ca.pem"));
    }
}

/// An HTTPS client trusting only `ca`, presenting `identity` if given, on a fresh pool.
fn https_client(ca: &Ca, identity: Option<&Leaf>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(ca.pem().as_bytes()).expect("a CA certificate"),
        )
        .timeout(PATIENCE);
    if let Some(leaf) = identity {
        builder = builder.identity(
            reqwest::Identity::from_pem(format!("{}{}", leaf.cert, leaf.key).as_bytes())
                .expect("a client identity"),
        );
    }
    builder.build().expect("an HTTPS client")
}

fn https(app: &TestApp, path: &str) -> String {
    format!("https://localhost:{}{path}", app.http_addr.port())
}

/// A gRPC channel over TLS trusting only `ca`, presenting `identity` if given.
async fn grpc_channel(
    app: &TestApp,
    ca: &Ca,
    identity: Option<&Leaf>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    if let Some(leaf) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(&leaf.cert, &leaf.key));
    }
    Channel::from_shared(format!("https://127.0.0.1:{}", app.grpc_addr.port()))
        .expect("a valid URI")
        .tls_config(tls)
        .expect("a TLS configuration")
        .connect()
        .await
}

/// Waits until `/readyz` answers 200 to `client`.
async fn wait_until_ready(app: &TestApp, client: &reqwest::Client) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let answer = client.get(https(app, "/readyz")).send().await;
        if answer
            .as_ref()
            .is_ok_and(|response| response.status() == StatusCode::OK)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "suivi is not ready over HTTPS: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the series `series` (name and labels, as exported) in `/metrics`.
async fn metric(app: &TestApp, client: &reqwest::Client, series: &str) -> f64 {
    let text = client
        .get(https(app, "/metrics"))
        .send()
        .await
        .expect("GET /metrics answers")
        .text()
        .await
        .expect("a body");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics: {text}"))
}

/// Waits until the series `series` is above `floor`.
async fn wait_for_metric_above(app: &TestApp, client: &reqwest::Client, series: &str, floor: f64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let value = metric(app, client, series).await;
        if value > floor {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} stayed at {value}, not above {floor}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn refused(listener: &str, reason: &str) -> String {
    format!(r#"suivi_connections_refused_total{{transport="{listener}",reason="{reason}"}}"#)
}

#[tokio::test]
async fn https_serves_health_and_events_over_http2_and_http1() {
    let ca = Ca::new("suivi test CA");
    let files = Files::new(&ca.server(), None);
    let mut app = start_app_with(|settings| files.settings(settings, false)).await;
    let client = https_client(&ca, None);
    wait_until_ready(&app, &client).await;

    let health = client
        .get(https(&app, "/healthz"))
        .send()
        .await
        .expect("GET /healthz over HTTPS");
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(
        health.version(),
        reqwest::Version::HTTP_2,
        "h2 is offered by ALPN"
    );

    let answer = client
        .post(https(&app, "/v1/events"))
        .header("content-type", "application/json")
        .body(json_batch(&enrolments("tls-http", "gendarmerie", 3)).to_string())
        .send()
        .await
        .expect("POST /v1/events over HTTPS");
    assert_eq!(answer.status(), StatusCode::OK);
    let answer: Value = answer.json().await.expect("a JSON answer");
    assert_eq!(answer["accepted"], 3, "{answer}");

    let http1 = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(ca.pem().as_bytes()).expect("a CA certificate"),
        )
        .http1_only()
        .build()
        .expect("an HTTP/1 client");
    let health = http1
        .get(https(&app, "/healthz"))
        .send()
        .await
        .expect("GET /healthz over HTTPS/1.1");
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.version(), reqwest::Version::HTTP_11);
    app.stop().await;
}

#[tokio::test]
async fn grpc_over_tls_ingests_and_answers_health() {
    let ca = Ca::new("suivi test CA");
    let files = Files::new(&ca.server(), None);
    let mut app = start_app_with(|settings| files.settings(settings, false)).await;
    wait_until_ready(&app, &https_client(&ca, None)).await;
    let channel = grpc_channel(&app, &ca, None)
        .await
        .expect("a gRPC channel over TLS");

    let response = IngestServiceClient::new(channel.clone())
        .ingest(proto_batch(&enrolments("tls-grpc", "gendarmerie", 2)))
        .await
        .expect("Ingest over TLS")
        .into_inner();
    assert_eq!(response.accepted, 2);

    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("a health check over TLS")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    app.stop().await;
}

#[tokio::test]
async fn plain_text_and_silence_on_a_tls_listener_are_refused_and_counted() {
    let ca = Ca::new("suivi test CA");
    let files = Files::new(&ca.server(), None);
    let mut app = start_app_with(|settings| {
        files.settings(settings, false);
        settings.header_read_timeout = Duration::from_millis(500);
    })
    .await;
    let client = https_client(&ca, None);
    wait_until_ready(&app, &client).await;
    let mut before = Vec::new();
    for listener in ["http", "grpc"] {
        for reason in ["tls_handshake_failed", "handshake_timeout"] {
            before.push((
                refused(listener, reason),
                metric(&app, &client, &refused(listener, reason)).await,
            ));
        }
    }

    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", app.http_addr.port()))
        .send()
        .await;
    assert!(
        plain.is_err(),
        "plain HTTP to the TLS listener is refused: {plain:?}"
    );
    let plain = match Channel::from_shared(format!("http://{}", app.grpc_addr))
        .expect("a valid URI")
        .connect()
        .await
    {
        Ok(channel) => IngestServiceClient::new(channel)
            .ingest(proto_batch(&enrolments("tls-plain", "gendarmerie", 1)))
            .await
            .map(|_| ())
            .map_err(|status| status.to_string()),
        Err(error) => Err(error.to_string()),
    };
    assert!(
        plain.is_err(),
        "plain gRPC to the TLS listener is refused: {plain:?}"
    );
    // Connections that never start their handshake are closed after header_read_timeout.
    let silent = [
        tokio::net::TcpStream::connect(app.http_addr)
            .await
            .expect("connects"),
        tokio::net::TcpStream::connect(app.grpc_addr)
            .await
            .expect("connects"),
    ];

    for (series, was) in before {
        wait_for_metric_above(&app, &client, &series, was).await;
    }
    drop(silent);
    app.stop().await;
}

#[tokio::test]
async fn with_a_client_ca_only_clients_with_a_certificate_it_signed_are_served() {
    let ca = Ca::new("suivi test CA");
    let clients = Ca::new("partners CA");
    let strangers = Ca::new("another CA");
    let files = Files::new(&ca.server(), Some(&clients));
    let mut app = start_app_with(|settings| files.settings(settings, true)).await;
    let partner = clients.client("partner-1");
    let client = https_client(&ca, Some(&partner));
    wait_until_ready(&app, &client).await;
    let was = [
        metric(&app, &client, &refused("http", "tls_handshake_failed")).await,
        metric(&app, &client, &refused("grpc", "tls_handshake_failed")).await,
    ];

    let health = client
        .get(https(&app, "/healthz"))
        .send()
        .await
        .expect("a partner's certificate is accepted");
    assert_eq!(health.status(), StatusCode::OK);
    let channel = grpc_channel(&app, &ca, Some(&partner))
        .await
        .expect("a gRPC channel with a partner's certificate");
    let response = IngestServiceClient::new(channel)
        .ingest(proto_batch(&enrolments("mtls", "gendarmerie", 1)))
        .await
        .expect("Ingest with a partner's certificate")
        .into_inner();
    assert_eq!(response.accepted, 1);

    let stranger = strangers.client("stranger");
    for (who, identity) in [
        ("no certificate", None),
        ("a certificate of another CA", Some(&stranger)),
    ] {
        let answer = https_client(&ca, identity)
            .get(https(&app, "/healthz"))
            .send()
            .await;
        assert!(answer.is_err(), "HTTPS with {who} is refused: {answer:?}");
        let call = match grpc_channel(&app, &ca, identity).await {
            Ok(channel) => HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|_| ())
                .map_err(|status| status.to_string()),
            Err(error) => Err(error.to_string()),
        };
        assert!(call.is_err(), "gRPC with {who} is refused: {call:?}");
    }
    wait_for_metric_above(
        &app,
        &client,
        &refused("http", "tls_handshake_failed"),
        was[0],
    )
    .await;
    wait_for_metric_above(
        &app,
        &client,
        &refused("grpc", "tls_handshake_failed"),
        was[1],
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_replaced_certificate_is_served_to_new_connections_and_open_ones_keep_theirs() {
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let files = Files::new(&old_ca.server(), None);
    let mut app = start_app_with(|settings| files.settings(settings, false)).await;
    let open = https_client(&old_ca, None);
    wait_until_ready(&app, &open).await;
    let reloads = metric(&app, &open, "suivi_tls_reloads_total").await;
    assert!(
        https_client(&new_ca, None)
            .get(https(&app, "/healthz"))
            .send()
            .await
            .is_err(),
        "the new CA's clients do not trust the old certificate"
    );

    files.replace(&new_ca.server());

    let deadline = Instant::now() + PATIENCE;
    loop {
        // A new client each time: a new connection, which must see the new certificate.
        let answer = https_client(&new_ca, None)
            .get(https(&app, "/healthz"))
            .send()
            .await;
        if answer.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate is not served after {PATIENCE:?}: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let grpc = grpc_channel(&app, &new_ca, None)
        .await
        .expect("gRPC serves the new certificate too");
    HealthClient::new(grpc)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("a health check with the new certificate");
    assert!(
        https_client(&old_ca, None)
            .get(https(&app, "/healthz"))
            .send()
            .await
            .is_err(),
        "new connections no longer get the old certificate"
    );
    // The connection opened before the change (HTTP/2, kept in the client's pool) still works.
    let health = open
        .get(https(&app, "/healthz"))
        .send()
        .await
        .expect("the open connection keeps its certificate");
    assert_eq!(health.status(), StatusCode::OK);
    assert!(metric(&app, &open, "suivi_tls_reloads_total").await > reloads);
    app.stop().await;
}

#[tokio::test]
async fn a_broken_replacement_leaves_the_old_certificate_in_use() {
    let ca = Ca::new("suivi test CA");
    let files = Files::new(&ca.server(), None);
    let mut app = start_app_with(|settings| files.settings(settings, false)).await;
    let client = https_client(&ca, None);
    wait_until_ready(&app, &client).await;
    let failures = metric(&app, &client, "suivi_tls_reload_failures_total").await;

    // Half a certificate, as a copy cut short would leave it.
    let cert = std::fs::read_to_string(files.path("cert.pem")).expect("the certificate");
    std::fs::write(files.path("cert.pem"), &cert[..cert.len() / 2]).expect("written");
    wait_for_metric_above(&app, &client, "suivi_tls_reload_failures_total", failures).await;

    for attempt in 0..3 {
        let health = https_client(&ca, None)
            .get(https(&app, "/healthz"))
            .send()
            .await
            .unwrap_or_else(|error| {
                panic!("attempt {attempt}: the old certificate is still served: {error}")
            });
        assert_eq!(health.status(), StatusCode::OK);
    }
    let channel = grpc_channel(&app, &ca, None)
        .await
        .expect("gRPC still serves the old certificate");
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("a health check with the old certificate");
    app.stop().await;
}

/// Runs `suivi serve` with `env` and returns its exit code and standard error, once it exits.
fn refused_start(data_dir: &Path, env: &[(&str, PathBuf)]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_suivi"))
        .arg("serve")
        .env("SUIVI_GRPC_ADDR", "127.0.0.1:0")
        .env("SUIVI_HTTP_ADDR", "127.0.0.1:0")
        .env("SUIVI_DATA_DIR", data_dir)
        .env_remove("SUIVI_CONFIG")
        .envs(env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the suivi binary runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("suivi can be waited for").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("suivi {env:?} kept running: it should have refused its TLS settings");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("suivi's output");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn tls_settings_are_checked_before_serving() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let ca = Ca::new("suivi test CA");
    let files = Files::new(&ca.server(), None);
    std::fs::write(files.path("not-pem.pem"), "not a certificate").expect("written");
    for (env, named) in [
        (vec![("SUIVI_TLS_CERT", files.path("cert.pem"))], "tls_cert"),
        (
            vec![
                ("SUIVI_TLS_CERT", files.path("nowhere.pem")),
                ("SUIVI_TLS_KEY", files.path("key.pem")),
            ],
            "tls_cert",
        ),
        (
            vec![
                ("SUIVI_TLS_CERT", files.path("cert.pem")),
                ("SUIVI_TLS_KEY", files.path("not-pem.pem")),
            ],
            "tls_key",
        ),
        (
            vec![
                ("SUIVI_TLS_CERT", files.path("cert.pem")),
                ("SUIVI_TLS_KEY", files.path("key.pem")),
                ("SUIVI_TLS_CLIENT_CA", files.path("not-pem.pem")),
            ],
            "tls_client_ca",
        ),
    ] {
        let (code, stderr) = refused_start(&dir.path().join("data"), &env);
        assert_eq!(code, Some(2), "{env:?}: {stderr}");
        assert!(
            stderr.contains(named),
            "the refusal names {named}: {stderr}"
        );
    }
}

/// The whole trust boundary at once, as a partner's platform meets it: `suivi simulate` sends
/// over TLS (trusting the deployment's CA) with a token made by `suivi credentials`.
#[tokio::test]
async fn suivi_simulate_sends_over_tls_with_a_token() {
    let ca = Ca::new("suivi test CA");
    let files = Files::new(&ca.server(), None);
    std::fs::write(files.path("ca.pem"), ca.pem()).expect("written");
    let credentials = files.path("credentials.toml");
    let token = crate::auth::add(&credentials, &["platform", "--admin"]);
    let mut app = start_app_with(|settings| {
        files.settings(settings, false);
        settings.credentials = Some(credentials.clone());
    })
    .await;
    wait_until_ready(&app, &https_client(&ca, None)).await;
    let endpoint = format!("https://localhost:{}", app.grpc_addr.port());
    let ca_path = files.path("ca.pem");
    let sent = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_suivi"))
            .args([
                "simulate", "--grpc", &endpoint, "--scale", "0.002", "--seed", "3",
            ])
            .arg("--ca-cert")
            .arg(&ca_path)
            .env("SUIVI_TOKEN", token)
            .output()
            .expect("suivi simulate runs")
    })
    .await
    .expect("the thread ends");
    let stdout = String::from_utf8_lossy(&sent.stdout);
    assert!(
        sent.status.success() && stdout.contains(" 0 rejected"),
        "{stdout}{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    app.stop().await;
}
