//! `remoted`: the remote daemon of one node.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Parser;
use mosix_proto::config::Config;
use mosix_proto::control::{ControlRequest, ControlResponse, ParamRow};
use mosix_proto::daemon::{bind_unix, serve_control};
use mosix_proto::link::ClusterKey;
use mosix_proto::local::Credentials;
use mosix_proto::msg::LoadEntry;
use mosix_remoted::args::Args;
use mosix_remoted::host::guests;
use mosix_remoted::measure::LoadSource;
use mosix_remoted::net::EventLoop;
use mosix_remoted::node::{LocalNode, Shared, Snapshot};
use mosix_remoted::policy::{Dissemination, DisseminationParams, params};

fn main() {
    let args = Args::parse();
    if args.measure_speed {
        // The best of several rounds, as at start; more of them, since this
        // figure is then given to many nodes.
        let speed = (0..5)
            .map(|_| mosix_remoted::measure::measure_speed())
            .fold(0.0, f64::max);
        println!("{speed:.3}");
        return;
    }
    mosix_proto::daemon::init_logging();
    if let Err(e) = run(args) {
        tracing::error!("remoted stopped: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let key = ClusterKey::load(&config.node.key_file)?;
    // Without a body host this node still balances; it just accepts no bodies.
    if let Err(e) = mosix_remoted::host::start(
        config.node.listen,
        config.node.name.clone(),
        key.clone(),
        std::time::Duration::from_secs(config.process.home_grace_s),
    ) {
        tracing::warn!("this node will not host migrated processes: {e}");
    }
    let source = LoadSource::detect(config.load.cgroup.clone())
        .context("cannot measure this node's load")?;
    let speed = match config.load.speed {
        Some(s) => s,
        None => mosix_remoted::measure::measure_speed(),
    };
    let generation = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(1);
    let me = LoadEntry {
        name: config.node.name.clone(),
        address: config.advertised(),
        generation,
        age_ms: 0,
        load: 0.0,
        cpus: source.capacity_cpus()?,
        speed,
        free_mem_bytes: source.free_memory_bytes()?,
        accepts_guests: true,
        guests: 0,
        away: 0,
    };
    let diss_params = DisseminationParams::from_config(&config.balancer);
    let mut diss = Dissemination::new(
        diss_params,
        me.clone(),
        config.node.seeds.clone(),
        generation,
    )
    .context("bad balancer parameters")?;

    let tick = Duration::from_millis(config.load.tick_ms);
    let metrics = Arc::new(mosix_remoted::metrics::Metrics::new());
    let mut event_loop = EventLoop::new(config.node.listen, key, &config.node.name, tick)
        .with_context(|| format!("cannot listen on {}", config.node.listen))?
        .with_metrics(metrics.clone());

    params::validate(&config.balancer).context("bad balancer parameters")?;
    let shared = Shared::new(config.balancer.clone());
    let snapshot = Arc::new(Mutex::new(Snapshot::default()));
    let mut node =
        LocalNode::new(me, source, speed, snapshot.clone())?.with_balance(shared.clone());
    node.publish_now(event_loop.now_ms(), &diss);
    mosix_remoted::balancing::spawn(
        config.node.name.clone(),
        config.homed_socket(),
        snapshot.clone(),
        shared.clone(),
        generation,
    )
    .context("cannot start the balancer thread")?;

    if let Some(listen) = config.metrics.listen {
        mosix_remoted::metrics::spawn(
            listen,
            metrics,
            snapshot.clone(),
            config.homed_socket(),
            config.node.name.clone(),
        )
        .with_context(|| format!("cannot serve metrics on {listen}"))?;
        tracing::info!(%listen, "metrics served at /metrics");
    }
    let reloaded = shared.clone();
    let mut current = config.clone();
    mosix_proto::service::on_hangup(move || reload(&mut current, &reloaded))
        .context("cannot catch SIGHUP")?;

    let socket = config.remoted_socket();
    let listener = bind_unix(&socket, 0o666).context("remoted's command socket")?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            serve_control(listener, Duration::from_secs(10), move |creds, req| {
                answer(&snapshot, &shared, creds, req)
            })
        })
        .context("cannot start the control thread")?;

    tracing::info!(
        node = %config.node.name,
        listen = %config.node.listen,
        seeds = config.node.seeds.len(),
        load_source = %node.source_name(),
        speed,
        "remoted serving"
    );
    mosix_proto::service::ready("serving");
    event_loop
        .run(&mut diss, &mut node)
        .context("event loop failed")?;
    Ok(())
}

/// SIGHUP: re-reads the configuration file, puts the balancer's run-time
/// parameters in force (as `mosctl params` would) and logs what else
/// changed, which needs a restart.
fn reload(current: &mut Config, shared: &Shared) {
    let new = match Config::load(current.source.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("configuration not reloaded, nothing changed: {e}");
            mosix_proto::service::ready("serving (last reload failed)");
            return;
        }
    };
    match shared.replace(new.balancer.clone()) {
        Ok(changed) => tracing::info!(
            ?changed,
            "configuration reloaded: balancer parameters in force"
        ),
        Err(e) => tracing::error!("balancer parameters not reloaded, nothing changed: {e}"),
    }
    let later = current.restart_needed(&new);
    if !later.is_empty() {
        tracing::warn!(changed = ?later, "these settings changed but take effect only when remoted restarts");
    }
    *current = new;
    mosix_proto::service::ready("serving");
}

/// Answers `mosctl`: queries from the latest snapshot the loop published,
/// commands (root only) on the balancer's shared state.
fn answer(
    snapshot: &Mutex<Snapshot>,
    shared: &Shared,
    creds: &Credentials,
    req: ControlRequest,
) -> ControlResponse {
    let root_only = |what: &str| ControlResponse::Error {
        message: format!(
            "permission denied: only root may {what} (you are uid {}); run it with sudo",
            creds.uid
        ),
    };
    let snap = match snapshot.lock() {
        Ok(s) => s.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    match req {
        ControlRequest::Nodes => ControlResponse::Nodes { nodes: snap.nodes },
        ControlRequest::Status => match snap.status {
            Some(status) => ControlResponse::Status { status },
            None => ControlResponse::Error {
                message: "remoted is still starting; try again".into(),
            },
        },
        ControlRequest::HomeStatus | ControlRequest::Process { .. } => ControlResponse::Error {
            message: "processes are homed's business: this is remoted's socket".into(),
        },
        ControlRequest::Block | ControlRequest::Unblock if creds.uid != 0 => {
            root_only("block or unblock the node")
        }
        ControlRequest::Block => {
            guests::set_accepting(false);
            tracing::info!(uid = creds.uid, "blocked: accepting no new guests");
            ControlResponse::Done {
                message: "this node accepts no new guests; the guests here stay (mosctl expel                           sends them away)"
                    .into(),
            }
        }
        ControlRequest::Unblock => {
            guests::set_accepting(true);
            tracing::info!(uid = creds.uid, "unblocked: accepting guests");
            ControlResponse::Done {
                message: "this node accepts guests again".into(),
            }
        }
        ControlRequest::Expel if creds.uid != 0 => root_only("expel the guests"),
        ControlRequest::Expel => {
            let list = guests::list();
            let asked = list
                .iter()
                .filter(|g| {
                    guests::ask_to_leave(g.body_pid, mosix_proto::reason::LeaveReason::Expelled)
                })
                .count();
            tracing::info!(uid = creds.uid, guests = list.len(), asked, "expel");
            ControlResponse::Done {
                message: format!(
                    "asked {asked} guest(s) of {} to leave; their homes take them back",
                    list.len()
                ),
            }
        }
        ControlRequest::Params { set } if !set.is_empty() && creds.uid != 0 => {
            root_only("change the balancer's parameters")
        }
        ControlRequest::Params { set } => {
            let t = if set.is_empty() {
                shared.params()
            } else {
                match shared.set(&set) {
                    Ok(t) => {
                        tracing::info!(uid = creds.uid, ?set, "balancer parameters changed");
                        t
                    }
                    Err(e) => {
                        return ControlResponse::Error {
                            message: format!("nothing changed: {e}"),
                        };
                    }
                }
            };
            ControlResponse::Params {
                params: params::rows(&t)
                    .into_iter()
                    .map(|(key, value, about)| ParamRow { key, value, about })
                    .collect(),
            }
        }
    }
}
