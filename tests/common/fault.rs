//! A fault-injecting TCP relay: it sits between two real peers on 127.0.0.1 and, per
//! connection, forwards bytes unchanged until a trigger point in one direction, then
//! cuts the connection, stalls that direction, or slows it to a trickle.
//!
//! Each accepted connection takes the next [`Plan`] from the relay's queue (an empty
//! queue means pass-through), so a test decides which of several connections a fault
//! hits. Triggers are byte offsets or the n-th occurrence of a byte pattern in one
//! direction (a protocol step: `b"RCPT TO"`, `b"\r\n.\r\n"`, `b"BODY[] {"`), so the peers
//! must speak in the clear through the relay.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which way bytes flow through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// From the connecting side to the target (a client's commands).
    ToTarget,
    /// From the target back (a server's replies).
    ToClient,
}

/// Where in one direction's byte stream the fault starts.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// After this many bytes have been forwarded.
    Offset(usize),
    /// After the end of the `nth` (1-based) occurrence of the pattern, plus `extra` bytes.
    After {
        pattern: Vec<u8>,
        nth: usize,
        extra: usize,
    },
    /// After the end of the line (its LF) holding the first occurrence of the pattern.
    Line(Vec<u8>),
}

impl Trigger {
    pub fn after(pattern: &str) -> Trigger {
        Trigger::After {
            pattern: pattern.as_bytes().to_vec(),
            nth: 1,
            extra: 0,
        }
    }

    pub fn nth(pattern: &str, nth: usize) -> Trigger {
        Trigger::After {
            pattern: pattern.as_bytes().to_vec(),
            nth,
            extra: 0,
        }
    }

    pub fn after_plus(pattern: &str, extra: usize) -> Trigger {
        Trigger::After {
            pattern: pattern.as_bytes().to_vec(),
            nth: 1,
            extra,
        }
    }

    pub fn line(pattern: &str) -> Trigger {
        Trigger::Line(pattern.as_bytes().to_vec())
    }

    /// The absolute offset of the fault in `seen` (everything this direction carried so
    /// far), once it is known.
    fn position(&self, seen: &[u8]) -> Option<usize> {
        match self {
            Trigger::Offset(n) => Some(*n),
            Trigger::After {
                pattern,
                nth,
                extra,
            } => {
                let mut found = 0;
                let mut from = 0;
                while let Some(i) = find(&seen[from..], pattern) {
                    found += 1;
                    from += i + pattern.len();
                    if found == *nth {
                        return Some(from + extra);
                    }
                }
                None
            }
            Trigger::Line(pattern) => {
                let at = find(seen, pattern)? + pattern.len();
                let lf = seen[at..].iter().position(|&b| b == b'\n')?;
                Some(at + lf + 1)
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What happens at the trigger point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Both directions are closed (as a reset network or a crashed peer would).
    Cut,
    /// Nothing more is delivered in this direction; the connection stays open.
    Stall,
    /// One byte per interval in this direction from then on.
    Slow(Duration),
}

/// The fault for one connection.
#[derive(Debug, Clone)]
pub struct Plan {
    pub dir: Dir,
    pub trigger: Trigger,
    pub action: Action,
}

impl Plan {
    pub fn new(dir: Dir, trigger: Trigger, action: Action) -> Plan {
        Plan {
            dir,
            trigger,
            action,
        }
    }
}

struct Shared {
    plans: Mutex<VecDeque<Option<Plan>>>,
    accepted: AtomicUsize,
    /// Faults whose trigger point was reached.
    fired: AtomicUsize,
    open: AtomicUsize,
    stop: AtomicBool,
    /// Per connection, in accept order: the bytes delivered to the target and to the
    /// client.
    carried: Mutex<Vec<[Vec<u8>; 2]>>,
}

/// A running relay on 127.0.0.1 (port 0, then reported in `port`).
pub struct FaultRelay {
    pub port: u16,
    shared: Arc<Shared>,
}

impl FaultRelay {
    /// Relays every connection to 127.0.0.1:`target`.
    pub fn start(target: u16) -> FaultRelay {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind fault relay");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            plans: Mutex::new(VecDeque::new()),
            accepted: AtomicUsize::new(0),
            fired: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            carried: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let index = s.accepted.fetch_add(1, Ordering::SeqCst);
                s.carried.lock().unwrap().push([Vec::new(), Vec::new()]);
                let plan = s.plans.lock().unwrap().pop_front().flatten();
                let s2 = s.clone();
                std::thread::spawn(move || relay_one(client, target, plan, index, s2));
            }
        });
        FaultRelay { port, shared }
    }

    /// The next connection gets `plan`; later ones the plans pushed after it.
    pub fn push(&self, plan: Plan) {
        self.shared.plans.lock().unwrap().push_back(Some(plan));
    }

    /// The next connection is relayed unchanged (keeps a place in the queue).
    pub fn push_pass(&self) {
        self.shared.plans.lock().unwrap().push_back(None);
    }

    /// Forgets plans no connection took.
    pub fn clear(&self) {
        self.shared.plans.lock().unwrap().clear();
    }

    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    pub fn fired(&self) -> usize {
        self.shared.fired.load(Ordering::SeqCst)
    }

    /// What connection `index` (0-based, in accept order) delivered so far: to the
    /// target, and back to the client.
    pub fn carried(&self, index: usize) -> (Vec<u8>, Vec<u8>) {
        let c = self.shared.carried.lock().unwrap();
        (c[index][0].clone(), c[index][1].clone())
    }

    /// Connections the relay still carries (both ends open).
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }
}

impl Drop for FaultRelay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn relay_one(
    client: TcpStream,
    target: u16,
    plan: Option<Plan>,
    index: usize,
    shared: Arc<Shared>,
) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    shared.open.fetch_add(1, Ordering::SeqCst);
    let ends = Arc::new([client.try_clone().unwrap(), server.try_clone().unwrap()]);
    let close_all = move || {
        for e in ends.iter() {
            let _ = e.shutdown(Shutdown::Both);
        }
    };
    let up_plan = plan.clone().filter(|p| p.dir == Dir::ToTarget);
    let down_plan = plan.filter(|p| p.dir == Dir::ToClient);
    let (c_read, s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let close_up = close_all.clone();
    let shared_up = shared.clone();
    let up = std::thread::spawn(move || {
        pump(c_read, s_write, up_plan, (index, 0), &shared_up);
        close_up();
    });
    pump(server, client, down_plan, (index, 1), &shared);
    close_all();
    let _ = up.join();
    shared.open.fetch_sub(1, Ordering::SeqCst);
}

/// Copies `from` to `to` until EOF or an error, applying `plan` at its trigger point.
/// `record`: (connection, direction) in [`Shared::carried`].
fn pump(
    mut from: TcpStream,
    to: TcpStream,
    plan: Option<Plan>,
    record: (usize, usize),
    shared: &Shared,
) {
    let mut to = Recorded { to, record, shared };
    let mut seen = Vec::new();
    let mut forwarded = 0usize;
    let mut buf = [0u8; 16 * 1024];
    let mut fault: Option<Action> = None;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        match fault {
            Some(Action::Stall) => continue,
            Some(Action::Slow(every)) => {
                if trickle(&mut to, chunk, every).is_err() {
                    return;
                }
                continue;
            }
            Some(Action::Cut) => return,
            None => {}
        }
        let Some(p) = &plan else {
            if to.write_all(chunk).is_err() {
                return;
            }
            continue;
        };
        seen.extend_from_slice(chunk);
        let at = p.trigger.position(&seen);
        match at {
            Some(at) if at < forwarded + n => {
                let keep = at.saturating_sub(forwarded);
                if to.write_all(&chunk[..keep]).is_err() {
                    return;
                }
                shared.fired.fetch_add(1, Ordering::SeqCst);
                fault = Some(p.action);
                match p.action {
                    Action::Cut => return,
                    Action::Stall => {}
                    Action::Slow(every) => {
                        if trickle(&mut to, &chunk[keep..], every).is_err() {
                            return;
                        }
                    }
                }
            }
            _ => {
                if to.write_all(chunk).is_err() {
                    return;
                }
                // An exact hit at the chunk's end fires before the next byte.
                if at == Some(forwarded + n) {
                    shared.fired.fetch_add(1, Ordering::SeqCst);
                    fault = Some(p.action);
                    if p.action == Action::Cut {
                        return;
                    }
                }
            }
        }
        forwarded += n;
    }
}

/// The relay's write side, which notes what it delivered.
struct Recorded<'a> {
    to: TcpStream,
    record: (usize, usize),
    shared: &'a Shared,
}

impl Recorded<'_> {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.to.write_all(bytes)?;
        let (conn, dir) = self.record;
        self.shared.carried.lock().unwrap()[conn][dir].extend_from_slice(bytes);
        Ok(())
    }
}

fn trickle(to: &mut Recorded<'_>, bytes: &[u8], every: Duration) -> std::io::Result<()> {
    for b in bytes {
        std::thread::sleep(every);
        to.write_all(std::slice::from_ref(b))?;
    }
    Ok(())
}
