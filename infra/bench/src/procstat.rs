//! Memory and CPU of a local process, read from `/proc` (Linux only): the
//! target server's footprint under load, and the load generator's own, which
//! shares the same cores and so bounds what any target can show.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// One reading of a process's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// Resident set size now (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Peak resident set size since the process started (`VmHWM`), KiB.
    pub hwm_kib: u64,
    /// User + system CPU time since the process started, seconds.
    pub cpu_seconds: f64,
}

/// Reads `/proc/PID/status` and `/proc/PID/stat`; `None` if the process is gone
/// or this is not Linux.
pub fn sample(pid: u32) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(Sample {
        rss_kib: status_kib(&status, "VmRSS:").unwrap_or(0),
        hwm_kib: status_kib(&status, "VmHWM:").unwrap_or(0),
        cpu_seconds: cpu_ticks(&stat)? as f64 / clock_ticks_per_second(),
    })
}

/// Open file descriptors of a process, and how many of them are sockets, from
/// `/proc/PID/fd`; `None` if the process is gone or not readable. A server that
/// forgets to close sockets shows it here long before it runs out.
pub fn open_fds(pid: u32) -> Option<(u64, u64)> {
    let (mut fds, mut sockets) = (0, 0);
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        fds += 1;
        // A descriptor closed between listing and reading its link is simply not a socket.
        if std::fs::read_link(entry.path()).is_ok_and(|target| target.to_string_lossy().starts_with("socket:")) {
            sockets += 1;
        }
    }
    Some((fds, sockets))
}

/// Raises this process's soft limit on open files to its hard limit (each
/// client is a descriptor; the usual soft limit of 1024 refuses the 1025th);
/// the soft limit now, or `None` if it could not be read.
pub fn raise_open_files_limit() -> Option<libc::rlim_t> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
    // SAFETY: setrlimit only reads the struct passed.
    if limit.rlim_cur < limit.rlim_max && unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        limit = raised;
    }
    Some(limit.rlim_cur)
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// `utime + stime` from `/proc/PID/stat`. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from the last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: state(3) ppid(4) ... utime(14) stime(15); so skip 11, take 2.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Busy and total CPU time of the whole machine (all cores) from `/proc/stat`,
/// in ticks: other programs on the same cores skew any benchmark, so runs say how
/// busy the machine was.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line.split_whitespace().filter_map(|t| t.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...; guest time is already in user.
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// CPU the whole machine spent between two [`machine_ticks`] readings, in percent
/// of one core (so up to 100 × cores).
pub fn machine_percent(start: (u64, u64), end: (u64, u64), cores: usize) -> f64 {
    let total = end.1.saturating_sub(start.1);
    if total == 0 {
        return 0.0;
    }
    100.0 * cores as f64 * end.0.saturating_sub(start.0) as f64 / total as f64
}

/// What the report says about one process over a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProcessReport {
    pub pid: u32,
    /// Highest resident set seen: `VmHWM` at the end, or the highest sample.
    pub peak_rss_mib: f64,
    /// Resident set when the measured phase ended.
    pub end_rss_mib: f64,
    /// CPU seconds spent while the clients connected and joined.
    pub cpu_seconds_connect: f64,
    /// CPU seconds spent during the measured phase.
    pub cpu_seconds_measure: f64,
    /// `cpu_seconds_measure` over the phase's wall time: 100 % = one core busy.
    pub cpu_percent_measure: f64,
}

/// Samples a process's RSS every 100 ms in the background (the peak between
/// `VmHWM` readings would otherwise be lost if the process is replaced), and
/// marks the phases whose CPU time the report splits.
pub struct Monitor {
    pid: u32,
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    start: Option<Sample>,
    measure_start: Option<(Sample, Instant)>,
}

impl Monitor {
    pub fn start(pid: u32) -> Self {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (peak, stopped) = (peak_kib.clone(), stop.clone());
        tokio::spawn(async move {
            while !stopped.load(Ordering::Relaxed) {
                match sample(pid) {
                    Some(s) => peak.fetch_max(s.rss_kib.max(s.hwm_kib), Ordering::Relaxed),
                    None => break,
                };
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { pid, peak_kib, stop, start: sample(pid), measure_start: None }
    }

    /// The clients are connected; the measured phase begins.
    pub fn mark_measure_start(&mut self) {
        self.measure_start = sample(self.pid).map(|s| (s, Instant::now()));
    }

    /// The measured phase is over.
    pub fn finish(self) -> ProcessReport {
        self.stop.store(true, Ordering::Relaxed);
        let end = sample(self.pid).unwrap_or_default();
        let mib = |kib: u64| kib as f64 / 1024.0;
        let mut report = ProcessReport {
            pid: self.pid,
            peak_rss_mib: mib(self.peak_kib.load(Ordering::Relaxed).max(end.hwm_kib)),
            end_rss_mib: mib(end.rss_kib),
            ..ProcessReport::default()
        };
        if let (Some(start), Some((measure, at))) = (self.start, self.measure_start) {
            report.cpu_seconds_connect = measure.cpu_seconds - start.cpu_seconds;
            report.cpu_seconds_measure = end.cpu_seconds - measure.cpu_seconds;
            let wall = at.elapsed().as_secs_f64();
            if wall > 0.0 {
                report.cpu_percent_measure = 100.0 * report.cpu_seconds_measure / wall;
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_tricky_command_name() {
        let stat =
            "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 5 1000 10 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(300));
    }

    #[test]
    fn parses_status_sizes() {
        let status = "Name:\tx\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kib(status, "VmHWM:"), Some(20480));
        assert_eq!(status_kib(status, "VmRSS:"), Some(10240));
    }

    #[test]
    fn machine_share_is_per_core() {
        assert_eq!(machine_percent((0, 0), (50, 100), 2), 100.0);
        assert!(machine_ticks().is_some_and(|(busy, total)| busy <= total));
    }

    #[test]
    fn counts_this_process_descriptors() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let (fds, sockets) = open_fds(std::process::id()).expect("Linux /proc");
        assert!(fds >= 4 && sockets >= 1, "{fds} fds, {sockets} sockets");
        drop(listener);
    }

    #[test]
    fn samples_this_process() {
        let me = sample(std::process::id()).expect("Linux /proc");
        assert!(me.rss_kib > 0 && me.hwm_kib >= me.rss_kib);
    }
}
