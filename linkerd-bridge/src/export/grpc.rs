//! OTLP/gRPC export with tonic. The batch is already an encoded `ExportTraceServiceRequest`,
//! so a pass-through codec sends its bytes as the message instead of decoding and re-encoding.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint as TonicEndpoint};
use tonic::Status;

use super::retry::{self, Attempt};
use crate::config::Endpoint;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Sends and receives messages as the bytes they already are.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

#[derive(Clone, Copy, Debug, Default)]
pub struct RawEncoder;

#[derive(Clone, Copy, Debug, Default)]
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

pub struct GrpcExport {
    channel: Channel,
    gzip: bool,
    timeout: Duration,
}

impl GrpcExport {
    pub fn new(endpoint: &Endpoint) -> Result<Self, String> {
        let uri = format!("http://{}", endpoint.authority);
        let channel = TonicEndpoint::from_shared(uri.clone())
            .map_err(|e| format!("collector.endpoint: {uri:?} is not a valid gRPC target: {e}"))?
            .connect_timeout(endpoint.timeout)
            .tcp_nodelay(true)
            // Connect on first use, so a collector that starts after the bridge is fine.
            .connect_lazy();
        Ok(Self {
            channel,
            gzip: endpoint.gzip,
            timeout: endpoint.timeout,
        })
    }

    /// One attempt.
    pub async fn send(&self, body: Bytes) -> Attempt {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        if self.gzip {
            grpc = grpc.send_compressed(CompressionEncoding::Gzip);
        }
        let call = async {
            grpc.ready()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let mut req = tonic::Request::new(body);
            req.set_timeout(self.timeout);
            grpc.unary(req, PathAndQuery::from_static(EXPORT_PATH), RawCodec)
                .await
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(_)) => Attempt::Ok,
            Ok(Err(status)) => retry::grpc_code(status.code()),
            Err(_) => retry::grpc_code(tonic::Code::DeadlineExceeded),
        }
    }
}
