//! remoted's metrics endpoint (issue 17): a node started with
//! `metrics.listen` serves the Prometheus text format, and its migration
//! counters count a move of one of its processes while it happens.

use mosix_tests::procs::text;
use mosix_tests::{Cluster, Job, JobOut};
use std::time::Duration;

/// `GET /metrics` at n1's endpoint, from inside n1's network namespace.
fn scrape(c: &Cluster) -> String {
    let script = "exec 3<>/dev/tcp/127.0.0.1/9340 && \
                  printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3";
    let out = c.exec("n1", &["bash", "-c", script]).unwrap();
    assert!(out.status.success(), "scrape failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The sum of every sample of `name` whose labels contain `labels`.
fn value(page: &str, name: &str, labels: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn migration_counters_count_a_move_during_it() {
    let c = Cluster::up(2).unwrap();
    // Turn the endpoint on at n1 and restart its remoted to take it.
    let config = c.node_file("n1", "mosix.toml");
    let mut text_cfg = std::fs::read_to_string(&config).unwrap();
    text_cfg.push_str("\n[metrics]\nlisten = \"127.0.0.1:9340\"\n");
    std::fs::write(&config, text_cfg).unwrap();
    let out = c.local(&["stop", "n1"]).unwrap();
    assert!(out.status.success(), "stop n1: {}", text(&out));
    let out = c.local(&["start", "n1"]).unwrap();
    assert!(out.status.success(), "start n1: {}", text(&out));
    c.wait_for("n1 to see n2 again", Duration::from_secs(20), || {
        Ok(c.state_seen("n1", "n2")?.as_deref() == Some("alive"))
    })
    .unwrap();
    let _ = c.exec("n1", &["mosctl", "params", "auto_migrate=false"]);

    let before = scrape(&c);
    assert!(before.contains("HTTP/1.1 200 OK"), "{before}");
    assert!(before.contains("# TYPE mosix_load gauge"), "{before}");
    assert!(
        value(&before, "mosix_nodes", "state=\"alive\"") >= 1.0,
        "{before}"
    );
    assert_eq!(
        value(&before, "mosix_migrations_total", "direction=\"out\""),
        0.0
    );

    let exe = mosix_tests::build_c_example("progress", &c.dir, &[]);
    let argv = [exe.to_str().unwrap(), "60", "100000005", "0"];
    let job = Job::start(&c, "n1", &[], &argv, "metrics", JobOut::File);
    let home = job.home_pid(&c);
    c.wait_for("progress", Duration::from_secs(30), || Ok(job.lines() >= 2))
        .unwrap();
    let out = c
        .exec("n1", &["mosmigrate", &home.to_string(), "n2"])
        .unwrap();
    assert!(out.status.success(), "mosmigrate: {}", text(&out));
    // While the body runs at n2, the move out is counted, with its bytes
    // and its frozen time.
    let mut page = String::new();
    c.wait_for("the move in the metrics", Duration::from_secs(10), || {
        page = scrape(&c);
        Ok(value(
            &page,
            "mosix_migrations_total",
            "direction=\"out\",outcome=\"ok\",reason=\"manual\"",
        ) == 1.0)
    })
    .unwrap_or_else(|e| panic!("{e}: {page}"));
    // Shown with --nocapture (the README's example comes from here).
    println!("{page}");
    assert!(
        !job.done(),
        "the job ended before the scrape; give it more work"
    );
    assert!(
        value(&page, "mosix_migration_bytes_total", "direction=\"out\"") > 0.0,
        "{page}"
    );
    assert_eq!(
        value(
            &page,
            "mosix_migration_frozen_seconds_count",
            "direction=\"out\""
        ),
        1.0,
        "{page}"
    );
    let (_, rc) = job.finish(&c, Duration::from_secs(120));
    assert_eq!(rc, "0");
}
