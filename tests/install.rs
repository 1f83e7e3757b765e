//! `scripts/install` (issue 17): an install under a prefix holds every
//! command, man page, completion and unit; each page renders with `man
//! -l`; `systemd-analyze verify` accepts the units; and the installed
//! `mosrun` (finding libmosix.so and mosix-restore in ../libexec/mosix)
//! runs a job that moves on a local cluster.
//!
//! The debug build is installed (`--debug`): a release build would take
//! minutes; the layout and the lookups are the same.

use mosix_tests::procs::text;
use mosix_tests::{Cluster, bin_dir};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const COMMANDS: &[&str] = &["mosrun", "mosmigrate", "mosps", "mosmon", "mosctl"];
const DAEMONS: &[&str] = &["homed", "remoted"];

/// Runs `scripts/install --debug --prefix prefix` against the build the
/// tests use.
fn install(prefix: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = bin_dir().parent().expect("target/<profile>").to_path_buf();
    let out = Command::new(root.join("scripts/install"))
        .arg("--debug")
        .arg("--prefix")
        .arg(prefix)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("cannot run scripts/install");
    assert!(
        out.status.success(),
        "scripts/install failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pages() -> Vec<String> {
    let mut p: Vec<String> = COMMANDS
        .iter()
        .map(|c| format!("share/man/man1/{c}.1"))
        .collect();
    p.extend(DAEMONS.iter().map(|d| format!("share/man/man8/{d}.8")));
    p.push("share/man/man5/mosix.toml.5".into());
    p
}

#[test]
fn install_puts_every_command_page_completion_and_unit_under_the_prefix() {
    let dir = tempdir("layout");
    install(&dir);
    let mut want: Vec<String> = COMMANDS.iter().map(|c| format!("bin/{c}")).collect();
    for d in DAEMONS {
        want.push(format!("sbin/{d}"));
        want.push(format!("libexec/mosix/{d}"));
    }
    for f in ["libmosix.so", "mosix-restore", "mosix-deputy"] {
        want.push(format!("libexec/mosix/{f}"));
    }
    want.extend(pages());
    for c in COMMANDS.iter().chain(DAEMONS) {
        want.push(format!("share/bash-completion/completions/{c}"));
        want.push(format!("share/zsh/site-functions/_{c}"));
        want.push(format!("share/fish/vendor_completions.d/{c}.fish"));
    }
    want.push("share/doc/mosix/mosix.toml.example".into());
    want.push("lib/systemd/system/mosix-homed.service".into());
    want.push("lib/systemd/system/mosix-remoted.service".into());
    for f in &want {
        assert!(
            dir.join(f).exists(),
            "{f} is not installed under {}",
            dir.display()
        );
    }
    // Every page renders, with its name and hand-written sections.
    if which("man") {
        for p in pages() {
            let out = Command::new("man")
                .arg("-l")
                .arg(dir.join(&p))
                .env("MANWIDTH", "80")
                .env("MAN_KEEP_FORMATTING", "0")
                .output()
                .unwrap();
            let page = plain(&String::from_utf8_lossy(&out.stdout));
            assert!(
                out.status.success() && page.contains("NAME"),
                "man -l {p}: {}",
                text(&out)
            );
        }
        let out = Command::new("man")
            .arg("-l")
            .arg(dir.join("share/man/man1/mosrun.1"))
            .output()
            .unwrap();
        assert!(plain(&String::from_utf8_lossy(&out.stdout)).contains("EXIT STATUS"));
    } else {
        eprintln!("skipped man -l: man is not installed (apt-get install man-db)");
    }
    // The units as installed (ExecStart names this prefix) verify, man
    // pages included.
    if which("systemd-analyze") {
        let units = dir.join("lib/systemd/system");
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(units.join("mosix-homed.service"))
            .arg(units.join("mosix-remoted.service"))
            .env("MANPATH", dir.join("share/man"))
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify: {}",
            text(&out)
        );
    } else {
        eprintln!("skipped systemd-analyze verify: not installed");
    }
    // --uninstall takes back everything it put there.
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install"))
        .args(["--uninstall", "--prefix"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "uninstall: {}", text(&out));
    for f in &want {
        assert!(!dir.join(f).exists(), "{f} is left after --uninstall");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_installed_mosrun_runs_a_job_that_moves() {
    let c = Cluster::up(2).unwrap();
    // Inside the cluster's directory, which every node sees.
    let prefix = c.dir.join("prefix");
    install(&prefix);
    let exe = mosix_tests::build_c_example("progress", &c.dir, &[]);
    let mosrun = prefix.join("bin/mosrun");
    let out_file = c.dir.join("installed.out");
    let pid_file = c.dir.join("installed.pid");
    let rc_file = c.dir.join("installed.rc");
    let script = format!(
        "{} -- {} 40 100000003 5 > {} & echo $! > {}; wait $!; echo $? > {}",
        mosrun.display(),
        exe.display(),
        out_file.display(),
        pid_file.display(),
        rc_file.display()
    );
    let mut shell = Command::new(mosix_tests::bin("mosix-local"))
        .args(["exec", "--dir"])
        .arg(&c.dir)
        .args(["n1", "--", "sh", "-c", &script])
        .env("MOSIX_BIN_DIR", bin_dir())
        .spawn()
        .unwrap();
    c.wait_for("the job to start", Duration::from_secs(30), || {
        Ok(std::fs::read_to_string(&out_file).is_ok_and(|o| o.lines().count() >= 2))
    })
    .unwrap();
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    let mosmigrate = prefix.join("bin/mosmigrate");
    let out = c
        .exec("n1", &[mosmigrate.to_str().unwrap(), &pid, "n2"])
        .unwrap();
    assert!(
        out.status.success(),
        "installed mosmigrate failed: {}\nhomed n1: {}",
        text(&out),
        c.log("n1", "homed")
    );
    // The installed mosps sees it at n2 (unless it already ended).
    let mosps = prefix.join("bin/mosps");
    let out = c.exec("n1", &[mosps.to_str().unwrap(), "--json"]).unwrap();
    assert!(out.status.success(), "installed mosps: {}", text(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        rc_file.exists() || listed.replace([' ', '\n'], "").contains("\"node\":\"n2\""),
        "not at n2: {listed}"
    );
    c.wait_for("the job to end", Duration::from_secs(120), || {
        Ok(rc_file.exists())
    })
    .unwrap();
    let _ = shell.wait();
    assert_eq!(std::fs::read_to_string(&rc_file).unwrap().trim(), "5");
    let out = std::fs::read_to_string(&out_file).unwrap();
    assert_eq!(out.lines().count(), 40, "output: {out}");
}

/// `man`'s output without its overstrike (bold: `N\bN`, underline: `_\bx`).
fn plain(page: &str) -> String {
    let mut out: Vec<char> = Vec::new();
    for ch in page.chars() {
        if ch == '\u{8}' {
            out.pop();
        } else {
            out.push(ch);
        }
    }
    out.into_iter().collect()
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mosix-install-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn which(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}
