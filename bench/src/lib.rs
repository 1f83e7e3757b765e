//! Benchmarks that print figures, each as a ratio against a reference
//! measured in the same run (ARCHITECTURE.md section 10).

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The directory of the bench binary, where the workspace's binaries of
/// the same profile are; fails naming the first of `needed` missing.
pub fn bin_dir(needed: &[&str]) -> Result<PathBuf> {
    let bin = std::env::current_exe()?
        .parent()
        .context("bench binary has no directory")?
        .to_path_buf();
    for b in needed {
        if !bin.join(b).exists() {
            bail!(
                "{} is missing: build the workspace in this profile first (cargo build --release --workspace)",
                bin.join(b).display()
            );
        }
    }
    Ok(bin)
}

/// A `homed` of the bench's own, alone on loopback ports, with its
/// configuration and runtime directory under a base directory; killed on
/// drop. Enough for programs that never leave home.
pub struct LocalHomed {
    child: Child,
    /// Its configuration file (for `MOSIX_CONFIG`).
    pub config: PathBuf,
}

impl LocalHomed {
    /// Write a key and a one-node configuration under `base` and start
    /// `bin/homed`; waits until its sockets are open.
    pub fn start(bin: &Path, base: &Path) -> Result<LocalHomed> {
        std::fs::create_dir_all(base.join("run"))?;
        let config = base.join("mosix.toml");
        let key = base.join("cluster.key");
        let keygen = Command::new(bin.join("mosctl"))
            .arg("keygen")
            .arg(&key)
            .output()
            .context("mosctl keygen")?;
        if !keygen.status.success() {
            bail!(
                "mosctl keygen failed: {}",
                String::from_utf8_lossy(&keygen.stderr)
            );
        }
        std::fs::write(
            &config,
            format!(
                "[node]\nname = \"bench\"\nlisten = \"127.0.0.1:0\"\nhome_listen = \"127.0.0.1:0\"\n\
                 key_file = \"{}\"\nruntime_dir = \"{}\"\n",
                key.display(),
                base.join("run").display()
            ),
        )?;
        let child = Command::new(bin.join("homed"))
            .arg("--config")
            .arg(&config)
            .stderr(std::fs::File::create(base.join("homed.log"))?)
            .spawn()
            .context("start homed")?;
        let homed = LocalHomed { child, config };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !base.join("run/procs.sock").exists() || !base.join("run/homed.sock").exists() {
            if Instant::now() > deadline {
                bail!(
                    "homed did not start; see {}",
                    base.join("homed.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(homed)
    }
}

impl Drop for LocalHomed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Compile `examples/c/<name>.c` with `cc -O2` into `dir/<name>`.
pub fn build_c_example(name: &str, dir: &Path) -> Result<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/c")
        .join(format!("{name}.c"));
    let exe = dir.join(name);
    let out = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .context("cannot run cc: install gcc")?;
    if !out.status.success() {
        bail!(
            "cannot compile {}: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(exe)
}

/// The median of `v` (sorted in place); NaN when empty.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }
}
