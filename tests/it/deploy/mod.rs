//! The deployment files in `deploy/`, the `Dockerfile` and `.dockerignore`, checked for real
//! where no container engine runs: a real Prometheus (Debian's package, installed by
//! scripts/test) scrapes a running suivi with the scrape configuration and alert rules of
//! `deploy/prometheus`, and every query of the Grafana dashboard returns data from it; every
//! metric the dashboard and the alerts name is one suivi exports; the real `suivi` binary starts
//! with the environment of the image, of the compose file and of the Kubernetes manifests, and
//! answers the compose healthcheck; the manifests, the compose file and the Grafana
//! provisioning agree on ports, probe paths, users, mounts and addresses. suivi consumes Kafka
//! in these tests as the deployments turn it on, from a Kafka-protocol broker of the test's own
//! (librdkafka's mock cluster). (`promtool check` and `test rules`, and `docker-compose config`,
//! run in scripts/test itself.)

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use reqwest::StatusCode;
use serde_json::{Value, json};
use suivi::config::Settings;
use suivi::simulate::kafka::message;

use crate::helpers::{Kind, Suivi, TestApp, event, json_batch, secret, start_app_with};

mod compose;
mod docker;
mod kubernetes;
mod prometheus;

use compose::{ComposeCredentials, compose_env, compose_events_partitions, suivi_instances};
use docker::{dockerfile, dockerfile_env, dockerfile_user};
use kubernetes::{base64url_decoded_len, container_env, mounted_secret_file};
use prometheus::{bearer_client, collect_panels, dashboard, has_series};

/// The campaign the dashboard's `$campaign` stands for in these tests: registered, with a target.
const CAMPAIGN: &str = "gendarmerie";
/// suivi's `shutdown_grace` when the environment does not set it.
const DEFAULT_SHUTDOWN_GRACE: Duration = suivi::config::DEFAULT_SHUTDOWN_GRACE;
/// Series that Prometheus writes itself for every scrape, which suivi does not export.
const PROMETHEUS_SERIES: [&str; 1] = ["up"];
/// How long a test waits for suivi to consume Kafka or for the group to rebalance.
const KAFKA_PATIENCE: Duration = Duration::from_secs(60);
/// suivi's partials topic (`SUIVI_KAFKA_PARTIALS_TOPIC`) when the environment does not set it.
const DEFAULT_KAFKA_PARTIALS_TOPIC: &str = "{topic}.partials";
/// The ConfigMap that turns Kafka on in the Kubernetes manifests (see deploy/README.md).
const KUBERNETES_KAFKA_CONFIG_MAP: &str = "suivi-kafka";
/// The Secret that holds suivi's credentials file and /metrics token in the Kubernetes manifests.
const KUBERNETES_CREDENTIALS_SECRET: &str = "suivi-credentials";
/// The Secret that holds the pseudonymisation key and the PostgreSQL URL in the manifests.
const KUBERNETES_SUIVI_SECRET: &str = "suivi";

#[tokio::test]
async fn suivi_starts_with_each_deployments_environment_and_passes_the_healthcheck() {
    let compose_file = yaml(&deploy("docker-compose.yml"));
    let instances = suivi_instances(&compose_file);
    let (_, first) = instances.first_key_value().expect("suivi instances");
    let healthcheck = strings(&first["healthcheck"]["test"]);
    assert_eq!(healthcheck[..3], ["CMD", "bash", "-c"], "{healthcheck:?}");
    let http_port = port_of(&compose_env(first)["SUIVI_HTTP_ADDR"]);
    // The healthcheck's script, asking `port` instead of the container's; bash's complaint
    // about a refused connection is expected, and silenced.
    let check = |port: u16| {
        let script = healthcheck[3].replace(
            &format!("127.0.0.1/{http_port}"),
            &format!("127.0.0.1/{port}"),
        );
        assert_ne!(
            script, healthcheck[3],
            "the healthcheck asks 127.0.0.1/{http_port}"
        );
        Command::new("bash")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("bash runs the healthcheck")
    };
    assert!(
        !check(free_port()).success(),
        "the healthcheck fails where nothing listens"
    );
    let files = tempfile::tempdir().expect("a temporary dir");

    // The image: its credentials file, mounted where SUIVI_CREDENTIALS says, here with an
    // operator's credential; no /metrics token is in the image.
    let mut docker = dockerfile_env(&dockerfile());
    let docker_credentials = files.path().join("credentials.toml");
    let operator = add_credential(&docker_credentials, "ops", &["--operator"]);
    docker.insert(
        "SUIVI_CREDENTIALS".to_owned(),
        docker_credentials.display().to_string(),
    );
    let docker_access = Access {
        token: Some(operator),
        metrics_token: None,
    };
    // Kafka, where a deployment turns it on, is a broker of the test's own, one for each: a
    // member that left a group still holds up the mock cluster's next rebalance for a session.
    // Compose: each instance's environment, with the files its credentials service makes where
    // suivi finds them.
    let made = ComposeCredentials::make(&compose_file);
    let compose_kafka = KafkaScene::start().await;
    let compose: Vec<BTreeMap<String, String>> = instances
        .values()
        .map(|instance| {
            let mut env = compose_env(instance);
            for name in ["SUIVI_CREDENTIALS", "SUIVI_CONFIG"] {
                let file = made.file(instance, &env[name]);
                env.insert(name.to_owned(), file.display().to_string());
            }
            compose_kafka.point(&mut env);
            // The harness gives suivi a pseudonymisation key in its environment, which wins over
            // the settings file: the one the file gives all three instances.
            env.insert("SUIVI_PSEUDONYM_KEY".to_owned(), made.pseudonym_key.clone());
            env
        })
        .collect();
    let prometheus_token = compose_file["services"]["prometheus"].clone();
    let prometheus_config = yaml(&deploy("prometheus/prometheus.yml"));
    let token_file = made.file(
        &prometheus_token,
        prometheus_config["scrape_configs"][0]["authorization"]["credentials_file"]
            .as_str()
            .expect("the scrape job's token file"),
    );
    let compose_access = Access {
        token: Some(made.admin_token.clone()),
        metrics_token: Some(
            std::fs::read_to_string(token_file)
                .expect("the token file")
                .trim()
                .to_owned(),
        ),
    };
    // The manifests: the placeholder Secret's credentials file, mounted as the StatefulSet
    // mounts it (no credential: every request is refused), a /metrics token and a
    // pseudonymisation key in the Secrets, and each pod's environment as the kubelet makes it.
    let scale_out = kubernetes::manifests(&[]);
    let single = kubernetes::manifests(&[kubernetes::SINGLE]);
    let placeholder = files.path().join("kubernetes-credentials.toml");
    let (pod, container) = stateful_pod(&scale_out);
    std::fs::write(
        &placeholder,
        mounted_secret_file(
            pod,
            container,
            &container_env(container)["SUIVI_CREDENTIALS"],
            &scale_out,
        ),
    )
    .expect("the placeholder's credentials file");
    let kubernetes_metrics_token = suivi::auth::file::new_token();
    let mut cluster = Cluster::default();
    cluster.secret(
        KUBERNETES_CREDENTIALS_SECRET,
        "metrics-token",
        &kubernetes_metrics_token,
    );
    let kubernetes_access = || Access {
        token: None,
        metrics_token: Some(kubernetes_metrics_token.clone()),
    };
    let with_placeholder = |mut pods: Vec<BTreeMap<String, String>>| {
        for env in &mut pods {
            env.insert(
                "SUIVI_CREDENTIALS".to_owned(),
                placeholder.display().to_string(),
            );
        }
        pods
    };
    // With the component single, the pod starts without Kafka and without a key of the
    // Secret's: one replica.
    let kubernetes_single = with_placeholder(cluster.pods(&single).expect("single starts"));
    assert_eq!(kubernetes_single.len(), 1);
    // The scale-out pods do not: the kubelet refuses them without suivi's pseudonym-key, and
    // without suivi-kafka's brokers.
    let refused = cluster.pods(&scale_out).unwrap_err();
    assert!(refused.contains("pseudonym-key"), "{refused}");
    cluster.secret(
        KUBERNETES_SUIVI_SECRET,
        "pseudonym-key",
        crate::helpers::PSEUDONYM_KEY,
    );
    let refused = cluster.pods(&scale_out).unwrap_err();
    assert!(refused.contains(KUBERNETES_KAFKA_CONFIG_MAP), "{refused}");
    // With the ConfigMap that turns Kafka on, holding only the brokers, they do.
    let kubernetes_kafka = KafkaScene::start().await;
    cluster.config_map(
        KUBERNETES_KAFKA_CONFIG_MAP,
        "brokers",
        &kubernetes_kafka.bootstrap,
    );
    let mut kubernetes_scale_out = with_placeholder(cluster.pods(&scale_out).expect("pods start"));
    assert_eq!(kubernetes_scale_out.len(), 3);
    for env in &mut kubernetes_scale_out {
        kubernetes_kafka.point(env);
    }
    for (origin, pods, kafka_on, access) in [
        ("Dockerfile", vec![docker], false, docker_access),
        ("docker-compose.yml", compose, true, compose_access),
        (
            "kubernetes with the component single",
            kubernetes_single,
            false,
            kubernetes_access(),
        ),
        (
            "kubernetes with the ConfigMap suivi-kafka",
            kubernetes_scale_out,
            true,
            kubernetes_access(),
        ),
    ] {
        let data_dirs: Vec<tempfile::TempDir> = pods
            .iter()
            .map(|_| tempfile::tempdir().expect("a temporary dir"))
            .collect();
        // Started together, as compose and the StatefulSet (podManagementPolicy: Parallel) start
        // them: each is ready once the group has settled with all of them.
        let running: Vec<Suivi> = std::thread::scope(|scope| {
            let starting: Vec<_> = pods
                .iter()
                .zip(&data_dirs)
                .map(|(env, data_dir)| {
                    scope.spawn(move || {
                        let env = runnable(env);
                        let env: Vec<(&str, &str)> = env
                            .iter()
                            .map(|(name, value)| (*name, value.as_str()))
                            .collect();
                        Suivi::start(data_dir.path(), &env)
                    })
                })
                .collect();
            starting
                .into_iter()
                .map(|start| start.join().expect("suivi starts"))
                .collect()
        });
        for suivi in &running {
            let status = check(suivi.http_addr.port());
            assert!(
                status.success(),
                "the compose healthcheck passes on suivi ({origin})"
            );
            access.check(suivi.http_addr, origin).await;
        }
        let metrics = match &access.metrics_token {
            Some(token) => bearer_client(token),
            None => reqwest::Client::new(),
        };
        // Each process has metrics of its own: the Kafka series are there when Kafka is on,
        // and the instances share the topic's partitions, each getting some.
        let deadline = Instant::now() + KAFKA_PATIENCE;
        loop {
            let mut assigned = Vec::new();
            let mut texts = Vec::new();
            for suivi in &running {
                let text = metrics
                    .get(format!("http://{}/metrics", suivi.http_addr))
                    .send()
                    .await
                    .expect("GET /metrics answers")
                    .text()
                    .await
                    .expect("a body");
                assigned.push(text.lines().find_map(|line| {
                    line.strip_prefix(suivi::telemetry::KAFKA_ASSIGNED)?
                        .strip_prefix(' ')?
                        .parse::<f64>()
                        .ok()
                }));
                texts.push(text);
            }
            if !kafka_on {
                assert!(
                    assigned.iter().all(Option::is_none),
                    "Kafka is off with {origin}"
                );
                break;
            }
            let shared = assigned.iter().flatten().sum::<f64>();
            if assigned
                .iter()
                .all(|partitions| partitions.is_some_and(|partitions| partitions > 0.0))
                && shared == f64::from(KafkaScene::PARTITIONS)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the instances ({origin}) did not share the partitions in {KAFKA_PATIENCE:?} \
                 ({assigned:?}):\n{}",
                texts.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for suivi in running {
            let status = suivi.terminate().await;
            assert!(status.success(), "suivi ({origin}) stopped with {status}");
        }
        drop(data_dirs);
    }
    drop((compose_kafka, kubernetes_kafka, made, files));
}

/// A deployment's environment as the harness gives it, but for PostgreSQL: its host is the
/// compose network's, so the test points it at a port where nothing listens (the sink then only
/// reports failures; suivi starts and serves all the same).
fn runnable(env: &BTreeMap<String, String>) -> Vec<(&str, String)> {
    env.iter()
        .map(|(name, value)| {
            let value = if name == "SUIVI_POSTGRES_URL" {
                let (before, after) = value.split_once('@').expect("a URL with a host");
                let database = after.split_once('/').map_or("", |(_, database)| database);
                format!("{before}@127.0.0.1:{}/{database}", free_port())
            } else {
                value.clone()
            };
            (name.as_str(), value)
        })
        .collect()
}

/// The pod template and the container `suivi` of the StatefulSet of `manifests`.
fn stateful_pod(manifests: &[Value]) -> (&Value, &Value) {
    let statefulset = manifests
        .iter()
        .find(|document| document["kind"] == json!("StatefulSet"))
        .expect("a StatefulSet");
    let pod = &statefulset["spec"]["template"]["spec"];
    let container = pod["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|container| container["name"] == json!("suivi"))
        .expect("a container named suivi");
    (pod, container)
}

/// The Secrets and ConfigMaps of a cluster, by (name, key), to make pods' environments from.
#[derive(Default)]
struct Cluster {
    secrets: BTreeMap<(String, String), String>,
    config_maps: BTreeMap<(String, String), String>,
}

impl Cluster {
    fn secret(&mut self, name: &str, key: &str, value: &str) {
        self.secrets
            .insert((name.to_owned(), key.to_owned()), value.to_owned());
    }

    fn config_map(&mut self, name: &str, key: &str, value: &str) {
        self.config_maps
            .insert((name.to_owned(), key.to_owned()), value.to_owned());
    }

    /// The environment of each pod of the StatefulSet of `manifests` (suivi-0, suivi-1, …), as
    /// the kubelet makes it: plain values, the Secrets' and ConfigMaps' keys (an optional one
    /// left out when missing), the pod's name; or why the kubelet refuses to start them (a
    /// required key missing).
    fn pods(&self, manifests: &[Value]) -> Result<Vec<BTreeMap<String, String>>, String> {
        let statefulset = manifests
            .iter()
            .find(|document| document["kind"] == json!("StatefulSet"))
            .expect("a StatefulSet");
        let name = statefulset["metadata"]["name"].as_str().expect("a name");
        let replicas = statefulset["spec"]["replicas"].as_u64().expect("replicas");
        let (_, container) = stateful_pod(manifests);
        (0..replicas)
            .map(|ordinal| {
                let pod_name = format!("{name}-{ordinal}");
                let mut env = BTreeMap::new();
                for var in container["env"].as_array().expect("an env list") {
                    let variable = var["name"].as_str().expect("a name").to_owned();
                    let from = &var["valueFrom"];
                    let value = if let Some(value) = var["value"].as_str() {
                        Some(value.to_owned())
                    } else if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
                        assert_eq!(path, "metadata.name", "{var}");
                        Some(pod_name.clone())
                    } else {
                        let (store, reference) = if from["secretKeyRef"].is_object() {
                            (&self.secrets, &from["secretKeyRef"])
                        } else {
                            (&self.config_maps, &from["configMapKeyRef"])
                        };
                        let key = (
                            reference["name"].as_str().expect("a name").to_owned(),
                            reference["key"].as_str().expect("a key").to_owned(),
                        );
                        match store.get(&key) {
                            Some(value) => Some(value.clone()),
                            None if reference["optional"] == json!(true) => None,
                            None => return Err(format!("{pod_name}: {key:?} is missing")),
                        }
                    };
                    if let Some(value) = value {
                        env.insert(variable, value);
                    }
                }
                Ok(env)
            })
            .collect()
    }
}

/// What a deployment's suivi lets in: the token of a credential that reads the totals (none:
/// every request is refused), and the token `/metrics` requires (none: open).
struct Access {
    token: Option<String>,
    metrics_token: Option<String>,
}

impl Access {
    /// Checks that suivi at `addr` lets in what it should, and nothing else.
    async fn check(&self, addr: SocketAddr, origin: &str) {
        let status = |client: reqwest::Client, path: &str| {
            let url = format!("http://{addr}{path}");
            async move {
                client
                    .get(&url)
                    .send()
                    .await
                    .unwrap_or_else(|error| panic!("GET {url}: {error}"))
                    .status()
            }
        };
        let anyone = reqwest::Client::new;
        assert_eq!(
            status(anyone(), "/v1/totals").await,
            StatusCode::UNAUTHORIZED,
            "{origin}: no token, no figures"
        );
        let stranger = bearer_client(&suivi::auth::file::new_token());
        assert_eq!(
            status(stranger, "/v1/totals").await,
            StatusCode::UNAUTHORIZED,
            "{origin}: an unknown token"
        );
        if let Some(token) = &self.token {
            assert_eq!(
                status(bearer_client(token), "/v1/totals").await,
                StatusCode::OK,
                "{origin}: the deployment's credential"
            );
        }
        match &self.metrics_token {
            Some(token) => {
                assert_eq!(
                    status(anyone(), "/metrics").await,
                    StatusCode::UNAUTHORIZED,
                    "{origin}: /metrics needs its token"
                );
                assert_eq!(
                    status(bearer_client(token), "/metrics").await,
                    StatusCode::OK,
                    "{origin}: /metrics with its token"
                );
            }
            None => assert_eq!(status(anyone(), "/metrics").await, StatusCode::OK),
        }
        for open in ["/healthz", "/readyz"] {
            assert_eq!(
                status(anyone(), open).await,
                StatusCode::OK,
                "{origin}: {open}"
            );
        }
    }
}

/// Adds a credential to the credentials file `file` with `suivi credentials add` (the real
/// binary) and returns the token it prints.
fn add_credential(file: &Path, id: &str, role: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_suivi"))
        .arg("credentials")
        .arg(format!("--file={}", file.display()))
        .args(["add", id])
        .args(role)
        .env_remove("SUIVI_CREDENTIALS")
        .stdin(Stdio::null())
        .output()
        .expect("suivi credentials runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "suivi credentials add: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find(|line| line.starts_with(suivi::auth::file::TOKEN_PREFIX))
        .unwrap_or_else(|| panic!("a token in:\n{stdout}"))
        .to_owned()
}

#[test]
fn every_file_in_deploy_is_one_these_tests_check() {
    // A new file in deploy/ needs a check here or in scripts/test before it joins this list.
    let checked = BTreeSet::from([
        "README.md",
        "docker-compose.yml",
        "grafana/dashboards/suivi.json",
        "grafana/provisioning/dashboards/suivi.yml",
        "grafana/provisioning/datasources/prometheus.yml",
        "haproxy/haproxy.cfg",
        "kubernetes/credentials-secret.yaml",
        "kubernetes/kustomization.yaml",
        "kubernetes/service.yaml",
        "kubernetes/single/kustomization.yaml",
        "kubernetes/statefulset.yaml",
        "prometheus/alerts.test.yml",
        "prometheus/alerts.yml",
        "prometheus/prometheus.yml",
    ]);
    let mut files = BTreeSet::new();
    let mut dirs = vec![deploy("")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("a readable directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let relative = path.strip_prefix(deploy("")).expect("under deploy/");
                files.insert(relative.to_string_lossy().into_owned());
            }
        }
    }
    let files: BTreeSet<&str> = files.iter().map(String::as_str).collect();
    assert_eq!(files, checked);
}

/// Sends events that touch every family the dashboard graphs: both transports, a click, every
/// stage, a duplicate, rejections, a request refused whole, and a query.
async fn feed(app: &TestApp) {
    let at =
        |id: &str, kind: Kind, learner: &str| event(id, kind).campaign(CAMPAIGN).learner(learner);
    let response = app
        .ingest(&[
            event("dp-click-1", Kind::LinkClicked)
                .campaign(CAMPAIGN)
                .visitor("visitor-1"),
            at("dp-enrol-1", Kind::Enrolled, "u1"),
            at("dp-enrol-2", Kind::Enrolled, "u2"),
            at("dp-start-1", Kind::CourseStarted, "u1"),
            at("dp-chapter-1", Kind::ChapterCompleted, "u1").chapter(1),
            at("dp-cert-1", Kind::Certified, "u1"),
            at("dp-enrol-1", Kind::Enrolled, "u1"),
            at("", Kind::Enrolled, "u3"),
        ])
        .await;
    assert_eq!(
        (response.accepted, response.duplicates),
        (6, 1),
        "{response:?}"
    );
    let mut batch = json_batch(&[at("dp-enrol-3", Kind::Enrolled, "u3")]);
    batch
        .as_array_mut()
        .expect("a JSON array")
        .push(json!({"event_id": "dp-bad", "kind": "graduated"}));
    let (status, answer) = app.post_events(&batch).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], json!(1), "{answer}");
    let (status, _) = app.post_raw_events("not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app.get("/v1/totals").await;
    assert_eq!(status, StatusCode::OK);
}

/// Kafka as the deployments turn it on: a Kafka-protocol broker of the test's own (librdkafka's
/// mock cluster) with the default events topic, its partials topic and its dead-letter topic,
/// filled with learner events of a few partners (never [`CAMPAIGN`], whose figures the tests
/// check from gRPC and HTTP alone) and a message that is no event, to be dead-lettered.
struct KafkaScene {
    _cluster: MockCluster<'static, DefaultProducerContext>,
    bootstrap: String,
    /// Settings files of suivi processes pointed at it.
    dir: tempfile::TempDir,
}

impl KafkaScene {
    /// Partitions of the events topic (and of its partials topic), as the deployments create it.
    const PARTITIONS: i32 = 6;
    /// The partners whose events are produced; each gets two enrolled learners.
    const PARTNERS: [&str; 4] = ["pole-emploi", "afd", "dgafp", "academie-corse"];

    async fn start() -> KafkaScene {
        let cluster = MockCluster::new(1).expect("the mock cluster starts");
        let topic = suivi::config::DEFAULT_KAFKA_TOPIC;
        cluster
            .create_topic(topic, Self::PARTITIONS, 1)
            .expect("the events topic");
        // The mock cluster has no topic configuration: compaction is the real broker's concern.
        cluster
            .create_topic(
                &partials_topic(DEFAULT_KAFKA_PARTIALS_TOPIC, topic),
                Self::PARTITIONS,
                1,
            )
            .expect("the partials topic");
        cluster
            .create_topic(&Settings::default().kafka_dead_letter_topic(topic), 1, 1)
            .expect("the dead-letter topic");
        let bootstrap = cluster.bootstrap_servers();
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("acks", "all")
            .create()
            .expect("a producer");
        let mut messages = Vec::new();
        for (index, partner) in Self::PARTNERS.into_iter().enumerate() {
            assert_ne!(partner, CAMPAIGN);
            let at = |id: &str, kind: Kind, learner: &str| {
                event(&format!("dk-{partner}-{id}"), kind)
                    .campaign(partner)
                    .learner(learner)
            };
            for (number, ev) in [
                event(&format!("dk-{partner}-click"), Kind::LinkClicked)
                    .campaign(partner)
                    .visitor("visitor-k"),
                at("enrol-1", Kind::Enrolled, "k1"),
                at("enrol-2", Kind::Enrolled, "k2"),
                at("start-1", Kind::CourseStarted, "k1"),
                at("cert-1", Kind::Certified, "k1"),
            ]
            .iter()
            .enumerate()
            {
                // JSON and protobuf both.
                let protobuf = (index + number) % 2 == 1;
                let (key, payload) = message(&ev.proto(), protobuf);
                messages.push((key, payload, protobuf));
            }
        }
        messages.push(("pole-emploi".to_owned(), b"not an event".to_vec(), false));
        for (key, payload, protobuf) in &messages {
            let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic)
                .key(key.as_str())
                .payload(payload.as_slice());
            if *protobuf {
                record = record.headers(rdkafka::message::OwnedHeaders::new().insert(
                    rdkafka::message::Header {
                        key: "content-type",
                        value: Some("application/x-protobuf"),
                    },
                ));
            }
            producer
                .send(record, Duration::from_secs(30))
                .await
                .unwrap_or_else(|(error, _)| panic!("produced: {error}"));
        }
        KafkaScene {
            _cluster: cluster,
            bootstrap,
            dir: tempfile::tempdir().expect("a temporary dir"),
        }
    }

    /// A shorter session (the mock cluster waits for it before it rebalances a stable group),
    /// heartbeats and statistics (lag) more often than by default, to keep the tests short.
    const OPTIONS: [(&str, &str); 3] = [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
        ("statistics.interval.ms", "1000"),
    ];

    /// Kafka on, with the default topic and group, as the deployments have it, and the
    /// [`KafkaScene::OPTIONS`].
    fn turn_on(&self, settings: &mut Settings) {
        settings.kafka_brokers = Some(self.bootstrap.clone());
        for (key, value) in Self::OPTIONS {
            settings.kafka_options.insert(key.to_owned(), secret(value));
        }
    }

    /// Points the environment of a deployment's `suivi serve`, which turns Kafka on, at this
    /// broker, with the [`KafkaScene::OPTIONS`] added to a copy of its settings file (Kafka
    /// options are settings of the file only).
    fn point(&self, env: &mut BTreeMap<String, String>) {
        assert!(env.contains_key("SUIVI_KAFKA_BROKERS"), "Kafka on: {env:?}");
        env.insert("SUIVI_KAFKA_BROKERS".to_owned(), self.bootstrap.clone());
        let mut settings = env.get("SUIVI_CONFIG").map_or_else(String::new, |file| {
            std::fs::read_to_string(file).expect("the settings file")
        });
        settings.push_str("\n[kafka_options]\n");
        for (key, value) in Self::OPTIONS {
            settings.push_str(&format!("{key:?} = {value:?}\n"));
        }
        let file = self.dir.path().join("suivi.toml");
        std::fs::write(&file, settings).expect("the settings file");
        env.insert("SUIVI_CONFIG".to_owned(), file.display().to_string());
    }

    /// Waits until `app` has counted every partner's events, dead-lettered the garbage, and
    /// reported its partitions' lag. (Metrics are the process's, shared with other tests when
    /// they run in one process: the counters say what this `app` consumed.)
    async fn wait_until_consumed(&self, app: &TestApp) {
        let deadline = Instant::now() + KAFKA_PATIENCE;
        loop {
            let mut waiting = Vec::new();
            for partner in Self::PARTNERS {
                let counters = app.campaign_json(partner).await;
                if counters["enrolled"] != json!(2) {
                    waiting.push(format!("{partner}: {counters}"));
                }
            }
            let (_, text) = app.get_text("/metrics").await;
            for family in [
                suivi::telemetry::KAFKA_DEAD_LETTERS,
                suivi::telemetry::KAFKA_LAG,
            ] {
                if !has_series(&text, family) {
                    waiting.push(format!("no {family} series"));
                }
            }
            if waiting.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Kafka not consumed after {KAFKA_PATIENCE:?}:\n{}\n{text}",
                waiting.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A second instance joins the group, takes partitions from `app` (which releases their
    /// campaigns), and leaves again.
    async fn rebalance(&self, app: &TestApp) {
        let revokes = || async {
            let (_, text) = app.get_text("/metrics").await;
            let revokes = text.lines().find_map(|line| {
                line.strip_prefix(suivi::telemetry::KAFKA_REBALANCES)?
                    .strip_prefix("{kind=\"revoke\"} ")?
                    .parse::<f64>()
                    .ok()
            });
            (revokes.unwrap_or(0.0), text)
        };
        let (before, _) = revokes().await;
        // Not ready until its first assignment, which waits for the group to rebalance.
        let mut second = start_app_with(|settings| self.turn_on(settings)).await;
        second.wait_until_ready_within(KAFKA_PATIENCE).await;
        let deadline = Instant::now() + KAFKA_PATIENCE;
        loop {
            // One recorder for the process: `app`'s /metrics shows both instances' series.
            let (now, text) = revokes().await;
            if now > before && text.contains(suivi::telemetry::CAMPAIGNS_RELEASED) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no partition revoked after {KAFKA_PATIENCE:?} with a second instance:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        second.stop().await;
    }
}

/// The partials topic of the events topic `topic`, by the template `SUIVI_KAFKA_PARTIALS_TOPIC`
/// (as the dead-letter topic's, `{topic}` stands for the events topic).
fn partials_topic(template: &str, topic: &str) -> String {
    template.trim().replace("{topic}", topic)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(path: &str) -> PathBuf {
    repo().join("deploy").join(path)
}

/// A free TCP port of 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A YAML file as JSON values, its merge keys (`<<: *anchor`, as compose reads them) applied.
fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    let mut value: serde_norway::Value = serde_norway::from_str(&text)
        .unwrap_or_else(|error| panic!("{} is not YAML: {error}", path.display()));
    value
        .apply_merge()
        .unwrap_or_else(|error| panic!("{}: merge keys: {error}", path.display()));
    serde_json::to_value(value)
        .unwrap_or_else(|error| panic!("{} is not JSON-like: {error}", path.display()))
}

/// Every document of a multi-document YAML file.
fn yaml_documents(path: &Path) -> Vec<Value> {
    use serde::Deserialize;

    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|document| {
            Value::deserialize(document)
                .unwrap_or_else(|error| panic!("{} is not YAML: {error}", path.display()))
        })
        .filter(|document| !document.is_null())
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .unwrap_or_else(|| panic!("a string: {item}"))
                    .to_owned()
            })
            .collect(),
        Value::String(text) => vec![text.clone()],
        other => panic!("strings expected: {other}"),
    }
}

fn duration(text: &str) -> Duration {
    humantime::parse_duration(text).unwrap_or_else(|error| panic!("{text:?}: {error}"))
}

fn port_of(addr: &str) -> u16 {
    addr.parse::<SocketAddr>()
        .unwrap_or_else(|error| panic!("{addr:?} is an address: {error}"))
        .port()
}
