//! `roam-operator`: wires the DataCenter and VirtualVolume controllers, the
//! caches they read, leader election and the metrics/health endpoints.
//!
//! Only the replica holding the leader Lease runs controllers; a replica that
//! loses the lease exits (its Deployment restarts it as a standby).

mod context;
mod datacenter;
mod error;
mod leader;
mod locality;
mod metrics;
mod storage;
mod triggers;
mod volume;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use futures::{Stream, StreamExt};
use k8s_openapi::api::{
    core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod},
    storage::v1::VolumeAttachment,
};
use kube::{
    Api, Client, Config, Resource,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        Controller, WatchStreamExt,
        events::{Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use roam_crds::{CopyVolumeGroup, DataCenter, VirtualVolume};
use serde::de::DeserializeOwned;

use crate::context::{Context, Stores};

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "roam-operator",
    about = "Roam operator: data centers, virtual volumes, copy volume groups"
)]
struct Args {
    /// Kubeconfig file; in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Only reconcile VirtualVolumes in this namespace (all when absent).
    #[arg(long)]
    watch_namespace: Option<String>,
    /// Only manage DataCenters matching this label selector.
    #[arg(long)]
    datacenter_selector: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// `text` or `json`.
    #[arg(long, default_value = "text")]
    log_format: String,
    /// Run the controllers without leader election.
    #[arg(long)]
    no_leader_election: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "roam-system")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "roam-operator")]
    lease_name: String,
    /// This replica's identity in the Lease (default: pod name or host name, and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// VirtualVolumes reconciled at once.
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    /// Mutual TLS to the storage systems (plaintext without these flags,
    /// which only storage systems started with --insecure accept).
    #[command(flatten)]
    tls: roam_proto::tls::TlsFiles,
}

fn init_logs(format: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for a terminal: logs collected by the kubelet stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        "json" => b.json().init(),
        "text" => b.init(),
        other => anyhow::bail!("--log-format: {other:?} is not text or json"),
    }
    Ok(())
}

async fn client(args: &Args) -> anyhow::Result<Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
        }
        None => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// Start a reflector for `api` and return its cache.
fn cache<K>(api: Api<K>, cfg: watcher::Config) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, cfg))
        .default_backoff()
        .touched_objects();
    tokio::spawn(drain(stream));
    store
}

async fn drain<S: Stream + Send>(s: S) {
    futures::pin_mut!(s);
    while s.next().await.is_some() {}
}

fn pod_to_volumes(pod: &Pod, stores: &Stores) -> Vec<ObjectRef<VirtualVolume>> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let claims = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref());
    claims
        .filter_map(|c| stores.pvcs.get(&ObjectRef::new(&c.claim_name).within(&ns)))
        .filter_map(|pvc| pvc.spec.as_ref().and_then(|s| s.volume_name.clone()))
        .filter_map(|pv| stores.pvs.get(&ObjectRef::new(&pv)))
        .filter_map(|pv| locality::volume_of_pv(&pv))
        .map(|(ns, name)| ObjectRef::new(&name).within(&ns))
        .collect()
}

fn attachment_to_volumes(va: &VolumeAttachment, stores: &Stores) -> Vec<ObjectRef<VirtualVolume>> {
    va.spec
        .source
        .persistent_volume_name
        .as_ref()
        .and_then(|pv| stores.pvs.get(&ObjectRef::new(pv)))
        .and_then(|pv| locality::volume_of_pv(&pv))
        .map(|(ns, name)| ObjectRef::new(&name).within(&ns))
        .into_iter()
        .collect()
}

async fn run_controllers(ctx: Arc<Context>, args: &Args) {
    let client = ctx.client.clone();
    let dc_cfg = match &args.datacenter_selector {
        Some(s) => watcher::Config::default().labels(s),
        None => watcher::Config::default(),
    };
    let (vvs, cvgs): (Api<VirtualVolume>, Api<CopyVolumeGroup>) = match &args.watch_namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };

    // DataCenters are few: any change, its status included, starts a
    // reconcile, so a status that someone else overwrote is corrected at once.
    // Their own status writes do not loop: the status is written only when it
    // changed, and jitter of the measured RTT is not a change (plan::settle_rtt).
    let dc_store = ctx.stores.data_centers.clone();
    let dcs = Controller::new(Api::<DataCenter>::all(client.clone()), dc_cfg)
        .watches(
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
            move |_node| {
                dc_store
                    .state()
                    .iter()
                    .map(|d| ObjectRef::from_obj(&**d))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(
            datacenter::reconcile::reconcile,
            datacenter::reconcile::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));

    let (s1, s2) = (ctx.stores.clone(), ctx.stores.clone());
    // Status writes of the operator's own do not start reconciles (see triggers.rs).
    let (vv_reader, vv_writer) = reflector::store();
    let vv_changes = triggers::spec_changes(
        watcher(vvs, watcher::Config::default())
            .default_backoff()
            .reflect(vv_writer),
    );
    let cvg_changes =
        triggers::spec_changes(watcher(cvgs, watcher::Config::default()).default_backoff());
    let volumes = Controller::for_stream(vv_changes, vv_reader)
        .owns_stream(cvg_changes)
        .watches(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            move |pod| pod_to_volumes(&pod, &s1),
        )
        .watches(
            Api::<VolumeAttachment>::all(client.clone()),
            watcher::Config::default(),
            move |va| attachment_to_volumes(&va, &s2),
        )
        .with_config(kube::runtime::controller::Config::default().concurrency(args.concurrency))
        .shutdown_on_signal()
        .run(
            volume::reconcile::reconcile,
            volume::reconcile::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    tracing::info!("controllers running");
    ctx.metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::join!(dcs, volumes);
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("installing the SIGTERM handler: {e:#}");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logs(&args.log_format)?;
    // kube's and tonic's TLS share one process-wide rustls provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    storage::dial_with(roam_proto::tls::Dialer::new(&args.tls).context("TLS flags")?);
    let client = client(&args).await?;
    let metrics = Arc::new(metrics::Metrics::new());
    {
        let m = metrics.clone();
        let addr = args.metrics_addr;
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(addr, m).await {
                tracing::error!(%addr, "metrics server: {e:#}");
                std::process::exit(2);
            }
        });
    }

    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "roam-operator".into());
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("{host}-{}", std::process::id()));
    let lease = leader::LeaseConfig {
        namespace: args.lease_namespace.clone(),
        name: args.lease_name.clone(),
        identity: identity.clone(),
        lease_duration: Duration::from_secs(15),
        renew_every: Duration::from_secs(2),
        renew_deadline: Duration::from_secs(8),
    };
    if !args.no_leader_election {
        tokio::select! {
            _ = leader::acquire(client.clone(), &lease) => {},
            _ = shutdown_signal() => return Ok(()),
        }
    }
    metrics.leader.set(1);

    let dc_cfg = match &args.datacenter_selector {
        Some(s) => watcher::Config::default().labels(s),
        None => watcher::Config::default(),
    };
    let stores = Stores {
        nodes: cache(Api::<Node>::all(client.clone()), watcher::Config::default()),
        data_centers: cache(Api::<DataCenter>::all(client.clone()), dc_cfg),
        pods: cache(Api::<Pod>::all(client.clone()), watcher::Config::default()),
        pvcs: cache(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            watcher::Config::default(),
        ),
        pvs: cache(
            Api::<PersistentVolume>::all(client.clone()),
            watcher::Config::default(),
        ),
        attachments: cache(
            Api::<VolumeAttachment>::all(client.clone()),
            watcher::Config::default(),
        ),
    };
    for (what, ready) in [
        ("nodes", stores.nodes.wait_until_ready().await),
        ("datacenters", stores.data_centers.wait_until_ready().await),
        ("pods", stores.pods.wait_until_ready().await),
        (
            "persistentvolumeclaims",
            stores.pvcs.wait_until_ready().await,
        ),
        ("persistentvolumes", stores.pvs.wait_until_ready().await),
        (
            "volumeattachments",
            stores.attachments.wait_until_ready().await,
        ),
    ] {
        ready.with_context(|| format!("cache of {what}"))?;
    }
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "roam-operator".into(),
            instance: Some(identity),
        },
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder,
        metrics: metrics.clone(),
        stores,
    });

    let lost = async {
        if args.no_leader_election {
            std::future::pending::<String>().await
        } else {
            leader::hold(client.clone(), &lease).await
        }
    };
    tokio::select! {
        _ = run_controllers(ctx, &args) => {
            tracing::info!("controllers stopped");
        }
        why = lost => {
            tracing::error!("lost leadership: {why}; exiting");
            std::process::exit(1);
        }
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
        }
    }
    if !args.no_leader_election {
        leader::release(client, &lease).await;
    }
    Ok(())
}
