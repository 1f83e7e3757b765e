//! `homed`: the home daemon of one node.

use anyhow::{Context, Result};
use clap::Parser;
use mosix_homed::args::Args;
use mosix_homed::procs::Procs;
use mosix_proto::config::Config;
use mosix_proto::daemon::{bind_unix, serve_control};
use mosix_proto::link::{ClusterKey, Hello, Link, LinkError, Role};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

fn main() {
    mosix_proto::daemon::init_logging();
    if let Err(e) = run(Args::parse()) {
        tracing::error!("homed cannot start: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let key = ClusterKey::load(&config.node.key_file)?;
    let links = TcpListener::bind(config.home_listen())
        .with_context(|| format!("cannot listen on {}", config.home_listen()))?;
    let link_config = Arc::new(config.clone());
    std::thread::Builder::new()
        .name("links".into())
        .spawn(move || serve_links(links, key, link_config))
        .context("cannot start the link thread")?;
    let engine = Arc::new(Procs::new(&config).context("cannot start the process engine")?);
    let procs = bind_unix(&config.procs_socket(), 0o666).context("homed's process socket")?;
    let serving = engine.clone();
    std::thread::Builder::new()
        .name("procs".into())
        .spawn(move || serving.serve(procs))
        .context("cannot start the process thread")?;
    let socket = config.homed_socket();
    let listener = bind_unix(&socket, 0o666).context("homed's command socket")?;
    let mut current = config.clone();
    mosix_proto::service::on_hangup(move || reload(&mut current)).context("cannot catch SIGHUP")?;
    tracing::info!(node = %config.node.name, socket = %socket.display(), "homed serving");
    mosix_proto::service::ready("serving");
    let node = config.node.name.clone();
    let remoted = config.remoted_socket();
    serve_control(listener, Duration::from_secs(10), move |creds, req| {
        mosix_homed::control::answer(&engine, &node, creds, req, &|| {
            mosix_homed::control::ask_membership(&remoted)
        })
    });
    Ok(())
}

/// SIGHUP: homed takes no setting at run time; it checks the file and
/// logs what changed, which needs a restart.
fn reload(current: &mut Config) {
    match Config::load(current.source.as_deref()) {
        Ok(new) => {
            let later = current.restart_needed(&new);
            if later.is_empty() {
                tracing::info!("configuration re-read: nothing homed uses changed");
            } else {
                tracing::warn!(changed = ?later, "configuration re-read: homed applies no setting at run time; restart it for these");
            }
            *current = new;
        }
        Err(e) => tracing::error!("configuration not re-read: {e}"),
    }
    mosix_proto::service::ready("serving");
}

/// How long a peer has to finish the handshake and each later exchange.
const LINK_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts links from other nodes' daemons; each is authenticated with the
/// cluster key and then served in a thread of its own.
fn serve_links(listener: TcpListener, key: ClusterKey, config: Arc<Config>) {
    let key = Arc::new(key);
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept on link port failed");
                continue;
            }
        };
        let key = key.clone();
        let config = config.clone();
        std::thread::spawn(move || serve_link(stream, &key, &config));
    }
}

fn serve_link(stream: TcpStream, key: &ClusterKey, config: &Config) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let _ = stream.set_read_timeout(Some(LINK_TIMEOUT));
    let _ = stream.set_write_timeout(Some(LINK_TIMEOUT));
    let hello = Hello::new(config.node.name.clone(), Role::Homed);
    let (link, peer_hello) = match Link::accept(stream, key, hello) {
        Ok(l) => l,
        Err(LinkError::AuthFailed) => {
            tracing::warn!(%peer, "link refused: authentication failed (another cluster key, or a replayed handshake)");
            return;
        }
        Err(e) => {
            tracing::warn!(%peer, error = %e, "link refused");
            return;
        }
    };
    tracing::debug!(%peer, node = %peer_hello.node, "link up");
    mosix_homed::view::serve_link(link, &peer_hello, config);
}
