//! `gatekeeper tune` and the settings it recommends: `cpus`, `bridge`, `uring` and
//! `listen_backlog` take effect in the running binary (read back from
//! `/proc/<pid>/task/*`, fdinfo and `ss`), and the CLI's `--json`, `--apply` refusal and
//! `--calibrate` smoke run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::*;

/// One thread of the gateway: its name, `Cpus_allowed_list`, nice value and
/// scheduling policy.
#[derive(Debug)]
struct Task {
    comm: String,
    cpus: String,
    nice: i64,
    policy: i64,
}

/// `SCHED_OTHER` and `SCHED_IDLE`, as `/proc/<pid>/task/<tid>/stat` shows them.
const SCHED_OTHER: i64 = 0;
const SCHED_IDLE: i64 = 5;

fn tasks(pid: u32) -> Vec<Task> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir").flatten() {
        let dir = entry.path();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        let status = read("status");
        let cpus = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap_or_default().trim();
        // Fields after the `(comm)`; nice is field 19 of stat, the 17th after it.
        let stat = read("stat");
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let field = |n: usize| after.split_whitespace().nth(n).and_then(|n| n.parse().ok()).unwrap_or(i64::MIN);
        // nice: field 19; policy: field 41.
        let (nice, policy) = (field(16), field(38));
        out.push(Task { comm: read("comm").trim().to_string(), cpus: cpus.to_string(), nice, policy });
    }
    out
}

/// The CPUs this test process may use (the gateway inherits them).
fn allowed_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).expect("Cpus_allowed_list");
    gatekeeper_tuning::cpulist::parse_list(list.trim()).expect("cpu list").into_iter().map(|c| c as usize).collect()
}

#[test]
fn cpus_and_bridge_placement_take_effect_in_the_running_gateway() {
    let cpus = allowed_cpus();
    let (shard_cpu, bridge_cpu) = (cpus[cpus.len() - 1], cpus[0]);
    // The gateway inherits this process's nice (tests may run under `nice`); the bridge's
    // is set above it, which needs no privilege.
    let own_nice = rustix::process::getpriority_process(None).expect("getpriority");
    let bridge_nice = (own_nice + 2).clamp(7, 19);
    // Audit on (the default) starts the bridge thread.
    let config = format!("cpus: [{shard_cpu}]\nbridge: {{ cpu: {bridge_cpu}, nice: {bridge_nice} }}\n");
    let gw = Gateway::start(&config, &["--no-auth"]);
    let tasks = tasks(gw.proc.pid());
    let find = |name: &str| tasks.iter().find(|t| t.comm == name).unwrap_or_else(|| panic!("no {name}: {tasks:?}"));
    let shard = find("gk-shard-0");
    assert_eq!(shard.cpus, shard_cpu.to_string(), "{tasks:?}");
    assert_eq!(shard.nice, i64::from(own_nice), "shards keep the process's priority");
    assert!(!tasks.iter().any(|t| t.comm == "gk-shard-1"), "one CPU listed, one shard");
    let bridge = find("gk-bridge");
    assert_eq!(
        (bridge.cpus.as_str(), bridge.nice),
        (bridge_cpu.to_string().as_str(), i64::from(bridge_nice)),
        "{tasks:?}"
    );
    assert_eq!(bridge.policy, SCHED_OTHER, "cpu and nice set: bridge.policy auto is normal");
    assert_eq!(find("gatekeeper").nice, i64::from(own_nice), "the main thread keeps its priority");
    assert_eq!(chat(gw.addr, "nope", false, "").status, 404, "the pinned shard serves");
}

/// A counter or gauge without labels from the gateway's `/metrics`.
fn metric(gw: &Gateway, name: &str) -> u64 {
    let text = request(gw.addr, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n").text();
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// Polls `cond` every 50 ms for up to 20 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn the_bridge_idles_and_a_shard_raises_it_when_it_falls_behind() {
    let mock = Mock::start(Mock::config("primary"));
    let data = tempfile::tempdir().expect("tempdir");
    // The bridge's loop turns about once a second here, so a burst of requests leaves
    // more than the 64 KiB threshold unshipped in between.
    let top = format!(
        "audit: {{ data_dir: \"{}\", batch_wait_ms: 1000, fsync_interval_ms: 1000 }}\nbridge: {{ raise_backlog_bytes: 65536 }}\n",
        data.path().display()
    );
    let gw = Gateway::start(&config_for(&[("primary", &mock, "")], &top), &["--no-auth"]);
    let policy = || tasks(gw.proc.pid()).into_iter().find(|t| t.comm == "gk-bridge").expect("gk-bridge").policy;
    if metric(&gw, "gatekeeper_bridge_idle") == 0 {
        // Unprivileged without RLIMIT_NICE 20: the bridge could not come back from
        // SCHED_IDLE, so it stays a normal thread (and says so in the log).
        assert_eq!(policy(), SCHED_OTHER);
        eprintln!("skipped: this test process may not leave SCHED_IDLE");
        return;
    }
    assert_eq!(policy(), SCHED_IDLE, "bridge.policy auto with the embedded audit log");
    let load = Load::start(gw.addr, 8, chat_request(&chat_body("m", false), ""));
    eventually("a shard to raise the bridge", || metric(&gw, "gatekeeper_bridge_raises_total") >= 1);
    let (ok, other) = load.stop();
    assert!(ok > 0 && other == 0, "{ok} answered, {other} not 200");
    // Caught up: every record stored, and the bridge idle again.
    eventually("the bridge to catch up and idle", || {
        metric(&gw, "gatekeeper_audit_entries_stored_total") == ok && metric(&gw, "gatekeeper_bridge_idle") == 1
    });
    assert_eq!(policy(), SCHED_IDLE);
    assert_eq!(metric(&gw, "gatekeeper_audit_spool_full_total"), 0);
}

#[test]
fn bridge_policy_normal_keeps_an_ordinary_thread() {
    let gw = Gateway::start("bridge: { policy: normal }\n", &["--no-auth"]);
    let bridge = tasks(gw.proc.pid()).into_iter().find(|t| t.comm == "gk-bridge").expect("gk-bridge");
    assert_eq!(bridge.policy, SCHED_OTHER);
    assert_eq!(metric(&gw, "gatekeeper_bridge_idle"), 0);
    assert_eq!(metric(&gw, "gatekeeper_bridge_raises_total"), 0);
    let e = Gateway::start_failure("bridge: { raise_backlog_bytes: 1024 }\n", &["--no-auth"]);
    assert!(e.contains("bridge.raise_backlog_bytes: must be within 65536..=1073741824"), "{e}");
}

#[test]
fn ring_size_and_sqpoll_take_effect() {
    let gw = Gateway::start("driver: uring\nshards: 1\nuring: { entries: 256, sqpoll: true }\n", &["--no-auth"]);
    let pid = gw.proc.pid();
    // The ring's fdinfo shows its submission queue mask (entries − 1).
    let masks: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .expect("fdinfo")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| t.lines().find_map(|l| l.strip_prefix("SqMask:")).map(|m| m.trim().to_string()))
        .collect();
    assert!(masks.contains(&"0xff".to_string()), "a 256-entry ring: {masks:?}");
    let pollers = tasks(pid).into_iter().filter(|t| t.comm.starts_with("iou-sqp")).count();
    assert_eq!(pollers, 1, "one SQPOLL thread for the one shard");
}

#[test]
fn listen_backlog_takes_effect_on_every_shards_listener() {
    let gw = Gateway::start("shards: 2\nlisten_backlog: 77\n", &["--no-auth"]);
    // `ss` shows a listening socket's backlog in its Send-Q column.
    let out = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", gw.addr.port())])
        .output()
        .expect("`ss` (iproute2) is needed to read listen backlogs");
    let text = String::from_utf8_lossy(&out.stdout);
    let backlogs: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
    assert_eq!(backlogs, ["77", "77"], "one SO_REUSEPORT listener per shard: {text}");
}

#[test]
fn a_cpu_that_cannot_be_taken_fails_the_start() {
    let e = Gateway::start_failure("cpus: [1023]\n", &["--no-auth"]);
    assert!(e.contains("cannot pin shard 0 to CPU 1023"), "{e}");
    let e = Gateway::start_failure("bridge: { cpu: 1023 }\n", &["--no-auth"]);
    assert!(e.contains("bridge.cpu: cannot pin the bridge thread to CPU 1023"), "{e}");
    let e = Gateway::start_failure("cpus: [0]\n", &["--no-auth", "--shards", "2"]);
    assert!(e.contains("cpus: lists 1 CPU(s) but shards is 2"), "{e}");
    let e = Gateway::start_failure("cpus: [0, 0]\n", &["--no-auth"]);
    assert!(e.contains("cpus: CPU 0 is listed twice"), "{e}");
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning/tests/fixtures").join(name)
}

fn tune(args: &[&str]) -> std::process::Output {
    Command::new(gatekeeper_bin())
        .arg("tune")
        .args(args)
        .env("GATEKEEPER_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run gatekeeper tune")
}

#[test]
fn tune_reports_this_host_and_a_recorded_one() {
    let out = tune(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("gatekeeper tune: ") && text.contains("[shards] shards: "), "{text}");
    assert!(text.contains("    because: ") && text.contains("    effect:  "), "{text}");

    let root = fixture("container-quota");
    let out = tune(&["--json", "--root", root.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["advice"]["shards"], 2);
    assert_eq!(v["advice"]["bridge"]["cpu"], 4);
    assert_eq!(v["facts"]["cgroup"]["cpu_quota_cpus"], 2.5);
    assert!(v["advice"]["lines"].as_array().is_some_and(|l| l.iter().all(|l| l["because"].is_string())));
}

#[test]
fn tune_apply_without_a_terminal_prints_the_commands_and_changes_nothing() {
    let host = tempfile::tempdir().expect("tempdir");
    let status = Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", fixture("no-uring").display()))
        .arg(host.path())
        .status()
        .expect("cp");
    assert!(status.success());
    let out = tune(&["--apply", "--root", host.path().to_str().expect("utf-8")]);
    assert!(!out.status.success(), "refused");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("sysctl -w net.core.somaxconn=\"4096\""), "{stdout}");
    assert!(stderr.contains("stdin is not a terminal: nothing was changed"), "{stderr}");
    let somaxconn = std::fs::read_to_string(host.path().join("proc/sys/net/core/somaxconn")).expect("read");
    assert_eq!(somaxconn.trim(), "128");
}

/// `gk-load` beside the gateway binary (built by `cargo build -p gatekeeper-loadtest`
/// or `cargo test --workspace`), or `GK_LOAD`.
fn gk_load() -> PathBuf {
    let path =
        std::env::var_os("GK_LOAD").map(PathBuf::from).unwrap_or_else(|| gatekeeper_bin().with_file_name("gk-load"));
    assert!(
        path.is_file(),
        "{} missing: run `cargo build -p gatekeeper-loadtest` (or `cargo test --workspace`) first, or set GK_LOAD",
        path.display()
    );
    path
}

#[test]
fn tune_calibrate_smoke_run_measures_a_tiny_grid_and_plots_it() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = tune(&[
        "--calibrate",
        "--duration",
        "1s",
        "--grid",
        "tiny",
        "--connections",
        "8",
        "--gk-load",
        gk_load().to_str().expect("utf-8"),
        "--out",
        out_dir.path().to_str().expect("utf-8"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("| advised") && stdout.contains("recommended: "), "{stdout}");
    let json = std::fs::read_to_string(out_dir.path().join("calibration.json")).expect("calibration.json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let points = v["points"].as_array().expect("points");
    assert_eq!(points.len(), 2);
    for p in points {
        assert!(p["max_rps"].as_f64().is_some_and(|r| r > 0.0), "{p}");
        assert!(p["p99_us"].as_u64().is_some_and(|us| us > 0), "{p}");
        assert!(p["ok_ratio"].as_f64().is_some_and(|r| r > 0.99), "every request answered: {p}");
    }
    let svg = std::fs::read_to_string(out_dir.path().join("calibration.svg")).expect("svg");
    assert_eq!(svg.matches("<circle").count(), 2);
    let best = std::fs::read_to_string(out_dir.path().join("recommended.yaml")).expect("recommended.yaml");
    assert!(best.starts_with("shards: "), "{best}");
}
