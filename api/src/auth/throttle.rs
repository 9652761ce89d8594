//! Login throttling: how many wrong secrets a login, and a client address, may send before
//! their attempts are refused for a while, and how much password hashing one address may
//! hold at once.
//!
//! Failures are counted, not attempts: an integration that signs in often with the right
//! secret is never slowed down, and a guesser is, whichever login or address it uses. The
//! counting is governor's keyed GCRA (a token bucket per key): a key may fail
//! `*_BURST` times in a row, then once per `*_REPLENISH`. Once a key's bucket is empty it
//! is *blocked* until the next failure would be allowed again, and a blocked key's attempts
//! are refused (429) before anything is checked: a throttled guess costs no hash, and the
//! right secret is refused too while blocked (otherwise a guesser would learn from a
//! success that it had found the secret, and the block would not slow it down).
//!
//! The hashing cap is shared fairly: one address holds at most
//! [`PASSWORD_CHECKS_PER_ADDRESS_MAX`] of the [`crate::auth::PASSWORD_CHECKS_IN_FLIGHT_MAX`]
//! permits, so a flood from one address leaves the others free for everyone else.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// Wrong secrets in a row one login may get before it is throttled.
pub const LOGIN_FAILURES_PER_LOGIN_BURST: u32 = 10;
/// Once throttled, a login may fail once more per this period (120 an hour).
pub const LOGIN_FAILURE_REPLENISH_PER_LOGIN: Duration = Duration::from_secs(30);
/// Wrong secrets in a row one client address may send (whichever logins they name)
/// before it is throttled: more than one login's, for offices behind one NAT address.
pub const LOGIN_FAILURES_PER_ADDRESS_BURST: u32 = 30;
/// Once throttled, an address may fail once more per this period (720 an hour).
pub const LOGIN_FAILURE_REPLENISH_PER_ADDRESS: Duration = Duration::from_secs(5);
/// Password checks one client address may have running at once; its further attempts
/// are refused (429) until one ends, rather than taking the permits everyone shares.
pub const PASSWORD_CHECKS_PER_ADDRESS_MAX: usize = 2;
/// Keys a limiter keeps before stale ones are dropped early (each is a few dozen bytes;
/// the periodic purge drops them anyway).
const KEYS_KEPT_MAX: usize = 100_000;

/// The address a throttle counts by: an IPv4 address, or an IPv6 /64 (one subscriber's
/// network, which hands its hosts any address within it). IPv4 clients reaching an IPv6
/// socket count as their IPv4 address. An unknown peer counts as one address of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddressKey(IpAddr);

impl AddressKey {
    pub fn of(peer: Option<IpAddr>) -> Self {
        let ip = match peer {
            None => IpAddr::from([0u8; 16]),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let mut octets = v6.octets();
                    octets[8..].fill(0);
                    IpAddr::from(octets)
                }
            },
            Some(v4) => v4,
        };
        AddressKey(ip)
    }
}

/// Why an attempt was refused before its secret was checked.
#[derive(Debug, PartialEq, Eq)]
pub struct Throttled {
    /// How long until an attempt may be made again.
    pub retry_after: Duration,
}

type FailureLimiter<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// Failures counted under one kind of key, and the keys blocked for now.
struct FailureLimit<K: Hash + Eq + Clone> {
    failures: FailureLimiter<K>,
    /// When each key whose bucket ran empty may try again.
    blocked: Mutex<HashMap<K, Instant>>,
    replenish: Duration,
}

impl<K: Hash + Eq + Clone> FailureLimit<K> {
    fn new(burst: u32, replenish: Duration) -> Self {
        let burst = NonZeroU32::new(burst).expect("a burst of at least one");
        let quota = Quota::with_period(replenish).expect("a non-zero period").allow_burst(burst);
        FailureLimit {
            failures: RateLimiter::dashmap(quota).with_middleware::<StateInformationMiddleware>(),
            blocked: Mutex::new(HashMap::new()),
            replenish,
        }
    }

    /// How long `key` stays blocked, if it is.
    fn blocked_for(&self, key: &K, now: Instant) -> Option<Duration> {
        let mut blocked = self.blocked.lock().expect("throttle lock");
        match blocked.get(key) {
            Some(until) if *until > now => Some(*until - now),
            Some(_) => {
                blocked.remove(key);
                None
            }
            None => None,
        }
    }

    /// Counts one failure of `key`, blocking it when its bucket is empty.
    fn failed(&self, key: &K, now: Instant) {
        let until = match self.failures.check_key(key) {
            Ok(state) if state.remaining_burst_capacity() > 0 => return,
            // That was the last failure the bucket held: the next one is allowed when a
            // cell has come back, which is one period from now at the latest.
            Ok(_) => now + self.replenish,
            // Failures racing each other past an empty bucket.
            Err(not_until) => now + not_until.wait_time_from(self.failures.clock().now()),
        };
        let mut blocked = self.blocked.lock().expect("throttle lock");
        let entry = blocked.entry(key.clone()).or_insert(until);
        *entry = (*entry).max(until);
        if blocked.len() > KEYS_KEPT_MAX {
            blocked.retain(|_, until| *until > now);
        }
        drop(blocked);
        if self.failures.len() > KEYS_KEPT_MAX {
            self.failures.retain_recent();
        }
    }

    fn forget_stale(&self, now: Instant) {
        self.failures.retain_recent();
        self.failures.shrink_to_fit();
        self.blocked.lock().expect("throttle lock").retain(|_, until| *until > now);
    }
}

/// The throttle of every login that checks a password or an API token.
pub struct LoginThrottle {
    logins: FailureLimit<String>,
    addresses: FailureLimit<AddressKey>,
    /// Password checks running per address.
    hashing: Arc<Mutex<HashMap<AddressKey, usize>>>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle {
            logins: FailureLimit::new(LOGIN_FAILURES_PER_LOGIN_BURST, LOGIN_FAILURE_REPLENISH_PER_LOGIN),
            addresses: FailureLimit::new(LOGIN_FAILURES_PER_ADDRESS_BURST, LOGIN_FAILURE_REPLENISH_PER_ADDRESS),
            hashing: Arc::default(),
        }
    }
}

impl LoginThrottle {
    /// Whether an attempt for `login` from `address` may be checked now.
    pub fn admit(&self, login: &str, address: AddressKey) -> Result<(), Throttled> {
        let now = Instant::now();
        let waits = [self.logins.blocked_for(&login.to_owned(), now), self.addresses.blocked_for(&address, now)];
        match waits.into_iter().flatten().max() {
            Some(retry_after) => Err(Throttled { retry_after }),
            None => Ok(()),
        }
    }

    /// Counts a wrong secret against the login and the address.
    pub fn failed(&self, login: &str, address: AddressKey) {
        let now = Instant::now();
        self.logins.failed(&login.to_owned(), now);
        self.addresses.failed(&address, now);
    }

    /// One of `address`'s shares of the password checks, or `None` when it holds all of
    /// its shares already.
    pub fn hashing_share(&self, address: AddressKey) -> Option<HashingShare> {
        let mut running = self.hashing.lock().expect("throttle lock");
        let count = running.entry(address).or_insert(0);
        if *count >= PASSWORD_CHECKS_PER_ADDRESS_MAX {
            return None;
        }
        *count += 1;
        Some(HashingShare { address, running: self.hashing.clone() })
    }

    /// Drops what no longer holds anything back; called now and then by the auth purger.
    pub fn forget_stale(&self) {
        let now = Instant::now();
        self.logins.forget_stale(now);
        self.addresses.forget_stale(now);
    }
}

/// A password check counted against its address until dropped.
pub struct HashingShare {
    address: AddressKey,
    running: Arc<Mutex<HashMap<AddressKey, usize>>>,
}

impl Drop for HashingShare {
    fn drop(&mut self) {
        let mut running = self.running.lock().expect("throttle lock");
        if let Some(count) = running.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                running.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str) -> AddressKey {
        AddressKey::of(Some(text.parse().unwrap()))
    }

    #[test]
    fn a_login_is_blocked_after_its_burst_of_failures_and_others_are_not() {
        let throttle = LoginThrottle::default();
        let here = address("192.0.2.1");
        for _ in 0..LOGIN_FAILURES_PER_LOGIN_BURST {
            assert_eq!(throttle.admit("ann", here), Ok(()));
            throttle.failed("ann", here);
        }
        let refused = throttle.admit("ann", here).unwrap_err();
        assert!(refused.retry_after > Duration::ZERO && refused.retry_after <= LOGIN_FAILURE_REPLENISH_PER_LOGIN);
        assert_eq!(throttle.admit("ann", address("198.51.100.7")).map_err(|_| ()), Err(()), "any address");
        assert_eq!(throttle.admit("bob", address("198.51.100.7")), Ok(()), "another login elsewhere");
        assert_eq!(throttle.admit("bob", here), Ok(()), "the address has failures left");
    }

    #[test]
    fn an_address_is_blocked_after_its_burst_whatever_the_logins() {
        let throttle = LoginThrottle::default();
        let here = address("192.0.2.1");
        for i in 0..LOGIN_FAILURES_PER_ADDRESS_BURST {
            let login = format!("user{i}");
            assert_eq!(throttle.admit(&login, here), Ok(()));
            throttle.failed(&login, here);
        }
        assert!(throttle.admit("fresh", here).is_err());
        assert_eq!(throttle.admit("fresh", address("192.0.2.2")), Ok(()));
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(address("2001:db8:1:2:aaaa::1"), address("2001:db8:1:2:bbbb::2"));
        assert_ne!(address("2001:db8:1:2::1"), address("2001:db8:1:3::1"));
        assert_eq!(address("::ffff:192.0.2.1"), address("192.0.2.1"));
        assert_ne!(AddressKey::of(None), address("192.0.2.1"));
    }

    #[test]
    fn an_address_holds_a_bounded_share_of_the_password_checks() {
        let throttle = LoginThrottle::default();
        let (here, there) = (address("192.0.2.1"), address("192.0.2.2"));
        let shares: Vec<_> =
            (0..PASSWORD_CHECKS_PER_ADDRESS_MAX).map(|_| throttle.hashing_share(here).unwrap()).collect();
        assert!(throttle.hashing_share(here).is_none());
        assert!(throttle.hashing_share(there).is_some());
        drop(shares);
        assert!(throttle.hashing_share(here).is_some());
        assert!(throttle.hashing.lock().unwrap().is_empty(), "nothing kept for idle addresses");
    }
}
