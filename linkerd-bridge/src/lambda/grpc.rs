//! The relay's OTLP/gRPC listener: the generated `TraceService` server of opentelemetry-proto
//! on tonic, taking each decoded request into the same buffer as the OTLP/HTTP listener.

use std::net::SocketAddr;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::relay;
use crate::shared::Shared;

/// `opentelemetry.proto.collector.trace.v1.TraceService/Export` into the relay buffer.
#[derive(Clone)]
pub struct GrpcRelay {
    shared: Arc<Shared>,
    attrs: Arc<Vec<KeyValue>>,
}

#[tonic::async_trait]
impl TraceService for GrpcRelay {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut export = request.into_inner();
        match relay::accept(&self.shared, &self.attrs, &mut export) {
            Ok(_) => Ok(tonic::Response::new(ExportTraceServiceResponse::default())),
            // UNAVAILABLE is retryable under OTLP: the function's exporter tries again.
            Err(_) => Err(tonic::Status::unavailable("relay buffer full")),
        }
    }
}

/// Serves OTLP/gRPC (gzip accepted) on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    attrs: Arc<Vec<KeyValue>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let local: Option<SocketAddr> = listener.local_addr().ok();
    let svc = TraceServiceServer::new(GrpcRelay { shared, attrs })
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .max_decoding_message_size(relay::MAX_REQUEST);
    let stopped = async move {
        // A dropped sender stops the listener too.
        let _ = stop.wait_for(|stopping| *stopping).await;
    };
    tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            stopped,
        )
        .await
        .map_err(|e| format!("OTLP/gRPC listener {local:?}: {e}"))
}
