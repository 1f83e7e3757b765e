//! Property tests: the framing and the link handshake take arbitrary,
//! arbitrarily split input without panicking, and never mistake garbage or
//! tampered traffic for a working link or a message.

use mosix_proto::frame::{
    Frame, FrameDecoder, FrameError, FrameKind, MAGIC, PROTOCOL_VERSION, encode_frame,
};
use mosix_proto::link::{ClusterKey, Hello, LinkCodec, LinkError, LinkEvent, Role};
use proptest::prelude::*;

/// Splits `bytes` at the given cut points (taken modulo the length).
fn chunks<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    if bytes.is_empty() {
        return vec![bytes];
    }
    let mut points: Vec<usize> = cuts.iter().map(|c| c % bytes.len()).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

/// Feeds chunks to a decoder, collecting frames until the first error.
fn decode_all(dec: &mut FrameDecoder, parts: &[&[u8]]) -> (Vec<Frame>, Option<FrameError>) {
    let mut frames = Vec::new();
    for part in parts {
        dec.push(part);
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fn kind() -> impl Strategy<Value = FrameKind> {
    prop_oneof![
        Just(FrameKind::Handshake),
        Just(FrameKind::Transport),
        Just(FrameKind::Local),
    ]
}

/// Bytes that are often well-formed headers with random contents, so the
/// decoder's payload and error paths get exercised, not just bad magic.
fn framish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        (
            any::<u8>(),
            any::<u8>(),
            0u32..300,
            prop::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(version, kind, len, body)| {
                let mut v = vec![MAGIC[0], MAGIC[1], version % 3, kind % 5];
                v.extend_from_slice(&len.to_be_bytes());
                v.extend(body);
                v
            }),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|v| v.concat())
}

fn key(b: u8) -> ClusterKey {
    ClusterKey::from_bytes([b; 32])
}

/// A handshake-kind or transport-kind frame with random contents.
fn noisy_frames() -> impl Strategy<Value = Vec<u8>> {
    let frame = (
        prop_oneof![Just(FrameKind::Handshake), Just(FrameKind::Transport)],
        prop::option::of(prop_oneof![Just(1u8), Just(2u8)]),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(kind, tag, mut body)| {
            if let Some(t) = tag {
                body.insert(0, t);
            }
            encode_frame(kind, &body).unwrap()
        });
    prop::collection::vec(frame, 1..5).prop_map(|v| v.concat())
}

/// A message body: small, or around and beyond one Noise record (65519
/// plaintext bytes, 4 of them taken by the length in a first record).
fn message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        (65_500usize..65_530).prop_map(|n| vec![0xA5; n]),
        prop::collection::vec(any::<u8>(), 65_500..140_000),
    ]
}

/// Runs a real handshake; returns both established codecs.
fn established() -> (LinkCodec, LinkCodec) {
    let mut i = LinkCodec::initiator(&key(7), Hello::new("i", Role::Homed)).unwrap();
    let mut r = LinkCodec::responder(&key(7), Hello::new("r", Role::Remoted)).unwrap();
    for _ in 0..3 {
        let out = i.pending_output().to_vec();
        i.consume_output(out.len());
        r.feed(&out);
        while r.poll().unwrap().is_some() {}
        let out = r.pending_output().to_vec();
        r.consume_output(out.len());
        i.feed(&out);
        while i.poll().unwrap().is_some() {}
    }
    assert!(i.is_established() && r.is_established());
    (i, r)
}

proptest! {
    #[test]
    fn decoder_survives_arbitrary_input(
        bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..600), framish()],
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut dec = FrameDecoder::new();
        let (frames, err) = decode_all(&mut dec, &chunks(&bytes, &cuts));
        for f in &frames {
            prop_assert!(f.payload.len() <= f.kind.max_payload());
        }
        // The same input in one piece decodes the same way.
        let mut whole = FrameDecoder::new();
        let (frames2, err2) = decode_all(&mut whole, &[&bytes]);
        prop_assert_eq!(&frames, &frames2);
        prop_assert_eq!(&err, &err2);
        match err {
            // A poisoned decoder keeps saying so.
            Some(e) => {
                prop_assert_eq!(dec.next_frame(), Err(e.clone()));
                prop_assert_eq!(dec.finish(), Err(e));
            }
            None => {
                let consumed: usize = frames.iter().map(|f| 8 + f.payload.len()).sum();
                let rest = bytes.len() - consumed;
                prop_assert_eq!(dec.buffered(), rest);
                if rest == 0 {
                    prop_assert_eq!(dec.finish(), Ok(()));
                } else {
                    prop_assert_eq!(dec.finish(), Err(FrameError::Truncated { buffered: rest }));
                }
            }
        }
    }

    #[test]
    fn frames_round_trip_under_any_split(
        frames in prop::collection::vec((kind(), prop::collection::vec(any::<u8>(), 0..2000)), 0..8),
        cuts in prop::collection::vec(any::<usize>(), 0..30),
    ) {
        let wire: Vec<u8> = frames
            .iter()
            .flat_map(|(k, p)| encode_frame(*k, p).unwrap())
            .collect();
        let mut dec = FrameDecoder::new();
        let (got, err) = decode_all(&mut dec, &chunks(&wire, &cuts));
        prop_assert_eq!(err, None);
        prop_assert_eq!(dec.finish(), Ok(()));
        let want: Vec<Frame> = frames
            .into_iter()
            .map(|(kind, payload)| Frame { kind, payload })
            .collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn foreign_versions_are_always_refused(version in any::<u8>(), k in 1u8..4, len in any::<u32>()) {
        prop_assume!(version != PROTOCOL_VERSION);
        let mut dec = FrameDecoder::new();
        let mut h = vec![MAGIC[0], MAGIC[1], version, k];
        h.extend_from_slice(&len.to_be_bytes());
        dec.push(&h);
        prop_assert_eq!(
            dec.next_frame(),
            Err(FrameError::UnsupportedVersion { got: version, expected: PROTOCOL_VERSION })
        );
    }

    #[test]
    fn responder_never_links_with_garbage(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..400),
            framish(),
            noisy_frames(),
        ],
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut r = LinkCodec::responder(&key(1), Hello::new("r", Role::Remoted)).unwrap();
        let mut failed = false;
        for part in chunks(&bytes, &cuts) {
            r.feed(part);
            match r.poll() {
                Ok(None) => {}
                Ok(Some(ev)) => prop_assert!(false, "garbage produced {:?}", ev),
                Err(_) => { failed = true; break; }
            }
        }
        prop_assert!(!r.is_established());
        prop_assert!(r.peer().is_none());
        if !failed {
            // End of stream must fail too, not report a link.
            let err = r.on_eof();
            prop_assert!(!matches!(err, LinkError::Failed), "{}", err);
        }
    }

    #[test]
    fn initiator_never_links_with_garbage(bytes in prop_oneof![framish(), noisy_frames()]) {
        let mut i = LinkCodec::initiator(&key(1), Hello::new("i", Role::Tool)).unwrap();
        i.feed(&bytes);
        let res = i.poll();
        prop_assert!(!matches!(res, Ok(Some(_))), "{:?}", res);
        prop_assert!(!i.is_established());
    }

}

// Each case below encrypts up to a few hundred KiB, slow in a debug build:
// fewer cases, sizes chosen to straddle the one-record boundary.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn messages_round_trip_under_any_split(
        msgs in prop::collection::vec(message(), 1..4),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let (mut i, mut r) = established();
        for m in &msgs {
            i.send_bytes(m).unwrap();
        }
        let wire = i.pending_output().to_vec();
        let mut got = Vec::new();
        for part in chunks(&wire, &cuts) {
            r.feed(part);
            while let Some(ev) = r.poll().unwrap() {
                match ev {
                    LinkEvent::Message(m) => got.push(m),
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
            }
        }
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn tampered_traffic_never_delivers_a_wrong_message(
        msgs in prop::collection::vec(message(), 1..4),
        pos in any::<usize>(),
        bit in 0u8..8,
    ) {
        let (mut i, mut r) = established();
        for m in &msgs {
            i.send_bytes(m).unwrap();
        }
        let mut wire = i.pending_output().to_vec();
        let pos = pos % wire.len();
        wire[pos] ^= 1 << bit;
        r.feed(&wire);
        let mut got = Vec::new();
        loop {
            match r.poll() {
                Ok(Some(LinkEvent::Message(m))) => got.push(m),
                Ok(Some(other)) => prop_assert!(false, "unexpected {:?}", other),
                Ok(None) | Err(_) => break,
            }
        }
        // Only untouched messages before the flipped bit may arrive.
        prop_assert!(got.len() < msgs.len());
        prop_assert_eq!(&got[..], &msgs[..got.len()]);
    }
}
