//! The `Dockerfile` and `.dockerignore` fit suivi: the build, the user, the environment and what
//! the build context leaves out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::*;

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
    // On 0.0.0.0 suivi needs credentials: the image names the file, to be mounted, and bakes
    // in no secret and no way around them.
    assert_eq!(env["SUIVI_CREDENTIALS"], "/etc/suivi/credentials.toml");
    for unset in [
        "SUIVI_ALLOW_ANONYMOUS",
        "SUIVI_METRICS_TOKEN",
        "SUIVI_PSEUDONYM_KEY",
        "SUIVI_CONFIG",
    ] {
        assert!(!env.contains_key(unset), "the image sets {unset}");
    }
    for (instruction, argument) in &instructions {
        assert!(
            !(matches!(instruction.as_str(), "COPY" | "ADD") && argument.contains("credentials")),
            "the image holds no credentials file: {instruction} {argument}"
        );
    }
    // Without the file, suivi refuses to start, saying which; without the setting, it refuses
    // to serve the image's addresses at all.
    let data_dir = tempfile::tempdir().expect("a temporary dir");
    let missing = data_dir.path().join("credentials.toml");
    let mut without_file = env.clone();
    without_file.insert(
        "SUIVI_CREDENTIALS".to_owned(),
        missing.display().to_string(),
    );
    let mut without_setting = env.clone();
    without_setting.remove("SUIVI_CREDENTIALS");
    for (env, expected) in [
        (without_file, missing.display().to_string()),
        (without_setting, "grpc_addr".to_owned()),
    ] {
        let (code, stderr) = serve_until_it_exits(&env, data_dir.path());
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(&expected), "{expected} in {stderr}");
    }
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

/// Runs `suivi serve` with exactly the settings of `env` (its data in `data_dir`), which must
/// make it exit within 10 s; its exit code and its log.
fn serve_until_it_exits(env: &BTreeMap<String, String>, data_dir: &Path) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_suivi"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SUIVI_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .arg("serve")
        .envs(env)
        .env("SUIVI_DATA_DIR", data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the suivi binary runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("suivi can be waited for") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            // Our own child, by its handle.
            let _ = child.kill();
            let _ = child.wait();
            panic!("suivi started with {env:?}: it must refuse");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(
        &mut child.stderr.take().expect("suivi's stderr"),
        &mut stderr,
    )
    .expect("suivi's log");
    (status.code(), stderr)
}

/// The Dockerfile's instructions, continuation lines joined, comments left out.
pub(super) fn dockerfile() -> Vec<(String, String)> {
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

pub(super) fn arguments(instructions: &[(String, String)], name: &str) -> Vec<String> {
    instructions
        .iter()
        .filter(|(instruction, _)| instruction == name)
        .map(|(_, argument)| argument.clone())
        .collect()
}

/// The Dockerfile's `ENV name=value …` settings.
pub(super) fn dockerfile_env(instructions: &[(String, String)]) -> BTreeMap<String, String> {
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
pub(super) fn dockerfile_user() -> u64 {
    let users = arguments(&dockerfile(), "USER");
    let user = users.last().expect("the Dockerfile has a USER");
    user.split(':')
        .next()
        .and_then(|uid| uid.parse().ok())
        .unwrap_or_else(|| panic!("USER {user} is a numeric uid, so runAsNonRoot can check it"))
}

/// The top-level entries of the repository that hold the targets of Cargo.toml (`src`,
/// `build.rs`, `benches`, `tests`, …), as `cargo metadata` lists them.
pub(super) fn cargo_target_roots() -> BTreeSet<String> {
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
pub(super) fn glob_matches(pattern: &str, name: &str) -> bool {
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
