//! Markdown tables of the results (they paste straight into BENCHMARKS.md).

use std::fmt::Write;

use serde::Serialize;

use crate::channels::{ChannelsReport, PhaseReport, TARGET_RATIO};
use crate::coalescing::Run;
use crate::coldstart::ColdStart;
use crate::cost::CostReport;
use crate::envelope::Envelope;
use crate::fanout::CaseReport;
use crate::idle::IdleReport;
use crate::load::RunReport;
use crate::soak::{SoakReport, SoakSample};

/// The local stack and the reference under the same load.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub stack: RunReport,
    pub reference: RunReport,
    /// local stack / reference.
    pub ratio_p50: f64,
    pub ratio_p99: f64,
    pub ratio_deliveries_per_s: f64,
}

impl Comparison {
    pub fn new(stack: RunReport, reference: RunReport) -> Self {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        Self {
            ratio_p50: ratio(stack.latency_ms.p50, reference.latency_ms.p50),
            ratio_p99: ratio(stack.latency_ms.p99, reference.latency_ms.p99),
            ratio_deliveries_per_s: ratio(stack.deliveries_per_s, reference.deliveries_per_s),
            stack,
            reference,
        }
    }
}

/// `(label, value)` rows of one run, formatted.
fn rows(run: &RunReport) -> Vec<(&'static str, String, f64)> {
    let l = &run.latency_ms;
    let c = &run.connect_ms;
    let t = run.target.as_ref();
    let na = || "n/a".to_owned();
    vec![
        ("connect p50 / p99 ms", format!("{:.2} / {:.2}", c.p50, c.p99), c.p99),
        ("latency p50 ms", format!("{:.2}", l.p50), l.p50),
        ("latency p90 ms", format!("{:.2}", l.p90), l.p90),
        ("latency p99 ms", format!("{:.2}", l.p99), l.p99),
        ("latency p99.9 ms", format!("{:.2}", l.p999), l.p999),
        ("latency max ms", format!("{:.2}", l.max), l.max),
        ("deliveries/s", format!("{:.0}", run.deliveries_per_s), run.deliveries_per_s),
        ("messages/s sent", format!("{:.1}", run.send_rate), run.send_rate),
        ("delivered / expected", format!("{} / {}", run.delivered, run.expected_deliveries), f64::NAN),
        ("lost / duplicated", format!("{} / {}", run.lost, run.duplicated), f64::NAN),
        ("clients closed by server", run.clients_closed.to_string(), f64::NAN),
        ("first send → last delivery s", format!("{:.2}", run.duration_s), run.duration_s),
        (
            "server peak RSS MiB",
            t.map_or_else(na, |t| format!("{:.1}", t.peak_rss_mib)),
            t.map_or(f64::NAN, |t| t.peak_rss_mib),
        ),
        (
            "server CPU % (measured phase)",
            t.map_or_else(na, |t| format!("{:.0}", t.cpu_percent_measure)),
            t.map_or(f64::NAN, |t| t.cpu_percent_measure),
        ),
        (
            "server CPU s (connect phase)",
            t.map_or_else(na, |t| format!("{:.2}", t.cpu_seconds_connect)),
            t.map_or(f64::NAN, |t| t.cpu_seconds_connect),
        ),
        (
            "frames written (server's counter)",
            run.counters.map_or_else(na, |c| format!("{:.0}", c.frames_sent)),
            run.counters.map_or(f64::NAN, |c| c.frames_sent),
        ),
        ("loadgen CPU % (measured phase)", format!("{:.0}", run.loadgen.cpu_percent_measure), f64::NAN),
        (
            "other processes CPU % (measured phase)",
            format!("{:.0} of {}", run.others_cpu_percent, 100 * run.cores),
            f64::NAN,
        ),
    ]
}

fn describe(run: &RunReport) -> String {
    let c = &run.config;
    let load = c.rate.map_or(format!("saturating, window {} per sender", c.window), |r| format!("{r} msg/s total"));
    format!("{} clients, {} senders × {} messages, {load}", c.clients, c.senders, c.messages)
}

pub fn run_table(run: &RunReport) -> String {
    let mut out = format!("{} at {}: {}\n\n| metric | value |\n| --- | ---: |\n", run.label, run.url, describe(run));
    for (name, value, _) in rows(run) {
        writeln!(out, "| {name} | {value} |").ok();
    }
    out
}

pub fn comparison_table(comparison: &Comparison) -> String {
    let mut out = format!(
        "{}\n\n| metric | local stack | reference | local / reference |\n| --- | ---: | ---: | ---: |\n",
        describe(&comparison.stack)
    );
    for ((name, stack, a), (_, reference, b)) in rows(&comparison.stack).into_iter().zip(rows(&comparison.reference)) {
        let ratio = if a.is_finite() && b.is_finite() && b > 0.0 { format!("{:.2}×", a / b) } else { String::new() };
        writeln!(out, "| {name} | {stack} | {reference} | {ratio} |").ok();
    }
    out
}

/// `loadgen coalescing`: one row per configuration.
pub fn coalescing_table(runs: &[Run]) -> String {
    let Some(first) = runs.first() else { return String::new() };
    let mut out = format!(
        "{}\n\n| delivery | chat lines | frames written | per 1000 lines | API Gateway messages | per 1000 lines | events / frame | latency p50 / p99 ms | lost |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        describe(&first.report)
    );
    for run in runs {
        let delivery = run.window_ms.map_or("one frame per event".to_owned(), |w| format!("coalesced, window {w} ms"));
        let l = &run.report.latency_ms;
        writeln!(
            out,
            "| {delivery} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} / {:.1} | {} |",
            run.chat_lines,
            run.frames_sent,
            run.frames_per_1000_lines,
            run.apigw_messages,
            run.apigw_messages_per_1000_lines,
            run.events_per_frame,
            l.p50,
            l.p99,
            run.report.lost
        )
        .ok();
    }
    out
}

/// `loadgen envelope`: the events per invocation measured, every cell, and the largest rooms.
pub fn envelope_tables(envelope: &Envelope) -> String {
    let delivery =
        |window: Option<u64>| window.map_or("one frame per event".to_owned(), |w| format!("coalesced, {w} ms"));
    let mut out = String::from(
        "Events per broadcaster invocation (local stack's stream emulator)\n\n\
         | msg/s | window ms | lines | frames per client | events / invocation |\n| ---: | ---: | ---: | ---: | ---: |\n",
    );
    for b in &envelope.batching {
        writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.2} |",
            b.rate, b.window_ms, b.lines, b.frames, b.events_per_invocation
        )
        .ok();
    }
    out.push_str(
        "\n| room | msg/s | delivery | events / invocation | @connections + inbound calls/s | of 10 000/s | broadcaster busy | delivery ms (mean) | $ / M deliveries | served? |\n\
         | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    for c in &envelope.cells {
        writeln!(
            out,
            "| {} | {} | {} | {:.1} | {:.0} | {:.0} % | {:.0} % | {:.0} | ${:.3} | {} |",
            c.room,
            c.rate,
            delivery(c.window_ms),
            c.events_per_invocation,
            c.calls_per_s,
            c.budget_share * 100.0,
            c.broadcaster_busy * 100.0,
            c.delivery_ms,
            c.usd_per_million_deliveries,
            if c.served() { "yes" } else { "**no**" }
        )
        .ok();
    }
    out.push_str(
        "\nLargest room served (within the account budget and one broadcaster keeping up)\n\n\
         | msg/s | delivery | by the budget | by the broadcaster | largest room |\n| ---: | --- | ---: | ---: | ---: |\n",
    );
    for l in &envelope.largest {
        writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | **{:.0}** |",
            l.rate,
            delivery(l.window_ms),
            l.by_budget,
            l.by_broadcaster,
            l.room
        )
        .ok();
    }
    out
}

/// `loadgen coldstart`: one row per binary.
pub fn coldstart_table(starts: &[ColdStart]) -> String {
    let mut out = String::from(
        "| binary | size (x86_64, release) | cold start median ms | min | max | starts |\n| --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for s in starts {
        writeln!(
            out,
            "| `{}` | {:.1} MiB | {:.1} | {:.1} | {:.1} | {} |",
            s.name,
            s.size_bytes as f64 / (1024.0 * 1024.0),
            s.median_ms,
            s.min_ms,
            s.max_ms,
            s.runs
        )
        .ok();
    }
    out
}

pub fn fanout_table(cases: &[CaseReport]) -> String {
    let mut out = String::from(
        "| connections | concurrency | messages timed | ms / message (mean) | max | bound alone | list ms | posts / message | pruned / message | peak RSS MiB | 10k under 1 s? |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    for c in cases {
        let target =
            if c.connections == 10_000 { if c.mean_ms_per_message < 1_000.0 { "yes" } else { "no" } } else { "" };
        writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {:.1} | {:.1} | {target} |",
            c.connections,
            c.concurrency,
            c.messages,
            c.mean_ms_per_message,
            c.max_ms_per_message,
            c.ideal_ms,
            c.list_ms,
            c.posts_per_message,
            c.pruned_per_message,
            c.peak_rss_mib
        )
        .ok();
    }
    out
}

/// `loadgen fanout --split`: per room, split across workers and posted alone.
pub fn split_table(cases: &[crate::split::SplitCaseReport]) -> String {
    let mut out = String::from(
        "| connections | fan-out | jobs / event | workers at once | stuck | shard waits ms | p50 ms | p99 ms | last ms (mean) | last ms (max) | requeued / event | posts / event |\n\
         | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for c in cases {
        let mode = match c.model.above {
            Some(above) => format!("split above {above}, {} / job", c.model.chunk),
            None => format!("broadcaster alone, {} in flight", c.concurrency),
        };
        writeln!(
            out,
            "| {} | {mode} | {:.0} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} |",
            c.connections,
            c.jobs_per_message,
            c.max_workers,
            c.model.stuck,
            c.shard_ms,
            c.p50_ms,
            c.p99_ms,
            c.last_ms,
            c.last_ms_max,
            c.requeued_per_message,
            c.posts_per_message
        )
        .ok();
    }
    out
}

pub fn cost_table(report: &CostReport) -> String {
    let rooms = &report.rooms;
    let mut out = format!(
        "Per {} chat messages (USD, list prices, us-east-1)\n\n| | {} |\n| --- |{}\n",
        report.assumptions.messages,
        rooms.iter().map(|r| format!("{} connections", r.connections)).collect::<Vec<_>>().join(" | "),
        " ---: |".repeat(rooms.len())
    );
    let line = |out: &mut String, name: &str, value: &dyn Fn(&crate::cost::RoomCost) -> String| {
        let cells: Vec<String> = rooms.iter().map(value).collect();
        writeln!(out, "| {name} | {} |", cells.join(" | ")).ok();
    };
    let millions = |x: f64| format!("{:.2} M", x / 1e6);
    let usd = |x: f64| format!("${x:.2}");
    line(&mut out, "API Gateway messages", &|r| millions(r.apigw_messages));
    line(&mut out, "API Gateway connection-minutes", &|r| millions(r.apigw_connection_minutes));
    line(&mut out, "Lambda requests", &|r| millions(r.lambda_requests));
    line(&mut out, "broadcaster ms / message (simulated)", &|r| format!("{:.0}", r.broadcaster_ms_per_message));
    line(&mut out, "Lambda GB-seconds", &|r| format!("{:.0}", r.lambda_gb_seconds));
    line(&mut out, "DynamoDB write units", &|r| millions(r.dynamodb_write_units));
    line(&mut out, "DynamoDB read units", &|r| millions(r.dynamodb_read_units));
    line(&mut out, "**$ API Gateway messages**", &|r| usd(r.usd_apigw_messages));
    line(&mut out, "**$ API Gateway connection-minutes**", &|r| usd(r.usd_apigw_connection_minutes));
    line(&mut out, "**$ Lambda requests**", &|r| usd(r.usd_lambda_requests));
    line(&mut out, "**$ Lambda duration**", &|r| usd(r.usd_lambda_duration));
    line(&mut out, "**$ DynamoDB**", &|r| usd(r.usd_dynamodb));
    line(&mut out, "**$ total**", &|r| usd(r.usd_total));
    line(&mut out, "$ per million deliveries", &|r| format!("${:.3}", r.usd_per_million_deliveries));
    let a = &report.assumptions;
    write!(
        out,
        "\nAssumptions: {} bytes of text → {}-byte frames (1 unit of 32 KB) and {}-byte MessageHistory items \
         (1 write unit); {}-byte Memberships items; the room sends {} messages/minute in total; \
         heartbeat every {} s (ping in + pong out, one send_message invocation each; 0 = none); \
         Lambda arm64 at {} MB, billed per 1 ms; {} stream record(s) per broadcaster invocation; \
         each DynamoDB call {} ms; send_message CPU {:.4} ms (measured); broadcaster time from the fan-out \
         simulation at concurrency {} with posts of {} ± {} ms, no failures; the room's Memberships \
         read by a strongly consistent Query (1 read unit per 4 KB); stream reads by Lambda are free; joins, leaves, $connect/$disconnect and \
         SessionHistory writes are per session and left out; no S3 archive.\n",
        a.text_bytes,
        report.frame_bytes,
        report.message_item_bytes,
        report.member_item_bytes,
        a.room_messages_per_minute,
        a.heartbeat_secs,
        a.lambda_memory_mb,
        a.stream_batch,
        a.dynamodb_call_ms,
        report.send_handler_cpu_ms,
        a.fanout_concurrency,
        a.poster.latency_ms,
        a.poster.jitter_ms,
    )
    .ok();
    out
}

fn per_hour(slope: Option<f64>, digits: usize) -> String {
    slope.map_or_else(|| "n/a".to_owned(), |s| format!("{s:+.digits$}"))
}

fn optional(value: Option<u64>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| v.to_string())
}

/// `loadgen channels`: the two phases side by side, their ratio against the
/// issue's target, then the subscribe round trips.
pub fn channels_table(report: &ChannelsReport) -> String {
    let c = &report.config;
    let mut out = format!(
        "{} clients, {} lines per phase by {} senders (saturating, window {} each), rooms of (b): {}; \
         local stack with its default settings\n\n\
         | phase | memberships | lines | delivered / expected | lost / duplicated / misrouted | first send → last delivery s | deliveries/s | latency p50 / p99 ms | stack CPU % | stack CPU µs / delivery | loadgen CPU % | others CPU % |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        c.clients, c.messages, c.senders, c.window, c.rooms
    );
    let phase = |out: &mut String, name: String, p: &PhaseReport| {
        writeln!(
            out,
            "| {name} | {} | {} | {} / {} | {} / {} / {} | {:.2} | {:.0} | {:.1} / {:.1} | {:.0} | {:.3} | {:.0} | {:.0} of {} |",
            p.memberships,
            p.messages_sent,
            p.delivered,
            p.expected_deliveries,
            p.lost,
            p.duplicated,
            p.misrouted,
            p.duration_s,
            p.deliveries_per_s,
            p.latency_ms.p50,
            p.latency_ms.p99,
            p.server_cpu_percent,
            p.server_cpu_us_per_delivery,
            p.loadgen_cpu_percent,
            p.others_cpu_percent,
            100 * report.cores,
        )
        .ok();
    };
    phase(&mut out, "(a) one room".into(), &report.single_room);
    phase(&mut out, format!("(b) {} rooms each", c.rooms), &report.multi_room);
    writeln!(
        out,
        "| **(b) / (a)** | | | | | | **{:.2}×** (target ≥ {TARGET_RATIO}: {}) | | | {:.2}× per stack CPU-second | | |",
        report.ratio,
        if report.target_met { "met" } else { "missed" },
        report.cpu_ratio
    )
    .ok();
    let s = &report.subscribe_ms;
    writeln!(
        out,
        "\n| subscribe → subscribed | count | in flight at once | p50 ms | p90 ms | p99 ms | max ms |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n\
         | round trip | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
        report.subscribes, c.subscribe_concurrency, s.p50, s.p90, s.p99, s.max
    )
    .ok();
    let complete = |done: bool| if done { "complete" } else { "INCOMPLETE" };
    let o = &report.observer;
    writeln!(
        out,
        "\nDeliveries: (a) {}, (b) {}; the observer (in {} alone, outside the figures) {}: \
         {} / {} lines of its room, {} missing, {} duplicated, {} from other rooms. \
         Connect p50 / p99 {:.2} / {:.2} ms; stack peak RSS {}; clients closed by the server {}; \
         other error frames {}.",
        complete(report.single_room.complete),
        complete(report.multi_room.complete),
        o.room,
        complete(o.complete),
        o.delivered,
        o.expected,
        o.missing,
        o.duplicated,
        o.stray + o.misrouted,
        report.connect_ms.p50,
        report.connect_ms.p99,
        report.server.as_ref().map_or("n/a".to_owned(), |s| format!("{:.1} MiB", s.peak_rss_mib)),
        report.clients_closed,
        report.error_frames,
    )
    .ok();
    out
}

/// Memory per idle connection: one row, every figure of the run.
pub fn idle_table(report: &IdleReport) -> String {
    let mib = |kib: u64| kib as f64 / 1024.0;
    format!(
        "| connections | line first | server RSS at rest | with all open | per connection | connect rate | connect time | server sockets | RSS after all closed |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n\
         | {} | {} | {:.1} MiB | {:.1} MiB | **{:.1} KiB** | {:.0} /s | {:.1} s | {} | {:.1} MiB |\n",
        report.connections,
        if report.line_bytes == 0 { "none".to_owned() } else { format!("{} B", report.line_bytes) },
        mib(report.rest_rss_kib),
        mib(report.open_rss_kib),
        report.kib_per_connection,
        report.connects_per_s,
        report.connect_secs,
        report.server_sockets,
        mib(report.closed_rss_kib),
    )
}

/// The soak's summary: memory and descriptors (idle → end, slopes after the
/// warm-up), then what happened to the lines and sessions.
pub fn soak_table(report: &SoakReport) -> String {
    let c = &report.config;
    let (rss, fds) = (&report.rss_mib, &report.fds);
    let mut out = format!(
        "soak at {}: {} clients in {} rooms for {:.0} s, a line every {:?} (±50 %), connections living {:?}–{:?}\n\n\
         | | idle | after warm-up ({:.0} s) | end | max | after all left | slope / hour (after warm-up) |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        report.url,
        c.clients,
        c.rooms,
        report.duration_s,
        c.line_every,
        c.min_lifetime,
        c.max_lifetime,
        c.warmup.as_secs_f64(),
    );
    writeln!(
        out,
        "| server RSS MiB | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} MiB |",
        rss.idle,
        rss.after_warmup,
        rss.end,
        rss.max,
        rss.after_drain,
        per_hour(rss.slope_per_hour, 2)
    )
    .ok();
    writeln!(
        out,
        "| server open fds | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
        fds.idle,
        fds.after_warmup,
        fds.end,
        fds.max,
        fds.after_drain,
        per_hour(fds.slope_per_hour, 1)
    )
    .ok();

    let l = &report.lines;
    let s = &report.sessions;
    let log = report.log.as_ref();
    let rows: Vec<(&str, String)> = vec![
        ("lines sent / acked / echoed to sender", format!("{} / {} / {}", l.sent, l.acked, l.echoed)),
        ("acked lines stored exactly once", optional(l.acked_stored.map(|n| n - l.acked_duplicated.unwrap_or(0)))),
        (
            "acked lines missing / stored twice",
            format!("{} / {}", optional(l.acked_missing), optional(l.acked_duplicated)),
        ),
        ("settled lines never acked / never echoed", format!("{} / {}", l.unacked, l.unechoed)),
        ("in flight when their client left (not judged)", l.in_flight_at_leave.to_string()),
        ("stored but not acked (cut off by a leave)", optional(l.stored_unacked)),
        ("**lost**", format!("**{}**", l.lost)),
        ("echo duplicates", l.echo_duplicates.to_string()),
        ("connects (failed)", format!("{} ({})", s.connects, s.connect_errors)),
        (
            "leaves: close frame / TCP dropped / closed by server",
            format!("{} / {} / {}", s.clean_leaves, s.dropped_leaves, s.closed_by_server),
        ),
        ("joins / leaves in the log", log.map_or_else(|| "n/a".into(), |g| format!("{} / {}", g.joins, g.leaves))),
        (
            "active_connections rows after all left",
            log.map_or_else(|| "n/a".into(), |g| g.active_connections.to_string()),
        ),
        ("error frames", s.error_frames.to_string()),
        (
            "send → ack p50 / p99 / max ms",
            format!("{:.2} / {:.2} / {:.2}", report.ack_ms.p50, report.ack_ms.p99, report.ack_ms.max),
        ),
        (
            "send → own echo p50 / p99 / max ms",
            format!("{:.2} / {:.2} / {:.2}", report.echo_ms.p50, report.echo_ms.p99, report.echo_ms.max),
        ),
        ("server / loadgen CPU %", format!("{:.1} / {:.1}", report.server_cpu_percent, report.loadgen_cpu_percent)),
        ("other processes CPU %", format!("{:.0} of {}", report.others_cpu_percent, 100 * report.cores)),
    ];
    out.push_str("\n| | |\n| --- | ---: |\n");
    for (name, value) in rows {
        writeln!(out, "| {name} | {value} |").ok();
    }
    out
}

/// The samples about every `every_s` seconds (and the last), for a table a reader can scan.
pub fn soak_samples_table(samples: &[SoakSample], every_s: f64) -> String {
    let mut out = String::from(
        "| t (min) | RSS MiB | open fds | of which sockets | clients connected | active_connections rows | lines sent | acked | server CPU s |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut next = 0.0;
    for (i, s) in samples.iter().enumerate() {
        if s.t_s + 1e-9 < next && i + 1 != samples.len() {
            continue;
        }
        next = (s.t_s / every_s).floor() * every_s + every_s;
        writeln!(
            out,
            "| {:.1} | {:.1} | {} | {} | {} | {} | {} | {} | {:.1} |",
            s.t_s / 60.0,
            s.rss_mib,
            s.fds,
            s.sockets,
            s.clients_connected,
            optional(s.active_connections),
            s.lines_sent,
            s.lines_acked,
            s.cpu_s
        )
        .ok();
    }
    out
}
