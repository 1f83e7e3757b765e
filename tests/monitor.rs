//! `mosmon`'s live view, driven for real (issue 6): it runs in a
//! pseudo-terminal of a set size against a running 3-node cluster, and what
//! it writes is fed to a terminal emulator (the `vt100` crate), so the
//! assertions are on the screen a person would see: a row per node,
//! refreshes, the view keys, and `q` leaving the terminal as it was.

use mosix_tests::{Cluster, bin, bin_dir};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROWS: u16 = 30;
const COLS: u16 = 140;

/// A program running in a pseudo-terminal: the master end, everything the
/// program wrote, and the screen it drew.
struct Screen {
    master: std::fs::File,
    raw: Vec<u8>,
    parser: vt100::Parser,
}

impl Screen {
    /// Reads what the program wrote for up to `wait` (less if nothing
    /// more comes quickly once something came).
    fn pump(&mut self, wait: Duration) {
        let end = Instant::now() + wait;
        let mut buf = [0u8; 8192];
        while Instant::now() < end {
            let left = end.saturating_duration_since(Instant::now());
            let ms = u16::try_from(left.as_millis().min(200)).unwrap_or(200);
            let mut p = [nix::poll::PollFd::new(
                self.master.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            if nix::poll::poll(&mut p, nix::poll::PollTimeout::from(ms)).unwrap_or(0) == 0 {
                continue;
            }
            match self.master.read(&mut buf) {
                Ok(n) if n > 0 => {
                    self.raw.extend_from_slice(&buf[..n]);
                    self.parser.process(&buf[..n]);
                }
                // EIO: every slave end is closed (the program is gone).
                _ => return,
            }
        }
    }

    /// The screen's text now.
    fn text(&self) -> String {
        self.parser.screen().contents()
    }

    /// Polls until `cond` holds on the screen's text; fails with the
    /// screen shown otherwise.
    fn wait_for(&mut self, what: &str, timeout: Duration, cond: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + timeout;
        loop {
            let t = self.text();
            if cond(&t) {
                return t;
            }
            if Instant::now() >= end {
                panic!("the screen never showed {what} within {timeout:?}; it shows:\n{t}");
            }
            self.pump(Duration::from_millis(200));
        }
    }

    fn press(&mut self, key: &str) {
        self.master.write_all(key.as_bytes()).unwrap();
    }
}

/// The line of the screen holding `needle`, if any.
fn line_with<'a>(text: &'a str, needle: &str) -> Option<&'a str> {
    text.lines().find(|l| l.contains(needle))
}

/// The `HH:MM:SS` after "updated " in the title, if shown.
fn updated_at(text: &str) -> Option<String> {
    let title = text.lines().next()?;
    let at = title.find("updated ")? + "updated ".len();
    title.get(at..at + 8).map(str::to_owned)
}

/// In a forked child: a new session whose controlling terminal is fd 0.
fn controlling_terminal() -> std::io::Result<()> {
    // SAFETY: setsid(2) has no memory effects.
    if unsafe { libc::setsid() } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: TIOCSCTTY takes an int flag, no memory.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Starts `mosmon` (live) at `node` in a fresh pseudo-terminal.
fn start_mosmon(c: &Cluster, node: &str) -> (Child, Screen) {
    let ws = nix::pty::Winsize {
        ws_row: ROWS,
        ws_col: COLS,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).unwrap();
    // The master must not leak into mosmon (it would hold its own
    // terminal's other end open).
    nix::fcntl::fcntl(
        &pty.master,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .unwrap();
    let slave: OwnedFd = pty.slave;
    let mut cmd = Command::new(bin("mosix-local"));
    cmd.args(["exec", "--dir"])
        .arg(&c.dir)
        .args([node, "--", bin("mosmon").to_str().unwrap()])
        .env("MOSIX_BIN_DIR", bin_dir())
        .env("TERM", "xterm-256color")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    // SAFETY: the closure runs in the child before exec and only makes
    // async-signal-safe calls (setsid, ioctl).
    unsafe {
        cmd.pre_exec(controlling_terminal);
    }
    let child = cmd.spawn().unwrap();
    // `cmd` still holds the parent's copies of the slave: drop them, so
    // reads see EIO once mosmon and mosix-local are gone.
    drop(cmd);
    let screen = Screen {
        master: std::fs::File::from(pty.master),
        raw: Vec::new(),
        parser: vt100::Parser::new(ROWS, COLS, 0),
    };
    (child, screen)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

#[test]
fn the_live_view_shows_every_node_refreshes_switches_views_and_quits_cleanly() {
    let c = Cluster::up(3).unwrap();
    c.wait_for("n1 to see n2 and n3 alive", Duration::from_secs(30), || {
        let rows = c.nodes_seen_by("n1")?;
        Ok(rows.iter().filter(|r| r.state == "alive").count() == 3)
    })
    .unwrap();
    let (mut child, mut s) = start_mosmon(&c, "n1");

    // The load view: title, a row with a bar per node, the keys.
    let first = s.wait_for(
        "the load view with a row per node",
        Duration::from_secs(30),
        |t| {
            t.contains("mosmon n1: load")
                && ["n1*", "n2", "n3"].iter().all(|n| {
                    line_with(t, &format!("{n} "))
                        .is_some_and(|l| l.contains("cpus ") && l.contains("....."))
                })
                && t.contains("q quit")
        },
    );
    assert!(
        s.parser.screen().alternate_screen(),
        "the live view is not on the alternate screen"
    );
    assert!(
        s.parser.screen().hide_cursor(),
        "the cursor is shown during the live view"
    );
    let n2 = line_with(&first, "n2 ").unwrap();
    assert!(n2.contains("speed"), "row of n2: {n2}");

    // A refresh: the title's time moves on within a few seconds.
    let t0 = updated_at(&first).unwrap_or_else(|| panic!("no refresh time in:\n{first}"));
    s.wait_for(
        "a refresh (the title's time changing)",
        Duration::from_secs(10),
        |t| updated_at(t).is_some_and(|u| u != t0),
    );

    // The view keys.
    s.press("m");
    s.wait_for("the memory view after `m`", Duration::from_secs(10), |t| {
        t.contains("free memory")
            && ["n1*", "n2", "n3"]
                .iter()
                .all(|n| line_with(t, &format!("{n} ")).is_some_and(|l| l.contains("iB")))
    });
    s.press("g");
    s.wait_for("the guests view after `g`", Duration::from_secs(10), |t| {
        t.contains("guests here (#)") && line_with(t, "n3 ").is_some_and(|l| l.contains("0 / 0"))
    });
    s.press("l");
    s.wait_for(
        "the load view again after `l`",
        Duration::from_secs(10),
        |t| t.contains("mosmon n1: load") && !t.contains("guests here (#)"),
    );

    // `q` quits within a few seconds (a refresh under way may take up to
    // its 2 s timeout) with status 0, and the terminal is given back.
    let before_q = s.raw.len();
    s.press("q");
    let end = Instant::now() + Duration::from_secs(8);
    let status = loop {
        s.pump(Duration::from_millis(100));
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < end,
            "mosmon did not quit within 8 s of `q`; screen:\n{}",
            s.text()
        );
    };
    s.pump(Duration::from_millis(300));
    assert!(status.success(), "mosmon ended with {status}");
    let after = &s.raw[before_q..];
    assert!(
        find(after, b"\x1b[?1049l").is_some(),
        "the alternate screen was not left: {:?}",
        String::from_utf8_lossy(after)
    );
    assert!(
        find(after, b"\x1b[?25h").is_some(),
        "the cursor was not shown again: {:?}",
        String::from_utf8_lossy(after)
    );
    assert!(!s.parser.screen().alternate_screen());
    assert!(!s.parser.screen().hide_cursor());
}

#[test]
fn help_lists_the_keys() {
    for flag in ["-h", "--help"] {
        let out = Command::new(bin("mosmon")).arg(flag).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        for key in ["l load", "m free memory", "g guests", "q or Esc quit"] {
            assert!(
                text.contains(key),
                "mosmon {flag} does not list `{key}`:\n{text}"
            );
        }
    }
}
