//! The gRPC face of `fieldlink.v1.Ingest`, written by hand instead of the
//! server prost generates so that inbound messages go through the
//! [`lean`](super::lean) decoder: replies are encoded by prost as usual.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use fieldlink_model::proto::RegistryMessage;
use prost::Message;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};

use super::lean::{self, Inbound};
use super::service::IngestService;

/// The gRPC method path of `Ingest.Stream`.
const STREAM_PATH: &str = "/fieldlink.v1.Ingest/Stream";

/// Decodes [`Inbound`] leanly, encodes `RegistryMessage` with prost.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LeanCodec;

/// Encoder half of [`LeanCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReplyEncoder;

/// Decoder half of [`LeanCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LeanDecoder;

impl Codec for LeanCodec {
    type Encode = RegistryMessage;
    type Decode = Inbound;
    type Encoder = ReplyEncoder;
    type Decoder = LeanDecoder;

    fn encoder(&mut self) -> ReplyEncoder {
        ReplyEncoder
    }

    fn decoder(&mut self) -> LeanDecoder {
        LeanDecoder
    }
}

impl Encoder for ReplyEncoder {
    type Item = RegistryMessage;
    type Error = Status;

    fn encode(&mut self, item: RegistryMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode a reply: {e}")))
    }
}

impl Decoder for LeanDecoder {
    type Item = Inbound;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Inbound>, Status> {
        use prost::bytes::Buf;
        // tonic hands over one whole message: contiguous in its buffer.
        let bytes = src.copy_to_bytes(src.remaining());
        lean::decode(&bytes)
            .map(Some)
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }
}

/// The `fieldlink.v1.Ingest` service over [`IngestService`].
#[derive(Debug, Clone)]
pub struct IngestServer {
    inner: Arc<IngestService>,
    max_message_bytes: usize,
}

impl IngestServer {
    /// Serves `inner`, refusing messages over `max_message_bytes` either way.
    pub fn new(inner: IngestService, max_message_bytes: usize) -> Self {
        IngestServer {
            inner: Arc::new(inner),
            max_message_bytes,
        }
    }
}

impl NamedService for IngestServer {
    const NAME: &'static str = "fieldlink.v1.Ingest";
}

struct StreamMethod(Arc<IngestService>);

impl StreamingService<Inbound> for StreamMethod {
    type Response = RegistryMessage;
    type ResponseStream = ReceiverStream<Result<RegistryMessage, Status>>;
    type Future = BoxFuture<tonic::Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: tonic::Request<tonic::Streaming<Inbound>>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.stream(request).await })
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for IngestServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != STREAM_PATH {
            return Box::pin(async move {
                let mut response = http::Response::new(Body::default());
                let headers = response.headers_mut();
                headers.insert(
                    Status::GRPC_STATUS,
                    (tonic::Code::Unimplemented as i32).into(),
                );
                headers.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            });
        }
        let method = StreamMethod(self.inner.clone());
        let max = self.max_message_bytes;
        Box::pin(async move {
            let mut grpc = Grpc::new(LeanCodec).apply_max_message_size_config(Some(max), Some(max));
            Ok(grpc.streaming(method, request).await)
        })
    }
}
