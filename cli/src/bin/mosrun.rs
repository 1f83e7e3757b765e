//! `mosrun`: run a program under mosix, or restart one from an image.
//!
//! * `mosrun [-L] [-C FILE [-A MINUTES]] -- PROG ARGS...` runs PROG
//!   (keeping mosrun's pid) with libmosix preloaded, registered with this
//!   node's homed; `-L` keeps the balancer from ever moving it, `-h`
//!   keeps it home until moved by hand, `-r NODE` moves it at once to
//!   NODE, `-b` moves it at once to the best node (if one is clearly
//!   better), `-C` names
//!   its checkpoint file, `-A` asks for a checkpoint every MINUTES (the
//!   file is replaced atomically each time).
//! * `mosrun -R FILE [-O FD=PATH]...` restarts the process saved in FILE:
//!   regular files are re-opened by path at their offsets, stdin, stdout
//!   and stderr are this terminal's unless `-O` says otherwise, other
//!   pipes, sockets and ttys become /dev/null (with a warning). Root
//!   restarts a user's image as that user: the program never runs as root.
//! * `mosrun -I FILE [--json]` shows what an image holds.

use anyhow::{Context, Result, bail};
use clap::Parser;
use mosix_cli::args::mosrun::Args;
use mosix_engine::image::layout::{FK_DIR, FK_OTHER, FK_PIPE, FK_REGULAR, FK_SOCKET, FK_TTY};
use mosix_engine::image::{CpuFeatures, LoadedImage};
use mosix_proto::config::Config;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::IntoRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

fn main() {
    mosix_cli::sys::default_sigpipe();
    let args = Args::parse();
    let r = if let Some(f) = &args.inspect {
        inspect(f, args.json)
    } else if let Some(f) = &args.restart {
        restart(f, &args.open)
    } else {
        launch(&args)
    };
    if let Err(e) = r {
        eprintln!("mosrun: {e:#}");
        std::process::exit(125);
    }
}

/// A file mosrun hands to the process (see `mosix_cli::install`).
fn helper(name: &str) -> Result<PathBuf> {
    Ok(mosix_cli::install::helper(name)?)
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("cannot read the current directory")?
        .join(p))
}

fn launch(args: &Args) -> Result<()> {
    let Some((prog, rest)) = args.command.split_first() else {
        bail!("no program given: mosrun [-C FILE [-A MINUTES]] -- PROG ARGS...");
    };
    let config = Config::load(args.config.as_deref())?;
    let lib = helper("libmosix.so")?;
    let sock = config.procs_socket();
    let mut cmd = std::process::Command::new(prog);
    cmd.args(rest);
    let mut preload = lib.as_os_str().to_owned();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    cmd.env("LD_PRELOAD", preload);
    cmd.env("MOSIX_PROCS_SOCKET", &sock);
    cmd.env(
        "MOSIX_FREEZE_SIGNAL",
        config.process.freeze_signal.to_string(),
    );
    if let Some(c) = &args.checkpoint {
        cmd.env("MOSIX_CHECKPOINT_FILE", absolute(c)?);
    }
    if let Some(m) = args.minutes {
        cmd.env("MOSIX_CHECKPOINT_MINUTES", m.to_string());
    }
    if args.no_auto {
        // homed reads it from /proc/PID/environ and lists the process as
        // `no_auto`, which the balancer respects.
        cmd.env("MOSIX_NO_AUTO", "1");
    }
    if args.stay_home {
        // ... `no_auto` until a person moves it once.
        cmd.env("MOSIX_NO_AUTO", "home");
    }
    if args.best || args.run_on.is_some() {
        // The helper polls for this pid; exec keeps it.
        let pid = i32::try_from(std::process::id()).context("pid out of range")?;
        if mosix_cli::sys::spawn_detached().context("cannot start the -b/-r helper")? {
            let flag = if args.best { "-b" } else { "-r" };
            if let Err(e) = move_at_once(&config, pid, args.run_on.as_deref()) {
                eprintln!("mosrun {flag}: process {pid} stays here: {e:#}");
            }
            std::process::exit(0);
        }
    }
    let err = cmd.exec();
    bail!("cannot run {}: {err}", Path::new(prog).display())
}

/// `-b`/`-r`: once homed knows `pid`, move it to `node`, or (`None`) to
/// the best node, if one is clearly better.
fn move_at_once(config: &Config, pid: i32, node: Option<&str>) -> Result<()> {
    use mosix_cli::client::{Daemon, request, request_with_timeout};
    use mosix_proto::control::{ControlRequest, ControlResponse};
    use mosix_proto::process::{ProcessRequest, ProcessResponse};
    let list = ControlRequest::Process {
        request: ProcessRequest::List,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let ControlResponse::Process {
            response: ProcessResponse::List { processes },
        } = request(config, Daemon::Homed, &list)?
        {
            if processes.iter().any(|p| p.pid == pid) {
                break;
            }
        }
        if std::time::Instant::now() > deadline {
            bail!("homed did not list it within 10 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let ControlResponse::Nodes { nodes } =
        request(config, Daemon::Remoted, &ControlRequest::Nodes)?
    else {
        bail!("remoted answered something other than a node list");
    };
    let best = match node {
        Some(name) => {
            let n = nodes
                .iter()
                .find(|n| n.entry.name == name)
                .with_context(|| {
                    format!("no node {name} in this node's view (see mosctl nodes)")
                })?;
            if n.is_self {
                return Ok(());
            }
            if n.state != mosix_proto::control::NodeState::Alive {
                bail!("node {name} is not alive");
            }
            n
        }
        None => match mosix_cli::best::best_node(&nodes) {
            Some(b) => b,
            None => return Ok(()),
        },
    };
    let req = ControlRequest::Process {
        request: ProcessRequest::Migrate {
            pid,
            node: best.entry.name.clone(),
            address: best.entry.address.to_string(),
            automatic: false,
        },
    };
    // A refusal for a passing state (a file it has open just now, the
    // freeze signal blocked for a moment) is tried again for a while.
    let deadline = std::time::Instant::now() + MOVE_RETRY;
    loop {
        match request_with_timeout(
            config,
            Daemon::Homed,
            &req,
            std::time::Duration::from_secs(300),
        )? {
            ControlResponse::Process {
                response: ProcessResponse::Migrated { .. },
            } => return Ok(()),
            ControlResponse::Process {
                response:
                    ProcessResponse::Error {
                        cause: Some(cause), ..
                    },
            } if cause.passing() && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            ControlResponse::Process {
                response: ProcessResponse::Error { message, .. },
            } => bail!("{message}"),
            other => bail!("unexpected answer from homed: {other:?}"),
        }
    }
}

/// How long `-r`/`-b` keep asking while the refusal is for a passing state.
const MOVE_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

fn inspect(file: &Path, json: bool) -> Result<()> {
    let img = LoadedImage::open(file)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&img)?);
        return Ok(());
    }
    println!("image      {}", img.path.display());
    println!("program    {}", img.exe);
    println!("cmdline    {}", img.cmdline.join(" "));
    println!("cwd        {}", img.cwd);
    println!(
        "pid        {}   uid {}   umask {:03o}",
        img.pid, img.uid, img.umask
    );
    println!(
        "size       {} bytes, {} pages of memory",
        img.bytes, img.pages
    );
    println!(
        "cpu        xsave {} bytes, xcr0 {:#x}   kernel {}",
        img.cpu.xsave_size, img.cpu.xcr0, img.kernel_release
    );
    println!("\nregions ({}):", img.regions.len());
    println!(
        "  {:<33} {:<4} {:<11} {:>8}  file",
        "range", "prot", "kind", "pages"
    );
    for r in &img.regions {
        let what = r
            .path
            .clone()
            .or(r.role.map(|s| format!("[{s}]")))
            .unwrap_or_default();
        println!(
            "  {:016x}-{:016x} {:<4} {:<11} {:>8}  {}",
            r.start, r.end, r.prot, r.kind, r.pages, what
        );
    }
    println!("\nfds ({}):", img.fds.len());
    for f in &img.fds {
        println!(
            "  {:>4} {:<6} pos {:<10} flags {:o}{}  {}",
            f.fd,
            f.kind,
            f.pos,
            f.flags,
            if f.cloexec { " cloexec" } else { "" },
            f.path
        );
    }
    Ok(())
}

/// Where each fd of the restarted process comes from.
enum FdSource {
    Open {
        path: PathBuf,
        flags: i32,
        pos: Option<u64>,
    },
    Inherit,
}

fn restart(file: &Path, overrides: &[String]) -> Result<()> {
    let img = LoadedImage::open(file)?;
    img.check_cpu(CpuFeatures::current())?;
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    if me != 0 && me != img.uid {
        bail!(
            "{} belongs to uid {}; only that user or root may restart it",
            file.display(),
            img.uid
        );
    }
    // The image is opened now: root may restart an image only root can
    // read, but everything else is done as its owner.
    let image =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    if me == 0 {
        let meta = image
            .metadata()
            .with_context(|| format!("cannot look at {}", file.display()))?;
        if let Some((uid, gid, name)) = owner_ids(file, img.uid, &meta)? {
            mosix_cli::sys::become_user(uid, gid, name.as_deref()).with_context(|| {
                format!(
                    "cannot become uid {uid} (gid {gid}), the owner of {}",
                    file.display()
                )
            })?;
        }
    }
    // SAFETY: getuid cannot fail.
    let privileged = unsafe { libc::getuid() } == 0;
    let restorer = helper("mosix-restore")?;
    for r in &img.regions {
        if let Some(p) = &r.path {
            let m = std::fs::metadata(p).with_context(|| {
                format!("the image maps {p}, which is missing now: put it back to restart")
            })?;
            if m.len() != r.file_size {
                bail!(
                    "the image maps {p}, which changed size since the checkpoint ({} bytes then, {} now): restore the same file to restart",
                    r.file_size,
                    m.len()
                );
            }
        }
    }
    let mut over: BTreeMap<i32, PathBuf> = BTreeMap::new();
    for o in overrides {
        let (fd, path) = o
            .split_once('=')
            .with_context(|| format!("-O {o}: expected FD=PATH"))?;
        let fd: i32 = fd
            .parse()
            .with_context(|| format!("-O {o}: {fd} is not an fd number"))?;
        over.insert(fd, absolute(Path::new(path))?);
    }
    let mut plan: BTreeMap<i32, FdSource> = BTreeMap::new();
    for f in &img.fds {
        let kind = match f.kind {
            "file" => FK_REGULAR,
            "dir" => FK_DIR,
            "tty" => FK_TTY,
            "pipe" => FK_PIPE,
            "socket" => FK_SOCKET,
            _ => FK_OTHER,
        };
        let flags =
            (f.flags as i32) & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_NOCTTY);
        let src = if let Some(p) = over.remove(&f.fd) {
            let wr = f.flags as i32 & libc::O_ACCMODE != libc::O_RDONLY;
            FdSource::Open {
                path: p,
                flags: flags | if wr { libc::O_CREAT } else { 0 },
                pos: (kind == FK_REGULAR).then_some(f.pos),
            }
        } else {
            match kind {
                FK_REGULAR => {
                    let m = std::fs::metadata(&f.path)
                        .with_context(|| format!("fd {} of the image is {}, which is missing now: put it back or use -O {}=PATH", f.fd, f.path, f.fd))?;
                    if m.len() != f.size {
                        bail!(
                            "fd {} of the image is {}, which changed size since the checkpoint ({} bytes then, {} now): restore it or use -O {}=PATH",
                            f.fd,
                            f.path,
                            f.size,
                            m.len(),
                            f.fd
                        );
                    }
                    FdSource::Open {
                        path: PathBuf::from(&f.path),
                        flags,
                        pos: Some(f.pos),
                    }
                }
                FK_DIR | FK_OTHER => FdSource::Open {
                    path: PathBuf::from(&f.path),
                    flags,
                    pos: None,
                },
                _ if f.fd <= 2 => FdSource::Inherit,
                _ => {
                    eprintln!(
                        "mosrun: fd {} was {} ({}); it is /dev/null now (use -O {}=PATH to choose)",
                        f.fd, f.path, f.kind, f.fd
                    );
                    FdSource::Open {
                        path: PathBuf::from("/dev/null"),
                        flags: libc::O_RDWR,
                        pos: None,
                    }
                }
            }
        };
        plan.insert(f.fd, src);
    }
    for (fd, p) in over {
        plan.insert(
            fd,
            FdSource::Open {
                path: p,
                flags: libc::O_RDWR | libc::O_CREAT,
                pos: None,
            },
        );
    }
    // Open everything first (above every target number), then move.
    let top = plan.keys().copied().max().unwrap_or(2).max(2) + 1;
    let image_fd = dup_above(image.into_raw_fd(), top, false)?;
    let mut opened: Vec<(i32, i32)> = Vec::new();
    for (&fd, src) in &plan {
        if let FdSource::Open { path, flags, pos } = src {
            let c = CString::new(path.as_os_str().as_bytes())?;
            // SAFETY: open(2) with a NUL-terminated path.
            let tmp = unsafe { libc::open(c.as_ptr(), *flags | libc::O_CLOEXEC, 0o666) };
            if tmp < 0 {
                bail!(
                    "cannot open {} for fd {fd}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                );
            }
            if let Some(pos) = pos {
                // SAFETY: lseek on the fd just opened.
                if unsafe { libc::lseek(tmp, *pos as libc::off_t, libc::SEEK_SET) } < 0 {
                    bail!(
                        "cannot seek {} to {pos}: {}",
                        path.display(),
                        std::io::Error::last_os_error()
                    );
                }
            }
            opened.push((fd, dup_above(tmp, top + 1, true)?));
        }
    }
    std::env::set_current_dir(&img.cwd)
        .with_context(|| format!("the image's working directory {} is gone", img.cwd))?;
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(img.umask as libc::mode_t) };
    for (fd, tmp) in opened {
        // SAFETY: dup2 between our own fds; clears FD_CLOEXEC on `fd`
        // (the restorer sets it back where the image had it).
        if unsafe { libc::dup2(tmp, fd) } < 0 {
            bail!("cannot place fd {fd}: {}", std::io::Error::last_os_error());
        }
    }
    // Limits last: a low RLIMIT_NOFILE must not stop us placing high fds
    // the process already had.
    apply_rlimits(&img.rlimits, privileged);
    // Close every other fd, so nothing of ours leaks into the process.
    let keep: Vec<i32> = plan.keys().copied().chain([image_fd]).collect();
    let ours: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect();
    for fd in ours {
        if !keep.contains(&fd) {
            // SAFETY: closing an fd of ours the restored process must not see.
            unsafe { libc::close(fd) };
        }
    }
    let err = std::process::Command::new(&restorer)
        .arg0("mosix-restore")
        .arg(image_fd.to_string())
        .exec();
    bail!("cannot run {}: {err}", restorer.display())
}

/// Who root restarts the image `file` (of uid `image_uid`, the file's
/// status `meta`) as: its owner, `(uid, gid, passwd name)`, or `None` for
/// root's own image. The gid is the file's group when the file is the
/// owner's (homed writes an image with the process's gid), else the
/// owner's primary group. An image whose file belongs to a third user
/// (who could have written any uid into it) is refused.
fn owner_ids(
    file: &Path,
    image_uid: u32,
    meta: &std::fs::Metadata,
) -> Result<Option<(u32, u32, Option<CString>)>> {
    use std::os::unix::fs::MetadataExt;
    if meta.uid() != 0 && meta.uid() != image_uid {
        bail!(
            "{} holds a process of uid {image_uid} but the file belongs to uid {}: not restarted (a user may write any uid into an image)",
            file.display(),
            meta.uid()
        );
    }
    if image_uid == 0 {
        return Ok(None);
    }
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(image_uid))
        .ok()
        .flatten();
    let gid = if meta.uid() == image_uid {
        meta.gid()
    } else if let Some(u) = &user {
        u.gid.as_raw()
    } else {
        bail!(
            "{} belongs to root and holds a process of uid {image_uid}, who has no passwd entry: cannot tell its group; chown the image to uid {image_uid} to restart it as that user",
            file.display()
        );
    };
    let name = user.and_then(|u| CString::new(u.name).ok());
    Ok(Some((image_uid, gid, name)))
}

/// Give this process (and so the restored one) the image's resource
/// limits; a hard limit above ours is kept at ours unless we are root.
fn apply_rlimits(limits: &[[u64; 2]], root: bool) {
    for (res, &[soft, hard]) in limits.iter().enumerate() {
        let mut cur = libc::rlimit64 {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit64 on ourselves, only reading into `cur`.
        let r = unsafe {
            libc::prlimit64(
                0,
                res as libc::__rlimit_resource_t,
                std::ptr::null(),
                &mut cur,
            )
        };
        if r != 0 {
            continue;
        }
        let hard = if root { hard } else { hard.min(cur.rlim_max) };
        let new = libc::rlimit64 {
            rlim_cur: soft.min(hard),
            rlim_max: hard,
        };
        if new.rlim_cur == cur.rlim_cur && new.rlim_max == cur.rlim_max {
            continue;
        }
        // SAFETY: prlimit64 on ourselves with a valid new limit.
        let r = unsafe {
            libc::prlimit64(
                0,
                res as libc::__rlimit_resource_t,
                &new,
                std::ptr::null_mut(),
            )
        };
        if r != 0 {
            eprintln!(
                "mosrun: cannot restore resource limit {res} ({soft}/{hard}): {}; keeping {}/{}",
                std::io::Error::last_os_error(),
                cur.rlim_cur,
                cur.rlim_max
            );
        }
    }
}

/// Move `fd` to the lowest free number >= `min`; cloexec as asked.
fn dup_above(fd: i32, min: i32, cloexec: bool) -> Result<i32> {
    let cmd = if cloexec {
        libc::F_DUPFD_CLOEXEC
    } else {
        libc::F_DUPFD
    };
    // SAFETY: fcntl on an fd we own.
    let n = unsafe { libc::fcntl(fd, cmd, min) };
    if n < 0 {
        bail!("cannot move fd {fd}: {}", std::io::Error::last_os_error());
    }
    // SAFETY: closing the old number of an fd we own.
    unsafe { libc::close(fd) };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_restarts_an_image_as_the_owner_of_its_file_only() {
        let dir = std::env::temp_dir().join(format!("mosrun-owner-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("img");
        std::fs::write(&file, b"").unwrap();
        let root = nix::unistd::geteuid().is_root();
        let owner = if root {
            4242
        } else {
            nix::unistd::geteuid().as_raw()
        };
        if root {
            std::os::unix::fs::chown(&file, Some(owner), Some(owner)).unwrap();
        }
        let meta = std::fs::metadata(&file).unwrap();
        // The file's owner wrote an image of root, or of a third user.
        for claimed in [0, owner + 1] {
            let e = owner_ids(&file, claimed, &meta).unwrap_err().to_string();
            assert!(e.contains(&format!("belongs to uid {owner}")), "{e}");
        }
        let (uid, gid, _) = owner_ids(&file, owner, &meta).unwrap().unwrap();
        assert_eq!((uid, gid), (owner, owner_gid(&meta)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn owner_gid(meta: &std::fs::Metadata) -> u32 {
        std::os::unix::fs::MetadataExt::gid(meta)
    }
}
