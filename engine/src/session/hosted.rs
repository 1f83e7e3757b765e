//! A body's host when the body's home moves it on (home, or to another
//! node): the body is frozen here, its last output and unread input go
//! home, its image goes to where it moves, and it waits frozen for the
//! home's decision.
//!
//! ```text
//! (freeze) -> (drain: output, unread input) -> (image: home, or straight
//!   to the next node) -> wait -> Done: it ends here, Left
//!                               -> Resume: it runs on here
//! ```
//!
//! The body is never left running twice: it ends here only on the home's
//! `Done` (after the new copy is held elsewhere); it runs on here on
//! `Resume`, or when the freeze or the image failed before the home could
//! use it. A home lost while the body is frozen (a broken link, silence
//! past the deadline, a message out of step) kills it: the home decides
//! which copy lives, and without it none may.

use super::DIRECT_TIMEOUT;
use crate::freeze::Verdict;
use mosix_proto::migrate::{FromHost, ToHost};
use mosix_proto::reason::FreezeFailure;
use std::time::Instant;

/// What happened, as the driver tells the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The body is frozen in its handler.
    Frozen,
    /// It could not be frozen; it runs on.
    NotFrozen(FreezeFailure),
    /// Its last output and its unread input went home.
    Drained,
    /// Its image went where the home said.
    Sent {
        /// Image bytes.
        bytes: u64,
    },
    /// Its image could not be made or sent (the link to the home is
    /// still up).
    SendFailed(FreezeFailure),
    /// A message from the home.
    From(ToHost),
    /// The link to the home broke.
    Broken(String),
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a message to the home.
    Send(FromHost),
    /// Send what the frozen body wrote, then the input it did not read;
    /// answer [`Input::Drained`] or [`Input::Broken`].
    Drain,
    /// Capture the body and send its image where the home said (and,
    /// for the next node, tell the home it was delivered); answer
    /// [`Input::Sent`], [`Input::SendFailed`] or [`Input::Broken`].
    SendImage,
    /// Give the frozen body its verdict.
    Verdict(Verdict),
    /// The body ended here: reap it, and hand the relays it shares with
    /// its children here to one of them.
    EndHere,
    /// Raise a signal that came for the body while it was frozen.
    Signal(i32),
    /// Kill and reap the body.
    Kill,
    /// The session is over.
    Finish(Outcome),
}

/// How it ended for the body here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It runs on here.
    Resumed,
    /// It runs elsewhere now.
    Left,
    /// It was killed (its home was lost).
    Gone(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Freezing,
    Draining,
    Sending,
    Deciding {
        held: Vec<i32>,
    },
    /// The body runs on; the home is being told why.
    Reporting,
    Over,
}

/// One freeze of a hosted body for its home.
#[derive(Debug)]
pub struct Hosted {
    state: State,
    deadline: Option<Instant>,
}

impl Default for Hosted {
    fn default() -> Self {
        Hosted {
            state: State::Freezing,
            deadline: None,
        }
    }
}

impl Hosted {
    /// A freeze that starts now (the driver freezes the body and answers
    /// [`Input::Frozen`] or [`Input::NotFrozen`]).
    pub fn new() -> Hosted {
        Hosted::default()
    }

    /// Until when the driver reads the home's decision (`None`: it does
    /// not wait for the home now).
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Deciding { .. } => self.deadline,
            _ => None,
        }
    }

    /// The deadline passed.
    pub fn timeout(&mut self, now: Instant) -> Vec<Action> {
        match self.deadline() {
            Some(d) if now >= d => self.input(
                Input::Broken("no decision from the home in time".into()),
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
            (State::Freezing, Input::Frozen) => {
                self.state = State::Draining;
                vec![Action::Drain]
            }
            (State::Freezing, Input::NotFrozen(reason)) => {
                self.state = State::Reporting;
                vec![
                    Action::Send(FromHost::FreezeFailed { reason }),
                    Action::Finish(Outcome::Resumed),
                ]
            }
            (State::Draining, Input::Drained) => {
                self.state = State::Sending;
                vec![Action::SendImage]
            }
            (State::Sending, Input::Sent { .. }) => {
                self.state = State::Deciding { held: Vec::new() };
                self.deadline = Some(now + DIRECT_TIMEOUT);
                Vec::new()
            }
            (State::Sending, Input::SendFailed(reason)) => {
                self.state = State::Reporting;
                vec![
                    Action::Verdict(Verdict::Continue),
                    Action::Send(FromHost::FreezeFailed { reason }),
                    Action::Finish(Outcome::Resumed),
                ]
            }
            // The home did not hear that the body runs on: it would take
            // the move as under way and hold a deputy for a body nobody
            // serves. End it, as a lost home ends a frozen body.
            (State::Reporting, Input::Broken(error)) => {
                vec![Action::Kill, Action::Finish(Outcome::Gone(error))]
            }
            (State::Reporting, _) => Vec::new(),
            (State::Deciding { mut held }, Input::From(ToHost::Signal { sig }))
                if (1..=64).contains(&sig) =>
            {
                held.push(sig);
                self.state = State::Deciding { held };
                Vec::new()
            }
            (State::Deciding { .. }, Input::From(ToHost::Done)) => vec![
                Action::Verdict(Verdict::Exit),
                Action::EndHere,
                Action::Send(FromHost::Left),
                Action::Finish(Outcome::Left),
            ],
            (State::Deciding { held }, Input::From(ToHost::Resume)) => {
                let mut a = vec![Action::Verdict(Verdict::Continue)];
                a.extend(held.into_iter().map(Action::Signal));
                a.push(Action::Finish(Outcome::Resumed));
                a
            }
            (State::Deciding { .. }, Input::From(other)) => vec![
                Action::Kill,
                Action::Finish(Outcome::Gone(format!(
                    "unexpected answer about a frozen body: {other:?}"
                ))),
            ],
            // Before the body is frozen, nothing is to be killed for a
            // lost home; from the freeze on, the body dies with the link.
            (State::Freezing, Input::Broken(error)) => {
                vec![Action::Finish(Outcome::Gone(error))]
            }
            (_, Input::Broken(error)) => {
                vec![Action::Kill, Action::Finish(Outcome::Gone(error))]
            }
            (state, other) => {
                tracing::warn!(?state, input = ?other, "hosted freeze: unexpected input; the body is killed");
                vec![
                    Action::Kill,
                    Action::Finish(Outcome::Gone(format!("out of step: {other:?}"))),
                ]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosix_proto::reason::CantMove;

    fn deciding(now: Instant) -> Hosted {
        let mut h = Hosted::new();
        assert_eq!(h.input(Input::Frozen, now), vec![Action::Drain]);
        assert_eq!(h.input(Input::Drained, now), vec![Action::SendImage]);
        assert_eq!(h.deadline(), None);
        assert_eq!(h.input(Input::Sent { bytes: 4096 }, now), Vec::new());
        assert!(h.deadline().is_some());
        h
    }

    #[test]
    fn the_body_ends_here_only_on_the_homes_done() {
        let now = Instant::now();
        let mut h = deciding(now);
        assert_eq!(
            h.input(Input::From(ToHost::Done), now),
            vec![
                Action::Verdict(Verdict::Exit),
                Action::EndHere,
                Action::Send(FromHost::Left),
                Action::Finish(Outcome::Left)
            ]
        );
    }

    #[test]
    fn a_resumed_body_gets_the_signals_that_came_meanwhile_in_order() {
        let now = Instant::now();
        let mut h = deciding(now);
        for sig in [10, 12, 2] {
            assert_eq!(
                h.input(Input::From(ToHost::Signal { sig }), now),
                Vec::new()
            );
        }
        assert_eq!(
            h.input(Input::From(ToHost::Resume), now),
            vec![
                Action::Verdict(Verdict::Continue),
                Action::Signal(10),
                Action::Signal(12),
                Action::Signal(2),
                Action::Finish(Outcome::Resumed)
            ]
        );
    }

    #[test]
    fn a_body_that_cannot_be_frozen_runs_on_and_the_home_hears_why() {
        let now = Instant::now();
        let mut h = Hosted::new();
        let reason = FreezeFailure::CantMove(CantMove::NoControl);
        assert_eq!(
            h.input(Input::NotFrozen(reason.clone()), now),
            vec![
                Action::Send(FromHost::FreezeFailed { reason }),
                Action::Finish(Outcome::Resumed)
            ]
        );
    }

    #[test]
    fn an_image_that_cannot_be_sent_resumes_the_body() {
        let now = Instant::now();
        let mut h = Hosted::new();
        h.input(Input::Frozen, now);
        h.input(Input::Drained, now);
        let reason = FreezeFailure::Deliver {
            node: "n3".into(),
            error: "connection refused".into(),
        };
        let a = h.input(Input::SendFailed(reason.clone()), now);
        assert_eq!(
            a,
            vec![
                Action::Verdict(Verdict::Continue),
                Action::Send(FromHost::FreezeFailed { reason }),
                Action::Finish(Outcome::Resumed)
            ]
        );
    }

    #[test]
    fn a_home_lost_as_it_is_told_the_body_runs_on_ends_the_body() {
        let now = Instant::now();
        let mut h = Hosted::new();
        h.input(Input::NotFrozen(FreezeFailure::NoAnswer { secs: 30 }), now);
        // The driver's send of FreezeFailed failed.
        let a = h.input(Input::Broken("reset".into()), now);
        assert_eq!(a[0], Action::Kill);
    }

    #[test]
    fn a_home_lost_while_the_body_is_frozen_kills_it_at_every_step() {
        let now = Instant::now();
        let prefixes: Vec<Vec<Input>> = vec![
            vec![Input::Frozen],
            vec![Input::Frozen, Input::Drained],
            vec![Input::Frozen, Input::Drained, Input::Sent { bytes: 1 }],
        ];
        for prefix in prefixes {
            let mut h = Hosted::new();
            for i in prefix.clone() {
                h.input(i, now);
            }
            let a = h.input(Input::Broken("reset".into()), now);
            assert_eq!(a[0], Action::Kill, "after {prefix:?}");
            assert!(matches!(a[1], Action::Finish(Outcome::Gone(_))));
        }
        // Silence past the deadline, and an answer out of step, too.
        let mut h = deciding(now);
        let d = h.deadline().unwrap();
        assert_eq!(h.timeout(now), Vec::new());
        assert_eq!(h.timeout(d)[0], Action::Kill);
        let mut h = deciding(now);
        assert_eq!(h.input(Input::From(ToHost::Go), now)[0], Action::Kill);
    }

    mod never_two {
        use super::*;
        use proptest::prelude::*;

        fn any_input() -> impl Strategy<Value = Input> {
            prop_oneof![
                Just(Input::Frozen),
                Just(Input::NotFrozen(FreezeFailure::NoAnswer { secs: 30 })),
                Just(Input::Drained),
                Just(Input::Sent { bytes: 1 }),
                Just(Input::SendFailed(FreezeFailure::Capture {
                    error: "x".into()
                })),
                Just(Input::From(ToHost::Done)),
                Just(Input::From(ToHost::Resume)),
                Just(Input::From(ToHost::Abort)),
                (1i32..70).prop_map(|sig| Input::From(ToHost::Signal { sig })),
                Just(Input::Broken("x".into())),
            ]
        }

        proptest! {
            /// The body ends here only on the home's Done after its image
            /// went out; it is never both resumed and ended or killed;
            /// one outcome.
            #[test]
            fn a_frozen_body_has_one_fate(inputs in proptest::collection::vec(any_input(), 0..16)) {
                let now = Instant::now();
                let mut h = Hosted::new();
                let mut all = Vec::new();
                let mut seen = Vec::new();
                for i in inputs {
                    let a = h.input(i.clone(), now);
                    if a.contains(&Action::Verdict(Verdict::Exit)) {
                        let sent = seen.contains(&Input::Sent { bytes: 1 });
                        prop_assert!(sent, "{:?}", seen);
                        prop_assert_eq!(&i, &Input::From(ToHost::Done));
                    }
                    seen.push(i);
                    all.extend(a);
                }
                // A resumed body is killed only when its home is lost
                // as it is told; an ended one is never resumed.
                let resumed = all.contains(&Action::Verdict(Verdict::Continue));
                let exit = all.contains(&Action::Verdict(Verdict::Exit));
                prop_assert!(!(resumed && exit), "{:?}", all);
                if resumed && all.contains(&Action::Kill) {
                    prop_assert!(seen.iter().any(|i| matches!(i, Input::Broken(_))));
                }
                let gone = all.iter().filter(|a| matches!(a, Action::Finish(Outcome::Gone(_)))).count();
                let others = all.iter().filter(|a| matches!(a, Action::Finish(Outcome::Left))).count();
                prop_assert!(gone + others <= 1);
            }
        }
    }
}
