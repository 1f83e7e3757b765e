//! The home side of the view (DESIGN.md section 6): serves file operations
//! for this home's bodies on other nodes. Not built yet: the view issue
//! builds it; until then a link asking for it is told so and closed.

use mosix_proto::config::Config;
use mosix_proto::link::{Hello, Link};
use std::net::TcpStream;

/// Serves one authenticated link from another node's daemon.
pub fn serve_link(link: Link<TcpStream>, peer: &Hello, _config: &Config) {
    tracing::info!(node = %peer.node, "view requested, but this homed does not serve the view yet; closing");
    drop(link);
}
