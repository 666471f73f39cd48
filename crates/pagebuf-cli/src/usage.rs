//! What this process has used so far, from `/proc/self`: the figures `randread` and
//! `log bench` report beside their own.

/// User + system CPU seconds of this process so far (`/proc/self/stat`, every thread).
pub fn process_cpu_seconds() -> f64 {
    // /proc counts in USER_HZ, which is 100 on every Linux architecture (the ABI).
    let ticks = 100.0;
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may hold spaces) start at `state`.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .unwrap_or(0.0)
}

/// `write_bytes` of `/proc/self/io`: bytes this process caused to be sent to storage.
pub fn io_write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|n| n.trim().parse().ok())
}
