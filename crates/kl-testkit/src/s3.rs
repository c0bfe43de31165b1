//! A real S3 protocol server on loopback: s3s-fs (buckets are folders under a temp dir, objects
//! files in them) behind s3s's request parsing and SigV4 authentication, served by hyper on a
//! runtime of its own, so it keeps answering while a test blocks its own thread.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

/// The credentials the server accepts; requests signed otherwise are refused.
pub const ACCESS_KEY: &str = "kl-test-access";
pub const SECRET_KEY: &str = "kl-test-secret";
pub const REGION: &str = "us-east-1";

/// A running server, stopped when dropped.
pub struct S3Server {
    addr: SocketAddr,
    root: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl S3Server {
    /// Starts a server on a free loopback port with no buckets.
    pub fn start() -> S3Server {
        let root = tempfile::tempdir().expect("temp dir for the S3 server");
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs opens its root");
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback port");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = listener.local_addr().expect("bound address");
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("S3 server runtime");
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                loop {
                    let socket = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((socket, _)) => socket,
                            Err(_) => continue,
                        },
                        _ = &mut stopped => return,
                    };
                    let service = service.clone();
                    tokio::spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(socket), service)
                            .await;
                    });
                }
            });
        });
        S3Server {
            addr,
            root,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a bucket (a folder to s3s-fs); returns its folder.
    pub fn create_bucket(&self, name: &str) -> PathBuf {
        let dir = self.bucket_dir(name);
        std::fs::create_dir_all(&dir).expect("bucket folder");
        dir
    }

    /// Where the bucket's objects are kept on disk.
    pub fn bucket_dir(&self, name: &str) -> PathBuf {
        self.root().join(name)
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The standard `AWS_*` variables that point a client at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
