//! `view`: the view's file rates against the home's own file system, as
//! ratios measured in the same run (ARCHITECTURE.md section 10).
//!
//! Starts a `homed` whose export is a tmpfs mounted only in its own mount
//! namespace, mounts the view of it with `mosix-viewmount` in another, and
//! runs the same python3 workload at home and through the view: sequential
//! write and read of one file (cold: after dropping the page cache; warm:
//! again), random 4 KiB reads, and create, stat and unlink of small files
//! (each timed on its own). For
//! reference it also copies the same amount over a plain TCP connection
//! between the same namespaces (loopback: `homed` and the view's client
//! share the network namespace), the transport the view's link runs on.
//! Needs root, python3, and `homed`, `mosctl`, `mosix-viewmount` built in
//! the same target directory as this program. Run, as root:
//! `cargo build --release -p mosix-bench -p mosix-homed -p mosix-cli -p
//! mosix-fusefs && target/release/view --mib 1024` (the issue's figures
//! are for a 1 GiB file).

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Prints the view's rates against the home's local file system.
#[derive(Parser)]
struct Args {
    /// Size of the sequential file, in MiB.
    #[arg(long, default_value_t = 256)]
    mib: u64,
    /// Number of small files created, stat'ed and unlinked.
    #[arg(long, default_value_t = 2000)]
    files: u64,
}

/// The workload: prints one "name seconds" line per measure.
const WORKLOAD: &str = r#"
import os, sys, time, random
mib, files, drop = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
buf = os.urandom(1 << 20)
def t(name, f):
    s = time.monotonic(); f(); print(name, time.monotonic() - s, flush=True)
def write():
    with open("seq", "wb") as f:
        for _ in range(mib): f.write(buf)
        f.flush(); os.fsync(f.fileno())
def read():
    with open("seq", "rb", buffering=0) as f:
        while f.read(1 << 20): pass
def rand():
    fd = os.open("seq", os.O_RDONLY); r = random.Random(1)
    for _ in range(4096): os.pread(fd, 4096, r.randrange(mib * 256) * 4096)
    os.close(fd)
def create():
    for i in range(files): open("s%d" % i, "wb").close()
def stat():
    for i in range(files): os.stat("s%d" % i)
def unlink():
    for i in range(files): os.unlink("s%d" % i)
t("write", write)
if drop:
    open("/proc/sys/vm/drop_caches", "w").write("3\n")
t("read_cold", read)
t("read_warm", read)
t("rand4k", rand)
t("create", create)
t("stat", stat)
t("unlink", unlink)
os.unlink("seq")
"#;

fn bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe
        .parent()
        .context("no directory for this program")?
        .join(name);
    if !p.exists() {
        bail!(
            "{} is missing: build it first (cargo build --release -p mosix-homed -p mosix-cli -p mosix-fusefs)",
            p.display()
        );
    }
    Ok(p)
}

struct Kill(Vec<Child>, PathBuf);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in self.0.iter_mut().rev() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn run_workload(
    ns_pid: u32,
    dir: &Path,
    args: &Args,
    drop: bool,
    uid: Option<u32>,
) -> Result<Vec<(String, f64)>> {
    let mut c = Command::new("nsenter");
    c.args(["-t", &ns_pid.to_string(), "-m"]);
    if let Some(uid) = uid {
        c.args([
            "setpriv",
            "--reuid",
            &uid.to_string(),
            "--regid",
            &uid.to_string(),
            "--clear-groups",
        ]);
    }
    let out = c
        .args(["sh", "-c"])
        .arg(format!(
            "cd {} && exec /usr/bin/python3 -c '{}' {} {} {}",
            dir.display(),
            WORKLOAD,
            args.mib,
            args.files,
            u8::from(drop)
        ))
        .output()?;
    if !out.status.success() {
        bail!("workload failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut v = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut it = line.split_whitespace();
        if let (Some(n), Some(s)) = (it.next(), it.next()) {
            v.push((n.to_string(), s.parse::<f64>()?));
        }
    }
    Ok(v)
}

/// MiB/s of a plain TCP copy of `mib` MiB over loopback, in 1 MiB writes
/// read into a 1 MiB buffer and dropped.
fn tcp_rate(mib: u64) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(got),
                n => got += n as u64,
            }
        }
    });
    let buf = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    for _ in 0..mib {
        s.write_all(&buf)?;
    }
    s.shutdown(Shutdown::Write)?;
    let got = reader
        .join()
        .map_err(|_| anyhow!("the TCP reader thread panicked"))??;
    let secs = start.elapsed().as_secs_f64();
    if got != mib << 20 {
        bail!("the TCP copy moved {got} bytes, not {}", mib << 20);
    }
    Ok(mib as f64 / secs)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = PathBuf::from(format!("/tmp/mosix-view-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("home"))?;
    std::fs::create_dir_all(dir.join("mnt"))?;
    std::fs::create_dir_all(dir.join("run"))?;
    let mut guard = Kill(Vec::new(), dir.clone());
    let key = dir.join("key");
    let st = Command::new(bin("mosctl")?)
        .arg("keygen")
        .arg(&key)
        .output()?;
    if !st.status.success() {
        bail!(
            "mosctl keygen failed: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let data = dir.join("home/data");
    std::fs::write(
        dir.join("mosix.toml"),
        format!(
            "[node]\nname = \"benchhome\"\nlisten = \"127.0.0.1:{}\"\nhome_listen = \"127.0.0.1:{port}\"\n\
             key_file = \"{}\"\nruntime_dir = \"{}\"\n\n[view]\nexports = [\"{}\"]\nlocal = []\n",
            port.wrapping_sub(1),
            key.display(),
            dir.join("run").display(),
            data.display()
        ),
    )?;
    let script = format!(
        "set -e; mount -t tmpfs -o mode=0755 bench {h}; mkdir {d}; chown 4242:4242 {d}; exec {homed} --config {cfg}",
        h = dir.join("home").display(),
        d = data.display(),
        homed = bin("homed")?.display(),
        cfg = dir.join("mosix.toml").display()
    );
    let homed = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stderr(Stdio::null())
        .spawn()?;
    let homed_pid = homed.id();
    guard.0.push(homed);
    let deadline = Instant::now() + Duration::from_secs(20);
    // A TCP self-connect (source port == port, nothing listening yet)
    // does not count.
    let listening = || {
        TcpStream::connect(("127.0.0.1", port))
            .map(|s| s.local_addr().ok() != s.peer_addr().ok())
            .unwrap_or(false)
    };
    while !listening() {
        if Instant::now() > deadline {
            bail!("homed did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut mount = Command::new("unshare")
        .args(["-m", "--propagation", "private"])
        .arg(bin("mosix-viewmount")?)
        .args(["--home", &format!("127.0.0.1:{port}"), "--key"])
        .arg(&key)
        .args(["--uid", "4242", "--gid", "4242"])
        .arg(dir.join("mnt"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(mount.stdout.take().context("no stdout")?).read_line(&mut line)?;
    let mount_pid = mount.id();
    guard.0.push(mount);
    if line.trim() != "mounted" {
        bail!("mosix-viewmount did not mount");
    }
    let view_dir = dir.join("mnt").join(data.strip_prefix("/")?);
    let home = run_workload(homed_pid, &data, &args, false, None)?;
    let view = run_workload(mount_pid, &view_dir, &args, true, None)?;
    let tcp = tcp_rate(args.mib)?;
    println!(
        "view vs home tmpfs ({} MiB sequential, {} small files); ratio = view rate / home rate",
        args.mib, args.files
    );
    println!(
        "(the home's files are on tmpfs, which lives in the page cache: its cold read is a warm one; the view's cold read starts after dropping the caches)"
    );
    for ((name, h), (_, v)) in home.iter().zip(&view) {
        let (unit, amount) = match name.as_str() {
            "create" | "stat" | "unlink" => ("files/s", args.files as f64),
            "rand4k" => ("reads/s", 4096.0),
            _ => ("MiB/s", args.mib as f64),
        };
        println!(
            "{name:10} home {:10.1} {unit:8} view {:10.1} {unit:8} ratio {:.3}",
            amount / h,
            amount / v,
            h / v
        );
    }
    println!("tcp copy   {tcp:10.1} MiB/s (plain loopback TCP between the same namespaces)");
    for (name, v) in &view {
        if matches!(name.as_str(), "write" | "read_cold" | "read_warm") {
            println!(
                "{name:10} view / tcp copy {:.3}",
                (args.mib as f64 / v) / tcp
            );
        }
    }
    Ok(())
}
