//! `mosix-docgen OUT_DIR`: writes the man pages and the shell completions
//! of the mosix commands from their clap definitions, plus the
//! hand-written sections the generated text lacks (files, exit statuses,
//! examples), and `mosix.toml(5)` from `mosix.toml.example`.
//!
//! Layout under OUT_DIR: `man/man1/*.1`, `man/man5/mosix.toml.5`,
//! `man/man8/*.8`, `completions/bash/NAME`, `completions/zsh/_NAME`,
//! `completions/fish/NAME.fish` (the paths `scripts/install` copies).
//! A binary of its own rather than a build script, so ordinary builds do
//! not pay for it.

use anyhow::{Context, Result, bail};
use clap::CommandFactory;
use clap_complete::Shell;
use std::fs;
use std::path::Path;

mod extra;
mod toml5;

/// One command: its clap definition, its manual section, and what is
/// written by hand.
struct Page {
    cmd: clap::Command,
    section: &'static str,
    extra: &'static str,
}

fn pages() -> Vec<Page> {
    vec![
        Page {
            cmd: mosix_cli::args::mosrun::Args::command(),
            section: "1",
            extra: extra::MOSRUN,
        },
        Page {
            cmd: mosix_cli::args::mosmigrate::Args::command(),
            section: "1",
            extra: extra::MOSMIGRATE,
        },
        Page {
            cmd: mosix_cli::args::mosps::Args::command(),
            section: "1",
            extra: extra::MOSPS,
        },
        Page {
            cmd: mosix_cli::args::mosmon::Args::command(),
            section: "1",
            extra: extra::MOSMON,
        },
        Page {
            cmd: mosix_cli::args::mosctl::Cli::command(),
            section: "1",
            extra: extra::MOSCTL,
        },
        Page {
            cmd: mosix_homed::args::Args::command(),
            section: "8",
            extra: extra::HOMED,
        },
        Page {
            cmd: mosix_remoted::args::Args::command(),
            section: "8",
            extra: extra::REMOTED,
        },
    ]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out] = args.as_slice() else {
        bail!("usage: mosix-docgen OUT_DIR (writes OUT_DIR/man and OUT_DIR/completions)");
    };
    let out = Path::new(out);
    for page in pages() {
        write_page(out, &page)?;
        // A page per subcommand (mosctl-nodes(1), ...), as the main page
        // names them.
        let parent = page.cmd.get_name().to_string();
        for sub in page
            .cmd
            .get_subcommands()
            .filter(|s| s.get_name() != "help")
        {
            let sub = Page {
                // clap names are &'static; this one-shot program may leak them.
                cmd: sub
                    .clone()
                    .name(&*format!("{parent}-{}", sub.get_name()).leak()),
                section: page.section,
                extra: "",
            };
            write_page(out, &sub)?;
        }
        write_completions(out, page.cmd)?;
    }
    let dir = out.join("man/man5");
    fs::create_dir_all(&dir)?;
    let example = include_str!("../../mosix.toml.example");
    fs::write(dir.join("mosix.toml.5"), toml5::page(example))?;
    Ok(())
}

/// The generated page with the hand-written sections put before SEE
/// ALSO-like trailers (clap_mangen ends with VERSION).
fn write_page(out: &Path, page: &Page) -> Result<()> {
    let name = page.cmd.get_name().to_string();
    let dir = out.join(format!("man/man{}", page.section));
    fs::create_dir_all(&dir)?;
    let man = clap_mangen::Man::new(page.cmd.clone())
        .section(page.section)
        .manual("mosix")
        .source(format!("mosix {}", env!("CARGO_PKG_VERSION")));
    let mut text = Vec::new();
    man.render(&mut text)
        .with_context(|| format!("cannot render the page of {name}"))?;
    text.extend_from_slice(page.extra.as_bytes());
    let path = dir.join(format!("{name}.{}", page.section));
    fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn write_completions(out: &Path, mut cmd: clap::Command) -> Result<()> {
    let name = cmd.get_name().to_string();
    for (shell, file) in [
        (Shell::Bash, format!("bash/{name}")),
        (Shell::Zsh, format!("zsh/_{name}")),
        (Shell::Fish, format!("fish/{name}.fish")),
    ] {
        let path = out.join("completions").join(file);
        fs::create_dir_all(path.parent().expect("a file under completions/"))?;
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd, name.clone(), &mut text);
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
