//! The compose file and the Grafana provisioning are wired together (ports, mounts, addresses),
//! and the compose file runs Kafka in KRaft mode with the topics suivi reads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use suivi::config::Settings;

use super::*;

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

    // Three instances of suivi, the same but for their names, data volumes and Kafka instance
    // ids, behind one entry point.
    let instances = suivi_instances(&compose);
    assert_eq!(
        instances.keys().map(String::as_str).collect::<Vec<_>>(),
        ["suivi-1", "suivi-2", "suivi-3"]
    );
    let (_, suivi) = instances.first_key_value().expect("an instance");
    let env = compose_env(suivi);
    let http_port = port_of(&env["SUIVI_HTTP_ADDR"]);
    let grpc_port = port_of(&env["SUIVI_GRPC_ADDR"]);
    let mut data_volumes = BTreeSet::new();
    for (name, instance) in &instances {
        let context = base.join(
            instance["build"]["context"]
                .as_str()
                .expect("a build context"),
        );
        let dockerfile = instance["build"]["dockerfile"]
            .as_str()
            .expect("a dockerfile");
        assert!(
            context.join(dockerfile).is_file(),
            "{name} builds from the Dockerfile"
        );
        assert_eq!(instance["image"], suivi["image"], "{name}");
        let mut own = compose_env(instance);
        assert_eq!(
            own.remove("SUIVI_KAFKA_INSTANCE_ID").as_deref(),
            Some(name.as_str()),
            "{name} is a static member of the group under its own name"
        );
        let mut first = env.clone();
        first.remove("SUIVI_KAFKA_INSTANCE_ID");
        assert_eq!(own, first, "{name} has the settings of the others");
        assert_eq!(
            own.get("SUIVI_FORWARD_TO_KAFKA").map(String::as_str),
            Some("true"),
            "{name} forwards gRPC/HTTP ingest into Kafka"
        );
        assert!(
            strings(&instance["ports"]).is_empty(),
            "{name} is reached through the entry point"
        );
        // Its data dir is a named volume of its own.
        let (volume, rest) = named_volume_at(instance, &own["SUIVI_DATA_DIR"])
            .unwrap_or_else(|| panic!("{name}'s data dir is a named volume"));
        assert_eq!(rest, "", "{name} mounts the volume at its data dir");
        assert!(
            compose["volumes"].get(&volume).is_some(),
            "{volume} is declared"
        );
        assert!(
            data_volumes.insert(volume.clone()),
            "{name} shares {volume} with another instance"
        );
        let stop_grace = duration(
            instance["stop_grace_period"]
                .as_str()
                .expect("stop_grace_period"),
        );
        let shutdown_grace = own
            .get("SUIVI_SHUTDOWN_GRACE")
            .map_or(DEFAULT_SHUTDOWN_GRACE, |text| duration(text));
        assert!(
            stop_grace > shutdown_grace,
            "{name}: {stop_grace:?} > {shutdown_grace:?}"
        );
        let healthcheck = strings(&instance["healthcheck"]["test"]).join(" ");
        assert!(healthcheck.contains("/readyz"), "{healthcheck}");
        assert_eq!(
            instance["depends_on"]["postgres"]["condition"],
            json!("service_healthy"),
            "{name} starts once PostgreSQL is healthy"
        );
    }

    // The entry point: HAProxy, publishing suivi's ports and passing each connection to one of
    // the instances, on the same port, once it answers /readyz on its HTTP port.
    let entry = &services["suivi"];
    let image = entry["image"].as_str().expect("an image");
    assert!(
        image.starts_with("haproxy:") && image.len() > "haproxy:".len(),
        "the entry point is HAProxy's image, at a version: {image}"
    );
    let published: BTreeSet<u16> = strings(&entry["ports"])
        .iter()
        .map(|port| {
            port.rsplit(':')
                .next()
                .expect("a port")
                .parse()
                .expect("a number")
        })
        .collect();
    assert_eq!(published, BTreeSet::from([grpc_port, http_port]));
    let proxy = haproxy(&host_path(base, entry, HAPROXY_CONFIG));
    let check = proxy["defaults"]
        .iter()
        .find_map(|line| line.strip_prefix("default-server "))
        .expect("the servers' defaults");
    assert!(
        check
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(3)
            .any(|words| words == ["check", "port", &http_port.to_string()]),
        "every server is checked on its HTTP port: {check}"
    );
    let mut frontends = BTreeSet::new();
    for (section, lines) in &proxy {
        if !section.starts_with("frontend ") {
            continue;
        }
        let port: u16 = lines
            .iter()
            .find_map(|line| line.strip_prefix("bind :"))
            .unwrap_or_else(|| panic!("{section} binds a port"))
            .parse()
            .expect("a port");
        frontends.insert(port);
        let backend = lines
            .iter()
            .find_map(|line| line.strip_prefix("default_backend "))
            .unwrap_or_else(|| panic!("{section} has a backend"));
        let backend = &proxy[&format!("backend {backend}")];
        for line in ["option httpchk", "http-check send meth GET uri /readyz"] {
            assert!(backend.iter().any(|l| l == line), "{section}: {line}");
        }
        let servers: BTreeSet<String> = backend
            .iter()
            .filter_map(|line| line.strip_prefix("server "))
            .map(|server| {
                server
                    .split_whitespace()
                    .nth(1)
                    .expect("an address")
                    .to_owned()
            })
            .collect();
        let expected: BTreeSet<String> = instances
            .keys()
            .map(|name| format!("{name}:{port}"))
            .collect();
        assert_eq!(servers, expected, "{section} reaches every instance");
    }
    assert_eq!(
        frontends, published,
        "the entry point serves what it publishes"
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

    // Prometheus → every instance (not the entry point: each exports its own series), with the
    // configuration and rules of deploy/prometheus.
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
    let targets: BTreeSet<String> = strings(&job["static_configs"][0]["targets"])
        .into_iter()
        .collect();
    assert_eq!(
        targets,
        instances
            .keys()
            .map(|name| format!("{name}:{http_port}"))
            .collect::<BTreeSet<_>>()
    );
    for name in instances.keys() {
        assert!(
            !prometheus["depends_on"][name].is_null(),
            "prometheus starts with {name}"
        );
    }
    for rules in strings(&config["rule_files"]) {
        assert!(
            config_file.with_file_name(&rules).is_file(),
            "{rules} exists"
        );
    }

    // Credentials: a one-shot service makes suivi's credentials file and its settings file with
    // the /metrics token, and the token alone for Prometheus, in a volume; suivi and Prometheus
    // start once it has, and read them there.
    let made = ComposeCredentials::make(&compose);
    let creator = &services[&made.service];
    assert_eq!(
        creator["image"], suivi["image"],
        "the credentials service runs suivi's image"
    );
    assert_eq!(creator["restart"], json!("no"), "a one-shot service");
    for (name, service) in instances
        .iter()
        .chain([(&"prometheus".to_owned(), prometheus)])
    {
        assert_eq!(
            service["depends_on"][&made.service]["condition"],
            json!("service_completed_successfully"),
            "{name} starts once the credentials exist"
        );
    }
    let credentials = made.file(suivi, &env["SUIVI_CREDENTIALS"]);
    let file = suivi::auth::file::CredentialsFile::read(&credentials, false)
        .unwrap_or_else(|error| panic!("{}: {error:#}", credentials.display()));
    assert_eq!(file.credentials.len(), 1, "{file:?}");
    let settings = made.file(suivi, &env["SUIVI_CONFIG"]);
    let settings: Value = toml::from_str(&std::fs::read_to_string(&settings).expect("suivi.toml"))
        .expect("suivi's settings file is TOML");
    let metrics_token = settings["metrics_token"]
        .as_str()
        .expect("the settings file sets metrics_token");
    assert!(metrics_token.len() >= 32, "{metrics_token}");
    // The instances read the one settings file, so a learner has one pseudonym whichever
    // instance takes the event.
    assert_eq!(
        settings["pseudonym_key"].as_str(),
        Some(made.pseudonym_key.as_str())
    );
    // suivi only reads the volume; the credentials are added with the credentials service.
    for (name, instance) in &instances {
        for volume in strings(&instance["volumes"]) {
            if volume.starts_with(&format!("{}:", made.volume)) {
                assert!(volume.ends_with(":ro"), "{name} mounts {volume} read-only");
            }
        }
    }
    let token_file = job["authorization"]["credentials_file"]
        .as_str()
        .expect("the scrape job reads its bearer token from a file");
    assert_eq!(job["authorization"]["type"], json!("Bearer"));
    let token_file = made.file(prometheus, token_file);
    assert_eq!(
        std::fs::read_to_string(&token_file)
            .expect("Prometheus's token file")
            .trim(),
        metrics_token,
        "Prometheus sends the metrics_token suivi requires"
    );
    // Prometheus runs as another user: it may read its token, not suivi's files.
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
    };
    assert_eq!(mode(&token_file) & 0o004, 0o004, "{}", token_file.display());
    for private in [&credentials, &made.file(suivi, &env["SUIVI_CONFIG"])] {
        assert_eq!(mode(private) & 0o077, 0, "{} is private", private.display());
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

#[test]
fn the_compose_file_runs_kafka_in_kraft_mode_with_the_topics_suivi_reads() {
    let compose = yaml(&deploy("docker-compose.yml"));
    let services = compose["services"].as_object().expect("services");
    let instances = suivi_instances(&compose);
    // The instances' settings are the same but for their instance ids (checked above).
    let (_, suivi) = instances.first_key_value().expect("an instance");
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
    for (name, instance) in &instances {
        assert_eq!(
            instance["depends_on"][creator]["condition"],
            json!("service_completed_successfully"),
            "{name} starts once the topics exist"
        );
    }
    let created = created_topics(&strings(&topics_service["command"]).join("\n"));
    let mut settings = Settings::default();
    if let Some(topics) = env.get("SUIVI_KAFKA_TOPICS") {
        settings.kafka_topics.clone_from(topics);
    }
    if let Some(template) = env.get("SUIVI_KAFKA_DEAD_LETTER_TOPIC") {
        settings.kafka_dead_letter_topic.clone_from(template);
    }
    let partials_template = env
        .get("SUIVI_KAFKA_PARTIALS_TOPIC")
        .map_or(DEFAULT_KAFKA_PARTIALS_TOPIC, String::as_str);
    let topics = settings.kafka_topics();
    assert!(!topics.is_empty());
    for topic in &topics {
        let dead_letters = settings.kafka_dead_letter_topic(topic);
        let partials = partials_topic(partials_template, topic);
        // The partials topic keeps the newest partial of each key: compacted, never deleted.
        let flags = created
            .get(&partials)
            .unwrap_or_else(|| panic!("{partials} is not created: {created:?}"));
        assert_eq!(
            flags.get("--config cleanup.policy").map(String::as_str),
            Some("compact"),
            "{partials}: {flags:?}"
        );
        for (name, events) in [(topic, true), (&dead_letters, false), (&partials, false)] {
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
                assert_eq!(
                    i32::try_from(partitions).ok(),
                    Some(KafkaScene::PARTITIONS),
                    "{name}: six shards, as the tests' broker has them"
                );
                assert_eq!(
                    partitions as usize % instances.len(),
                    0,
                    "{name}: the {} instances own as many partitions each",
                    instances.len()
                );
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

/// The topics a shell script creates with `kafka-topics.sh --create`, each with its flags
/// (`--flag` → value, "" for a flag without one; `--config key` → value).
pub(super) fn created_topics(script: &str) -> BTreeMap<String, BTreeMap<String, String>> {
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

/// What the compose file's credentials service makes, run as compose runs it on the first
/// `up` (its script, with `$$` unescaped), with the test's `suivi` binary, each named volume it
/// mounts a directory of the test's own.
pub(super) struct ComposeCredentials {
    /// The one-shot service.
    pub service: String,
    /// The volume holding suivi's credentials file.
    pub volume: String,
    /// The named volumes it fills, each a directory here.
    pub volumes: BTreeMap<String, PathBuf>,
    /// The admin token it printed.
    pub admin_token: String,
    /// The pseudonymisation key the instances share, from their settings file.
    pub pseudonym_key: String,
    _dir: tempfile::TempDir,
}

impl ComposeCredentials {
    /// Runs the service that fills the volume of suivi's `SUIVI_CREDENTIALS`, twice: the second
    /// `up` must leave the credentials as they are and print no token.
    pub fn make(compose: &Value) -> ComposeCredentials {
        let services = compose["services"].as_object().expect("services");
        let instances = suivi_instances(compose);
        let (_, suivi) = instances.first_key_value().expect("an instance");
        let path = compose_env(suivi)
            .get("SUIVI_CREDENTIALS")
            .cloned()
            .expect("suivi has a credentials file in compose");
        let (volume, rest) = named_volume_at(suivi, &path)
            .unwrap_or_else(|| panic!("{path} is in a named volume of suivi's"));
        let writers: Vec<&String> = services
            .iter()
            .filter(|(name, service)| {
                !instances.contains_key(*name)
                    && strings(&service["volumes"]).iter().any(|mount| {
                        mount.split(':').next() == Some(volume.as_str()) && !mount.ends_with(":ro")
                    })
            })
            .map(|(name, _)| name)
            .collect();
        assert_eq!(
            writers.len(),
            1,
            "one service writes the volume {volume}: {writers:?}"
        );
        let service = writers[0].clone();
        let creator = &services[&service];
        assert_eq!(strings(&creator["entrypoint"]), ["bash", "-c"]);
        let command = strings(&creator["command"]);
        assert_eq!(command.len(), 1, "one script: {command:?}");
        let dir = tempfile::tempdir().expect("a temporary dir");
        let mut volumes = BTreeMap::new();
        let mut script = command[0].replace("$$", "$");
        let mut env = compose_env(creator);
        for mount in strings(&creator["volumes"]) {
            let mut parts = mount.split(':');
            let (source, target) = (
                parts.next().expect("a source"),
                parts.next().expect("a target"),
            );
            assert!(
                compose["volumes"].get(source).is_some(),
                "{service} mounts named volumes only: {mount}"
            );
            let host = dir.path().join(source);
            std::fs::create_dir(&host).expect("the volume's directory");
            script = script.replace(target, &host.to_string_lossy());
            for value in env.values_mut() {
                *value = value.replace(target, &host.to_string_lossy());
            }
            volumes.insert(source.to_owned(), host);
        }
        let binary = Path::new(env!("CARGO_BIN_EXE_suivi"));
        let path = format!(
            "{}:{}",
            binary.parent().expect("the binary's directory").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let run = || {
            let mut command = Command::new("bash");
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("SUIVI_") {
                    command.env_remove(name);
                }
            }
            let output = command
                .args(["-c", &script])
                .env("PATH", &path)
                .envs(&env)
                .stdin(Stdio::null())
                .output()
                .expect("bash runs the credentials script");
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            assert!(
                output.status.success(),
                "{service} failed ({}):\n{stdout}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            stdout
        };
        let tokens = |stdout: &str| -> Vec<String> {
            stdout
                .lines()
                .filter(|line| line.starts_with(suivi::auth::file::TOKEN_PREFIX))
                .map(str::to_owned)
                .collect()
        };
        let first = run();
        let printed = tokens(&first);
        assert_eq!(printed.len(), 1, "one token, the admin's:\n{first}");
        let credentials = volumes[&volume].join(&rest);
        let before = std::fs::read(&credentials).expect("the credentials file");
        let mut made = volumes
            .values()
            .flat_map(|dir| std::fs::read_dir(dir).expect("a volume"))
            .map(|entry| entry.expect("an entry").path())
            .collect::<Vec<_>>();
        let second = run();
        assert!(
            tokens(&second).is_empty(),
            "no token the second time:\n{second}"
        );
        assert_eq!(
            std::fs::read(&credentials).expect("the credentials file"),
            before,
            "the second `up` keeps the credentials"
        );
        let mut after = volumes
            .values()
            .flat_map(|dir| std::fs::read_dir(dir).expect("a volume"))
            .map(|entry| entry.expect("an entry").path())
            .collect::<Vec<_>>();
        made.sort();
        after.sort();
        assert_eq!(made, after, "the second `up` leaves the same files");
        // The instances' settings file holds the pseudonymisation key they share; one made
        // before they shared a key gets one on the next `up`, and keeps the rest.
        let (settings_volume, rest) = named_volume_at(suivi, &compose_env(suivi)["SUIVI_CONFIG"])
            .expect("suivi's settings file is in a named volume");
        let settings = volumes[&settings_volume].join(rest);
        let read = || std::fs::read_to_string(&settings).expect("the settings file");
        let pseudonym_key = |text: &str| -> Option<String> {
            let settings: Value = toml::from_str(text).expect("the settings file is TOML");
            let key = settings["pseudonym_key"].as_str()?;
            suivi::config::parse_key(key).expect("a pseudonymisation key");
            Some(key.to_owned())
        };
        let shared = read();
        assert!(pseudonym_key(&shared).is_some(), "{}", settings.display());
        let before_keys: String = shared
            .lines()
            .filter(|line| !line.starts_with("pseudonym_key"))
            .map(|line| format!("{line}\n"))
            .collect();
        std::fs::write(&settings, &before_keys).expect("an older settings file");
        let upgrade = run();
        assert!(tokens(&upgrade).is_empty(), "no token:\n{upgrade}");
        let upgraded = read();
        let key = pseudonym_key(&upgraded).expect("the upgrade adds a key");
        assert!(upgraded.starts_with(&before_keys), "{upgraded}");
        assert_eq!(
            std::fs::read(&credentials).expect("the credentials file"),
            before,
            "the upgrade keeps the credentials"
        );
        ComposeCredentials {
            service,
            volume,
            volumes,
            admin_token: printed[0].clone(),
            pseudonym_key: key,
            _dir: dir,
        }
    }

    /// Where the file `service` sees at `container_path` is here: in one of the volumes made.
    pub fn file(&self, service: &Value, container_path: &str) -> PathBuf {
        let (volume, rest) = named_volume_at(service, container_path)
            .unwrap_or_else(|| panic!("{container_path} is in a named volume"));
        let dir = self.volumes.get(&volume).unwrap_or_else(|| {
            panic!(
                "{container_path} is in {volume}, which {} fills",
                self.service
            )
        });
        let file = dir.join(rest);
        assert!(
            file.is_file(),
            "{container_path} ({}) is made",
            file.display()
        );
        file
    }
}

/// The compose file's suivi instances, by name: the services that run the image they build
/// (the one-shot credentials service builds it too, but runs a script of its own).
pub(super) fn suivi_instances(compose: &Value) -> BTreeMap<String, Value> {
    compose["services"]
        .as_object()
        .expect("services")
        .iter()
        .filter(|(_, service)| service["build"].is_object() && service["entrypoint"].is_null())
        .map(|(name, service)| (name.clone(), service.clone()))
        .collect()
}

/// The partitions of the events topic compose creates (the Kubernetes deployment's topic is
/// created by the same command, deploy/README.md).
pub(super) fn compose_events_partitions() -> u32 {
    let compose = yaml(&deploy("docker-compose.yml"));
    let script = compose["services"]
        .as_object()
        .expect("services")
        .values()
        .map(|service| strings(&service["command"]).join("\n"))
        .find(|script| script.contains("kafka-topics.sh"))
        .expect("a service creates the topics");
    created_topics(&script)[suivi::config::DEFAULT_KAFKA_TOPIC]["--partitions"]
        .parse()
        .expect("a partition count")
}

/// Where HAProxy's official image reads its configuration.
const HAPROXY_CONFIG: &str = "/usr/local/etc/haproxy/haproxy.cfg";

/// An HAProxy configuration: each section (`global`, `defaults`, `frontend grpc`, …) and its
/// lines, without comments, blank lines or indentation.
fn haproxy(path: &Path) -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = None;
    for line in text.lines() {
        let content = line.split('#').next().unwrap_or_default();
        if content.trim().is_empty() {
            continue;
        }
        if !content.starts_with(char::is_whitespace) {
            let name = content.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                sections.insert(name.clone(), Vec::new()).is_none(),
                "{name} twice"
            );
            section = Some(name);
        } else {
            let name = section
                .as_ref()
                .unwrap_or_else(|| panic!("{line} is in no section"));
            let words = content.split_whitespace().collect::<Vec<_>>().join(" ");
            sections.get_mut(name).expect("its section").push(words);
        }
    }
    sections
}

/// The named volume `service` mounts over `container_path`, and the path inside it ("" for the
/// volume's own root).
fn named_volume_at(service: &Value, container_path: &str) -> Option<(String, String)> {
    strings(&service["volumes"]).iter().find_map(|mount| {
        let mut parts = mount.split(':');
        let (source, target) = (parts.next()?, parts.next()?);
        if source.starts_with('.') || source.starts_with('/') {
            return None;
        }
        let rest = container_path.strip_prefix(target)?;
        let rest = if rest.is_empty() {
            rest
        } else {
            rest.strip_prefix('/')?
        };
        Some((source.to_owned(), rest.to_owned()))
    })
}

/// A compose service's environment (a map, as the file writes it).
pub(super) fn compose_env(service: &Value) -> BTreeMap<String, String> {
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
pub(super) fn host_path(base: &Path, service: &Value, container_path: &str) -> PathBuf {
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
