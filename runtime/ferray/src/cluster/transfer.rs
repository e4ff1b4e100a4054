//! Loopback measurements for `ferray microbenchmark`: an object pulled from
//! a node's object server (chunks over gRPC, reassembled, checked against
//! its id; each pulled copy is dropped, so the next pull reuses its buffer),
//! next to raw TCP on the same loopback in the same run.

use std::sync::Arc;
#[cfg(feature = "testing")]
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferray_core::{Error, ObjectId};
use ferray_proto::Token;
use ferray_store::{ObjectStore, StoreConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::node::NodeObjects;

fn sys(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::System(format!("{what}: {e}"))
}

/// Gigabytes per second of `size`-byte objects pulled from one node's
/// object server by another over loopback, for about `secs` seconds.
pub async fn transfer_gbps(size: usize, secs: f64) -> Result<f64, Error> {
    let store = Arc::new(ObjectStore::new(StoreConfig {
        memory_capacity: (size as u64) * 2,
        spill_dir: None,
        ..StoreConfig::default()
    })?);
    let mut data = vec![0u8; size];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
    }
    let id: ObjectId = store.put(Bytes::from(data));
    let token = Token::generate()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(sys("cannot listen"))?;
    let addr = listener.local_addr().map_err(sys("no address"))?;
    let svc = NodeObjects {
        store,
        #[cfg(feature = "testing")]
        corrupt: Arc::new(AtomicU32::new(0)),
    };
    let server = tokio::spawn(
        ferray_proto::server()
            .add_service(ferray_proto::objects_server(svc, &token))
            .serve_with_incoming(ferray_proto::incoming(listener)),
    );
    let ch = ferray_proto::connect(&addr.to_string()).await?;
    let client = ferray_proto::objects_client(ch, &token);
    let pull = || {
        let mut c = client.clone();
        async move { ferray_proto::pull(&mut c, "the benchmark's server", id).await }
    };
    pull().await?;
    let start = Instant::now();
    let mut n = 0u64;
    while n == 0 || start.elapsed() < Duration::from_secs_f64(secs) {
        pull().await?;
        n += 1;
    }
    let rate = (n as f64 * size as f64) / start.elapsed().as_secs_f64() / 1e9;
    server.abort();
    Ok(rate)
}

/// Gigabytes per second of raw TCP over loopback (4 MiB writes and reads).
pub async fn tcp_loopback_gbps(size: usize, secs: f64) -> Result<f64, Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(sys("cannot listen"))?;
    let addr = listener.local_addr().map_err(sys("no address"))?;
    let writer = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.map_err(sys("accept"))?;
        let _ = sock.set_nodelay(true);
        let buf = vec![7u8; 4 << 20];
        loop {
            if sock.write_all(&buf).await.is_err() {
                return Ok::<(), Error>(());
            }
        }
    });
    let mut sock = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(sys("connect"))?;
    let mut buf = vec![0u8; 4 << 20];
    // Warm up with one object's worth.
    let mut got = 0usize;
    while got < size {
        got += sock.read(&mut buf).await.map_err(sys("read"))?;
    }
    let start = Instant::now();
    let mut total = 0u64;
    while start.elapsed() < Duration::from_secs_f64(secs) {
        let n = sock.read(&mut buf).await.map_err(sys("read"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let rate = total as f64 / start.elapsed().as_secs_f64() / 1e9;
    drop(sock);
    writer.abort();
    Ok(rate)
}
