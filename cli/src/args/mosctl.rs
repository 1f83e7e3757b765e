//! `mosctl`'s command line (also read by `mosix-docgen` for its man page and
//! completions).

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Inspect and control the local mosix node.
///
/// Talks to the node's daemons over their Unix sockets in the configured
/// runtime directory. The configuration comes from --config, else
/// $MOSIX_CONFIG, else /etc/mosix/mosix.toml.
#[derive(Parser)]
#[command(name = "mosctl", version)]
pub struct Cli {
    /// Node configuration file.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `mosctl`'s subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// List every node this node knows: name, address, state, load, CPUs,
    /// speed, free memory and seconds since last heard.
    ///
    /// --json prints a list of objects with the keys `name`, `address`,
    /// `state` ("alive" or "dead"), `load`, `cpus`, `speed`,
    /// `free_mem_bytes`, `last_heard_s`, `accepts_guests` (false after
    /// `mosctl block`), `guests` (bodies running there) and `away` (its own
    /// processes running elsewhere); this form is a stable interface for
    /// scripts.
    Nodes {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show the local node: its entry, where its load is measured, how many
    /// nodes it knows, and whether homed answers.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Accept no new guests (root only); the guests here stay.
    Block,
    /// Accept guests again (root only).
    Unblock,
    /// Ask every guest running here to leave (root only): their homes take
    /// them back. What a workstation's owner does when they sit down.
    Expel,
    /// Show the balancer's parameters, or set some (root only) with
    /// KEY=VALUE arguments, e.g. `mosctl params margin=0.5
    /// residency_ms=2000`. All are checked before any is applied; a bad one
    /// changes nothing. The change lasts until remoted restarts (the
    /// configuration file's [balancer] section holds the lasting values).
    Params {
        /// KEY=VALUE settings.
        #[arg(value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Print JSON (a list of objects with `key`, `value`, `about`).
        #[arg(long)]
        json: bool,
    },
    /// Write a new random cluster key to FILE (mode 0600); copy the same
    /// file to every node and name it in `node.key_file`.
    Keygen {
        /// Where to write the key; must not exist yet.
        file: PathBuf,
    },
}
