//! The freeze handshake with a process's freeze handler (ARCHITECTURE.md
//! section 3, step 2), written once for `homed` (a process at home) and
//! `remoted` (a body away), like CRIU's compel talks to its parasite.
//!
//! ```text
//! daemon: freeze signal -> handler: FreezeRecord (on the control socket)
//!   -> daemon: capture (the process waits in its handler) -> verdict
//! ```
//!
//! Each daemon gives [`freeze`] its control socket behind the small
//! [`Control`] trait (how to signal, read, and serve what else the
//! process may say meanwhile); the order of the steps, the timeouts and
//! the checks of the record live here only. Verdicts are written with
//! [`Verdict::bytes`] and [`deputy_verdict`].

use crate::image;
use mosix_layout::{
    CallRecord, DEPUTY_ARGS_MAX, DEPUTY_ARGV_MAX, DEPUTY_PATH_MAX, FREEZE_MAGIC, FreezeRecord,
    VERDICT_CONTINUE, VERDICT_DEPUTY, VERDICT_EXIT, VERDICT_STOP,
};
use mosix_proto::reason::{CantMove, FreezeFailure};
use std::time::{Duration, Instant};

/// How long a process has to answer the freeze signal with its record.
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the rest of a message the process started writing.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a process that blocks the freeze signal has to show it is
/// only inside a forwarded call (which blocks every signal for its round
/// trip; its answer unblocks them).
pub const CALL_CATCH: Duration = Duration::from_millis(500);
/// How often, meanwhile, the freeze looks at the signal mask again.
pub const CALL_CATCH_TICK: Duration = Duration::from_millis(5);

/// A managed process's control socket, as the freeze uses it.
pub trait Control {
    /// The process's pid (its freeze record must say the same).
    fn pid(&self) -> i32;
    /// Its freeze signal.
    fn freeze_signal(&self) -> i32;
    /// Whether it blocks the freeze signal now.
    fn blocks_signal(&mut self) -> bool;
    /// Send it the freeze signal.
    fn send_signal(&mut self) -> std::io::Result<()>;
    /// Wait up to `timeout` for something to read; whether there is.
    fn readable(&mut self, timeout: Duration) -> std::io::Result<bool>;
    /// Read exactly `buf.len()` bytes within `timeout`.
    fn read_exact(&mut self, buf: &mut [u8], timeout: Duration) -> std::io::Result<()>;
    /// A message other than a freeze record arrived, starting with
    /// `magic`: read the rest and serve it. A forwarded call is not
    /// answered here but returned, to be answered busy once the freeze
    /// signal is pending. By default nothing else may come.
    fn other(&mut self, magic: [u8; 8]) -> Result<Interlude, String> {
        Err(format!(
            "{:#x} on the control socket",
            u64::from_le_bytes(magic)
        ))
    }
    /// Answer a forwarded call "busy": the process lets the pending
    /// freeze signal in and asks again after.
    fn answer_busy(&mut self, call: &CallRecord) -> std::io::Result<()> {
        let _ = call;
        Ok(())
    }
    /// The process is out of step (bad record, bad message): end what
    /// waits for a verdict that will not come from this conversation.
    fn out_of_step(&mut self) {}
}

/// What a message other than the record was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interlude {
    /// Served (e.g. a hello after an exec).
    Served,
    /// A forwarded call, to be answered busy.
    Call(CallRecord),
}

/// Freeze the process behind `ctl`: send the freeze signal (through a
/// forwarded call if it blocks it only for that call) and read its
/// freeze record. Nothing is changed on failure, except that a process
/// out of step is handed to [`Control::out_of_step`].
pub fn freeze(ctl: &mut impl Control) -> Result<FreezeRecord, FreezeFailure> {
    let sig = ctl.freeze_signal();
    let catch_until = Instant::now() + CALL_CATCH;
    let mut signalled = false;
    let mut rb = [0u8; size_of::<FreezeRecord>()];
    loop {
        if !signalled {
            if !ctl.blocks_signal() {
                signal(ctl)?;
                signalled = true;
            } else if !ctl.readable(CALL_CATCH_TICK).unwrap_or(false) {
                if Instant::now() >= catch_until {
                    return Err(FreezeFailure::CantMove(CantMove::BlocksFreezeSignal {
                        signal: sig,
                    }));
                }
                continue;
            }
        }
        let wait = if signalled {
            FREEZE_TIMEOUT
        } else {
            MESSAGE_TIMEOUT
        };
        let mut magic = [0u8; 8];
        if let Err(e) = ctl.read_exact(&mut magic, wait) {
            return Err(if signalled {
                FreezeFailure::NoAnswer {
                    secs: wait.as_secs(),
                }
            } else {
                ctl.out_of_step();
                FreezeFailure::OutOfStep {
                    what: format!("cut message on the control socket: {e}"),
                }
            });
        }
        if u64::from_le_bytes(magic) == FREEZE_MAGIC && signalled {
            rb[..8].copy_from_slice(&magic);
            if let Err(e) = ctl.read_exact(&mut rb[8..], MESSAGE_TIMEOUT) {
                ctl.out_of_step();
                return Err(FreezeFailure::OutOfStep {
                    what: format!("cut freeze record: {e}"),
                });
            }
            break;
        }
        let served = ctl.other(magic).and_then(|i| match i {
            Interlude::Served => Ok(()),
            Interlude::Call(call) => {
                if !signalled {
                    // Pending while the call blocks it; the answer
                    // unblocks it.
                    signal(ctl).map_err(|e| e.to_string())?;
                    signalled = true;
                }
                ctl.answer_busy(&call)
                    .map_err(|e| format!("cannot answer a call: {e}"))
            }
        });
        if let Err(what) = served {
            ctl.out_of_step();
            return Err(FreezeFailure::OutOfStep { what });
        }
    }
    match check_record(&rb, ctl.pid()) {
        Some(r) => Ok(r),
        None => {
            // The handler waits for a verdict that will not come from a
            // conversation out of step: end it rather than guess.
            ctl.out_of_step();
            Err(FreezeFailure::OutOfStep {
                what: "the process's freeze record is bad".into(),
            })
        }
    }
}

/// Send the freeze signal, as a typed failure.
fn signal(ctl: &mut impl Control) -> Result<(), FreezeFailure> {
    ctl.send_signal().map_err(|e| FreezeFailure::Signal {
        error: e.to_string(),
    })
}

/// `bytes` as the freeze record of process `pid`, if it is one (magic,
/// size and pid checked).
pub fn check_record(bytes: &[u8], pid: i32) -> Option<FreezeRecord> {
    let r = image::from_bytes::<FreezeRecord>(bytes)?;
    (r.magic == FREEZE_MAGIC && r.size as usize == size_of::<FreezeRecord>() && r.pid == pid)
        .then_some(r)
}

/// What a frozen process is told to do when its capture is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Return from the handler and run on.
    Continue,
    /// Stop (SIGSTOP) after returning.
    Stop,
    /// Exit: it runs elsewhere now, or its checkpoint was its end.
    Exit,
}

impl Verdict {
    /// The verdict's word on the control socket.
    pub fn bytes(self) -> [u8; 4] {
        match self {
            Verdict::Continue => VERDICT_CONTINUE,
            Verdict::Stop => VERDICT_STOP,
            Verdict::Exit => VERDICT_EXIT,
        }
        .to_le_bytes()
    }
}

/// Why the deputy verdict cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum DeputyVerdictError {
    /// {0} is missing or its path too long: install mosix-deputy beside homed
    #[error("{0} is missing or its path too long: install mosix-deputy beside homed")]
    Path(std::path::PathBuf),
}

/// The verdict that makes the frozen process `exec` the deputy at
/// `path`, showing `cmdline` (whole arguments only, as many as fit).
pub fn deputy_verdict(
    path: &std::path::Path,
    cmdline: &[String],
) -> Result<Vec<u8>, DeputyVerdictError> {
    let pb = path.as_os_str().as_encoded_bytes();
    if pb.len() >= DEPUTY_PATH_MAX || !path.exists() {
        return Err(DeputyVerdictError::Path(path.to_path_buf()));
    }
    let mut msg = VERDICT_DEPUTY.to_le_bytes().to_vec();
    msg.extend_from_slice(&(pb.len() as u32).to_le_bytes());
    msg.extend_from_slice(pb);
    let mut argv = Vec::new();
    for a in cmdline.iter().take(DEPUTY_ARGS_MAX) {
        if argv.len() + a.len() + 1 > DEPUTY_ARGV_MAX || a.contains('\0') {
            break;
        }
        argv.extend_from_slice(a.as_bytes());
        argv.push(0);
    }
    msg.extend_from_slice(&(argv.len() as u32).to_le_bytes());
    msg.extend_from_slice(&argv);
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosix_layout::{CALL_MAGIC, HELLO_MAGIC, LAYOUT_VERSION};
    use std::collections::VecDeque;

    /// A scripted process: what it writes, in order, and whether it
    /// blocks the freeze signal (for how many looks).
    struct Fake {
        pid: i32,
        blocked_looks: u32,
        signalled: u32,
        script: VecDeque<u8>,
        busy_answers: u32,
        killed: bool,
    }

    impl Fake {
        fn new(pid: i32, script: Vec<u8>) -> Fake {
            Fake {
                pid,
                blocked_looks: 0,
                signalled: 0,
                script: script.into(),
                busy_answers: 0,
                killed: false,
            }
        }
    }

    impl Control for Fake {
        fn pid(&self) -> i32 {
            self.pid
        }
        fn freeze_signal(&self) -> i32 {
            40
        }
        fn blocks_signal(&mut self) -> bool {
            if self.blocked_looks > 0 {
                self.blocked_looks -= 1;
                true
            } else {
                false
            }
        }
        fn send_signal(&mut self) -> std::io::Result<()> {
            self.signalled += 1;
            Ok(())
        }
        fn readable(&mut self, _: Duration) -> std::io::Result<bool> {
            Ok(!self.script.is_empty())
        }
        fn read_exact(&mut self, buf: &mut [u8], _: Duration) -> std::io::Result<()> {
            if self.script.len() < buf.len() {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            for b in buf.iter_mut() {
                *b = self.script.pop_front().unwrap_or(0);
            }
            Ok(())
        }
        fn other(&mut self, magic: [u8; 8]) -> Result<Interlude, String> {
            match u64::from_le_bytes(magic) {
                HELLO_MAGIC => Ok(Interlude::Served),
                CALL_MAGIC => {
                    let mut rest = [0u8; size_of::<CallRecord>() - 8];
                    self.read_exact(&mut rest, MESSAGE_TIMEOUT)
                        .map_err(|e| e.to_string())?;
                    let mut all = magic.to_vec();
                    all.extend_from_slice(&rest);
                    image::from_bytes::<CallRecord>(&all)
                        .map(Interlude::Call)
                        .ok_or_else(|| "bad call".into())
                }
                m => Err(format!("{m:#x} on the control socket")),
            }
        }
        fn answer_busy(&mut self, _: &CallRecord) -> std::io::Result<()> {
            self.busy_answers += 1;
            Ok(())
        }
        fn out_of_step(&mut self) {
            self.killed = true;
        }
    }

    fn record(pid: i32) -> Vec<u8> {
        // SAFETY: FreezeRecord is plain data; all zeroes is a valid value.
        let mut r: FreezeRecord = unsafe { std::mem::zeroed() };
        r.magic = FREEZE_MAGIC;
        r.version = LAYOUT_VERSION;
        r.size = size_of::<FreezeRecord>() as u32;
        r.pid = pid;
        image::as_bytes(&r).to_vec()
    }

    fn call() -> Vec<u8> {
        // SAFETY: CallRecord is plain data; all zeroes is a valid value.
        let mut c: CallRecord = unsafe { std::mem::zeroed() };
        c.magic = CALL_MAGIC;
        image::as_bytes(&c).to_vec()
    }

    #[test]
    fn a_process_answers_the_signal_with_its_record() {
        let mut p = Fake::new(7, record(7));
        let r = freeze(&mut p).unwrap();
        assert_eq!((r.pid, p.signalled, p.killed), (7, 1, false));
    }

    #[test]
    fn a_record_of_another_pid_is_out_of_step_and_ends_the_conversation() {
        let mut p = Fake::new(7, record(8));
        let e = freeze(&mut p).unwrap_err();
        assert!(matches!(e, FreezeFailure::OutOfStep { .. }), "{e}");
        assert!(p.killed);
    }

    #[test]
    fn a_silent_process_is_reported_without_harm() {
        let mut p = Fake::new(7, Vec::new());
        let e = freeze(&mut p).unwrap_err();
        assert_eq!(e, FreezeFailure::NoAnswer { secs: 30 });
        assert!(!p.killed, "it may still answer later: nothing is ended");
    }

    #[test]
    fn a_process_inside_a_call_is_signalled_through_it() {
        // It blocks the signal (in its call), writes the call, then,
        // answered busy, takes the signal and writes its record.
        let mut script = call();
        script.extend(record(7));
        let mut p = Fake::new(7, script);
        p.blocked_looks = u32::MAX;
        let r = freeze(&mut p).unwrap();
        assert_eq!((r.pid, p.signalled, p.busy_answers), (7, 1, 1));
    }

    #[test]
    fn a_process_that_blocks_the_signal_itself_is_refused_with_a_passing_reason() {
        let mut p = Fake::new(7, Vec::new());
        p.blocked_looks = u32::MAX;
        let e = freeze(&mut p).unwrap_err();
        assert_eq!(
            e,
            FreezeFailure::CantMove(CantMove::BlocksFreezeSignal { signal: 40 })
        );
        assert!(e.passing());
        assert_eq!(p.signalled, 0);
        assert!(!p.killed);
    }

    #[test]
    fn a_hello_meanwhile_is_served_and_the_freeze_goes_on() {
        let mut script = HELLO_MAGIC.to_le_bytes().to_vec();
        script.extend(record(7));
        let mut p = Fake::new(7, script);
        assert_eq!(freeze(&mut p).unwrap().pid, 7);
    }

    #[test]
    fn garbage_on_the_socket_is_out_of_step() {
        let mut p = Fake::new(7, vec![0xee; 64]);
        let e = freeze(&mut p).unwrap_err();
        assert!(matches!(e, FreezeFailure::OutOfStep { .. }));
        assert!(p.killed);
    }

    #[test]
    fn the_deputy_verdict_carries_whole_arguments_only() {
        let me = std::env::current_exe().unwrap();
        let long = "x".repeat(DEPUTY_ARGV_MAX);
        let v = deputy_verdict(&me, &["prog".into(), "a b".into(), long]).unwrap();
        assert_eq!(&v[..4], &VERDICT_DEPUTY.to_le_bytes());
        let plen = u32::from_le_bytes(v[4..8].try_into().unwrap()) as usize;
        let argv = &v[8 + plen + 4..];
        assert_eq!(argv, b"prog\0a b\0");
        assert!(deputy_verdict(std::path::Path::new("/nonexistent/mosix-deputy"), &[]).is_err());
    }
}
