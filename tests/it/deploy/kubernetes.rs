//! The Kubernetes manifests of `deploy/kubernetes` use suivi's ports, probes, user and data
//! volume, run three replicas sharing the Kafka topic's partitions behind one Service, and, with
//! the component `single`, one replica with Kafka optional.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;

/// The component that makes the manifests one replica without Kafka (deploy/README.md).
pub(super) const SINGLE: &str = "single";

#[test]
fn the_kubernetes_manifests_use_suivis_ports_probes_user_and_data_volume() {
    let dir = deploy("kubernetes");
    let kustomization = yaml(&dir.join("kustomization.yaml"));
    let resources: BTreeSet<String> = strings(&kustomization["resources"]).into_iter().collect();
    let mut files = BTreeSet::new();
    let mut components = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("deploy/kubernetes") {
        let entry = entry.expect("a directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() {
            components.insert(name);
        } else if name != "kustomization.yaml" {
            files.insert(name);
        }
    }
    assert_eq!(
        resources, files,
        "kustomization.yaml lists every manifest of deploy/kubernetes"
    );
    // Its directories are components, each opted into with `kustomize edit add component`.
    assert_eq!(components, BTreeSet::from([SINGLE.to_owned()]));
    assert!(
        kustomization["components"].is_null(),
        "no component is on by default"
    );
    let documents = manifests(&[]);
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
    // Scale-out: three replicas, at most one per partition of the topic (so that none idles)
    // and as many partitions to each.
    let replicas = spec["replicas"].as_u64().expect("replicas");
    assert_eq!(replicas, 3, "three replicas share the topic");
    let partitions = u64::from(compose_events_partitions());
    assert_eq!(
        partitions % replicas,
        0,
        "{partitions} partitions for {replicas} replicas"
    );
    assert_eq!(
        spec["podManagementPolicy"],
        json!("Parallel"),
        "the replicas are peers, started together"
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
    // Settings from Secrets and ConfigMaps are optional, but those without which the pod must
    // not start: its credentials; in scale-out, the Kafka brokers (else three replicas would
    // count apart behind one Service) and the pseudonymisation key (else each would make its
    // own, and a learner would have three pseudonyms).
    let required = BTreeSet::from([
        "SUIVI_METRICS_TOKEN",
        "SUIVI_KAFKA_BROKERS",
        "SUIVI_PSEUDONYM_KEY",
    ]);
    assert_eq!(
        optional_references(container),
        references_but(container, &required)
    );
    // Kafka is required, through the ConfigMap's brokers, with gRPC/HTTP ingest forwarded into
    // the topic, and each pod a static member of the group under its own name.
    let from_config_map = config_map_env(container);
    assert_eq!(
        from_config_map.get("SUIVI_KAFKA_BROKERS"),
        Some(&(KUBERNETES_KAFKA_CONFIG_MAP.to_owned(), "brokers".to_owned())),
        "{from_config_map:?}"
    );
    assert_eq!(
        secret_env(container).get("SUIVI_PSEUDONYM_KEY"),
        Some(&(
            KUBERNETES_SUIVI_SECRET.to_owned(),
            "pseudonym-key".to_owned()
        ))
    );
    assert_eq!(
        env.get("SUIVI_FORWARD_TO_KAFKA").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        field_env(container)
            .get("SUIVI_KAFKA_INSTANCE_ID")
            .map(String::as_str),
        Some("metadata.name"),
        "the instance id is the pod's name, the same across its restarts"
    );
    assert!(
        !env.contains_key("SUIVI_KAFKA_BROKERS"),
        "the brokers are the ConfigMap's"
    );
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

    // One Service in front of every replica; the headless one only governs the StatefulSet.
    let services = of_kind("Service");
    let headless = services
        .iter()
        .find(|service| service["metadata"]["name"] == spec["serviceName"])
        .expect("the StatefulSet's serviceName is one of the Services");
    assert_eq!(headless["spec"]["clusterIP"], json!("None"));
    let fronts: Vec<&&Value> = services
        .iter()
        .filter(|service| service["spec"]["clusterIP"] != json!("None"))
        .collect();
    assert_eq!(fronts.len(), 1, "one Service in front: {fronts:?}");
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

    // The component single: the same StatefulSet with one replica, no scale-out, and Kafka
    // and the pseudonymisation key optional again; nothing else changes.
    let single = manifests(&[SINGLE]);
    let single_set = single
        .iter()
        .find(|document| document["kind"] == json!("StatefulSet"))
        .expect("a StatefulSet");
    assert_eq!(single_set["spec"]["replicas"], json!(1));
    let single_container = &single_set["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(single_container["name"], json!("suivi"));
    let single_env = container_env(single_container);
    assert!(
        !single_env.contains_key("SUIVI_FORWARD_TO_KAFKA"),
        "{single_env:?}"
    );
    assert!(field_env(single_container).is_empty(), "no instance id");
    assert_eq!(
        optional_references(single_container),
        references_but(single_container, &BTreeSet::from(["SUIVI_METRICS_TOKEN"])),
        "Kafka and the pseudonymisation key are optional with one replica"
    );
    assert_eq!(
        config_map_env(single_container),
        from_config_map,
        "the ConfigMap still turns Kafka on"
    );
    let mut expected = env.clone();
    expected.remove("SUIVI_FORWARD_TO_KAFKA");
    assert_eq!(single_env, expected, "the other settings are the same");
    let without_env = |set: &Value| {
        let mut set = set.clone();
        let container = &mut set["spec"]["template"]["spec"]["containers"][0];
        container["env"] = json!(null);
        set["spec"]["replicas"] = json!(null);
        set
    };
    assert_eq!(
        without_env(single_set),
        without_env(set),
        "single changes the replicas and the environment only"
    );
    assert_eq!(
        single
            .iter()
            .filter(|document| document["kind"] != json!("StatefulSet"))
            .collect::<Vec<_>>(),
        documents
            .iter()
            .filter(|document| document["kind"] != json!("StatefulSet"))
            .collect::<Vec<_>>(),
        "single changes the StatefulSet only"
    );
}

/// The manifests `kubectl apply -k deploy/kubernetes` applies, with `components` added (as
/// `kustomize edit add component` adds them): each component's patches applied as kustomize
/// applies a strategic-merge patch to the manifests its target names.
pub(super) fn manifests(components: &[&str]) -> Vec<Value> {
    let dir = deploy("kubernetes");
    let kustomization = yaml(&dir.join("kustomization.yaml"));
    let mut documents: Vec<Value> = strings(&kustomization["resources"])
        .iter()
        .flat_map(|file| yaml_documents(&dir.join(file)))
        .collect();
    for component in components {
        let component = yaml(&dir.join(component).join("kustomization.yaml"));
        assert_eq!(component["kind"], json!("Component"), "{component}");
        let patches = component["patches"].as_array().expect("patches");
        assert!(!patches.is_empty());
        for patch in patches {
            let target = &patch["target"];
            let text = patch["patch"].as_str().expect("an inline patch");
            let patch: Value = serde_norway::from_str(text).expect("the patch is YAML");
            let mut patched = 0;
            for document in &mut documents {
                if document["kind"] == target["kind"]
                    && document["metadata"]["name"] == target["name"]
                {
                    strategic_merge(document, &patch);
                    patched += 1;
                }
            }
            assert_eq!(patched, 1, "the patch's target {target} is one manifest");
        }
    }
    documents
}

/// Kubernetes' strategic merge of `patch` into `into`, as far as the manifests use it: maps
/// merge key by key, lists of named items (containers, env, volumes, …) merge item by name, an
/// item with `$patch: delete` is taken out, and anything else is replaced.
fn strategic_merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(into), Value::Object(patch)) => {
            for (key, value) in patch {
                match into.get_mut(key) {
                    Some(existing) => strategic_merge(existing, value),
                    None => {
                        into.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(into), Value::Array(patch))
            if patch.iter().all(|item| item["name"].is_string()) =>
        {
            for item in patch {
                let position = into.iter().position(|old| old["name"] == item["name"]);
                match (position, item["$patch"].as_str()) {
                    (Some(position), Some("delete")) => {
                        into.remove(position);
                    }
                    (None, Some("delete")) => panic!("nothing to delete: {item}"),
                    (_, Some(other)) => panic!("$patch: {other} is not used here"),
                    (Some(position), None) => strategic_merge(&mut into[position], item),
                    (None, None) => into.push(item.clone()),
                }
            }
        }
        (into, patch) => *into = patch.clone(),
    }
}

/// The variables of a container taken from Secrets or ConfigMaps whose reference is optional.
fn optional_references(container: &Value) -> BTreeSet<String> {
    container["env"]
        .as_array()
        .expect("an env list")
        .iter()
        .filter(|var| {
            let from = &var["valueFrom"];
            [&from["secretKeyRef"], &from["configMapKeyRef"]]
                .iter()
                .any(|reference| reference["optional"] == json!(true))
        })
        .map(|var| var["name"].as_str().expect("a name").to_owned())
        .collect()
}

/// The variables of a container taken from Secrets or ConfigMaps, but `required`; every value
/// comes from one of those, the pod's fields, or is plain.
fn references_but(container: &Value, required: &BTreeSet<&str>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for var in container["env"].as_array().expect("an env list") {
        let name = var["name"].as_str().expect("a name");
        assert!(name.starts_with("SUIVI_"), "{var}");
        let Some(from) = var["valueFrom"].as_object() else {
            continue;
        };
        assert!(
            ["secretKeyRef", "configMapKeyRef", "fieldRef"]
                .iter()
                .any(|kind| from.contains_key(*kind)),
            "{var} is a plain value, a Secret's, a ConfigMap's or a field of the pod"
        );
        if !from.contains_key("fieldRef") && !required.contains(name) {
            names.insert(name.to_owned());
        }
    }
    names
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
fn secret_env(container: &Value) -> BTreeMap<String, (String, String)> {
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

/// A Kubernetes container's settings taken from fields of its pod: variable → field path.
fn field_env(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_array()
        .expect("an env list")
        .iter()
        .filter_map(|var| {
            let path = var["valueFrom"]["fieldRef"]["fieldPath"].as_str()?;
            Some((var["name"].as_str()?.to_owned(), path.to_owned()))
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
