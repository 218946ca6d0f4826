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

/// Starts `program` with `args` on `count` listening TCP sockets on 127.0.0.1, bound to
/// ports the kernel picked, as its descriptors 3, 4, ... (`tests/support/listen_fds.py`
/// binds them, and sets LISTEN_FDS and LISTEN_PID for servers that take sockets by
/// systemd's socket activation). `configure` gets the ports before the program starts,
/// to write its config; stdout and stderr go to `log`. No port is ever free between
/// being picked and being listened on, so parallel tests never race for one.
pub fn spawn_on_listeners(
    count: usize,
    program: &std::path::Path,
    args: &[&std::ffi::OsStr],
    log: &std::path::Path,
    configure: impl FnOnce(&[u16]),
) -> Result<(Child, Vec<u16>), String> {
    use std::io::Write;
    let ports_path = log.with_extension("ports");
    let out = std::fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut child = Command::new(super::net::PYTHON)
        .arg(super::support_file("listen_fds.py"))
        .arg(&ports_path)
        .arg(count.to_string())
        .arg("--")
        .arg(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("spawn {} listen_fds.py: {e}", super::net::PYTHON))?;
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let ports = loop {
        let read = std::fs::read_to_string(&ports_path).unwrap_or_default();
        let ports: Vec<u16> = read
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if ports.len() == count {
            break ports;
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("listen_fds.py exited ({st}):\n{}", log_text()));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no ports from listen_fds.py:\n{}", log_text()));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    configure(&ports);
    // Go: the program's config names the ports now.
    let mut stdin = child.stdin.take().expect("piped stdin");
    if let Err(e) = stdin.write_all(b"go\n") {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("listen_fds.py gone: {e}\n{}", log_text()));
    }
    Ok((child, ports))
}
