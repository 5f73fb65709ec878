//! The HTTP edge's checks: [`authenticate`] lets a request in by its bearer token, or without
//! an `Authorization` header by a signed link's `?key=` (so that a page's links to reports work
//! for a link's holder), 401 `unauthenticated` with `WWW-Authenticate: Bearer` otherwise, and
//! hands its [`Caller`] to the route; [`require_metrics_token`] guards `/metrics` when `metrics_token` is set.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::link::LINK_PARAMETER;
use crate::auth::{Gate, PermissionDenied, Unauthenticated};
use crate::http::ApiError;

/// Middleware (`axum::middleware::from_fn_with_state`): lets the request in with its caller as
/// an extension, or answers 401.
pub async fn authenticate(
    State(gate): State<Arc<Gate>>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = match (authorization(request.headers()), link_key(request.uri())) {
        (None, Some(key)) => gate.authenticate_link(&key),
        (authorization, _) => gate.authenticate(authorization),
    };
    match caller {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(failure) => unauthenticated(failure).into_response(),
    }
}

/// Middleware for `/metrics`: lets the request in when it carries `metrics_token` (or none is
/// set), else answers 401.
pub async fn require_metrics_token(
    State(gate): State<Arc<Gate>>,
    request: Request,
    next: Next,
) -> Response {
    match gate.allows_metrics(authorization(request.headers())) {
        Ok(()) => next.run(request).await,
        Err(failure) => unauthenticated(failure).into_response(),
    }
}

/// The signed link key in a request's query (`?key=`), if any.
fn link_key(uri: &Uri) -> Option<String> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(name, value)| name == LINK_PARAMETER && !value.is_empty())
        .map(|(_, value)| value.into_owned())
}

fn authorization(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes())
}

/// 401 `unauthenticated`, with the challenge a client needs to know what to send.
pub fn unauthenticated(failure: Unauthenticated) -> ApiError {
    ApiError {
        www_authenticate: true,
        ..ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            failure.to_string(),
        )
    }
}

/// 403 `permission_denied`.
pub fn denied(denied: PermissionDenied) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "permission_denied",
        denied.to_string(),
    )
}
