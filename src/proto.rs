//! The generated protobuf and gRPC types of package `suivi.v1`. Only the edges use them:
//! `event` parses `LearnerEvent` into the domain event, and the gRPC services in `ingest::grpc`
//! and `query::grpc` convert domain answers into messages. Nothing past the edge sees them.

#![allow(missing_docs, missing_debug_implementations, clippy::all)]

tonic::include_proto!("suivi.v1");

/// The encoded descriptor set of `suivi.v1`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("suivi_descriptor");

/// suivi's own storage formats (journal records and checkpoints), package `suivi.storage.v1`.
/// Only `journal`, `checkpoint` and the aggregate's checkpoint conversion use them.
pub mod storage {
    tonic::include_proto!("suivi.storage.v1");
}
