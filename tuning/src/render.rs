//! The two ways advice leaves the crate for a person: the readable report and the
//! `gatekeeper.yaml` fragment. (`--json` is the serde form of facts and advice.)

use std::fmt::Write as _;

use crate::advise::Advice;
use crate::cpulist::format_list;
use crate::facts::HostFacts;

impl Advice {
    /// The `gatekeeper.yaml` fragment with every key this advice sets; it parses as a
    /// whole config (the gateway's tests check that for every recorded host).
    pub fn config_yaml(&self) -> String {
        let mut y = String::new();
        let _ = writeln!(y, "# from `gatekeeper tune`: paste over these keys in gatekeeper.yaml");
        let _ = writeln!(y, "shards: {}", self.shards);
        if !self.cpus.is_empty() {
            let list: Vec<String> = self.cpus.iter().map(u32::to_string).collect();
            let _ = writeln!(y, "cpus: [{}]", list.join(", "));
        }
        let _ = writeln!(y, "driver: {}", self.driver);
        match (self.bridge.cpu, self.bridge.nice) {
            (Some(cpu), Some(nice)) => {
                let _ = writeln!(y, "bridge: {{ cpu: {cpu}, nice: {nice} }}");
            }
            (Some(cpu), None) => {
                let _ = writeln!(y, "bridge: {{ cpu: {cpu} }}");
            }
            (None, Some(nice)) => {
                let _ = writeln!(y, "bridge: {{ nice: {nice} }}");
            }
            (None, None) if self.bridge.idle => {
                let _ = writeln!(y, "bridge: {{ policy: auto }}  # SCHED_IDLE with the embedded audit log");
            }
            (None, None) => {}
        }
        let _ = writeln!(y, "uring: {{ entries: {}, sqpoll: {} }}", self.uring.entries, self.uring.sqpoll);
        let _ = writeln!(y, "listen_backlog: {}", self.listen_backlog);
        let _ = writeln!(
            y,
            "limits: {{ connections_per_shard_max: {}, body_bytes_in_flight_max: {} }}",
            self.connections_per_shard_max, self.body_bytes_in_flight_max
        );
        y
    }

    /// The readable report: a summary of the host, each line with its cause and effect,
    /// then the sysctls `--apply` would write and the host commands left to an operator.
    pub fn render_text(&self, facts: &HostFacts) -> String {
        let mut r = String::new();
        let _ = writeln!(r, "gatekeeper tune: {}", summary(facts));
        let _ = writeln!(r);
        for l in &self.lines {
            let _ = writeln!(r, "[{}] {}", l.topic.name(), l.advice);
            let _ = writeln!(r, "    because: {}", l.because);
            let _ = writeln!(r, "    effect:  {}", l.effect);
        }
        if !self.sysctls.is_empty() {
            let _ = writeln!(r, "\nsysctls (`gatekeeper tune --apply` writes these after asking):");
            for s in &self.sysctls {
                let now = s.current.as_deref().map_or(String::new(), |c| format!("   # now {c}"));
                let _ = writeln!(r, "  {}{now}", s.command());
            }
        }
        if !self.commands.is_empty() {
            let _ = writeln!(r, "\nhost changes (never made by gatekeeper; run them yourself if you agree):");
            for c in &self.commands {
                let _ = writeln!(r, "  {c}");
            }
        }
        let _ = writeln!(r, "\nconfig fragment (`gatekeeper tune --emit-config`):");
        for l in self.config_yaml().lines() {
            let _ = writeln!(r, "  {l}");
        }
        r
    }
}

/// One line on the host: CPUs, kernel, io_uring, memory, cgroup.
fn summary(f: &HostFacts) -> String {
    let mut parts = Vec::new();
    match &f.cpus.online {
        Some(online) => parts.push(format!("{} CPU(s) online ({})", online.len(), format_list(online))),
        None => parts.push("CPUs unknown".to_string()),
    }
    if !f.cpus.cores.is_empty() {
        parts.push(format!("{} core(s)", f.cpus.cores.len()));
    }
    if f.cpus.numa_nodes.len() > 1 {
        parts.push(format!("{} NUMA nodes", f.cpus.numa_nodes.len()));
    }
    parts.push(f.kernel.map_or("kernel unknown".to_string(), |k| format!("kernel {k}")));
    parts.push(match &f.syscalls.uring {
        Some(u) if u.available => "io_uring yes".to_string(),
        Some(_) => "io_uring no".to_string(),
        None => "io_uring not probed".to_string(),
    });
    if let Some(m) = f.memory.total_bytes {
        parts.push(format!("{} MiB memory", m >> 20));
    }
    if let Some(q) = f.cgroup.cpu_quota_cpus {
        parts.push(format!("cgroup quota {q:.2} CPUs"));
    }
    if let Some(c) = &f.cgroup.cpuset {
        parts.push(format!("cpuset {}", format_list(c)));
    }
    parts.join(", ")
}
