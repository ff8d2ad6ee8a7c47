//! The standard `process_*` series, read from `/proc/self` at each scrape (Linux; other
//! systems get none of them rather than zeros).

use std::sync::OnceLock;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

#[derive(Debug, Default)]
pub struct Process {
    /// The boot time in Unix seconds, read once.
    boot: OnceLock<Option<f64>>,
}

/// What one read of `/proc/self/stat` gives.
struct Stat {
    cpu_ticks: f64,
    threads: f64,
    start_ticks: f64,
    virtual_bytes: f64,
    resident_pages: f64,
}

fn stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name is in parentheses and may hold spaces: fields start after it.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let num = |i: usize| f.get(i)?.parse::<f64>().ok();
    // Field numbers of proc(5), less the three before this slice.
    Some(Stat {
        cpu_ticks: num(11)? + num(12)?,
        threads: num(17)?,
        start_ticks: num(19)?,
        virtual_bytes: num(20)?,
        resident_pages: num(21)?,
    })
}

fn boot_time() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

fn open_fds() -> Option<f64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as f64)
}

fn max_fds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Kernel clock ticks per second: the USER_HZ that /proc counts in, 100 on every Linux
/// architecture tokex builds for.
const TICKS_PER_SECOND: f64 = 100.0;

/// The page size /proc's resident count is in; 4 KiB on the architectures tokex ships for.
const PAGE_BYTES: f64 = 4096.0;

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = stat() else {
            return Ok(());
        };
        let boot = *self.boot.get_or_init(boot_time);
        let counter = |encoder: &mut DescriptorEncoder, name, help, v: f64| {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
        };
        let gauge = |encoder: &mut DescriptorEncoder, name, help, v: f64| {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        counter(
            &mut encoder,
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds.",
            s.cpu_ticks / TICKS_PER_SECOND,
        )?;
        gauge(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            s.resident_pages * PAGE_BYTES,
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            s.virtual_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_threads",
            "Number of OS threads.",
            s.threads,
        )?;
        if let Some(boot) = boot {
            gauge(
                &mut encoder,
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds.",
                boot + s.start_ticks / TICKS_PER_SECOND,
            )?;
        }
        if let Some(n) = open_fds() {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors.",
                n,
            )?;
        }
        if let Some(n) = max_fds() {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                n,
            )?;
        }
        Ok(())
    }
}
