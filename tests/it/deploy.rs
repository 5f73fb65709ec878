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
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use reqwest::StatusCode;
use serde_json::{Value, json};
use suivi::config::Settings;
use suivi::simulate::kafka::message;

use crate::helpers::{Kind, TestApp, event, json_batch, secret, spawn_app_with, start_app_with};

/// The campaign the dashboard's `$campaign` stands for in these tests: registered, with a target.
const CAMPAIGN: &str = "gendarmerie";
/// suivi's `shutdown_grace` when the environment does not set it.
const DEFAULT_SHUTDOWN_GRACE: Duration = suivi::config::DEFAULT_SHUTDOWN_GRACE;
/// Series that Prometheus writes itself for every scrape, which suivi does not export.
const PROMETHEUS_SERIES: [&str; 1] = ["up"];
/// Dashboard queries that may have no data from the suivi these tests run, and why. Every other
/// query must return data. These must still be queries of the dashboard that Prometheus accepts,
/// and read only families of [`EXPORTED_ONCE_IT_HAPPENS`].
const MAY_BE_EMPTY: [(&str, &str); 1] = [(
    "sum by (reason) (increase(suivi_kafka_batches_retried_total[$__rate_interval]))",
    "a Kafka batch is read again only when the pipeline refuses it (journal unwritable, disk \
     full, out of sequence): no test here can make the journal fail and still check the rest",
)];
/// Metric families suivi exports only from their first occurrence (they are not registered at
/// zero), which the suivi these tests run never has, and why.
const EXPORTED_ONCE_IT_HAPPENS: [(&str, &str); 1] = [(
    suivi::telemetry::KAFKA_BATCHES_RETRIED,
    "labelled by the reason of the pipeline's refusal, which only a journal failure causes",
)];
/// How long a test waits for suivi to consume Kafka or for the group to rebalance.
const KAFKA_PATIENCE: Duration = Duration::from_secs(60);
/// The ConfigMap that turns Kafka on in the Kubernetes manifests (see deploy/README.md).
const KUBERNETES_KAFKA_CONFIG_MAP: &str = "suivi-kafka";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_suivi_and_every_dashboard_query_returns_data() {
    let kafka = KafkaScene::start().await;
    let mut app = spawn_app_with(|settings| {
        // Checkpoints and snapshots within the test, so their metrics have data too.
        settings.snapshot_interval = Duration::from_secs(1);
        settings.checkpoint_interval = Duration::from_secs(1);
        kafka.turn_on(settings);
    })
    .await;
    let prometheus = Prometheus::start(app.http_addr);
    prometheus.wait_until_ready().await;
    feed(&app).await;
    kafka.wait_until_consumed(&app).await;
    kafka.rebalance(&app).await;
    // Everything below has data within a few scrapes; this bounds the test when it has not.
    let deadline = Instant::now() + Duration::from_secs(20);

    // The scrape reached suivi: its own series, a per-campaign gauge, readiness.
    let accepted = prometheus
        .wait_for_data("sum(suivi_events_accepted_total)", deadline)
        .await
        .unwrap_or_else(|answer| panic!("Prometheus never had suivi's series: {answer}"));
    assert!(sample_value(&accepted[0]) >= 7.0, "{accepted:?}");
    let enrolled = prometheus
        .wait_for_data(
            &format!("suivi_campaign_enrolled_learners{{campaign=\"{CAMPAIGN}\"}} == 3"),
            deadline,
        )
        .await
        .unwrap_or_else(|answer| panic!("the {CAMPAIGN} gauge never showed 3 enrolled: {answer}"));
    assert_eq!(enrolled[0]["metric"]["job"], json!("suivi"), "{enrolled:?}");
    for expr in ["suivi_ready == 1", "up{job=\"suivi\"} == 1"] {
        prometheus
            .wait_for_data(expr, deadline)
            .await
            .unwrap_or_else(|answer| panic!("{expr} has no data: {answer}"));
    }

    // Every query of the dashboard (panels and variables) has data, `$campaign` standing for
    // a real partner. rate() needs two scrapes after each series appears, hence the polling.
    // The few that may be empty are still queries Prometheus accepts (`query` checks it).
    let exprs = dashboard_exprs();
    for (expr, why) in MAY_BE_EMPTY {
        assert!(
            exprs.iter().any(|e| e == expr),
            "MAY_BE_EMPTY names a query the dashboard no longer has ({why}): {expr}"
        );
        for name in metric_names(expr) {
            assert!(
                EXPORTED_ONCE_IT_HAPPENS
                    .iter()
                    .any(|(family, _)| *family == name),
                "{expr} may be empty, yet reads {name}, which is exported from the start"
            );
        }
    }
    let mut empty = Vec::new();
    for expr in exprs {
        let substituted = substitute_dashboard_variables(&expr);
        if MAY_BE_EMPTY.iter().any(|(allowed, _)| *allowed == expr) {
            prometheus.query(&substituted).await;
            continue;
        }
        if let Err(answer) = prometheus.wait_for_data(&substituted, deadline).await {
            empty.push(format!("{substituted}\n    → {answer}"));
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data from a running suivi:\n{}",
        empty.join("\n")
    );

    // The alert rules loaded, and evaluate without error against suivi's real series.
    let expected: BTreeSet<String> = alert_rules()
        .iter()
        .map(|rule| {
            rule["alert"]
                .as_str()
                .expect("every rule is an alert")
                .to_owned()
        })
        .collect();
    prometheus.wait_for_healthy_rules(&expected).await;

    app.stop().await;
    drop(prometheus);
    drop(kafka);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_the_alerts_read_is_one_suivi_exports() {
    let kafka = KafkaScene::start().await;
    let mut app = spawn_app_with(|settings| {
        settings.snapshot_interval = Duration::from_millis(100);
        settings.checkpoint_interval = Duration::from_millis(100);
        kafka.turn_on(settings);
    })
    .await;
    feed(&app).await;
    kafka.wait_until_consumed(&app).await;
    kafka.rebalance(&app).await;
    // Histograms and counters appear once recorded: wait for the checkpoint and snapshot ones.
    let deadline = Instant::now() + Duration::from_secs(10);
    let exported = loop {
        let (status, text) = app.get_text("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        let exported = metric_families(&text);
        if [
            "suivi_checkpoint_duration_seconds",
            "suivi_snapshot_duration_seconds",
        ]
        .iter()
        .all(|family| exported.contains_key(*family))
        {
            break exported;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint or snapshot metrics after 10 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    app.stop().await;
    drop(kafka);
    // The Kafka families, from the start or once consumed, dead-lettered and rebalanced.
    for family in [
        suivi::telemetry::KAFKA_MESSAGES,
        suivi::telemetry::KAFKA_LAG,
        suivi::telemetry::KAFKA_ASSIGNED,
        suivi::telemetry::KAFKA_DEAD_LETTERS,
        suivi::telemetry::KAFKA_DEAD_LETTER_FAILURES,
        suivi::telemetry::KAFKA_REBALANCES,
        suivi::telemetry::KAFKA_PAUSED_SECONDS,
        suivi::telemetry::KAFKA_COMMIT_FAILURES,
        suivi::telemetry::CAMPAIGNS_RELEASED,
        suivi::telemetry::CAMPAIGNS_SEVERAL_SOURCES,
    ] {
        assert!(exported.contains_key(family), "{family} is not exported");
    }

    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for expr in dashboard_exprs() {
        for name in metric_names(&expr) {
            used.entry(name)
                .or_default()
                .insert("the dashboard".to_owned());
        }
    }
    for rule in alert_rules() {
        let expr = rule["expr"].as_str().expect("every rule has an expr");
        for name in metric_names(expr) {
            used.entry(name)
                .or_default()
                .insert(format!("alert {}", rule["alert"]));
        }
    }
    let tests = yaml(&deploy("prometheus/alerts.test.yml"));
    for test in tests["tests"]
        .as_array()
        .expect("alerts.test.yml has tests")
    {
        for series in test["input_series"].as_array().expect("input_series") {
            let series = series["series"].as_str().expect("a series selector");
            let name = series.split('{').next().unwrap_or(series).trim();
            used.entry(name.to_owned())
                .or_default()
                .insert(format!("alert test {}", test["name"]));
        }
    }
    assert!(
        used.len() > 30,
        "the dashboard and alerts read many metrics: {used:?}"
    );
    for (family, why) in EXPORTED_ONCE_IT_HAPPENS {
        assert!(
            used.contains_key(family),
            "EXPORTED_ONCE_IT_HAPPENS names {family} ({why}), which nothing reads any more"
        );
    }
    let unknown: Vec<String> = used
        .iter()
        .filter(|(name, _)| {
            !is_exported(name, &exported)
                && !EXPORTED_ONCE_IT_HAPPENS
                    .iter()
                    .any(|(family, _)| family == name)
        })
        .map(|(name, users)| format!("{name} (in {users:?})"))
        .collect();
    assert!(
        unknown.is_empty(),
        "metrics used but not exported by suivi: {unknown:#?}\nexported: {:#?}",
        exported.keys()
    );
}

#[test]
fn the_kubernetes_manifests_use_suivis_ports_probes_user_and_data_volume() {
    let dir = deploy("kubernetes");
    let kustomization = yaml(&dir.join("kustomization.yaml"));
    let resources: BTreeSet<String> = strings(&kustomization["resources"]).into_iter().collect();
    let files: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|entry| entry.expect("a directory entry").file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| name != "kustomization.yaml")
        .collect();
    assert_eq!(
        resources, files,
        "kustomization.yaml lists every manifest of deploy/kubernetes"
    );
    let documents: Vec<Value> = resources
        .iter()
        .flat_map(|file| yaml_documents(&dir.join(file)))
        .collect();
    let of_kind = |kind: &str| -> Vec<&Value> {
        documents
            .iter()
            .filter(|document| document["kind"] == json!(kind))
            .collect()
    };

    let sets = of_kind("StatefulSet");
    assert_eq!(sets.len(), 1, "one StatefulSet");
    let set = sets[0];
    let spec = &set["spec"];
    assert_eq!(
        spec["replicas"],
        json!(1),
        "one replica: suivi's counters are in one process"
    );
    let pod = &spec["template"]["spec"];
    let pod_labels = spec["template"]["metadata"]["labels"]
        .as_object()
        .expect("pod labels");
    assert!(
        selects(&spec["selector"]["matchLabels"], pod_labels),
        "the StatefulSet selects its pods"
    );
    let containers = pod["containers"].as_array().expect("containers");
    let container = containers
        .iter()
        .find(|container| container["name"] == json!("suivi"))
        .expect("a container named suivi");
    let image_name = container["image"].as_str().expect("an image");
    assert!(
        kustomization["images"]
            .as_array()
            .expect("kustomization images")
            .iter()
            .any(|image| image["name"] == json!(image_name)),
        "kustomization.yaml sets the tag of image {image_name}"
    );

    let ports: BTreeMap<String, u64> = container["ports"]
        .as_array()
        .expect("container ports")
        .iter()
        .map(|port| {
            (
                port["name"].as_str().expect("named ports").to_owned(),
                port["containerPort"].as_u64().expect("a port number"),
            )
        })
        .collect();
    assert_eq!(
        ports,
        BTreeMap::from([("grpc".to_owned(), 50051), ("http".to_owned(), 8080)])
    );
    let env = container_env(container);
    assert_eq!(port_of(&env["SUIVI_GRPC_ADDR"]), 50051);
    assert_eq!(port_of(&env["SUIVI_HTTP_ADDR"]), 8080);
    assert!(env.keys().all(|name| name.starts_with("SUIVI_")), "{env:?}");
    // Settings from Secrets and ConfigMaps are all optional: the pod starts without any of them.
    for var in container["env"].as_array().expect("an env list") {
        let Some(from) = var["valueFrom"].as_object() else {
            continue;
        };
        let reference = from
            .get("secretKeyRef")
            .or_else(|| from.get("configMapKeyRef"))
            .unwrap_or_else(|| panic!("{var} is a plain value, a Secret's or a ConfigMap's"));
        assert_eq!(reference["optional"], json!(true), "{var} is optional");
        assert!(
            var["name"]
                .as_str()
                .is_some_and(|name| name.starts_with("SUIVI_")),
            "{var}"
        );
    }
    // Kafka is turned on by the ConfigMap's brokers.
    let from_config_map = config_map_env(container);
    assert_eq!(
        from_config_map.get("SUIVI_KAFKA_BROKERS"),
        Some(&(KUBERNETES_KAFKA_CONFIG_MAP.to_owned(), "brokers".to_owned())),
        "{from_config_map:?}"
    );
    assert!(
        !env.contains_key("SUIVI_KAFKA_BROKERS"),
        "Kafka is off by default"
    );
    let resolve = |port: &Value| -> u64 {
        port.as_u64()
            .unwrap_or_else(|| ports[port.as_str().unwrap_or_else(|| panic!("a port: {port}"))])
    };
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], json!(path), "{probe}");
        assert_eq!(resolve(&get["port"]), 8080, "{probe} asks the HTTP port");
    }

    let grace = Duration::from_secs(
        pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds"),
    );
    let shutdown_grace = env
        .get("SUIVI_SHUTDOWN_GRACE")
        .map_or(DEFAULT_SHUTDOWN_GRACE, |text| duration(text));
    assert!(
        grace > shutdown_grace,
        "terminationGracePeriodSeconds ({grace:?}) exceeds shutdown_grace ({shutdown_grace:?})"
    );

    let security = &pod["securityContext"];
    assert_eq!(security["runAsNonRoot"], json!(true));
    let uid = security["runAsUser"].as_u64().expect("runAsUser");
    assert_eq!(
        uid,
        dockerfile_user(),
        "the pod runs as the Dockerfile's USER"
    );
    assert_ne!(uid, 0);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        json!(false)
    );
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"],
        json!(true)
    );

    // The data dir is the mount of a claim of the StatefulSet's own.
    let mount = container["volumeMounts"]
        .as_array()
        .expect("volume mounts")
        .iter()
        .find(|mount| mount["mountPath"] == json!(env["SUIVI_DATA_DIR"]))
        .unwrap_or_else(|| panic!("SUIVI_DATA_DIR {} is mounted", env["SUIVI_DATA_DIR"]));
    assert!(
        spec["volumeClaimTemplates"]
            .as_array()
            .expect("volumeClaimTemplates")
            .iter()
            .any(|claim| claim["metadata"]["name"] == mount["name"]),
        "the data volume is a PersistentVolumeClaim template"
    );

    let services = of_kind("Service");
    let headless = services
        .iter()
        .find(|service| service["metadata"]["name"] == spec["serviceName"])
        .expect("the StatefulSet's serviceName is one of the Services");
    assert_eq!(headless["spec"]["clusterIP"], json!("None"));
    for service in &services {
        assert!(
            selects(&service["spec"]["selector"], pod_labels),
            "{} selects suivi's pods",
            service["metadata"]["name"]
        );
        let targets: BTreeSet<u64> = service["spec"]["ports"]
            .as_array()
            .expect("service ports")
            .iter()
            .map(|port| resolve(&port["targetPort"]))
            .collect();
        assert_eq!(
            targets,
            BTreeSet::from([50051, 8080]),
            "{} reaches both APIs",
            service["metadata"]["name"]
        );
    }
}

#[test]
fn the_dockerfile_and_dockerignore_fit_suivi() {
    let instructions = dockerfile();
    let from: Vec<&str> = instructions
        .iter()
        .filter(|(instruction, _)| instruction == "FROM")
        .map(|(_, argument)| argument.as_str())
        .collect();
    assert_eq!(from.len(), 2, "two stages: {from:?}");
    assert!(
        from[0].starts_with("rust:") && from[0].ends_with(" AS build"),
        "{from:?}"
    );
    assert!(
        from[1].starts_with("debian:") && from[1].contains("-slim"),
        "{from:?}"
    );
    let exposed: BTreeSet<u16> = arguments(&instructions, "EXPOSE")
        .iter()
        .flat_map(|argument| argument.split_whitespace())
        .map(|port| port.parse().expect("a port number"))
        .collect();
    assert_eq!(exposed, BTreeSet::from([50051, 8080]));
    let env = dockerfile_env(&instructions);
    assert_eq!(port_of(&env["SUIVI_GRPC_ADDR"]), 50051);
    assert_eq!(port_of(&env["SUIVI_HTTP_ADDR"]), 8080);
    assert!(env["SUIVI_GRPC_ADDR"].starts_with("0.0.0.0:"));
    assert!(env["SUIVI_HTTP_ADDR"].starts_with("0.0.0.0:"));
    let volumes = arguments(&instructions, "VOLUME");
    assert!(
        volumes
            .iter()
            .any(|volume| volume.contains(&format!("\"{}\"", env["SUIVI_DATA_DIR"]))),
        "the data dir {} is the VOLUME: {volumes:?}",
        env["SUIVI_DATA_DIR"]
    );
    assert_ne!(dockerfile_user(), 0, "the image does not run as root");
    assert_eq!(
        arguments(&instructions, "ENTRYPOINT"),
        ["[\"/usr/local/bin/suivi\"]"]
    );
    assert_eq!(arguments(&instructions, "CMD"), ["[\"serve\"]"]);

    // .dockerignore keeps what the build reads and leaves out the rest.
    let patterns: Vec<String> = std::fs::read_to_string(repo().join(".dockerignore"))
        .expect(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    assert!(
        patterns.iter().all(|pattern| !pattern.starts_with('!')),
        "no exceptions, so the simple matcher below is exact: {patterns:?}"
    );
    let ignored = |name: &str| patterns.iter().any(|pattern| glob_matches(pattern, name));
    // Cargo reads the manifest, the lock file and every target Cargo.toml declares (benches
    // and tests included, even to build the binary alone); build.rs reads proto/, and the
    // default registry is compiled in from config/.
    let mut needed = BTreeSet::from([
        "Cargo.toml".to_owned(),
        "Cargo.lock".to_owned(),
        "proto".to_owned(),
        "config".to_owned(),
    ]);
    needed.extend(cargo_target_roots());
    assert!(
        needed.contains("src") && needed.contains("build.rs"),
        "{needed:?}"
    );
    for needed in &needed {
        assert!(
            repo().join(needed).exists(),
            "{needed} is in the repository"
        );
        assert!(!ignored(needed), ".dockerignore keeps {needed}");
    }
    for left_out in ["target", ".git", "suivi-data", "deploy", "README.md"] {
        assert!(ignored(left_out), ".dockerignore leaves out {left_out}");
    }
}

#[test]
fn compose_and_grafana_provisioning_are_wired_together() {
    let compose_file = deploy("docker-compose.yml");
    let compose = yaml(&compose_file);
    let services = compose["services"].as_object().expect("services");
    for service in ["suivi", "postgres", "prometheus", "grafana"] {
        assert!(services.contains_key(service), "compose runs {service}");
    }
    let base = compose_file.parent().expect("deploy/");
    // Every bind mount's source exists, relative to the compose file.
    for (name, service) in services {
        for volume in strings(&service["volumes"]) {
            let source = volume.split(':').next().expect("a volume source");
            if source.starts_with('.') {
                assert!(
                    base.join(source).exists(),
                    "{name} mounts {source}, which exists"
                );
            }
        }
    }

    let suivi = &services["suivi"];
    let context = base.join(suivi["build"]["context"].as_str().expect("a build context"));
    let dockerfile = suivi["build"]["dockerfile"].as_str().expect("a dockerfile");
    assert!(
        context.join(dockerfile).is_file(),
        "suivi builds from the Dockerfile"
    );
    let env = compose_env(suivi);
    let http_port = port_of(&env["SUIVI_HTTP_ADDR"]);
    let published: BTreeSet<u16> = strings(&suivi["ports"])
        .iter()
        .map(|port| {
            port.rsplit(':')
                .next()
                .expect("a port")
                .parse()
                .expect("a number")
        })
        .collect();
    assert_eq!(
        published,
        BTreeSet::from([port_of(&env["SUIVI_GRPC_ADDR"]), http_port])
    );
    let stop_grace = duration(
        suivi["stop_grace_period"]
            .as_str()
            .expect("stop_grace_period"),
    );
    let shutdown_grace = env
        .get("SUIVI_SHUTDOWN_GRACE")
        .map_or(DEFAULT_SHUTDOWN_GRACE, |text| duration(text));
    assert!(
        stop_grace > shutdown_grace,
        "{stop_grace:?} > {shutdown_grace:?}"
    );
    let healthcheck = strings(&suivi["healthcheck"]["test"]).join(" ");
    assert!(healthcheck.contains("/readyz"), "{healthcheck}");
    assert_eq!(
        suivi["depends_on"]["postgres"]["condition"],
        json!("service_healthy"),
        "suivi starts once PostgreSQL is healthy"
    );

    // suivi → PostgreSQL.
    let postgres = compose_env(&services["postgres"]);
    let url = &env["SUIVI_POSTGRES_URL"];
    assert_eq!(
        url,
        &format!(
            "postgres://{}:{}@postgres:5432/{}",
            postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"]
        )
    );

    // Prometheus → suivi, with the configuration and rules of deploy/prometheus.
    let prometheus = &services["prometheus"];
    let config_path = strings(&prometheus["command"])
        .iter()
        .find_map(|flag| flag.strip_prefix("--config.file=").map(str::to_owned))
        .expect("prometheus is given --config.file");
    let config_file = host_path(base, prometheus, &config_path);
    assert_eq!(config_file, deploy("prometheus/prometheus.yml"));
    let config = yaml(&config_file);
    let job = &config["scrape_configs"][0];
    assert_eq!(
        job["job_name"],
        json!("suivi"),
        "the alerts select job=\"suivi\""
    );
    assert_eq!(job["metrics_path"], json!("/metrics"));
    assert_eq!(
        strings(&job["static_configs"][0]["targets"]),
        [format!("suivi:{http_port}")]
    );
    for rules in strings(&config["rule_files"]) {
        assert!(
            config_file.with_file_name(&rules).is_file(),
            "{rules} exists"
        );
    }

    // Grafana → Prometheus, and the dashboards where the provider looks.
    let grafana = &services["grafana"];
    let provisioning = host_path(base, grafana, "/etc/grafana/provisioning");
    assert_eq!(provisioning, deploy("grafana/provisioning"));
    let datasources = yaml(&provisioning.join("datasources/prometheus.yml"));
    let datasource = &datasources["datasources"][0];
    assert_eq!(datasource["type"], json!("prometheus"));
    assert_eq!(datasource["url"], json!("http://prometheus:9090"));
    assert!(
        strings(&prometheus["ports"])
            .iter()
            .any(|port| port.ends_with(":9090")),
        "Prometheus listens on 9090"
    );
    let providers = yaml(&provisioning.join("dashboards/suivi.yml"));
    let provider = &providers["providers"][0];
    assert_eq!(provider["type"], json!("file"));
    let dashboards = host_path(
        base,
        grafana,
        provider["options"]["path"]
            .as_str()
            .expect("a provider path"),
    );
    assert_eq!(dashboards, deploy("grafana/dashboards"));
    let home = compose_env(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].clone();
    assert!(
        host_path(base, grafana, &home).is_file(),
        "{home} is the dashboard"
    );

    // The dashboard reads the provisioned data source, through its data-source variable.
    let dashboard = dashboard();
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let source = variables
        .iter()
        .find(|variable| variable["type"] == json!("datasource"))
        .expect("a data-source variable");
    assert_eq!(source["query"], json!("prometheus"));
    assert_eq!(source["current"]["value"], datasource["uid"]);
    let uid = format!("${{{}}}", source["name"].as_str().expect("a name"));
    let mut panels = Vec::new();
    collect_panels(&dashboard["panels"], &mut panels);
    for panel in panels.iter().filter(|panel| panel["type"] != json!("row")) {
        assert_eq!(panel["datasource"]["uid"], json!(uid), "{}", panel["title"]);
        for target in panel["targets"].as_array().expect("targets") {
            assert_eq!(
                target["datasource"]["uid"],
                json!(uid),
                "{}",
                panel["title"]
            );
        }
    }
    assert!(
        variables
            .iter()
            .any(|variable| variable["name"] == json!("campaign"))
    );
}

#[tokio::test]
async fn suivi_starts_with_each_deployments_environment_and_passes_the_healthcheck() {
    let compose = yaml(&deploy("docker-compose.yml"));
    let suivi = &compose["services"]["suivi"];
    let healthcheck = strings(&suivi["healthcheck"]["test"]);
    assert_eq!(healthcheck[..3], ["CMD", "bash", "-c"], "{healthcheck:?}");
    let http_port = port_of(&compose_env(suivi)["SUIVI_HTTP_ADDR"]);
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

    let statefulset = yaml_documents(&deploy("kubernetes/statefulset.yaml"))
        .into_iter()
        .find(|document| document["kind"] == json!("StatefulSet"))
        .expect("a StatefulSet");
    let container = statefulset["spec"]["template"]["spec"]["containers"][0].clone();
    // Kafka, where a deployment turns it on, is a broker of the test's own, one for each: a
    // member that left a group still holds up the mock cluster's next rebalance for a session.
    let compose_kafka = KafkaScene::start().await;
    let mut compose = compose_env(suivi);
    assert!(compose.contains_key("SUIVI_KAFKA_BROKERS"), "{compose:?}");
    compose.insert(
        "SUIVI_KAFKA_BROKERS".to_owned(),
        compose_kafka.bootstrap.clone(),
    );
    // The manifests with the ConfigMap that turns Kafka on, holding only the brokers.
    let kubernetes_kafka = KafkaScene::start().await;
    let mut kubernetes = container_env(&container);
    for (name, (config_map, key)) in config_map_env(&container) {
        if config_map == KUBERNETES_KAFKA_CONFIG_MAP && key == "brokers" {
            kubernetes.insert(name, kubernetes_kafka.bootstrap.clone());
        }
    }
    for (origin, env, kafka_on) in [
        ("Dockerfile", dockerfile_env(&dockerfile()), false),
        ("docker-compose.yml", compose, true),
        (
            "kubernetes/statefulset.yaml",
            container_env(&container),
            false,
        ),
        (
            "kubernetes/statefulset.yaml with the ConfigMap suivi-kafka",
            kubernetes,
            true,
        ),
    ] {
        let mut running = RunningSuivi::start(origin, &env);
        let status = check(running.http_addr.port());
        assert!(
            status.success(),
            "the compose healthcheck passes on suivi ({origin})"
        );
        // Each process has metrics of its own: the Kafka series are there when Kafka is on,
        // and its partitions get assigned.
        let deadline = Instant::now() + KAFKA_PATIENCE;
        loop {
            let text = reqwest::get(format!("http://{}/metrics", running.http_addr))
                .await
                .expect("GET /metrics answers")
                .text()
                .await
                .expect("a body");
            let assigned = text.lines().find_map(|line| {
                line.strip_prefix(suivi::telemetry::KAFKA_ASSIGNED)?
                    .strip_prefix(' ')?
                    .parse::<f64>()
                    .ok()
            });
            if !kafka_on {
                assert_eq!(assigned, None, "Kafka is off with {origin}");
                break;
            }
            if assigned.is_some_and(|partitions| partitions > 0.0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "suivi ({origin}) got no Kafka partition in {KAFKA_PATIENCE:?}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        running.stop();
    }
    drop((compose_kafka, kubernetes_kafka));
}

#[test]
fn the_compose_file_runs_kafka_in_kraft_mode_with_the_topics_suivi_reads() {
    let compose = yaml(&deploy("docker-compose.yml"));
    let services = compose["services"].as_object().expect("services");
    let suivi = &services["suivi"];
    let env = compose_env(suivi);

    // suivi's brokers are the Kafka service, on a listener it advertises under that name.
    let brokers = env
        .get("SUIVI_KAFKA_BROKERS")
        .expect("Kafka is on in compose");
    let (host, port) = brokers
        .rsplit_once(':')
        .expect("one broker, host:port, in compose");
    let kafka = &services[host];
    let image = kafka["image"].as_str().expect("an image");
    let tag = image
        .strip_prefix("apache/kafka:")
        .unwrap_or_else(|| panic!("Kafka is the official image: {image}"));
    assert!(
        !tag.is_empty() && tag.chars().all(|c| c.is_ascii_digit() || c == '.'),
        "the image is pinned to a version: {image}"
    );
    let kafka_env = compose_env(kafka);
    let roles: BTreeSet<&str> = kafka_env["KAFKA_PROCESS_ROLES"].split(',').collect();
    assert_eq!(
        roles,
        BTreeSet::from(["broker", "controller"]),
        "one node, KRaft"
    );
    assert!(
        kafka_env.keys().all(|name| !name.contains("ZOOKEEPER")),
        "{kafka_env:?}"
    );
    assert_eq!(
        base64url_decoded_len(&kafka_env["CLUSTER_ID"]),
        Some(16),
        "CLUSTER_ID is a Kafka Uuid (16 bytes, URL-safe base64): {}",
        kafka_env["CLUSTER_ID"]
    );
    // Listeners: name → port, and the advertised ones: name → host:port.
    let listeners = |var: &str| -> BTreeMap<String, String> {
        kafka_env[var]
            .split(',')
            .map(|listener| {
                let (name, address) = listener
                    .split_once("://")
                    .unwrap_or_else(|| panic!("{var}: NAME://host:port, not {listener}"));
                (name.to_owned(), address.to_owned())
            })
            .collect()
    };
    let listening = listeners("KAFKA_LISTENERS");
    let advertised = listeners("KAFKA_ADVERTISED_LISTENERS");
    let protocols: BTreeSet<&str> = kafka_env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
        .split(',')
        .filter_map(|pair| pair.split(':').next())
        .collect();
    for name in listening.keys() {
        assert!(protocols.contains(name.as_str()), "{name} has a protocol");
    }
    let port_of_listener = |name: &str| -> &str {
        listening[name]
            .rsplit(':')
            .next()
            .unwrap_or_else(|| panic!("{name} has a port"))
    };
    let hostname = kafka["hostname"].as_str().unwrap_or(host);
    assert_eq!(hostname, host, "the service's name is its host name");
    let suivi_listener = advertised
        .iter()
        .find(|(_, address)| *address == brokers)
        .map(|(name, _)| name.clone())
        .unwrap_or_else(|| panic!("Kafka advertises {brokers}: {advertised:?}"));
    assert_eq!(port_of_listener(&suivi_listener), port);
    let inter_broker = &kafka_env["KAFKA_INTER_BROKER_LISTENER_NAME"];
    assert!(advertised.contains_key(inter_broker), "{inter_broker}");
    let controller = &kafka_env["KAFKA_CONTROLLER_LISTENER_NAMES"];
    assert!(
        !advertised.contains_key(controller),
        "controllers are not advertised"
    );
    assert_eq!(
        kafka_env["KAFKA_CONTROLLER_QUORUM_VOTERS"],
        format!(
            "{}@{host}:{}",
            kafka_env["KAFKA_NODE_ID"],
            port_of_listener(controller)
        ),
        "the node is the quorum's one voter"
    );
    // One node: the group offsets topic (the consumer group's) can have but one replica.
    assert_eq!(kafka_env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"], "1");
    // The host reaches the other advertised listeners on 127.0.0.1, as the ports publish them.
    let published = strings(&kafka["ports"]);
    for (name, address) in &advertised {
        if *name == suivi_listener || name == inter_broker {
            continue;
        }
        let port = address
            .strip_prefix("127.0.0.1:")
            .unwrap_or_else(|| panic!("{name} is for the host, on 127.0.0.1: {address}"));
        assert_eq!(port_of_listener(name), port);
        assert!(
            published.contains(&format!("127.0.0.1:{port}:{port}")),
            "{published:?} publishes {address}"
        );
    }
    for (name, service) in services {
        for port in strings(&service["ports"]) {
            assert!(port.starts_with("127.0.0.1:"), "{name} publishes {port}");
        }
    }
    // Kafka's data is a named volume, where it keeps its logs.
    let log_dir = &kafka_env["KAFKA_LOG_DIRS"];
    assert!(
        strings(&kafka["volumes"]).iter().any(|volume| {
            volume.split_once(':').is_some_and(|(source, target)| {
                target == log_dir
                    && compose["volumes"]
                        .as_object()
                        .is_some_and(|volumes| volumes.contains_key(source))
            })
        }),
        "{log_dir} is a named volume"
    );
    assert!(
        !strings(&kafka["healthcheck"]["test"]).is_empty(),
        "Kafka has a healthcheck, which the topic creation waits for"
    );

    // The topics suivi reads and writes are created, before suivi starts, on every `up`.
    let (creator, topics_service) = services
        .iter()
        .find(|(_, service)| {
            strings(&service["command"])
                .join(" ")
                .contains("kafka-topics.sh")
        })
        .expect("a service creates the topics");
    assert_eq!(
        topics_service["depends_on"][host]["condition"],
        json!("service_healthy")
    );
    assert_eq!(
        suivi["depends_on"][creator]["condition"],
        json!("service_completed_successfully"),
        "suivi starts once the topics exist"
    );
    let created = created_topics(&strings(&topics_service["command"]).join("\n"));
    let mut settings = Settings::default();
    if let Some(topics) = env.get("SUIVI_KAFKA_TOPICS") {
        settings.kafka_topics.clone_from(topics);
    }
    if let Some(template) = env.get("SUIVI_KAFKA_DEAD_LETTER_TOPIC") {
        settings.kafka_dead_letter_topic.clone_from(template);
    }
    let topics = settings.kafka_topics();
    assert!(!topics.is_empty());
    for topic in &topics {
        let dead_letters = settings.kafka_dead_letter_topic(topic);
        for (name, events) in [(topic, true), (&dead_letters, false)] {
            let flags = created
                .get(name)
                .unwrap_or_else(|| panic!("{name} is not created: {created:?}"));
            let flag = |flag: &str| flags.get(flag).map(String::as_str);
            assert_eq!(flag("--bootstrap-server"), Some(brokers.as_str()), "{name}");
            assert_eq!(
                flag("--if-not-exists"),
                Some(""),
                "{name}: the second `up` succeeds too"
            );
            assert_eq!(flag("--replication-factor"), Some("1"), "{name}: one node");
            let partitions: u32 = flag("--partitions")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{name} has a partition count: {flags:?}"));
            assert!(partitions >= 1);
            if events {
                assert!(partitions > 1, "{name}: instances can share it");
                // suivi rebuilds a moved partition's campaigns from its first message.
                assert_eq!(
                    flag("--config retention.ms"),
                    Some("-1"),
                    "{name} keeps every message"
                );
            }
        }
    }
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
        "kubernetes/kustomization.yaml",
        "kubernetes/service.yaml",
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
/// mock cluster) with the default events topic and its dead-letter topic, filled with learner
/// events of a few partners (never [`CAMPAIGN`], whose figures the tests check from gRPC and HTTP
/// alone) and a message that is no event, to be dead-lettered.
struct KafkaScene {
    _cluster: MockCluster<'static, DefaultProducerContext>,
    bootstrap: String,
}

impl KafkaScene {
    /// Partitions of the events topic.
    const PARTITIONS: i32 = 4;
    /// The partners whose events are produced; each gets two enrolled learners.
    const PARTNERS: [&str; 4] = ["pole-emploi", "afd", "dgafp", "academie-corse"];

    async fn start() -> KafkaScene {
        let cluster = MockCluster::new(1).expect("the mock cluster starts");
        let topic = suivi::config::DEFAULT_KAFKA_TOPIC;
        cluster
            .create_topic(topic, Self::PARTITIONS, 1)
            .expect("the events topic");
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
        }
    }

    /// Kafka on, with the default topic and group, as the deployments have it; a shorter
    /// session (the mock cluster waits for it before it rebalances a stable group), heartbeats
    /// and statistics (lag) more often than by default, to keep the test short.
    fn turn_on(&self, settings: &mut Settings) {
        settings.kafka_brokers = Some(self.bootstrap.clone());
        for (key, value) in [
            ("session.timeout.ms", "6000"),
            ("heartbeat.interval.ms", "500"),
            ("statistics.interval.ms", "1000"),
        ] {
            settings.kafka_options.insert(key.to_owned(), secret(value));
        }
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

/// Whether a `/metrics` text has a series of the family `name`.
fn has_series(text: &str, name: &str) -> bool {
    text.lines().any(|line| {
        line.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

/// A Prometheus server of the test's own, killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus with deploy/prometheus/prometheus.yml and its rules, scraping suivi at
    /// `target` every second, on a free port of 127.0.0.1.
    fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().expect("a temporary dir");
        let mut config = yaml(&deploy("prometheus/prometheus.yml"));
        config["global"]["scrape_interval"] = json!("1s");
        config["global"]["evaluation_interval"] = json!("1s");
        config["rule_files"] = strings(&config["rule_files"])
            .iter()
            .map(|file| json!(deploy("prometheus").join(file)))
            .collect();
        let jobs = config["scrape_configs"]
            .as_array_mut()
            .expect("scrape jobs");
        assert_eq!(jobs.len(), 1, "one scrape job, suivi's");
        jobs[0]["static_configs"] = json!([{"targets": [target.to_string()]}]);
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(
            &config_file,
            serde_norway::to_string(&config).expect("the config serializes"),
        )
        .expect("the config is written");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("a log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run prometheus ({error}): run scripts/test, which installs it \
                     (Debian's prometheus package); this test never passes without it"
                )
            });
        Prometheus {
            child,
            addr,
            dir,
            http: reqwest::Client::new(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = self
                .http
                .get(format!("http://{}/-/ready", self.addr))
                .send()
                .await
                && response.status() == StatusCode::OK
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus is not ready after 20 s; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The instant query's answer (`data`), which must be a success.
    async fn query(&self, expr: &str) -> Value {
        let answer: Value = self
            .http
            .get(format!("http://{}/api/v1/query", self.addr))
            .query(&[("query", expr)])
            .send()
            .await
            .expect("Prometheus answers")
            .json()
            .await
            .expect("a JSON answer");
        assert_eq!(
            answer["status"],
            json!("success"),
            "query {expr}: {answer}\nPrometheus' log:\n{}",
            self.log()
        );
        answer["data"].clone()
    }

    /// Polls `expr` until its result is not empty (a vector or matrix with a series, or a
    /// scalar), until `deadline` at most; the last answer if it stays empty.
    async fn wait_for_data(&self, expr: &str, deadline: Instant) -> Result<Vec<Value>, Value> {
        loop {
            let data = self.query(expr).await;
            match data["result"].as_array() {
                Some(result) if !result.is_empty() => return Ok(result.clone()),
                Some(_) => {}
                None => return Ok(vec![data["result"].clone()]),
            }
            if Instant::now() > deadline {
                return Err(data);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every rule of `expected` was evaluated, and checks none failed.
    async fn wait_for_healthy_rules(&self, expected: &BTreeSet<String>) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let answer: Value = self
                .http
                .get(format!("http://{}/api/v1/rules", self.addr))
                .send()
                .await
                .expect("Prometheus answers")
                .json()
                .await
                .expect("a JSON answer");
            let rules: Vec<&Value> = answer["data"]["groups"]
                .as_array()
                .expect("rule groups")
                .iter()
                .flat_map(|group| group["rules"].as_array().expect("rules"))
                .collect();
            let names: BTreeSet<String> = rules
                .iter()
                .map(|rule| rule["name"].as_str().expect("a rule name").to_owned())
                .collect();
            assert_eq!(&names, expected, "Prometheus loaded alerts.yml");
            for rule in &rules {
                assert_ne!(rule["health"], json!("err"), "rule failed: {rule}");
            }
            if rules.iter().all(|rule| rule["health"] == json!("ok")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "rules not evaluated after 15 s: {answer}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real `suivi serve` with a deployment's `SUIVI_…` environment; only the addresses and
/// the data dir are overridden (by flags, which rank above the environment), and PostgreSQL is
/// pointed at a closed local port: suivi must start without it.
struct RunningSuivi {
    child: Child,
    http_addr: SocketAddr,
    origin: &'static str,
    _data_dir: tempfile::TempDir,
}

impl RunningSuivi {
    fn start(origin: &'static str, env: &BTreeMap<String, String>) -> RunningSuivi {
        let data_dir = tempfile::tempdir().expect("a temporary dir");
        let mut command = Command::new(env!("CARGO_BIN_EXE_suivi"));
        command
            .arg("serve")
            .arg("--grpc-addr=127.0.0.1:0")
            .arg("--http-addr=127.0.0.1:0")
            .arg(format!("--data-dir={}", data_dir.path().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "info");
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("SUIVI_")) {
            command.env_remove(name);
        }
        for (name, value) in env {
            let value = if name == "SUIVI_POSTGRES_URL" {
                let (before, after) = value.split_once('@').expect("a URL with a host");
                let database = after.split_once('/').map_or("", |(_, database)| database);
                format!("{before}@127.0.0.1:{}/{database}", free_port())
            } else {
                value.clone()
            };
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the suivi binary runs");
        let stderr = child.stderr.take().expect("suivi's stderr");
        let (lines, received) = mpsc::channel();
        // Reads stderr to its end: suivi must never write into a closed pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                let _ = lines.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut log = Vec::new();
        let http_addr = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let line = match received.recv_timeout(remaining) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "suivi with the environment of {origin} ({env:?}) did not get ready:\n{}",
                        log.join("\n")
                    );
                }
            };
            if let Some(addr) = ready_http_addr(&line) {
                break addr;
            }
            log.push(line);
        };
        RunningSuivi {
            child,
            http_addr,
            origin,
            _data_dir: data_dir,
        }
    }

    /// SIGTERM, then a clean exit within the test's patience.
    fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("suivi can be waited for") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "suivi ({}) did not stop on SIGTERM",
                self.origin
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "suivi ({}) stopped with {status}",
            self.origin
        );
    }
}

impl Drop for RunningSuivi {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The HTTP address in suivi's "suivi is ready" log line, JSON or text.
fn ready_http_addr(line: &str) -> Option<SocketAddr> {
    if let Ok(record) = serde_json::from_str::<Value>(line) {
        let fields = &record["fields"];
        if fields["message"] != json!("suivi is ready") {
            return None;
        }
        return fields["http"].as_str()?.parse().ok();
    }
    if !line.contains("suivi is ready") {
        return None;
    }
    line.split_whitespace()
        .filter_map(|word| word.strip_prefix("http="))
        .find_map(|addr| {
            addr.trim_matches(|c: char| !c.is_ascii_alphanumeric())
                .parse()
                .ok()
        })
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

/// A YAML file as JSON values.
fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_norway::from_str(&text)
        .unwrap_or_else(|error| panic!("{} is not YAML: {error}", path.display()))
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

fn selects(selector: &Value, labels: &serde_json::Map<String, Value>) -> bool {
    let selector = selector.as_object().expect("a label selector");
    !selector.is_empty()
        && selector
            .iter()
            .all(|(name, value)| labels.get(name) == Some(value))
}

/// A Kubernetes container's environment with plain values (those from secrets left out).
fn container_env(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_array()
        .expect("an env list")
        .iter()
        .filter_map(|var| {
            let value = var["value"].as_str()?;
            Some((var["name"].as_str()?.to_owned(), value.to_owned()))
        })
        .collect()
}

/// A Kubernetes container's settings taken from ConfigMaps: variable → (ConfigMap, key).
fn config_map_env(container: &Value) -> BTreeMap<String, (String, String)> {
    container["env"]
        .as_array()
        .expect("an env list")
        .iter()
        .filter_map(|var| {
            let reference = &var["valueFrom"]["configMapKeyRef"];
            Some((
                var["name"].as_str()?.to_owned(),
                (
                    reference["name"].as_str()?.to_owned(),
                    reference["key"].as_str()?.to_owned(),
                ),
            ))
        })
        .collect()
}

/// The topics a shell script creates with `kafka-topics.sh --create`, each with its flags
/// (`--flag` → value, "" for a flag without one; `--config key` → value).
fn created_topics(script: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let script = script.replace("\\\n", " ");
    let mut created = BTreeMap::new();
    for line in script.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if !words.iter().any(|word| word.ends_with("kafka-topics.sh"))
            || !words.contains(&"--create")
        {
            continue;
        }
        let mut flags = BTreeMap::new();
        let mut i = 0;
        while i < words.len() {
            let word = words[i];
            let value = words.get(i + 1).filter(|next| !next.starts_with("--"));
            if word == "--config" {
                let (key, value) = value
                    .and_then(|pair| pair.split_once('='))
                    .unwrap_or_else(|| panic!("--config key=value: {line}"));
                flags.insert(format!("--config {key}"), value.to_owned());
                i += 2;
            } else if word.starts_with("--") {
                flags.insert(word.to_owned(), value.map_or("", |v| v).to_owned());
                i += if value.is_some() { 2 } else { 1 };
            } else {
                i += 1;
            }
        }
        let topic = flags
            .get("--topic")
            .unwrap_or_else(|| panic!("--create names a --topic: {line}"))
            .clone();
        created.insert(topic, flags);
    }
    created
}

/// How many bytes a URL-safe base64 text (padding optional) decodes to; `None` if it is not one.
fn base64url_decoded_len(text: &str) -> Option<usize> {
    let text = text.trim_end_matches('=');
    let valid = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && text.len() % 4 != 1;
    valid.then_some(text.len() * 6 / 8)
}

/// A compose service's environment (a map, as the file writes it).
fn compose_env(service: &Value) -> BTreeMap<String, String> {
    service["environment"]
        .as_object()
        .expect("environment as a map")
        .iter()
        .map(|(name, value)| {
            let value = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            (name.clone(), value)
        })
        .collect()
}

/// The file on the host that `service` sees at `container_path`, through its bind mounts.
fn host_path(base: &Path, service: &Value, container_path: &str) -> PathBuf {
    strings(&service["volumes"])
        .iter()
        .filter_map(|volume| {
            let mut parts = volume.split(':');
            let (source, target) = (parts.next()?, parts.next()?);
            if !source.starts_with('.') {
                return None;
            }
            let rest = container_path.strip_prefix(target)?;
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            let host = base.join(source).join(rest.trim_start_matches('/'));
            Some(host.canonicalize().unwrap_or(host))
        })
        .next()
        .unwrap_or_else(|| panic!("no bind mount holds {container_path}"))
}

/// The Dockerfile's instructions, continuation lines joined, comments left out.
fn dockerfile() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("the Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => {
                current.push_str(start);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                let (instruction, argument) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                instructions.push((instruction.to_uppercase(), argument.trim().to_owned()));
                current.clear();
            }
        }
    }
    instructions
}

fn arguments(instructions: &[(String, String)], name: &str) -> Vec<String> {
    instructions
        .iter()
        .filter(|(instruction, _)| instruction == name)
        .map(|(_, argument)| argument.clone())
        .collect()
}

/// The Dockerfile's `ENV name=value …` settings.
fn dockerfile_env(instructions: &[(String, String)]) -> BTreeMap<String, String> {
    arguments(instructions, "ENV")
        .iter()
        .flat_map(|argument| {
            argument
                .split_whitespace()
                .map(|pair| {
                    let (name, value) = pair.split_once('=').expect("ENV name=value");
                    (name.to_owned(), value.to_owned())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The numeric uid of the Dockerfile's last `USER`.
fn dockerfile_user() -> u64 {
    let users = arguments(&dockerfile(), "USER");
    let user = users.last().expect("the Dockerfile has a USER");
    user.split(':')
        .next()
        .and_then(|uid| uid.parse().ok())
        .unwrap_or_else(|| panic!("USER {user} is a numeric uid, so runAsNonRoot can check it"))
}

/// The top-level entries of the repository that hold the targets of Cargo.toml (`src`,
/// `build.rs`, `benches`, `tests`, …), as `cargo metadata` lists them.
fn cargo_target_roots() -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["metadata", "--no-deps", "--offline", "--format-version=1"])
        .current_dir(repo())
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata: {}", output.status);
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata's JSON");
    let package = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|package| package["name"] == json!("suivi"))
        .expect("the suivi package");
    package["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|target| {
            let path = PathBuf::from(target["src_path"].as_str().expect("a src_path"));
            let relative = path
                .strip_prefix(repo())
                .unwrap_or_else(|_| panic!("{} is in the repository", path.display()));
            let root = relative.components().next().expect("a path");
            root.as_os_str().to_string_lossy().into_owned()
        })
        .collect()
}

/// `pattern` of .dockerignore matches the top-level entry `name` (`*` stands for any run).
fn glob_matches(pattern: &str, name: &str) -> bool {
    let pattern = pattern.trim_start_matches('/').trim_end_matches('/');
    match pattern.split_once('*') {
        None => pattern == name,
        Some((prefix, suffix)) => {
            name.len() >= prefix.len() + suffix.len()
                && name.starts_with(prefix)
                && name.ends_with(suffix)
        }
    }
}

fn dashboard() -> Value {
    let path = deploy("grafana/dashboards/suivi.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

fn collect_panels<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
    for panel in panels.as_array().expect("panels") {
        out.push(panel);
        if panel["panels"].is_array() {
            collect_panels(&panel["panels"], out);
        }
    }
}

/// The PromQL of every panel target and every query variable of the dashboard.
fn dashboard_exprs() -> Vec<String> {
    let dashboard = dashboard();
    let mut panels = Vec::new();
    collect_panels(&dashboard["panels"], &mut panels);
    let mut exprs: Vec<String> = panels
        .iter()
        .filter_map(|panel| panel["targets"].as_array())
        .flatten()
        .map(|target| target["expr"].as_str().expect("a PromQL expr").to_owned())
        .collect();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if variable["type"] != json!("query") {
            continue;
        }
        let query = variable["query"]
            .as_str()
            .or_else(|| variable["query"]["query"].as_str())
            .expect("a variable query");
        let expr = query
            .strip_prefix("query_result(")
            .and_then(|inner| inner.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variables use query_result(…): {query}"));
        exprs.push(expr.to_owned());
    }
    assert!(exprs.len() > 40, "the dashboard has its queries: {exprs:?}");
    exprs
}

/// What Grafana would send for `expr`: the partner variable set to a real campaign, and
/// `$__rate_interval` (at least four scrape intervals) to a minute.
fn substitute_dashboard_variables(expr: &str) -> String {
    let expr = expr
        .replace("${campaign}", CAMPAIGN)
        .replace("$campaign", CAMPAIGN)
        .replace("$__rate_interval", "1m");
    assert!(!expr.contains('$'), "an unknown variable in {expr}");
    expr
}

fn alert_rules() -> Vec<Value> {
    let rules = yaml(&deploy("prometheus/alerts.yml"));
    rules["groups"]
        .as_array()
        .expect("rule groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules").clone())
        .collect()
}

/// Metric families of a `/metrics` text, by name, with their type.
fn metric_families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let (name, kind) = rest.split_once(' ')?;
            Some((name.to_owned(), kind.trim().to_owned()))
        })
        .collect()
}

/// `name` is a series suivi exports: a family, or a histogram's `_bucket`, `_sum`, `_count`.
fn is_exported(name: &str, families: &BTreeMap<String, String>) -> bool {
    if families.contains_key(name) || PROMETHEUS_SERIES.contains(&name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|family| {
            families.get(family).is_some_and(|kind| {
                kind == "histogram" || (kind == "summary" && *suffix != "_bucket")
            })
        })
    })
}

/// The metric names a PromQL expression reads: identifiers that are not functions,
/// aggregations, keywords, label names (in braces or grouping clauses), strings, numbers or
/// durations.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: [&str; 17] = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut label_list_next = false;
    // Skips from an opening character to its closing one, over strings.
    let skip = |i: usize, close: char| -> usize {
        let mut j = i + 1;
        while j < chars.len() && chars[j] != close {
            if chars[j] == '"' || chars[j] == '\'' {
                let quote = chars[j];
                j += 1;
                while j < chars.len() && chars[j] != quote {
                    j += if chars[j] == '\\' { 2 } else { 1 };
                }
            }
            j += 1;
        }
        j + 1
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            i = skip(i, '}');
        } else if c == '[' {
            i = skip(i, ']');
        } else if c == '"' || c == '\'' {
            i = skip(i, c);
        } else if c == '(' && label_list_next {
            i = skip(i, ')');
            label_list_next = false;
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if GROUPING.contains(&word.as_str()) {
                label_list_next = next == Some(&'(');
            } else if !KEYWORDS.contains(&word.as_str()) && next != Some(&'(') {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

fn sample_value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("a sample: {sample}"))
}

#[test]
fn metric_names_reads_promql() {
    let check = |expr: &str, expected: &[&str]| {
        let names: Vec<String> = metric_names(expr).into_iter().collect();
        assert_eq!(names, expected, "{expr}");
    };
    check(
        "histogram_quantile(0.99, sum by (le, t) (rate(a_bucket{x=\"}\"}[$__rate_interval])))",
        &["a_bucket"],
    );
    check(
        "sum by (job) (rate(b[15m])) == 0 and on (job) sum(increase(b[1h] offset 15m)) > 0",
        &["b"],
    );
    check(
        "sort_desc(c{campaign=\"$campaign\"} * on (job, campaign) group_left (name) d)",
        &["c", "d"],
    );
    check("topk(15, e) / 1e3", &["e"]);
}
