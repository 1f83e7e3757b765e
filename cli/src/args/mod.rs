//! The command lines of the tools, as clap definitions: the binaries parse
//! them, and `mosix-docgen` makes their man pages and shell completions
//! from them.

pub mod mosctl;
pub mod mosmigrate;
pub mod mosmon;
pub mod mosps;
pub mod mosrun;
