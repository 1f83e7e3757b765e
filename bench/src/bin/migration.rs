//! Migration benchmark (ARCHITECTURE.md section 10, issue 4), on three isolated
//! nodes of a `mosix-local` cluster it starts and always takes down:
//!
//! 1. For each size of dirty memory, an idle process (`examples/c/dirtymem.c`)
//!    started at n1 moves to n2, on to n3 (the image going straight from
//!    n2 to n3) and back home: frozen time (as mosmigrate reports it),
//!    total time (wall clock of the `mosmigrate` command, run inside n1)
//!    and image bytes, beside the time to send the same bytes over a plain
//!    TCP connection between the same two namespaces, in the same
//!    direction and the same run.
//! 2. The one-way latency of a small write to stdout (a pipe to a reader
//!    at home) by a program at home and by its body at n2 (relayed through
//!    the deputy), beside a 1-line message over a raw TCP connection from
//!    n2 to n1. Writer and reader are on the same machine, so each line
//!    carries its CLOCK_REALTIME send time and the reader subtracts it from
//!    its own clock on receipt.
//!
//! Needs root and a C compiler, and the workspace's binaries beside this
//! one (`cargo build --release --workspace`). The timed parts run inside
//! the nodes through hidden subcommands of this same binary.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitCode, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Migration times and relayed-output latency against raw TCP between the
/// same isolated nodes.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// Sizes of dirty memory in MiB.
    #[arg(long, value_delimiter = ',', default_value = "1,64,256,1024,4096")]
    sizes: Vec<u64>,
    /// Only 1, 64 and 256 MiB.
    #[arg(long, conflicts_with = "sizes")]
    quick: bool,
    /// CPU share of each node, in cores (`mosix-local up --cpu-share`):
    /// generous by default, so the figures measure the mechanism rather
    /// than the cgroup's limit.
    #[arg(long, default_value_t = 1.0)]
    cpu_share: f64,
    /// Latency samples per path (one every 100 ms).
    #[arg(long, default_value_t = 100)]
    samples: usize,
    /// Where to make the cluster's directory (default: the temporary
    /// directory); it is removed at the end unless the run failed.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Helpers run inside the nodes by the benchmark itself.
    #[command(subcommand)]
    helper: Option<Helper>,
}

/// The parts of the benchmark that run inside a node.
#[derive(Subcommand, Debug)]
enum Helper {
    /// Accept one TCP connection, read it to EOF, answer with the byte
    /// count (8 bytes, little-endian). Prints `port N` once listening.
    #[command(hide = true)]
    TcpSink,
    /// Send BYTES to ADDR and wait for the sink's count; prints
    /// `elapsed_ns N` from before the connect to the count's arrival.
    #[command(hide = true)]
    TcpSource {
        /// host:port of the sink.
        addr: String,
        /// How many bytes to send.
        bytes: u64,
    },
    /// Accept one TCP connection and print `lat NS TS` for each timestamp
    /// line read from it (other lines pass through). Prints `port N` once
    /// listening.
    #[command(hide = true)]
    LatRecv,
    /// The same as lat-recv, for the lines of stdin.
    #[command(hide = true)]
    LatRead,
    /// Connect to ADDR and send COUNT timestamp lines, INTERVAL_MS apart.
    #[command(hide = true)]
    LatSend {
        /// host:port of lat-recv.
        addr: String,
        /// Number of lines.
        count: usize,
        /// Milliseconds between lines.
        interval_ms: u64,
    },
    /// Run CMD with inherited streams, then print `elapsed_ns N`; exit as
    /// CMD did.
    #[command(hide = true)]
    Timed {
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
}

/// Address of node n<i> in a `mosix-local` cluster (10.77.0.<i>, each
/// node in its own network namespace).
fn node_addr(node: &str) -> Result<String> {
    let i: u32 = node
        .strip_prefix('n')
        .and_then(|i| i.parse().ok())
        .with_context(|| format!("{node} is not a mosix-local node name"))?;
    Ok(format!("10.77.0.{i}"))
}

/// Interval between latency samples, in milliseconds.
const INTERVAL_MS: u64 = 100;

/// How long any single step may take before the run is given up.
const STEP_TIMEOUT: Duration = Duration::from_secs(600);

/// Held while the cluster is taken down, so the signal watcher and the
/// normal end never run `mosix-local down` at the same time.
static DOWN: Mutex<()> = Mutex::new(());

/// Set once SIGINT, SIGTERM or SIGHUP arrived: the errors that follow
/// (the cluster going away under the run) are not worth printing.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    let args = Args::parse();
    let r = match args.helper {
        Some(h) => helper(h),
        None => bench(&args),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) if INTERRUPTED.load(Ordering::SeqCst) => ExitCode::from(130),
        Err(e) => {
            eprintln!("migration: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------
// Helpers inside the nodes.

fn helper(h: Helper) -> Result<()> {
    match h {
        Helper::TcpSink => tcp_sink(),
        Helper::TcpSource { addr, bytes } => tcp_source(&addr, bytes),
        Helper::LatRecv => {
            let listener = listen()?;
            let (conn, _) = listener.accept().context("accept the sender")?;
            conn.set_nodelay(true)?;
            stamp_lines(BufReader::new(conn))
        }
        Helper::LatRead => stamp_lines(std::io::stdin().lock()),
        Helper::LatSend {
            addr,
            count,
            interval_ms,
        } => lat_send(&addr, count, interval_ms),
        Helper::Timed { cmd } => timed(&cmd),
    }
}

/// A listener on every address of the node, on a free port; prints it.
fn listen() -> Result<TcpListener> {
    let l = TcpListener::bind("0.0.0.0:0").context("bind a TCP port")?;
    println!("port {}", l.local_addr()?.port());
    std::io::stdout().flush()?;
    Ok(l)
}

fn tcp_sink() -> Result<()> {
    let listener = listen()?;
    let (mut conn, _) = listener.accept().context("accept the source")?;
    let mut buf = vec![0u8; 4 << 20];
    let mut total: u64 = 0;
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("read from the source"),
        }
    }
    conn.write_all(&total.to_le_bytes())
        .context("answer the source")?;
    Ok(())
}

fn tcp_source(addr: &str, bytes: u64) -> Result<()> {
    let buf = vec![0x5au8; 4 << 20];
    let t = Instant::now();
    let mut conn = TcpStream::connect(addr).with_context(|| format!("connect to {addr}"))?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        conn.write_all(&buf[..n]).context("send to the sink")?;
        left -= n as u64;
    }
    conn.shutdown(Shutdown::Write)?;
    let mut ack = [0u8; 8];
    conn.read_exact(&mut ack).context("read the sink's count")?;
    let elapsed = t.elapsed();
    let got = u64::from_le_bytes(ack);
    if got != bytes {
        bail!("the sink got {got} bytes of {bytes}");
    }
    println!("elapsed_ns {}", elapsed.as_nanos());
    Ok(())
}

/// CLOCK_REALTIME in nanoseconds (shared by every namespace of the machine).
fn realtime_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// For each line that is a timestamp, print `lat NS TS` (receipt minus
/// the timestamp, and the timestamp); pass other lines through.
fn stamp_lines(mut input: impl BufRead) -> Result<()> {
    let mut line = String::new();
    let mut out = std::io::stdout().lock();
    loop {
        line.clear();
        if input.read_line(&mut line).context("read a line")? == 0 {
            return Ok(());
        }
        let now = realtime_ns();
        match line.trim().parse::<i128>() {
            Ok(ts) => writeln!(out, "lat {} {ts}", now - ts)?,
            Err(_) => write!(out, "{line}")?,
        }
        out.flush()?;
    }
}

fn lat_send(addr: &str, count: usize, interval_ms: u64) -> Result<()> {
    let mut conn = TcpStream::connect(addr).with_context(|| format!("connect to {addr}"))?;
    conn.set_nodelay(true)?;
    for _ in 0..count {
        // Pacing, as the program writing to a pipe does: one small write
        // every interval.
        std::thread::sleep(Duration::from_millis(interval_ms));
        conn.write_all(format!("{}\n", realtime_ns()).as_bytes())
            .context("send a line")?;
    }
    Ok(())
}

fn timed(cmd: &[String]) -> Result<()> {
    let (prog, args) = cmd.split_first().context("no command to time")?;
    let t = Instant::now();
    let st = Command::new(prog)
        .args(args)
        .status()
        .with_context(|| format!("run {prog}"))?;
    let elapsed = t.elapsed();
    if !st.success() {
        bail!("{prog} failed ({st})");
    }
    println!("elapsed_ns {}", elapsed.as_nanos());
    Ok(())
}

// ---------------------------------------------------------------------
// The benchmark.

/// The cluster; taken down when dropped, whatever happened.
struct Cluster {
    local: PathBuf,
    dir: PathBuf,
    /// This binary's path, for its helpers.
    me: String,
    /// Whether the run ended well (then the directory goes too).
    ok: bool,
}

impl Cluster {
    /// `mosix-local ARGS` on this cluster, quietly.
    fn local(&self, sub: &str) -> Command {
        let mut c = Command::new(&self.local);
        c.arg(sub).arg("--dir").arg(&self.dir);
        c.env("MOSIX_LOCAL_LOG", "warn");
        c
    }

    /// A command run inside `node`.
    fn exec(&self, node: &str, cmd: &[&str]) -> Command {
        let mut c = self.local("exec");
        c.arg(node).arg("--").args(cmd);
        c
    }

    /// A command run inside `node`, to its end; fails with its stderr.
    fn run(&self, node: &str, cmd: &[&str]) -> Result<Output> {
        let out = self
            .exec(node, cmd)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run mosix-local exec {node}"))?;
        if !out.status.success() {
            bail!(
                "{} at {node} failed ({}): {}",
                cmd.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }

    /// A long-running command inside `node`, its stdout read line by
    /// line, its stderr kept in the cluster's directory as `<name>.err`
    /// (a killed pipeline's shell says so there, not on the terminal).
    fn spawn(&self, node: &str, name: &str, cmd: &[&str]) -> Result<(Running, Lines)> {
        let err = self.dir.join(format!("{name}.err"));
        let mut child = self
            .exec(node, cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(
                std::fs::File::create(&err).with_context(|| format!("create {}", err.display()))?,
            )
            .spawn()
            .with_context(|| format!("run mosix-local exec {node}"))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        Ok((Running { child, pid: None }, Lines::new(stdout, err)))
    }

    /// This binary's path, for its helpers.
    fn me(&self) -> &str {
        &self.me
    }

    /// Polls `mosps --json` at n1 until it lists `pid`.
    fn wait_managed(&self, pid: i32) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.run("n1", &["mosps", "--json"])?;
            let list: Vec<serde_json::Value> =
                serde_json::from_slice(&out.stdout).context("mosps --json printed bad JSON")?;
            if list.iter().any(|p| p["pid"] == pid) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("homed at n1 never listed pid {pid} (mosps --json)");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `mosmigrate PID NODE` at n1, timed inside n1.
    fn migrate(&self, pid: i32, node: &str) -> Result<Moved> {
        let pid_s = pid.to_string();
        let out = self.run(
            "n1",
            &[self.me(), "timed", "--", "mosmigrate", &pid_s, node],
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        let want = if node == "home" {
            format!("{pid} is home again")
        } else {
            format!("{pid} runs on {node} ")
        };
        let line = text
            .lines()
            .find(|l| l.starts_with(&want))
            .with_context(|| format!("mosmigrate {pid} {node} did not say {want:?}: {text}"))?;
        let mut bytes = None;
        let mut frozen_ms = None;
        for part in line.split(", ") {
            if let Some(b) = part.strip_suffix(" bytes moved") {
                bytes = b.parse().ok();
            } else if let Some(f) = part.strip_prefix("frozen ") {
                frozen_ms = f.strip_suffix(" ms").and_then(|f| f.parse().ok());
            }
        }
        Ok(Moved {
            bytes: bytes.with_context(|| format!("no byte count in {line:?}"))?,
            frozen_ms: frozen_ms.with_context(|| format!("no frozen time in {line:?}"))?,
            total_ms: elapsed_ms(&text)?,
        })
    }

    /// Milliseconds to send `bytes` over TCP from `from` to `to`.
    fn tcp_ms(&self, from: &str, to: &str, bytes: u64) -> Result<f64> {
        let (mut sink, mut lines) = self.spawn(to, "tcp-sink", &[self.me(), "tcp-sink"])?;
        let port = port_line(&mut lines, "tcp-sink")?;
        let addr = format!("{}:{port}", node_addr(to)?);
        let out = self.run(from, &[self.me(), "tcp-source", &addr, &bytes.to_string()])?;
        let st = sink.child.wait()?;
        if !st.success() {
            bail!("tcp-sink at {to} failed ({st})");
        }
        elapsed_ms(&String::from_utf8_lossy(&out.stdout))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _one_at_a_time = DOWN.lock();
        match self.local("down").output() {
            Ok(o) if o.status.success() => {
                if self.ok || INTERRUPTED.load(Ordering::SeqCst) {
                    let _ = std::fs::remove_dir_all(&self.dir);
                } else {
                    eprintln!(
                        "migration: the cluster's logs are in {}",
                        self.dir.display()
                    );
                }
            }
            Ok(o) => eprintln!(
                "migration: mosix-local down --dir {} failed: {}; run it again by hand",
                self.dir.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!(
                "migration: cannot run mosix-local down --dir {}: {e}; run it by hand",
                self.dir.display()
            ),
        }
    }
}

/// A process started in a node; killed (with the program it runs, once
/// its home pid is known) when dropped.
struct Running {
    child: Child,
    pid: Option<i32>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(p) = self.pid {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines of a child's stdout, read by a thread so that waiting for one
/// has a deadline.
struct Lines {
    rx: mpsc::Receiver<String>,
    /// The file holding the child's stderr.
    err: PathBuf,
}

impl Lines {
    fn new(out: ChildStdout, err: PathBuf) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Lines { rx, err }
    }

    /// The next line; fails naming `what` on timeout or end of output.
    fn next(&mut self, what: &str, timeout: Duration) -> Result<String> {
        let why = match self.rx.recv_timeout(timeout) {
            Ok(l) => return Ok(l),
            Err(mpsc::RecvTimeoutError::Timeout) => format!("printed nothing for {timeout:?}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => "ended its output early".to_string(),
        };
        let stderr = std::fs::read_to_string(&self.err).unwrap_or_default();
        bail!(
            "{what} {why}; its stderr ({}): {}",
            self.err.display(),
            stderr.trim()
        )
    }

    /// The next `lat NS TS` line: the latency in microseconds and the
    /// send time (CLOCK_REALTIME, ns).
    fn latency_us(&mut self, what: &str) -> Result<(f64, i128)> {
        let line = self.next(what, Duration::from_secs(30))?;
        let mut words = line.split(' ');
        let lat = words.next().filter(|&w| w == "lat").and(words.next());
        lat.and_then(|n| n.parse::<i128>().ok())
            .zip(words.next().and_then(|t| t.parse::<i128>().ok()))
            .map(|(ns, ts)| (ns as f64 / 1000.0, ts))
            .with_context(|| format!("{what} printed {line:?}, not a latency"))
    }
}

/// `port N` from a listener helper.
fn port_line(lines: &mut Lines, what: &str) -> Result<u16> {
    let l = lines.next(what, Duration::from_secs(30))?;
    l.strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("{what} printed {l:?} instead of its port"))
}

/// The `elapsed_ns N` line of a helper, in milliseconds.
fn elapsed_ms(text: &str) -> Result<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix("elapsed_ns "))
        .and_then(|n| n.parse::<u64>().ok())
        .map(|ns| ns as f64 / 1e6)
        .with_context(|| format!("no elapsed time in {text:?}"))
}

/// One migration as measured.
struct Moved {
    bytes: u64,
    frozen_ms: u64,
    total_ms: f64,
}

fn mib_per_s(bytes: u64, ms: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / (ms / 1000.0)
}

/// Takes the cluster down on SIGINT, SIGTERM or SIGHUP, then exits as
/// killed by it. The signals are blocked in every thread (children start
/// with an empty mask) and awaited by one.
fn down_on_signal(local: PathBuf, dir: PathBuf) -> Result<()> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block()
        .context("block SIGINT, SIGTERM, SIGHUP")?;
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            INTERRUPTED.store(true, Ordering::SeqCst);
            eprintln!("migration: {sig}; taking the cluster down");
            // Held until exit: the main thread's own `down` waits for it.
            let _one_at_a_time = DOWN.lock();
            let _ = Command::new(&local)
                .arg("down")
                .arg("--dir")
                .arg(&dir)
                .env("MOSIX_LOCAL_LOG", "warn")
                .status();
            let _ = std::fs::remove_dir_all(&dir);
            std::process::exit(128 + sig as i32);
        }
    });
    Ok(())
}

fn bench(args: &Args) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "this benchmark needs root (it makes network and mount namespaces and cgroups): run it as root"
        );
    }
    let me = std::env::current_exe().context("cannot find this executable")?;
    let bin = me
        .parent()
        .context("the benchmark has no directory")?
        .to_path_buf();
    for b in [
        "mosix-local",
        "homed",
        "remoted",
        "mosctl",
        "mosrun",
        "mosmigrate",
        "mosps",
        "mosix-deputy",
        "mosix-restore",
        "libmosix.so",
    ] {
        if !bin.join(b).exists() {
            bail!(
                "{} is missing: build the workspace in this profile first (cargo build --release --workspace)",
                bin.join(b).display()
            );
        }
    }
    let sizes: Vec<u64> = if args.quick {
        vec![1, 64, 256]
    } else {
        args.sizes.clone()
    };
    if sizes.is_empty() || sizes.contains(&0) {
        bail!("--sizes needs sizes of at least 1 MiB");
    }
    if args.samples == 0 {
        bail!("--samples needs at least 1");
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("mosix-bench-migration-{}", std::process::id()));
    let local = bin.join("mosix-local");
    down_on_signal(local.clone(), dir.clone())?;
    let me = me
        .to_str()
        .map(str::to_owned)
        .context("the benchmark's path is not UTF-8: move it")?;
    let mut c = Cluster {
        local,
        dir,
        me,
        ok: false,
    };
    let up = c
        .local("up")
        .args(["--nodes", "3", "--cpu-share", &args.cpu_share.to_string()])
        .output()
        .context("run mosix-local up")?;
    if !up.status.success() {
        bail!(
            "mosix-local up failed: {}",
            String::from_utf8_lossy(&up.stderr).trim()
        );
    }
    let utf8 = |p: std::path::PathBuf| {
        p.to_str()
            .map(str::to_owned)
            .context("the cluster directory is not UTF-8")
    };
    let dirtymem = utf8(mosix_bench::build_c_example("dirtymem", &c.dir)?)?;
    let stamps = utf8(mosix_bench::build_c_example("stamps", &c.dir)?)?;
    println!(
        "three isolated nodes (mosix-local, --cpu-share {} each); an idle process with N MiB dirty moves n1 -> n2 -> n3 -> home",
        args.cpu_share
    );
    println!(
        "total = wall clock of mosmigrate inside n1; tcp = the same bytes over TCP between the same namespaces, same direction; x = total / tcp"
    );
    let leg_head = format!(
        "{:>9} {:>9} {:>7} {:>9} {:>7} {:>6}",
        "frozen_ms", "total_ms", "MiB/s", "tcp_ms", "MiB/s", "x"
    );
    println!(
        "{:>5} {:>9} | {:^51} | {:^51} | {:^51}",
        "", "", "n1 -> n2", "n2 -> n3 (direct)", "n3 -> home"
    );
    println!(
        "{:>5} {:>9} | {leg_head} | {leg_head} | {leg_head}",
        "MiB", "image_MiB"
    );
    for &mib in &sizes {
        let legs = one_size(&c, &dirtymem, mib)?;
        let cells: Vec<String> = legs
            .iter()
            .map(|(m, tcp)| {
                format!(
                    "{:>9} {:>9.1} {:>7.0} {:>9.1} {:>7.0} {:>6.2}",
                    m.frozen_ms,
                    m.total_ms,
                    mib_per_s(m.bytes, m.total_ms),
                    tcp,
                    mib_per_s(m.bytes, *tcp),
                    m.total_ms / tcp,
                )
            })
            .collect();
        println!(
            "{:>5} {:>9.1} | {}",
            mib,
            legs[0].0.bytes as f64 / (1 << 20) as f64,
            cells.join(" | ")
        );
    }
    println!();
    latency(&c, &stamps, args.samples)?;
    c.ok = true;
    Ok(())
}

/// One size: each leg of n1 -> n2 -> n3 -> home, with its TCP reference.
fn one_size(c: &Cluster, dirtymem: &str, mib: u64) -> Result<[(Moved, f64); 3]> {
    let mib_s = mib.to_string();
    let (mut prog, mut lines) = c.spawn("n1", "dirtymem", &["mosrun", "--", dirtymem, &mib_s])?;
    let ready = lines.next("dirtymem", STEP_TIMEOUT)?;
    let pid: i32 = ready
        .strip_prefix("ready ")
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("dirtymem printed {ready:?} instead of \"ready PID\""))?;
    prog.pid = Some(pid);
    c.wait_managed(pid)?;
    let to = c.migrate(pid, "n2")?;
    let on = c.migrate(pid, "n3")?;
    let back = c.migrate(pid, "home")?;
    // Home again: its memory must be what it wrote.
    kill(Pid::from_raw(pid), Signal::SIGUSR1).context("signal dirtymem")?;
    let check = lines.next("dirtymem's check", STEP_TIMEOUT)?;
    if check != "checked OK" {
        bail!("dirtymem of {mib} MiB after its round trip: {check}");
    }
    let st = prog.child.wait()?;
    if !st.success() {
        bail!("dirtymem of {mib} MiB ended with {st}");
    }
    prog.pid = None;
    let to_tcp = c.tcp_ms("n1", "n2", to.bytes)?;
    let on_tcp = c.tcp_ms("n2", "n3", on.bytes)?;
    let back_tcp = c.tcp_ms("n3", "n1", back.bytes)?;
    Ok([(to, to_tcp), (on, on_tcp), (back, back_tcp)])
}

/// Median and 99th percentile of `v` (not empty).
fn median_p99(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let p99 = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
    (v[v.len() / 2], v[p99])
}

/// Part 2: one-way latency of a line to a pipe at home, from home and
/// from n2, and over raw TCP from n2 to n1.
fn latency(c: &Cluster, stamps: &str, samples: usize) -> Result<()> {
    // The program's stdout is a pipe to a reader at n1 (this binary's
    // lat-read, inside n1 as the TCP receiver is).
    let pipeline = format!("mosrun -- {stamps} {INTERVAL_MS} | {} lat-read", c.me());
    let (mut prog, mut lines) = c.spawn("n1", "stamps", &["sh", "-c", &pipeline])?;
    let first = lines.next("stamps", Duration::from_secs(30))?;
    let pid: i32 = first
        .strip_prefix("pid ")
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("stamps printed {first:?} instead of \"pid PID\""))?;
    prog.pid = Some(pid);
    c.wait_managed(pid)?;
    let mut home = Vec::with_capacity(samples);
    for _ in 0..samples {
        home.push(lines.latency_us("stamps at home")?.0);
    }
    c.migrate(pid, "n2")?;
    // Lines written before the move ended are not relayed samples.
    let moved = realtime_ns();
    let mut away = Vec::with_capacity(samples);
    while away.len() < samples {
        let (lat, ts) = lines.latency_us("stamps at n2")?;
        if ts > moved {
            away.push(lat);
        }
    }
    drop(prog);
    let (mut recv, mut rlines) = c.spawn("n1", "lat-recv", &[c.me(), "lat-recv"])?;
    let port = port_line(&mut rlines, "lat-recv")?;
    let addr = format!("{}:{port}", node_addr("n1")?);
    c.run(
        "n2",
        &[
            c.me(),
            "lat-send",
            &addr,
            &samples.to_string(),
            &INTERVAL_MS.to_string(),
        ],
    )?;
    let mut tcp = Vec::with_capacity(samples);
    for _ in 0..samples {
        tcp.push(rlines.latency_us("lat-recv")?.0);
    }
    let st = recv.child.wait()?;
    if !st.success() {
        bail!("lat-recv at n1 failed ({st})");
    }
    let (tcp_med, tcp_p99) = median_p99(tcp);
    println!(
        "one-way latency of a line written every {INTERVAL_MS} ms ({samples} samples each); x = median / TCP's median"
    );
    println!(
        "{:<44} {:>10} {:>10} {:>7}",
        "path", "median_us", "p99_us", "x"
    );
    for (what, v) in [
        ("stdout pipe, process at home (n1)", home),
        ("stdout pipe, body at n2, relayed by deputy", away),
    ] {
        let (med, p99) = median_p99(v);
        println!(
            "{:<44} {:>10.1} {:>10.1} {:>7.2}",
            what,
            med,
            p99,
            med / tcp_med
        );
    }
    println!(
        "{:<44} {:>10.1} {:>10.1} {:>7.2}",
        "raw TCP n2 -> n1, TCP_NODELAY", tcp_med, tcp_p99, 1.0
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p99_of_a_hundred() {
        let v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(median_p99(v), (51.0, 99.0));
        assert_eq!(median_p99(vec![7.0]), (7.0, 7.0));
    }

    #[test]
    fn elapsed_lines_parse_and_garbage_is_an_error() {
        let ms = elapsed_ms(
            "1234 runs on n2 (pid 9 there), 5 bytes moved, frozen 3 ms\nelapsed_ns 2500000\n",
        )
        .unwrap();
        assert!((ms - 2.5).abs() < 1e-9);
        assert!(elapsed_ms("elapsed_ns soon").is_err());
    }

    #[test]
    fn node_addresses_follow_mosix_local() {
        assert_eq!(node_addr("n2").unwrap(), "10.77.0.2");
        assert!(node_addr("home").is_err());
    }
}
