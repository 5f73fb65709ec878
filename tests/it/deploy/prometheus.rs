//! A real Prometheus scrapes a running suivi with `deploy/prometheus`'s configuration and alert
//! rules, and every query of the Grafana dashboard returns data; every metric the dashboard and
//! the alerts name is one suivi exports.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::spawn_app_with;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_suivi_and_every_dashboard_query_returns_data() {
    let kafka = KafkaScene::start().await;
    let metrics_token = suivi::auth::file::new_token();
    let mut app = spawn_app_with(|settings| {
        // Checkpoints and snapshots within the test, so their metrics have data too.
        settings.snapshot_interval = Duration::from_secs(1);
        settings.checkpoint_interval = Duration::from_secs(1);
        // /metrics needs its token, as every deployment sets it.
        settings.metrics_token = Some(secret(&metrics_token));
        kafka.turn_on(settings);
    })
    .await;
    // Without the token, or with another, /metrics answers 401 and asks for a bearer token.
    let url = format!("http://{}/metrics", app.http_addr);
    for authorization in [
        None,
        Some("Bearer suivi_not-the-metrics-token"),
        Some("Basic Og=="),
    ] {
        let mut request = reqwest::Client::new().get(&url);
        if let Some(value) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        let response = request.send().await.expect("GET /metrics answers");
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "GET /metrics with {authorization:?}"
        );
        let challenge = &response.headers()[reqwest::header::WWW_AUTHENTICATE];
        assert!(
            challenge.as_bytes().starts_with(b"Bearer"),
            "GET /metrics with {authorization:?}: {challenge:?}"
        );
    }
    // The test's own reads of /metrics carry the token (suivi's other routes are open here).
    app.http = bearer_client(&metrics_token);
    let (status, _) = app.get_text("/metrics").await;
    assert_eq!(status, StatusCode::OK, "GET /metrics with its token");
    let prometheus = Prometheus::start(app.http_addr, &metrics_token);
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
    // Every series is exported from the start (at zero), so none may be empty.
    let exprs = dashboard_exprs();
    let mut empty = Vec::new();
    for expr in exprs {
        let substituted = substitute_dashboard_variables(&expr);
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
    let unknown: Vec<String> = used
        .iter()
        .filter(|(name, _)| !is_exported(name, &exported))
        .map(|(name, users)| format!("{name} (in {users:?})"))
        .collect();
    assert!(
        unknown.is_empty(),
        "metrics used but not exported by suivi: {unknown:#?}\nexported: {:#?}",
        exported.keys()
    );
}

/// Whether a `/metrics` text has a series of the family `name`.
pub(super) fn has_series(text: &str, name: &str) -> bool {
    text.lines().any(|line| {
        line.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

/// A Prometheus server of the test's own, killed when dropped.
pub(super) struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus with deploy/prometheus/prometheus.yml and its rules, scraping suivi at
    /// `target` every second with `metrics_token`, on a free port of 127.0.0.1. The token is in
    /// a file of its own, as the deployments give it, newline-terminated (Prometheus trims it).
    fn start(target: SocketAddr, metrics_token: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("a temporary dir");
        let token_file = dir.path().join("suivi-metrics-token");
        std::fs::write(&token_file, format!("{metrics_token}\n")).expect("the token file");
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
        let authorization = &mut jobs[0]["authorization"];
        assert_eq!(
            authorization["type"],
            json!("Bearer"),
            "the job sends suivi's metrics token: {authorization}"
        );
        assert!(
            authorization["credentials_file"].is_string(),
            "read from a file, at each scrape: {authorization}"
        );
        authorization["credentials_file"] = json!(token_file);
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

/// An HTTP client that sends `Authorization: Bearer <token>` with every request.
pub(super) fn bearer_client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}")
            .parse()
            .expect("a token is a valid header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("an HTTP client")
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn dashboard() -> Value {
    let path = deploy("grafana/dashboards/suivi.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

pub(super) fn collect_panels<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
    for panel in panels.as_array().expect("panels") {
        out.push(panel);
        if panel["panels"].is_array() {
            collect_panels(&panel["panels"], out);
        }
    }
}

/// The PromQL of every panel target and every query variable of the dashboard.
pub(super) fn dashboard_exprs() -> Vec<String> {
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
pub(super) fn substitute_dashboard_variables(expr: &str) -> String {
    let expr = expr
        .replace("${campaign}", CAMPAIGN)
        .replace("$campaign", CAMPAIGN)
        .replace("$__rate_interval", "1m");
    assert!(!expr.contains('$'), "an unknown variable in {expr}");
    expr
}

pub(super) fn alert_rules() -> Vec<Value> {
    let rules = yaml(&deploy("prometheus/alerts.yml"));
    rules["groups"]
        .as_array()
        .expect("rule groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules").clone())
        .collect()
}

/// Metric families of a `/metrics` text, by name, with their type.
pub(super) fn metric_families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let (name, kind) = rest.split_once(' ')?;
            Some((name.to_owned(), kind.trim().to_owned()))
        })
        .collect()
}

/// `name` is a series suivi exports: a family, or a histogram's `_bucket`, `_sum`, `_count`.
pub(super) fn is_exported(name: &str, families: &BTreeMap<String, String>) -> bool {
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
pub(super) fn metric_names(expr: &str) -> BTreeSet<String> {
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

pub(super) fn sample_value(sample: &Value) -> f64 {
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
