//! The simulated droplets' load: a demand curve in vCPUs shared by the active droplets, and
//! the node_* counters and gauges it drives.
//!
//! Closed loop: each active droplet carries demand / active of the work, so its CPU
//! utilisation is share / vcpus (capped at 1), its load averages are exponential averages of
//! the uncapped share (a run queue), and its used memory grows with its share. Adding droplets
//! lowers all of these, as it would on real machines.

use std::time::Duration;

/// Total demand over time, in vCPUs of work.
#[derive(Debug, Clone, PartialEq)]
pub enum Demand {
    /// Always the same.
    Constant(f64),
    /// `before` until `at` after the sim started, `after` from then on.
    Step {
        /// Demand before the step.
        before: f64,
        /// Demand after the step.
        after: f64,
        /// When the step happens.
        at: Duration,
    },
    /// `base + amplitude × sin(2π t / period)`, never below 0.
    Sine {
        /// The middle.
        base: f64,
        /// The swing.
        amplitude: f64,
        /// One full wave.
        period: Duration,
    },
    /// Points (time since start, demand), linearly interpolated, flat after the last.
    Series(Vec<(Duration, f64)>),
}

/// Why a demand description was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DemandError {
    /// The text is not one of the forms.
    #[error(
        "demand `{0}`: use a number, step:BEFORE:AFTER:AT, sine:BASE:AMPLITUDE:PERIOD or csv:FILE"
    )]
    Malformed(String),
    /// The CSV file could not be read or parsed.
    #[error("demand CSV {path}: {reason}")]
    Csv {
        /// The file.
        path: String,
        /// What is wrong, with the line.
        reason: String,
    },
}

impl Demand {
    /// Demand at `elapsed` since the sim started.
    pub fn at(&self, elapsed: Duration) -> f64 {
        let value = match self {
            Demand::Constant(v) => *v,
            Demand::Step { before, after, at } => {
                if elapsed < *at {
                    *before
                } else {
                    *after
                }
            }
            Demand::Sine {
                base,
                amplitude,
                period,
            } => {
                let phase = elapsed.as_secs_f64() / period.as_secs_f64().max(1e-9);
                base + amplitude * (std::f64::consts::TAU * phase).sin()
            }
            Demand::Series(points) => series_at(points, elapsed),
        };
        value.max(0.0)
    }

    /// Parses `4`, `step:2:8:60s`, `sine:4:3:10m`, `csv:FILE` (lines `seconds,demand`).
    pub fn parse(text: &str) -> Result<Demand, DemandError> {
        let malformed = || DemandError::Malformed(text.to_string());
        let parts: Vec<&str> = text.split(':').collect();
        let number = |s: &str| s.trim().parse::<f64>().map_err(|_| malformed());
        let duration =
            |s: &str| crate::config::duration::parse_duration(s).map_err(|_| malformed());
        match parts.as_slice() {
            [value] => Ok(Demand::Constant(number(value)?)),
            ["step", before, after, at] => Ok(Demand::Step {
                before: number(before)?,
                after: number(after)?,
                at: duration(at)?,
            }),
            ["sine", base, amplitude, period] => Ok(Demand::Sine {
                base: number(base)?,
                amplitude: number(amplitude)?,
                period: duration(period)?,
            }),
            ["csv", ..] => {
                let path = &text[4..];
                let body = std::fs::read_to_string(path).map_err(|e| DemandError::Csv {
                    path: path.to_string(),
                    reason: e.to_string(),
                })?;
                Demand::from_csv(path, &body)
            }
            _ => Err(malformed()),
        }
    }

    /// Reads `seconds,demand` lines (a header line and `#` comments are skipped).
    pub fn from_csv(path: &str, body: &str) -> Result<Demand, DemandError> {
        let mut points = Vec::new();
        for (index, line) in body.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: &str| DemandError::Csv {
                path: path.to_string(),
                reason: format!("line {}: {reason}", index + 1),
            };
            let (t, v) = line
                .split_once(',')
                .ok_or_else(|| bad("expected `seconds,demand`"))?;
            let (Ok(t), Ok(v)) = (t.trim().parse::<f64>(), v.trim().parse::<f64>()) else {
                if index == 0 {
                    continue;
                }
                return Err(bad("expected two numbers"));
            };
            if t < 0.0 || !t.is_finite() || !v.is_finite() {
                return Err(bad("times are seconds from 0 and values finite"));
            }
            points.push((Duration::from_secs_f64(t), v));
        }
        if points.is_empty() {
            return Err(DemandError::Csv {
                path: path.to_string(),
                reason: "no data lines".into(),
            });
        }
        points.sort_by_key(|(t, _)| *t);
        Ok(Demand::Series(points))
    }
}

fn series_at(points: &[(Duration, f64)], elapsed: Duration) -> f64 {
    let Some(first) = points.first() else {
        return 0.0;
    };
    if elapsed <= first.0 {
        return first.1;
    }
    for pair in points.windows(2) {
        let ((t0, v0), (t1, v1)) = (pair[0], pair[1]);
        if elapsed <= t1 {
            let span = (t1 - t0).as_secs_f64();
            if span <= 0.0 {
                return v1;
            }
            let x = (elapsed - t0).as_secs_f64() / span;
            return v0 + (v1 - v0) * x;
        }
    }
    points.last().map(|p| p.1).unwrap_or(0.0)
}

/// CPU modes in the order do-agent prints them.
pub const CPU_MODES: [&str; 8] = [
    "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
];

/// One machine's counters and gauges.
#[derive(Debug, Clone)]
pub struct MachineMetrics {
    /// Per CPU, seconds in each of [`CPU_MODES`].
    pub cpu_seconds: Vec<[f64; 8]>,
    /// 1-minute load average.
    pub load1: f64,
    /// 5-minute load average.
    pub load5: f64,
    /// 15-minute load average.
    pub load15: f64,
    /// Total memory in bytes.
    pub mem_total: f64,
    /// Memory used by processes, in bytes.
    pub mem_used: f64,
    /// Page cache, in bytes.
    pub mem_cached: f64,
    /// Disk size in bytes.
    pub disk_size: f64,
    /// Disk used in bytes.
    pub disk_used: f64,
    /// Bytes received.
    pub net_rx: f64,
    /// Bytes sent.
    pub net_tx: f64,
    /// Disk counters of the root device `vda`, in the order of [`DISK_COUNTERS`].
    pub disk: [f64; 9],
    /// The share of demand last applied (vCPUs of work), for stats.
    pub last_share: f64,
}

/// do-agent's disk counter families, their help texts, and how fast each grows per second at
/// idle and per vCPU of work.
pub const DISK_COUNTERS: [(&str, &str, f64, f64); 9] = [
    (
        "node_disk_discard_time_seconds_total",
        "This is the total number of seconds spent by all discards.",
        0.00001,
        0.0001,
    ),
    (
        "node_disk_discarded_sectors_total",
        "The total number of sectors discarded successfully.",
        2.0,
        40.0,
    ),
    (
        "node_disk_discards_completed_total",
        "The total number of discards completed successfully.",
        0.05,
        1.0,
    ),
    (
        "node_disk_read_bytes_total",
        "The total number of bytes read successfully.",
        4_096.0,
        2_000_000.0,
    ),
    (
        "node_disk_read_time_seconds_total",
        "The total number of seconds spent by all reads.",
        0.0002,
        0.01,
    ),
    (
        "node_disk_reads_completed_total",
        "The total number of reads completed successfully.",
        0.1,
        40.0,
    ),
    (
        "node_disk_write_time_seconds_total",
        "This is the total number of seconds spent by all writes.",
        0.0005,
        0.02,
    ),
    (
        "node_disk_writes_completed_total",
        "The total number of writes completed successfully.",
        0.3,
        60.0,
    ),
    (
        "node_disk_written_bytes_total",
        "The total number of bytes written successfully.",
        8_192.0,
        4_000_000.0,
    ),
];

/// A number as the Prometheus client library writes it (Go's `strconv.FormatFloat(v, 'g',
/// -1, 64)`): the shortest digits, in exponent form from 1e21 down to 1e6 and below 1e-4.
pub fn go_float(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if value == 0.0 {
        return "0".into();
    }
    // The common case, plain decimals, without a detour through the exponent form.
    let magnitude = value.abs();
    if (1e-4..1e6).contains(&magnitude) {
        return format!("{value}");
    }
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if !(-4..6).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    } else {
        format!("{value}")
    }
}

/// Memory a droplet uses when idle, as a share of its total.
const BASE_MEMORY_SHARE: f64 = 0.15;
/// Extra memory at full CPU, as a share of the total.
const LOAD_MEMORY_SHARE: f64 = 0.55;
/// Page cache, as a share of the total, shrinking under load.
const CACHE_SHARE: f64 = 0.2;

impl MachineMetrics {
    /// A machine with `vcpus` CPUs, `memory_mib` of memory and `disk_gib` of disk that has been
    /// up for `uptime` at a modest idle load.
    pub fn new(vcpus: u32, memory_mib: u64, disk_gib: u64, uptime: Duration) -> Self {
        let vcpus = vcpus.max(1) as usize;
        let up = uptime.as_secs_f64();
        let mut cpu = [0.0; 8];
        cpu[0] = up * 0.97;
        cpu[6] = up * 0.01;
        cpu[7] = up * 0.02;
        let mem_total = memory_mib as f64 * 1024.0 * 1024.0;
        MachineMetrics {
            cpu_seconds: vec![cpu; vcpus],
            load1: 0.0,
            load5: 0.0,
            load15: 0.0,
            mem_total,
            mem_used: mem_total * BASE_MEMORY_SHARE,
            mem_cached: mem_total * CACHE_SHARE,
            disk_size: disk_gib as f64 * 1024.0 * 1024.0 * 1024.0,
            disk_used: disk_gib as f64 * 1024.0 * 1024.0 * 1024.0 * 0.1,
            net_rx: up * 2_000.0,
            net_tx: up * 1_000.0,
            disk: DISK_COUNTERS.map(|(_, _, idle, _)| (idle * up).round()),
            last_share: 0.0,
        }
    }

    /// CPU utilisation for a share of demand: share / vcpus, capped at 1.
    pub fn utilisation(&self, share: f64) -> f64 {
        (share / self.cpu_seconds.len() as f64).clamp(0.0, 1.0)
    }

    /// Advances by `dt` carrying `share` vCPUs of work.
    pub fn advance(&mut self, dt: Duration, share: f64) {
        let seconds = dt.as_secs_f64();
        if seconds <= 0.0 {
            return;
        }
        let utilisation = self.utilisation(share);
        for cpu in &mut self.cpu_seconds {
            cpu[0] += seconds * (1.0 - utilisation);
            cpu[6] += seconds * utilisation * 0.15;
            cpu[7] += seconds * utilisation * 0.85;
        }
        for (load, period) in [
            (&mut self.load1, 60.0),
            (&mut self.load5, 300.0),
            (&mut self.load15, 900.0),
        ] {
            let keep = (-seconds / period).exp();
            *load = *load * keep + share * (1.0 - keep);
        }
        self.mem_used = self.mem_total * (BASE_MEMORY_SHARE + LOAD_MEMORY_SHARE * utilisation);
        self.mem_cached = self.mem_total * CACHE_SHARE * (1.0 - 0.5 * utilisation);
        self.net_rx += seconds * (2_000.0 + 5_000_000.0 * share);
        self.net_tx += seconds * (1_000.0 + 8_000_000.0 * share);
        for (counter, (_, _, idle, busy)) in self.disk.iter_mut().zip(DISK_COUNTERS) {
            *counter += seconds * (idle + busy * share);
        }
        self.last_share = share;
    }

    /// Free memory (neither used nor cache).
    pub fn mem_free(&self) -> f64 {
        (self.mem_total - self.mem_used - self.mem_cached).max(0.0)
    }

    /// Available memory (free plus reclaimable cache).
    pub fn mem_available(&self) -> f64 {
        self.mem_free() + self.mem_cached * 0.9
    }

    /// Renders the machine in the Prometheus text format as do-agent 3.18.14 serves it: its
    /// families in its order, its types and label keys, its number formatting.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            out,
            "metric_writes",
            "counter",
            "Total successes and failures of metric writers",
        );
        let _ = writeln!(
            out,
            "metric_writes{{reason=\"\",result=\"success\",writer=\"file\"}} 1"
        );
        family(
            out,
            "node_cpu_seconds_total",
            "counter",
            "Seconds the CPUs spent in each mode.",
        );
        for (index, cpu) in self.cpu_seconds.iter().enumerate() {
            for (mode, value) in CPU_MODES.iter().zip(cpu) {
                // /proc/stat counts in hundredths of a second.
                let value = (value * 100.0).round() / 100.0;
                let _ = writeln!(
                    out,
                    "node_cpu_seconds_total{{cpu=\"{index}\",mode=\"{mode}\"}} {}",
                    go_float(value)
                );
            }
        }
        for ((name, help, _, _), value) in DISK_COUNTERS.iter().zip(self.disk) {
            family(out, name, "counter", help);
            let value = if name.contains("seconds") {
                (value * 1000.0).round() / 1000.0
            } else {
                value.round()
            };
            let _ = writeln!(out, "{name}{{device=\"vda\"}} {}", go_float(value));
            let _ = writeln!(out, "{name}{{device=\"zram0\"}} 0");
        }
        let fs = "device=\"/dev/vda\",device_error=\"\",fstype=\"ext4\",mountpoint=\"/\"";
        family(
            out,
            "node_filesystem_free_bytes",
            "gauge",
            "Filesystem free space in bytes.",
        );
        let _ = writeln!(
            out,
            "node_filesystem_free_bytes{{{fs}}} {}",
            go_float((self.disk_size - self.disk_used).round())
        );
        family(
            out,
            "node_filesystem_size_bytes",
            "gauge",
            "Filesystem size in bytes.",
        );
        let _ = writeln!(
            out,
            "node_filesystem_size_bytes{{{fs}}} {}",
            go_float(self.disk_size.round())
        );
        let rounded = |v: f64| (v * 100.0).round() / 100.0;
        let bytes = |v: f64| (v / 4096.0).round() * 4096.0;
        let gauges = [
            ("node_load1", "1m load average.", rounded(self.load1)),
            ("node_load15", "15m load average.", rounded(self.load15)),
            ("node_load5", "5m load average.", rounded(self.load5)),
            (
                "node_memory_Cached_bytes",
                "Memory information field Cached_bytes.",
                bytes(self.mem_cached),
            ),
            (
                "node_memory_MemAvailable_bytes",
                "Memory information field MemAvailable_bytes.",
                bytes(self.mem_available()),
            ),
            (
                "node_memory_MemFree_bytes",
                "Memory information field MemFree_bytes.",
                bytes(self.mem_free()),
            ),
            (
                "node_memory_MemTotal_bytes",
                "Memory information field MemTotal_bytes.",
                bytes(self.mem_total),
            ),
            (
                "node_memory_SwapCached_bytes",
                "Memory information field SwapCached_bytes.",
                0.0,
            ),
            (
                "node_memory_SwapFree_bytes",
                "Memory information field SwapFree_bytes.",
                0.0,
            ),
            (
                "node_memory_SwapTotal_bytes",
                "Memory information field SwapTotal_bytes.",
                0.0,
            ),
        ];
        for (name, help, value) in gauges {
            family(out, name, "gauge", help);
            let _ = writeln!(out, "{name} {}", go_float(value));
        }
        family(
            out,
            "node_network_receive_bytes_total",
            "counter",
            "Network device statistic receive_bytes.",
        );
        let _ = writeln!(
            out,
            "node_network_receive_bytes_total{{device=\"eth0\"}} {}",
            go_float(self.net_rx.round())
        );
        family(
            out,
            "node_network_transmit_bytes_total",
            "counter",
            "Network device statistic transmit_bytes.",
        );
        let _ = writeln!(
            out,
            "node_network_transmit_bytes_total{{device=\"eth0\"}} {}",
            go_float(self.net_tx.round())
        );
        family(
            out,
            "sonar_build_info",
            "gauge",
            "A metric with a constant '1' value labeled by version from which the agent was built.",
        );
        let _ = writeln!(
            out,
            "sonar_build_info{{revision=\"bc91446\",version=\"3.18.14\"}} 1"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_as_the_go_client_writes_them() {
        for (value, text) in [
            (1_122_341_888.0, "1.122341888e+09"),
            (167_168.0, "167168"),
            (36.977000000000004, "36.977000000000004"),
            (2.56615350272e11, "2.56615350272e+11"),
            (1.45, "1.45"),
            (0.0, "0"),
            (1_000_000.0, "1e+06"),
            (0.00001, "1e-05"),
            (0.0001, "0.0001"),
            (-2.5e7, "-2.5e+07"),
        ] {
            assert_eq!(go_float(value), text);
        }
    }

    #[test]
    fn demand_forms_parse_and_evaluate() {
        assert_eq!(Demand::parse("4").unwrap().at(Duration::ZERO), 4.0);
        let step = Demand::parse("step:2:8:60s").unwrap();
        assert_eq!(step.at(Duration::from_secs(59)), 2.0);
        assert_eq!(step.at(Duration::from_secs(60)), 8.0);
        let sine = Demand::parse("sine:4:3:4m").unwrap();
        assert!((sine.at(Duration::from_secs(60)) - 7.0).abs() < 1e-9);
        let series = Demand::from_csv("x.csv", "seconds,demand\n0,1\n100,3\n").unwrap();
        assert!((series.at(Duration::from_secs(50)) - 2.0).abs() < 1e-9);
        assert_eq!(series.at(Duration::from_secs(500)), 3.0);
        assert!(Demand::parse("step:2:8").is_err());
        assert!(Demand::from_csv("x.csv", "0,1\nnope\n").is_err());
    }

    #[test]
    fn load_is_a_run_queue_and_utilisation_is_capped() {
        let mut machine = MachineMetrics::new(2, 4096, 80, Duration::from_secs(3600));
        for _ in 0..3600 {
            machine.advance(Duration::from_secs(1), 4.0);
        }
        assert!(
            (machine.load1 - 4.0).abs() < 0.01,
            "an overloaded 2-vCPU droplet shows load 4"
        );
        assert_eq!(machine.utilisation(4.0), 1.0);
        let before = machine.cpu_seconds[0][0];
        machine.advance(Duration::from_secs(10), 1.0);
        assert!(
            (machine.cpu_seconds[0][0] - before - 5.0).abs() < 1e-9,
            "half idle at share 1 of 2 vCPUs"
        );
        assert!(machine.mem_available() < machine.mem_total);
    }
}
