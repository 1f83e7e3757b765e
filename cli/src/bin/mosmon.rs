//! `mosmon`: a live view of the cluster's load, as this node sees it.

use anyhow::{Result, bail};
use clap::Parser;
use mosix_cli::args::mosmon::Args;
use mosix_cli::client::{Daemon, request_with_timeout};
use mosix_cli::monitor::{self, Doc, View};
use mosix_proto::config::Config;
use mosix_proto::control::{ControlRequest, ControlResponse};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Paragraph, Row, Table};
use std::time::{Duration, Instant};

/// Seconds since the epoch now (0 if the clock is before it).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn main() {
    mosix_cli::sys::default_sigpipe();
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("mosmon: {e:#}");
        std::process::exit(1);
    }
}

fn fetch(config: &Config) -> Result<Doc> {
    match request_with_timeout(
        config,
        Daemon::Remoted,
        &ControlRequest::Nodes,
        Duration::from_secs(2),
    )? {
        ControlResponse::Nodes { nodes } => Ok(monitor::doc(&nodes)),
        _ => bail!("remoted answered something other than a node list"),
    }
}

fn run(args: &Args) -> Result<()> {
    let config = Config::load(args.config.as_deref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&fetch(&config)?)?);
        return Ok(());
    }
    if args.once {
        print!("{}", monitor::text(&fetch(&config)?, 30));
        return Ok(());
    }
    // Fail before taking the terminal if remoted is not there at all.
    let first = fetch(&config)?;
    let mut terminal = ratatui::init();
    let result = live(
        &mut terminal,
        &config,
        first,
        Duration::from_millis(args.interval_ms),
    );
    ratatui::restore();
    result
}

fn live(
    terminal: &mut ratatui::DefaultTerminal,
    config: &Config,
    first: Doc,
    interval: Duration,
) -> Result<()> {
    let mut doc = first;
    let mut updated = monitor::clock_utc(unix_now());
    let mut error: Option<String> = None;
    let mut view = View::Load;
    let mut next = Instant::now() + interval;
    loop {
        terminal.draw(|f| {
            let [top, body, keys] = Layout::vertical([
                Constraint::Length(1),
                Constraint::Min(1),
                Constraint::Length(1),
            ])
            .areas(f.area());
            let title = match &error {
                Some(e) => format!(
                    "mosmon {}: {}   updated {updated} UTC [stale: {e}]",
                    doc.node,
                    view.title()
                ),
                None => format!(
                    "mosmon {}: {}   updated {updated} UTC",
                    doc.node,
                    view.title()
                ),
            };
            f.render_widget(
                Paragraph::new(title).style(Style::default().add_modifier(Modifier::BOLD)),
                top,
            );
            let width = usize::from(body.width.saturating_sub(70)).clamp(10, 60);
            let rows = monitor::rows(&doc, view, width).into_iter().map(|r| {
                let style = if r.dead {
                    Style::default().add_modifier(Modifier::DIM)
                } else {
                    Style::default()
                };
                Row::new(vec![r.name, r.bar, r.figure, r.details]).style(style)
            });
            let table = Table::new(
                rows,
                [
                    Constraint::Length(12),
                    Constraint::Length(u16::try_from(width).unwrap_or(60)),
                    Constraint::Length(12),
                    Constraint::Min(20),
                ],
            )
            .header(
                Row::new(vec!["NODE", "", "", "CPUS SPEED GUESTS AWAY"])
                    .style(Style::default().add_modifier(Modifier::UNDERLINED)),
            );
            f.render_widget(table, body);
            f.render_widget(
                Paragraph::new(format!("{}   (* this node, ! blocked)", monitor::KEYS_HELP)),
                keys,
            );
        })?;
        let wait = next.saturating_duration_since(Instant::now());
        if event::poll(wait)? {
            if let Event::Key(k) = event::read()? {
                if k.kind == KeyEventKind::Press {
                    match k.code {
                        KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                        KeyCode::Char(c) => {
                            if let Some(v) = View::from_key(c) {
                                view = v;
                            }
                        }
                        _ => {}
                    }
                }
            }
            continue;
        }
        next = Instant::now() + interval;
        match fetch(config) {
            Ok(d) => {
                doc = d;
                updated = monitor::clock_utc(unix_now());
                error = None;
            }
            Err(e) => error = Some(format!("{e:#}")),
        }
    }
}
