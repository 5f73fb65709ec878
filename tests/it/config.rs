//! The real `suivi` binary with wrong settings, from flags, the environment and a config file:
//! it must stop before serving, with a non-zero exit and a message naming the setting. And
//! `--help` explains the settings.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SUIVI: &str = env!("CARGO_BIN_EXE_suivi");

/// The exit code and stderr of `suivi args…` run in `dir`, with no `SUIVI_…` variable but
/// `env`. Unless a case overrides them, the APIs are set to free ports and the data to `dir`,
/// so that a configuration wrongly accepted serves harmlessly, and the test then fails.
fn run_suivi(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(SUIVI);
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os().filter_map(|(name, value)| {
        let name = name.into_string().ok()?;
        name.starts_with("SUIVI_").then_some((name, value))
    }) {
        command.env_remove(name);
    }
    command
        .env("SUIVI_GRPC_ADDR", "127.0.0.1:0")
        .env("SUIVI_HTTP_ADDR", "127.0.0.1:0")
        .env("SUIVI_DATA_DIR", dir.join("data"))
        .env("RUST_LOG", "warn");
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("the suivi binary runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("suivi can be waited for") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("suivi's output");
            panic!(
                "suivi {args:?} {env:?} kept running: it should have refused its settings; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().expect("suivi's output");
    (
        status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn wrong_settings_stop_suivi_before_it_serves_with_a_message_naming_the_setting() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("a config file");
        path.to_str().expect("a UTF-8 path").to_owned()
    };
    let unknown_key = write("unknown-key.toml", "colour = \"blue\"\n");
    let wrong_type = write("wrong-type.toml", "chapter_count = \"twelve\"\n");
    let wrong_zone = write("wrong-zone.toml", "time_zone = \"Mars/Olympus\"\n");
    let good_count = write("good-count.toml", "chapter_count = 12\n");
    let missing = dir.path().join("missing.toml");
    let missing = missing.to_str().expect("a UTF-8 path");

    // Each case: the arguments, the environment, and what stderr must name.
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: Vec<Case<'_>> = vec![
        (
            vec!["serve"],
            vec![("SUIVI_GRPC_ADDR", "not-an-address")],
            vec!["grpc_addr", "SUIVI_GRPC_ADDR"],
        ),
        (
            vec!["serve", "--http-addr", "localhost"],
            vec![],
            vec!["http_addr", "--http-addr"],
        ),
        (
            vec!["serve", "--chapter-count", "40"],
            vec![],
            vec!["chapter_count", "40"],
        ),
        (
            vec!["serve"],
            vec![("SUIVI_CHAPTER_COUNT", "0")],
            vec!["chapter_count", "0"],
        ),
        (
            vec!["serve"],
            vec![("SUIVI_TIME_ZONE", "Mars/Olympus")],
            vec!["time_zone", "Mars/Olympus"],
        ),
        (
            vec!["serve", "--config", &unknown_key],
            vec![],
            vec!["colour", "unknown-key.toml"],
        ),
        (
            vec!["serve", "--config", &wrong_type],
            vec![],
            vec!["chapter_count", "wrong-type.toml"],
        ),
        (
            vec!["serve"],
            vec![("SUIVI_CONFIG", &wrong_zone)],
            vec!["time_zone", "Mars/Olympus"],
        ),
        (
            vec!["serve", "--config", missing],
            vec![],
            vec!["missing.toml", "does not exist"],
        ),
        (
            vec!["serve"],
            vec![("SUIVI_CONFIG", missing)],
            vec!["missing.toml", "does not exist"],
        ),
        // The environment overrides the file, and flags override the environment.
        (
            vec!["serve", "--config", &good_count],
            vec![("SUIVI_CHAPTER_COUNT", "40")],
            vec!["chapter_count", "40"],
        ),
        (
            vec!["serve", "--chapter-count", "33"],
            vec![("SUIVI_CHAPTER_COUNT", "12")],
            vec!["chapter_count", "33"],
        ),
        (
            vec!["serve"],
            vec![("SUIVI_MAX_BATCH_EVENTS", "lots")],
            vec!["max_batch_events", "SUIVI_MAX_BATCH_EVENTS"],
        ),
        (
            vec!["serve", "--max-request-bytes", "0"],
            vec![],
            vec!["max_request_bytes"],
        ),
        (
            vec![
                "serve",
                "--max-batch-events",
                "20000",
                "--ingest-queue-events",
                "10000",
            ],
            vec![],
            vec!["ingest_queue_events", "max_batch_events"],
        ),
        (
            vec!["serve", "--snapshot-interval", "soon"],
            vec![],
            vec!["snapshot_interval", "--snapshot-interval"],
        ),
        (
            vec!["serve", "--snapshot-interval", "0s"],
            vec![],
            vec!["snapshot_interval"],
        ),
        (
            vec![
                "serve",
                "--grpc-addr",
                "127.0.0.1:7171",
                "--http-addr",
                "127.0.0.1:7171",
            ],
            vec![],
            vec!["grpc_addr", "http_addr", "127.0.0.1:7171"],
        ),
        (
            vec!["serve"],
            vec![("SUIVI_LOG_FORMAT", "xml")],
            vec!["log_format", "SUIVI_LOG_FORMAT"],
        ),
    ];
    for (args, env, expected) in cases {
        let (code, stderr) = run_suivi(dir.path(), &args, &env);
        assert_eq!(
            code,
            Some(2),
            "suivi {args:?} {env:?} exits with the settings error code; stderr: {stderr}"
        );
        for text in expected {
            assert!(
                stderr.contains(text),
                "suivi {args:?} {env:?}: stderr names {text:?}: {stderr}"
            );
        }
    }
}

#[test]
fn a_wrong_pseudonym_key_is_refused_without_being_shown() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let key = "a-secret-key-that-is-not-hex";
    for (args, env) in [
        (vec!["serve", "--pseudonym-key", key], vec![]),
        (vec!["serve"], vec![("SUIVI_PSEUDONYM_KEY", key)]),
    ] {
        let (code, stderr) = run_suivi(dir.path(), &args, &env);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains("pseudonym_key"), "{stderr}");
        assert!(!stderr.contains(key), "the key is never shown: {stderr}");
    }
}

#[test]
fn a_campaign_registry_that_cannot_be_read_stops_suivi() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let bad = dir.path().join("bad-campaigns.toml");
    std::fs::write(
        &bad,
        "[[campaign]]\nid = \"Not Normalised\"\nname = \"x\"\n",
    )
    .expect("written");
    let missing = dir.path().join("no-campaigns.toml");
    for (path, expected) in [
        (&bad, "bad-campaigns.toml"),
        (&missing, "no-campaigns.toml"),
    ] {
        let path = path.to_str().expect("a UTF-8 path");
        let (code, stderr) = run_suivi(dir.path(), &["serve", "--campaigns", path], &[]);
        assert!(
            code.is_some_and(|code| code != 0),
            "a non-zero exit ({code:?}): {stderr}"
        );
        assert!(
            stderr.contains("campaign registry") && stderr.contains(expected),
            "{stderr}"
        );
    }
}

#[test]
fn help_explains_the_commands_and_every_setting() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let help = |args: &[&str]| {
        let output = Command::new(SUIVI)
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("the suivi binary runs");
        assert!(output.status.success(), "suivi {args:?} exits 0");
        String::from_utf8(output.stdout).expect("UTF-8 help")
    };

    let top = help(&["--help"]);
    assert!(top.contains("serve"), "{top}");

    let serve = help(&["serve", "--help"]);
    for setting in [
        "config",
        "grpc_addr",
        "http_addr",
        "data_dir",
        "campaigns",
        "time_zone",
        "chapter_count",
        "max_batch_events",
        "max_request_bytes",
        "max_unregistered_campaigns",
        "ingest_queue_events",
        "ingest_queue_timeout",
        "snapshot_interval",
        "shutdown_grace",
        "watch_interval",
        "pseudonym_key",
        "log_format",
    ] {
        let flag = format!("--{}", setting.replace('_', "-"));
        let env = format!("SUIVI_{}", setting.to_uppercase());
        assert!(
            serve.contains(&flag) && serve.contains(&env),
            "serve --help names {flag} and {env}: {serve}"
        );
    }
    assert!(serve.contains("127.0.0.1:50051") && serve.contains("127.0.0.1:8080"));
}
