//! The view end to end: a real `homed` serving its files, a real FUSE
//! mount of them (`mosix-viewmount`), and real programs on the mount.
//!
//! The home's test directory is a tmpfs mounted only inside homed's own
//! mount namespace; the mount tool runs in another private namespace where
//! that path is an empty directory, so anything the programs read there
//! came through the view, and anything they wrote is checked from inside
//! the home's namespace.
//!
//! Run as root after building the binaries:
//! `cargo build -p mosix-homed -p mosix-fusefs && cargo test -p mosix-tests --test view`.

use mosix_proto::link::{ClusterKey, Hello, Link, Role};
use mosix_proto::view::{
    Bytes, Op, Opened, ROOT_NODE, Reply, Request, Response, Service, ViewOpen,
};
use mosix_tests::procs::text;
use mosix_tests::{bin, require_root};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The user the view acts for in these tests.
const UID: u32 = 4242;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A homed with its private tmpfs, and a view of it mounted elsewhere.
struct View {
    dir: PathBuf,
    key: PathBuf,
    addr: SocketAddr,
    homed: Child,
    mount: Option<Child>,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl View {
    /// Starts homed with `setup` run first in its namespace (as root, with
    /// `$H` the home tmpfs and `$D` the exported directory in it).
    fn start(setup: &str) -> View {
        require_root();
        let dir = PathBuf::from(format!(
            "/tmp/mosix-view-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("home")).unwrap();
        std::fs::create_dir_all(dir.join("mnt")).unwrap();
        std::fs::create_dir_all(dir.join("run")).unwrap();
        let key = dir.join("cluster.key");
        ClusterKey::generate().unwrap().write_new(&key).unwrap();
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let h = dir.join("home");
        let d = h.join("data");
        std::fs::write(
            dir.join("mosix.toml"),
            format!(
                "[node]\nname = \"home1\"\nlisten = \"127.0.0.1:{}\"\nhome_listen = \"{addr}\"\n\
                 key_file = \"{}\"\nruntime_dir = \"{}\"\n\n[view]\nexports = [\"{}\"]\nlocal = []\n",
                free_port(),
                key.display(),
                dir.join("run").display(),
                d.display()
            ),
        )
        .unwrap();
        let script = format!(
            "set -e\nmount -t tmpfs -o mode=0755 mosix-view-test {h}\nH={h}\nD={d}\n\
             mkdir -p $D\nchown {UID}:{UID} $D\n{setup}\nexec {homed} --config {cfg}\n",
            h = h.display(),
            d = d.display(),
            homed = bin("homed").display(),
            cfg = dir.join("mosix.toml").display(),
        );
        let homed = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start homed");
        let deadline = Instant::now() + Duration::from_secs(20);
        // A connect that finds itself (source port == listening port, a TCP
        // self-connect while nothing listens yet) does not count.
        let listening = || {
            TcpStream::connect(addr)
                .map(|s| s.local_addr().ok() != s.peer_addr().ok())
                .unwrap_or(false)
        };
        while !listening() {
            assert!(Instant::now() < deadline, "homed did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut v = View {
            dir,
            key,
            addr,
            homed,
            mount: None,
        };
        v.mount();
        v
    }

    fn mount(&mut self) {
        let mut child = Command::new("unshare")
            .args(["-m", "--propagation", "private"])
            .arg(bin("mosix-viewmount"))
            .args(["--home", &self.addr.to_string(), "--key"])
            .arg(&self.key)
            .args(["--uid", &UID.to_string(), "--gid", &UID.to_string()])
            .arg(self.dir.join("mnt"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mosix-viewmount");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        assert_eq!(
            line.trim(),
            "mounted",
            "mosix-viewmount did not mount the view"
        );
        self.mount = Some(child);
    }

    /// The exported directory as the home sees it.
    fn home_data(&self) -> PathBuf {
        self.dir.join("home/data")
    }

    /// The exported directory through the view.
    fn view_data(&self) -> PathBuf {
        let rel = self.home_data();
        self.dir.join("mnt").join(rel.strip_prefix("/").unwrap())
    }

    /// Runs `script` at home (root, in homed's namespace, cwd the export).
    fn home(&self, script: &str) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.homed.id().to_string(), "-m", "sh", "-c"])
            .arg(format!("cd {} && {script}", self.home_data().display()))
            .output()
            .unwrap()
    }

    /// Runs `script` through the view (in the mount's namespace, cwd the
    /// export's view), as the session's user or, with `as_root`, as root.
    fn client(&self, script: &str, as_root: bool) -> Output {
        let pid = self.mount.as_ref().unwrap().id().to_string();
        let mut c = Command::new("nsenter");
        c.args(["-t", &pid, "-m"]);
        if !as_root {
            c.args([
                "setpriv",
                "--reuid",
                &UID.to_string(),
                "--regid",
                &UID.to_string(),
                "--clear-groups",
            ]);
        }
        c.args(["sh", "-c"])
            .arg(format!("cd {} && {script}", self.view_data().display()))
            .env("HOME", "/nonexistent")
            .output()
            .unwrap()
    }

    fn ok_home(&self, script: &str) -> String {
        let o = self.home(script);
        assert!(o.status.success(), "at home: {script}\n{}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn ok_client(&self, script: &str) -> String {
        let o = self.client(script, false);
        assert!(
            o.status.success(),
            "through the view: {script}\n{}",
            text(&o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if let Some(mut m) = self.mount.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(m.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while m.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = m.kill();
            let _ = m.wait();
        }
        let _ = self.homed.kill();
        let _ = self.homed.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn real_programs_read_and_write_home_files_byte_for_byte() {
    let v = View::start(
        "head -c 3000000 /dev/urandom > $D/input\nmkdir -p $D/tree/sub\necho leaf > $D/tree/sub/leaf\n\
         chown -R 4242:4242 $D",
    );
    // Not visible outside the home's namespace at all.
    assert!(!v.home_data().join("input").exists());

    let at_home = v.ok_home("sha256sum input");
    let through = v.ok_client("sha256sum input");
    assert_eq!(at_home, through);
    assert_eq!(v.ok_client("cat tree/sub/leaf"), "leaf\n");

    v.ok_client(
        "set -e; cp input copy; mkdir -p made/a/b; echo deep > made/a/b/f; \
         tar cf out.tar tree input; mkdir x; tar xf out.tar -C x; cmp x/input input; \
         mv x moved; ln -s input sym; echo one >> app; echo two >> app; \
         ln input hard; mkdir gone; echo z > gone/z; rm -r gone; \
         chmod 640 copy; touch -d '2001-02-03 04:05:06 UTC' copy; \
         printf 0123456789 > trunc; truncate -s 4 trunc; \
         mv made/a/b/f made/renamed",
    );
    assert_eq!(
        v.ok_home("sha256sum < copy"),
        v.ok_home("sha256sum < input")
    );
    v.ok_home("cmp moved/input input && diff -r moved/tree tree");
    assert_eq!(
        v.ok_home("tar tf out.tar | sort"),
        "input\ntree/\ntree/sub/\ntree/sub/leaf\n"
    );
    assert_eq!(v.ok_home("readlink sym"), "input\n");
    assert_eq!(v.ok_home("cat app"), "one\ntwo\n");
    assert_eq!(v.ok_home("cat trunc"), "0123");
    assert_eq!(v.ok_home("cat made/renamed"), "deep\n");
    assert_eq!(v.ok_home("stat -c '%h %i' input | cut -d' ' -f1"), "2\n");
    assert_eq!(
        v.ok_home("stat -c '%u:%g %a %Y' copy"),
        "4242:4242 640 981173106\n"
    );
    v.ok_home("test ! -e gone && test ! -e made/a/b/f");
    // The view sees what home did, and stat agrees with home.
    v.ok_home("echo from-home > fresh && chown 4242 fresh");
    assert_eq!(v.ok_client("cat fresh"), "from-home\n");
    assert_eq!(
        v.ok_client("stat -c '%s %a %u' input copy"),
        v.ok_home("stat -c '%s %a %u' input copy")
    );
    // O_EXCL through the view.
    let o = v.client("set -C; echo x > copy", false);
    assert!(
        !o.status.success(),
        "noclobber create over an existing file succeeded"
    );
    // rename(2) with RENAME_EXCHANGE (2) and RENAME_NOREPLACE (1).
    v.ok_client("echo A > ea; echo B > eb");
    let renameat2 = |flags: u32| {
        v.ok_client(&format!(
            "/usr/bin/python3 -c \"import ctypes; l = ctypes.CDLL(None, use_errno=True); \
             r = l.renameat2(-100, b'ea', -100, b'eb', {flags}); print(r, ctypes.get_errno() if r else 0)\""
        ))
    };
    assert_eq!(renameat2(2), "0 0\n");
    assert_eq!(v.ok_home("cat ea eb"), "B\nA\n");
    assert_eq!(renameat2(1), format!("-1 {}\n", libc::EEXIST));
    assert_eq!(v.ok_home("cat ea eb"), "B\nA\n");
    // A database with fsync and locks (local to this node for now).
    if Path::new("/usr/bin/sqlite3").exists() {
        v.ok_client("sqlite3 db.sqlite 'create table t(a); insert into t values (1),(2),(3);'");
        assert_eq!(v.ok_home("sqlite3 db.sqlite 'select sum(a) from t'"), "6\n");
    }
    // A deleted file stays readable while open; sparse files past 4 GiB.
    assert_eq!(
        v.ok_client("echo kept > del && exec 3<del && rm del && test ! -e del && cat <&3"),
        "kept\n"
    );
    v.ok_client(
        "truncate -s 5G sparse && printf xyz | dd of=sparse bs=1 seek=5000000000 conv=notrunc 2>/dev/null",
    );
    assert_eq!(
        v.ok_home("stat -c %s sparse && dd if=sparse bs=1 skip=5000000000 count=3 2>/dev/null"),
        "5368709120\nxyz"
    );
    assert_eq!(
        v.ok_client("dd if=sparse bs=1 skip=5000000000 count=3 2>/dev/null"),
        "xyz"
    );
    // SEEK_DATA / SEEK_HOLE answer as at home; fallocate reaches home.
    let seek = "/usr/bin/python3 -c \"import os; fd = os.open('sparse', os.O_RDONLY); \
                print(os.lseek(fd, 0, os.SEEK_DATA), os.lseek(fd, 0, os.SEEK_HOLE))\"";
    assert_eq!(v.ok_client(seek), v.ok_home(seek));
    v.ok_client("fallocate -l 1MiB falloc");
    assert_eq!(v.ok_home("stat -c %s falloc"), "1048576\n");
    // mknod: a FIFO made through the view is a FIFO at home.
    v.ok_client("mkfifo fifo");
    v.ok_home("test -p fifo");
    // Extended attributes, both ways.
    v.ok_client("/usr/bin/python3 -c \"import os; os.setxattr('copy', 'user.k', b'v1')\"");
    assert_eq!(
        v.ok_home("/usr/bin/python3 -c \"import os; print(os.getxattr('copy', 'user.k'), os.listxattr('copy'))\""),
        "b'v1' ['user.k']\n"
    );
    // statfs is the home's.
    assert!(v.ok_client("df -P . | tail -1").contains("mosix-view"));
}

#[test]
fn permissions_are_the_owners_and_nothing_outside_the_exports_is_served() {
    let v = View::start(
        "echo top-secret > $D/secret && chmod 600 $D/secret\n\
         mkdir $H/outside && echo outside-marker > $H/outside/marker\n\
         ln -s ../outside/marker $D/escape\nln -s $H/outside/marker $D/absolute\n\
         echo mine > $D/mine && chown 4242 $D/mine",
    );
    for as_root in [false, true] {
        let o = v.client("cat secret", as_root);
        assert!(!o.status.success(), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
            "{}",
            text(&o)
        );
    }
    for link in ["escape", "absolute"] {
        let o = v.client(&format!("cat {link}"), false);
        assert!(!o.status.success(), "{}", text(&o));
        assert!(!String::from_utf8_lossy(&o.stdout).contains("outside-marker"));
    }
    // The passage above the export shows only the export.
    assert_eq!(v.ok_client("ls -a .."), ".\n..\ndata\n");
    let o = v.client("ls ../outside", false);
    assert!(!o.status.success(), "{}", text(&o));
    // Creating next to the export is refused; changing root's file too.
    let o = v.client("touch ../newfile", false);
    assert!(!o.status.success(), "{}", text(&o));
    let o = v.client("chmod 666 secret", false);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Operation not permitted"),
        "{}",
        text(&o)
    );
    assert_eq!(v.ok_client("cat mine"), "mine\n");
    // access(2) answers as the owner at home would.
    assert_eq!(
        v.ok_client(
            "test -r mine && echo r; test -w secret || echo not-w; test -r secret || echo not-r"
        ),
        "r\nnot-w\nnot-r\n"
    );
}

/// Opens a raw view session, as a misbehaving or foreign node might.
fn raw_session(
    addr: SocketAddr,
    key: &ClusterKey,
    uid: u32,
) -> (Link<TcpStream>, Link<TcpStream>, Opened) {
    let connect = || {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Link::connect(s, key, Hello::new("raw", Role::Remoted))
            .unwrap()
            .0
    };
    let mut req = connect();
    req.send(&Service::View(ViewOpen {
        session: [uid.into(), 77],
        uid,
        gid: uid,
        groups: vec![],
    }))
    .unwrap();
    let mut rep = connect();
    rep.send(&Service::ViewReplies {
        session: [uid.into(), 77],
    })
    .unwrap();
    let opened: Opened = rep.recv().unwrap();
    (req, rep, opened)
}

#[test]
fn the_server_refuses_escapes_root_and_garbage() {
    let v = View::start("true");
    let key = ClusterKey::load(&v.key).unwrap();

    let (_req, _rep, opened) = raw_session(v.addr, &key, 0);
    assert!(
        matches!(opened, Opened::Refused { ref message } if message.contains("root")),
        "{opened:?}"
    );

    let (mut req, mut rep, opened) = raw_session(v.addr, &key, UID);
    assert!(matches!(opened, Opened::Ready { .. }), "{opened:?}");
    for (id, name) in [(1u64, &b".."[..]), (2, b"tmp/x"), (3, b"."), (4, b"")] {
        req.send(&Request {
            id,
            op: Op::Lookup {
                parent: ROOT_NODE,
                name: Bytes(name.to_vec()),
            },
        })
        .unwrap();
        let r: Response = rep.recv().unwrap();
        assert_eq!(
            r,
            Response {
                id,
                result: Err(libc::EINVAL)
            }
        );
    }
    req.send(&Request {
        id: 9,
        op: Op::GetAttr { node: 123_456 },
    })
    .unwrap();
    let r: Response = rep.recv().unwrap();
    assert_eq!(r.result, Err(libc::ESTALE));
    req.send(&Request {
        id: 10,
        op: Op::Ping,
    })
    .unwrap();
    assert_eq!(rep.recv::<Response>().unwrap().result, Ok(Reply::Done));
    // Garbage ends the session with a closed link, and homed keeps serving.
    req.send_bytes(b"\x93not a request").unwrap();
    assert!(rep.recv::<Response>().is_err());
    assert!(v.ok_client("ls -a").contains(".."));
}

#[test]
fn a_vanished_home_gives_eio_quickly_not_a_hang() {
    let mut v = View::start("echo data > $D/f && chown 4242 $D/f");
    assert_eq!(v.ok_client("cat f"), "data\n");
    v.homed.kill().unwrap();
    v.homed.wait().unwrap();
    let start = Instant::now();
    let pid = v.mount.as_ref().unwrap().id().to_string();
    let o = Command::new("nsenter")
        .args(["-t", &pid, "-m", "cat"])
        .arg(v.view_data().join("f"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Input/output error"),
        "{}",
        text(&o)
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
}

/// A python3 program that takes an exclusive fcntl lock on `lk`, says
/// "locked", and holds it until its stdin closes.
const HOLD_LOCK: &str = "import fcntl, sys; f = open('lk', 'r+'); fcntl.lockf(f, fcntl.LOCK_EX); \
                         print('locked', flush=True); sys.stdin.read()";

/// Tries the same lock without waiting; prints "got" or "busy".
const TRY_LOCK: &str = "import fcntl; f = open('lk', 'r+')\ntry:\n    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB); print('got')\nexcept OSError: print('busy')";

fn wait_locked(child: &mut Child) {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    assert_eq!(
        line.trim(),
        "locked",
        "the lock holder did not take its lock"
    );
}

#[test]
fn fcntl_locks_exclude_between_home_and_the_view() {
    let v = View::start("echo x > $D/lk && chown 4242 $D/lk");
    let py = |s: &str| format!("/usr/bin/python3 -c \"{s}\"");
    assert_eq!(v.ok_client(&py(TRY_LOCK)), "got\n");

    // Held at home: the view's process cannot take it.
    let mut home = Command::new("nsenter")
        .args(["-t", &v.homed.id().to_string(), "-m", "sh", "-c"])
        .arg(format!(
            "cd {} && {}",
            v.home_data().display(),
            py(HOLD_LOCK)
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_locked(&mut home);
    assert_eq!(v.ok_client(&py(TRY_LOCK)), "busy\n");
    drop(home.stdin.take());
    home.wait().unwrap();
    assert_eq!(v.ok_client(&py(TRY_LOCK)), "got\n");

    // Held through the view: home cannot take it, until the holder closes.
    let pid = v.mount.as_ref().unwrap().id().to_string();
    let mut remote = Command::new("nsenter")
        .args([
            "-t",
            &pid,
            "-m",
            "setpriv",
            "--reuid",
            "4242",
            "--regid",
            "4242",
            "--clear-groups",
            "sh",
            "-c",
        ])
        .arg(format!(
            "cd {} && {}",
            v.view_data().display(),
            py(HOLD_LOCK)
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_locked(&mut remote);
    assert_eq!(v.ok_home(&py(TRY_LOCK)), "busy\n");
    drop(remote.stdin.take());
    remote.wait().unwrap();
    assert_eq!(v.ok_home(&py(TRY_LOCK)), "got\n");
}
