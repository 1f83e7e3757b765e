//! The deciding side of a move: the home's `homed`, which keeps the
//! commit point whether the body leaves home ([`Leg::FromHome`]) or moves
//! on from one remote node to another ([`Leg::Direct`]).
//!
//! From home:
//!
//! ```text
//! connect dest -> Offer -> Accepted -> (stream the image) -> ImageEnd
//!   -> Held -> (the frozen process becomes its deputy) -> Go
//! ```
//!
//! Direct, from node `old` to node `dest`:
//!
//! ```text
//! connect dest -> Offer{direct} -> Expecting{token} -> old: FreezeTo{token}
//!   -> old: Sent -> dest: Held -> old: Done -> old: Left -> dest: Go
//! ```
//!
//! Until `Held`, any failure leaves the process where it was: at home
//! the frozen process is told to run on ([`Action::ResumeHere`]); away
//! the old node is told [`ToHost::Resume`]. After the deputy is made (or
//! the old body ended), the body is told to go; a link lost at that point
//! loses the process ([`Outcome::Lost`]), and nothing ever runs twice.

use super::{DIRECT_TIMEOUT, FREEZE_RETRIES, FREEZE_RETRY_PAUSE, STEP_TIMEOUT};
use mosix_proto::migrate::{BodyStatus, CallReply, FromHost, HomeClocks, HomeFacts, ToHost};
use mosix_proto::reason::{FreezeFailure, HostFailure};
use mosix_proto::view::Bytes;
use std::time::{Duration, Instant};

/// A peer of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// The destination's body host.
    Dest,
    /// The body host of the node the body runs on now (direct moves).
    Old,
}

/// Which move this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leg {
    /// The process is frozen here, at home; its image is read here.
    FromHome,
    /// The body runs at node `from` and comes home: its image comes
    /// over the body's link and the deputy becomes the process again.
    ToHome {
        /// The node the body runs on now.
        from: String,
    },
    /// The body runs at node `from`; its image goes from there straight
    /// to the destination.
    Direct {
        /// The node the body runs on now.
        from: String,
        /// The destination's `remoted` address (`ip:port`), which the
        /// old node connects to.
        dest_address: String,
    },
}

/// What the destination is told of the process in the offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferFacts {
    /// Home pid.
    pub home_pid: i32,
    /// Owner.
    pub uid: u32,
    /// Owner's group.
    pub gid: u32,
    /// The process's control fd number.
    pub ctl_fd: i32,
    /// Its freeze signal.
    pub freeze_signal: i32,
    /// What its identity calls answer.
    pub home: HomeFacts,
    /// The home's clocks now.
    pub clocks: Option<HomeClocks>,
}

impl OfferFacts {
    fn offer(&self, bytes: u64, direct: bool) -> ToHost {
        ToHost::Offer {
            home_pid: self.home_pid,
            uid: self.uid,
            gid: self.gid,
            bytes,
            ctl_fd: self.ctl_fd,
            freeze_signal: self.freeze_signal,
            home: self.home.clone(),
            clocks: self.clocks,
            direct,
        }
    }
}

/// What happened, as the driver tells the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The link to `peer` is up.
    Connected(Peer),
    /// A message from `peer`.
    From(Peer, FromHost),
    /// The link to `peer` broke (or could not be made).
    Broken(Peer, String),
    /// The image was streamed to the destination; its checksum.
    Streamed {
        /// The header checksum.
        checksum: u64,
    },
    /// Reading or streaming the image failed.
    StreamFailed(String),
    /// Coming home: the whole image arrived and was checked.
    Received {
        /// Its size.
        bytes: u64,
    },
    /// Coming home: the image could not be taken. `frozen`: the body
    /// still waits frozen at its node for a word (a bad image, no memory
    /// here); otherwise its node resumed it already (it could not
    /// capture it).
    ReceiveFailed {
        /// What failed.
        error: String,
        /// Whether the body waits frozen.
        frozen: bool,
    },
    /// Coming home: the process runs whole at home again.
    HomeRestored,
    /// Coming home: it could not be restored. `gone`: the deputy went
    /// away meanwhile (nothing is left at home).
    HomeFailed {
        /// What failed.
        error: String,
        /// Whether the deputy is gone.
        gone: bool,
    },
    /// The frozen process became its deputy.
    DeputyReady,
    /// It did not: `gone` if the process is no more (killed meanwhile).
    DeputyFailed {
        /// What happened.
        error: String,
        /// Whether the process itself is gone.
        gone: bool,
    },
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open an authenticated link to `peer`, answer [`Input::Connected`]
    /// or [`Input::Broken`].
    Connect(Peer),
    /// Send a message to `peer`.
    Send(Peer, ToHost),
    /// Stream the image (raw bytes) to the destination, then answer
    /// [`Input::Streamed`] or [`Input::StreamFailed`].
    StreamImage,
    /// Tell the frozen process to become its deputy; answer
    /// [`Input::DeputyReady`] or [`Input::DeputyFailed`].
    BecomeDeputy,
    /// Coming home: read the image (`bytes` raw bytes, then its end)
    /// from the body's link; answer [`Input::Received`],
    /// [`Input::ReceiveFailed`] or [`Input::Broken`].
    ReceiveImage {
        /// Its size.
        bytes: u64,
    },
    /// Coming home: have the deputy restore the process in place, giving
    /// it first the input its body had not read; answer
    /// [`Input::HomeRestored`] or [`Input::HomeFailed`].
    RestoreHere {
        /// Unread input by fd, in order.
        unread: Vec<(i32, Bytes)>,
    },
    /// Tell the frozen process at home to run on (verdict continue).
    ResumeHere,
    /// Pass this message of the frozen body's node to the deputy (its
    /// last output, a new command line).
    ToDeputy(FromHost),
    /// Wait this long, then go on with the next action.
    Pause(Duration),
    /// The move is over.
    Finish(Outcome),
}

/// How a move ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The body runs at the destination.
    Moved {
        /// Its pid there.
        body_pid: i32,
        /// Image bytes.
        bytes: u64,
        /// Input the old body had been given and had not read, by fd: the
        /// driver gives it to the new body first.
        unread: Vec<(i32, Bytes)>,
    },
    /// Nothing changed: the process runs on where it was.
    RunsOn(Failure),
    /// The process ended by itself before it could move.
    Ended(BodyStatus),
    /// The process is lost (its node or the link at the commit); the
    /// deputy must be told.
    Lost(Failure),
}

/// Why a move failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// cannot reach node {node}: {error}
    #[error("cannot reach node {node}: {error}")]
    Unreachable {
        /// The node.
        node: String,
        /// What failed.
        error: String,
    },
    /// node {node} refused the process: {reason}
    #[error("node {node} refused the process: {reason}")]
    Refused {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
    /// node {node} could not restore the process: {reason}
    #[error("node {node} could not restore the process: {reason}")]
    NotRestored {
        /// The node.
        node: String,
        /// Why.
        reason: HostFailure,
    },
    /// node {node} could not freeze the body: {reason}
    #[error("node {node} could not freeze the body: {reason}")]
    NotFrozenHere {
        /// The body's node.
        node: String,
        /// Why.
        reason: FreezeFailure,
    },
    /// the image from node {node} could not be taken: {error}
    #[error("the image from node {node} could not be taken: {error}")]
    NotReceived {
        /// The body's node.
        node: String,
        /// What failed.
        error: String,
    },
    /// the process could not be restored at home: {error}
    #[error("the process could not be restored at home: {error}")]
    NotHome {
        /// What failed.
        error: String,
    },
    /// node {node} could not freeze the body or send it to node {dest}: {reason}
    #[error("node {node} could not freeze the body or send it to node {dest}: {reason}")]
    NotFrozen {
        /// The body's node.
        node: String,
        /// The destination.
        dest: String,
        /// Why.
        reason: FreezeFailure,
    },
    /// sending the image to node {node} failed: {error}
    #[error("sending the image to node {node} failed: {error}")]
    Transfer {
        /// The node.
        node: String,
        /// What failed.
        error: String,
    },
    /// lost node {node} during the move ({step}): {error}
    #[error("lost node {node} during the move ({step}): {error}")]
    LinkLost {
        /// The node.
        node: String,
        /// What the source waited for.
        step: &'static str,
        /// What failed.
        error: String,
    },
    /// node {node} did not answer in time ({step})
    #[error("node {node} did not answer in time ({step})")]
    Timeout {
        /// The node.
        node: String,
        /// What the source waited for.
        step: &'static str,
    },
    /// node {node} answered {got} ({step})
    #[error("node {node} answered {got} ({step})")]
    OutOfStep {
        /// The node.
        node: String,
        /// What the source waited for.
        step: &'static str,
        /// What came.
        got: String,
    },
    /// the process did not become its deputy: {error}
    #[error("the process did not become its deputy: {error}")]
    Deputy {
        /// What failed.
        error: String,
    },
    /// the link to node {node} broke at the commit: {error}; the body there is dropped and the deputy ends as killed
    #[error(
        "the link to node {node} broke at the commit: {error}; the body there is dropped and the deputy ends as killed"
    )]
    Commit {
        /// The node.
        node: String,
        /// What failed.
        error: String,
    },
    /// internal error: {what}
    #[error("internal error: {what}")]
    Internal {
        /// What went wrong in the driver.
        what: String,
    },
    /// cannot capture the process: {error}
    #[error("cannot capture the process: {error}")]
    Capture {
        /// What failed.
        error: String,
    },
    /// {first}, and node {node} was lost meanwhile: {error}
    #[error("{first}, and node {node} was lost meanwhile: {error}")]
    AndLost {
        /// The first failure.
        first: Box<Failure>,
        /// The body's node.
        node: String,
        /// How it was lost.
        error: String,
    },
}

/// Where a move stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Connecting,
    Offered,
    Streaming,
    /// Direct: the old node freezes the body and delivers its image.
    Freezing {
        token: u64,
        tries: u32,
    },
    AwaitHeld {
        bytes: u64,
    },
    Committing {
        body_pid: i32,
        bytes: u64,
    },
    /// Direct: the move failed; the old node is told to resume.
    Resuming(Failure),
    /// Direct: the old node ends its copy.
    Releasing {
        body_pid: i32,
        bytes: u64,
    },
    Going,
    /// Home: the body's node freezes it and sends its image.
    Fetching {
        tries: u32,
    },
    /// Home: the image comes.
    ReceivingHome,
    /// Home: the deputy restores it.
    RestoringHome {
        bytes: u64,
    },
    Over,
}

/// The deciding side of one move.
#[derive(Debug)]
pub struct Source {
    leg: Leg,
    dest: String,
    facts: OfferFacts,
    /// Image size (from home: known before the offer).
    bytes: u64,
    state: State,
    deadline: Option<Instant>,
    unread: Vec<(i32, Bytes)>,
}

impl Source {
    /// A move of the process described by `facts` to node `dest`; from
    /// home, its image is `bytes` long.
    pub fn new(leg: Leg, dest: &str, facts: OfferFacts, bytes: u64) -> Source {
        Source {
            leg,
            dest: dest.to_string(),
            facts,
            bytes,
            state: State::Connecting,
            deadline: None,
            unread: Vec::new(),
        }
    }

    /// The first actions.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        self.deadline = Some(now + STEP_TIMEOUT);
        if let Leg::ToHome { .. } = self.leg {
            self.state = State::Fetching { tries: 0 };
            return vec![Action::Send(Peer::Old, ToHost::Freeze)];
        }
        vec![Action::Connect(Peer::Dest)]
    }

    /// Whom the driver should read from next, and until when (`None`:
    /// nobody; the session waits for the result of an action or is
    /// over).
    pub fn waiting(&self) -> Option<(Peer, Instant)> {
        let peer = match self.state {
            State::Offered | State::AwaitHeld { .. } => Peer::Dest,
            State::Freezing { .. } | State::Releasing { .. } | State::Fetching { .. } => Peer::Old,
            _ => return None,
        };
        self.deadline.map(|d| (peer, d))
    }

    /// The node the body runs on now (home for [`Leg::FromHome`]).
    fn from(&self) -> &str {
        match &self.leg {
            Leg::FromHome => "home",
            Leg::Direct { from, .. } | Leg::ToHome { from } => from,
        }
    }

    /// The deadline of what the session waits for passed.
    pub fn timeout(&mut self, now: Instant) -> Vec<Action> {
        if self.deadline.is_none_or(|d| now < d) {
            return Vec::new();
        }
        let step = self.step_name();
        match self.state {
            State::Freezing { .. } | State::Releasing { .. } | State::Fetching { .. } => {
                let node = self.from().to_string();
                self.input(Input::Broken(Peer::Old, format!("no answer ({step})")), now)
                    .into_iter()
                    .map(|a| match a {
                        Action::Finish(Outcome::Lost(Failure::LinkLost { step, .. })) => {
                            Action::Finish(Outcome::Lost(Failure::Timeout {
                                node: node.clone(),
                                step,
                            }))
                        }
                        other => other,
                    })
                    .collect()
            }
            _ => {
                let why = Failure::Timeout {
                    node: self.dest.clone(),
                    step,
                };
                self.fail(why)
            }
        }
    }

    fn step_name(&self) -> &'static str {
        match self.state {
            State::Connecting => "connecting",
            State::Offered => "the answer to the offer",
            State::Streaming => "sending the image",
            State::Freezing { .. } => "the freeze and the delivery",
            State::AwaitHeld { .. } => "the restore",
            State::Committing { .. } => "the commit",
            State::Resuming(_) => "the resume",
            State::Releasing { .. } => "the end of the old body",
            State::Going | State::Over => "the go",
            State::Fetching { .. } => "the freeze",
            State::ReceivingHome => "the image",
            State::RestoringHome { .. } => "the restore at home",
        }
    }

    /// Feed what happened; the actions to carry out.
    pub fn input(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let state = std::mem::replace(&mut self.state, State::Over);
        let direct = matches!(self.leg, Leg::Direct { .. });
        match (state, input) {
            (State::Over, _) => Vec::new(),

            // Connecting to the destination.
            (State::Connecting, Input::Connected(Peer::Dest)) => {
                self.state = State::Offered;
                self.deadline = Some(now + STEP_TIMEOUT);
                vec![Action::Send(
                    Peer::Dest,
                    self.facts
                        .offer(if direct { 0 } else { self.bytes }, direct),
                )]
            }
            (State::Connecting, Input::Broken(Peer::Dest, error)) => {
                self.fail(Failure::Unreachable {
                    node: self.dest.clone(),
                    error,
                })
            }

            // The offer.
            (State::Offered, Input::From(Peer::Dest, FromHost::Accepted)) if !direct => {
                self.state = State::Streaming;
                self.deadline = None;
                vec![Action::StreamImage]
            }
            (State::Offered, Input::From(Peer::Dest, FromHost::Expecting { token })) if direct => {
                self.freeze_to(token, 0, now)
            }
            (State::Offered, Input::From(Peer::Dest, FromHost::Refused { reason })) => {
                self.fail(Failure::Refused {
                    node: self.dest.clone(),
                    reason: reason.to_string(),
                })
            }
            (State::Offered, Input::From(Peer::Dest, FromHost::Failed { reason })) => {
                self.fail(Failure::Refused {
                    node: self.dest.clone(),
                    reason: reason.to_string(),
                })
            }

            // From home: the image.
            (State::Streaming, Input::Streamed { checksum }) => {
                self.state = State::AwaitHeld { bytes: self.bytes };
                self.deadline = Some(now + STEP_TIMEOUT);
                vec![Action::Send(Peer::Dest, ToHost::ImageEnd { checksum })]
            }
            (State::Streaming, Input::StreamFailed(error)) => self.fail(Failure::Transfer {
                node: self.dest.clone(),
                error,
            }),

            // Direct: the old node freezes the body and delivers.
            (State::Freezing { token, tries }, Input::From(Peer::Old, msg)) => {
                self.while_freezing(token, tries, msg, now)
            }
            (State::Freezing { .. }, Input::Broken(Peer::Old, error)) => {
                self.lose(Failure::LinkLost {
                    node: self.from().to_string(),
                    step: "the freeze and the delivery",
                    error,
                })
            }
            (State::Freezing { .. }, Input::Broken(Peer::Dest, error)) => {
                // The destination gave up; the old node finds out when
                // its delivery fails, and the body runs on there.
                self.state = State::Freezing {
                    token: 0,
                    tries: FREEZE_RETRIES,
                };
                tracing::debug!(%error, "destination lost while the body's node delivers");
                Vec::new()
            }

            // Coming home: the body's node freezes it and sends the image.
            (State::Fetching { tries }, Input::From(Peer::Old, msg)) => {
                self.while_fetching(tries, msg, now)
            }
            (State::Fetching { .. } | State::ReceivingHome, Input::Broken(Peer::Old, error)) => {
                self.lose(Failure::LinkLost {
                    node: self.from().to_string(),
                    step: "the image",
                    error,
                })
            }
            (State::ReceivingHome, Input::Received { bytes }) => {
                self.bytes = bytes;
                self.state = State::RestoringHome { bytes };
                self.deadline = None;
                vec![Action::RestoreHere {
                    unread: std::mem::take(&mut self.unread),
                }]
            }
            (State::ReceivingHome, Input::ReceiveFailed { error, frozen }) => {
                let why = Failure::NotReceived {
                    node: self.from().to_string(),
                    error,
                };
                if frozen {
                    self.fail(why)
                } else {
                    self.state = State::Over;
                    vec![Action::Finish(Outcome::RunsOn(why))]
                }
            }
            (State::RestoringHome { bytes }, Input::HomeRestored) => {
                // Whole at home: the old copy, frozen, ends.
                self.state = State::Releasing {
                    body_pid: self.facts.home_pid,
                    bytes,
                };
                self.deadline = Some(now + STEP_TIMEOUT);
                vec![Action::Send(Peer::Old, ToHost::Done)]
            }
            (State::RestoringHome { .. }, Input::HomeFailed { error, gone: false }) => {
                self.fail(Failure::NotHome { error })
            }
            (State::RestoringHome { .. }, Input::HomeFailed { error, gone: true }) => {
                // Nothing is left at home: end the body too, never an
                // orphan.
                self.state = State::Over;
                vec![
                    Action::Send(Peer::Old, ToHost::Done),
                    Action::Finish(Outcome::Lost(Failure::NotHome { error })),
                ]
            }

            // The restore at the destination.
            (State::AwaitHeld { bytes }, Input::From(Peer::Dest, FromHost::Held { body_pid })) => {
                if direct {
                    self.state = State::Releasing { body_pid, bytes };
                    self.deadline = Some(now + STEP_TIMEOUT);
                    vec![Action::Send(Peer::Old, ToHost::Done)]
                } else {
                    self.state = State::Committing { body_pid, bytes };
                    self.deadline = None;
                    vec![Action::BecomeDeputy]
                }
            }
            (State::AwaitHeld { .. }, Input::From(Peer::Dest, FromHost::Failed { reason })) => self
                .fail(Failure::NotRestored {
                    node: self.dest.clone(),
                    reason,
                }),
            (State::AwaitHeld { .. }, Input::From(Peer::Old, msg)) if direct => {
                // Late output of the frozen body goes to the deputy.
                self.state = State::AwaitHeld { bytes: self.bytes };
                self.passing_message(msg)
            }

            // From home: the commit.
            (State::Committing { body_pid, bytes }, Input::DeputyReady) => {
                self.state = State::Going;
                vec![
                    Action::Send(Peer::Dest, ToHost::Go),
                    Action::Finish(Outcome::Moved {
                        body_pid,
                        bytes,
                        unread: Vec::new(),
                    }),
                ]
            }
            (State::Committing { .. }, Input::DeputyFailed { error, gone }) => {
                self.state = State::Over;
                let why = Failure::Deputy { error };
                let end = if gone {
                    Outcome::Lost(why)
                } else {
                    Outcome::RunsOn(why)
                };
                vec![Action::Send(Peer::Dest, ToHost::Abort), Action::Finish(end)]
            }

            // Direct: the old copy ends, then the new one goes.
            (State::Releasing { body_pid, bytes }, input) => match input {
                Input::From(Peer::Old, FromHost::Left) | Input::Broken(Peer::Old, _) => {
                    self.go(body_pid, bytes)
                }
                Input::From(Peer::Old, _) => {
                    self.state = State::Releasing { body_pid, bytes };
                    Vec::new()
                }
                Input::Broken(Peer::Dest, error) => {
                    // The old body ended or ends: nothing runs any more.
                    self.lose(Failure::Commit {
                        node: self.dest.clone(),
                        error,
                    })
                }
                _ => {
                    self.state = State::Releasing { body_pid, bytes };
                    Vec::new()
                }
            },

            // The go.
            (State::Going, Input::Broken(Peer::Dest, error)) => {
                self.state = State::Over;
                vec![Action::Finish(Outcome::Lost(Failure::Commit {
                    node: self.dest.clone(),
                    error,
                }))]
            }

            // Direct: the resume after a failure.
            (State::Resuming(first), Input::Broken(Peer::Old, error)) => {
                self.state = State::Over;
                vec![Action::Finish(Outcome::Lost(Failure::AndLost {
                    first: Box::new(first),
                    node: self.from().to_string(),
                    error,
                }))]
            }

            // Any other break before the commit: nothing changed.
            (
                state @ (State::Offered | State::Streaming | State::AwaitHeld { .. }),
                Input::Broken(Peer::Dest, error),
            ) => {
                self.state = state;
                let step = self.step_name();
                self.fail(Failure::LinkLost {
                    node: self.dest.clone(),
                    step,
                    error,
                })
            }
            (state, Input::From(peer, msg)) => {
                let step = {
                    self.state = state.clone();
                    self.step_name()
                };
                let node = match peer {
                    Peer::Dest => self.dest.clone(),
                    Peer::Old => self.from().to_string(),
                };
                self.fail(Failure::OutOfStep {
                    node,
                    step,
                    got: format!("{msg:?}"),
                })
            }
            (state, other) => {
                // An input that does not belong here: a driver bug.
                tracing::warn!(?state, input = ?other, "move session: unexpected input; ignored");
                self.state = state;
                Vec::new()
            }
        }
    }

    /// Ask the old node to freeze the body and deliver it under `token`.
    fn freeze_to(&mut self, token: u64, tries: u32, now: Instant) -> Vec<Action> {
        let Leg::Direct { dest_address, .. } = &self.leg else {
            return self.fail(Failure::OutOfStep {
                node: self.dest.clone(),
                step: "the answer to the offer",
                got: "Expecting for a move from home".into(),
            });
        };
        let msg = ToHost::FreezeTo {
            node: self.dest.clone(),
            address: dest_address.clone(),
            token,
        };
        self.state = State::Freezing { token, tries };
        self.deadline = Some(now + DIRECT_TIMEOUT);
        vec![Action::Send(Peer::Old, msg)]
    }

    /// A message of the old node while it freezes the body.
    fn while_freezing(
        &mut self,
        token: u64,
        tries: u32,
        msg: FromHost,
        now: Instant,
    ) -> Vec<Action> {
        match msg {
            FromHost::Sent { bytes } => {
                self.bytes = bytes;
                self.state = State::AwaitHeld { bytes };
                self.deadline = Some(now + STEP_TIMEOUT);
                Vec::new()
            }
            FromHost::FreezeFailed { reason }
                if reason.passing() && tries < FREEZE_RETRIES && token != 0 =>
            {
                let mut a = vec![Action::Pause(FREEZE_RETRY_PAUSE)];
                a.extend(self.freeze_to(token, tries + 1, now));
                a
            }
            FromHost::FreezeFailed { reason } => {
                // The body runs on at its node; the destination drops
                // what it prepared when its link closes.
                self.state = State::Over;
                vec![Action::Finish(Outcome::RunsOn(Failure::NotFrozen {
                    node: self.from().to_string(),
                    dest: self.dest.clone(),
                    reason,
                }))]
            }
            FromHost::Exited { status } => {
                self.state = State::Over;
                vec![Action::Finish(Outcome::Ended(status))]
            }
            other => {
                self.state = State::Freezing { token, tries };
                self.passing_message(other)
            }
        }
    }

    /// A message of the body's node while it freezes the body to bring
    /// it home.
    fn while_fetching(&mut self, tries: u32, msg: FromHost, now: Instant) -> Vec<Action> {
        match msg {
            FromHost::Image { bytes } => {
                self.state = State::ReceivingHome;
                self.deadline = None;
                vec![Action::ReceiveImage { bytes }]
            }
            FromHost::FreezeFailed { reason } if reason.passing() && tries < FREEZE_RETRIES => {
                self.state = State::Fetching { tries: tries + 1 };
                self.deadline = Some(now + STEP_TIMEOUT);
                vec![
                    Action::Pause(FREEZE_RETRY_PAUSE),
                    Action::Send(Peer::Old, ToHost::Freeze),
                ]
            }
            FromHost::FreezeFailed { reason } => {
                self.state = State::Over;
                vec![Action::Finish(Outcome::RunsOn(Failure::NotFrozenHere {
                    node: self.from().to_string(),
                    reason,
                }))]
            }
            FromHost::Exited { status } => {
                self.state = State::Over;
                vec![Action::Finish(Outcome::Ended(status))]
            }
            other => {
                self.state = State::Fetching { tries };
                self.passing_message(other)
            }
        }
    }

    /// What a body's node says while it freezes the body: output and a
    /// new command line for the deputy, input it had not read (kept),
    /// calls (answered busy: it asks again after).
    fn passing_message(&mut self, msg: FromHost) -> Vec<Action> {
        match msg {
            FromHost::Output { .. } | FromHost::Exec { .. } => vec![Action::ToDeputy(msg)],
            FromHost::Unread { fd, data } => {
                self.unread.push((fd, data));
                Vec::new()
            }
            FromHost::WantInput { .. } | FromHost::Leave { .. } => Vec::new(),
            FromHost::Call { .. } => vec![Action::Send(
                Peer::Old,
                ToHost::Reply {
                    reply: CallReply::Busy,
                },
            )],
            other => {
                let node = self.from().to_string();
                self.lose(Failure::OutOfStep {
                    node,
                    step: "the freeze",
                    got: format!("{other:?}"),
                })
            }
        }
    }

    /// Direct: the old copy is gone; let the new one go. Home: the
    /// process is whole there already.
    fn go(&mut self, body_pid: i32, bytes: u64) -> Vec<Action> {
        self.deadline = None;
        if let Leg::ToHome { .. } = self.leg {
            self.state = State::Over;
            return vec![Action::Finish(Outcome::Moved {
                body_pid,
                bytes,
                unread: Vec::new(),
            })];
        }
        self.state = State::Going;
        let unread = std::mem::take(&mut self.unread);
        vec![
            Action::Send(Peer::Dest, ToHost::Go),
            Action::Finish(Outcome::Moved {
                body_pid,
                bytes,
                unread,
            }),
        ]
    }

    /// A failure before the commit: the process runs on where it was.
    fn fail(&mut self, why: Failure) -> Vec<Action> {
        self.deadline = None;
        match &self.leg {
            Leg::FromHome => {
                self.state = State::Over;
                vec![Action::ResumeHere, Action::Finish(Outcome::RunsOn(why))]
            }
            Leg::Direct { .. } | Leg::ToHome { .. } => {
                self.state = State::Resuming(why.clone());
                vec![
                    Action::Send(Peer::Old, ToHost::Resume),
                    Action::Finish(Outcome::RunsOn(why)),
                ]
            }
        }
    }

    /// The body's node is lost, or the process with it.
    fn lose(&mut self, why: Failure) -> Vec<Action> {
        self.state = State::Over;
        self.deadline = None;
        vec![Action::Finish(Outcome::Lost(why))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosix_proto::reason::{CantMove, HostFailure, Refusal};

    fn facts() -> OfferFacts {
        OfferFacts {
            home_pid: 42,
            uid: 1000,
            gid: 1000,
            ctl_fd: 1023,
            freeze_signal: 40,
            home: HomeFacts::default(),
            clocks: None,
        }
    }

    fn from_home(now: Instant) -> Source {
        let mut s = Source::new(Leg::FromHome, "n2", facts(), 8192);
        assert_eq!(s.start(now), vec![Action::Connect(Peer::Dest)]);
        s
    }

    fn direct(now: Instant) -> Source {
        let leg = Leg::Direct {
            from: "n2".into(),
            dest_address: "10.0.0.3:7340".into(),
        };
        let mut s = Source::new(leg, "n3", facts(), 0);
        assert_eq!(s.start(now), vec![Action::Connect(Peer::Dest)]);
        s
    }

    fn dest(msg: FromHost) -> Input {
        Input::From(Peer::Dest, msg)
    }

    fn old(msg: FromHost) -> Input {
        Input::From(Peer::Old, msg)
    }

    fn outcome(actions: &[Action]) -> &Outcome {
        match actions.last() {
            Some(Action::Finish(o)) => o,
            other => panic!("no outcome: {other:?}"),
        }
    }

    /// From home, up to the point where the body is held at the
    /// destination and the process must become its deputy.
    fn held_from_home(now: Instant) -> Source {
        let mut s = from_home(now);
        let a = s.input(Input::Connected(Peer::Dest), now);
        assert!(matches!(
            &a[..],
            [Action::Send(
                Peer::Dest,
                ToHost::Offer {
                    bytes: 8192,
                    direct: false,
                    home_pid: 42,
                    ..
                }
            )]
        ));
        assert_eq!(s.waiting().map(|w| w.0), Some(Peer::Dest));
        assert_eq!(
            s.input(dest(FromHost::Accepted), now),
            vec![Action::StreamImage]
        );
        assert_eq!(s.waiting(), None, "streaming: the driver waits for itself");
        assert_eq!(
            s.input(Input::Streamed { checksum: 7 }, now),
            vec![Action::Send(Peer::Dest, ToHost::ImageEnd { checksum: 7 })]
        );
        assert_eq!(
            s.input(dest(FromHost::Held { body_pid: 99 }), now),
            vec![Action::BecomeDeputy]
        );
        s
    }

    #[test]
    fn a_move_from_home_commits_only_after_the_deputy_is_up() {
        let now = Instant::now();
        let mut s = held_from_home(now);
        assert_eq!(
            s.input(Input::DeputyReady, now),
            vec![
                Action::Send(Peer::Dest, ToHost::Go),
                Action::Finish(Outcome::Moved {
                    body_pid: 99,
                    bytes: 8192,
                    unread: Vec::new()
                })
            ]
        );
        // Nothing is done twice.
        assert_eq!(s.input(Input::DeputyReady, now), Vec::new());
    }

    #[test]
    fn an_unreachable_destination_leaves_the_process_running_at_home() {
        let now = Instant::now();
        let mut s = from_home(now);
        let a = s.input(Input::Broken(Peer::Dest, "connection refused".into()), now);
        assert_eq!(a[0], Action::ResumeHere);
        let Outcome::RunsOn(why) = outcome(&a) else {
            panic!("{a:?}")
        };
        assert_eq!(why.to_string(), "cannot reach node n2: connection refused");
    }

    #[test]
    fn a_refusal_at_the_offer_changes_nothing() {
        let now = Instant::now();
        let mut s = from_home(now);
        s.input(Input::Connected(Peer::Dest), now);
        let reason = Refusal::NoGuests { node: "n2".into() };
        let a = s.input(dest(FromHost::Refused { reason }), now);
        assert_eq!(a[0], Action::ResumeHere);
        let msg = outcome(&a).clone();
        assert!(
            matches!(&msg, Outcome::RunsOn(f) if f.to_string().contains("n2") && f.to_string().contains("no guests")),
            "{msg:?}"
        );
        assert!(
            !a.iter()
                .any(|x| matches!(x, Action::StreamImage | Action::BecomeDeputy))
        );
    }

    #[test]
    fn the_destination_dying_at_each_step_before_the_commit_leaves_the_process_at_home() {
        let now = Instant::now();
        // Each prefix of a move, then the destination's link breaks.
        let prefixes: Vec<Vec<Input>> = vec![
            vec![Input::Connected(Peer::Dest)],
            vec![Input::Connected(Peer::Dest), dest(FromHost::Accepted)],
            vec![
                Input::Connected(Peer::Dest),
                dest(FromHost::Accepted),
                Input::Streamed { checksum: 1 },
            ],
        ];
        for prefix in prefixes {
            let mut s = from_home(now);
            for i in prefix.clone() {
                s.input(i, now);
            }
            let a = s.input(Input::Broken(Peer::Dest, "reset by peer".into()), now);
            assert_eq!(a[0], Action::ResumeHere, "after {prefix:?}");
            assert!(
                matches!(outcome(&a), Outcome::RunsOn(Failure::LinkLost { .. })),
                "{a:?}"
            );
        }
        // The image could not be sent (the destination died mid-stream).
        let mut s = from_home(now);
        s.input(Input::Connected(Peer::Dest), now);
        s.input(dest(FromHost::Accepted), now);
        let a = s.input(Input::StreamFailed("broken pipe".into()), now);
        assert_eq!(a[0], Action::ResumeHere);
        assert!(matches!(
            outcome(&a),
            Outcome::RunsOn(Failure::Transfer { .. })
        ));
    }

    #[test]
    fn a_corrupt_image_is_not_restored_and_the_process_runs_on() {
        let now = Instant::now();
        let mut s = from_home(now);
        s.input(Input::Connected(Peer::Dest), now);
        s.input(dest(FromHost::Accepted), now);
        s.input(Input::Streamed { checksum: 1 }, now);
        let reason = HostFailure::BadImage {
            error: "corrupted: checksum mismatch".into(),
        };
        let a = s.input(dest(FromHost::Failed { reason }), now);
        assert_eq!(a[0], Action::ResumeHere);
        let text = match outcome(&a) {
            Outcome::RunsOn(f) => f.to_string(),
            o => panic!("{o:?}"),
        };
        assert_eq!(
            text,
            "node n2 could not restore the process: bad image: corrupted: checksum mismatch"
        );
    }

    #[test]
    fn a_destination_that_does_not_answer_in_time_is_given_up() {
        let now = Instant::now();
        let mut s = from_home(now);
        s.input(Input::Connected(Peer::Dest), now);
        assert_eq!(s.timeout(now), Vec::new(), "not yet");
        let (_, deadline) = s.waiting().unwrap();
        let a = s.timeout(deadline);
        assert_eq!(a[0], Action::ResumeHere);
        assert!(matches!(
            outcome(&a),
            Outcome::RunsOn(Failure::Timeout { .. })
        ));
        // The same while it restores.
        let mut s = held_from_home(now);
        s.state = State::AwaitHeld { bytes: 1 };
        s.deadline = Some(now);
        assert!(matches!(outcome(&s.timeout(now)), Outcome::RunsOn(_)));
    }

    #[test]
    fn a_process_that_cannot_become_its_deputy_aborts_the_held_body() {
        let now = Instant::now();
        let mut s = held_from_home(now);
        let a = s.input(
            Input::DeputyFailed {
                error: "mosix-deputy missing".into(),
                gone: false,
            },
            now,
        );
        assert_eq!(a[0], Action::Send(Peer::Dest, ToHost::Abort));
        assert!(matches!(
            outcome(&a),
            Outcome::RunsOn(Failure::Deputy { .. })
        ));
        assert!(
            !a.contains(&Action::ResumeHere),
            "its handler returned already"
        );

        let mut s = held_from_home(now);
        let a = s.input(
            Input::DeputyFailed {
                error: "killed".into(),
                gone: true,
            },
            now,
        );
        assert_eq!(a[0], Action::Send(Peer::Dest, ToHost::Abort));
        assert!(matches!(outcome(&a), Outcome::Lost(_)));
    }

    #[test]
    fn a_link_lost_at_the_commit_loses_the_process_and_runs_nothing() {
        let now = Instant::now();
        let mut s = held_from_home(now);
        s.input(Input::DeputyReady, now);
        // The driver's send of Go failed.
        let a = s.input(Input::Broken(Peer::Dest, "reset".into()), now);
        assert!(
            matches!(outcome(&a), Outcome::Lost(Failure::Commit { .. })),
            "{a:?}"
        );
    }

    #[test]
    fn an_answer_out_of_step_is_a_failure_not_a_guess() {
        let now = Instant::now();
        let mut s = from_home(now);
        s.input(Input::Connected(Peer::Dest), now);
        let a = s.input(dest(FromHost::Left), now);
        assert_eq!(a[0], Action::ResumeHere);
        assert!(matches!(
            outcome(&a),
            Outcome::RunsOn(Failure::OutOfStep { .. })
        ));
        // A direct answer to a move from home, too.
        let mut s = from_home(now);
        s.input(Input::Connected(Peer::Dest), now);
        let a = s.input(dest(FromHost::Expecting { token: 3 }), now);
        assert!(matches!(
            outcome(&a),
            Outcome::RunsOn(Failure::OutOfStep { .. })
        ));
    }

    /// A direct move up to the point where the old node delivered.
    fn sent_direct(now: Instant) -> Source {
        let mut s = direct(now);
        let a = s.input(Input::Connected(Peer::Dest), now);
        assert!(matches!(
            &a[..],
            [Action::Send(
                Peer::Dest,
                ToHost::Offer {
                    bytes: 0,
                    direct: true,
                    ..
                }
            )]
        ));
        let a = s.input(dest(FromHost::Expecting { token: 5 }), now);
        assert_eq!(
            a,
            vec![Action::Send(
                Peer::Old,
                ToHost::FreezeTo {
                    node: "n3".into(),
                    address: "10.0.0.3:7340".into(),
                    token: 5
                }
            )]
        );
        assert_eq!(s.waiting().map(|w| w.0), Some(Peer::Old));
        let out = FromHost::Output {
            fd: 1,
            data: Bytes(b"last words".to_vec()),
        };
        assert_eq!(s.input(old(out.clone()), now), vec![Action::ToDeputy(out)]);
        let unread = FromHost::Unread {
            fd: 0,
            data: Bytes(b"typed ahead".to_vec()),
        };
        assert_eq!(s.input(old(unread), now), Vec::new());
        let call = FromHost::Call {
            call: mosix_proto::migrate::Call::Getppid,
        };
        assert_eq!(
            s.input(old(call), now),
            vec![Action::Send(
                Peer::Old,
                ToHost::Reply {
                    reply: CallReply::Busy
                }
            )]
        );
        assert_eq!(
            s.input(old(FromHost::Sent { bytes: 4096 }), now),
            Vec::new()
        );
        assert_eq!(s.waiting().map(|w| w.0), Some(Peer::Dest));
        s
    }

    #[test]
    fn a_direct_move_ends_the_old_body_before_the_new_one_goes() {
        let now = Instant::now();
        let mut s = sent_direct(now);
        assert_eq!(
            s.input(dest(FromHost::Held { body_pid: 77 }), now),
            vec![Action::Send(Peer::Old, ToHost::Done)]
        );
        assert_eq!(s.waiting().map(|w| w.0), Some(Peer::Old));
        assert_eq!(
            s.input(old(FromHost::Left), now),
            vec![
                Action::Send(Peer::Dest, ToHost::Go),
                Action::Finish(Outcome::Moved {
                    body_pid: 77,
                    bytes: 4096,
                    unread: vec![(0, Bytes(b"typed ahead".to_vec()))]
                })
            ]
        );
    }

    #[test]
    fn a_direct_move_goes_on_when_the_old_node_does_not_confirm_the_end() {
        let now = Instant::now();
        let mut s = sent_direct(now);
        s.input(dest(FromHost::Held { body_pid: 77 }), now);
        // Its node kills a frozen body whose link is gone.
        let a = s.input(Input::Broken(Peer::Old, "reset".into()), now);
        assert_eq!(a[0], Action::Send(Peer::Dest, ToHost::Go));
        assert!(matches!(outcome(&a), Outcome::Moved { body_pid: 77, .. }));
    }

    #[test]
    fn a_direct_move_refused_at_the_offer_resumes_nothing_that_was_not_frozen() {
        let now = Instant::now();
        let mut s = direct(now);
        s.input(Input::Connected(Peer::Dest), now);
        let a = s.input(
            dest(FromHost::Refused {
                reason: Refusal::NoGuests { node: "n3".into() },
            }),
            now,
        );
        // Resume is harmless to a body that is not frozen, and needed if
        // it is: the old node is always told.
        assert_eq!(a[0], Action::Send(Peer::Old, ToHost::Resume));
        assert!(matches!(
            outcome(&a),
            Outcome::RunsOn(Failure::Refused { .. })
        ));
    }

    #[test]
    fn a_body_that_blocks_the_freeze_signal_for_a_moment_is_asked_again() {
        let now = Instant::now();
        let mut s = direct(now);
        s.input(Input::Connected(Peer::Dest), now);
        s.input(dest(FromHost::Expecting { token: 5 }), now);
        let blocked = FreezeFailure::CantMove(CantMove::BlocksFreezeSignal { signal: 40 });
        for _ in 0..FREEZE_RETRIES {
            let a = s.input(
                old(FromHost::FreezeFailed {
                    reason: blocked.clone(),
                }),
                now,
            );
            assert_eq!(a[0], Action::Pause(FREEZE_RETRY_PAUSE));
            assert!(matches!(
                a[1],
                Action::Send(Peer::Old, ToHost::FreezeTo { token: 5, .. })
            ));
        }
        // Then it is refused, and the body runs on at its node (its host
        // resumed it already).
        let a = s.input(old(FromHost::FreezeFailed { reason: blocked }), now);
        assert!(!a.contains(&Action::Send(Peer::Old, ToHost::Resume)));
        assert!(matches!(
            outcome(&a),
            Outcome::RunsOn(Failure::NotFrozen { .. })
        ));
    }

    #[test]
    fn a_freeze_failure_that_will_not_pass_is_not_asked_again() {
        let now = Instant::now();
        let mut s = direct(now);
        s.input(Input::Connected(Peer::Dest), now);
        s.input(dest(FromHost::Expecting { token: 5 }), now);
        let reason = FreezeFailure::CantMove(CantMove::Threads { threads: 2 });
        let a = s.input(old(FromHost::FreezeFailed { reason }), now);
        assert_eq!(a.len(), 1);
        let text = match outcome(&a) {
            Outcome::RunsOn(f) => f.to_string(),
            o => panic!("{o:?}"),
        };
        assert_eq!(
            text,
            "node n2 could not freeze the body or send it to node n3: it cannot move now: it has 2 threads; only single-threaded processes can be frozen"
        );
    }

    #[test]
    fn the_old_node_lost_while_it_freezes_loses_the_process() {
        let now = Instant::now();
        let mut s = direct(now);
        s.input(Input::Connected(Peer::Dest), now);
        s.input(dest(FromHost::Expecting { token: 5 }), now);
        let a = s.input(Input::Broken(Peer::Old, "keepalive".into()), now);
        assert!(matches!(
            outcome(&a),
            Outcome::Lost(Failure::LinkLost { .. })
        ));
        // ... or goes silent past the deadline.
        let mut s = direct(now);
        s.input(Input::Connected(Peer::Dest), now);
        s.input(dest(FromHost::Expecting { token: 5 }), now);
        let (_, d) = s.waiting().unwrap();
        assert!(matches!(
            outcome(&s.timeout(d)),
            Outcome::Lost(Failure::Timeout { .. })
        ));
    }

    #[test]
    fn the_destination_dying_after_the_delivery_resumes_the_body_at_its_node() {
        let now = Instant::now();
        let mut s = sent_direct(now);
        let a = s.input(Input::Broken(Peer::Dest, "reset".into()), now);
        assert_eq!(a[0], Action::Send(Peer::Old, ToHost::Resume));
        assert!(matches!(
            outcome(&a),
            Outcome::RunsOn(Failure::LinkLost { .. })
        ));
        // The corrupt-image case, likewise.
        let mut s = sent_direct(now);
        let reason = HostFailure::BadImage {
            error: "bad".into(),
        };
        let a = s.input(dest(FromHost::Failed { reason }), now);
        assert_eq!(a[0], Action::Send(Peer::Old, ToHost::Resume));
        // And if the old node is lost too, the process is.
        let a = s.input(Input::Broken(Peer::Old, "gone".into()), now);
        let Outcome::Lost(why) = outcome(&a) else {
            panic!("{a:?}")
        };
        assert!(why.to_string().contains("was lost meanwhile"), "{why}");
    }

    #[test]
    fn a_body_that_ends_while_it_is_asked_to_freeze_ends_the_move() {
        let now = Instant::now();
        let mut s = direct(now);
        s.input(Input::Connected(Peer::Dest), now);
        s.input(dest(FromHost::Expecting { token: 5 }), now);
        let status = BodyStatus::Code { code: 3 };
        let a = s.input(old(FromHost::Exited { status }), now);
        assert_eq!(a, vec![Action::Finish(Outcome::Ended(status))]);
    }

    #[test]
    fn a_direct_commit_lost_loses_the_process() {
        let now = Instant::now();
        let mut s = sent_direct(now);
        s.input(dest(FromHost::Held { body_pid: 77 }), now);
        s.input(old(FromHost::Left), now);
        let a = s.input(Input::Broken(Peer::Dest, "reset".into()), now);
        assert!(matches!(outcome(&a), Outcome::Lost(Failure::Commit { .. })));
    }

    fn to_home(now: Instant) -> Source {
        let mut s = Source::new(Leg::ToHome { from: "n3".into() }, "home", facts(), 0);
        assert_eq!(s.start(now), vec![Action::Send(Peer::Old, ToHost::Freeze)]);
        assert_eq!(s.waiting().map(|w| w.0), Some(Peer::Old));
        s
    }

    #[test]
    fn a_body_comes_home_and_its_old_copy_ends_after_it_is_whole() {
        let now = Instant::now();
        let mut s = to_home(now);
        let unread = FromHost::Unread {
            fd: 0,
            data: Bytes(b"abc".to_vec()),
        };
        assert_eq!(s.input(old(unread), now), Vec::new());
        assert_eq!(
            s.input(old(FromHost::Image { bytes: 8192 }), now),
            vec![Action::ReceiveImage { bytes: 8192 }]
        );
        assert_eq!(
            s.input(Input::Received { bytes: 8192 }, now),
            vec![Action::RestoreHere {
                unread: vec![(0, Bytes(b"abc".to_vec()))]
            }]
        );
        assert_eq!(
            s.input(Input::HomeRestored, now),
            vec![Action::Send(Peer::Old, ToHost::Done)]
        );
        assert_eq!(
            s.input(old(FromHost::Left), now),
            vec![Action::Finish(Outcome::Moved {
                body_pid: 42,
                bytes: 8192,
                unread: Vec::new()
            })]
        );
    }

    #[test]
    fn a_bad_image_coming_home_resumes_the_body_where_it_was() {
        let now = Instant::now();
        let mut s = to_home(now);
        s.input(old(FromHost::Image { bytes: 8192 }), now);
        let a = s.input(
            Input::ReceiveFailed {
                error: "checksum mismatch".into(),
                frozen: true,
            },
            now,
        );
        assert_eq!(a[0], Action::Send(Peer::Old, ToHost::Resume));
        assert!(matches!(
            outcome(&a),
            Outcome::RunsOn(Failure::NotReceived { .. })
        ));
        // A capture that failed at the node: it resumed the body itself.
        let mut s = to_home(now);
        s.input(old(FromHost::Image { bytes: 8192 }), now);
        let a = s.input(
            Input::ReceiveFailed {
                error: "cannot read the body".into(),
                frozen: false,
            },
            now,
        );
        assert_eq!(a.len(), 1);
        assert!(matches!(outcome(&a), Outcome::RunsOn(_)));
    }

    #[test]
    fn a_failed_restore_at_home_resumes_the_body_or_ends_it_with_its_deputy() {
        let now = Instant::now();
        let mut s = to_home(now);
        s.input(old(FromHost::Image { bytes: 8192 }), now);
        s.input(Input::Received { bytes: 8192 }, now);
        let a = s.input(
            Input::HomeFailed {
                error: "mosix-restore is missing".into(),
                gone: false,
            },
            now,
        );
        assert_eq!(a[0], Action::Send(Peer::Old, ToHost::Resume));
        assert!(matches!(
            outcome(&a),
            Outcome::RunsOn(Failure::NotHome { .. })
        ));

        let mut s = to_home(now);
        s.input(old(FromHost::Image { bytes: 8192 }), now);
        s.input(Input::Received { bytes: 8192 }, now);
        let a = s.input(
            Input::HomeFailed {
                error: "the deputy went away".into(),
                gone: true,
            },
            now,
        );
        assert_eq!(a[0], Action::Send(Peer::Old, ToHost::Done));
        assert!(matches!(outcome(&a), Outcome::Lost(_)));
    }

    #[test]
    fn the_node_lost_while_the_body_comes_home_loses_the_process() {
        let now = Instant::now();
        for got_image in [false, true] {
            let mut s = to_home(now);
            if got_image {
                s.input(old(FromHost::Image { bytes: 8192 }), now);
            }
            let a = s.input(Input::Broken(Peer::Old, "reset".into()), now);
            assert!(matches!(
                outcome(&a),
                Outcome::Lost(Failure::LinkLost { .. })
            ));
        }
        let mut s = to_home(now);
        let (_, d) = s.waiting().unwrap();
        assert!(matches!(
            outcome(&s.timeout(d)),
            Outcome::Lost(Failure::Timeout { .. })
        ));
    }

    #[test]
    fn a_body_blocking_the_freeze_signal_for_a_moment_is_asked_again_to_come_home() {
        let now = Instant::now();
        let mut s = to_home(now);
        let blocked = FreezeFailure::CantMove(CantMove::BlocksFreezeSignal { signal: 40 });
        let a = s.input(
            old(FromHost::FreezeFailed {
                reason: blocked.clone(),
            }),
            now,
        );
        assert_eq!(
            a,
            vec![
                Action::Pause(FREEZE_RETRY_PAUSE),
                Action::Send(Peer::Old, ToHost::Freeze)
            ]
        );
        let mut s = to_home(now);
        let status = BodyStatus::Signal {
            sig: 9,
            core: false,
        };
        let a = s.input(old(FromHost::Exited { status }), now);
        assert_eq!(a, vec![Action::Finish(Outcome::Ended(status))]);
    }

    mod never_two {
        use super::*;
        use proptest::prelude::*;

        fn any_input() -> impl Strategy<Value = Input> {
            let peer = prop_oneof![Just(Peer::Dest), Just(Peer::Old)];
            let msg = prop_oneof![
                Just(FromHost::Accepted),
                (1u64..9).prop_map(|token| FromHost::Expecting { token }),
                (1u64..9).prop_map(|bytes| FromHost::Sent { bytes }),
                Just(FromHost::Refused {
                    reason: Refusal::NotAHome
                }),
                (1i32..9).prop_map(|body_pid| FromHost::Held { body_pid }),
                Just(FromHost::Failed {
                    reason: HostFailure::UnknownToken
                }),
                Just(FromHost::Left),
                Just(FromHost::FreezeFailed {
                    reason: FreezeFailure::CantMove(CantMove::BlocksFreezeSignal { signal: 40 })
                }),
                Just(FromHost::Exited {
                    status: BodyStatus::Code { code: 0 }
                }),
                (1u64..9).prop_map(|bytes| FromHost::Image { bytes }),
            ];
            prop_oneof![
                peer.clone().prop_map(Input::Connected),
                (peer.clone(), msg).prop_map(|(p, m)| Input::From(p, m)),
                peer.prop_map(|p| Input::Broken(p, "x".into())),
                Just(Input::Streamed { checksum: 1 }),
                Just(Input::StreamFailed("x".into())),
                Just(Input::DeputyReady),
                Just(Input::DeputyFailed {
                    error: "x".into(),
                    gone: false
                }),
                (1u64..9).prop_map(|bytes| Input::Received { bytes }),
                any::<bool>().prop_map(|frozen| Input::ReceiveFailed {
                    error: "x".into(),
                    frozen
                }),
                Just(Input::HomeRestored),
                any::<bool>().prop_map(|gone| Input::HomeFailed {
                    error: "x".into(),
                    gone
                }),
            ]
        }

        proptest! {
            /// Whatever the peers say and in whatever order: the body is
            /// told to go at most once, only once the old copy can no
            /// longer run (the deputy is up, or the old node ended or
            /// lost its copy), and a process resumed at home was never
            /// made a deputy; at most one outcome.
            #[test]
            fn a_move_never_runs_two_copies(leg_no in 0..3u8, inputs in proptest::collection::vec(any_input(), 0..24)) {
                let now = Instant::now();
                let direct_leg = leg_no == 1;
                let leg = match leg_no {
                    0 => Leg::FromHome,
                    1 => Leg::Direct { from: "n2".into(), dest_address: "1.2.3.4:5".into() },
                    _ => Leg::ToHome { from: "n2".into() },
                };
                let home_leg = leg_no == 2;
                let mut s = Source::new(leg, "n3", facts(), 4096);
                let mut all = s.start(now);
                for i in inputs {
                    all.extend(s.input(i.clone(), now));
                }
                let gos = all.iter().filter(|a| **a == Action::Send(Peer::Dest, ToHost::Go)).count();
                prop_assert!(gos <= 1);
                let finishes = all.iter().filter(|a| matches!(a, Action::Finish(_))).count();
                prop_assert!(finishes <= 1 || all.contains(&Action::Send(Peer::Old, ToHost::Resume)), "{all:?}");
                if gos == 1 {
                    let go = all.iter().position(|a| *a == Action::Send(Peer::Dest, ToHost::Go)).unwrap();
                    if direct_leg {
                        prop_assert!(all[..go].contains(&Action::Send(Peer::Old, ToHost::Done)));
                    } else {
                        prop_assert!(all[..go].contains(&Action::BecomeDeputy));
                    }
                    prop_assert!(!all.contains(&Action::ResumeHere));
                    prop_assert!(!all.contains(&Action::Send(Peer::Old, ToHost::Resume)));
                }
                if let Some(b) = all.iter().position(|a| *a == Action::BecomeDeputy) {
                    prop_assert!(!all[b..].contains(&Action::ResumeHere));
                }
                if home_leg {
                    // The old copy ends only once the process is whole at
                    // home or gone there, and is never both resumed and
                    // ended.
                    prop_assert_eq!(gos, 0);
                    let done = all.iter().position(|a| *a == Action::Send(Peer::Old, ToHost::Done));
                    if let Some(d) = done {
                        let restored = all[..d].iter().any(|a| matches!(a, Action::RestoreHere { .. }));
                        prop_assert!(restored, "{:?}", all);
                        prop_assert!(!all.contains(&Action::Send(Peer::Old, ToHost::Resume)));
                    }
                }
            }
        }
    }
}
