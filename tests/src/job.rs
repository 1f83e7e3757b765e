//! A program run under `mosrun` at a node by a shell that records its
//! pid (the home pid) and, at the end, `$?` as its parent saw it: the
//! tests' way to start a job and read how it ended.

use crate::{Cluster, bin, bin_dir};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where a [`Job`]'s stdout goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOut {
    /// A file (`<name>.out` in the cluster's directory).
    File,
    /// A pipe into `cat`, which writes the same file.
    Pipe,
    /// /dev/null.
    Null,
}

/// A running (or ended) job; see the module doc.
pub struct Job {
    shell: Child,
    /// The program's command line (as `ps` shows it).
    pub argv: Vec<String>,
    pid_file: PathBuf,
    rc_file: PathBuf,
    /// Its stdout, for [`JobOut::File`] and [`JobOut::Pipe`].
    pub out_file: PathBuf,
}

impl Job {
    /// `mosrun [opts] -- argv` at `node`, stdout to `out`, stderr to
    /// `<name>.err`, stdin from /dev/null.
    pub fn start(
        c: &Cluster,
        node: &str,
        opts: &[&str],
        argv: &[impl AsRef<str>],
        name: &str,
        out: JobOut,
    ) -> Job {
        let argv: Vec<String> = argv.iter().map(|a| a.as_ref().to_string()).collect();
        let pid_file = c.dir.join(format!("{name}.pid"));
        let rc_file = c.dir.join(format!("{name}.rc"));
        let out_file = c.dir.join(format!("{name}.out"));
        let run = format!(
            "{mosrun} {opts} -- {argv}",
            mosrun = bin("mosrun").display(),
            opts = opts.join(" "),
            argv = argv.join(" ")
        );
        let (pid, rc, o) = (pid_file.display(), rc_file.display(), out_file.display());
        let script = match out {
            // The status file appears only once `cat` wrote everything.
            JobOut::Pipe => format!(
                "({run} & echo $! > {pid}; wait $!; echo $? > {rc}.tmp) | cat > {o}; mv {rc}.tmp {rc}"
            ),
            JobOut::File => format!("{run} > {o} & echo $! > {pid}; wait $!; echo $? > {rc}"),
            JobOut::Null => {
                format!("{run} > /dev/null & echo $! > {pid}; wait $!; echo $? > {rc}")
            }
        };
        let err = std::fs::File::create(c.dir.join(format!("{name}.err"))).unwrap();
        let shell = Command::new(bin("mosix-local"))
            .args(["exec", "--dir"])
            .arg(&c.dir)
            .args([node, "--", "sh", "-c", &script])
            .env("MOSIX_BIN_DIR", bin_dir())
            .stdin(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("mosix-local exec");
        Job {
            shell,
            argv,
            pid_file,
            rc_file,
            out_file,
        }
    }

    /// The home pid, once the shell wrote it.
    pub fn home_pid(&self, c: &Cluster) -> i32 {
        c.wait_for("the job's pid file", Duration::from_secs(20), || {
            Ok(std::fs::read_to_string(&self.pid_file).is_ok_and(|s| s.ends_with('\n')))
        })
        .unwrap();
        std::fs::read_to_string(&self.pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Lines of output so far.
    pub fn lines(&self) -> usize {
        std::fs::read(&self.out_file)
            .map(|b| b.iter().filter(|&&x| x == b'\n').count())
            .unwrap_or(0)
    }

    /// Whether it ended (its status is written).
    pub fn done(&self) -> bool {
        std::fs::read_to_string(&self.rc_file).is_ok_and(|s| s.ends_with('\n'))
    }

    /// `$?` as its parent saw it ("" before the end).
    pub fn status(&self) -> String {
        std::fs::read_to_string(&self.rc_file)
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Wait up to `timeout` for the end; (output, `$?`).
    pub fn finish(mut self, c: &Cluster, timeout: Duration) -> (Vec<u8>, String) {
        c.wait_for("the job's end", timeout, || Ok(self.done()))
            .unwrap();
        let _ = self.shell.wait();
        (
            std::fs::read(&self.out_file).unwrap_or_default(),
            self.status(),
        )
    }

    /// The node whose `remoted` (pids in `remoteds`) the job's body
    /// descends from, `home` if the program runs at home (the home pid
    /// `home_pid` is the program, not a deputy), None if it runs nowhere.
    pub fn node(
        &self,
        home_pid: i32,
        home: &str,
        remoteds: &BTreeMap<String, i32>,
    ) -> Option<String> {
        let argv: Vec<&str> = self.argv.iter().map(String::as_str).collect();
        for pid in crate::procs::processes_running(&argv) {
            if pid == home_pid {
                // ps shows a deputy with the program's command line too.
                if crate::procs::is_deputy(pid) {
                    continue;
                }
                return Some(home.to_string());
            }
            for (node, &r) in remoteds {
                if crate::procs::descends_from(pid, r) {
                    return Some(node.clone());
                }
            }
        }
        None
    }
}
