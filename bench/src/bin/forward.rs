//! Forwarded-call benchmark (ARCHITECTURE.md section 10, issue 4): the round
//! trip of `getppid()` from a body at n2, which libmosix forwards to the
//! deputy at n1 (body -> its host -> link -> homed -> deputy and back),
//! beside a raw TCP round trip (1 byte each way, TCP_NODELAY) between the
//! same two isolated nodes in the same run, and beside the same call at
//! home (answered by the kernel). Median and 99th percentile over
//! `--calls` calls each, and their ratios.
//!
//! Needs root, a C compiler, and the workspace's binaries beside this one
//! (`cargo build --release --workspace`). The TCP ends run inside the
//! nodes through hidden subcommands of this same binary.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Output, Stdio};
use std::time::{Duration, Instant};

/// Round trip of a forwarded call against raw TCP between two nodes.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// Calls (and TCP round trips) measured.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// CPU share of each node, in cores (`mosix-local up --cpu-share`).
    #[arg(long, default_value_t = 1.0)]
    cpu_share: f64,
    /// Where to make the cluster's directory (default: the temporary
    /// directory); removed at the end unless the run failed.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Helpers run inside the nodes by the benchmark itself.
    #[command(subcommand)]
    helper: Option<Helper>,
}

/// The parts that run inside a node.
#[derive(Subcommand, Debug)]
enum Helper {
    /// Accept one TCP connection and echo every byte back until EOF.
    /// Prints `port N` once listening.
    #[command(hide = true)]
    TcpEcho,
    /// Connect to ADDR and time COUNT 1-byte round trips; prints one
    /// line of nanoseconds per round trip.
    #[command(hide = true)]
    TcpPing {
        /// host:port of the echo.
        addr: String,
        /// How many round trips.
        count: usize,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let r = match args.helper {
        Some(Helper::TcpEcho) => tcp_echo(),
        Some(Helper::TcpPing { ref addr, count }) => tcp_ping(addr, count),
        None => bench(&args),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("forward: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn tcp_echo() -> Result<()> {
    let l = TcpListener::bind("0.0.0.0:0").context("bind a TCP port")?;
    println!("port {}", l.local_addr()?.port());
    std::io::stdout().flush()?;
    let (mut conn, _) = l.accept().context("accept the pinger")?;
    conn.set_nodelay(true)?;
    let mut b = [0u8; 1];
    loop {
        match conn.read(&mut b)? {
            0 => return Ok(()),
            _ => conn.write_all(&b)?,
        }
    }
}

fn tcp_ping(addr: &str, count: usize) -> Result<()> {
    let mut conn = TcpStream::connect(addr).with_context(|| format!("connect to {addr}"))?;
    conn.set_nodelay(true)?;
    let mut out = String::new();
    let mut b = [0u8; 1];
    for _ in 0..count {
        let t = Instant::now();
        conn.write_all(b"x")?;
        conn.read_exact(&mut b)?;
        out.push_str(&format!("{}\n", t.elapsed().as_nanos()));
    }
    print!("{out}");
    Ok(())
}

/// The cluster; taken down when dropped.
struct Cluster {
    local: PathBuf,
    dir: PathBuf,
    ok: bool,
}

impl Cluster {
    fn cmd(&self, node: &str, argv: &[&str]) -> Command {
        let mut c = Command::new(&self.local);
        c.args(["exec", "--dir"])
            .arg(&self.dir)
            .arg(node)
            .arg("--")
            .args(argv)
            .env("MOSIX_LOCAL_LOG", "warn")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, node: &str, argv: &[&str]) -> Result<Output> {
        let out = self
            .cmd(node, argv)
            .output()
            .with_context(|| format!("run mosix-local exec {node}"))?;
        if !out.status.success() {
            bail!(
                "{} at {node} failed ({}): {}",
                argv.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let down = Command::new(&self.local)
            .args(["down", "--dir"])
            .arg(&self.dir)
            .env("MOSIX_LOCAL_LOG", "warn")
            .output();
        match down {
            Ok(o) if o.status.success() && self.ok => {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
            Ok(o) if o.status.success() => {
                eprintln!("forward: the cluster's logs are in {}", self.dir.display())
            }
            _ => eprintln!(
                "forward: mosix-local down --dir {} failed; run it again by hand",
                self.dir.display()
            ),
        }
    }
}

/// Median and 99th percentile of `v` (not empty), in microseconds.
fn median_p99_us(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let p99 = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
    (v[v.len() / 2] / 1000.0, v[p99] / 1000.0)
}

/// Nanosecond lines of a helper's or ppidloop's output.
fn ns_lines(text: &str) -> Vec<f64> {
    text.lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .collect()
}

fn build_ppidloop(dir: &Path) -> Result<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/c/ppidloop.c");
    let exe = dir.join("ppidloop");
    let out = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .context("cannot run cc: install a C compiler (gcc)")?;
    if !out.status.success() {
        bail!(
            "cc {}: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    exe.to_str()
        .map(str::to_owned)
        .context("the cluster directory is not UTF-8")
}

/// Run ppidloop under mosrun at n1, moved to `node` first if given; its
/// reported parent and round trips (ns).
fn ppid_calls(
    c: &Cluster,
    prog: &str,
    calls: usize,
    node: Option<&str>,
) -> Result<(i32, Vec<f64>)> {
    let calls_s = calls.to_string();
    let mut child: Child = c
        .cmd("n1", &["mosrun", "-L", "--", prog, &calls_s])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start ppidloop")?;
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?);
    let mut first = String::new();
    lines.read_line(&mut first)?;
    let pid: i32 = first
        .strip_prefix("ready ")
        .and_then(|p| p.trim().parse().ok())
        .with_context(|| format!("ppidloop printed {first:?} instead of \"ready PID\""))?;
    let pid_s = pid.to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = c.run("n1", &["mosps", "--json"])?;
        let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
        if list.iter().any(|p| p["pid"] == pid) {
            break;
        }
        if Instant::now() > deadline {
            bail!("homed never listed ppidloop ({pid})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(n) = node {
        c.run("n1", &["mosmigrate", &pid_s, n])?;
    }
    c.run("n1", &["kill", "-USR1", &pid_s])?;
    let mut rest = String::new();
    lines.read_to_string(&mut rest)?;
    let st = child.wait()?;
    if !st.success() {
        bail!("ppidloop ended with {st}");
    }
    let ppid = rest
        .lines()
        .find_map(|l| l.strip_prefix("ppid ")?.trim().parse().ok())
        .context("ppidloop printed no ppid")?;
    Ok((ppid, ns_lines(&rest)))
}

fn bench(args: &Args) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("this benchmark needs root (namespaces and cgroups): run it as root");
    }
    let me = std::env::current_exe()?;
    let bin = me.parent().context("no binary directory")?;
    let local = bin.join("mosix-local");
    if !local.exists() {
        bail!(
            "{} is missing: cargo build --release --workspace",
            local.display()
        );
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("mosix-bench-forward-{}", std::process::id()));
    let up = Command::new(&local)
        .args(["up", "--dir"])
        .arg(&dir)
        .args(["--nodes", "2", "--cpu-share", &args.cpu_share.to_string()])
        .env("MOSIX_BIN_DIR", bin)
        .env("MOSIX_LOCAL_LOG", "warn")
        .output()
        .context("run mosix-local up")?;
    let mut c = Cluster {
        local,
        dir: dir.clone(),
        ok: false,
    };
    if !up.status.success() {
        bail!("mosix-local up: {}", String::from_utf8_lossy(&up.stderr));
    }
    for n in ["n1", "n2"] {
        c.run(n, &["mosctl", "params", "auto_migrate=false"])?;
    }
    let prog = build_ppidloop(&dir)?;
    let me_s = me.to_str().context("binary path is not UTF-8")?;
    // Raw TCP between the same two namespaces: n2 pings n1.
    let mut echo = c
        .cmd("n1", &[me_s, "tcp-echo"])
        .stdout(Stdio::piped())
        .spawn()
        .context("start the TCP echo")?;
    let mut port_line = String::new();
    BufReader::new(echo.stdout.take().context("no stdout")?).read_line(&mut port_line)?;
    let port = port_line
        .strip_prefix("port ")
        .and_then(|p| p.trim().parse::<u16>().ok())
        .with_context(|| format!("tcp-echo printed {port_line:?}"))?;
    let ping = c.run(
        "n2",
        // n1 is 10.77.0.1 in every mosix-local cluster.
        &[
            me_s,
            "tcp-ping",
            &format!("10.77.0.1:{port}"),
            &args.calls.to_string(),
        ],
    )?;
    let _ = echo.wait();
    let tcp = ns_lines(&String::from_utf8_lossy(&ping.stdout));
    let (home_ppid_local, local_calls) = ppid_calls(&c, &prog, args.calls, None)?;
    let (home_ppid_away, away_calls) = ppid_calls(&c, &prog, args.calls, Some("n2"))?;
    if home_ppid_away <= 1 {
        bail!("the body at n2 reported getppid {home_ppid_away}");
    }
    let (tm, tp) = median_p99_us(tcp);
    let (lm, lp) = median_p99_us(local_calls);
    let (am, ap) = median_p99_us(away_calls);
    println!(
        "forwarded getppid() round trip, {} calls each, n2 -> n1",
        args.calls
    );
    println!("{:<34} {:>12} {:>12}", "path", "median us", "p99 us");
    println!(
        "{:<34} {:>12.1} {:>12.1}",
        "getppid at home (kernel)", lm, lp
    );
    println!(
        "{:<34} {:>12.1} {:>12.1}",
        "raw TCP 1-byte round trip", tm, tp
    );
    println!(
        "{:<34} {:>12.1} {:>12.1}",
        "getppid in a body at n2", am, ap
    );
    println!(
        "forwarded call / raw TCP: median {:.1}x, p99 {:.1}x",
        am / tm,
        ap / tp
    );
    println!("(parent seen at home {home_ppid_local}, from the body {home_ppid_away})");
    c.ok = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p99_in_microseconds() {
        let v: Vec<f64> = (1..=100).map(|i| i as f64 * 1000.0).collect();
        assert_eq!(median_p99_us(v), (51.0, 99.0));
    }

    #[test]
    fn only_numbers_are_samples() {
        assert_eq!(ns_lines("ppid 5\n100\nx\n200\n"), vec![100.0, 200.0]);
    }
}
