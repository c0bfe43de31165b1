//! The platform side of a sandbox's only way out: one HTTP/1.1 forward proxy per tenant, on a
//! unix socket that the forwarder inside the sandbox connects to. It opens `CONNECT` tunnels and
//! forwards absolute-form plain-HTTP requests to the destinations the tenant's egress policy
//! allows, connecting to the very addresses it checked, and refuses everything else.

mod policy;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kl_core::{NameError, validate_tenant_name};
use thiserror::Error;
use tokio::net::{TcpStream, UnixListener};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

pub use policy::{EgressPolicy, EgressRule, Reserved, RuleError};

/// Longest path a unix socket address holds on Linux (`sun_path` less its terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Proxy settings shared by every tenant.
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// Resolving a destination and connecting to it must finish within this; else 504.
    pub connect_timeout: Duration,
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a tenant's proxy could not be started or changed.
#[derive(Debug, Error)]
pub enum EgressError {
    /// The tenant name is not one the platform issues, so it cannot name a socket.
    #[error("no egress proxy for an invalid tenant name: {0}")]
    Tenant(#[from] NameError),
    /// The socket path would not fit in a unix socket address.
    #[error(
        "egress socket path {} is {len} bytes long; the limit is {MAX_SOCKET_PATH}: configure a shorter socket directory",
        path.display()
    )]
    PathTooLong { path: PathBuf, len: usize },
    /// The socket could not be created.
    #[error("could not listen on egress socket {}: {source}", path.display())]
    Bind { path: PathBuf, source: io::Error },
    /// No proxy runs for the tenant.
    #[error("no egress proxy runs for tenant {0:?}")]
    NotRunning(String),
}

/// What every connection of one tenant's proxy reads.
struct Shared {
    tenant: String,
    /// Swapped whole when the tenant's spec changes; each connection decides on a snapshot.
    policy: ArcSwap<EgressPolicy>,
    connect_timeout: Duration,
}

/// One tenant's proxy. It stops, closing its connections and tunnels, when dropped.
pub struct EgressProxy {
    shared: Arc<Shared>,
    path: PathBuf,
    _stop: DropGuard,
}

impl EgressProxy {
    /// Listens on `path` (replacing a stale socket there) and serves until dropped. Must be
    /// called within a tokio runtime.
    pub fn bind(
        tenant: &str,
        path: PathBuf,
        policy: EgressPolicy,
        config: &EgressConfig,
    ) -> Result<EgressProxy, EgressError> {
        let len = path.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(EgressError::PathTooLong { path, len });
        }
        let bind = || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            UnixListener::bind(&path)
        };
        let listener = bind().map_err(|source| EgressError::Bind {
            path: path.clone(),
            source,
        })?;
        let shared = Arc::new(Shared {
            tenant: tenant.to_owned(),
            policy: ArcSwap::from_pointee(policy),
            connect_timeout: config.connect_timeout,
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept(listener, shared.clone(), stop.clone()));
        Ok(EgressProxy {
            shared,
            path,
            _stop: stop.drop_guard(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies to connections made from now on; open tunnels keep the policy they were opened
    /// under.
    pub fn set_policy(&self, policy: EgressPolicy) {
        self.shared.policy.store(Arc::new(policy));
    }
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove an egress socket");
        }
    }
}

/// The proxies of every tenant, with sockets named `<dir>/<tenant>.sock`.
pub struct EgressProxies {
    dir: PathBuf,
    config: EgressConfig,
    proxies: Mutex<HashMap<String, EgressProxy>>,
}

impl EgressProxies {
    pub fn new(dir: impl Into<PathBuf>, config: EgressConfig) -> EgressProxies {
        EgressProxies {
            dir: dir.into(),
            config,
            proxies: Mutex::new(HashMap::new()),
        }
    }

    /// Starts the tenant's proxy, or sets its policy if it runs, and returns its socket path.
    /// Must be called within a tokio runtime.
    pub fn ensure(&self, tenant: &str, policy: EgressPolicy) -> Result<PathBuf, EgressError> {
        validate_tenant_name(tenant)?;
        let mut proxies = self.proxies.lock().expect("egress proxies lock");
        if let Some(proxy) = proxies.get(tenant) {
            proxy.set_policy(policy);
            return Ok(proxy.path.clone());
        }
        let path = self.dir.join(format!("{tenant}.sock"));
        let proxy = EgressProxy::bind(tenant, path.clone(), policy, &self.config)?;
        proxies.insert(tenant.to_owned(), proxy);
        Ok(path)
    }

    /// Sets the policy of a running proxy; see [`EgressProxy::set_policy`].
    pub fn update(&self, tenant: &str, policy: EgressPolicy) -> Result<(), EgressError> {
        let proxies = self.proxies.lock().expect("egress proxies lock");
        let proxy = proxies
            .get(tenant)
            .ok_or_else(|| EgressError::NotRunning(tenant.to_owned()))?;
        proxy.set_policy(policy);
        Ok(())
    }

    /// The socket of the tenant's running proxy.
    pub fn socket(&self, tenant: &str) -> Option<PathBuf> {
        let proxies = self.proxies.lock().expect("egress proxies lock");
        proxies.get(tenant).map(|proxy| proxy.path.clone())
    }

    /// Stops the tenant's proxy and its connections; `false` if none ran.
    pub fn remove(&self, tenant: &str) -> bool {
        let removed = self.proxies.lock().expect("egress proxies lock").remove(tenant);
        removed.is_some()
    }
}

async fn accept(listener: UnixListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, typically: back off instead of spinning.
                tracing::warn!(tenant = %shared.tenant, error = %e, "egress proxy could not accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (shared, stop) = (shared.clone(), stop.clone());
        tokio::spawn(async move {
            let service = service_fn(|request| handle(shared.clone(), stop.clone(), request));
            let connection = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::select! {
                () = stop.cancelled() => {}
                served = connection => if let Err(e) = served {
                    tracing::debug!(tenant = %shared.tenant, error = %e, "egress connection ended with an error");
                }
            }
        });
    }
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// A request the proxy answers itself, and why.
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: String) -> Refusal {
        Refusal { status, message }
    }

    fn into_response(self) -> Response<ProxyBody> {
        let mut response = Response::new(full(format!("{}\n", self.message)));
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

fn full(text: String) -> ProxyBody {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed()
}

async fn handle(
    shared: Arc<Shared>,
    stop: CancellationToken,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let routed = if request.method() == Method::CONNECT {
        tunnel(&shared, stop, request).await
    } else {
        forward(&shared, stop, request).await
    };
    Ok(routed.unwrap_or_else(Refusal::into_response))
}

/// `CONNECT host:port`: connects, answers 200, then relays bytes both ways once hyper hands
/// over the client connection.
async fn tunnel(
    shared: &Shared,
    stop: CancellationToken,
    mut request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Refusal> {
    let authority = request.uri().authority().cloned();
    let Some((host, port)) = authority.as_ref().and_then(|a| Some((a.host(), a.port_u16()?))) else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "CONNECT needs a host:port target".to_owned(),
        ));
    };
    let mut upstream = connect(shared, host, port).await?;
    let upgrade = hyper::upgrade::on(&mut request);
    let tenant = shared.tenant.clone();
    tokio::spawn(async move {
        let relay = async {
            let mut client = TokioIo::new(upgrade.await?);
            tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        };
        tokio::select! {
            () = stop.cancelled() => {}
            relayed = relay => if let Err(e) = relayed {
                tracing::debug!(%tenant, error = %e, "egress tunnel ended with an error");
            }
        }
    });
    Ok(Response::new(
        Empty::new().map_err(|never| match never {}).boxed(),
    ))
}

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus those the
/// `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|name| name.trim().to_ascii_lowercase()))
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// An absolute-form plain-HTTP request (`GET http://host/path`): sent on a fresh connection to
/// the checked address, with the response streamed back.
async fn forward(
    shared: &Shared,
    stop: CancellationToken,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Refusal> {
    let uri = request.uri();
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority().cloned()) else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "this is an egress proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port"
                .to_owned(),
        ));
    };
    if scheme != "http" {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("the proxy forwards plain http only; for {scheme} use CONNECT {authority}"),
        ));
    }
    let port = authority.port_u16().unwrap_or(80);
    let path = if uri.path().is_empty() { "/" } else { uri.path() };
    let path = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    // The target the policy checks, without any userinfo, not whatever Host the client sent
    // (RFC 9112 §3.2.2).
    let host = match authority.port() {
        Some(port) => format!("{}:{port}", authority.host()),
        None => authority.host().to_owned(),
    };
    let (Ok(origin_form), Ok(host)) = (Uri::try_from(path), HeaderValue::try_from(host)) else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("cannot forward the request target {uri}"),
        ));
    };
    let stream = connect(shared, authority.host(), port).await?;
    let upstream_failed = |e: hyper::Error| {
        Refusal::new(
            StatusCode::BAD_GATEWAY,
            format!("egress to {}:{port} failed: {e}", authority.host()),
        )
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(upstream_failed)?;
    tokio::spawn(async move {
        tokio::select! {
            () = stop.cancelled() => {}
            _ = connection => {}
        }
    });

    let (mut parts, body) = request.into_parts();
    parts.uri = origin_form;
    parts.version = http::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(header::HOST, host);

    let response = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(upstream_failed)?;
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body.boxed()))
}

/// Checks the policy, resolves, checks every address, and connects to a permitted one, all
/// within the connect timeout.
async fn connect(shared: &Shared, host: &str, port: u16) -> Result<TcpStream, Refusal> {
    let policy = shared.policy.load_full();
    let tenant = &shared.tenant;
    let target = format!("{host}:{port}");
    if !policy.allows(host, port) {
        tracing::info!(%tenant, host, port, reason = "not allowed", "egress denied");
        let situation = if policy.allow.is_empty() {
            " (the allow-list is empty, so all egress is denied)"
        } else {
            ""
        };
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!("egress to {target} is not in tenant {tenant}'s allow-list{situation}"),
        ));
    }
    let deadline = Instant::now() + shared.connect_timeout;
    let timed_out = |doing: &str| {
        Refusal::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("egress to {target} timed out {doing}"),
        )
    };
    let addresses = tokio::time::timeout_at(deadline, resolve(host, port))
        .await
        .map_err(|_| timed_out("resolving the name"))?
        .map_err(|e| Refusal::new(StatusCode::BAD_GATEWAY, format!("could not resolve {host}: {e}")))?;
    let mut refused = None;
    let permitted: Vec<SocketAddr> = addresses
        .into_iter()
        .filter(|addr| match policy.check_address(addr.ip(), port) {
            Ok(()) => true,
            Err(why) => {
                refused.get_or_insert((addr.ip(), why));
                false
            }
        })
        .collect();
    if permitted.is_empty() {
        let Some((ip, why)) = refused else {
            return Err(Refusal::new(
                StatusCode::BAD_GATEWAY,
                format!("could not resolve {host}: no addresses"),
            ));
        };
        tracing::info!(%tenant, host, port, %ip, reason = %why, "egress denied");
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!(
                "egress to {target} is refused: it leads to {ip}, {why}, which tenant {tenant}'s allow-list does not name"
            ),
        ));
    }
    let mut last_error = None;
    for addr in permitted {
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last_error = Some(format!("{addr}: {e}")),
            Err(_) => return Err(timed_out(&format!("connecting to {addr}"))),
        }
    }
    Err(Refusal::new(
        StatusCode::BAD_GATEWAY,
        format!(
            "could not connect to {target}: {}",
            last_error.unwrap_or_default()
        ),
    ))
}

/// An address literal (bracketed or not) as is, else the name's addresses.
async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let unbracketed = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    Ok(tokio::net::lookup_host((host, port)).await?.collect())
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use hyper::client::conn::http1::SendRequest;
    use hyper::upgrade::Upgraded;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpSocket, UnixStream};

    use super::*;

    /// Every test finishes well within this, even on a loaded machine, or fails saying so.
    async fn within<T>(test: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(30), test)
            .await
            .expect("the test did not finish within 30s")
    }

    fn rules(list: &[&str]) -> EgressPolicy {
        EgressPolicy {
            allow: list.iter().map(|r| r.parse().unwrap()).collect(),
        }
    }

    fn proxies(config: EgressConfig) -> (tempfile::TempDir, EgressProxies) {
        let dir = tempfile::tempdir().unwrap();
        let proxies = EgressProxies::new(dir.path(), config);
        (dir, proxies)
    }

    /// A plain HTTP server on 127.0.0.1 standing in for a host outside: it answers with the
    /// request line, Host, whether a proxy credential reached it, and the body.
    async fn upstream() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let echo = service_fn(|request: Request<Incoming>| async move {
                    let host = request.headers().get(header::HOST).cloned();
                    let head = format!(
                        "{} {} host={} proxy-auth={}",
                        request.method(),
                        request.uri(),
                        host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("-"),
                        request.headers().contains_key(header::PROXY_AUTHORIZATION),
                    );
                    let body = request.into_body().collect().await?.to_bytes();
                    let text = format!("{head} body={}", String::from_utf8_lossy(&body));
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(text))))
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), echo));
            }
        });
        addr
    }

    async fn client(socket: &Path) -> SendRequest<Full<Bytes>> {
        let stream = UnixStream::connect(socket).await.unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection.with_upgrades());
        sender
    }

    async fn text(response: Response<Incoming>) -> (StatusCode, String) {
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    /// Sends `request` through the proxy on `socket`.
    async fn send(socket: &Path, request: Request<Full<Bytes>>) -> (StatusCode, String) {
        text(client(socket).await.send_request(request).await.unwrap()).await
    }

    fn get(url: &str) -> Request<Full<Bytes>> {
        Request::get(url)
            .header(header::HOST, "client-chosen")
            .body(Full::default())
            .unwrap()
    }

    /// Opens a tunnel to `target`, or returns the proxy's refusal.
    async fn open_tunnel(socket: &Path, target: &str) -> Result<Upgraded, (StatusCode, String)> {
        let request = Request::connect(target)
            .header(header::HOST, target)
            .body(Full::default())
            .unwrap();
        let response = client(socket).await.send_request(request).await.unwrap();
        if response.status() != StatusCode::OK {
            return Err(text(response).await);
        }
        Ok(hyper::upgrade::on(response).await.unwrap())
    }

    async fn get_through(tunnel: Upgraded, path: &str) -> String {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(tunnel).await.unwrap();
        tokio::spawn(connection);
        let request = Request::get(path)
            .header(header::HOST, "through-tunnel")
            .body(Full::<Bytes>::default())
            .unwrap();
        text(sender.send_request(request).await.unwrap()).await.1
    }

    #[tokio::test]
    async fn connect_tunnels_to_an_allowed_address() {
        within(async {
            let up = upstream().await;
            let (_dir, proxies) = proxies(EgressConfig::default());
            let socket = proxies.ensure("acme", rules(&[&up.to_string()])).unwrap();
            let tunnel = open_tunnel(&socket, &up.to_string()).await.unwrap();
            assert_eq!(
                get_through(tunnel, "/hello").await,
                "GET /hello host=through-tunnel proxy-auth=false body="
            );
        })
        .await;
    }

    #[tokio::test]
    async fn connect_outside_the_allow_list_is_refused_with_403() {
        within(async {
            let up = upstream().await;
            let (_dir, proxies) = proxies(EgressConfig::default());
            let socket = proxies
                .ensure("acme", rules(&["api.example.com", "127.0.0.2"]))
                .unwrap();
            assert_eq!(
                open_tunnel(&socket, &up.to_string()).await.unwrap_err(),
                (
                    StatusCode::FORBIDDEN,
                    format!("egress to {up} is not in tenant acme's allow-list\n")
                )
            );
            proxies.update("acme", EgressPolicy::default()).unwrap();
            let (status, body) = open_tunnel(&socket, "api.example.com:443").await.unwrap_err();
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert!(body.contains("the allow-list is empty"), "{body}");
        })
        .await;
    }

    #[tokio::test]
    async fn a_name_leading_to_loopback_or_metadata_is_refused_without_an_address_rule() {
        within(async {
            let up = upstream().await;
            let port = up.port();
            let (_dir, proxies) = proxies(EgressConfig::default());
            let socket = proxies
                .ensure(
                    "acme",
                    rules(&[&format!("localhost:{port}"), "169.254.0.0/16:80"]),
                )
                .unwrap();
            let (status, body) = open_tunnel(&socket, &format!("localhost:{port}"))
                .await
                .unwrap_err();
            assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
            assert!(body.contains("leads to 127.0.0.1, a loopback address"), "{body}");
            let (status, body) = send(&socket, get(&format!("http://localhost:{port}/"))).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
            let (status, body) = open_tunnel(&socket, "169.254.169.254:80").await.unwrap_err();
            assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
            assert!(body.contains("a link-local address"), "{body}");

            // Naming the address itself opens it.
            proxies
                .update(
                    "acme",
                    rules(&[&format!("localhost:{port}"), &format!("127.0.0.1:{port}")]),
                )
                .unwrap();
            let tunnel = open_tunnel(&socket, &format!("localhost:{port}")).await.unwrap();
            assert!(get_through(tunnel, "/").await.starts_with("GET / "));
        })
        .await;
    }

    #[tokio::test]
    async fn absolute_form_requests_are_forwarded_when_allowed() {
        within(async {
            let up = upstream().await;
            let (_dir, proxies) = proxies(EgressConfig::default());
            let socket = proxies.ensure("acme", rules(&[&up.to_string()])).unwrap();
            let request = Request::post(format!("http://{up}/path?q=1"))
                .header(header::HOST, "client-chosen")
                .header(header::PROXY_AUTHORIZATION, "Basic c2VjcmV0")
                .body(Full::new(Bytes::from_static(b"hi")))
                .unwrap();
            assert_eq!(
                send(&socket, request).await,
                (
                    StatusCode::OK,
                    format!("POST /path?q=1 host={up} proxy-auth=false body=hi")
                )
            );
            assert_eq!(
                send(&socket, get(&format!("http://user:pw@{up}?only=query"))).await,
                (
                    StatusCode::OK,
                    format!("GET /?only=query host={up} proxy-auth=false body=")
                )
            );
            let other = format!("http://127.0.0.1:{}/", up.port() ^ 1);
            let (status, body) = send(&socket, get(&other)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
            assert!(body.contains("is not in tenant acme's allow-list"), "{body}");
        })
        .await;
    }

    #[tokio::test]
    async fn requests_that_are_not_proxy_requests_get_400() {
        within(async {
            let up = upstream().await;
            let (_dir, proxies) = proxies(EgressConfig::default());
            let socket = proxies.ensure("acme", rules(&[&up.to_string()])).unwrap();
            let (status, body) = send(&socket, get("/local")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            let (status, body) = send(&socket, get(&format!("https://{up}/"))).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert!(body.contains("use CONNECT"), "{body}");
        })
        .await;
    }

    #[tokio::test]
    async fn a_policy_update_applies_to_the_next_connection_only() {
        within(async {
            let up = upstream().await;
            let (_dir, proxies) = proxies(EgressConfig::default());
            let socket = proxies.ensure("acme", EgressPolicy::default()).unwrap();
            let target = up.to_string();
            assert_eq!(
                open_tunnel(&socket, &target).await.unwrap_err().0,
                StatusCode::FORBIDDEN
            );
            proxies.update("acme", rules(&[&target])).unwrap();
            let open = open_tunnel(&socket, &target).await.unwrap();
            // `ensure` on a running proxy updates it too, on the same socket.
            assert_eq!(proxies.ensure("acme", EgressPolicy::default()).unwrap(), socket);
            assert_eq!(
                open_tunnel(&socket, &target).await.unwrap_err().0,
                StatusCode::FORBIDDEN
            );
            assert!(
                get_through(open, "/still-open")
                    .await
                    .starts_with("GET /still-open ")
            );
        })
        .await;
    }

    #[tokio::test]
    async fn an_unresolvable_name_gets_502() {
        within(async {
            let (_dir, proxies) = proxies(EgressConfig::default());
            let socket = proxies.ensure("acme", rules(&["nowhere.invalid"])).unwrap();
            let (status, body) = open_tunnel(&socket, "nowhere.invalid:443").await.unwrap_err();
            assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
            assert!(body.starts_with("could not resolve nowhere.invalid"), "{body}");
        })
        .await;
    }

    #[tokio::test]
    async fn a_connect_timeout_gets_504() {
        within(async {
            // A listener that never accepts and whose queue is full drops new SYNs, so a
            // connect to it hangs. A connect that times out proves the queue is full.
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let listener = socket.listen(1).unwrap();
            let addr = listener.local_addr().unwrap();
            let mut queued = Vec::new();
            let full = loop {
                assert!(queued.len() < 64, "the accept queue never filled");
                match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
                    Ok(stream) => queued.push(stream.unwrap()),
                    Err(_) => break true,
                }
            };
            assert!(full);
            let config = EgressConfig {
                connect_timeout: Duration::from_millis(300),
            };
            let (_dir, proxies) = proxies(config);
            let socket = proxies.ensure("acme", rules(&[&addr.to_string()])).unwrap();
            let (status, body) = open_tunnel(&socket, &addr.to_string()).await.unwrap_err();
            assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
            assert!(body.contains("timed out connecting"), "{body}");
        })
        .await;
    }

    #[tokio::test]
    async fn removing_a_tenant_closes_its_socket_and_tunnels() {
        within(async {
            let up = upstream().await;
            let (_dir, proxies) = proxies(EgressConfig::default());
            let socket = proxies.ensure("acme", rules(&[&up.to_string()])).unwrap();
            let mut tunnel = TokioIo::new(open_tunnel(&socket, &up.to_string()).await.unwrap());
            assert!(proxies.remove("acme"));
            assert!(!proxies.remove("acme"));
            assert!(!socket.exists(), "the socket file is removed");
            assert!(UnixStream::connect(&socket).await.is_err());
            let mut rest = Vec::new();
            tunnel.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty(), "the tunnel was closed without data");
        })
        .await;
    }

    #[tokio::test]
    async fn bad_tenants_and_long_paths_are_refused() {
        let (_dir, proxies) = proxies(EgressConfig::default());
        assert!(matches!(
            proxies.ensure("../etc", EgressPolicy::default()),
            Err(EgressError::Tenant(_))
        ));
        assert!(matches!(
            proxies.update("ghost", EgressPolicy::default()),
            Err(EgressError::NotRunning(_))
        ));
        let deep = EgressProxies::new(format!("/tmp/{}", "d".repeat(100)), EgressConfig::default());
        let err = deep.ensure("acme", EgressPolicy::default()).unwrap_err();
        assert!(matches!(err, EgressError::PathTooLong { len: 115, .. }), "{err}");
    }
}
