//! `suivi.v1.IngestService` over tonic: `Ingest` answers one batch, `IngestStream` answers each
//! batch of a stream in order. Both decode protobuf events into raw events and hand them to
//! [`Intake::ingest_batch`]; this file only maps answers and refusals to gRPC.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::event::RawEvent;
use crate::ingest::{BatchRefusal, BatchResult, Intake};
use crate::pipeline::Refusal;
use crate::proto;
use crate::proto::ingest_service_server::IngestService;
use crate::telemetry::{self, Transport};

/// The gRPC ingest service.
#[derive(Debug, Clone)]
pub struct IngestApi {
    intake: Arc<Intake>,
    max_request_bytes: usize,
}

/// How far past `max_request_bytes` tonic still decodes a message, so that suivi itself refuses
/// it with RESOURCE_EXHAUSTED and the limit's name; beyond this tonic refuses it (OUT_OF_RANGE).
pub const DECODE_LIMIT_FACTOR: usize = 2;

impl IngestApi {
    /// The service; tonic's decoding limit must be `max_request_bytes * DECODE_LIMIT_FACTOR`.
    pub fn new(intake: Arc<Intake>, max_request_bytes: usize) -> IngestApi {
        IngestApi {
            intake,
            max_request_bytes,
        }
    }

    async fn answer(
        &self,
        encoded_bytes: usize,
        events: &[proto::LearnerEvent],
    ) -> Result<BatchResult, Status> {
        if encoded_bytes > self.max_request_bytes {
            telemetry::record_refused(Transport::Grpc, "request_too_large", events.len());
            return Err(Status::resource_exhausted(format!(
                "the request is {encoded_bytes} bytes, over the limit of {} bytes per request (max_request_bytes)",
                self.max_request_bytes
            )));
        }
        self.intake
            .check_size(Transport::Grpc, events.len())
            .map_err(status)?;
        self.intake
            .ingest_batch(
                Transport::Grpc,
                events.iter().map(|event| Ok(RawEvent::from(event))),
            )
            .await
            .map_err(status)
    }
}

type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<proto::IngestStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl IngestService for IngestApi {
    async fn ingest(
        &self,
        request: Request<proto::IngestRequest>,
    ) -> Result<Response<proto::IngestResponse>, Status> {
        let request = request.into_inner();
        let result = self.answer(request.encoded_len(), &request.events).await?;
        Ok(Response::new(proto::IngestResponse {
            accepted: result.accepted,
            duplicates: result.duplicates,
            rejections: rejections(result),
        }))
    }

    type IngestStreamStream = ResponseStream;

    async fn ingest_stream(
        &self,
        request: Request<Streaming<proto::IngestStreamRequest>>,
    ) -> Result<Response<Self::IngestStreamStream>, Status> {
        let api = self.clone();
        let requests = request.into_inner();
        // One request at a time, so answers come in request order; a stream error ends the stream.
        let responses = requests.then(move |request| {
            let api = api.clone();
            async move {
                let request = request?;
                let result = api.answer(request.encoded_len(), &request.events).await?;
                Ok(proto::IngestStreamResponse {
                    accepted: result.accepted,
                    duplicates: result.duplicates,
                    rejections: rejections(result),
                })
            }
        });
        Ok(Response::new(Box::pin(responses)))
    }
}

fn rejections(result: BatchResult) -> Vec<proto::Rejection> {
    result
        .rejections
        .into_iter()
        .map(|rejection| proto::Rejection {
            index: rejection.index,
            code: rejection.code.to_owned(),
            message: rejection.message,
        })
        .collect()
}

fn status(refusal: BatchRefusal) -> Status {
    let message = refusal.to_string();
    match refusal {
        BatchRefusal::TooManyEvents { .. } => Status::invalid_argument(message),
        BatchRefusal::Pipeline(Refusal::Overloaded(_) | Refusal::ShuttingDown) => {
            Status::unavailable(message)
        }
        BatchRefusal::Pipeline(Refusal::DiskFull | Refusal::StorageUnwritable) => {
            Status::resource_exhausted(message)
        }
        // Only Kafka batches are sequenced.
        BatchRefusal::Pipeline(Refusal::OutOfSequence) => Status::internal(message),
    }
}
