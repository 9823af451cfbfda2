//! `kubectl roam`: the kubectl plugin for Roam. Reads and writes only the
//! Kubernetes API (Roam's directory), so it works on any cluster a
//! kubeconfig names, with no storage-system certificates.
//!
//! - `status`: members, roles, states and lag of volumes, in human units;
//! - `relocate`: a planned move of the primary, waited for;
//! - `promote`: a manual failover, refused when it may lose writes unless
//!   `--accept-loss`;
//! - `cordon` / `uncordon`: drain a data center of primaries, or let it
//!   hold them again;
//! - `dump`: a support bundle (objects, Events, logs) as one tarball.

mod change;
mod cordon;
mod dump;
mod error;
mod target;
mod units;
mod view;

use std::{io::Write, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use kube::{
    Api, Client, Config, ResourceExt,
    config::{KubeConfigOptions, Kubeconfig},
};
use roam_crds::{CopyVolumeGroup, DataCenter, VirtualVolume};
use serde::Serialize;

use crate::{
    change::{Decision, Loss},
    error::{Error, api},
    target::{Target, VolumeRef},
};

#[derive(Parser)]
#[command(
    name = "kubectl-roam",
    bin_name = "kubectl roam",
    version,
    about = "Inspect and move Roam volumes.",
    long_about = "Inspect and move Roam volumes: the replicas of each VirtualVolume, which \
                  data center is primary, how far the secondaries lag, and planned or forced \
                  changes of primary.",
    after_help = "Examples:\n  \
        # Show every Roam volume in the current namespace\n  \
        kubectl roam status\n\n  \
        # Show the volume a pod uses\n  \
        kubectl roam status pod/web-0\n\n  \
        # Move the primary of volume db to data center dc-b\n  \
        kubectl roam relocate db --to dc-b\n\n  \
        # Fail over to dc-c after the primary's data center was lost\n  \
        kubectl roam promote db --to dc-c --accept-loss\n\n  \
        # Drain data center dc-a of primaries before maintenance\n  \
        kubectl roam cordon dc-a\n\n  \
        # Collect a support bundle\n  \
        kubectl roam dump -f roam-dump.tar.gz"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// Path to the kubeconfig file to use for CLI requests (without it, the
    /// files KUBECONFIG lists, merged as kubectl does, or ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<std::path::PathBuf>,
    /// The name of the kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// If present, the namespace scope for this CLI request.
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// Output format. One of: (table, json, yaml).
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum Command {
    /// Show members, roles, states, lag, epoch and the last changes of primary.
    #[command(
        override_usage = "kubectl roam status [VV | pvc/NAME | pod/NAME] [options]",
        after_help = "Examples:\n  \
            # Every volume in the current namespace, one line each\n  \
            kubectl roam status\n\n  \
            # One volume in full\n  \
            kubectl roam status db\n\n  \
            # The volume behind a claim, as JSON\n  \
            kubectl roam status pvc/data -o json"
    )]
    Status {
        /// A VirtualVolume name, pvc/NAME or pod/NAME; all volumes when omitted.
        target: Option<String>,
        /// List the volumes of every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Move the primary to another data center (planned: nothing is lost).
    #[command(
        override_usage = "kubectl roam relocate VV --to DC [options]",
        after_help = "The current primary flushes (Sync) or drains (Async) before it hands over.\n\
            A volume in use follows its pod: move the pod instead.\n\n\
            Examples:\n  \
            kubectl roam relocate db --to dc-b"
    )]
    Relocate {
        /// The VirtualVolume (or pvc/NAME).
        volume: String,
        /// Data center whose replica becomes primary.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Promote a secondary after its primary was lost (manual failover).
    #[command(
        override_usage = "kubectl roam promote VV --to DC [--accept-loss] [options]",
        after_help = "Prints what the promotion may lose (an Async secondary's last reported lag).\n\
            When that is not 0, or not known, it refuses unless --accept-loss is given.\n\n\
            Examples:\n  \
            kubectl roam promote db --to dc-c\n  \
            kubectl roam promote db --to dc-c --accept-loss"
    )]
    Promote {
        /// The VirtualVolume (or pvc/NAME).
        volume: String,
        /// Data center whose replica becomes primary.
        #[arg(long)]
        to: String,
        /// Promote even though acknowledged writes may be lost.
        #[arg(long)]
        accept_loss: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Move every primary out of a data center and keep new ones out.
    #[command(
        override_usage = "kubectl roam cordon DC [--timeout 5m] [options]",
        after_help = "Primaries move by planned relocation (nothing is lost). A volume attached\n\
            to a node keeps its primary until its pod stops; the wait ends when only\n\
            those are left. --timeout 0 returns at once.\n\n\
            Examples:\n  \
            kubectl roam cordon dc-a\n  \
            kubectl roam cordon dc-a --timeout 0"
    )]
    Cordon {
        /// The DataCenter.
        data_center: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Let a cordoned data center hold primaries again.
    #[command(
        override_usage = "kubectl roam uncordon DC [options]",
        after_help = "Primaries do not move back by themselves; a pod there brings its own back.\n\n\
            Examples:\n  \
            kubectl roam uncordon dc-a"
    )]
    Uncordon {
        /// The DataCenter.
        data_center: String,
    },
    /// Write a support bundle: Roam's objects, Events and the logs of its pods.
    #[command(
        override_usage = "kubectl roam dump [-f FILE] [options]",
        after_help = "Examples:\n  \
            kubectl roam dump\n  \
            kubectl roam dump --roam-namespace roam -f - > bundle.tar.gz"
    )]
    Dump {
        /// Where to write the tarball ("-" for standard output).
        #[arg(short = 'f', long, default_value = "roam-dump.tar.gz")]
        file: String,
        /// Namespace Roam's components run in.
        #[arg(long, default_value = "roam-system")]
        roam_namespace: String,
        /// Log lines per container.
        #[arg(long, default_value_t = 2000)]
        tail: i64,
    },
}

#[derive(Args)]
struct WaitArgs {
    /// How long to wait for the new primary, e.g. 90s, 5m (0: do not wait).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    timeout: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .map(|n| Duration::from_secs(n * mult))
        .map_err(|_| format!("{s:?} is not a duration such as 90s, 5m or 1h"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Several rustls crypto providers are linked (kube's, tonic's); name one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}

async fn connect(g: &Global) -> Result<(Client, String), Error> {
    let opts = KubeConfigOptions {
        context: g.context.clone(),
        ..Default::default()
    };
    let config = match &g.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(Error::Kubeconfig)?;
            Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(Error::Kubeconfig)?
        }
        None => match Config::from_kubeconfig(&opts).await {
            Ok(c) => c,
            Err(e) => Config::incluster().map_err(|_| Error::Kubeconfig(e))?,
        },
    };
    let ns = g
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(Error::Client)?;
    Ok((client, ns))
}

fn print<T: Serialize>(
    output: Output,
    value: &T,
    table: impl FnOnce() -> String,
) -> Result<(), Error> {
    let text = match output {
        Output::Table => table(),
        Output::Json => {
            let mut s =
                serde_json::to_string_pretty(value).map_err(|e| Error::Encode(e.to_string()))?;
            s.push('\n');
            s
        }
        Output::Yaml => serde_yaml::to_string(value).map_err(|e| Error::Encode(e.to_string()))?,
    };
    print!("{text}");
    Ok(())
}

async fn run(cli: Cli) -> Result<(), Error> {
    let (client, ns) = connect(&cli.global).await?;
    let out = cli.global.output;
    match cli.command {
        Command::Status {
            target,
            all_namespaces,
        } => status(&client, &ns, target, all_namespaces, out).await,
        Command::Relocate { volume, to, wait } => {
            relocate_or_promote(&client, &ns, &volume, &to, None, wait.timeout, out).await
        }
        Command::Promote {
            volume,
            to,
            accept_loss,
            wait,
        } => {
            relocate_or_promote(
                &client,
                &ns,
                &volume,
                &to,
                Some(accept_loss),
                wait.timeout,
                out,
            )
            .await
        }
        Command::Cordon { data_center, wait } => {
            let drain = cordon::set(&client, &data_center, true, wait.timeout).await?;
            print(out, &drain, || drain.table())
        }
        Command::Uncordon { data_center } => {
            let drain = cordon::set(&client, &data_center, false, Duration::ZERO).await?;
            print(out, &drain, || drain.table())
        }
        Command::Dump {
            file,
            roam_namespace,
            tail,
        } => {
            let bytes = dump::collect(
                &client,
                &dump::DumpOptions {
                    roam_namespace,
                    tail,
                },
            )
            .await?;
            let io = |source| Error::Write {
                path: file.clone(),
                source,
            };
            if file == "-" {
                std::io::stdout().write_all(&bytes).map_err(io)?;
            } else {
                std::fs::write(&file, &bytes).map_err(io)?;
                eprintln!("wrote {file} ({})", units::bytes(bytes.len() as u64));
            }
            Ok(())
        }
    }
}

async fn load(
    client: &Client,
    r: &VolumeRef,
) -> Result<(VirtualVolume, Option<CopyVolumeGroup>), Error> {
    let vv = Api::<VirtualVolume>::namespaced(client.clone(), &r.namespace)
        .get(&r.name)
        .await
        .map_err(api("get", "VirtualVolume", &r.namespace, &r.name))?;
    let group_name = vv
        .status
        .as_ref()
        .and_then(|s| s.group.clone())
        .unwrap_or_else(|| r.name.clone());
    let g = Api::<CopyVolumeGroup>::namespaced(client.clone(), &r.namespace)
        .get_opt(&group_name)
        .await
        .map_err(api("get", "CopyVolumeGroup", &r.namespace, &group_name))?;
    Ok((vv, g))
}

async fn status(
    client: &Client,
    ns: &str,
    target: Option<String>,
    all: bool,
    out: Output,
) -> Result<(), Error> {
    match target {
        Some(t) => {
            let t: Target = t.parse()?;
            let mut views = vec![];
            for r in target::resolve(client, ns, &t).await? {
                let (vv, g) = load(client, &r).await?;
                views.push(view::build(&vv, g.as_ref()));
            }
            if let [one] = views.as_slice() {
                print(out, one, || view::describe(one))
            } else {
                print(out, &views, || {
                    views
                        .iter()
                        .map(view::describe)
                        .collect::<Vec<_>>()
                        .join("\n")
                })
            }
        }
        None => {
            let (vvs, gs) = if all {
                (
                    Api::<VirtualVolume>::all(client.clone()),
                    Api::<CopyVolumeGroup>::all(client.clone()),
                )
            } else {
                (
                    Api::<VirtualVolume>::namespaced(client.clone(), ns),
                    Api::<CopyVolumeGroup>::namespaced(client.clone(), ns),
                )
            };
            let vvs = vvs.list(&Default::default()).await.map_err(api(
                "list",
                "VirtualVolume",
                ns,
                "",
            ))?;
            let gs = gs.list(&Default::default()).await.map_err(api(
                "list",
                "CopyVolumeGroup",
                ns,
                "",
            ))?;
            let views: Vec<view::VolumeView> = vvs
                .items
                .iter()
                .map(|v| {
                    let g = gs.items.iter().find(|g| {
                        g.namespace() == v.namespace()
                            && Some(g.name_any())
                                == v.status
                                    .as_ref()
                                    .and_then(|s| s.group.clone())
                                    .or_else(|| Some(v.name_any()))
                    });
                    view::build(v, g)
                })
                .collect();
            if views.is_empty() && out == Output::Table {
                eprintln!(
                    "No Roam volumes found in {} namespace.",
                    if all { "any" } else { ns }
                );
                return Ok(());
            }
            print(out, &views, || view::list(&views))
        }
    }
}

/// What `relocate` and `promote` print.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Outcome {
    volume: String,
    from: Option<String>,
    to: String,
    epoch: u64,
    /// What the promotion may have lost (promote only).
    #[serde(skip_serializing_if = "Option::is_none")]
    possible_loss: Option<String>,
    /// Time from the request to the new primary confirming, as waited here.
    waited_millis: Option<u64>,
    /// The operator's own measure of the move (`lastRelocation.durationMillis`).
    duration_millis: Option<u64>,
}

async fn relocate_or_promote(
    client: &Client,
    ns: &str,
    volume: &str,
    to: &str,
    accept_loss: Option<bool>,
    timeout: Duration,
    out: Output,
) -> Result<(), Error> {
    let t: Target = volume.parse()?;
    if matches!(t, Target::Pod(_)) {
        return Err(Error::BadTarget(volume.into()));
    }
    let r = target::resolve(client, ns, &t)
        .await?
        .pop()
        .ok_or_else(|| Error::BadTarget(volume.into()))?;
    let (vv, g) = load(client, &r).await?;
    let dcs = Api::<DataCenter>::all(client.clone())
        .list(&Default::default())
        .await
        .map_err(api("list", "DataCenter", "", ""))?
        .items;
    let (decision, loss) = match accept_loss {
        None => (change::plan_relocate(&vv, g.as_ref(), to, &dcs)?, None),
        Some(accept) => {
            if let Some(g) = &g
                && out == Output::Table
            {
                eprintln!("possible loss: {}", change::possible_loss(g, to));
            }
            let (d, l) = change::plan_promote(&vv, g.as_ref(), to, accept)?;
            (d, Some(l))
        }
    };
    // plan_* refuse a volume without a group; this only satisfies the types.
    let Some(g) = g else {
        return Err(Error::NoGroup {
            volume: format!("{}/{}", r.namespace, r.name),
            phase: "Pending".into(),
        });
    };
    let name = format!("{}/{}", r.namespace, r.name);
    let from = g.status.as_ref().and_then(|s| s.primary.clone());
    let groups = Api::<CopyVolumeGroup>::namespaced(client.clone(), &r.namespace);
    let epoch = match decision {
        Decision::AlreadyPrimary => {
            let epoch = g.status.as_ref().map_or(0, |s| s.epoch);
            let o = Outcome {
                volume: name.clone(),
                from: from.clone(),
                to: to.into(),
                epoch,
                possible_loss: loss.as_ref().map(Loss::to_string),
                waited_millis: Some(0),
                duration_millis: None,
            };
            return print(out, &o, || {
                format!("volume {name}: {to} is primary already (epoch {epoch})\n")
            });
        }
        Decision::Pending { epoch } => epoch,
        Decision::Write(intent) => {
            change::write_intent(&groups, &g, &intent).await?;
            intent.epoch
        }
    };
    if timeout.is_zero() {
        let o = Outcome {
            volume: name.clone(),
            from,
            to: to.into(),
            epoch,
            possible_loss: loss.as_ref().map(Loss::to_string),
            waited_millis: None,
            duration_millis: None,
        };
        return print(out, &o, || {
            format!("volume {name}: asked for {to} as primary at epoch {epoch}\n")
        });
    }
    let (waited, g) = change::wait_primary(&groups, &g.name_any(), to, epoch, timeout).await?;
    let status = g.status.unwrap_or_default();
    let duration = status
        .last_relocation
        .as_ref()
        .filter(|r| r.to == to && r.epoch == status.epoch)
        .map(|r| r.duration_millis);
    let o = Outcome {
        volume: name.clone(),
        from: from.clone(),
        to: to.into(),
        epoch: status.epoch,
        possible_loss: loss.as_ref().map(Loss::to_string),
        waited_millis: Some(waited.as_millis() as u64),
        duration_millis: duration,
    };
    print(out, &o, || {
        let verb = if accept_loss.is_some() {
            "promoted"
        } else {
            "moved"
        };
        let mut s = format!(
            "volume {name}: primary {verb} from {} to {to} at epoch {} in {}",
            from.as_deref().unwrap_or("<none>"),
            status.epoch,
            units::seconds(waited.as_secs_f64())
        );
        if let Some(l) = &loss {
            s.push_str(&format!("; possible loss: {l}"));
        }
        s.push('\n');
        s
    })
}
