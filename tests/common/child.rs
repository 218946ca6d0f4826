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
