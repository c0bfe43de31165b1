//! Readiness: an instance is ready when `GET /healthz` on its socket answers 200.

use std::path::Path;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// One health probe; `true` when the instance answered 200.
pub(crate) async fn probe(socket: &Path) -> bool {
    let Ok(stream) = UnixStream::connect(socket).await else {
        return false;
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
        return false;
    };
    tokio::spawn(conn);
    let request = http::Request::get("/healthz")
        .header(http::header::HOST, "instance")
        .body(Empty::<Bytes>::new())
        .expect("static request is valid");
    matches!(sender.send_request(request).await, Ok(r) if r.status() == http::StatusCode::OK)
}
