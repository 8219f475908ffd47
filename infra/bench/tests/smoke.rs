//! The benchmarks in miniature: `loadgen compare` against the reference and the
//! real local stack with a handful of clients, then the fan-out simulation and
//! the cost model on tiny rooms. Checks that they measure something sensible,
//! not how fast anything is.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `chat-local` binary, built by the same cargo, profile and target
/// directory as this test (`cargo test` builds only this package's binaries).
fn chat_local() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "chat-local", "--bin", "chat-local"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build for chat-local");
    assert!(status.success(), "building chat-local failed");
    let path = Path::new(env!("CARGO_BIN_EXE_loadgen")).with_file_name("chat-local");
    assert!(path.exists(), "{} is missing after building it", path.display());
    path
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chat-bench-smoke").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs loadgen to completion; kills exactly that child (by its handle) if it hangs.
fn loadgen(args: &[&str]) -> Output {
    let child: Child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loadgen");
    let pid = child.id();
    let started = Instant::now();
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()).ok());
    loop {
        match result.recv_timeout(Duration::from_millis(200)) {
            Ok(output) => return output.expect("loadgen output"),
            Err(_) if started.elapsed() > Duration::from_secs(120) => {
                // Only our own child: SIGKILL by its PID, which it still holds (not yet reaped).
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
                panic!("loadgen {args:?} did not finish in 120 s");
            }
            Err(_) => {}
        }
    }
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "loadgen failed: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn check_run(run: &Value, name: &str) {
    let number = |field: &str| run[field].as_u64().unwrap_or_else(|| panic!("{name}: {field} in {run}"));
    assert_eq!(number("messages_sent"), 10, "{name}");
    assert_eq!(number("expected_deliveries"), 50, "{name}: 10 messages × 5 clients");
    assert_eq!(number("delivered"), 50, "{name}");
    assert_eq!(number("lost"), 0, "{name}");
    assert_eq!(number("duplicated"), 0, "{name}");
    assert_eq!(number("clients_closed"), 0, "{name}");
    let latency = &run["latency_ms"];
    assert_eq!(latency["count"], 50, "{name}");
    assert!(latency["p50"].as_f64().unwrap() > 0.0, "{name}: {latency}");
    assert!(latency["max"].as_f64().unwrap() >= latency["p50"].as_f64().unwrap(), "{name}");
    assert!(run["connect_ms"]["p50"].as_f64().unwrap() > 0.0, "{name}");
    assert!(run["deliveries_per_s"].as_f64().unwrap() > 0.0, "{name}");
    let target = &run["target"];
    assert!(target["pid"].as_u64().unwrap() > 0, "{name}: the server's own PID is reported");
    assert!(target["peak_rss_mib"].as_f64().unwrap() > 0.0, "{name}: {target}");
}

#[test]
fn loadgen_compares_the_local_stack_with_the_reference() {
    let dir = scratch("compare");
    let json = dir.join("compare.json");
    let stack = chat_local();
    let reference = Path::new(env!("CARGO_BIN_EXE_reference"));
    let output = loadgen(&[
        "compare",
        "--clients=5",
        "--senders=2",
        "--messages=5",
        "--rate=0",
        "--quiet",
        "--idle-timeout-secs=20",
        "--stack-bin",
        stack.to_str().unwrap(),
        "--reference-bin",
        reference.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_success(&output);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("| latency p99 ms |"), "{table}");

    let report: Value = serde_json::from_slice(&std::fs::read(&json).expect("JSON written")).expect("JSON parses");
    check_run(&report["stack"], "local stack");
    check_run(&report["reference"], "reference");
    assert!(report["ratio_p99"].as_f64().unwrap() > 0.0);
    assert!(report["ratio_deliveries_per_s"].as_f64().unwrap() > 0.0);
    // loadgen stopped both servers it started: their PIDs run neither binary any more.
    for side in ["stack", "reference"] {
        let pid = report[side]["target"]["pid"].as_u64().unwrap();
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!cmdline.contains("chat-local") && !cmdline.contains("reference"), "{side} (pid {pid}) still runs");
    }
}

#[test]
fn coalescing_counts_frames_and_api_gateway_messages_with_the_stacks_own_counters() {
    let dir = scratch("coalescing");
    let json = dir.join("coalescing.json");
    let stack = chat_local();
    let output = loadgen(&[
        "coalescing",
        "--clients=5",
        "--senders=2",
        "--messages=10",
        "--rate=40",
        "--windows-ms=300",
        "--quiet",
        "--stack-bin",
        stack.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_success(&output);
    let runs: Value = serde_json::from_slice(&std::fs::read(&json).expect("JSON written")).expect("JSON parses");
    let (plain, coalesced) = (&runs[0], &runs[1]);
    for run in [plain, coalesced] {
        assert_eq!(run["report"]["lost"], 0, "{run}");
        assert_eq!(run["report"]["delivered"], 100, "20 lines × 5 clients");
    }
    // One frame per delivery, each one API Gateway message (frames under 32 KB).
    assert_eq!(plain["frames_sent"], 100.0, "{plain}");
    assert_eq!(plain["apigw_messages"], 100.0, "{plain}");
    // 20 lines at 40/s in 300 ms windows: several lines share each frame.
    let frames = coalesced["frames_sent"].as_f64().unwrap();
    assert!(frames < 60.0, "coalesced: {frames} frames for 100 deliveries");
    assert_eq!(coalesced["apigw_messages"], coalesced["frames_sent"], "{coalesced}");
}

#[test]
fn fanout_simulation_and_cost_model_report_tables_and_json() {
    let dir = scratch("fanout");
    let fanout_json = dir.join("fanout.json");
    let output = loadgen(&[
        "fanout",
        "--connections=100,1000",
        "--concurrency=16,64",
        "--latency-ms=1",
        "--jitter-ms=0.5",
        "--messages=2",
        "--json",
        fanout_json.to_str().unwrap(),
    ]);
    assert_success(&output);
    let cases: Value = serde_json::from_slice(&std::fs::read(&fanout_json).unwrap()).unwrap();
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        assert!(case["mean_ms_per_message"].as_f64().unwrap() > 0.0, "{case}");
        assert!(case["max_in_flight"].as_u64().unwrap() <= case["concurrency"].as_u64().unwrap(), "{case}");
        assert!(case["peak_rss_mib"].as_f64().unwrap() > 0.0, "{case}");
    }

    let cost_json = dir.join("cost.json");
    let output = loadgen(&[
        "cost",
        "--room-sizes=10,100",
        "--latency-ms=1",
        "--jitter-ms=0",
        "--json",
        cost_json.to_str().unwrap(),
    ]);
    assert_success(&output);
    let cost: Value = serde_json::from_slice(&std::fs::read(&cost_json).unwrap()).unwrap();
    let rooms = cost["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 2);
    assert!(rooms[1]["usd_total"].as_f64().unwrap() > rooms[0]["usd_total"].as_f64().unwrap());
    assert!(String::from_utf8_lossy(&output.stdout).contains("$ total"));
}

#[test]
fn soak_churns_clients_and_finds_every_acked_line_in_the_log() {
    let dir = scratch("soak");
    let (json, svg) = (dir.join("soak.json"), dir.join("soak.svg"));
    let stack = chat_local();
    let started = Instant::now();
    let output = loadgen(&[
        "soak",
        "--clients=10",
        "--duration-secs=8",
        "--rooms=3",
        "--line-every-ms=300",
        "--min-lifetime-secs=1",
        "--max-lifetime-secs=3",
        "--settle-ms=1000",
        "--sample-every-secs=1",
        "--warmup-secs=2",
        "--quiet",
        "--stack-bin",
        stack.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert_success(&output);
    assert!(started.elapsed() < Duration::from_secs(30), "the soak took {:?}", started.elapsed());
    assert!(String::from_utf8_lossy(&output.stdout).contains("| **lost** | **0** |"));

    let report: Value = serde_json::from_slice(&std::fs::read(&json).expect("JSON written")).expect("JSON parses");
    let at = |path: &str| report.pointer(path).and_then(Value::as_u64).unwrap_or_else(|| panic!("{path} in {report}"));
    assert!(at("/lines/sent") > 50, "10 clients × 8 s at ~3 lines/s");
    assert_eq!(at("/lines/lost"), 0, "{report}");
    assert_eq!(at("/lines/acked_missing"), 0);
    assert_eq!(at("/lines/acked_duplicated"), 0);
    assert_eq!(at("/lines/acked_stored"), at("/lines/acked"), "every acked line is in the log");
    assert!(at("/lines/acked") > 0 && at("/lines/echoed") > 0);
    // Churn happened both ways, and every session's join has its leave.
    assert!(at("/sessions/connects") > 10, "clients came back");
    assert!(at("/sessions/clean_leaves") > 0 && at("/sessions/dropped_leaves") > 0);
    assert_eq!(at("/sessions/connect_errors"), 0);
    assert_eq!(at("/log/joins"), at("/sessions/connects"));
    assert_eq!(at("/log/leaves"), at("/log/joins"));
    assert_eq!(at("/log/active_connections"), 0);
    // Sampled about every second, from the server's own /proc.
    let samples = report["samples"].as_array().expect("samples");
    assert!(samples.len() >= 6, "{} samples", samples.len());
    assert!(samples.iter().all(|s| s["rss_mib"].as_f64().unwrap() > 0.0 && s["fds"].as_u64().unwrap() > 0));
    assert!(samples.iter().any(|s| s["clients_connected"].as_u64().unwrap() > 0));
    assert!(report["rss_mib"]["slope_per_hour"].is_f64() && report["fds"]["slope_per_hour"].is_f64());
    let picture = std::fs::read_to_string(&svg).expect("SVG written");
    assert!(picture.starts_with("<svg") && picture.contains("polyline"), "an SVG with lines");
}

#[test]
fn idle_connections_report_the_stacks_memory_per_connection() {
    let json = scratch("idle").join("idle.json");
    let stack = chat_local();
    let (stack, json_arg) = (format!("--stack-bin={}", stack.display()), format!("--json={}", json.display()));
    let output = loadgen(&["idle", "--connections=200", "--timeout-secs=60", "--quiet", &stack, &json_arg]);
    assert_success(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("| per connection |"), "{stdout}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).expect("JSON written")).expect("JSON parses");
    assert_eq!(report["connections"], 200, "{report}");
    // Every client was open at once: the stack held a socket for each.
    assert!(report["server_sockets"].as_u64().unwrap() >= 200, "{report}");
    assert!(report["open_rss_kib"].as_u64().unwrap() > 0, "{report}");
    assert!(report["kib_per_connection"].as_f64().is_some_and(f64::is_finite), "{report}");
    assert!(report["connects_per_s"].as_f64().unwrap() > 0.0, "{report}");
}

#[test]
fn channels_deliver_every_line_of_every_room_to_its_members_exactly_once() {
    let json = scratch("channels").join("channels.json");
    let stack = chat_local();
    let (stack, json_arg) = (format!("--stack-bin={}", stack.display()), format!("--json={}", json.display()));
    let output = loadgen(&[
        "channels",
        "--clients=6",
        "--rooms=3",
        "--messages=30",
        "--senders=2",
        "--window=4",
        "--subscribe-concurrency=4",
        "--quiet",
        &stack,
        &json_arg,
    ]);
    assert_success(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("| **(b) / (a)** |") && stdout.contains("| round trip | 12 |"), "{stdout}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).expect("JSON written")).expect("JSON parses");
    for (phase, rooms) in [("single_room", 1), ("multi_room", 3)] {
        let p = &report[phase];
        assert_eq!(p["rooms"], rooms, "{phase}: {p}");
        assert_eq!(p["memberships"], 6 * rooms, "{phase}");
        assert_eq!(p["messages_sent"], 30, "{phase}");
        // Every client is in every room of the phase: 30 lines × 6 clients, each once, in its room.
        assert_eq!(p["expected_deliveries"], 180, "{phase}");
        assert_eq!(p["delivered"], 180, "{phase}: {p}");
        for zero in ["lost", "duplicated", "misrouted", "clients_incomplete"] {
            assert_eq!(p[zero], 0, "{phase}: {zero} in {p}");
        }
        assert_eq!(p["complete"], true, "{phase}");
        assert_eq!(p["latency_ms"]["count"], 180, "{phase}");
        assert!(p["deliveries_per_s"].as_f64().unwrap() > 0.0, "{phase}");
    }
    // The observer, in room bench-1 alone during (b): lines 1, 4, …, 28 (10 of 30), nothing else.
    let observer = &report["observer"];
    assert_eq!(observer["room"], "bench-1");
    assert_eq!((observer["expected"].as_u64(), observer["delivered"].as_u64()), (Some(10), Some(10)), "{observer}");
    for zero in ["missing", "duplicated", "stray", "misrouted"] {
        assert_eq!(observer[zero], 0, "observer: {zero} in {observer}");
    }
    // 6 clients × 2 rooms past their home room, each answered and timed.
    assert_eq!(report["subscribes"], 12);
    let subscribe = &report["subscribe_ms"];
    assert_eq!(subscribe["count"], 12);
    assert!(subscribe["p50"].as_f64().unwrap() > 0.0 && subscribe["max"].as_f64() >= subscribe["p99"].as_f64());
    assert!(report["ratio"].as_f64().is_some_and(|r| r.is_finite() && r > 0.0), "{report}");
    assert_eq!(report["error_frames"], 0, "{report}");
    assert_eq!(report["clients_closed"], 0, "{report}");
    // loadgen stopped the stack it started.
    let pid = report["server"]["pid"].as_u64().unwrap();
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(!cmdline.contains("chat-local"), "the stack (pid {pid}) still runs");
}

#[test]
fn flood_times_50_users_without_and_with_a_flooder_that_the_default_limits_hold() {
    let json = scratch("flood").join("flood.json");
    let stack = chat_local();
    let (stack, json_arg) = (format!("--stack-bin={}", stack.display()), format!("--json={}", json.display()));
    let output =
        loadgen(&["flood", "--users=50", "--line-every-ms=500", "--phase-secs=3", "--quiet", &stack, &json_arg]);
    assert_success(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("| **latency p99 ms** |") && stdout.contains("| flooder refused (Rate limited) |"),
        "{stdout}"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).expect("JSON written")).expect("JSON parses");
    for phase in ["without_flooder", "with_flooder"] {
        let p = &report[phase];
        let number = |field: &str| p[field].as_u64().unwrap_or_else(|| panic!("{phase}: {field} in {p}"));
        // 50 users, a line each every 500 ms for 3 s: about 6 lines each, each to all 50.
        assert!(number("lines_sent") >= 250, "{phase}: {p}");
        assert_eq!(number("expected_deliveries"), number("lines_sent") * 50, "{phase}");
        assert_eq!(number("delivered"), number("expected_deliveries"), "{phase}: {p}");
        assert_eq!(number("lost"), 0, "{phase}");
        assert_eq!(number("users_refused"), 0, "{phase}: a normal pace is never limited");
        assert_eq!(p["latency_ms"]["count"].as_u64(), Some(number("delivered")), "{phase}");
        assert!(p["latency_ms"]["p99"].as_f64().unwrap() > 0.0, "{phase}");
    }
    let quiet = &report["without_flooder"];
    assert_eq!((quiet["flooder_sent"].as_u64(), quiet["flooder_accepted"].as_u64()), (Some(0), Some(0)));
    let flooded = &report["with_flooder"];
    let number = |field: &str| flooded[field].as_u64().unwrap_or_else(|| panic!("{field} in {flooded}"));
    // The default send bucket: 20 at once, then 10 a second over the 3 s phase.
    let (sent, accepted, refused) = (number("flooder_sent"), number("flooder_accepted"), number("flooder_refused"));
    assert_eq!(accepted + refused, sent, "every flooder line answered: {flooded}");
    assert!((20..=20 + 10 * 3 + 2).contains(&accepted), "accepted {accepted}: {flooded}");
    assert!(refused > accepted, "the flooder sent far past its bucket: {flooded}");
    assert!((1..=100).contains(&number("flooder_max_retry_after_ms")), "one token is 100 ms away at most: {flooded}");
    assert!(report["p99_ratio"].as_f64().is_some_and(f64::is_finite), "{report}");
}
