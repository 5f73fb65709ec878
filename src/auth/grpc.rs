//! The gRPC edge's checks: the caller of a request from its `authorization: Bearer <token>`
//! metadata (UNAUTHENTICATED otherwise), kept in the request's extensions for the method.

use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::auth::{Caller, Gate, PermissionDenied, Unauthenticated};

/// The caller presenting the request's `authorization` metadata.
#[allow(clippy::result_large_err)] // tonic's Status.
pub fn authenticate(gate: &Gate, metadata: &MetadataMap) -> Result<Caller, Status> {
    let authorization = metadata.get("authorization").map(|value| value.as_bytes());
    gate.authenticate(authorization).map_err(unauthenticated)
}

/// The caller an interceptor let in; a method reached without one is a wiring fault.
#[allow(clippy::result_large_err)] // tonic's Status.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::internal("the request reached its method without a caller"))
}

pub fn unauthenticated(failure: Unauthenticated) -> Status {
    Status::unauthenticated(failure.to_string())
}

pub fn denied(denied: PermissionDenied) -> Status {
    Status::permission_denied(denied.to_string())
}
