//! CPU accounting from `/proc` that the benchmark examples share
//! (`#[path]`-included; not an example of its own): a process's CPU time
//! and one core's busy and stolen time, so that a figure can be judged
//! against what the machine gave it.

#![allow(dead_code)]

use std::process::Command;

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name: state is field 3, so
    // utime (14) and stime (15) are at 11 and 12.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (field(11) + field(12)) / ticks
}

pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Busy (not idle, not iowait) and stolen seconds of one CPU, from /proc/stat.
pub fn core_seconds(cpu: Option<usize>, ticks: f64) -> (f64, f64) {
    let Some(cpu) = cpu else {
        return (f64::NAN, f64::NAN);
    };
    let name = format!("cpu{cpu}");
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
    else {
        return (f64::NAN, f64::NAN);
    };
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    if f.len() < 8 {
        return (f64::NAN, f64::NAN);
    }
    // user nice system idle iowait irq softirq steal: busy excludes steal.
    let busy = f[0] + f[1] + f[2] + f[5] + f[6];
    (busy / ticks, f[7] / ticks)
}
