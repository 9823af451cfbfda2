//! roam-delay-proxy: a TCP proxy that adds a fixed one-way delay in each
//! direction, for tests and benchmarks on kernels without the netem qdisc.
//!
//! Each accepted connection gets its own upstream connection. Bytes read on
//! one side are stamped with the time they arrived and written to the other
//! side no earlier than `delay` later; reading never waits for writing, so
//! the delay adds latency without capping bandwidth (the queue between them
//! is bounded, which is the proxy's only back-pressure). Round-trip time
//! added is twice the delay. Threads with blocking sockets, not an async
//! runtime: a sleep on an OS thread is precise to tens of microseconds.
//!
//! With `--stats-file`, the bytes forwarded in each direction (totals over
//! all connections) are written there every 100 ms as `to_upstream=N` and
//! `to_client=N` lines: tests read how much a resync actually moved.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
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

fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        // Colour codes only for a terminal: logs collected by the kubelet stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let delay = Duration::from_micros(args.delay_us);
    let listener = TcpListener::bind(args.listen)?;
    if let Some(path) = args.stats_file.clone() {
        std::thread::spawn(move || {
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
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }
    info!(listen = %args.listen, upstream = %args.upstream, delay_us = args.delay_us, "proxy ready");
    loop {
        let (client, peer) = listener.accept()?;
        let upstream = args.upstream;
        std::thread::spawn(move || match TcpStream::connect(upstream) {
            Ok(server) => relay(client, server, delay),
            Err(e) => warn!(%peer, %upstream, "connect upstream: {e}"),
        });
    }
}

/// Two directions, each a reader thread and a writer thread joined by a
/// bounded queue of time-stamped chunks. Blocking sockets and
/// `thread::sleep` (a high-resolution timer) keep the added delay within
/// tens of microseconds of what was asked, where a millisecond-tick async
/// timer would round each direction up by as much as a millisecond.
fn relay(client: TcpStream, server: TcpStream, delay: Duration) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let pair = (client.try_clone(), server.try_clone());
    let (Ok(client_w), Ok(server_w)) = pair else {
        warn!("clone a socket of the relay");
        return;
    };
    let up = std::thread::spawn(move || one_direction(client, server_w, delay, &TO_UPSTREAM));
    one_direction(server, client_w, delay, &TO_CLIENT);
    let _ = up.join();
}

fn one_direction(from: TcpStream, mut to: TcpStream, delay: Duration, counter: &AtomicU64) {
    let (tx, rx) = mpsc::sync_channel::<(Instant, Vec<u8>)>(QUEUE_CHUNKS);
    let reader_from = from.try_clone();
    let reader = std::thread::spawn(move || {
        let Ok(mut from) = reader_from else { return };
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    while let Ok((due, chunk)) = rx.recv() {
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if to.write_all(&chunk).is_err() {
            // The other side is gone: stop reading this one too.
            let _ = from.shutdown(Shutdown::Read);
            break;
        }
        counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    drop(rx);
    let _ = reader.join();
    let _ = to.shutdown(Shutdown::Write);
}
