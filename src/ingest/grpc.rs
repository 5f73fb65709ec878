//! `suivi.v1.IngestService` over tonic: `Ingest` answers one batch, `IngestStream` answers each
//! batch of a stream in order. Both decode protobuf events into raw events and hand them to
//! [`Intake::ingest_batch`]; this file only maps answers and refusals to gRPC. Requests are
//! decoded by [`IngestServer`] with a bounded decoder: a message over `max_request_bytes`, or whose
//! events outnumber `max_batch_events` (counted on the wire, before any event is built), is
//! refused without being decoded, and a malformed message is the client's error
//! (INVALID_ARGUMENT), never INTERNAL. Nothing here is decoded by tonic's default prost codec.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use prost::Message;
use prost::bytes::Buf;
use tokio::sync::OwnedSemaphorePermit;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService, UnaryService};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstEncoder;

use crate::auth::{self, Caller, Gate};
use crate::event::RawEvent;
use crate::http::Bound;
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
    gate: Arc<Gate>,
}

/// How far past `max_request_bytes` tonic still buffers a message, so that suivi itself refuses
/// it with RESOURCE_EXHAUSTED and the limit's name; beyond this tonic refuses it (OUT_OF_RANGE)
/// from its length prefix alone.
pub const DECODE_LIMIT_FACTOR: usize = 2;

impl IngestApi {
    /// The service, served by [`IngestServer`].
    pub fn new(intake: Arc<Intake>, max_request_bytes: usize, gate: Arc<Gate>) -> IngestApi {
        IngestApi {
            intake,
            max_request_bytes,
            gate,
        }
    }

    /// The limits the decoder enforces before any event is built.
    fn limits(&self) -> Limits {
        Limits {
            max_request_bytes: self.max_request_bytes,
            max_batch_events: self.intake.max_batch_events,
        }
    }

    async fn answer(
        &self,
        caller: &Caller,
        events: &[proto::LearnerEvent],
    ) -> Result<BatchResult, Status> {
        // The decoder already refused more bytes or events than allowed; this is cheap.
        self.intake
            .check_batch(Transport::Grpc, caller, events.len())
            .map_err(status)?;
        self.intake
            .ingest_batch(
                Transport::Grpc,
                caller,
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
        let caller = auth::grpc::caller(&request)?;
        let request = request.into_inner();
        let result = self.answer(&caller, &request.events).await?;
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
        let caller = auth::grpc::caller(&request)?;
        let requests = request.into_inner();
        // One request at a time, so answers come in request order; a stream error ends the stream.
        let responses = requests.then(move |request| {
            let api = api.clone();
            // The credential as it stands now: revoked, it ends the stream.
            let caller = api
                .gate
                .current(&caller)
                .map_err(auth::grpc::unauthenticated);
            async move {
                let request = request?;
                let caller = caller?;
                let result = api.answer(&caller, &request.events).await?;
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
        BatchRefusal::RateLimited(limited) => {
            let mut status = Status::resource_exhausted(message);
            // The wait, for clients that look (grpc-retry-pushback-ms, as gRPC's retry policy reads).
            if let Ok(value) = limited.retry_after.as_millis().to_string().parse() {
                status
                    .metadata_mut()
                    .insert("grpc-retry-pushback-ms", value);
            }
            status
        }
        BatchRefusal::Pipeline(Refusal::Overloaded(_) | Refusal::ShuttingDown)
        | BatchRefusal::Unforwarded(_) => Status::unavailable(message),
        BatchRefusal::Pipeline(Refusal::DiskFull | Refusal::StorageUnwritable) => {
            Status::resource_exhausted(message)
        }
        // Only Kafka batches are sequenced.
        BatchRefusal::Pipeline(Refusal::OutOfSequence) => Status::internal(message),
    }
}

/// What a request may hold, checked on its wire bytes before it is decoded.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_request_bytes: usize,
    max_batch_events: usize,
}

/// `suivi.v1.IngestService` as tonic serves it, in place of the generated
/// `IngestServiceServer`, whose prost codec builds every event of a message before anything can
/// be checked. The same routes, decoded by [`BoundedDecoder`], each call or stream holding a place
/// under `max_concurrent_ingest_requests` (shared with HTTP) from before its body is read to its
/// end; without a place it is answered UNAVAILABLE at once. A call is let in by its credential
/// (`events:write`) before it takes a place.
#[derive(Debug, Clone)]
pub struct IngestServer {
    api: Arc<IngestApi>,
    bound: Bound,
    gate: Arc<Gate>,
}

impl IngestServer {
    pub fn new(api: IngestApi, bound: Bound, gate: Arc<Gate>) -> IngestServer {
        IngestServer {
            api: Arc::new(api),
            bound,
            gate,
        }
    }

    fn grpc<T, U>(&self) -> Grpc<BoundedCodec<T, U>>
    where
        T: Message + Send + 'static,
        U: Message + Default + Send + 'static,
    {
        let limits = self.api.limits();
        Grpc::new(BoundedCodec {
            limits,
            types: PhantomData,
        })
        // tonic buffers a message whole before decoding it; past this it refuses it itself.
        .apply_max_message_size_config(
            Some(limits.max_request_bytes.saturating_mul(DECODE_LIMIT_FACTOR)),
            None,
        )
    }
}

impl NamedService for IngestServer {
    const NAME: &'static str = crate::proto::ingest_service_server::SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for IngestServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // Who sends, before anything else of the request is read.
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|value| value.as_bytes());
        let caller = match self.gate.authenticate(authorization) {
            Ok(caller) => caller,
            Err(failure) => {
                let refusal = auth::grpc::unauthenticated(failure);
                return Box::pin(async move { Ok(refusal.into_http()) });
            }
        };
        if let Err(denied) = caller.require_write() {
            let refusal = auth::grpc::denied(denied);
            return Box::pin(async move { Ok(refusal.into_http()) });
        }
        request.extensions_mut().insert(caller);
        let path = request.uri().path();
        let known = matches!(
            path,
            "/suivi.v1.IngestService/Ingest" | "/suivi.v1.IngestService/IngestStream"
        );
        let place = if known { self.bound.try_enter() } else { None };
        if known && place.is_none() {
            telemetry::record_refused(Transport::Grpc, "too_many_requests", 0);
            let refusal = Status::unavailable(self.bound.refusal());
            return Box::pin(async move { Ok(refusal.into_http()) });
        }
        let method = Method {
            api: self.api.clone(),
            place,
        };
        match path {
            "/suivi.v1.IngestService/Ingest" => {
                let mut grpc = self.grpc();
                Box::pin(async move { Ok(grpc.unary(method, request).await) })
            }
            "/suivi.v1.IngestService/IngestStream" => {
                let mut grpc = self.grpc();
                Box::pin(async move { Ok(grpc.streaming(method, request).await) })
            }
            _ => Box::pin(async move {
                Ok(Status::unimplemented("no such method of suivi.v1.IngestService").into_http())
            }),
        }
    }
}

/// One call of [`IngestServer`], as tonic calls it, with its place under the bound.
struct Method {
    api: Arc<IngestApi>,
    place: Option<OwnedSemaphorePermit>,
}

impl UnaryService<proto::IngestRequest> for Method {
    type Response = proto::IngestResponse;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<proto::IngestRequest>) -> Self::Future {
        let api = self.api.clone();
        let place = self.place.take();
        Box::pin(async move {
            let answer = api.ingest(request).await;
            drop(place);
            answer
        })
    }
}

impl StreamingService<proto::IngestStreamRequest> for Method {
    type Response = proto::IngestStreamResponse;
    type ResponseStream = ResponseStream;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<proto::IngestStreamRequest>>) -> Self::Future {
        let api = self.api.clone();
        let place = self.place.take();
        Box::pin(async move {
            let responses = api.ingest_stream(request).await?;
            // The stream keeps its place until it ends.
            Ok(responses.map(|responses| -> ResponseStream {
                Box::pin(Holding {
                    stream: responses,
                    _place: place,
                })
            }))
        })
    }
}

/// A stream that holds a place under a bound for as long as it lives.
struct Holding<S> {
    stream: S,
    _place: Option<OwnedSemaphorePermit>,
}

impl<S: Stream + Unpin> Stream for Holding<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        self.get_mut().stream.poll_next_unpin(cx)
    }
}

/// prost's encoder for answers; [`BoundedDecoder`] for requests.
#[derive(Debug)]
struct BoundedCodec<T, U> {
    limits: Limits,
    types: PhantomData<fn(T) -> U>,
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder {
            limits: self.limits,
            message: PhantomData,
        }
    }
}

/// Decodes an ingest request (`repeated LearnerEvent events = 1`) only when its bytes and its
/// number of events are within the limits; both are known from the wire, before any allocation.
#[derive(Debug)]
struct BoundedDecoder<U> {
    limits: Limits,
    message: PhantomData<fn() -> U>,
}

impl<U> BoundedDecoder<U> {
    /// Refuses a message whose events outnumber `max_batch_events`, counting them on the wire.
    fn check_count(&self, message: &[u8]) -> Result<(), Status> {
        let count = count_events(message).map_err(malformed)?;
        if count > self.limits.max_batch_events {
            let refusal = BatchRefusal::TooManyEvents {
                count,
                limit: self.limits.max_batch_events,
            };
            telemetry::record_refused(Transport::Grpc, refusal.reason(), count);
            return Err(status(refusal));
        }
        Ok(())
    }
}

impl<U: Message + Default> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let bytes = buf.remaining();
        if bytes > self.limits.max_request_bytes {
            telemetry::record_refused(Transport::Grpc, "request_too_large", 0);
            return Err(Status::resource_exhausted(format!(
                "the request is {bytes} bytes, over the limit of {} bytes per request (max_request_bytes)",
                self.limits.max_request_bytes
            )));
        }
        // tonic hands over one contiguous buffer; a split one is first gathered.
        if buf.chunk().len() == bytes {
            self.check_count(buf.chunk())?;
            U::decode(buf)
        } else {
            let gathered = buf.copy_to_bytes(bytes);
            self.check_count(&gathered)?;
            U::decode(gathered)
        }
        .map(Some)
        .map_err(|error| malformed(error.to_string()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// The answer to bytes that are not an ingest request: the client's error.
fn malformed(error: String) -> Status {
    telemetry::record_refused(Transport::Grpc, "invalid_protobuf", 0);
    Status::invalid_argument(format!("the request is not valid protobuf: {error}"))
}

/// The number of field-1 entries (events) at the top level of an encoded ingest request, read
/// without decoding any of them.
fn count_events(mut bytes: &[u8]) -> Result<usize, String> {
    let mut count = 0usize;
    while !bytes.is_empty() {
        let key = read_varint(&mut bytes)?;
        let (field, wire_type) = (key >> 3, key & 7);
        if field == 0 {
            return Err("field number 0".to_owned());
        }
        let skip = match wire_type {
            0 => {
                read_varint(&mut bytes)?;
                0
            }
            1 => 8,
            2 => {
                let length = read_varint(&mut bytes)?;
                usize::try_from(length).map_err(|_| format!("a length of {length} bytes"))?
            }
            5 => 4,
            other => return Err(format!("wire type {other} of field {field}")),
        };
        if skip > bytes.len() {
            return Err(format!("field {field} runs past the end of the message"));
        }
        bytes = &bytes[skip..];
        if field == 1 && wire_type == 2 {
            count += 1;
        }
    }
    Ok(count)
}

/// Reads one base-128 varint of at most ten bytes.
fn read_varint(bytes: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for (index, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            *bytes = &bytes[index + 1..];
            return Ok(value);
        }
    }
    Err("a truncated or overlong varint".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_events_counts_field_1_without_decoding() {
        let request = proto::IngestRequest {
            events: vec![proto::LearnerEvent::default(); 3],
        };
        assert_eq!(count_events(&request.encode_to_vec()), Ok(3));
        assert_eq!(count_events(&[0x0a, 0x00].repeat(1000)), Ok(1000));
        // An unknown varint field and a fixed64 field are skipped, not counted.
        assert_eq!(
            count_events(&[0x10, 0x96, 0x01, 0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0x00]),
            Ok(1)
        );
        assert!(
            count_events(&[0x0a, 0x05, 0x00]).is_err(),
            "a length past the end"
        );
        assert!(count_events(&[0x0a]).is_err(), "a key without its length");
        assert!(count_events(&[0xff; 11]).is_err(), "an overlong varint");
        assert!(count_events(&[0x0b]).is_err(), "a group");
    }
}
