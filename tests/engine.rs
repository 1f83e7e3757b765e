//! The migration engine on one node: programs frozen at random instants,
//! written to an image (`mosmigrate PID chkexit`), and restarted from it
//! (`mosrun -R`) must print byte-identical output and exit with the same
//! status as an undisturbed run. Each test starts its own `homed` with a
//! temporary configuration and runtime directory. Run as root.

use mosix_tests::{bin, require_root};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A homed of our own, in a fresh directory, stopped and removed on drop.
struct Home {
    dir: PathBuf,
    config: PathBuf,
    homed: Child,
}

impl Home {
    fn start() -> Home {
        require_root();
        let dir = std::env::temp_dir().join(format!(
            "mosix-engine-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("run")).unwrap();
        let config = dir.join("mosix.toml");
        let key = dir.join("cluster.key");
        let keygen = Command::new(bin("mosctl"))
            .arg("keygen")
            .arg(&key)
            .output()
            .expect("run mosctl keygen");
        assert!(keygen.status.success(), "mosctl keygen failed");
        // One node, alone: its link port on an ephemeral loopback port.
        std::fs::write(
            &config,
            format!(
                "[node]\nname = \"engine-test\"\nlisten = \"127.0.0.1:0\"\n\
                 home_listen = \"127.0.0.1:0\"\nkey_file = \"{}\"\nruntime_dir = \"{}\"\n",
                key.display(),
                dir.join("run").display()
            ),
        )
        .unwrap();
        let log = File::create(dir.join("homed.log")).unwrap();
        let homed = Command::new(bin("homed"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start homed");
        let home = Home { dir, config, homed };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(home.dir.join("run/procs.sock").exists()
            && home.dir.join("run/homed.sock").exists())
        {
            assert!(
                Instant::now() < deadline,
                "homed did not open its sockets: {}",
                home.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        home
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("homed.log")).unwrap_or_default()
    }

    fn tool(&self, name: &str) -> Command {
        let mut c = Command::new(bin(name));
        c.env("MOSIX_CONFIG", &self.config);
        c
    }

    /// `mosrun -- argv` with stdout to `out` (a regular file, so a restart
    /// re-opens it at its offset), in `cwd`.
    fn run(&self, argv: &[&str], out: &Path, cwd: &Path) -> Child {
        self.tool("mosrun")
            .arg("--")
            .args(argv)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(File::create(out).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("mosrun")
    }

    /// Wait until `pid` is listed by mosps (it has registered).
    fn wait_registered(&self, pid: u32, child: &mut Child) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if child.try_wait().unwrap().is_some() {
                return false;
            }
            let out = self.tool("mosps").arg("--json").output().unwrap();
            assert!(
                out.status.success(),
                "mosps failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let rows = v.as_array().expect("mosps --json prints an array");
            if rows.iter().any(|r| r["pid"].as_u64() == Some(pid as u64)) {
                for r in rows {
                    assert!(r["cmdline"].is_array(), "{r}");
                }
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "process {pid} never registered: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `mosmigrate PID chkexit IMG`; Ok(()) if the image was written.
    fn chkexit(&self, pid: u32, img: &Path) -> Result<(), String> {
        let out = self
            .tool("mosmigrate")
            .arg(pid.to_string())
            .arg("chkexit")
            .arg(img)
            .output()
            .unwrap();
        if out.status.success() {
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                img.display().to_string()
            );
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `mosrun -R IMG` (stdout/stderr are the image's own files).
    fn restart(&self, img: &Path) -> Child {
        self.tool("mosrun")
            .arg("-R")
            .arg(img)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosrun -R")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = self.homed.kill();
        let _ = self.homed.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("homed log:\n{}", self.log());
        }
    }
}

/// xorshift, seeded from the clock (printed, so a failure can be replayed
/// with MOSIX_TEST_SEED).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("MOSIX_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("MOSIX_TEST_SEED={seed}");
        Rng(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Build examples/c/NAME.c into the home's directory.
fn build_c(home: &Home, name: &str) -> PathBuf {
    // -mavx: selfcheck keeps AVX registers live across the freeze.
    mosix_tests::build_c_example(name, &home.dir, &["-mavx"])
}

/// Run `argv` undisturbed: (stdout, status).
fn reference(argv: &[&str], cwd: &Path) -> (Vec<u8>, ExitStatus) {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out.stdout, out.status)
}

/// Run `argv` under mosix, checkpoint-and-exit it at random instants
/// (`min_ms..max_ms` apart, at most `max_cuts` times), restart it from the
/// image each time; return (stdout, final status, number of restarts).
fn run_with_cuts(
    home: &Home,
    argv: &[&str],
    cwd: &Path,
    min_ms: u64,
    max_ms: u64,
    max_cuts: usize,
) -> (Vec<u8>, ExitStatus, usize) {
    let mut rng = Rng::new();
    let out = home.path("out");
    let img = home.path("img");
    let mut child = home.run(argv, &out, cwd);
    let mut cuts = 0;
    while cuts < max_cuts {
        let pid = child.id();
        if !home.wait_registered(pid, &mut child) {
            break;
        }
        std::thread::sleep(Duration::from_millis(
            min_ms + rng.below(max_ms - min_ms + 1),
        ));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        let _ = std::fs::remove_file(&img);
        match home.chkexit(pid, &img) {
            Ok(()) => {}
            Err(e) => {
                // Only acceptable if the program ended meanwhile.
                let st = child.wait().unwrap();
                assert!(
                    img.metadata().is_err(),
                    "failed checkpoint left an image: {e}"
                );
                eprintln!("checkpoint raced with the end of the program ({st}): {e}");
                break;
            }
        }
        let st = child.wait().unwrap();
        assert_eq!(
            st.code(),
            Some(0),
            "a chkexit'ed process ends with status 0"
        );
        child = home.restart(&img);
        cuts += 1;
    }
    let status = child.wait().unwrap();
    (std::fs::read(&out).unwrap(), status, cuts)
}

#[test]
fn selfchecking_program_survives_many_checkpoints_and_restarts() {
    let home = Home::start();
    let exe = build_c(&home, "selfcheck");
    let data = home.path("data.bin");
    let bytes: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&data, &bytes).unwrap();
    let argv = [exe.to_str().unwrap(), "60000", data.to_str().unwrap()];
    let (want, want_status) = reference(&argv, &home.dir);
    // The reference run wrote to its private mapping only: the file is unchanged.
    assert_eq!(std::fs::read(&data).unwrap(), bytes);
    let (got, status, cuts) = run_with_cuts(&home, &argv, &home.dir, 50, 400, 8);
    assert!(cuts >= 2, "only {cuts} checkpoints landed mid-run");
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
    assert_eq!(status.code(), want_status.code());
    assert!(String::from_utf8_lossy(&got).starts_with("OK rounds=60000"));
}

/// Deterministic text input: `lines` lines of pseudo-random words.
fn text_file(path: &Path, lines: usize) {
    use std::io::Write;
    let mut w = std::io::BufWriter::new(File::create(path).unwrap());
    let mut x: u64 = 0x1234_5678_9abc_def1;
    for i in 0..lines {
        for _ in 0..6 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            write!(w, "{:x} ", x % 0xffff_ffff).unwrap();
        }
        writeln!(w, "{i}").unwrap();
    }
}

/// A real program nobody here wrote, frozen once mid-run.
fn real_program(home: &Home, argv: &[&str]) {
    let (want, want_status) = reference(argv, &home.dir);
    let (got, status, cuts) = run_with_cuts(home, argv, &home.dir, 150, 300, 1);
    assert_eq!(
        cuts, 1,
        "{argv:?} ended before it could be checkpointed; make its input larger"
    );
    assert!(
        got == want,
        "{argv:?}: output differs after restart ({} vs {} bytes)",
        got.len(),
        want.len()
    );
    assert_eq!(status.code(), want_status.code(), "{argv:?}");
}

#[test]
fn real_interpreters_survive_chkexit_and_restart() {
    let home = Home::start();
    let py = home.path("loop.py");
    std::fs::write(
        &py,
        "t = 0\nfor i in range(12000000):\n    t = (t * 31 + i) % 1000003\n    if i % 1000000 == 0:\n        print('progress', i, t, flush=True)\nprint('done', t)\n",
    )
    .unwrap();
    real_program(&home, &[mosix_tests::real_python3(), py.to_str().unwrap()]);
    real_program(
        &home,
        &[
            "/usr/bin/perl",
            "-e",
            "$|=1; $t=0; for $i (1..40000000) { $t = ($t*31+$i) % 1000003; print \"$i $t\\n\" if $i % 4000000 == 0 } print \"$t\\n\"; exit 3",
        ],
    );
    real_program(
        &home,
        &[
            "/usr/bin/awk",
            "BEGIN{t=0; for(i=0;i<20000000;i++){t=(t*31+i)%1000003; if(i%2000000==0){print i, t; fflush()}}; print t}",
        ],
    );
    let bc_in = home.path("pi.bc");
    std::fs::write(&bc_in, "scale=2200\n4*a(1)\nquit\n").unwrap();
    real_program(&home, &["/usr/bin/bc", "-l", bc_in.to_str().unwrap()]);
}

#[test]
fn real_filters_survive_chkexit_and_restart() {
    let home = Home::start();
    let big = home.path("big.txt");
    text_file(&big, 1_000_000);
    let b = big.to_str().unwrap();
    real_program(
        &home,
        &["/usr/bin/sha256sum", b, b, b, b, b, b, b, b, b, b, b, b],
    );
    real_program(&home, &["/usr/bin/gzip", "-9", "-c", b]);
    real_program(
        &home,
        &[
            "/usr/bin/sort",
            "--parallel=1",
            "-S",
            "64M",
            "-T",
            home.dir.to_str().unwrap(),
            b,
        ],
    );
}

#[test]
fn bad_images_are_refused_with_a_clear_error_and_no_process() {
    let home = Home::start();
    let exe = build_c(&home, "selfcheck");
    let data = home.path("data.bin");
    std::fs::write(&data, vec![7u8; 65536]).unwrap();
    let argv = [exe.to_str().unwrap(), "60000", data.to_str().unwrap()];
    let out = home.path("out");
    let img = home.path("img");
    let mut child = home.run(&argv, &out, &home.dir);
    assert!(home.wait_registered(child.id(), &mut child));
    std::thread::sleep(Duration::from_millis(200));
    home.chkexit(child.id(), &img).expect("checkpoint");
    child.wait().unwrap();
    let good = std::fs::read(&img).unwrap();

    let try_restart = |bytes: &[u8]| -> (bool, String) {
        let bad = home.path("bad");
        std::fs::write(&bad, bytes).unwrap();
        let o = home
            .tool("mosrun")
            .arg("-R")
            .arg(&bad)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let mut flipped = good.clone();
    let at = good.len() - 5000;
    flipped[at] ^= 0x40;
    let (ok, err) = try_restart(&flipped);
    assert!(
        !ok && err.contains("corrupted") && err.contains("checksum"),
        "{err}"
    );
    let (ok, err) = try_restart(&good[..good.len() / 2]);
    assert!(!ok && err.contains("corrupted or truncated"), "{err}");
    let (ok, err) = try_restart(b"not an image at all, but long enough to hold a header? no.");
    assert!(
        !ok && err.contains("corrupted or truncated") || err.contains("not a mosix image"),
        "{err}"
    );
    // Nothing was written to the program's output by the failed restarts.
    let before = std::fs::read(&out).unwrap();

    // The good image restarts and finishes; the same image again is refused
    // clearly because its output file has grown since.
    let st = home.restart(&img).wait().unwrap();
    assert!(st.success());
    assert!(String::from_utf8_lossy(&std::fs::read(&out).unwrap()).starts_with("OK rounds=60000"));
    assert!(before.is_empty());
    let o = home
        .tool("mosrun")
        .arg("-R")
        .arg(&img)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("changed size"), "{err}");

    // Inspecting shows the program and its regions.
    let o = home
        .tool("mosrun")
        .arg("-I")
        .arg(&img)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["exe"].as_str(), Some(exe.to_str().unwrap()));
    assert!(
        v["regions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["kind"] == "vdso")
    );
}

#[test]
fn unfreezable_processes_are_refused_and_run_on() {
    let home = Home::start();
    let out = home.path("out");
    let mut child = home.run(
        &[mosix_tests::real_python3(), "-c", "import threading,time\nt=threading.Thread(target=time.sleep,args=(3,))\nt.start()\ntime.sleep(0.5)\nprint('still here')\nt.join()"],
        &out,
        &home.dir,
    );
    assert!(home.wait_registered(child.id(), &mut child));
    // Python starts its second thread some time after registering.
    let tasks = format!("/proc/{}/task", child.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&tasks).map(|d| d.count()).unwrap_or(0) < 2 {
        assert!(Instant::now() < deadline, "the second thread never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let err = home
        .chkexit(child.id(), &home.path("img"))
        .expect_err("a 2-thread process must be refused");
    assert!(err.contains("threads"), "{err}");
    assert!(!home.path("img").exists());
    assert!(child.wait().unwrap().success());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "still here\n");

    // A program may not take the freeze signal away from libmosix.
    let exe = build_c(&home, "grabsig");
    let mut child = home.run(&[exe.to_str().unwrap()], &out, &home.dir);
    assert!(child.wait().unwrap().success());
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "sigaction(63) = -1 Invalid argument\nsignal(63) = SIG_ERR\nsigaction(10) = 0\n"
    );
}

#[test]
fn checkpoint_continue_then_restart_while_the_original_runs_and_chkstop() {
    let home = Home::start();
    let exe = build_c(&home, "selfcheck");
    let data = home.path("data.bin");
    std::fs::write(&data, vec![3u8; 65536]).unwrap();
    let argv = [exe.to_str().unwrap(), "60000", data.to_str().unwrap()];
    let (want, _) = reference(&argv, &home.dir);
    let out_a = home.path("a");
    let out_b = home.path("b");
    let img = home.path("img");
    let mut child = home.run(&argv, &out_a, &home.dir);
    assert!(home.wait_registered(child.id(), &mut child));
    std::thread::sleep(Duration::from_millis(300));
    let o = home
        .tool("mosmigrate")
        .arg(child.id().to_string())
        .arg("checkpoint")
        .arg(&img)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        child.try_wait().unwrap().is_none(),
        "checkpoint must let the process go on"
    );
    // A copy from the image runs beside the original (whose pid is taken).
    let mut copy = home
        .tool("mosrun")
        .arg("-R")
        .arg(&img)
        .arg("-O")
        .arg(format!("1={}", out_b.display()))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    assert!(copy.wait().unwrap().success());
    assert!(child.wait().unwrap().success());
    assert_eq!(std::fs::read(&out_a).unwrap(), want);
    assert_eq!(std::fs::read(&out_b).unwrap(), want);

    // chkstop: image written, process stopped, and it goes on when continued.
    let out_c = home.path("c");
    let mut child = home.run(&argv, &out_c, &home.dir);
    assert!(home.wait_registered(child.id(), &mut child));
    std::thread::sleep(Duration::from_millis(300));
    let o = home
        .tool("mosmigrate")
        .arg(child.id().to_string())
        .arg("chkstop")
        .arg(&img)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        let state = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        if state == "T" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "process not stopped after chkstop (state {state})"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(std::fs::read(&out_c).unwrap(), want);
}

#[test]
fn two_gib_of_dirty_memory_checkpoints_and_restarts() {
    let home = Home::start();
    let exe = build_c(&home, "bigmem");
    let mib = std::env::var("MOSIX_TEST_BIG_MIB").unwrap_or_else(|_| "2048".into());
    let argv = [exe.to_str().unwrap(), mib.as_str(), "3"];
    let out = home.path("out");
    let img = home.path("img");
    let mut child = home.run(&argv, &out, &home.dir);
    assert!(home.wait_registered(child.id(), &mut child));
    // Wait for the first pass, so every page is dirty.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(&out).unwrap().contains("pass 1") {
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "bigmem did not get going"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    home.chkexit(child.id(), &img)
        .expect("checkpoint of a large process");
    child.wait().unwrap();
    let size = img.metadata().unwrap().len();
    let want_bytes: u64 = mib.parse::<u64>().unwrap() << 20;
    assert!(
        size > want_bytes,
        "image of {size} bytes cannot hold {want_bytes} dirty bytes"
    );
    let st = home.restart(&img).wait().unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&img);
    assert!(st.success(), "{text}");
    assert!(text.contains(&format!("OK {mib} MiB sum=")), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
}

#[test]
fn limits_umask_and_working_directory_come_back() {
    let home = Home::start();
    let work = home.path("work dir");
    std::fs::create_dir_all(&work).unwrap();
    let prog = "import os, resource\nx = 0\nfor i in range(15000000):\n    x += i\nprint(resource.getrlimit(resource.RLIMIT_NOFILE), oct(os.umask(0)), os.getcwd(), x)\n";
    let script = |runner: &str| {
        format!(
            "ulimit -n 77 && umask 027 && cd \"$1\" && exec {runner} {} -c \"$2\"",
            mosix_tests::real_python3()
        )
    };
    let out = Command::new("/bin/bash")
        .arg("-c")
        .arg(script(""))
        .arg("bash")
        .arg(&work)
        .arg(prog)
        .output()
        .unwrap();
    assert!(out.status.success());
    let want = out.stdout;
    assert!(
        String::from_utf8_lossy(&want).starts_with("(77, 77) 0o27 "),
        "{}",
        String::from_utf8_lossy(&want)
    );
    let out_file = home.path("out");
    let mosrun = format!("{} --", bin("mosrun").display());
    let mut child = Command::new("/bin/bash")
        .env("MOSIX_CONFIG", &home.config)
        .arg("-c")
        .arg(script(&mosrun))
        .arg("bash")
        .arg(&work)
        .arg(prog)
        .stdin(Stdio::null())
        .stdout(File::create(&out_file).unwrap())
        .spawn()
        .unwrap();
    assert!(home.wait_registered(child.id(), &mut child));
    std::thread::sleep(Duration::from_millis(200));
    let img = home.path("img");
    home.chkexit(child.id(), &img).expect("checkpoint");
    child.wait().unwrap();
    // Restarted from elsewhere, with other limits and umask.
    let st = home.restart(&img).wait().unwrap();
    assert!(st.success());
    assert_eq!(
        String::from_utf8_lossy(&std::fs::read(&out_file).unwrap()),
        String::from_utf8_lossy(&want)
    );
}

#[test]
fn a_program_frozen_inside_dlopen_restarts_and_loads_libraries_again() {
    let home = Home::start();
    let exe = build_c(&home, "dlspin");
    let lib = mosix_tests::build_c_example("spinlib", &home.dir, &["-shared", "-fPIC"]);
    let go = home.path("go");
    let out = home.path("out");
    let argv = [
        exe.to_str().unwrap(),
        lib.to_str().unwrap(),
        go.to_str().unwrap(),
    ];
    let mut child = home.run(&argv, &out, &home.dir);
    let pid = child.id();
    assert!(home.wait_registered(pid, &mut child), "dlspin ended early");
    // Frozen while ld.so's load lock is held by the old thread id.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&out)
        .unwrap_or_default()
        .contains("in the constructor")
    {
        assert!(Instant::now() < deadline, "the constructor never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let img = home.path("img");
    home.chkexit(pid, &img).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let mut again = home.restart(&img);
    std::fs::write(&go, b"").unwrap();
    // dlopen and getpwuid take the lock again: they must not wait forever.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = again.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = again.kill();
            panic!(
                "the restarted program hangs after dlopen: {}",
                std::fs::read_to_string(&out).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "start\nin the constructor\nloaded\ncos(0) = 1.0\nuid 0 is root\n"
    );
    assert_eq!(status.code(), Some(0));
}

/// `Uid:` and `Gid:` of `/proc/PID/status` (real, effective, saved, fs).
fn ids_of(pid: u32) -> (String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    (field("Uid:"), field("Gid:"))
}

#[test]
fn root_restarting_a_users_image_runs_it_as_that_user() {
    use std::os::unix::fs::PermissionsExt;
    const USER: u32 = 4242;
    let home = Home::start();
    // The user's own directory, with the program's output and its image.
    let dir = home.path("alice");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(USER), Some(USER)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = dir.join("out");
    std::fs::write(&out, b"").unwrap();
    std::os::unix::fs::chown(&out, Some(USER), Some(USER)).unwrap();
    let img = dir.join("sleep.img");
    let mut child = Command::new("setpriv")
        .args(["--reuid", &USER.to_string(), "--regid", &USER.to_string()])
        .arg("--clear-groups")
        .arg(bin("mosrun"))
        .args(["--", "sleep", "60"])
        .env("MOSIX_CONFIG", &home.config)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(File::options().append(true).open(&out).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("mosrun as the user");
    assert!(home.wait_registered(child.id(), &mut child));
    home.chkexit(child.id(), &img).unwrap();
    let _ = child.wait();
    let mut restarted = home.restart(&img);
    let pid = restarted.id();
    // Its program runs again (it registers with homed), as the image's
    // owner, not as root.
    assert!(
        home.wait_registered(pid, &mut restarted),
        "the restart ended: {}",
        home.log()
    );
    let ids = ids_of(pid);
    let _ = restarted.kill();
    let _ = restarted.wait();
    let user = format!("{USER} {USER} {USER} {USER}");
    assert_eq!(ids, (user.clone(), user));
}
