//! What the HTTP edges share: the JSON error body `{"code": …, "message": …}` with its status,
//! the request timing middleware, and [`shed`], which bounds how many requests of a group of
//! routes run at once. Routes live with their stage (`ingest::http`, `query::http`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::telemetry;

/// Seconds a client is told to wait when its request was shed.
const SHED_RETRY_AFTER_SECONDS: u32 = 1;

/// An HTTP error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds after which a retry may succeed, sent as `Retry-After`.
    pub retry_after: Option<u32>,
    /// Whether to challenge the client for a bearer token (`WWW-Authenticate: Bearer`).
    pub www_authenticate: bool,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            www_authenticate: false,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody {
            code: self.code,
            message: &self.message,
        });
        let mut response = (self.status, body).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.www_authenticate {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"suivi\""),
            );
        }
        response
    }
}

/// A bound on the requests of some routes running at once, named by its setting.
#[derive(Debug, Clone)]
pub struct Bound {
    places: Arc<Semaphore>,
    limit: usize,
    setting: &'static str,
}

impl Bound {
    pub fn new(setting: &'static str, limit: usize) -> Bound {
        Bound {
            places: Arc::new(Semaphore::new(limit)),
            limit,
            setting,
        }
    }

    /// A place under the bound, held until dropped; `None` when every place is taken.
    pub fn try_enter(&self) -> Option<OwnedSemaphorePermit> {
        self.places.clone().try_acquire_owned().ok()
    }

    /// The message of a refusal: the bound and its setting.
    pub fn refusal(&self) -> String {
        format!(
            "{} such requests are already being answered ({}); retry later",
            self.limit, self.setting
        )
    }
}

/// Middleware (`axum::middleware::from_fn_with_state`): runs the request when its bound has room,
/// holding its place until the answer is made; else answers 503 `overloaded` with Retry-After at
/// once, so that waiting requests never pile up.
pub async fn shed(State(bound): State<Bound>, request: Request, next: Next) -> Response {
    let Some(_place) = bound.try_enter() else {
        telemetry::record_request_shed(bound.setting);
        return ApiError {
            retry_after: Some(SHED_RETRY_AFTER_SECONDS),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                bound.refusal(),
            )
        }
        .into_response();
    };
    next.run(request).await
}
