//! The built-in demo app: an HTTP/1.1 server on an ephemeral 127.0.0.1 port answering every
//! request with `200 Hello from the routing tier demo app\n`.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The demo app's response body.
pub const BODY: &str = "Hello from the routing tier demo app\n";

/// Binds 127.0.0.1:0, serves in the background and returns the port.
pub async fn start() -> Result<u16, crate::Error> {
    start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// `routing-tier demo-app --listen ADDR`: serves on `addr` until SIGINT or SIGTERM.
pub async fn run(addr: SocketAddr) -> Result<(), crate::Error> {
    use tokio::signal::unix::{signal, SignalKind};
    // The handlers go in before the listening line: whoever reads the line may signal at once,
    // and a signal before then would end the process by its default action (not cleanly).
    let mut term = signal(SignalKind::terminate()).map_err(crate::Error::DemoApp)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(crate::Error::DemoApp)?;
    let port = start_on(addr).await?;
    println!("routing-tier demo-app: listening on {}:{port}", addr.ip());
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

/// Binds `addr`, serves in the background and returns the bound port.
async fn start_on(addr: SocketAddr) -> Result<u16, crate::Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(crate::Error::DemoApp)?;
    let port = listener.local_addr().map_err(crate::Error::DemoApp)?.port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        BODY.as_bytes(),
                    ))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(port)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn answers_200_with_the_body() {
        let port = super::start().await.expect("start");
        let r = crate::probe::get(port, "demo.localhost")
            .await
            .expect("response");
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.ends_with(super::BODY), "{r}");
    }
}
