//! `remoted`: the remote daemon of one node.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Parser;
use mosix_proto::config::Config;
use mosix_proto::control::{ControlRequest, ControlResponse};
use mosix_proto::daemon::{bind_unix, serve_control};
use mosix_proto::link::ClusterKey;
use mosix_proto::msg::LoadEntry;
use mosix_remoted::balancer::{Dissemination, DisseminationParams};
use mosix_remoted::measure::LoadSource;
use mosix_remoted::net::EventLoop;
use mosix_remoted::node::{LocalNode, Snapshot};

/// The mosix remote daemon: this node's face to the cluster.
///
/// It measures the node's load and capacity (from a cgroup when
/// `load.cgroup` is set, else from the machine), exchanges load information
/// with the other nodes over authenticated, encrypted links, and answers
/// `mosctl` on `<runtime_dir>/remoted.sock`. Run one per node, as root,
/// beside `homed`. Logs go to stderr; set RUST_LOG (default `info`).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Node configuration file (default: $MOSIX_CONFIG, else
    /// /etc/mosix/mosix.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Measure this machine's relative CPU speed (1.0 = reference core),
    /// print it and exit; needs no configuration.
    #[arg(long)]
    measure_speed: bool,
}

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
    if let Err(e) =
        mosix_remoted::host::start(config.node.listen, config.node.name.clone(), key.clone())
    {
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
    };
    let b = &config.balancer;
    let params = DisseminationParams {
        interval_ms: b.info_interval_ms,
        window_size: b.window,
        suspect_after_ms: b.suspect_after_ms,
        dead_after_ms: b.dead_after_ms,
        forget_after_ms: b.forget_after_ms,
        ..DisseminationParams::default()
    };
    let mut diss = Dissemination::new(params, me.clone(), config.node.seeds.clone(), generation)
        .context("bad balancer parameters")?;

    let tick = Duration::from_millis(config.load.tick_ms);
    let mut event_loop = EventLoop::new(config.node.listen, key, &config.node.name, tick)
        .with_context(|| format!("cannot listen on {}", config.node.listen))?;

    let snapshot = Arc::new(Mutex::new(Snapshot::default()));
    let mut node = LocalNode::new(me, source, speed, snapshot.clone())?;
    node.publish_now(event_loop.now_ms(), &diss);

    let socket = config.remoted_socket();
    let listener = bind_unix(&socket, 0o666).context("remoted's command socket")?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            serve_control(listener, Duration::from_secs(10), move |_creds, req| {
                answer(&snapshot, req)
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
    event_loop
        .run(&mut diss, &mut node)
        .context("event loop failed")?;
    Ok(())
}

/// Answers `mosctl` from the latest snapshot the loop published.
fn answer(snapshot: &Mutex<Snapshot>, req: ControlRequest) -> ControlResponse {
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
    }
}
