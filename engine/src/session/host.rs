//! The destination of a move: a node's body host (`remoted`), which takes
//! an offered body, receives its image (on the source's link, or
//! delivered straight from the node the body ran on), restores it held
//! before its first instruction, and lets it go only on the source's
//! word.
//!
//! ```text
//! Offer -> (prepare: a memfd; direct: a token) -> Accepted | Expecting{token}
//!   -> (the image arrives) -> (restore, held) -> Held -> Go -> (run it)
//! ```
//!
//! Anything but `Go` once the body is held (an abort, a broken link, the
//! deadline) kills the held body ([`Action::DropBody`]): the source runs
//! on, and there are never two copies.

use super::STEP_TIMEOUT;
use mosix_proto::migrate::{FromHost, HomeClocks, HomeFacts, ToHost};
use mosix_proto::reason::{HostFailure, Refusal};
use std::time::Instant;

/// The offer, as the host keeps it for the restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offered {
    /// The process's home pid.
    pub home_pid: i32,
    /// Owner uid the body runs with.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Image size (0 for a direct move: the delivery says).
    pub bytes: u64,
    /// The body's control fd number.
    pub ctl_fd: i32,
    /// Its freeze signal.
    pub freeze_signal: i32,
    /// What its identity calls answer.
    pub home: HomeFacts,
    /// The home's clocks when it offered.
    pub clocks: Option<HomeClocks>,
    /// The image comes straight from the body's current node.
    pub direct: bool,
}

/// What happened, as the driver tells the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A message from the source.
    From(ToHost),
    /// The source's link broke.
    Broken(String),
    /// The image's memory is ready (and, direct, expected under `token`).
    Prepared {
        /// The token the body's node delivers under (direct moves).
        token: Option<u64>,
    },
    /// The whole image arrived.
    ImageIn {
        /// Its header checksum.
        checksum: u64,
        /// Its size.
        bytes: u64,
    },
    /// Preparing or receiving the image failed.
    ImageFailed(HostFailure),
    /// The body is restored and held before its first instruction.
    Restored {
        /// Its pid here.
        body_pid: i32,
    },
    /// The image could not be restored; nothing runs.
    RestoreFailed(HostFailure),
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a message to the source.
    Send(FromHost),
    /// Make room for the image (a memfd); for a direct move, expect it
    /// under a new token. Answer [`Input::Prepared`] or
    /// [`Input::ImageFailed`].
    Prepare(Offered),
    /// Read the image (`bytes` raw bytes, then its end) from the
    /// source's link. Answer [`Input::ImageIn`] or [`Input::ImageFailed`].
    ReceiveImage {
        /// Its size.
        bytes: u64,
    },
    /// Wait for the body's node to deliver the image (giving up if the
    /// source says anything or closes its link). Answer
    /// [`Input::ImageIn`] or [`Input::ImageFailed`].
    AwaitDelivery,
    /// Check the image and restore it held. Answer [`Input::Restored`]
    /// or [`Input::RestoreFailed`].
    Restore {
        /// The image's header checksum.
        checksum: u64,
    },
    /// Let the held body run.
    Release {
        /// Its pid.
        body_pid: i32,
    },
    /// Kill and reap the held body.
    DropBody {
        /// Its pid.
        body_pid: i32,
    },
    /// The session is over.
    Finish(Outcome),
}

/// How it ended for the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The body runs here.
    Running {
        /// Its pid.
        body_pid: i32,
    },
    /// The host did not take it.
    Refused(Refusal),
    /// It could not be received or restored.
    Failed(HostFailure),
    /// The source gave up after the restore; the held body was dropped.
    Aborted(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    AwaitOffer,
    Preparing { direct: bool, bytes: u64 },
    Receiving,
    Restoring,
    Held { body_pid: i32 },
    Over,
}

/// The destination's side of one move.
#[derive(Debug)]
pub struct Host {
    node: String,
    accepting: bool,
    state: State,
    deadline: Option<Instant>,
}

/// The smallest image there is (its header).
const MIN_IMAGE: u64 = size_of::<mosix_layout::ImageHeader>() as u64;

impl Host {
    /// A session of node `node`'s host, which takes guests now or not.
    pub fn new(node: &str, accepting: bool, now: Instant) -> Host {
        Host {
            node: node.to_string(),
            accepting,
            state: State::AwaitOffer,
            deadline: Some(now + STEP_TIMEOUT),
        }
    }

    /// Until when the driver should wait for a message from the source
    /// (`None`: it waits for the result of an action, or it is over).
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::AwaitOffer | State::Held { .. } => self.deadline,
            _ => None,
        }
    }

    /// The deadline passed.
    pub fn timeout(&mut self, now: Instant) -> Vec<Action> {
        match self.deadline() {
            Some(d) if now >= d => self.input(
                Input::Broken("the source did not answer in time".into()),
                now,
            ),
            _ => Vec::new(),
        }
    }

    /// Feed what happened; the actions to carry out.
    pub fn input(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let state = std::mem::replace(&mut self.state, State::Over);
        match (state, input) {
            (State::Over, _) => Vec::new(),
            (State::AwaitOffer, Input::From(msg)) => self.offer(msg),
            (State::AwaitOffer, Input::Broken(error)) => {
                vec![Action::Finish(Outcome::Failed(HostFailure::Transfer {
                    error,
                }))]
            }
            (State::Preparing { direct, bytes }, Input::Prepared { token }) => {
                self.state = State::Receiving;
                match (direct, token) {
                    (true, Some(token)) => vec![
                        Action::Send(FromHost::Expecting { token }),
                        Action::AwaitDelivery,
                    ],
                    (false, _) => vec![
                        Action::Send(FromHost::Accepted),
                        Action::ReceiveImage { bytes },
                    ],
                    (true, None) => self.failed(HostFailure::Local {
                        what: "cannot expect the image".into(),
                        error: "no token".into(),
                    }),
                }
            }
            (State::Preparing { .. } | State::Receiving, Input::ImageFailed(why)) => {
                self.failed(why)
            }
            (State::Receiving, Input::ImageIn { checksum, bytes }) => {
                if bytes < MIN_IMAGE {
                    return self.failed(HostFailure::BadImage {
                        error: format!("an image of {bytes} bytes is too small to be one"),
                    });
                }
                self.state = State::Restoring;
                vec![Action::Restore { checksum }]
            }
            (State::Restoring, Input::Restored { body_pid }) => {
                self.state = State::Held { body_pid };
                self.deadline = Some(now + STEP_TIMEOUT);
                vec![Action::Send(FromHost::Held { body_pid })]
            }
            (State::Restoring, Input::RestoreFailed(why)) => self.failed(why),
            (State::Held { body_pid }, Input::From(ToHost::Go)) => vec![
                Action::Release { body_pid },
                Action::Finish(Outcome::Running { body_pid }),
            ],
            (State::Held { body_pid }, Input::From(other)) => vec![
                Action::DropBody { body_pid },
                Action::Finish(Outcome::Aborted(format!(
                    "source said {other:?} instead of go"
                ))),
            ],
            (State::Held { body_pid }, Input::Broken(error)) => vec![
                Action::DropBody { body_pid },
                Action::Finish(Outcome::Failed(HostFailure::Transfer {
                    error: format!("no go from the source: {error}"),
                })),
            ],
            (_, Input::Broken(error)) => {
                vec![Action::Finish(Outcome::Failed(HostFailure::Transfer {
                    error,
                }))]
            }
            (state, other) => {
                tracing::warn!(?state, input = ?other, "host session: unexpected input; the move is dropped");
                let why = HostFailure::Transfer {
                    error: format!("out of step: {other:?}"),
                };
                let mut a = Vec::new();
                if let State::Held { body_pid } = state {
                    a.push(Action::DropBody { body_pid });
                }
                a.push(Action::Send(FromHost::Failed {
                    reason: why.clone(),
                }));
                a.push(Action::Finish(Outcome::Failed(why)));
                a
            }
        }
    }

    /// The first message: an offer, checked.
    fn offer(&mut self, msg: ToHost) -> Vec<Action> {
        let ToHost::Offer {
            home_pid,
            uid,
            gid,
            bytes,
            ctl_fd,
            freeze_signal,
            home,
            clocks,
            direct,
        } = msg
        else {
            return self.refuse(Refusal::OutOfStep {
                expected: "an offer".into(),
                got: format!("{msg:?}"),
            });
        };
        if !self.accepting {
            return self.refuse(Refusal::NoGuests {
                node: self.node.clone(),
            });
        }
        if !direct && bytes < MIN_IMAGE {
            return self.refuse(Refusal::TooSmall { bytes });
        }
        self.state = State::Preparing { direct, bytes };
        vec![Action::Prepare(Offered {
            home_pid,
            uid,
            gid,
            bytes,
            ctl_fd,
            freeze_signal,
            home,
            clocks,
            direct,
        })]
    }

    fn refuse(&mut self, why: Refusal) -> Vec<Action> {
        self.state = State::Over;
        vec![
            Action::Send(FromHost::Refused {
                reason: why.clone(),
            }),
            Action::Finish(Outcome::Refused(why)),
        ]
    }

    fn failed(&mut self, why: HostFailure) -> Vec<Action> {
        self.state = State::Over;
        vec![
            Action::Send(FromHost::Failed {
                reason: why.clone(),
            }),
            Action::Finish(Outcome::Failed(why)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(bytes: u64, direct: bool) -> ToHost {
        ToHost::Offer {
            home_pid: 42,
            uid: 1000,
            gid: 1000,
            bytes,
            ctl_fd: 1023,
            freeze_signal: 40,
            home: HomeFacts::default(),
            clocks: None,
            direct,
        }
    }

    fn outcome(actions: &[Action]) -> &Outcome {
        match actions.last() {
            Some(Action::Finish(o)) => o,
            other => panic!("no outcome: {other:?}"),
        }
    }

    /// A session up to the held body `7`.
    fn held(now: Instant, direct: bool) -> Host {
        let mut h = Host::new("n2", true, now);
        assert!(h.deadline().is_some());
        let a = h.input(
            Input::From(offer(if direct { 0 } else { 8192 }, direct)),
            now,
        );
        assert!(matches!(
            &a[..],
            [Action::Prepare(Offered {
                home_pid: 42,
                uid: 1000,
                ..
            })]
        ));
        if direct {
            assert_eq!(
                h.input(Input::Prepared { token: Some(9) }, now),
                vec![
                    Action::Send(FromHost::Expecting { token: 9 }),
                    Action::AwaitDelivery
                ]
            );
        } else {
            assert_eq!(
                h.input(Input::Prepared { token: None }, now),
                vec![
                    Action::Send(FromHost::Accepted),
                    Action::ReceiveImage { bytes: 8192 }
                ]
            );
        }
        assert_eq!(h.deadline(), None, "the image is the driver's to wait for");
        assert_eq!(
            h.input(
                Input::ImageIn {
                    checksum: 5,
                    bytes: 8192
                },
                now
            ),
            vec![Action::Restore { checksum: 5 }]
        );
        assert_eq!(
            h.input(Input::Restored { body_pid: 7 }, now),
            vec![Action::Send(FromHost::Held { body_pid: 7 })]
        );
        h
    }

    #[test]
    fn a_held_body_runs_on_the_sources_go() {
        for direct in [false, true] {
            let now = Instant::now();
            let mut h = held(now, direct);
            assert_eq!(
                h.input(Input::From(ToHost::Go), now),
                vec![
                    Action::Release { body_pid: 7 },
                    Action::Finish(Outcome::Running { body_pid: 7 })
                ]
            );
        }
    }

    #[test]
    fn a_blocked_node_refuses_and_starts_nothing() {
        let now = Instant::now();
        let mut h = Host::new("n2", false, now);
        let a = h.input(Input::From(offer(8192, false)), now);
        let reason = Refusal::NoGuests { node: "n2".into() };
        assert_eq!(
            a,
            vec![
                Action::Send(FromHost::Refused {
                    reason: reason.clone()
                }),
                Action::Finish(Outcome::Refused(reason))
            ]
        );
    }

    #[test]
    fn an_offer_too_small_to_be_an_image_or_no_offer_is_refused() {
        let now = Instant::now();
        let mut h = Host::new("n2", true, now);
        let a = h.input(Input::From(offer(10, false)), now);
        assert_eq!(
            outcome(&a),
            &Outcome::Refused(Refusal::TooSmall { bytes: 10 })
        );
        let mut h = Host::new("n2", true, now);
        let a = h.input(Input::From(ToHost::Go), now);
        assert!(matches!(
            outcome(&a),
            Outcome::Refused(Refusal::OutOfStep { .. })
        ));
        assert!(matches!(a[0], Action::Send(FromHost::Refused { .. })));
    }

    #[test]
    fn a_source_silent_before_its_offer_is_dropped() {
        let now = Instant::now();
        let mut h = Host::new("n2", true, now);
        assert_eq!(h.timeout(now), Vec::new());
        let a = h.timeout(now + STEP_TIMEOUT);
        assert!(matches!(
            outcome(&a),
            Outcome::Failed(HostFailure::Transfer { .. })
        ));
    }

    #[test]
    fn a_transfer_cut_or_a_corrupt_image_fails_and_restores_nothing() {
        let now = Instant::now();
        for why in [
            HostFailure::Transfer {
                error: "image transfer cut after 4096 of 8192 bytes".into(),
            },
            HostFailure::UnknownToken,
        ] {
            let mut h = Host::new("n2", true, now);
            h.input(Input::From(offer(8192, false)), now);
            h.input(Input::Prepared { token: None }, now);
            let a = h.input(Input::ImageFailed(why.clone()), now);
            assert_eq!(
                a,
                vec![
                    Action::Send(FromHost::Failed {
                        reason: why.clone()
                    }),
                    Action::Finish(Outcome::Failed(why))
                ]
            );
        }
        let mut h = Host::new("n2", true, now);
        h.input(Input::From(offer(8192, false)), now);
        h.input(Input::Prepared { token: None }, now);
        h.input(
            Input::ImageIn {
                checksum: 1,
                bytes: 8192,
            },
            now,
        );
        let bad = HostFailure::BadImage {
            error: "checksum mismatch".into(),
        };
        let a = h.input(Input::RestoreFailed(bad.clone()), now);
        assert_eq!(a[0], Action::Send(FromHost::Failed { reason: bad }));
        assert!(!a.iter().any(|x| matches!(x, Action::Release { .. })));
    }

    #[test]
    fn an_abort_a_lost_home_or_silence_after_the_restore_drops_the_held_body() {
        let now = Instant::now();
        let mut h = held(now, false);
        let a = h.input(Input::From(ToHost::Abort), now);
        assert_eq!(a[0], Action::DropBody { body_pid: 7 });
        assert!(matches!(outcome(&a), Outcome::Aborted(_)));

        let mut h = held(now, true);
        let a = h.input(Input::Broken("connection reset".into()), now);
        assert_eq!(a[0], Action::DropBody { body_pid: 7 });

        let mut h = held(now, false);
        let d = h.deadline().expect("waits for the go");
        assert_eq!(h.timeout(now), Vec::new());
        let a = h.timeout(d);
        assert_eq!(a[0], Action::DropBody { body_pid: 7 });
    }

    #[test]
    fn a_direct_delivery_the_home_gave_up_fails() {
        let now = Instant::now();
        let mut h = Host::new("n3", true, now);
        h.input(Input::From(offer(0, true)), now);
        h.input(Input::Prepared { token: Some(9) }, now);
        let why = HostFailure::Transfer {
            error: "the home gave up the move before the image arrived".into(),
        };
        let a = h.input(Input::ImageFailed(why.clone()), now);
        assert_eq!(outcome(&a), &Outcome::Failed(why));
    }

    mod never_two {
        use super::*;
        use proptest::prelude::*;

        fn any_input() -> impl Strategy<Value = Input> {
            prop_oneof![
                Just(Input::From(offer(8192, false))),
                Just(Input::From(offer(0, true))),
                Just(Input::From(ToHost::Go)),
                Just(Input::From(ToHost::Abort)),
                Just(Input::Broken("x".into())),
                proptest::option::of(1u64..5).prop_map(|token| Input::Prepared { token }),
                Just(Input::ImageIn {
                    checksum: 1,
                    bytes: 8192
                }),
                Just(Input::ImageFailed(HostFailure::UnknownToken)),
                (1i32..5).prop_map(|body_pid| Input::Restored { body_pid }),
                Just(Input::RestoreFailed(HostFailure::UnknownToken)),
            ]
        }

        proptest! {
            /// A restored body is either released on the source's go or
            /// dropped, never both, never neither once the session ends;
            /// nothing is released that was not restored.
            #[test]
            fn a_held_body_is_released_or_dropped(accepting: bool, inputs in proptest::collection::vec(any_input(), 0..16)) {
                let now = Instant::now();
                let mut h = Host::new("n2", accepting, now);
                let mut all = Vec::new();
                let mut restored = None;
                for i in inputs {
                    let a = h.input(i.clone(), now);
                    if let (Input::Restored { body_pid }, [Action::Send(FromHost::Held { .. })]) = (&i, &a[..]) {
                        restored = Some(*body_pid);
                    }
                    all.extend(a);
                }
                let released = all.iter().filter(|a| matches!(a, Action::Release { .. })).count();
                let dropped = all.iter().filter(|a| matches!(a, Action::DropBody { .. })).count();
                prop_assert!(released + dropped <= 1, "{all:?}");
                if released == 1 {
                    prop_assert!(restored.is_some());
                }
                let finished = all.iter().any(|a| matches!(a, Action::Finish(_)));
                if restored.is_some() && finished {
                    prop_assert_eq!(released + dropped, 1, "{:?}", all);
                }
            }
        }
    }
}
