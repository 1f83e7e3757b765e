//! The hand-written sections of each page (roff), appended to what
//! clap_mangen makes from the command's definition.

/// Shared by every tool: where the configuration comes from.
macro_rules! files {
    () => {
        r#".SH FILES
.TP
.I /etc/mosix/mosix.toml
The node's configuration (see \fBmosix.toml\fR(5)); \fB\-\-config\fR or
\fB$MOSIX_CONFIG\fR name another.
.TP
.I /run/mosix
The daemons' local sockets (\fBhomed.sock\fR, \fBremoted.sock\fR,
\fBprocs.sock\fR); \fBnode.runtime_dir\fR moves them.
"#
    };
}

/// `mosrun(1)`.
pub const MOSRUN: &str = concat!(
    r#".SH EXIT STATUS
The exit status of the program run (or restarted with \fB\-R\fR), wherever
it ran: \fBmosrun\fR becomes the program. 125 means \fBmosrun\fR itself
failed (no \fBhomed\fR, a missing \fBlibmosix.so\fR, a bad image); 2 is a
usage error.
.SH EXAMPLES
.TP
.B mosrun \-\- make \-j4
Run a build that the balancer may spread over the cluster.
.TP
.B mosrun \-r n2 \-\- ./simulate
Start at this node and move to n2 at once.
.TP
.B mosrun \-C /tmp/job.img \-A 10 \-\- ./longjob
Checkpoint to /tmp/job.img every 10 minutes; restart with
\fBmosrun \-R /tmp/job.img\fR.
.SH ENVIRONMENT
.TP
.B MOSIX_CONFIG
The configuration file when \fB\-\-config\fR is not given.
"#,
    files!(),
    r#".TP
.I libmosix.so, mosix\-restore
Found beside the \fBmosrun\fR executable, else in \fI../libexec/mosix\fR or
\fI../lib/mosix\fR relative to it (where \fBscripts/install\fR puts them).
.SH SEE ALSO
\fBmosmigrate\fR(1), \fBmosps\fR(1), \fBmosmon\fR(1), \fBmosctl\fR(1), \fBmosix.toml\fR(5), \fBhomed\fR(8), \fBremoted\fR(8)
"#
);

/// `mosmigrate(1)`.
pub const MOSMIGRATE: &str = concat!(
    r#".SH EXIT STATUS
0 when the checkpoint is written or the move is done; 1 when it failed
(the process then runs on where it was); 2 is a usage error.
.SH EXAMPLES
.TP
.B mosmigrate 4242 n3
Move process 4242 (started here with \fBmosrun\fR) to node n3.
.TP
.B mosmigrate 4242 home
Bring it back.
.TP
.B mosmigrate 4242 chkexit /tmp/job.img
Write its image and end it; \fBmosrun \-R /tmp/job.img\fR restarts it.
"#,
    files!(),
    r#".SH SEE ALSO
\fBmosrun\fR(1), \fBmosps\fR(1), \fBmosctl\fR(1)
"#
);

/// `mosps(1)`.
pub const MOSPS: &str = concat!(
    r#".SH EXIT STATUS
0 on success; 1 when \fBhomed\fR cannot be asked; 2 is a usage error.
.SH EXAMPLES
.TP
.B mosps \-\-history
Each process with where it runs and its last moves.
.TP
.B mosps \-\-json | jq '.[] | select(.node != .home) | .pid'
The pids of the processes running away.
"#,
    files!(),
    r#".SH SEE ALSO
\fBmosrun\fR(1), \fBmosmigrate\fR(1)
"#
);

/// `mosmon(1)`.
pub const MOSMON: &str = concat!(
    r#".SH EXIT STATUS
0 on success (\fBq\fR quits); 1 when \fBremoted\fR cannot be asked or the
terminal cannot be used; 2 is a usage error.
.SH EXAMPLES
.TP
.B mosmon
The live view.
.TP
.B mosmon \-\-once
Every view once, as text (for logs and mail).
"#,
    files!(),
    r#".SH SEE ALSO
\fBmosctl\fR(1), \fBremoted\fR(8)
"#
);

/// `mosctl(1)`.
pub const MOSCTL: &str = concat!(
    r#".SH EXIT STATUS
0 on success; 1 when the daemon cannot be asked or refuses (a non-root
user changing the node, a bad parameter: nothing is then changed); 2 is a
usage error.
.SH EXAMPLES
.TP
.B mosctl nodes
Every node this one knows, with its state and load.
.TP
.B mosctl keygen /etc/mosix/cluster.key
A new cluster key; copy the file (mode 0600) to every node.
.TP
.B sudo mosctl params margin=0.75
Change a balancer parameter until \fBremoted\fR restarts or reloads.
.TP
.B sudo mosctl block; sudo mosctl expel
Take no new guests, and send those here home.
"#,
    files!(),
    r#".SH SEE ALSO
\fBmosmon\fR(1), \fBmosix.toml\fR(5), \fBremoted\fR(8), \fBhomed\fR(8)
"#
);

/// Shared by both daemons: how they run as services.
macro_rules! service {
    ($unit:literal) => {
        concat!(
            r#".SH SIGNALS
.TP
.B SIGHUP
Re-read the configuration (\fBsystemctl reload "#,
            $unit,
            r#"\fR). What can change at run time is applied; every other
change is logged as needing a restart.
.TP
.B SIGTERM
Stop.
.SH SYSTEMD
The unit \fB"#,
            $unit,
            r#"\fR runs the daemon with \fBType=notify\fR: it tells
systemd it is ready (through \fB$NOTIFY_SOCKET\fR) once its sockets serve.
Its logs go to the journal: \fBjournalctl \-u "#,
            $unit,
            r#"\fR.
.SH EXIT STATUS
1 when it cannot start (a bad configuration, a missing cluster key, an
address in use) or its main loop fails; the reason is the last line
logged.
"#
        )
    };
}

/// `homed(8)`.
pub const HOMED: &str = concat!(
    service!("mosix-homed.service"),
    r#"Reloading applies nothing at run time: \fBhomed\fR logs which settings
changed and that they need a restart (its bodies away survive the
restart: they wait \fBprocess.home_grace_s\fR for it).
"#,
    files!(),
    r#".SH SEE ALSO
\fBremoted\fR(8), \fBmosix.toml\fR(5), \fBmosrun\fR(1)
"#
);

/// `remoted(8)`.
pub const REMOTED: &str = concat!(
    service!("mosix-remoted.service"),
    r#"Reloading applies the balancer's run-time parameters (those
\fBmosctl params\fR sets) from the \fB[balancer]\fR section; other changes
are logged as needing a restart.
.SH METRICS
With \fBmetrics.listen\fR set, \fBremoted\fR answers \fBGET /metrics\fR
there in the Prometheus text format.
"#,
    files!(),
    r#".SH SEE ALSO
\fBhomed\fR(8), \fBmosix.toml\fR(5), \fBmosctl\fR(1), \fBmosmon\fR(1)
"#
);
