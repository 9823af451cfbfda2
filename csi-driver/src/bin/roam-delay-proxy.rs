//! roam-delay-proxy: a TCP proxy that adds a fixed one-way delay in each
//! direction, for tests and benchmarks on kernels without the netem qdisc.
//!
//! Each accepted connection gets its own upstream connection. Bytes read on
//! one side are stamped with the time they arrived and written to the other
//! side no earlier than `delay` later; reading never waits for writing, so
//! the delay adds latency without capping bandwidth (the queue between them
//! is bounded, which is the proxy's only back-pressure). Round-trip time
//! added is twice the delay.
//!
//! With `--stats-file`, the bytes forwarded in each direction (totals over
//! all connections) are written there every 100 ms as `to_upstream=N` and
//! `to_client=N` lines: tests read how much a resync actually moved.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

#[derive(Parser, Debug)]
#[command(about = "TCP proxy adding a fixed one-way delay per direction")]
struct Args {
    /// Address to accept connections on.
    #[arg(long)]
    listen: SocketAddr,
    /// Address every connection is forwarded to.
    #[arg(long)]
    upstream: SocketAddr,
    /// Delay added to each direction, in microseconds (RTT grows by twice this).
    #[arg(long, default_value_t = 0)]
    delay_us: u64,
    /// File to write the byte counters to.
    #[arg(long)]
    stats_file: Option<std::path::PathBuf>,
}

/// Bytes forwarded toward the upstream and toward the clients.
static TO_UPSTREAM: AtomicU64 = AtomicU64::new(0);
static TO_CLIENT: AtomicU64 = AtomicU64::new(0);

/// Chunks in flight per direction before reading pauses.
const QUEUE_CHUNKS: usize = 4096;
const CHUNK_BYTES: usize = 64 * 1024;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let delay = Duration::from_micros(args.delay_us);
    let listener = TcpListener::bind(args.listen).await?;
    if let Some(path) = args.stats_file.clone() {
        tokio::spawn(async move {
            loop {
                let text = format!(
                    "to_upstream={}\nto_client={}\n",
                    TO_UPSTREAM.load(Ordering::Relaxed),
                    TO_CLIENT.load(Ordering::Relaxed)
                );
                let tmp = path.with_extension("tmp");
                if std::fs::write(&tmp, text).is_ok() {
                    let _ = std::fs::rename(&tmp, &path);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    info!(listen = %args.listen, upstream = %args.upstream, delay_us = args.delay_us, "proxy ready");
    loop {
        let (client, peer) = listener.accept().await?;
        let upstream = args.upstream;
        tokio::spawn(async move {
            match TcpStream::connect(upstream).await {
                Ok(server) => relay(client, server, delay).await,
                Err(e) => warn!(%peer, %upstream, "connect upstream: {e}"),
            }
        });
    }
}

async fn relay(client: TcpStream, server: TcpStream, delay: Duration) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        one_direction(client_read, server_write, delay, &TO_UPSTREAM),
        one_direction(server_read, client_write, delay, &TO_CLIENT),
    );
}

async fn one_direction(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
    counter: &'static AtomicU64,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE_CHUNKS);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
