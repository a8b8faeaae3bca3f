//! Where a run's CPU time goes: every process's user + system time from
//! `/proc`, before and after, grouped by program. On a 2-core machine the
//! pipeline's speed is mostly a matter of which program spends the cores.

use std::collections::HashMap;

/// CPU seconds per program over one run, largest first, with the machine's
/// total (every process, including the ones that came and went).
#[derive(Debug, Clone, Default)]
pub struct CpuUse {
    pub programs: Vec<(String, f64)>,
    pub machine: f64,
    pub wall: f64,
}

/// A reading of every process's CPU ticks, by pid, with its program.
pub struct Snapshot {
    processes: HashMap<u32, Process>,
    machine: u64,
    at: std::time::Instant,
}

/// Clock ticks per second as `/proc` counts them (`USER_HZ`, 100 on Linux
/// for every architecture sluice runs on).
const TICKS: f64 = 100.0;

impl Snapshot {
    pub fn take() -> Self {
        let mut processes = HashMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                if let Some(p) = process(pid) {
                    processes.insert(pid, p);
                }
            }
        }
        Self {
            processes,
            machine: machine_ticks().unwrap_or(0),
            at: std::time::Instant::now(),
        }
    }

    /// What each program spent since `self`: processes alive at both
    /// readings, and those started since (counted whole).
    pub fn since(&self) -> CpuUse {
        let now = Self::take();
        let mut by_program: HashMap<String, u64> = HashMap::new();
        for (pid, p) in &now.processes {
            // A pid is the same process if it started at the same tick: a
            // kernel worker renames itself by the work it does
            // (`kworker/u8:2-writeback`, then `…-ext4-rsv-conversion`), and
            // counted whole its hours of ticks swamped the run.
            let before = match self.processes.get(pid) {
                Some(old) if old.started == p.started => old.ticks,
                _ => 0,
            };
            *by_program.entry(group(&p.name)).or_default() += p.ticks.saturating_sub(before);
        }
        let mut programs: Vec<(String, f64)> = by_program
            .into_iter()
            .map(|(name, ticks)| (name, ticks as f64 / TICKS))
            .filter(|(_, s)| *s >= 0.05)
            .collect();
        programs.sort_by(|a, b| b.1.total_cmp(&a.1));
        CpuUse {
            programs,
            machine: now.machine.saturating_sub(self.machine) as f64 / TICKS,
            wall: now.at.duration_since(self.at).as_secs_f64(),
        }
    }
}

/// PostgreSQL's backends name themselves by what they do; they are all
/// `postgres`. Python's http.server runs as `python3`. The kernel's workers
/// (writeback, journal, network) are one line.
fn group(name: &str) -> String {
    if name.starts_with("postgres") {
        "postgres".into()
    } else if name.starts_with("kworker/") {
        "kernel workers (kworker)".into()
    } else if name.starts_with("python") {
        "python3 (files)".into()
    } else {
        name.into()
    }
}

/// One process as `/proc/<pid>/stat` shows it.
struct Process {
    name: String,
    /// User + system ticks: its own, not its waited-for children's, so
    /// nothing is counted twice.
    ticks: u64,
    /// When it started, in ticks since boot: tells a reused pid apart.
    started: u64,
}

fn process(pid: u32) -> Option<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The program name is in parentheses and may hold spaces.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let name = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    // Fields 14 and 15 of stat(5), counted from the state (field 3).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Field 22.
    let started: u64 = fields.get(19)?.parse().ok()?;
    Some(Process {
        name,
        ticks: utime + stime,
        started,
    })
}

/// Busy ticks of the whole machine (user, nice, system, irq, softirq,
/// steal) from the first line of `/proc/stat`.
fn machine_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    Some(
        [0, 1, 2, 5, 6, 7]
            .iter()
            .filter_map(|i| fields.get(*i))
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_read() {
        let own = process(std::process::id()).expect("own stat");
        assert!(!own.name.is_empty());
        // Started after boot, and not in the future.
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(own.started > 0 && (own.started as f64) <= uptime * TICKS + 1.0);
    }

    #[test]
    fn programs_are_grouped() {
        assert_eq!(group("postgres: sluice"), "postgres");
        assert_eq!(group("python3"), "python3 (files)");
        assert_eq!(group("sluice-saver"), "sluice-saver");
        assert_eq!(group("kworker/u8:2-writeback"), "kernel workers (kworker)");
    }
}
