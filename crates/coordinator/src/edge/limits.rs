//! Per-address limits: connections at once, and new connections per second
//! (a token bucket), over both ports. IPv6 addresses count by their /64, the
//! block one subscriber usually holds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

/// Why an address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    TooMany,
    TooFast,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::TooMany => "per_ip_connections",
            Refused::TooFast => "per_ip_rate",
        }
    }
}

#[derive(Debug)]
pub(crate) struct IpLimits {
    max_at_once: usize,
    per_s: f64,
    burst: f64,
    slots: Mutex<HashMap<IpAddr, Slot>>,
}

#[derive(Debug)]
struct Slot {
    active: usize,
    tokens: f64,
    at: Instant,
}

/// Holds one of an address's connections; gives it back when dropped.
#[derive(Debug)]
pub(crate) struct IpPermit {
    limits: Arc<IpLimits>,
    key: IpAddr,
}

/// Idle entries are swept once the table holds more than this.
const SWEEP_ABOVE: usize = 4096;

impl IpLimits {
    /// `per_s` new connections a second (0: no limit), bursts of twice that.
    pub fn new(max_at_once: usize, per_s: u32) -> Arc<IpLimits> {
        let per_s = f64::from(per_s);
        Arc::new(IpLimits {
            max_at_once: max_at_once.max(1),
            per_s,
            burst: (2.0 * per_s).max(1.0),
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a connection for `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<IpPermit, Refused> {
        let key = key_of(ip);
        let Ok(mut slots) = self.slots.lock() else { return Err(Refused::TooMany) };
        if slots.len() > SWEEP_ABOVE {
            let full = self.burst;
            let per_s = self.per_s;
            slots.retain(|_, s| s.active > 0 || refill(s, per_s, full, now) < full);
        }
        let slot = slots.entry(key).or_insert(Slot { active: 0, tokens: self.burst, at: now });
        if slot.active >= self.max_at_once {
            return Err(Refused::TooMany);
        }
        if self.per_s > 0.0 {
            slot.tokens = refill(slot, self.per_s, self.burst, now);
            slot.at = now;
            if slot.tokens < 1.0 {
                return Err(Refused::TooFast);
            }
            slot.tokens -= 1.0;
        }
        slot.active += 1;
        Ok(IpPermit { limits: Arc::clone(self), key })
    }
}

/// The bucket's level at `now`.
fn refill(slot: &Slot, per_s: f64, full: f64, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(slot.at).as_secs_f64();
    (slot.tokens + elapsed * per_s).min(full)
}

/// The address a limit applies to: IPv4 as it is, IPv6 by its /64.
fn key_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        v4 => v4,
    }
}

impl Drop for IpPermit {
    fn drop(&mut self) {
        if let Ok(mut slots) = self.limits.slots.lock()
            && let Some(slot) = slots.get_mut(&self.key)
        {
            slot.active = slot.active.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    #[test]
    fn connections_at_once_are_capped_per_address() {
        let limits = IpLimits::new(2, 0);
        let now = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = limits.admit(a, now).unwrap();
        let _p2 = limits.admit(a, now).unwrap();
        assert_eq!(limits.admit(a, now).unwrap_err(), Refused::TooMany);
        let _other = limits.admit(b, now).unwrap();
        drop(p1);
        let _p3 = limits.admit(a, now).unwrap();
    }

    #[test]
    fn new_connections_are_rate_limited_with_a_burst() {
        let limits = IpLimits::new(1000, 10);
        let start = Instant::now();
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8::2".parse().unwrap();
        let mut held = Vec::new();
        for _ in 0..20 {
            held.push(limits.admit(ip, start).unwrap());
        }
        // The burst is spent, by the whole /64.
        assert_eq!(limits.admit(same_64, start).unwrap_err(), Refused::TooFast);
        let later = start + Duration::from_millis(100);
        held.push(limits.admit(ip, later).unwrap());
        assert_eq!(limits.admit(ip, later).unwrap_err(), Refused::TooFast);
        drop(held);
        // Closing connections gives back no rate.
        assert_eq!(limits.admit(ip, later).unwrap_err(), Refused::TooFast);
    }
}
