//! The harness of every test that runs the real `suivi` binary: [`Suivi::start`] runs
//! `suivi serve` on ports of its own with the test's data directory and environment, and waits
//! until it logs that it is ready (JSON or text logs); the test then talks to it over HTTP and
//! gRPC, stops it with SIGTERM ([`Suivi::terminate`]) or kills it ([`Suivi::kill`]). Dropping it
//! kills the process, so that no test leaves one behind.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use suivi::proto::ingest_service_client::IngestServiceClient;
use tonic::transport::Channel;

use super::PSEUDONYM_KEY;

/// How long a start or a stop of the binary may take.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// A running `suivi serve` child process. Dropping it kills the process, so that no test leaves
/// one behind, even when it fails. The Kafka tests run it too.
pub struct Suivi {
    child: Child,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    log: Arc<Mutex<String>>,
    pub http: reqwest::Client,
}

impl Suivi {
    /// Starts `suivi serve` on ports of 127.0.0.1 it picks itself, with its data in `data_dir`
    /// and the settings of `env`, and waits until it logs that it is ready (its addresses are
    /// read from that JSON log line).
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Suivi {
        let mut command = Command::new(env!("CARGO_BIN_EXE_suivi"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SUIVI_") {
                command.env_remove(name);
            }
        }
        // Flags, which win over any environment a test gives (a deployment's own addresses
        // and data directory, say): ports of its own, the test's data directory.
        command
            .arg("serve")
            .arg("--grpc-addr=127.0.0.1:0")
            .arg("--http-addr=127.0.0.1:0")
            .arg(format!("--data-dir={}", data_dir.display()))
            .env("SUIVI_SNAPSHOT_INTERVAL", "1h")
            .env("SUIVI_PSEUDONYM_KEY", PSEUDONYM_KEY)
            .env("SUIVI_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the suivi binary runs");
        let stderr = child.stderr.take().expect("suivi's stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (ready, addresses) = mpsc::channel();
        let kept = log.clone();
        // Reads the log to its end, so that suivi never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if let Some(addresses) = ready_addresses(&line) {
                    let _ = ready.send(addresses);
                }
                let mut kept = kept.lock().expect("the log lock");
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        let mut suivi = Suivi {
            child,
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            http: reqwest::Client::new(),
        };
        match addresses.recv_timeout(START_PATIENCE) {
            Ok((grpc, http)) => {
                suivi.grpc_addr = grpc;
                suivi.http_addr = http;
                suivi
            }
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "suivi did not log that it is ready within {START_PATIENCE:?}: {}",
                suivi.log()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = suivi.child.wait();
                panic!(
                    "suivi ended before it was ready ({status:?}): {}",
                    suivi.log()
                )
            }
        }
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("the log lock").clone()
    }

    /// Kills it with SIGKILL (what `Child::kill` sends) and returns its log.
    pub fn kill(mut self) -> String {
        self.child.kill().expect("suivi can be killed");
        let status = self.child.wait().expect("suivi can be waited for");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "suivi died of the SIGKILL, not before: {status}\n{}",
            self.log()
        );
        self.wait_for_log_end();
        self.log()
    }

    /// Stops it with SIGTERM and returns how it ended. The runtime's tasks run meanwhile: a gRPC
    /// channel of the test must answer suivi's goodbye for suivi to stop without waiting for its
    /// shutdown grace.
    pub async fn terminate(mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("suivi can be waited for") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "suivi still runs {START_PATIENCE:?} after SIGTERM: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Gives the log reader a moment to take the last lines of a process that ended.
    fn wait_for_log_end(&self) {
        std::thread::sleep(Duration::from_millis(20));
    }

    pub async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("http://{}{path}", self.http_addr))
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {path} gets an answer: {error}"));
        let status = response.status();
        let text = response.text().await.expect("a body");
        assert_eq!(status, StatusCode::OK, "GET {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|error| panic!("GET {path}: {error}: {text}"))
    }

    pub async fn ingest_client(&self) -> IngestServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.grpc_addr))
            .expect("a valid URI")
            .connect()
            .await
            .expect("connects to suivi's gRPC API");
        IngestServiceClient::new(channel)
    }
}

impl Drop for Suivi {
    fn drop(&mut self) {
        // A no-op when the process was already waited for.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gRPC and HTTP addresses in suivi's "suivi is ready" log line, JSON or text.
fn ready_addresses(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    if let Ok(record) = serde_json::from_str::<Value>(line) {
        let fields = &record["fields"];
        if fields["message"] != json!("suivi is ready") {
            return None;
        }
        return Some((
            fields["grpc"].as_str()?.parse().ok()?,
            fields["http"].as_str()?.parse().ok()?,
        ));
    }
    if !line.contains("suivi is ready") {
        return None;
    }
    let field = |name: &str| {
        line.split_whitespace()
            .filter_map(|word| word.strip_prefix(name))
            .find_map(|addr| {
                addr.trim_matches(|c: char| !c.is_ascii_alphanumeric())
                    .parse()
                    .ok()
            })
    };
    Some((field("grpc=")?, field("http=")?))
}
