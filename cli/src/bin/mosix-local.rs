//! `mosix-local`: run a mosix cluster of isolated nodes on one machine.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use mosix_cli::local::{self, layout::DEFAULT_DIR};

/// Run a mosix cluster of isolated nodes on this machine (needs root).
///
/// Each node gets its own network namespace (address 10.77.0.<i>/24 on a
/// bridge in a hub namespace), its own mount namespace (with a private
/// /run/mosix), its own cgroup limited to a share of one CPU core, and runs
/// homed and remoted there. Several clusters can run at once in different
/// directories. MOSIX_LOCAL_LOG sets this tool's log filter (default: info).
#[derive(Debug, Parser)]
#[command(name = "mosix-local", version)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create the nodes, start their daemons and wait until all see each other.
    ///
    /// Writes the cluster key, each node's config (DIR/nK/mosix.toml), logs
    /// (DIR/nK/homed.log, remoted.log) and pid files in DIR. The daemons
    /// are taken from the directory of this executable, or from
    /// $MOSIX_BIN_DIR; RUST_LOG is passed to them (default: info). On
    /// failure the cluster is left for inspection: run `down` to remove it.
    Up {
        /// Number of nodes (1 to 64), named n1, n2, ...
        #[arg(long, short = 'n', value_parser = clap::value_parser!(u32).range(1..=64))]
        nodes: u32,
        /// Cluster directory (config, key, logs, namespace pins).
        #[arg(long, short = 'd', default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// CPU limit of each node, as a fraction of one core (0.01 to 64).
        #[arg(long, default_value_t = 0.5)]
        cpu_share: f64,
        /// Seconds to wait for every node to see every other alive.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Relative CPU speed of every node (they share this machine's
        /// CPUs). Default: measured once at start by `remoted --measure-speed`.
        #[arg(long)]
        speed: Option<f64>,
        /// Give node K clocks (CLOCK_MONOTONIC and CLOCK_BOOTTIME) (K-1)
        /// times SECS ahead of this machine's, as if each node had booted
        /// at another time, to see that a body keeps its home's clocks
        /// across moves. 0: every node has the machine's clocks.
        #[arg(long, value_name = "SECS", default_value_t = 0)]
        clock_step: u32,
    },
    /// Run a command inside a node; exits with its status (128+N if killed by signal N).
    ///
    /// Exits with 125 if the command could not be started (no such
    /// cluster, node or program).
    ///
    /// The command runs in the node's network and mount namespaces and
    /// cgroups, with MOSIX_CONFIG set to the node's config and the mosix
    /// binaries first in PATH; standard streams are inherited. Example:
    /// `mosix-local exec n1 -- mosctl nodes`.
    Exec {
        /// Cluster directory.
        #[arg(long, short = 'd', default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// Node to run in: n1, n2, ...
        node: String,
        /// The command and its arguments (put them after `--`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
    /// Stop the daemons and remove the nodes; keeps configs and logs.
    ///
    /// Also cleans up after a crashed or interrupted `up`. Running it twice,
    /// or on a directory with no cluster, succeeds without doing anything.
    Down {
        /// Cluster directory.
        #[arg(long, short = 'd', default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// Stop one node's daemons, as if the machine had crashed; its
    /// namespaces, cgroups, config and logs stay for `start`.
    Stop {
        /// Cluster directory.
        #[arg(long, short = 'd', default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// Node to stop: n1, n2, ...
        node: String,
    },
    /// Start a stopped node's daemons again (reading its config anew) and
    /// wait until they answer on the node.
    Start {
        /// Cluster directory.
        #[arg(long, short = 'd', default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// Node to start: n1, n2, ...
        node: String,
    },
    /// Show the nodes, whether their namespaces exist and their daemons run.
    Status {
        /// Cluster directory.
        #[arg(long, short = 'd', default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
}

/// Exit code of `exec` when the command could not be started at all.
const EXEC_FAILED: u8 = 125;

fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Cmd::Up {
            nodes,
            dir,
            cpu_share,
            timeout,
            speed,
            clock_step,
        } => {
            local::up(&local::UpOptions {
                nodes,
                dir,
                cpu_share,
                timeout: Duration::from_secs(timeout),
                speed,
                clock_step,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Exec { dir, node, command } => match local::exec(&dir, &node, &command) {
            Ok(code) => Ok(ExitCode::from(u8::try_from(code).unwrap_or(255))),
            Err(e) => {
                // Like `env` and `docker run`: 125 means the command never ran.
                eprintln!("mosix-local: {e:#}");
                Ok(ExitCode::from(EXEC_FAILED))
            }
        },
        Cmd::Down { dir } => {
            local::down(&dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Stop { dir, node } => {
            local::stop(&dir, &node)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Start { dir, node } => {
            local::start(&dir, &node)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { dir } => {
            print!("{}", local::status(&dir)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MOSIX_LOCAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mosix-local: {e:#}");
            ExitCode::FAILURE
        }
    }
}
