//! The Kubernetes manifests of `deploy/kubernetes` use suivi's ports, probes, user and data
//! volume, and turn Kafka on through an optional ConfigMap.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;

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
    // Settings from Secrets and ConfigMaps are optional, but the credentials': the pod starts
    // without the others, never without its credentials.
    for var in container["env"].as_array().expect("an env list") {
        let Some(from) = var["valueFrom"].as_object() else {
            continue;
        };
        let reference = from
            .get("secretKeyRef")
            .or_else(|| from.get("configMapKeyRef"))
            .unwrap_or_else(|| panic!("{var} is a plain value, a Secret's or a ConfigMap's"));
        if reference["name"] == json!(KUBERNETES_CREDENTIALS_SECRET) {
            assert_ne!(reference["optional"], json!(true), "{var} is required");
        } else {
            assert_eq!(reference["optional"], json!(true), "{var} is optional");
        }
        assert!(
            var["name"]
                .as_str()
                .is_some_and(|name| name.starts_with("SUIVI_")),
            "{var}"
        );
    }
    // Credentials: the file from the Secret suivi-credentials, mounted as a directory (a
    // subPath mount would never see the kubelet's updates, which suivi reloads), and the
    // /metrics token from the same Secret. The Secret shipped is a placeholder: it holds no
    // credential, and no metrics token, so that suivi never runs with a token everyone knows.
    assert_eq!(
        secret_env(container).get("SUIVI_METRICS_TOKEN"),
        Some(&(
            KUBERNETES_CREDENTIALS_SECRET.to_owned(),
            "metrics-token".to_owned()
        ))
    );
    let credentials_file = &env["SUIVI_CREDENTIALS"];
    let placeholder = mounted_secret_file(pod, container, credentials_file, &documents);
    let placeholder = suivi::auth::file::CredentialsFile::parse(&placeholder)
        .expect("the placeholder is a credentials file");
    assert!(placeholder.credentials.is_empty(), "{placeholder:?}");
    let secret = of_kind("Secret")
        .into_iter()
        .find(|secret| secret["metadata"]["name"] == json!(KUBERNETES_CREDENTIALS_SECRET))
        .expect("the credentials Secret");
    for data in ["data", "stringData"] {
        assert!(
            secret[data].get("metrics-token").is_none(),
            "no metrics token is shipped: {secret}"
        );
    }
    assert_eq!(
        env.get("SUIVI_ALLOW_ANONYMOUS"),
        None,
        "the manifests never serve without credentials"
    );
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

pub(super) fn selects(selector: &Value, labels: &serde_json::Map<String, Value>) -> bool {
    let selector = selector.as_object().expect("a label selector");
    !selector.is_empty()
        && selector
            .iter()
            .all(|(name, value)| labels.get(name) == Some(value))
}

/// A Kubernetes container's environment with plain values (those from secrets left out).
pub(super) fn container_env(container: &Value) -> BTreeMap<String, String> {
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

/// A Kubernetes container's settings taken from Secrets: variable → (Secret, key).
pub(super) fn secret_env(container: &Value) -> BTreeMap<String, (String, String)> {
    container["env"]
        .as_array()
        .expect("an env list")
        .iter()
        .filter_map(|var| {
            let reference = &var["valueFrom"]["secretKeyRef"];
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

/// The text of the file `container` sees at `path`, from a Secret volume of `pod` mounted as a
/// directory (no subPath, so that the kubelet's updates reach it), the Secret being one of
/// `documents` with the file in `stringData`.
pub(super) fn mounted_secret_file(
    pod: &Value,
    container: &Value,
    path: &str,
    documents: &[Value],
) -> String {
    let mount = container["volumeMounts"]
        .as_array()
        .expect("volume mounts")
        .iter()
        .find(|mount| {
            mount["mountPath"]
                .as_str()
                .and_then(|dir| path.strip_prefix(dir))
                .is_some_and(|rest| rest.starts_with('/'))
        })
        .unwrap_or_else(|| panic!("{path} is in a mounted volume"));
    assert!(mount["subPath"].is_null(), "{mount} mounts a directory");
    assert_eq!(mount["readOnly"], json!(true), "{mount}");
    let dir = mount["mountPath"].as_str().expect("a mount path");
    let name = path[dir.len() + 1..].to_owned();
    let volume = pod["volumes"]
        .as_array()
        .expect("pod volumes")
        .iter()
        .find(|volume| volume["name"] == mount["name"])
        .unwrap_or_else(|| panic!("the volume of {mount}"));
    let secret_name = volume["secret"]["secretName"]
        .as_str()
        .unwrap_or_else(|| panic!("{volume} is a Secret"));
    let key = match volume["secret"]["items"].as_array() {
        None => name.clone(),
        Some(items) => items
            .iter()
            .find(|item| item["path"] == json!(name))
            .and_then(|item| item["key"].as_str())
            .unwrap_or_else(|| panic!("{volume} projects {name}"))
            .to_owned(),
    };
    let secret = documents
        .iter()
        .find(|document| {
            document["kind"] == json!("Secret")
                && document["metadata"]["name"] == json!(secret_name)
        })
        .unwrap_or_else(|| panic!("the manifests have the Secret {secret_name}"));
    secret["stringData"][&key]
        .as_str()
        .unwrap_or_else(|| panic!("the Secret {secret_name} has {key} in stringData: {secret}"))
        .to_owned()
}

/// A Kubernetes container's settings taken from ConfigMaps: variable → (ConfigMap, key).
pub(super) fn config_map_env(container: &Value) -> BTreeMap<String, (String, String)> {
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

/// How many bytes a URL-safe base64 text (padding optional) decodes to; `None` if it is not one.
pub(super) fn base64url_decoded_len(text: &str) -> Option<usize> {
    let text = text.trim_end_matches('=');
    let valid = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && text.len() % 4 != 1;
    valid.then_some(text.len() * 6 / 8)
}
