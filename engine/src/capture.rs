//! Turning a frozen process (blocked in its freeze handler) into an image:
//! maps, pagemap, mm fields, fds, then the pages through `/proc/PID/mem`.

use crate::image::layout::*;
use crate::image::{CpuFeatures, FdSpec, ImageSpec, PageSource, RegionSpec};
use crate::procfs::{self, MapLine};
use std::fs::File;
use std::os::unix::fs::FileExt;

/// pagemap bits (Documentation/admin-guide/mm/pagemap.rst).
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;
const PM_PFN_MASK: u64 = (1 << 55) - 1;

/// Machine facts the capture needs.
pub struct CaptureEnv {
    /// PFN of the kernel's zero page, 0 if unknown (then zero-page
    /// mappings are sent like any page).
    pub zero_pfn: u64,
    /// CPU features of this machine.
    pub cpu: CpuFeatures,
    /// `uname -r`.
    pub kernel_release: String,
}

impl CaptureEnv {
    /// This machine's facts.
    pub fn here() -> CaptureEnv {
        CaptureEnv {
            zero_pfn: crate::sys::zero_pfn(),
            cpu: CpuFeatures::current(),
            kernel_release: crate::sys::kernel_release(),
        }
    }
}

/// Reads the frozen process's memory through `/proc/PID/mem`, which also
/// reads pages the process itself cannot (PROT_NONE).
pub struct ProcMem(pub File);

impl PageSource for ProcMem {
    fn read_pages(&mut self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.0.read_exact_at(buf, addr)
    }
}

/// Build the image description of `pid`, frozen with `record`.
pub fn describe(
    pid: i32,
    uid: u32,
    record: &FreezeRecord,
    env: &CaptureEnv,
) -> Result<ImageSpec, String> {
    let read = |what: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{what}"))
            .map_err(|e| format!("cannot read /proc/{pid}/{what}: {e}"))
    };
    let maps = procfs::parse_maps(&read("maps")?)?;
    let mut mm = procfs::parse_stat(&read("stat")?)?;
    mm.brk = record.brk;
    let auxv = std::fs::read(format!("/proc/{pid}/auxv"))
        .map_err(|e| format!("cannot read /proc/{pid}/auxv: {e}"))?;
    let n = auxv.len().min(64 * 8) / 8;
    for i in 0..n {
        mm.auxv[i] = u64::from_le_bytes(auxv[i * 8..i * 8 + 8].try_into().unwrap_or_default());
    }
    mm.auxv_len = (n * 8) as u64;
    let mut limits = None;
    for (res, slot) in mm.rlimits.iter_mut().enumerate() {
        *slot = match crate::sys::rlimit(pid, res as i32) {
            Ok(l) => l,
            // Another user's process and no CAP_SYS_RESOURCE: the same
            // figures from /proc/PID/limits.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                if limits.is_none() {
                    limits = Some(read("limits")?);
                }
                limits
                    .as_deref()
                    .and_then(|t| procfs::limits_row(t, res))
                    .ok_or_else(|| {
                        format!("cannot read resource limit {res} of process {pid}: {e}, and /proc/{pid}/limits does not show it")
                    })?
            }
            Err(e) => {
                return Err(format!(
                    "cannot read resource limit {res} of process {pid}: {e}"
                ));
            }
        };
    }
    let status = read("status")?;
    let umask = procfs::status_field(&status, "Umask")
        .and_then(|v| u32::from_str_radix(v, 8).ok())
        .unwrap_or(0o022);
    let pagemap = File::open(format!("/proc/{pid}/pagemap"))
        .map_err(|e| format!("cannot open /proc/{pid}/pagemap: {e}"))?;
    let mut regions = Vec::new();
    for m in &maps {
        if let Some(r) = region(m, &pagemap, env.zero_pfn)? {
            regions.push(r);
        }
    }
    let mut open = procfs::open_fds(pid, record.ctl_fd)?;
    open.sort_by_key(|f| f.fd);
    let mut fds: Vec<FdSpec> = Vec::with_capacity(open.len());
    for f in open {
        // The first lower fd with the same open file description.
        let shares_with = fds
            .iter()
            .find(|g| g.desc.shares_with == 0 && crate::sys::same_file(pid, g.desc.fd, f.fd))
            .map(|g| g.desc.fd as u32 + 1)
            .unwrap_or(0);
        fds.push(FdSpec {
            desc: FdDesc {
                fd: f.fd,
                kind: f.kind,
                flags: f.flags,
                cloexec: f.cloexec as u32,
                shares_with,
                reserved: 0,
                pos: f.pos,
                size: f.size,
                path: StrRef::default(),
            },
            path: f.path,
        });
    }
    let cwd = procfs::link(pid, "cwd")?.to_string_lossy().into_owned();
    let exe = procfs::link(pid, "exe")?.to_string_lossy().into_owned();
    Ok(ImageSpec {
        record: *record,
        mm,
        regions,
        fds,
        uid,
        pid,
        umask,
        cwd,
        exe,
        cmdline: procfs::cmdline(pid),
        kernel_release: env.kernel_release.clone(),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        cpu: env.cpu,
    })
}

/// The region for one maps line, or None for what is never sent
/// (`[vsyscall]`, the restorer window).
fn region(m: &MapLine, pagemap: &File, zero_pfn: u64) -> Result<Option<RegionSpec>, String> {
    if m.start >= WINDOW_START && m.end <= WINDOW_START + WINDOW_SIZE {
        return Ok(None);
    }
    if m.start < WINDOW_START + WINDOW_SIZE && m.end > WINDOW_START {
        return Err(format!(
            "mapping {:#x}-{:#x} overlaps the restorer window",
            m.start, m.end
        ));
    }
    let prot = (m.read as u32 * PROT_R) | (m.write as u32 * PROT_W) | (m.exec as u32 * PROT_X);
    let mut desc = RegionDesc {
        start: m.start,
        end: m.end,
        prot,
        file_off: m.offset,
        ..Default::default()
    };
    let special = match m.name.as_str() {
        "[vsyscall]" => return Ok(None),
        "[vvar]" => Some(RK_VVAR),
        "[vvar_vclock]" => Some(RK_VVAR_VCLOCK),
        "[vdso]" => Some(RK_VDSO),
        _ => None,
    };
    if let Some(kind) = special {
        desc.kind = kind;
        return Ok(Some(RegionSpec {
            desc,
            path: None,
            runs: Vec::new(),
        }));
    }
    let is_file = m.name.starts_with('/') && m.inode != 0 && !m.name.ends_with(" (deleted)");
    let npages = (m.end - m.start) / PAGE_SIZE;
    if m.name == "[heap]" {
        desc.flags |= RF_HEAP;
    }
    if m.name == "[stack]" {
        desc.flags |= RF_STACK | RF_GROWSDOWN;
    }
    if is_file {
        desc.file_size = std::fs::metadata(&m.name).map(|md| md.len()).unwrap_or(0);
    }
    let (kind, path, runs) = if is_file && m.shared {
        (RK_FILE_SHARED, Some(m.name.clone()), Vec::new())
    } else if is_file {
        let runs = scan(pagemap, m, |e| {
            (e & PM_PRESENT != 0 && e & PM_FILE == 0) || e & PM_SWAPPED != 0
        })?;
        (RK_FILE_PRIVATE, Some(m.name.clone()), runs)
    } else if m.shared || m.name.ends_with(" (deleted)") {
        // Shared anonymous memory or a deleted file: its pages may live
        // only in the page cache, so send all of them.
        let kind = if m.shared { RK_ANON_SHARED } else { RK_ANON };
        let runs = if m.read || m.shared {
            vec![(0, npages)]
        } else {
            Vec::new()
        };
        (kind, None, runs)
    } else {
        let runs = scan(pagemap, m, |e| {
            if e & PM_SWAPPED != 0 {
                return true;
            }
            e & PM_PRESENT != 0 && (zero_pfn == 0 || e & PM_PFN_MASK != zero_pfn)
        })?;
        (RK_ANON, None, runs)
    };
    desc.kind = kind;
    Ok(Some(RegionSpec { desc, path, runs }))
}

/// Runs of pages of `m` whose pagemap entry satisfies `want`.
fn scan(
    pagemap: &File,
    m: &MapLine,
    want: impl Fn(u64) -> bool,
) -> Result<Vec<(u64, u64)>, String> {
    let npages = (m.end - m.start) / PAGE_SIZE;
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let chunk = 65536u64;
    let mut buf = vec![0u8; (chunk * 8) as usize];
    let mut i = 0u64;
    while i < npages {
        let n = (npages - i).min(chunk);
        let b = &mut buf[..(n * 8) as usize];
        pagemap
            .read_exact_at(b, (m.start / PAGE_SIZE + i) * 8)
            .map_err(|e| format!("cannot read pagemap at {:#x}: {e}", m.start + i * PAGE_SIZE))?;
        for (j, e) in b.chunks_exact(8).enumerate() {
            let e = u64::from_le_bytes(e.try_into().unwrap_or_default());
            if want(e) {
                let page = i + j as u64;
                match runs.last_mut() {
                    Some((s, len)) if *s + *len == page => *len += 1,
                    _ => runs.push((page, 1)),
                }
            }
        }
        i += n;
    }
    Ok(runs)
}
