//! Checkpoint benchmark (ARCHITECTURE.md section 10, issue 3): for each size of
//! dirty memory, the freeze time (freeze signal to image complete on disk,
//! as `mosmigrate PID chkexit` sees it), the image size, the restart time
//! (`mosrun -R` to the program running again, split into the image check
//! and the rest), and, in the same run, the time to write (with fsync) and
//! read the same number of bytes as a plain file, with the ratios.
//!
//! Needs a C compiler; it starts its own `homed` from
//! the binaries beside this one (build them in the same profile:
//! `cargo build --release --workspace`).

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Checkpoint and restart times against plain file I/O of the same size.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// Sizes of dirty memory in MiB.
    #[arg(long, value_delimiter = ',', default_value = "1,64,256,1024,4096")]
    sizes: Vec<u64>,
    /// Directory for images and reference files (needs twice the largest
    /// size free).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let bin = mosix_bench::bin_dir(&[
        "homed",
        "mosctl",
        "mosrun",
        "mosmigrate",
        "mosix-restore",
        "libmosix.so",
    ])?;
    let base = args
        .dir
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("mosix-bench-{}", std::process::id()));
    std::fs::create_dir_all(base.join("run"))?;
    let result = run(&bin, &base, &args.sizes);
    let _ = std::fs::remove_dir_all(&base);
    result
}

fn run(bin: &Path, base: &Path, sizes: &[u64]) -> Result<()> {
    let prog = mosix_bench::build_c_example("bigmem", base)?;
    let homed = mosix_bench::LocalHomed::start(bin, base)?;
    let config = &homed.config;
    println!(
        "{:>6} {:>10} {:>10} {:>10} {:>7} | {:>10} {:>10} {:>10} {:>10} {:>7}",
        "MiB",
        "freeze_ms",
        "image_MiB",
        "write_ms",
        "ratio",
        "restart_ms",
        "check_ms",
        "rest_ms",
        "read_ms",
        "ratio"
    );
    for &mib in sizes {
        let r = one(bin, base, config, &prog, mib)?;
        println!(
            "{:>6} {:>10.1} {:>10.1} {:>10.1} {:>7.2} | {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>7.2}",
            mib,
            r.freeze_ms,
            r.image_bytes as f64 / (1 << 20) as f64,
            r.write_ms,
            r.freeze_ms / r.write_ms,
            r.restart_ms,
            r.check_ms,
            r.restart_ms - r.check_ms,
            r.read_ms,
            r.restart_ms / r.read_ms,
        );
    }
    Ok(())
}

struct Row {
    freeze_ms: f64,
    image_bytes: u64,
    write_ms: f64,
    restart_ms: f64,
    check_ms: f64,
    read_ms: f64,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn wait_for(path: &Path, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !std::fs::read_to_string(path)
        .unwrap_or_default()
        .contains(what)
    {
        if Instant::now() > deadline {
            bail!("{} never said {what:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn one(bin: &Path, base: &Path, config: &Path, prog: &Path, mib: u64) -> Result<Row> {
    let out = base.join("out");
    let img = base.join("img");
    let mut child = Command::new(bin.join("mosrun"))
        .env("MOSIX_CONFIG", config)
        .arg("--")
        .arg(prog)
        .arg(mib.to_string())
        .arg("0")
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out)?)
        .spawn()?;
    wait_for(&out, "ready")?;
    let t = Instant::now();
    let o = Command::new(bin.join("mosmigrate"))
        .env("MOSIX_CONFIG", config)
        .arg(child.id().to_string())
        .arg("chkexit")
        .arg(&img)
        .output()?;
    let freeze_ms = ms(t);
    if !o.status.success() {
        bail!("mosmigrate: {}", String::from_utf8_lossy(&o.stderr));
    }
    child.wait()?;
    let image_bytes = img.metadata()?.len();
    let t = Instant::now();
    let o = Command::new(bin.join("mosrun"))
        .arg("-I")
        .arg(&img)
        .output()?;
    let check_ms = ms(t);
    if !o.status.success() {
        bail!("mosrun -I: {}", String::from_utf8_lossy(&o.stderr));
    }
    let out2 = base.join("out2");
    let t = Instant::now();
    let mut again = Command::new(bin.join("mosrun"))
        .arg("-R")
        .arg(&img)
        .arg("-O")
        .arg(format!("1={}", out2.display()))
        .stdin(Stdio::piped())
        .spawn()?;
    again.stdin.take().context("stdin")?.write_all(b"x")?;
    let st = again.wait()?;
    let restart_ms = ms(t);
    let text = std::fs::read_to_string(&out2).unwrap_or_default();
    if !st.success() || !text.contains("resumed OK") {
        bail!("restart of {mib} MiB failed ({st}): {text}");
    }
    std::fs::remove_file(&img)?;
    // The same number of bytes through a plain file, in the same run.
    let plain = base.join("plain");
    let buf = vec![0x5au8; 4 << 20];
    let t = Instant::now();
    {
        let mut f = std::fs::File::create(&plain)?;
        let mut left = image_bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            f.write_all(&buf[..n])?;
            left -= n as u64;
        }
        f.sync_all()?;
    }
    let write_ms = ms(t);
    let t = Instant::now();
    {
        let mut f = std::fs::File::open(&plain)?;
        let mut rbuf = vec![0u8; 4 << 20];
        while f.read(&mut rbuf)? > 0 {}
    }
    let read_ms = ms(t);
    std::fs::remove_file(&plain)?;
    Ok(Row {
        freeze_ms,
        image_bytes,
        write_ms,
        restart_ms,
        check_ms,
        read_ms,
    })
}
