//! What the child servers the tests start have in common: the system users they run
//! as, and stopping them.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// (uid, gid) of the system user `name` in /etc/passwd; panics naming the package
/// that should have made it.
pub fn system_user(name: &str, package: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
        .unwrap_or_else(|| panic!("no system user {name:?}: is Debian's {package} installed?"))
}

pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Stops `child` with `signal` (e.g. "TERM", or "INT" for PostgreSQL's fast shutdown),
/// waits up to 10 s, then kills it. Nothing happens if it is gone already.
pub fn stop(child: &mut Option<Child>, signal: &str) {
    let Some(mut c) = child.take() else { return };
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(c.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// The TCP ports process `pid` listens on, in the order of its descriptors (a server
/// that opens its listeners one after another in config order gives them in that
/// order). For servers told to listen on port 0 that do not say which port they got.
pub fn listening_ports(pid: u32) -> Vec<u16> {
    // socket inode -> descriptor number, for the process's sockets.
    let mut inodes = Vec::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            let (Ok(target), Ok(n)) = (
                std::fs::read_link(fd.path()),
                fd.file_name().to_string_lossy().parse::<u32>(),
            ) else {
                continue;
            };
            let target = target.to_string_lossy().to_string();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
            {
                inodes.push((n, inode.to_string()));
            }
        }
    }
    inodes.sort();
    // /proc/net/tcp{,6}: "sl local_address rem_address st ... inode": st 0A is LISTEN.
    let mut listening = std::collections::HashMap::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" {
                let port = f[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok());
                if let Some(port) = port {
                    listening.insert(f[9].to_string(), port);
                }
            }
        }
    }
    inodes
        .iter()
        .filter_map(|(_, inode)| listening.get(inode).copied())
        .collect()
}
