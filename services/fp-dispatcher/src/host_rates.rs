//! A bound on this dispatcher's request rate to one destination host, whoever the tenants are, so
//! the platform cannot be aimed at one server as a flood. GCRA per host from `governor`: lock-free,
//! one small state per host seen.

use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

pub struct HostRates {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl HostRates {
    /// `per_second` requests a second to each host on average, `burst` at once after a quiet spell.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        HostRates {
            limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
        }
    }

    /// A permit to send one request to `host` now; `false` when the host is at its rate (the
    /// caller then defers the delivery rather than waiting, which would hold a prefetch slot).
    pub fn try_acquire(&self, host: &str) -> bool {
        self.limiter.check_key(&host.to_owned()).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_host_has_its_own_burst_and_rate() {
        let three = NonZeroU32::new(3).expect("non-zero");
        // One a second: nothing refills within the test.
        let rates = HostRates::new(NonZeroU32::MIN, three);
        for _ in 0..3 {
            assert!(rates.try_acquire("hot.example"));
        }
        assert!(!rates.try_acquire("hot.example"));
        assert!(rates.try_acquire("cool.example"));
    }
}
