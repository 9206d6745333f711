//! The localhost admin port for backup and restore (BBR): `PUT /lock_router_group_reads`,
//! `/unlock_router_group_reads`, `/lock_router_group_writes` and `/unlock_router_group_writes`
//! set or clear the store's router-group locks.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::store::Store;

/// Serves the backup/restore (BBR) admin endpoints on localhost until `closing` turns true:
/// while a lock is set, router-group reads or writes fail with 503.
pub async fn serve_admin(listener: TcpListener, store: Store, mut closing: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = closing.wait_for(|c| *c) => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        let store = store.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let store = store.clone();
                async move {
                    let mut resp = Response::new(Full::new(Bytes::new()));
                    match (req.method(), req.uri().path()) {
                        (&Method::PUT, "/lock_router_group_reads") => {
                            store.set_router_group_reads_locked(true)
                        }
                        (&Method::PUT, "/unlock_router_group_reads") => {
                            store.set_router_group_reads_locked(false)
                        }
                        (&Method::PUT, "/lock_router_group_writes") => {
                            store.set_router_group_writes_locked(true)
                        }
                        (&Method::PUT, "/unlock_router_group_writes") => {
                            store.set_router_group_writes_locked(false)
                        }
                        _ => *resp.status_mut() = StatusCode::NOT_FOUND,
                    }
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
