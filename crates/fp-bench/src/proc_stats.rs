//! CPU time and memory of processes, read from `/proc` (Linux only).

use std::path::Path;

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} has an unexpected shape")]
    Shape { path: String },
}

fn read(path: &str) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|source| ProcError::Read {
        path: path.to_owned(),
        source,
    })
}

/// CPU counters of one process, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CpuTicks {
    /// utime + stime of the process itself.
    pub own: u64,
    /// cutime + cstime: its children that exited and were waited for (PostgreSQL's backends).
    pub children: u64,
}

/// Fields of `/proc/<pid>/stat` after the command name: the name may hold spaces and parentheses,
/// so the split starts after its last `)`.
fn stat_fields(pid: u32) -> Result<(String, Vec<String>), ProcError> {
    let path = format!("/proc/{pid}/stat");
    let text = read(&path)?;
    let open = text.find('(');
    let close = text.rfind(')');
    let (Some(open), Some(close)) = (open, close) else {
        return Err(ProcError::Shape { path });
    };
    let comm = text[open + 1..close].to_owned();
    let rest = text[close + 1..]
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    Ok((comm, rest))
}

fn field(fields: &[String], index: usize, pid: u32) -> Result<u64, ProcError> {
    fields
        .get(index)
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| ProcError::Shape {
            path: format!("/proc/{pid}/stat"),
        })
}

/// `man 5 proc`: fields 14-17 are utime, stime, cutime, cstime; field 3 (state) is index 0 here.
pub fn cpu_ticks(pid: u32) -> Result<CpuTicks, ProcError> {
    let (_, fields) = stat_fields(pid)?;
    Ok(CpuTicks {
        own: field(&fields, 11, pid)? + field(&fields, 12, pid)?,
        children: field(&fields, 13, pid)? + field(&fields, 14, pid)?,
    })
}

/// The parent's pid (field 4).
pub fn parent_pid(pid: u32) -> Result<u32, ProcError> {
    let (_, fields) = stat_fields(pid)?;
    let parent = field(&fields, 1, pid)?;
    u32::try_from(parent).map_err(|_| ProcError::Shape {
        path: format!("/proc/{pid}/stat"),
    })
}

/// A `kB` line of `/proc/<pid>/status`, e.g. `VmHWM` (peak resident set) or `VmRSS`.
pub fn status_kib(pid: u32, key: &str) -> Result<u64, ProcError> {
    let path = format!("/proc/{pid}/status");
    let text = read(&path)?;
    text.lines()
        .find_map(|line| {
            let value = line.strip_prefix(key)?.strip_prefix(':')?;
            value.trim().trim_end_matches("kB").trim().parse().ok()
        })
        .ok_or(ProcError::Shape { path })
}

/// Pids of every process whose command name is `comm` (e.g. `beam.smp`, `postgres`).
pub fn pids_named(comm: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            stat_fields(*pid)
                .map(|(name, _)| name == comm)
                .unwrap_or(false)
        })
        .collect()
}

/// Where a process runs: on this machine beside us, or in a container (another PID namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Host,
    Container,
}

/// A process's placement, from its PID namespace against ours. A namespace we may not read (a
/// process of another user, when not root) counts as ours: containers run as root here.
fn placement_of(pid: u32) -> Placement {
    let namespace = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    match (namespace("self"), namespace(&pid.to_string())) {
        (Some(ours), Some(theirs)) if ours != theirs => Placement::Container,
        _ => Placement::Host,
    }
}

/// CPU of a whole server made of many processes (PostgreSQL: the postmaster and its backends)
/// running on the host, or of every such server in containers together (the nodes of a RabbitMQ
/// cluster). Backends that exited since are in the postmaster's `children` ticks, so the total
/// only grows.
pub fn server_ticks(comm: &str, placement: Placement) -> u64 {
    let pids: Vec<u32> = pids_named(comm)
        .into_iter()
        .filter(|pid| placement_of(*pid) == placement)
        .collect();
    pids.iter()
        .filter_map(|pid| {
            let ticks = cpu_ticks(*pid).ok()?;
            // Count children ticks only for the root, whose children are all of this server.
            let is_root = parent_pid(*pid)
                .map(|parent| !pids.contains(&parent))
                .unwrap_or(false);
            Some(ticks.own + if is_root { ticks.children } else { 0 })
        })
        .sum()
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux this runs on). The workspace
/// forbids `unsafe`, which a direct `sysconf` call would need.
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|ticks| *ticks > 0)
        .unwrap_or(100)
}

/// What the report says about the machine a run was made on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub memory_mib: u64,
    pub kernel: String,
    /// The kernel's writeback settings, `name=value` each: they decide when the dirty pages of
    /// the database's and the broker's files are written out, and a burst of that writeback stalled
    /// the `fsync`s every commit and confirm waits on (bench/README.md, "a burst of writeback").
    pub writeback: String,
}

/// The `vm.*` settings behind the kernel's writeback of dirty pages.
const WRITEBACK_SETTINGS: [&str; 4] = [
    "dirty_background_bytes",
    "dirty_background_ratio",
    "dirty_expire_centisecs",
    "dirty_writeback_centisecs",
];

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let memory_mib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib / 1024);
    Machine {
        cpu_model,
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        memory_mib,
        kernel: std::fs::read_to_string(Path::new("/proc/sys/kernel/osrelease"))
            .map(|text| text.trim().to_owned())
            .unwrap_or_default(),
        writeback: writeback_settings(Path::new("/proc/sys/vm")),
    }
}

/// `vm.<name>=<value>` for each writeback setting under `vm` (`?` where it cannot be read).
fn writeback_settings(vm: &Path) -> String {
    WRITEBACK_SETTINGS
        .iter()
        .map(|name| {
            let value = std::fs::read_to_string(vm.join(name))
                .map_or_else(|_| "?".to_owned(), |text| text.trim().to_owned());
            format!("vm.{name}={value}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let pid = std::process::id();
        let ticks = cpu_ticks(pid).expect("own stat");
        // Burn a little CPU so the counter cannot stay below what was read.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_ticks(pid).expect("own stat").own >= ticks.own);
        assert!(status_kib(pid, "VmHWM").expect("VmHWM") > 0);
        assert_eq!(
            parent_pid(pid).ok(),
            Some(std::os::unix::process::parent_id())
        );
        assert!(clock_ticks_per_second() > 0);
        assert_eq!(placement_of(pid), Placement::Host);
        assert_eq!(
            placement_of(std::os::unix::process::parent_id()),
            Placement::Host
        );
    }

    #[test]
    fn names_each_writeback_setting_with_its_value() {
        let vm = std::env::temp_dir().join(format!("fp-bench-vm-{}", std::process::id()));
        std::fs::create_dir_all(&vm).expect("scratch dir");
        std::fs::write(vm.join("dirty_background_bytes"), "16777216\n").expect("write");
        std::fs::write(vm.join("dirty_background_ratio"), "10\n").expect("write");
        std::fs::write(vm.join("dirty_expire_centisecs"), "3000\n").expect("write");
        let settings = writeback_settings(&vm);
        std::fs::remove_dir_all(&vm).expect("clean up");
        assert_eq!(
            settings,
            "vm.dirty_background_bytes=16777216 vm.dirty_background_ratio=10 \
             vm.dirty_expire_centisecs=3000 vm.dirty_writeback_centisecs=?"
        );
    }
}
