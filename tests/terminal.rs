//! Input, terminals and identity across migration (issue 4): a body away
//! reads its stdin from a pipe or a pseudo-terminal at home, writes to
//! the terminal, sees `isatty()` and the terminal size as at home, and
//! `getpid()`/`getppid()` give its home ids; Ctrl-C typed at the terminal
//! reaches it. Each test checks where the body really runs.

use mosix_tests::procs::mosps_entry;
use mosix_tests::{Cluster, bin, bin_dir, is_running};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The home pid of the mosix process at n1 whose command line contains
/// `marker`.
fn find_home_pid(c: &Cluster, marker: &str) -> i32 {
    let mut pid = 0;
    c.wait_for("the process to be managed", Duration::from_secs(20), || {
        let out = c.exec("n1", &["mosps", "--json"])?;
        let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
        if let Some(p) = list
            .iter()
            .find(|p| p["cmdline"].to_string().contains(marker))
        {
            pid = p["pid"].as_i64().unwrap_or(0) as i32;
            return Ok(true);
        }
        Ok(false)
    })
    .unwrap();
    pid
}

/// Move `pid` to `node` ("home" brings it back) and check that its body
/// runs there (a descendant of that node's remoted) or at home.
fn move_and_check(c: &Cluster, pid: i32, node: &str) {
    let out = c
        .exec("n1", &["mosmigrate", &pid.to_string(), node])
        .unwrap();
    assert!(
        out.status.success(),
        "mosmigrate {pid} {node}: {}\nhomed n1: {}",
        String::from_utf8_lossy(&out.stderr),
        c.log("n1", "homed")
    );
    let p = mosps_entry(c, "n1", pid).expect("mosps lists it");
    let want = if node == "home" { "n1" } else { node };
    assert_eq!(p["node"], want, "mosps: {p}");
    let is_deputy = mosix_tests::procs::is_deputy(pid);
    if node == "home" {
        assert!(!is_deputy, "home should be the process again");
    } else {
        assert!(is_deputy, "home should be the deputy");
        let remoted = c.daemon_pid(node, "remoted").unwrap();
        let children = descendants(remoted);
        assert!(
            children
                .iter()
                .any(|&b| cmdline_of(b) == cmdline_of_home_program(c, pid)),
            "no body under {node}'s remoted (pid {remoted})"
        );
    }
}

fn cmdline_of(pid: i32) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()
}

/// The program's command line as mosps knows it (the deputy's own is
/// different).
fn cmdline_of_home_program(c: &Cluster, pid: i32) -> Vec<u8> {
    let p = mosps_entry(c, "n1", pid).expect("mosps lists it");
    let mut v = Vec::new();
    for a in p["cmdline"].as_array().unwrap() {
        v.extend_from_slice(a.as_str().unwrap().as_bytes());
        v.push(0);
    }
    v
}

/// Every process under `root` (children, recursively).
fn descendants(root: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        // Children are listed per thread (bodies are forked by a host
        // thread of remoted, not its main thread).
        let tasks = std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten();
        for t in tasks {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for k in kids.split_whitespace().filter_map(|k| k.parse().ok()) {
                out.push(k);
                todo.push(k);
            }
        }
    }
    out
}

#[test]
fn stdin_from_a_pipe_and_home_ids_follow_the_body() {
    let c = Cluster::up(3).unwrap();
    let python = mosix_tests::real_python3();
    let prog = c.dir.join("sumlines.py");
    // Prints, every 20000 lines, the running sum and what getpid() and
    // getppid() say; the sum must match an undisturbed run, the ids must
    // be the home ones wherever the body runs.
    std::fs::write(
        &prog,
        "import os, sys, time\n\
         s = 0\n\
         for i, line in enumerate(sys.stdin):\n\
         \x20   s += int(line)\n\
         \x20   if i % 20000 == 0:\n\
         \x20       print(i, s, os.getpid(), os.getppid(), flush=True)\n\
         \x20       time.sleep(0.15)\n\
         print('total', s, flush=True)\n\
         sys.exit(4)\n",
    )
    .unwrap();
    let out_file = c.dir.join("sum.out");
    let rc_file = c.dir.join("sum.rc");
    let ids_file = c.dir.join("sum.ids");
    let script = format!(
        "seq 1 400000 | {mosrun} -- {python} {prog} > {out} & echo \"$! $$\" > {ids}; wait $!; echo $? > {rc}",
        mosrun = bin("mosrun").display(),
        prog = prog.display(),
        out = out_file.display(),
        ids = ids_file.display(),
        rc = rc_file.display(),
    );
    let mut shell = Command::new(bin("mosix-local"))
        .args(["exec", "--dir"])
        .arg(&c.dir)
        .args(["n1", "--", "bash", "-c", &script])
        .env("MOSIX_BIN_DIR", bin_dir())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    c.wait_for("the ids file", Duration::from_secs(10), || {
        Ok(std::fs::read_to_string(&ids_file).is_ok_and(|s| s.ends_with('\n')))
    })
    .unwrap();
    let ids = std::fs::read_to_string(&ids_file).unwrap();
    let mut ids = ids.split_whitespace().map(|v| v.parse::<i32>().unwrap());
    let (home, shell_pid) = (ids.next().unwrap(), ids.next().unwrap());
    c.wait_for("the process to be managed", Duration::from_secs(10), || {
        Ok(mosps_entry(&c, "n1", home).is_some())
    })
    .unwrap();
    for node in ["n2", "n3", "home"] {
        std::thread::sleep(Duration::from_millis(700));
        move_and_check(&c, home, node);
    }
    c.wait_for("the end", Duration::from_secs(120), || {
        Ok(std::fs::read_to_string(&rc_file).is_ok_and(|s| s.ends_with('\n')))
    })
    .unwrap();
    let _ = shell.wait();
    assert_eq!(std::fs::read_to_string(&rc_file).unwrap().trim(), "4");
    let got = std::fs::read_to_string(&out_file).unwrap();
    let reference = Command::new("sh")
        .arg("-c")
        .arg(format!("seq 1 400000 | {python} {}", prog.display()))
        .output()
        .unwrap();
    let want = String::from_utf8_lossy(&reference.stdout);
    // Same sums at the same lines, and the home ids on every line.
    let strip = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(
        strip(&got),
        strip(&want),
        "sums differ from an undisturbed run"
    );
    for l in got.lines().filter(|l| !l.starts_with("total")) {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(f[2], home.to_string(), "getpid() was not the home pid: {l}");
        assert_eq!(
            f[3],
            shell_pid.to_string(),
            "getppid() was not the home parent: {l}"
        );
    }
}

/// A pseudo-terminal whose slave is the controlling terminal of what we
/// start; we drive the master.
struct Pty {
    master: std::fs::File,
    seen: Vec<u8>,
    /// What to show if an expectation fails.
    context: String,
}

impl Pty {
    /// Wait until the terminal has shown `text` (after what was seen).
    fn expect(&mut self, text: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(i) = find(&self.seen, text.as_bytes()) {
                let upto = i + text.len();
                let shown = String::from_utf8_lossy(&self.seen[..upto]).into_owned();
                self.seen.drain(..upto);
                return shown;
            }
            if Instant::now() >= end {
                let lflag = nix::sys::termios::tcgetattr(&self.master)
                    .map(|t| format!("{:?}", t.local_flags))
                    .unwrap_or_default();
                panic!(
                    "the terminal never showed {text:?}; it showed {:?} (lflag {lflag}; {})",
                    String::from_utf8_lossy(&self.seen),
                    self.context
                );
            }
            let mut p = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&self.master),
                nix::poll::PollFlags::POLLIN,
            )];
            if nix::poll::poll(&mut p, nix::poll::PollTimeout::from(200u16)).unwrap_or(0) > 0 {
                match self.master.read(&mut buf) {
                    Ok(n) if n > 0 => self.seen.extend_from_slice(&buf[..n]),
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }

    fn type_in(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).unwrap();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn a_terminal_at_home_works_for_a_body_away() {
    use std::os::unix::process::CommandExt;
    let c = Cluster::up(3).unwrap();
    let python = mosix_tests::real_python3();
    let ws = nix::pty::Winsize {
        ws_row: 33,
        ws_col: 101,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).unwrap();
    // openpty's fds are inheritable: the master must not leak into the
    // program (which would then hold, and read, its own terminal's
    // other end).
    nix::fcntl::fcntl(
        &pty.master,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .unwrap();
    let slave: OwnedFd = pty.slave;
    let marker = "mx-tty-echo";
    let prog = format!(
        "import os, sys\n\
         # {marker}\n\
         print('ready', os.isatty(0), os.isatty(1), tuple(os.get_terminal_size()), flush=True)\n\
         try:\n\
         \x20   while True:\n\
         \x20       line = input()\n\
         \x20       if line == 'quit':\n\
         \x20           break\n\
         \x20       print('got', line.upper(), os.isatty(0), tuple(os.get_terminal_size()), os.getpid() == os.getpgrp() or os.getpgrp(), flush=True)\n\
         except KeyboardInterrupt:\n\
         \x20   print('interrupted', flush=True)\n\
         \x20   sys.exit(42)\n"
    );
    let mut cmd = Command::new(bin("mosix-local"));
    cmd.args(["exec", "--dir"])
        .arg(&c.dir)
        .args([
            "n1",
            "--",
            bin("mosrun").to_str().unwrap(),
            "--",
            python,
            "-c",
            &prog,
        ])
        .env("MOSIX_BIN_DIR", bin_dir())
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    // SAFETY: the closure runs in the child before exec and only makes
    // async-signal-safe calls (setsid, ioctl).
    unsafe {
        cmd.pre_exec(controlling_terminal);
    }
    let mut child = cmd.spawn().unwrap();
    let mut t = Pty {
        master: std::fs::File::from(pty.master),
        seen: Vec::new(),
        context: String::new(),
    };
    t.expect("ready True True (101, 33)", Duration::from_secs(30));
    let home = find_home_pid(&c, marker);
    for (node, word) in [("n2", "hello"), ("n3", "world"), ("home", "again")] {
        move_and_check(&c, home, node);
        t.context = format!(
            "home {home} stat {:?} wchan {:?}; homed: {}",
            std::fs::read_to_string(format!("/proc/{home}/stat")).unwrap_or_default(),
            std::fs::read_to_string(format!("/proc/{home}/wchan")).unwrap_or_default(),
            c.log("n1", "homed")
        );
        t.type_in(&format!("{word}\n"));
        t.expect(
            &format!("got {} True (101, 33)", word.to_uppercase()),
            Duration::from_secs(30),
        );
    }
    // Away again, Ctrl-C at the terminal reaches the body.
    move_and_check(&c, home, "n2");
    t.type_in("\x03");
    t.expect("interrupted", Duration::from_secs(30));
    let end = Instant::now() + Duration::from_secs(30);
    while is_running(home) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!is_running(home), "the process did not end after Ctrl-C");
    let _ = child.kill();
    let _ = child.wait();
}

/// In a forked child: a new session whose controlling terminal is fd 0,
/// as a login shell's would be.
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

/// A python3 program started with `mosrun` at n1 on a fresh pty of
/// `rows` x `cols` that is its controlling terminal; the test holds the
/// master (`Pty`) and a copy of the slave, to look at the terminal's
/// settings as anyone at home would.
struct PtyJob {
    child: std::process::Child,
    term: Pty,
    slave: OwnedFd,
}

fn start_in_pty(c: &Cluster, prog: &str, rows: u16, cols: u16) -> PtyJob {
    use std::os::unix::process::CommandExt;
    let python = mosix_tests::real_python3();
    let ws = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).unwrap();
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .unwrap();
    }
    let slave: OwnedFd = pty.slave;
    let mut cmd = Command::new(bin("mosix-local"));
    cmd.args(["exec", "--dir"])
        .arg(&c.dir)
        .args([
            "n1",
            "--",
            bin("mosrun").to_str().unwrap(),
            "--",
            python,
            "-c",
            prog,
        ])
        .env("MOSIX_BIN_DIR", bin_dir())
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()));
    // SAFETY: the closure runs in the child before exec and only makes
    // async-signal-safe calls (setsid, ioctl).
    unsafe {
        cmd.pre_exec(controlling_terminal);
    }
    let child = cmd.spawn().unwrap();
    PtyJob {
        child,
        term: Pty {
            master: std::fs::File::from(pty.master),
            seen: Vec::new(),
            context: String::new(),
        },
        slave,
    }
}

/// The terminal's local flags, as anyone at home sees them.
fn local_flags(slave: &OwnedFd) -> nix::sys::termios::LocalFlags {
    nix::sys::termios::tcgetattr(slave).unwrap().local_flags
}

/// Wait until `pid` has ended (the test then reaps the launcher).
fn wait_end(job: &mut PtyJob, pid: i32) {
    let end = Instant::now() + Duration::from_secs(30);
    while is_running(pid) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!is_running(pid), "the process did not end");
    let _ = job.child.kill();
    let _ = job.child.wait();
}

/// The body is still away at `node` (the deputy at home, a body under
/// that node's remoted).
fn still_away(c: &Cluster, pid: i32, node: &str) {
    assert!(
        mosix_tests::procs::is_deputy(pid),
        "the process came home meanwhile"
    );
    let p = mosps_entry(c, "n1", pid).expect("mosps lists it");
    assert_eq!(p["node"], node, "mosps: {p}");
}

#[test]
fn raw_mode_set_away_is_the_terminal_s_mode_at_home() {
    use nix::sys::termios::LocalFlags;
    let c = Cluster::up(2).unwrap();
    let marker = "mx-tty-raw";
    let prog = format!(
        "import os, sys, termios, tty\n\
         # {marker}\n\
         old = termios.tcgetattr(0)\n\
         print('ready', flush=True)\n\
         sys.stdin.readline()\n\
         tty.setraw(0)\n\
         os.write(1, b'raw\\r\\n')\n\
         while True:\n\
         \x20   c = os.read(0, 1)\n\
         \x20   if c == b'q':\n\
         \x20       break\n\
         \x20   os.write(1, b'<key ' + c + b'>\\r\\n')\n\
         termios.tcsetattr(0, termios.TCSADRAIN, old)\n\
         print('cooked', flush=True)\n\
         print('line', sys.stdin.readline().strip().upper(), flush=True)\n"
    );
    let mut job = start_in_pty(&c, &prog, 24, 80);
    job.term.expect("ready", Duration::from_secs(30));
    let home = find_home_pid(&c, marker);
    move_and_check(&c, home, "n2");
    let lflag = local_flags(&job.slave);
    assert!(
        lflag.contains(LocalFlags::ECHO | LocalFlags::ICANON),
        "the terminal starts cooked: {lflag:?}"
    );
    job.term.type_in("go\n");
    job.term.expect("raw\r\n", Duration::from_secs(30));
    // tcsetattr returned in the body: the terminal at home is raw now.
    let lflag = local_flags(&job.slave);
    assert!(
        !lflag.intersects(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG),
        "tty.setraw away did not reach the terminal at home: {lflag:?}"
    );
    // Each key reaches the body at once (no newline needed), and the
    // terminal does not echo it.
    for key in ["a", "b", "7"] {
        job.term.type_in(key);
        let shown = job
            .term
            .expect(&format!("<key {key}>\r\n"), Duration::from_secs(30));
        assert_eq!(
            shown,
            format!("<key {key}>\r\n"),
            "the terminal echoed or showed more than the program's answer"
        );
    }
    still_away(&c, home, "n2");
    job.term.type_in("q");
    job.term.expect("cooked", Duration::from_secs(30));
    let lflag = local_flags(&job.slave);
    assert!(
        lflag.contains(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG),
        "the mode restored away did not reach the terminal at home: {lflag:?}"
    );
    // Cooked for real: the line is echoed, and read whole.
    job.term.type_in("xyz\n");
    let shown = job.term.expect("line XYZ", Duration::from_secs(30));
    assert!(shown.contains("xyz"), "no echo in cooked mode: {shown:?}");
    wait_end(&mut job, home);
}

#[test]
fn stty_in_a_body_sets_the_terminal_at_home() {
    let c = Cluster::up(2).unwrap();
    let marker = "mx-tty-stty";
    // stty runs as a child of the body (a forked body of its own, with
    // its own deputy at home).
    let prog = format!(
        "import subprocess, sys\n\
         # {marker}\n\
         print('ready', flush=True)\n\
         sys.stdin.readline()\n\
         subprocess.run(['stty', '-echo'], check=True)\n\
         print('silent', flush=True)\n\
         print('got', sys.stdin.readline().strip().upper(), flush=True)\n\
         subprocess.run(['stty', 'echo'], check=True)\n\
         print('loud', flush=True)\n\
         print('got', sys.stdin.readline().strip().upper(), flush=True)\n"
    );
    let mut job = start_in_pty(&c, &prog, 24, 80);
    job.term.expect("ready", Duration::from_secs(30));
    let home = find_home_pid(&c, marker);
    move_and_check(&c, home, "n2");
    let stty_at_home = |slave: &OwnedFd| -> String {
        let out = Command::new("stty")
            .arg("-a")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .output()
            .unwrap();
        assert!(out.status.success(), "stty -a at home failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let has = |all: &str, flag: &str| all.split_whitespace().any(|w| w == flag);
    assert!(has(&stty_at_home(&job.slave), "echo"));
    job.term.type_in("go\n");
    job.term.expect("silent", Duration::from_secs(30));
    let all = stty_at_home(&job.slave);
    assert!(
        has(&all, "-echo"),
        "stty -echo away is not seen at home: {all}"
    );
    job.term.type_in("secret\n");
    let shown = job.term.expect("got SECRET", Duration::from_secs(30));
    assert!(!shown.contains("secret"), "the terminal echoed: {shown:?}");
    job.term.expect("loud", Duration::from_secs(30));
    let all = stty_at_home(&job.slave);
    assert!(
        has(&all, "echo"),
        "stty echo away is not seen at home: {all}"
    );
    still_away(&c, home, "n2");
    job.term.type_in("public\n");
    let shown = job.term.expect("got PUBLIC", Duration::from_secs(30));
    assert!(
        shown.contains("public"),
        "no echo after stty echo: {shown:?}"
    );
    wait_end(&mut job, home);
}

#[test]
fn a_window_resized_at_home_is_seen_by_the_body() {
    let c = Cluster::up(2).unwrap();
    let marker = "mx-tty-winch";
    let prog = format!(
        "import os, signal, sys\n\
         # {marker}\n\
         def winch(sig, frame):\n\
         \x20   print('winch', tuple(os.get_terminal_size()), flush=True)\n\
         signal.signal(signal.SIGWINCH, winch)\n\
         print('ready', tuple(os.get_terminal_size()), flush=True)\n\
         try:\n\
         \x20   while True:\n\
         \x20       signal.pause()\n\
         except KeyboardInterrupt:\n\
         \x20   print('bye', tuple(os.get_terminal_size()), flush=True)\n"
    );
    let mut job = start_in_pty(&c, &prog, 24, 80);
    job.term.expect("ready (80, 24)", Duration::from_secs(30));
    let home = find_home_pid(&c, marker);
    move_and_check(&c, home, "n2");
    for (rows, cols) in [(50u16, 132u16), (30, 90)] {
        // As a terminal emulator does: the new size on the master, and
        // SIGWINCH to the foreground group (the kernel sends one too).
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let master = std::os::fd::AsRawFd::as_raw_fd(&job.term.master);
        // SAFETY: TIOCSWINSZ reads the winsize we own.
        assert_eq!(unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &ws) }, 0);
        let fg = nix::unistd::tcgetpgrp(&job.term.master).unwrap();
        nix::sys::signal::killpg(fg, nix::sys::signal::Signal::SIGWINCH).unwrap();
        job.term
            .expect(&format!("winch ({cols}, {rows})"), Duration::from_secs(30));
        still_away(&c, home, "n2");
    }
    job.term.type_in("\x03");
    job.term.expect("bye (90, 30)", Duration::from_secs(30));
    wait_end(&mut job, home);
}
