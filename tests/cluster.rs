//! Cluster formation, failure detection, authentication and bad input, on
//! isolated local nodes (each in its own network and mount namespace and
//! CPU cgroup). Run as root.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use mosix_tests::Cluster;

const NAMES: [&str; 3] = ["n1", "n2", "n3"];

fn all_alive(c: &Cluster, seen_by: &str, names: &[&str]) -> anyhow::Result<bool> {
    let rows = c.nodes_seen_by(seen_by)?;
    Ok(names
        .iter()
        .all(|n| rows.iter().any(|r| r.name == *n && r.state == "alive")))
}

#[test]
fn three_isolated_nodes_form_a_cluster() {
    let c = Cluster::up(3).expect("cluster up");
    for node in NAMES {
        let rows = c.nodes_seen_by(node).unwrap();
        let names: HashSet<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, HashSet::from(NAMES), "{node} sees {rows:?}");
        assert!(
            rows.iter().all(|r| r.state == "alive"),
            "{node} sees {rows:?}"
        );
        let addrs: HashSet<&str> = rows.iter().map(|r| r.address.as_str()).collect();
        assert_eq!(addrs.len(), 3, "addresses must be distinct: {rows:?}");
        for r in &rows {
            // Each node measures its capacity from its own cgroup: half a core.
            assert!(
                (r.cpus - 0.5).abs() < 0.01,
                "{} reports {} CPUs",
                r.name,
                r.cpus
            );
            assert!(r.speed > 0.0 && r.free_mem_bytes > 0, "{r:?}");
            assert!(r.last_heard_s < 4.0, "{r:?}");
        }
    }
    // The nodes are really isolated: n1's network namespace has its own
    // address and none of the others.
    let out = c.exec("n1", &["ip", "-o", "-4", "addr", "show"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let n1_addr = c.nodes_seen_by("n1").unwrap();
    let own = n1_addr.iter().find(|r| r.name == "n1").unwrap();
    let own_ip = own.address.split(':').next().unwrap();
    assert!(text.contains(own_ip), "n1 lacks its own address: {text}");
    for r in n1_addr.iter().filter(|r| r.name != "n1") {
        let ip = r.address.split(':').next().unwrap();
        assert!(!text.contains(&format!("{ip}/")), "n1 holds {ip}: {text}");
    }
    // ... and its own mount namespace: /run/mosix holds only its sockets.
    let out = c
        .exec("n2", &["sh", "-c", "readlink /proc/self/ns/mnt"])
        .unwrap();
    let n2_ns = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = c
        .exec("n3", &["sh", "-c", "readlink /proc/self/ns/mnt"])
        .unwrap();
    let n3_ns = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let own_ns = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    assert_ne!(n2_ns, n3_ns);
    assert_ne!(n2_ns, own_ns.to_string_lossy());
}

#[test]
fn a_stopped_node_is_dead_within_5s_everywhere_and_alive_again_after_restart() {
    let c = Cluster::up(3).expect("cluster up");
    let stop = c.local(&["stop", "n2"]).unwrap();
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let stopped = Instant::now();
    let took = c
        .wait_for("n1 and n3 to see n2 dead", Duration::from_secs(15), || {
            Ok(c.state_seen("n1", "n2")?.as_deref() == Some("dead")
                && c.state_seen("n3", "n2")?.as_deref() == Some("dead"))
        })
        .unwrap();
    let elapsed = stopped.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "n2 was marked dead only after {elapsed:?} (poll took {took:?})"
    );
    // The survivors still see each other.
    assert!(all_alive(&c, "n1", &["n1", "n3"]).unwrap());
    assert!(all_alive(&c, "n3", &["n1", "n3"]).unwrap());

    let start = c.local(&["start", "n2"]).unwrap();
    assert!(
        start.status.success(),
        "{}",
        String::from_utf8_lossy(&start.stderr)
    );
    c.wait_for(
        "every node to see every node alive",
        Duration::from_secs(15),
        || {
            Ok(all_alive(&c, "n1", &NAMES)?
                && all_alive(&c, "n2", &NAMES)?
                && all_alive(&c, "n3", &NAMES)?)
        },
    )
    .unwrap();
}

#[test]
fn a_node_with_another_cluster_key_never_joins() {
    let c = Cluster::up(3).expect("cluster up");
    let stop = c.local(&["stop", "n3"]).unwrap();
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    // n3 comes back holding a key of its own.
    let bad_key = c.dir.join("other.key");
    let keygen = std::process::Command::new(mosix_tests::bin("mosctl"))
        .arg("keygen")
        .arg(&bad_key)
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let cfg_path = c.node_file("n3", "mosix.toml");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    let good_key = c.dir.join("cluster.key");
    assert!(cfg.contains(good_key.to_str().unwrap()), "{cfg}");
    std::fs::write(
        &cfg_path,
        cfg.replace(good_key.to_str().unwrap(), bad_key.to_str().unwrap()),
    )
    .unwrap();
    let start = c.local(&["start", "n3"]).unwrap();
    assert!(
        start.status.success(),
        "{}",
        String::from_utf8_lossy(&start.stderr)
    );

    // The others refuse its links and say why, and mark it dead.
    c.wait_for(
        "n1 and n2 to log an authentication failure",
        Duration::from_secs(15),
        || {
            Ok(c.log("n1", "remoted").contains("authentication failed")
                || c.log("n2", "remoted").contains("authentication failed"))
        },
    )
    .unwrap();
    c.wait_for("n1 and n2 to see n3 dead", Duration::from_secs(15), || {
        Ok(c.state_seen("n1", "n3")?.as_deref() == Some("dead")
            && c.state_seen("n2", "n3")?.as_deref() == Some("dead"))
    })
    .unwrap();
    // Over several gossip rounds, it stays out, and n1 and n2 keep serving
    // each other; n3 knows no one.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(3) {
        assert_eq!(c.state_seen("n1", "n3").unwrap().as_deref(), Some("dead"));
        assert_eq!(c.state_seen("n2", "n3").unwrap().as_deref(), Some("dead"));
        assert!(all_alive(&c, "n1", &["n1", "n2"]).unwrap());
        assert!(all_alive(&c, "n2", &["n1", "n2"]).unwrap());
        let n3_view = c.nodes_seen_by("n3").unwrap();
        assert!(
            n3_view.iter().all(|r| r.name == "n3"),
            "n3 learnt about others without the key: {n3_view:?}"
        );
    }
}

/// The address of a node's remoted, from its own entry.
fn address_of(c: &Cluster, node: &str) -> String {
    c.nodes_seen_by(node)
        .unwrap()
        .into_iter()
        .find(|r| r.name == node)
        .unwrap()
        .address
}

#[test]
fn bad_input_gets_a_log_line_and_a_closed_link_and_the_daemon_keeps_serving() {
    let c = Cluster::up(3).expect("cluster up");
    let target = address_of(&c, "n2");
    let key = c.dir.join("cluster.key");
    // (sent from, bad input, what n2's log must say). The daemon logs the
    // same complaint about the same address once a minute at most, so the
    // two authentication failures come from different nodes.
    let cases: [(&str, &[&str], &str); 6] = [
        ("n1", &["garbage"], "did not send a mosix frame"),
        ("n1", &["truncated"], "middle of a frame"),
        ("n1", &["oversized"], "more than the"),
        ("n1", &["old-version"], "protocol version 0"),
        (
            "n1",
            &["replay", key.to_str().unwrap()],
            "authentication failed",
        ),
        ("n3", &["wrong-key"], "authentication failed"),
    ];
    for (from, args, expect_in_log) in cases {
        let before = c.log("n2", "remoted").len();
        let mut cmd = vec!["mosix-testpeer", target.as_str()];
        cmd.extend_from_slice(args);
        let out = c.exec(from, &cmd).unwrap();
        assert!(
            out.status.success(),
            "{args:?}: daemon did not close the link: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        c.wait_for(
            &format!("n2 to log {args:?}"),
            Duration::from_secs(10),
            || {
                let log = c.log("n2", "remoted");
                Ok(log[before..].to_lowercase().contains(expect_in_log))
            },
        )
        .unwrap_or_else(|e| panic!("{e}: log was:\n{}", &c.log("n2", "remoted")[before..]));
    }
    // The daemon is still up and serving the other nodes.
    let pid = c.daemon_pid("n2", "remoted").unwrap();
    assert!(mosix_tests::is_running(pid), "remoted of n2 died");
    c.wait_for("the cluster to be whole", Duration::from_secs(10), || {
        Ok(all_alive(&c, "n1", &NAMES)?
            && all_alive(&c, "n3", &NAMES)?
            && all_alive(&c, "n2", &NAMES)?)
    })
    .unwrap();
}

fn netns_list() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    v.sort();
    v
}

fn cgroup_dirs() -> Vec<String> {
    let mut v: Vec<String> = [
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup",
    ]
    .iter()
    .filter_map(|d| std::fs::read_dir(d).ok())
    .flatten()
    .filter_map(|e| e.ok())
    .filter(|e| e.path().is_dir())
    .map(|e| e.path().display().to_string())
    .collect();
    v.sort();
    v
}

#[test]
fn down_leaves_nothing_behind() {
    let c = Cluster::up(2).expect("cluster up");
    // This cluster's own namespaces and cgroups, by the id `up` gave it:
    // other clusters on the machine come and go meanwhile.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.dir.join("cluster.state")).unwrap()).unwrap();
    let id = state["id"]
        .as_str()
        .expect("the state names the cluster's id")
        .to_string();
    let netns_prefix = format!("mx{id}-");
    let cgroup = format!("mosix-{id}");
    let ours = |v: Vec<String>, pat: &str| -> Vec<String> {
        v.into_iter().filter(|n| n.contains(pat)).collect()
    };
    let made = ours(netns_list(), &netns_prefix);
    assert!(
        made.len() >= 3,
        "up made no hub and node namespaces named {netns_prefix}*: {made:?}"
    );
    let pids: Vec<i32> = ["n1", "n2"]
        .iter()
        .flat_map(|n| ["homed", "remoted"].map(|d| c.daemon_pid(n, d).unwrap()))
        .collect();
    let dir = c.dir.clone();
    drop(c); // runs `mosix-local down`
    for pid in pids {
        assert!(!mosix_tests::is_running(pid), "daemon {pid} survived");
    }
    assert_eq!(
        ours(netns_list(), &netns_prefix),
        Vec::<String>::new(),
        "network namespaces left behind"
    );
    assert_eq!(
        ours(cgroup_dirs(), &cgroup),
        Vec::<String>::new(),
        "cgroups left behind"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(dir.to_str().unwrap()),
        "mount left under {}",
        dir.display()
    );
    // Running it again is harmless.
    let again = std::process::Command::new(mosix_tests::bin("mosix-local"))
        .args(["down", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
