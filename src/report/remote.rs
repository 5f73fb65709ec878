//! `suivi report --server`: the same reports, fetched from a running suivi's report routes with a
//! bearer token, for those who hold a credential rather than access to the downstream store (a
//! partner's coordinator gets its own campaigns, as its credential allows).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use reqwest::StatusCode;

use crate::report::{Format, Lang, file_name};

/// A running suivi's HTTP API.
#[derive(Debug)]
pub struct Remote {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// What to ask the report routes for.
#[derive(Debug, Clone)]
pub struct Query {
    /// `period=…` or `from=…&to=…`, or nothing for the last half-quarter that ended.
    pub period: Vec<(&'static str, String)>,
    pub format: Format,
    pub lang: Lang,
}

impl Remote {
    /// The API at `server` (`http(s)://host:port`), trusting `ca_cert` besides the system's roots.
    pub fn new(
        server: &str,
        token: Option<String>,
        ca_cert: Option<&Path>,
    ) -> anyhow::Result<Remote> {
        let mut builder = reqwest::Client::builder();
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
            builder = builder.add_root_certificate(
                reqwest::Certificate::from_pem(&pem)
                    .with_context(|| format!("invalid CA certificate {}", path.display()))?,
            );
        }
        let base = server.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--server must be an http:// or https:// URL, not {server:?}");
        }
        Ok(Remote {
            client: builder.build().context("cannot set up the HTTP client")?,
            base,
            token,
        })
    }

    /// The body of `path` with `query`, which must answer 200.
    async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<String> {
        let mut request = self.client.get(format!("{}{path}", self.base)).query(query);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status();
        let body = response.text().await.context("cannot read the answer")?;
        if status != StatusCode::OK {
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|error| error["message"].as_str().map(str::to_owned))
                .unwrap_or(body);
            let hint = if status == StatusCode::UNAUTHORIZED {
                " (give a token with --token or SUIVI_TOKEN)"
            } else {
                ""
            };
            bail!("{} answered {status}: {message}{hint}", self.base);
        }
        Ok(body)
    }

    fn parameters(query: &Query, format: Format) -> Vec<(&'static str, String)> {
        let mut parameters = query.period.clone();
        parameters.push(("format", format.extension().to_owned()));
        parameters.push(("lang", query.lang.to_string()));
        parameters
    }

    /// One campaign's report, or every campaign's the credential reaches, rendered by suivi.
    pub async fn report(&self, campaign: Option<&str>, query: &Query) -> anyhow::Result<String> {
        let path = match campaign {
            Some(campaign) => format!("/v1/campaigns/{}/report", encode(campaign)),
            None => "/v1/reports".to_owned(),
        };
        self.get(&path, &Remote::parameters(query, query.format))
            .await
    }

    /// Writes `campaign`'s report, or each report the credential reaches, into `directory`, one
    /// file per campaign named as `suivi report --output-dir` names them; answers how many.
    pub async fn write_each(
        &self,
        directory: &Path,
        campaign: Option<&str>,
        query: &Query,
    ) -> anyhow::Result<usize> {
        let campaigns: Vec<String> = match campaign {
            Some(campaign) => vec![campaign.to_owned()],
            None => {
                let listing = self
                    .get("/v1/reports", &Remote::parameters(query, Format::Json))
                    .await?;
                let listing: serde_json::Value =
                    serde_json::from_str(&listing).context("the reports listing is not JSON")?;
                listing["reports"]
                    .as_array()
                    .map(|reports| {
                        reports
                            .iter()
                            .filter_map(|report| report["campaign"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            }
        };
        std::fs::create_dir_all(directory)
            .with_context(|| format!("cannot create {}", directory.display()))?;
        for campaign in &campaigns {
            let text = self.report(Some(campaign), query).await?;
            let path: PathBuf = directory.join(format!(
                "{}.{}",
                file_name(campaign),
                query.format.extension()
            ));
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(campaigns.len())
    }
}

/// A campaign id as one URL path segment.
fn encode(campaign: &str) -> String {
    campaign
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}
