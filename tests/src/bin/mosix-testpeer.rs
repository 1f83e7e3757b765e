//! `mosix-testpeer`: a misbehaving peer for the integration tests. Run
//! inside a node's namespaces (`mosix-local exec`), it connects to a
//! daemon's link address, sends one kind of bad input, and reports whether
//! the daemon closed the connection (exit 0) or left it open (exit 1).
//! It is a test tool, not part of mosix.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mosix_proto::frame::{FrameKind, HEADER_LEN, MAGIC, PROTOCOL_VERSION};
use mosix_proto::link::{ClusterKey, Hello, LinkCodec, LinkEvent, Role};

/// How long the daemon has to close the connection after bad input.
const CLOSE_WITHIN: Duration = Duration::from_secs(8);

fn usage() -> ! {
    eprintln!(
        "usage: mosix-testpeer ADDR garbage|truncated|oversized|old-version|replay KEYFILE|wrong-key|corrupt-image KEYFILE IMAGE"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        usage();
    }
    let addr: SocketAddr = match args[0].parse() {
        Ok(a) => a,
        Err(_) => usage(),
    };
    let result = match args[1].as_str() {
        "garbage" => send_and_watch(
            addr,
            b"GET / HTTP/1.0\r\n\r\nthis is not mosix at all".to_vec(),
        ),
        "truncated" => {
            // A handshake frame announcing 100 bytes, of which 10 come.
            let mut bytes = header(PROTOCOL_VERSION, FrameKind::Handshake.as_byte(), 100);
            bytes.extend_from_slice(&[7u8; 10]);
            // ... and then the sender stops: the daemon sees the stream end.
            send_half_close_and_watch(addr, bytes)
        }
        "oversized" => send_and_watch(
            addr,
            header(PROTOCOL_VERSION, FrameKind::Transport.as_byte(), u32::MAX),
        ),
        "old-version" => {
            let mut bytes = header(0, FrameKind::Handshake.as_byte(), 4);
            bytes.extend_from_slice(b"helo");
            send_and_watch(addr, bytes)
        }
        "replay" => match args.get(2) {
            Some(key) => replay(addr, Path::new(key)),
            None => usage(),
        },
        "wrong-key" => {
            let key = ClusterKey::generate().context("cannot make a key");
            key.and_then(|k| handshake_bytes(&k).map(|(m1, _)| m1))
                .and_then(|m1| send_and_watch(addr, m1))
        }
        "corrupt-image" => match (args.get(2), args.get(3)) {
            (Some(key), Some(image)) => {
                match corrupt_image(addr, Path::new(key), Path::new(image)) {
                    Ok(reason) => {
                        println!("refused: {reason}");
                        return;
                    }
                    Err(e) => {
                        eprintln!("mosix-testpeer: {e:#}");
                        std::process::exit(1);
                    }
                }
            }
            _ => usage(),
        },
        _ => usage(),
    };
    match result {
        Ok(true) => println!("closed"),
        Ok(false) => {
            println!("left open");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("mosix-testpeer: {e:#}");
            std::process::exit(3);
        }
    }
}

fn header(version: u8, kind: u8, len: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(&MAGIC);
    h.push(version);
    h.push(kind);
    h.extend_from_slice(&len.to_be_bytes());
    h
}

/// Sends `bytes`, keeps the connection open, and reports whether the daemon
/// closes it within [`CLOSE_WITHIN`].
fn send_and_watch(addr: SocketAddr, bytes: Vec<u8>) -> Result<bool> {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).context("cannot connect")?;
    stream.write_all(&bytes).context("cannot send")?;
    watch_close(&mut stream)
}

/// Sends `bytes`, ends the sending direction, and reports whether the
/// daemon closes the connection.
fn send_half_close_and_watch(addr: SocketAddr, bytes: Vec<u8>) -> Result<bool> {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).context("cannot connect")?;
    stream.write_all(&bytes).context("cannot send")?;
    stream.shutdown(std::net::Shutdown::Write)?;
    watch_close(&mut stream)
}

fn watch_close(stream: &mut TcpStream) -> Result<bool> {
    let start = Instant::now();
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut buf = [0u8; 4096];
    while start.elapsed() < CLOSE_WITHIN {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(_) => {} // a reject message may come first
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(true),
            Err(e) => bail!("read failed: {e}"),
        }
    }
    Ok(false)
}

/// Builds an initiator's first handshake message for `key`, and the codec
/// that would go on with it.
fn handshake_bytes(key: &ClusterKey) -> Result<(Vec<u8>, LinkCodec)> {
    let codec = LinkCodec::initiator(key, Hello::new("testpeer", Role::Tool))
        .context("cannot start a handshake")?;
    Ok((codec.pending_output().to_vec(), codec))
}

/// Records a real handshake with the right key, then replays what the
/// initiator sent on a new connection: the daemon must refuse it.
fn replay(addr: SocketAddr, key_file: &Path) -> Result<bool> {
    let key = ClusterKey::load(key_file).context("cannot load the cluster key")?;
    let (first, mut codec) = handshake_bytes(&key)?;
    let mut recorded = first.clone();
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).context("cannot connect")?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(&first)?;
    codec.consume_output(first.len());
    let mut buf = [0u8; 4096];
    let mut established = false;
    while !established {
        let n = stream.read(&mut buf).context("no handshake reply")?;
        if n == 0 {
            bail!("daemon closed a legitimate handshake");
        }
        codec.feed(&buf[..n]);
        while let Some(ev) = codec.poll().context("legitimate handshake failed")? {
            if matches!(ev, LinkEvent::Established(_)) {
                established = true;
            }
        }
    }
    // The initiator's confirmation, and one real message, complete the record.
    codec
        .send(&"recorded".to_string())
        .context("cannot send on the link")?;
    let rest = codec.pending_output().to_vec();
    stream.write_all(&rest)?;
    recorded.extend_from_slice(&rest);
    drop(stream);
    // Replay the whole recorded conversation on a fresh connection.
    send_and_watch(addr, recorded)
}

/// Offers a body host the checkpoint image `image` with one byte of its
/// memory flipped on the way, as a source `homed` would send it; returns
/// the host's refusal (an error if it held a body instead).
fn corrupt_image(addr: SocketAddr, key_file: &Path, image: &Path) -> Result<String> {
    use mosix_engine::image::LoadedImage;
    use mosix_proto::link::Link;
    use mosix_proto::migrate::{CHUNK, FromHost, ToHost};
    let key = ClusterKey::load(key_file).context("cannot load the cluster key")?;
    let img =
        LoadedImage::open(image).context("the image to corrupt is not valid to begin with")?;
    let mut bytes = std::fs::read(image).context("cannot read the image")?;
    let header =
        mosix_engine::image::from_bytes::<mosix_engine::image::layout::ImageHeader>(&bytes)
            .context("the image has no header")?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0x5a;
    let stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).context("cannot connect")?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let (mut link, _) = Link::connect(stream, &key, Hello::new("testpeer", Role::Homed))
        .context("no link to the body host")?;
    link.send(&ToHost::Offer {
        home_pid: 1,
        uid: img.uid,
        gid: img.uid,
        bytes: bytes.len() as u64,
        ctl_fd: -1,
        freeze_signal: 63,
        home: Default::default(),
        clocks: None,
        direct: false,
    })?;
    match link.recv::<FromHost>()? {
        FromHost::Accepted => {}
        other => bail!("the host did not accept the offer: {other:?}"),
    }
    for chunk in bytes.chunks(CHUNK) {
        link.send_bytes(chunk)?;
    }
    // The checksum of the image as it was: the flipped byte must show.
    link.send(&ToHost::ImageEnd {
        checksum: header.checksum,
    })?;
    match link.recv::<FromHost>()? {
        FromHost::Failed { reason } => Ok(reason.to_string()),
        FromHost::Refused { reason } => Ok(reason.to_string()),
        FromHost::Held { body_pid } => {
            let _ = link.send(&ToHost::Abort);
            bail!("the host restored a corrupt image (body pid {body_pid})")
        }
        other => bail!("unexpected answer {other:?}"),
    }
}
