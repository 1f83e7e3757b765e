//! `homed`'s answers on its command socket (`homed.sock`, ARCHITECTURE.md
//! section 9). Callers are identified by SO_PEERCRED. A move names its
//! destination by node name and address; the address is where homed
//! connects and sends the process, so an ordinary user's request is held
//! to the cluster's membership, as `remoted` reports it, before anything
//! is frozen (DESIGN.md section 9: node addresses come from membership
//! only, never from a local request). Root's requests (`remoted`'s
//! balancer, `mosmigrate` run by root) are taken as they are.

use crate::procs::Procs;
use mosix_proto::control::{ControlRequest, ControlResponse, HomeStatus, NodeInfo};
use mosix_proto::local::{Credentials, recv_local, send_local};
use mosix_proto::process::{ProcessRequest, ProcessResponse};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Answer `req` from `caller`; `node` is this node's name, `membership`
/// asks `remoted` which nodes there are (only when needed).
pub fn answer(
    engine: &Procs,
    node: &str,
    caller: &Credentials,
    req: ControlRequest,
    membership: &dyn Fn() -> Result<Vec<NodeInfo>, String>,
) -> ControlResponse {
    match req {
        ControlRequest::HomeStatus => ControlResponse::HomeStatus {
            status: HomeStatus {
                node: node.to_string(),
                pid: std::process::id(),
            },
        },
        ControlRequest::Process { request } => {
            if let ProcessRequest::Migrate {
                node: to, address, ..
            } = &request
                && let Err(message) = check_destination(caller, node, to, address, membership)
            {
                return ControlResponse::Process {
                    response: ProcessResponse::Error {
                        message,
                        cause: None,
                    },
                };
            }
            ControlResponse::Process {
                response: engine.handle(caller, request),
            }
        }
        ControlRequest::Status
        | ControlRequest::Nodes
        | ControlRequest::Block
        | ControlRequest::Unblock
        | ControlRequest::Expel
        | ControlRequest::Params { .. } => ControlResponse::Error {
            message: "node status and balancing are answered by remoted, not homed".into(),
        },
    }
}

/// Whether `caller` may send a body to node `to` at `address`: root
/// always; anyone else only to an address the membership gives that node.
/// A move home (`to` is `home` or this node, `here`) connects nowhere.
fn check_destination(
    caller: &Credentials,
    here: &str,
    to: &str,
    address: &str,
    membership: &dyn Fn() -> Result<Vec<NodeInfo>, String>,
) -> Result<(), String> {
    if caller.uid == 0 || to == "home" || to == here {
        return Ok(());
    }
    let Ok(asked) = address.parse::<SocketAddr>() else {
        return Err(format!(
            "{address:?} is not an IP:PORT address of node {to}"
        ));
    };
    let nodes = membership().map_err(|e| {
        format!("cannot check node {to}'s address with this node's membership: {e}")
    })?;
    match nodes.iter().find(|n| !n.is_self && n.entry.name == to) {
        Some(n) if n.entry.address == asked => Ok(()),
        Some(n) => Err(format!(
            "node {to} is at {} by this node's membership, not at {asked}: only root may name another address",
            n.entry.address
        )),
        None => Err(format!(
            "no node {to} in this node's membership (see mosctl nodes)"
        )),
    }
}

/// The nodes `remoted` knows, asked on its command socket at `socket`.
pub fn ask_membership(socket: &Path) -> Result<Vec<NodeInfo>, String> {
    let timeout = Some(Duration::from_secs(10));
    let mut stream = UnixStream::connect(socket)
        .map_err(|e| format!("cannot reach remoted at {}: {e}", socket.display()))?;
    let _ = stream.set_read_timeout(timeout);
    let _ = stream.set_write_timeout(timeout);
    send_local(&mut stream, &ControlRequest::Nodes)
        .map_err(|e| format!("cannot ask remoted at {}: {e}", socket.display()))?;
    match recv_local(&mut stream) {
        Ok(ControlResponse::Nodes { nodes }) => Ok(nodes),
        Ok(ControlResponse::Error { message }) => Err(format!("remoted: {message}")),
        Ok(other) => Err(format!("unexpected answer from remoted: {other:?}")),
        Err(e) => Err(format!(
            "no answer from remoted at {}: {e}",
            socket.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosix_proto::config::Config;
    use mosix_proto::control::NodeState;
    use mosix_proto::msg::LoadEntry;

    fn node(name: &str, address: &str, is_self: bool) -> NodeInfo {
        NodeInfo {
            entry: LoadEntry {
                name: name.into(),
                address: address.parse().unwrap(),
                generation: 1,
                age_ms: 0,
                load: 0.0,
                cpus: 1.0,
                speed: 1.0,
                free_mem_bytes: 1 << 30,
                accepts_guests: true,
                guests: 0,
                away: 0,
            },
            state: NodeState::Alive,
            is_self,
        }
    }

    fn membership() -> Result<Vec<NodeInfo>, String> {
        Ok(vec![
            node("n1", "10.0.0.1:7340", true),
            node("n2", "10.0.0.2:7340", false),
        ])
    }

    fn ask(uid: u32, to: &str, address: &str) -> String {
        let config = Config::parse("[node]\nname = \"n1\"\n", Path::new("test")).unwrap();
        let engine = Procs::new(&config).unwrap();
        let req = ControlRequest::Process {
            request: ProcessRequest::Migrate {
                pid: 999_999_003,
                node: to.into(),
                address: address.into(),
                automatic: false,
            },
        };
        let caller = Credentials {
            pid: 1,
            uid,
            gid: uid,
        };
        match answer(&engine, "n1", &caller, req, &membership) {
            ControlResponse::Process {
                response: ProcessResponse::Error { message, .. },
            } => message,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_user_may_send_a_body_only_where_the_membership_says() {
        // Anywhere else is refused before the process is even looked up
        // (so before anything is frozen).
        for (to, address) in [
            ("n2", "10.6.6.6:7340"),
            ("n2", "10.0.0.2:7341"),
            ("n3", "10.0.0.2:7340"),
            ("n1x", "10.0.0.1:7340"),
        ] {
            let m = ask(1000, to, address);
            assert!(m.contains("membership"), "{to} {address}: {m}");
        }
        assert!(ask(1000, "n2", "nowhere").contains("not an IP:PORT"));
        // The membership's own address goes on to the engine, which does
        // not know the process.
        let engine_says = "is not a mosix process";
        assert!(ask(1000, "n2", "10.0.0.2:7340").contains(engine_says));
        assert!(ask(1000, "home", "").contains(engine_says));
        assert!(ask(1000, "n1", "").contains(engine_says));
        // Root (the balancer) is taken at its word.
        assert!(ask(0, "n2", "10.6.6.6:7340").contains(engine_says));
    }

    #[test]
    fn without_remoted_a_user_cannot_name_an_address() {
        let config = Config::parse("[node]\nname = \"n1\"\n", Path::new("test")).unwrap();
        let engine = Procs::new(&config).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("remoted.sock");
        let req = ControlRequest::Process {
            request: ProcessRequest::Migrate {
                pid: 999_999_004,
                node: "n2".into(),
                address: "10.0.0.2:7340".into(),
                automatic: false,
            },
        };
        let caller = Credentials {
            pid: 1,
            uid: 1000,
            gid: 1000,
        };
        let r = answer(&engine, "n1", &caller, req, &|| ask_membership(&socket));
        let ControlResponse::Process {
            response: ProcessResponse::Error { message, .. },
        } = r
        else {
            panic!("{r:?}");
        };
        assert!(message.contains("cannot reach remoted"), "{message}");
    }
}
