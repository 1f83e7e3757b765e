//! libmosix overhead (ARCHITECTURE.md section 10): the wall time of
//! system-call-heavy programs that never migrate, run under `mosrun -L`
//! (libmosix loaded and registered with a `homed`, automatic migration
//! off) against the same programs run plainly, interleaved in the same
//! run, with the ratio of the medians.
//!
//! Workloads: `examples/c/syscalls.c` (getpid, getppid, stat, open, read,
//! close, write, sigprocmask, clock_gettime, isatty in a loop); a shell
//! loop that execs `/bin/true` (every exec loads libmosix again and
//! registers with homed); python3 doing `os.stat` and `os.getpid` in a
//! loop; `find` over /usr/lib; `sort` of a generated file (little
//! system-call work: the ratio should be about 1).
//!
//! Needs a C compiler, python3 and the workspace's binaries beside this
//! one (`cargo build --release --workspace`); starts its own `homed`.

use anyhow::{Context, Result, bail};
use clap::Parser;
use mosix_bench::{LocalHomed, bin_dir, build_c_example, median};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Wall time of system-call-heavy programs with libmosix against without.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// Runs of each workload in each mode (interleaved).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Rounds of the syscalls program.
    #[arg(long, default_value_t = 200_000)]
    rounds: u64,
    /// Execs of /bin/true in the shell loop.
    #[arg(long, default_value_t = 300)]
    execs: u64,
    /// Directory for the homed and the inputs (default: the temporary
    /// directory); removed at the end.
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let bin = bin_dir(&["homed", "mosctl", "mosrun", "libmosix.so"])?;
    let base = args
        .dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("mosix-overhead-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    let result = run(&args, &bin, &base);
    let _ = std::fs::remove_dir_all(&base);
    result
}

/// A workload: a name and its command line.
struct Workload {
    name: &'static str,
    argv: Vec<String>,
}

fn workloads(args: &Args, base: &Path) -> Result<Vec<Workload>> {
    let sys = build_c_example("syscalls", base)?;
    let small = base.join("small.txt");
    std::fs::write(&small, "a small file read again and again\n")?;
    let unsorted = base.join("unsorted.txt");
    let mut text = String::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..300_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!("{:016x} {i}\n", x));
    }
    std::fs::write(&unsorted, text)?;
    let s = |v: &str| v.to_string();
    let python = "import os\nt = 0\nfor i in range(100000):\n    t += os.stat('/etc/hostname').st_size + os.getpid() % 7\nprint(t)";
    Ok(vec![
        Workload {
            name: "syscalls",
            argv: vec![
                sys.display().to_string(),
                args.rounds.to_string(),
                small.display().to_string(),
            ],
        },
        Workload {
            name: "exec loop",
            argv: vec![
                s("sh"),
                s("-c"),
                format!(
                    "i=0; while [ $i -lt {} ]; do /bin/true; i=$((i+1)); done",
                    args.execs
                ),
            ],
        },
        Workload {
            name: "python3 stat",
            argv: vec![real_python3()?, s("-c"), s(python)],
        },
        Workload {
            name: "find /usr/lib",
            argv: vec![s("find"), s("/usr/lib"), s("-name"), s("*.so*")],
        },
        Workload {
            name: "sort",
            argv: vec![s("sort"), unsorted.display().to_string()],
        },
    ])
}

/// The python3 binary itself: a wrapper script on the PATH (pyenv's
/// shim) would add its own execs to what is measured.
fn real_python3() -> Result<String> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .context("cannot run python3: install it")?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || path.is_empty() {
        bail!("python3 does not say where it is");
    }
    Ok(path)
}

/// Wall time of one run of `argv` in seconds (output discarded); fails
/// if it does not succeed.
fn time_once(argv: &[String], mosix: Option<(&Path, &Path)>) -> Result<f64> {
    let mut cmd = match mosix {
        Some((mosrun, config)) => {
            let mut c = Command::new(mosrun);
            c.env("MOSIX_CONFIG", config).arg("-L").arg("--").args(argv);
            c
        }
        None => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {}", argv[0]))?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            argv,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if mosix.is_some() && err.contains("running unmanaged") {
        bail!("libmosix ran unmanaged, so nothing was measured: {err}");
    }
    Ok(secs)
}

fn run(args: &Args, bin: &Path, base: &Path) -> Result<()> {
    let homed = LocalHomed::start(bin, base)?;
    let mosrun = bin.join("mosrun");
    let work = workloads(args, base)?;
    println!(
        "{:<14} {:>10} {:>10} {:>7}   (median of {} runs each, interleaved)",
        "workload", "plain_ms", "mosix_ms", "ratio", args.runs
    );
    for w in &work {
        // One warm-up of each, so caches are equal for both modes.
        time_once(&w.argv, None)?;
        time_once(&w.argv, Some((&mosrun, &homed.config)))?;
        let (mut plain, mut mosix) = (Vec::new(), Vec::new());
        for _ in 0..args.runs {
            plain.push(time_once(&w.argv, None)?);
            mosix.push(time_once(&w.argv, Some((&mosrun, &homed.config)))?);
        }
        let (p, m) = (median(&mut plain), median(&mut mosix));
        println!(
            "{:<14} {:>10.1} {:>10.1} {:>7.2}",
            w.name,
            p * 1000.0,
            m * 1000.0,
            m / p
        );
    }
    Ok(())
}
