//! A cap on deliveries in flight to one endpoint, so a slow or hanging endpoint holds at most its
//! own slots and never the slots every other tenant needs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct EndpointLimits {
    per_endpoint: usize,
    semaphores: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl EndpointLimits {
    pub fn new(per_endpoint: usize) -> Self {
        EndpointLimits {
            per_endpoint,
            semaphores: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for `url`, or `None` when the endpoint is at its cap (the caller then defers the job
    /// rather than waiting, which would hold a prefetch slot).
    pub fn try_acquire(&self, url: &str) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut semaphores = self
                .semaphores
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            semaphores
                .entry(url.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_endpoint)))
                .clone()
        };
        semaphore.try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_endpoint_has_its_own_cap() {
        let limits = EndpointLimits::new(2);
        let first = limits.try_acquire("https://slow.example/");
        let second = limits.try_acquire("https://slow.example/");
        assert!(first.is_some() && second.is_some());
        assert!(limits.try_acquire("https://slow.example/").is_none());
        assert!(limits.try_acquire("https://fast.example/").is_some());
        drop(first);
        assert!(limits.try_acquire("https://slow.example/").is_some());
    }
}
