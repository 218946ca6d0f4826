//! Connections per client address: at most `limit` at once from one IP.
//!
//! One map per listener, behind a mutex held only for an increment or a decrement
//! (O(1)); an address leaves the map when its last connection ends, so the map holds
//! only addresses with connections open. IPv4-mapped IPv6 addresses count as the IPv4
//! address they carry, so a dual-stack listener cannot be used to double the limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// The open connections of each client address of one listener.
#[derive(Debug)]
pub struct PerIp {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its address until dropped.
#[derive(Debug)]
pub struct PerIpSlot {
    counter: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    pub fn new(limit: usize) -> Arc<PerIp> {
        Arc::new(PerIp {
            limit,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A poisoned lock only means a panic elsewhere; the counts stay right.
    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for one more connection from `ip`, or `None` at the limit.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<PerIpSlot> {
        let ip = ip.to_canonical();
        let mut open = self.lock();
        let n = open.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(PerIpSlot {
            counter: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip` now.
    pub fn open(&self, ip: IpAddr) -> usize {
        self.lock().get(&ip.to_canonical()).copied().unwrap_or(0)
    }

    /// Addresses with a connection open.
    pub fn addresses(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        let mut open = self.counter.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_holds_per_address_and_frees_on_drop() {
        let c = PerIp::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let s1 = c.try_acquire(a).unwrap();
        let s2 = c.try_acquire(a).unwrap();
        assert!(c.try_acquire(a).is_none());
        // Another address is counted on its own.
        let s3 = c.try_acquire(b).unwrap();
        assert_eq!((c.open(a), c.open(b)), (2, 1));
        drop(s1);
        let s4 = c.try_acquire(a).unwrap();
        drop((s2, s3, s4));
        assert_eq!(
            c.addresses(),
            0,
            "an address leaves with its last connection"
        );
    }

    #[test]
    fn a_mapped_ipv4_address_is_the_ipv4_address() {
        let c = PerIp::new(1);
        let _s = c.try_acquire("::ffff:192.0.2.9".parse().unwrap()).unwrap();
        assert!(c.try_acquire("192.0.2.9".parse().unwrap()).is_none());
        assert_eq!(c.open("192.0.2.9".parse().unwrap()), 1);
    }

    #[test]
    fn slots_across_threads_add_up() {
        let c = PerIp::new(1000);
        let ip: IpAddr = "198.51.100.3".parse().unwrap();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..500 {
                        let slot = c.try_acquire(ip).unwrap();
                        drop(slot);
                    }
                });
            }
        });
        assert_eq!(c.addresses(), 0);
    }
}
