//! `mosix-viewmount`: mounts the view of a home node at a directory and
//! serves it in the foreground, for tests and debugging. (In production
//! `remoted` mounts views itself.)

use anyhow::{Context, Result};
use clap::Parser;
use mosix_fusefs::{Creds, ViewClient};
use mosix_proto::link::ClusterKey;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Mounts a home's view at MOUNTPOINT and serves it until unmounted or
/// sent SIGINT/SIGTERM. Prints "mounted" on stdout once the view is up.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The home's homed link address (its `home_listen`).
    #[arg(long)]
    home: SocketAddr,
    /// The cluster key file.
    #[arg(long)]
    key: PathBuf,
    /// This node's name, as the home will log it.
    #[arg(long, default_value = "viewmount")]
    node: String,
    /// The user the home acts as (not 0).
    #[arg(long)]
    uid: u32,
    /// That user's primary group.
    #[arg(long)]
    gid: u32,
    /// Supplementary groups, comma-separated.
    #[arg(long, value_delimiter = ',')]
    groups: Vec<u32>,
    /// Where to mount the view (an existing directory).
    mountpoint: PathBuf,
}

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Args::parse()) {
        tracing::error!("mosix-viewmount: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    // Block the stop signals before any thread starts, so every thread
    // inherits the mask and only the wait below receives them.
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().context("cannot block SIGINT/SIGTERM")?;
    let key = ClusterKey::load(&args.key)?;
    let creds = Creds {
        uid: args.uid,
        gid: args.gid,
        groups: args.groups.clone(),
    };
    let (client, _root) = ViewClient::connect(args.home, &key, &args.node, &creds)?;
    let session =
        mosix_fusefs::spawn_mount(client.clone(), &args.home.to_string(), &args.mountpoint)
            .with_context(|| format!("cannot mount the view at {}", args.mountpoint.display()))?;
    println!("mounted");
    std::io::stdout().flush().ok();
    // Serve until told to stop. If the home goes away meanwhile, the view
    // stays mounted and answers EIO, as a body would see it.
    let signal = set.wait().context("cannot wait for SIGINT/SIGTERM")?;
    tracing::info!(?signal, mountpoint = %args.mountpoint.display(), "unmounting the view");
    client.shutdown();
    session
        .umount_and_join()
        .context("cannot unmount the view")?;
    Ok(())
}
