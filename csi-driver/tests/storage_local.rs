//! Storage systems as separate `roam-csi storage` processes on 127.0.0.1,
//! plaintext, no namespaces: replication, change of primary, kill -9 of the
//! primary mid-stream and promotion, stale epochs and bad peer messages.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use roam_proto::replication::replication_client::ReplicationClient;
use roam_proto::replication::{self as rp, peer_request::Body};
use roam_proto::storage::storage_client::StorageClient;
use roam_proto::storage::*;
use tonic::Code;
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_roam-csi");
const VOL: &str = "pvc-local";
const SIZE: u64 = 8 << 20;
const BLOCK: usize = 4096;

struct StorageProcess {
    dc: String,
    port: u16,
    dir: PathBuf,
    /// Directory with ca.pem, node.pem, node.key when mTLS is on.
    tls: Option<PathBuf>,
    child: Option<Child>,
}

/// Flags selecting mTLS with the certificates in `dir`, or plaintext.
fn tls_flags(tls: &Option<PathBuf>) -> Vec<String> {
    match tls {
        None => vec!["--insecure".into()],
        Some(d) => vec![
            "--tls-cert".into(),
            d.join("node.pem").display().to_string(),
            "--tls-key".into(),
            d.join("node.key").display().to_string(),
            "--tls-ca".into(),
            d.join("ca.pem").display().to_string(),
        ],
    }
}

impl StorageProcess {
    fn start(root: &std::path::Path, dc: &str) -> Self {
        Self::start_with(root, dc, None)
    }

    fn start_with(root: &std::path::Path, dc: &str, tls: Option<PathBuf>) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut p = StorageProcess {
            dc: dc.into(),
            port,
            dir: root.join(dc),
            tls,
            child: None,
        };
        p.spawn();
        p
    }

    fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.with_extension("log")).expect("log file");
        let child = Command::new(BIN)
            .args(["storage", "--ack-timeout-ms", "3000"])
            .args(tls_flags(&self.tls))
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args([
                "--advertise",
                &self.endpoint(),
                "--data-center",
                &self.dc,
                "--node",
                &self.dc,
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn roam-csi storage");
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to `within` for the process to exit; its exit
    /// status, or None if it is still running (then it is killed).
    fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    async fn client(&self) -> StorageClient<Channel> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = StorageClient::connect(self.endpoint()).await
                && c.get_info(GetInfoRequest {}).await.is_ok()
            {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "storage system {} never came up",
                self.dc
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for StorageProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn block(seed: u64) -> Vec<u8> {
    (0..BLOCK)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8)
        .collect()
}

fn group(procs: &[&StorageProcess], primary: &str, epoch: u64) -> GroupSpec {
    GroupSpec {
        members: procs
            .iter()
            .map(|p| Member {
                data_center: p.dc.clone(),
                endpoint: p.endpoint(),
            })
            .collect(),
        primary: primary.into(),
        epoch,
        transfer_type: TransferType::Sync as i32,
        failure_policy: FailurePolicy::Block as i32,
        max_lag_bytes: 0,
        max_lag_seconds: 0,
        sync_level: SyncLevel::Write as i32,
    }
}

/// Creates the test volume's replica and configures it with `g`.
async fn create_and_configure(c: &mut StorageClient<Channel>, g: &GroupSpec) {
    c.create_replica(CreateReplicaRequest {
        volume_id: VOL.into(),
        size_bytes: SIZE,
    })
    .await
    .expect("create");
    c.configure_group(ConfigureGroupRequest {
        volume_id: VOL.into(),
        group: Some(g.clone()),
    })
    .await
    .expect("configure");
}

async fn status(c: &mut StorageClient<Channel>) -> ReplicaStatus {
    c.get_replica(GetReplicaRequest {
        volume_id: VOL.into(),
    })
    .await
    .expect("get replica")
    .into_inner()
}

async fn wait_in_sync(c: &mut StorageClient<Channel>, members: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = status(c).await;
        let ok = st.role == Role::Primary as i32
            && st.members.len() == members
            && st
                .members
                .iter()
                .all(|m| m.state == MemberState::InSync as i32 && m.applied_seq == st.written_seq);
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "group never got in sync: {st:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn read_any(c: &mut StorageClient<Channel>, offset: u64) -> Vec<u8> {
    c.read_replica(ReadRequest {
        volume_id: VOL.into(),
        epoch: 0,
        offset,
        length: BLOCK as u32,
    })
    .await
    .expect("read replica")
    .into_inner()
    .data
}

async fn write(
    c: &mut StorageClient<Channel>,
    epoch: u64,
    offset: u64,
    data: Vec<u8>,
) -> Result<u64, tonic::Status> {
    c.write(WriteRequest {
        volume_id: VOL.into(),
        epoch,
        offset,
        data,
        fua: false,
    })
    .await
    .map(|r| r.into_inner().seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_transfer_kill_primary_promote() {
    let root = tempfile::tempdir().expect("tempdir");
    let a = StorageProcess::start(root.path(), "a");
    let mut b = StorageProcess::start(root.path(), "b");
    let c = StorageProcess::start(root.path(), "c");
    let (mut ca, mut cb, mut cc) = (a.client().await, b.client().await, c.client().await);
    for cl in [&mut ca, &mut cb, &mut cc] {
        cl.create_replica(CreateReplicaRequest {
            volume_id: VOL.into(),
            size_bytes: SIZE,
        })
        .await
        .expect("create");
    }
    // A repeat with another size is refused.
    let err = ca
        .create_replica(CreateReplicaRequest {
            volume_id: VOL.into(),
            size_bytes: SIZE * 2,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let g1 = group(&[&a, &b, &c], "a", 1);
    for cl in [&mut ca, &mut cb, &mut cc] {
        cl.configure_group(ConfigureGroupRequest {
            volume_id: VOL.into(),
            group: Some(g1.clone()),
        })
        .await
        .expect("configure");
    }
    let mut acked: Vec<(u64, Vec<u8>)> = Vec::new();
    for i in 0..40u64 {
        let data = block(i);
        write(&mut ca, 1, i * BLOCK as u64, data.clone())
            .await
            .expect("write on a");
        acked.push((i * BLOCK as u64, data));
    }
    // Sync: every acknowledged write is already on every replica.
    for cl in [&mut cb, &mut cc] {
        for (off, data) in &acked {
            assert!(
                &read_any(cl, *off).await == data,
                "replica lacks write at {off}"
            );
        }
    }

    // Planned change of primary a -> b at epoch 2.
    let st = ca
        .transfer_primary(TransferPrimaryRequest {
            volume_id: VOL.into(),
            target: "b".into(),
            new_epoch: 2,
        })
        .await
        .expect("transfer")
        .into_inner();
    assert_eq!(st.role, Role::Secondary as i32);
    assert_eq!(status(&mut cb).await.role, Role::Primary as i32);
    // The old primary and the old epoch are refused.
    let err = write(&mut ca, 1, 0, block(99)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = write(&mut cb, 1, 0, block(99)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    wait_in_sync(&mut cb, 2).await;

    // A stream of writes on b; kill -9 b in the middle of it.
    let writer = {
        let mut cb = cb.clone();
        tokio::spawn(async move {
            let mut done = Vec::new();
            for i in 100..2000u64 {
                let off = (i % 1500) * BLOCK as u64;
                let data = block(i);
                match write(&mut cb, 2, off, data.clone()).await {
                    Ok(_) => done.push((off, data)),
                    Err(_) => break,
                }
            }
            done
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.kill9();
    let streamed = writer.await.expect("writer task");
    assert!(!streamed.is_empty(), "no write completed before the kill");
    // Later writes to the same offset replace earlier ones.
    let mut expected = std::collections::BTreeMap::new();
    for (off, data) in acked.into_iter().chain(streamed) {
        expected.insert(off, data);
    }

    // Failover: promote c at epoch 3; every acknowledged write is there.
    cc.promote(PromoteRequest {
        volume_id: VOL.into(),
        new_epoch: 3,
    })
    .await
    .expect("promote c");
    let err = cc
        .promote(PromoteRequest {
            volume_id: VOL.into(),
            new_epoch: 2,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    for (off, data) in &expected {
        let got = cc
            .read(ReadRequest {
                volume_id: VOL.into(),
                epoch: 3,
                offset: *off,
                length: BLOCK as u32,
            })
            .await
            .expect("read on c")
            .into_inner()
            .data;
        assert!(&got == data, "acknowledged write at {off} lost in failover");
    }
    // Sync + Block: while b (in sync until it died) is away, writes fail.
    let err = write(&mut cc, 3, 0, block(7777)).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    // A failed write may or may not have reached c; every replica must end up agreeing with c.
    expected.insert(0, read_any(&mut cc, 0).await);

    // b comes back as a secondary of c and catches up.
    b.spawn();
    let mut cb = b.client().await;
    wait_in_sync(&mut cc, 2).await;
    write(&mut cc, 3, BLOCK as u64, block(8888))
        .await
        .expect("write on the new primary");
    expected.insert(BLOCK as u64, block(8888));
    let st = status(&mut cb).await;
    assert_eq!((st.role, st.epoch), (Role::Secondary as i32, 3));
    for (off, data) in &expected {
        assert!(
            &read_any(&mut cb, *off).await == data,
            "b differs at {off} after rejoining"
        );
        assert!(&read_any(&mut ca, *off).await == data, "a differs at {off}");
    }
}

fn append(epoch: u64, seq: u64, offset: u64, data: &[u8], crc: Option<u32>) -> rp::PeerRequest {
    let crc = crc.unwrap_or_else(|| {
        let mut head = Vec::new();
        head.extend_from_slice(&seq.to_le_bytes());
        head.extend_from_slice(&epoch.to_le_bytes());
        head.extend_from_slice(&offset.to_le_bytes());
        crc32c::crc32c_append(crc32c::crc32c(&head), data)
    });
    rp::PeerRequest {
        volume_id: VOL.into(),
        epoch,
        body: Some(Body::Append(rp::AppendBatch {
            records: vec![rp::WriteRecord {
                seq,
                epoch,
                offset,
                data: data.to_vec().into(),
                crc,
                incarnation: 0,
            }],
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_and_malformed_peer_messages_change_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let a = StorageProcess::start(root.path(), "a");
    let b = StorageProcess::start(root.path(), "b");
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let g = group(&[&a, &b], "a", 1);
    for cl in [&mut ca, &mut cb] {
        create_and_configure(cl, &g).await;
    }
    write(&mut ca, 1, 0, block(1)).await.expect("write");
    wait_in_sync(&mut ca, 1).await;
    let before = status(&mut cb).await;
    let data_before = read_any(&mut cb, 0).await;

    let mut peer = ReplicationClient::connect(b.endpoint())
        .await
        .expect("peer client");
    let next = before.written_seq + 1;
    let cases: Vec<(rp::PeerRequest, Code)> = vec![
        (append(0, next, 0, b"stale", None), Code::FailedPrecondition),
        (
            append(1, next + 5, 0, b"gap", None),
            Code::FailedPrecondition,
        ),
        (
            append(1, next - 1, 0, b"dup", None),
            Code::FailedPrecondition,
        ),
        (
            append(1, next, 0, b"bad crc", Some(1)),
            Code::InvalidArgument,
        ),
        (
            append(1, next, SIZE - 2, b"past the end", None),
            Code::OutOfRange,
        ),
        (
            rp::PeerRequest {
                volume_id: VOL.into(),
                epoch: 1,
                body: None,
            },
            Code::InvalidArgument,
        ),
        (
            rp::PeerRequest {
                volume_id: "../etc".into(),
                epoch: 1,
                body: None,
            },
            Code::InvalidArgument,
        ),
        (
            append(1, next, 0, &vec![0u8; 17 << 20], None),
            Code::OutOfRange,
        ),
    ];
    for (req, want) in cases {
        let err = peer
            .call(req)
            .await
            .expect_err("a bad peer message was accepted");
        assert!(
            err.code() == want
                || (want == Code::OutOfRange && err.code() == Code::ResourceExhausted),
            "want {want:?}, got {err:?}"
        );
    }
    // The same over a stream: the refusal ends the stream with its status.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(append(1, next + 9, 0, b"gap", None))
        .await
        .expect("queue");
    let mut replies = peer
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    let err = replies
        .message()
        .await
        .expect_err("gap accepted on a stream");
    assert_eq!(err.code(), Code::FailedPrecondition);

    let after = status(&mut cb).await;
    assert_eq!(
        (after.epoch, after.written_seq, after.role),
        (before.epoch, before.written_seq, before.role)
    );
    assert_eq!(read_any(&mut cb, 0).await, data_before);
    // The group still works.
    write(&mut ca, 1, 0, block(2))
        .await
        .expect("write after the refusals");
    assert_eq!(read_any(&mut cb, 0).await, block(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_cli_drives_a_group() {
    let root = tempfile::tempdir().expect("tempdir");
    let a = StorageProcess::start(root.path(), "a");
    let b = StorageProcess::start(root.path(), "b");
    a.client().await;
    b.client().await;
    let admin = |endpoint: &str, args: &[&str]| {
        let out = Command::new(BIN)
            .args(["admin", "--insecure", "--endpoint", endpoint])
            .args(args)
            .output()
            .expect("run admin");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ea, eb) = (a.endpoint(), b.endpoint());
    let (ma, mb) = (format!("a={ea}"), format!("b={eb}"));
    for e in [&ea, &eb] {
        let (ok, _, err) = admin(e, &["create", "--volume", VOL, "--size", "1048576"]);
        assert!(ok, "{err}");
        let (ok, _, err) = admin(
            e,
            &[
                "configure",
                "--volume",
                VOL,
                "--member",
                &ma,
                "--member",
                &mb,
                "--primary",
                "a",
                "--epoch",
                "1",
            ],
        );
        assert!(ok, "{err}");
    }
    let file = root.path().join("payload");
    std::fs::write(&file, b"hello from the admin cli").expect("payload");
    let (ok, out, err) = admin(
        &ea,
        &[
            "write",
            "--volume",
            VOL,
            "--offset",
            "512",
            "--file",
            file.to_str().unwrap_or(""),
        ],
    );
    assert!(ok && out.contains("seq 1"), "{out} {err}");
    let (ok, out, _) = admin(
        &eb,
        &[
            "read",
            "--volume",
            VOL,
            "--offset",
            "512",
            "--length",
            "24",
            "--any-role",
        ],
    );
    assert!(ok);
    assert_eq!(out, "hello from the admin cli");
    let (ok, out, err) = admin(&ea, &["transfer", "--volume", VOL, "--target", "b"]);
    assert!(ok, "{out} {err}");
    let (ok, out, _) = admin(&eb, &["status", "--volume", VOL, "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).expect("status json");
    assert_eq!(v["role"], "primary");
    assert_eq!(v["epoch"], 2);
    let (ok, out, _) = admin(
        &eb,
        &["read", "--volume", VOL, "--offset", "512", "--length", "5"],
    );
    assert!(ok);
    assert_eq!(out, "hello");
    // A write on the old primary fails with the gRPC code on stderr.
    let (ok, _, err) = admin(
        &ea,
        &[
            "write", "--volume", VOL, "--offset", "0", "--data", "x", "--epoch", "1",
        ],
    );
    assert!(!ok && err.contains("FailedPrecondition"), "{err}");
    let (ok, out, _) = admin(&ea, &["status"]);
    assert!(ok && out.contains("secondary"), "{out}");
}

/// A CA and one certificate (for 127.0.0.1, server and client use) made with openssl.
fn make_certs(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(ok.success(), "openssl {args:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"],
        &ec[..],
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=roam-test-ca",
        ],
    ]
    .concat());
    run(&[
        &["req"],
        &ec[..],
        &[
            "-keyout",
            "node.key",
            "-out",
            "node.csr",
            "-subj",
            "/CN=roam-node",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext.cnf");
    run(&[
        "x509",
        "-req",
        "-in",
        "node.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "node.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_between_storage_systems_and_the_admin_cli() {
    let root = tempfile::tempdir().expect("tempdir");
    let certs = root.path().join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    make_certs(&certs);
    let a = StorageProcess::start_with(root.path(), "a", Some(certs.clone()));
    let b = StorageProcess::start_with(root.path(), "b", Some(certs.clone()));
    let tls = tls_flags(&Some(certs.clone()));
    let admin = |endpoint: &str, flags: &[String], args: &[&str]| {
        let out = Command::new(BIN)
            .args(["admin", "--endpoint", endpoint])
            .args(flags)
            .args(args)
            .output()
            .expect("run admin");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ea, eb) = (a.endpoint(), b.endpoint());
    for e in [&ea, &eb] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !admin(e, &tls, &["info"]).0 {
            assert!(Instant::now() < deadline, "{e} never answered over mTLS");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let (ma, mb) = (format!("a={ea}"), format!("b={eb}"));
    for e in [&ea, &eb] {
        let (ok, _, err) = admin(e, &tls, &["create", "--volume", VOL, "--size", "1048576"]);
        assert!(ok, "{err}");
        let (ok, _, err) = admin(
            e,
            &tls,
            &[
                "configure",
                "--volume",
                VOL,
                "--member",
                &ma,
                "--member",
                &mb,
                "--primary",
                "a",
                "--epoch",
                "1",
            ],
        );
        assert!(ok, "{err}");
    }
    let (ok, out, err) = admin(
        &ea,
        &tls,
        &[
            "write",
            "--volume",
            VOL,
            "--offset",
            "0",
            "--data",
            "over mutual tls",
        ],
    );
    assert!(ok, "{out} {err}");
    // Sync group: the secondary holds it once the write is acknowledged.
    let (ok, out, err) = admin(
        &eb,
        &tls,
        &[
            "read",
            "--volume",
            VOL,
            "--offset",
            "0",
            "--length",
            "15",
            "--any-role",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "over mutual tls");
    // Plaintext against a TLS server fails.
    let (ok, _, _) = admin(
        &ea.replace("https", "http"),
        &["--insecure".to_string()],
        &["info"],
    );
    assert!(!ok, "plaintext reached a TLS-only server");
}

/// A replica larger than the free space of the storage system's disk is
/// refused up front, with the sizes in the message, and leaves nothing behind:
/// no replica, no directory, no blocks taken from the other replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_larger_than_the_free_disk_is_refused_and_leaves_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let a = StorageProcess::start(root.path(), "a");
    let mut ca = a.client().await;
    let free = ca
        .get_info(GetInfoRequest {})
        .await
        .expect("info")
        .into_inner()
        .free_bytes;
    let too_big = (free / 512 + 1024 * 1024) * 512;
    let err = ca
        .create_replica(CreateReplicaRequest {
            volume_id: VOL.into(),
            size_bytes: too_big,
        })
        .await
        .expect_err("a replica larger than the disk was created");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("no space")
            && err.message().contains(&too_big.to_string())
            && err.message().contains("bytes free under"),
        "the message names the problem, the size asked and the space free: {}",
        err.message()
    );
    let missing = ca
        .get_replica(GetReplicaRequest {
            volume_id: VOL.into(),
        })
        .await
        .expect_err("the refused replica exists");
    assert_eq!(missing.code(), Code::NotFound);
    let leftovers: Vec<_> = walk(&a.dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(VOL))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    // The same storage system still creates a replica that fits.
    ca.create_replica(CreateReplicaRequest {
        volume_id: VOL.into(),
        size_bytes: SIZE,
    })
    .await
    .expect("a replica that fits");
}

/// Every path under `dir`.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// An acknowledged write survives `kill -9` of the storage system although
/// nobody flushed it: it is in the journal file before it is acknowledged,
/// and the journal is replayed when the replica is opened again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_without_a_flush() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut a = StorageProcess::start(root.path(), "a");
    let mut ca = a.client().await;
    create_and_configure(&mut ca, &group(&[&a], "a", 1)).await;
    let blocks = 256u64;
    for i in 0..blocks {
        write(&mut ca, 1, i * BLOCK as u64, block(i))
            .await
            .expect("write");
    }
    a.kill9();
    a.spawn();
    let mut ca = a.client().await;
    let st = status(&mut ca).await;
    assert_eq!(
        st.written_seq, blocks,
        "every acknowledged write replayed: {st:?}"
    );
    for i in 0..blocks {
        assert_eq!(
            read_any(&mut ca, i * BLOCK as u64).await,
            block(i),
            "block {i} after kill -9"
        );
    }
}

/// A storage system told to stop stops, also as a secondary, whose primary
/// keeps a replication stream open to it that would hold a graceful shutdown
/// forever; and what it acknowledged is there when it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_with_an_open_replication_stream_stops_when_told() {
    let root = tempfile::tempdir().expect("tempdir");
    let a = StorageProcess::start(root.path(), "a");
    let mut b = StorageProcess::start(root.path(), "b");
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let g = group(&[&a, &b], "a", 1);
    for cl in [&mut ca, &mut cb] {
        create_and_configure(cl, &g).await;
    }
    // A Sync write: acknowledged once b holds it, over the open stream.
    write(&mut ca, 1, 0, block(7)).await.expect("write");
    let status = b
        .terminate(Duration::from_secs(60))
        .expect("the secondary did not stop after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    b.spawn();
    let mut cb = b.client().await;
    assert_eq!(
        read_any(&mut cb, 0).await,
        block(7),
        "b's copy after restart"
    );
}

async fn snapshot_block(
    c: &mut StorageClient<Channel>,
    name: &str,
    offset: u64,
) -> Result<Vec<u8>, tonic::Status> {
    c.read_snapshot(ReadSnapshotRequest {
        volume_id: VOL.into(),
        name: name.into(),
        offset,
        length: BLOCK as u64,
    })
    .await
    .map(|r| r.into_inner().data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_over_grpc_survive_kill_9_and_are_held_by_every_member() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut a = StorageProcess::start(root.path(), "a");
    let b = StorageProcess::start(root.path(), "b");
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let g = group(&[&a, &b], "a", 1);
    for cl in [&mut ca, &mut cb] {
        create_and_configure(cl, &g).await;
    }
    for i in 0..8u64 {
        write(&mut ca, 1, i * BLOCK as u64, block(i))
            .await
            .expect("write");
    }
    let taken = ca
        .create_snapshot(CreateSnapshotRequest {
            volume_id: VOL.into(),
            name: "before".into(),
        })
        .await
        .expect("create snapshot")
        .into_inner();
    assert!(!taken.repeat);
    assert_eq!(taken.snapshot.as_ref().map(|s| s.seq), Some(8));
    assert_eq!(taken.members, vec!["b".to_string()], "{:?}", taken.missing);
    // Later writes overwrite what the snapshot holds.
    for i in 0..8u64 {
        write(&mut ca, 1, i * BLOCK as u64, block(100 + i))
            .await
            .expect("write");
    }
    // Only the primary takes snapshots; a bad name or an unknown snapshot
    // gets a precise code.
    let err = cb
        .create_snapshot(CreateSnapshotRequest {
            volume_id: VOL.into(),
            name: "on-secondary".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = ca
        .create_snapshot(CreateSnapshotRequest {
            volume_id: VOL.into(),
            name: "no/slashes".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = snapshot_block(&mut cb, "never-taken", 0).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // kill -9 of the primary: the snapshot is still there when it comes back.
    a.kill9();
    a.spawn();
    let mut ca = a.client().await;
    wait_in_sync(&mut ca, 1).await;
    for cl in [&mut ca, &mut cb] {
        for i in 0..8u64 {
            assert_eq!(
                snapshot_block(cl, "before", i * BLOCK as u64)
                    .await
                    .expect("read snapshot"),
                block(i)
            );
            assert_eq!(read_any(cl, i * BLOCK as u64).await, block(100 + i));
        }
        let listed = cl
            .list_snapshots(ListSnapshotsRequest {
                volume_id: VOL.into(),
            })
            .await
            .expect("list")
            .into_inner()
            .snapshots;
        assert_eq!(listed.len(), 1);
        assert!(listed[0].copied_bytes >= 8 * BLOCK as u64, "{listed:?}");
    }
    // Deleting frees it on each member; a repeat succeeds.
    for cl in [&mut ca, &mut cb] {
        let del = |deleted| DeleteSnapshotResponse { deleted };
        for expect in [true, false] {
            let got = cl
                .delete_snapshot(DeleteSnapshotRequest {
                    volume_id: VOL.into(),
                    name: "before".into(),
                })
                .await
                .expect("delete")
                .into_inner();
            assert_eq!(got, del(expect));
        }
    }
    for dc in ["a", "b"] {
        let logs = std::fs::read_dir(root.path().join(dc).join(VOL).join("snapshots"))
            .expect("the replica's snapshots directory")
            .count();
        assert_eq!(logs, 0, "{dc} still holds snapshot logs");
    }
}
