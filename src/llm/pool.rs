//! A pool of endpoints for one provider (several servers, or several keys for one server):
//! each endpoint has its own [`Budget`], in-flight counter and health. A call goes to the
//! healthy endpoint with the fewest calls in flight, round-robin among equals; an endpoint that
//! fails `failure_threshold` times in a row (connection errors and 5xx) is taken out for
//! `cool_down`, then tried again, and taken out again at its first failure until it succeeds.
//!
//! A building block for HTTP providers, not a provider: `T` is whatever the provider needs to
//! reach an endpoint (its URL and credentials).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::budget::Budget;

/// Consecutive failures that take an endpoint out.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// How long an endpoint stays out.
pub const DEFAULT_COOL_DOWN: Duration = Duration::from_secs(30);

/// One endpoint: the provider's data for it, its budget and its health.
pub struct Endpoint<T> {
    /// How to reach it.
    pub data: T,
    /// Its rate budget.
    pub budget: Budget,
    index: usize,
    in_flight: AtomicUsize,
    // A std mutex: held for a few field updates, never across an await.
    health: Mutex<Health>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Health {
    failures: u32,
    down_until: Option<Instant>,
}

impl<T> Endpoint<T> {
    /// Its position in the pool.
    pub fn index(&self) -> usize {
        self.index
    }
    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.health().failures
    }
    /// True while the endpoint is taken out.
    pub fn is_down(&self, now: Instant) -> bool {
        self.health().down_until.is_some_and(|u| u > now)
    }
    fn health(&self) -> Health {
        *self.health.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// `T` may hold credentials, so only the counters are shown.
impl<T> fmt::Debug for Endpoint<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.health();
        f.debug_struct("Endpoint")
            .field("index", &self.index)
            .field("in_flight", &self.in_flight())
            .field("failures", &h.failures)
            .field("down_until", &h.down_until)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// The endpoints of one provider.
#[derive(Debug)]
pub struct EndpointPool<T> {
    endpoints: Vec<Arc<Endpoint<T>>>,
    next: AtomicUsize,
    failure_threshold: u32,
    cool_down: Duration,
}

impl<T> EndpointPool<T> {
    /// A pool of `(data, budget)` endpoints with the default health rules. Panics on an empty
    /// list: a provider always has at least one endpoint.
    pub fn new(endpoints: Vec<(T, Budget)>) -> Self {
        assert!(!endpoints.is_empty(), "an endpoint pool needs at least one endpoint");
        EndpointPool {
            endpoints: endpoints
                .into_iter()
                .enumerate()
                .map(|(index, (data, budget))| {
                    Arc::new(Endpoint {
                        data,
                        budget,
                        index,
                        in_flight: AtomicUsize::new(0),
                        health: Mutex::new(Health::default()),
                    })
                })
                .collect(),
            next: AtomicUsize::new(0),
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            cool_down: DEFAULT_COOL_DOWN,
        }
    }

    /// Takes an endpoint out after `threshold` consecutive failures, for `cool_down`.
    pub fn with_health(mut self, threshold: u32, cool_down: Duration) -> Self {
        self.failure_threshold = threshold.max(1);
        self.cool_down = cool_down;
        self
    }

    /// The endpoints, in configuration order.
    pub fn endpoints(&self) -> &[Arc<Endpoint<T>>] {
        &self.endpoints
    }

    /// Picks the endpoint for one call and counts the call in flight until the lease drops.
    /// When every endpoint is out, the one back soonest is used: the call fails or succeeds
    /// there and the supervisor decides what follows.
    pub fn pick(&self) -> Lease<T> {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = Instant::now();
        let mut best: Option<(&Arc<Endpoint<T>>, usize)> = None;
        for k in 0..n {
            let e = &self.endpoints[(start + k) % n];
            if e.is_down(now) {
                continue;
            }
            let load = e.in_flight();
            if best.is_none_or(|(_, b)| load < b) {
                best = Some((e, load));
            }
        }
        let chosen = match best {
            Some((e, _)) => e,
            None => self.endpoints.iter().min_by_key(|e| e.health().down_until).unwrap_or(&self.endpoints[start]),
        };
        chosen.in_flight.fetch_add(1, Ordering::Relaxed);
        Lease { endpoint: chosen.clone(), threshold: self.failure_threshold, cool_down: self.cool_down }
    }
}

/// One call's hold on an endpoint. Dropping it (also when the call is cancelled) ends the call.
#[derive(Debug)]
pub struct Lease<T> {
    endpoint: Arc<Endpoint<T>>,
    threshold: u32,
    cool_down: Duration,
}

impl<T> Lease<T> {
    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint<T> {
        &self.endpoint
    }

    /// The call worked: the endpoint is healthy.
    pub fn success(&self) {
        let mut h = self.endpoint.health.lock().unwrap_or_else(|e| e.into_inner());
        *h = Health::default();
    }

    /// The call failed in a way that says the endpoint is unwell (connection error, 5xx).
    pub fn failure(&self) {
        let mut h = self.endpoint.health.lock().unwrap_or_else(|e| e.into_inner());
        h.failures = h.failures.saturating_add(1);
        if h.failures >= self.threshold {
            h.down_until = Some(Instant::now() + self.cool_down);
            tracing::warn!(
                endpoint = self.endpoint.index,
                failures = h.failures,
                cool_down_s = self.cool_down.as_secs_f64(),
                "endpoint taken out after repeated failures"
            );
        }
    }
}

impl<T> Drop for Lease<T> {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> EndpointPool<usize> {
        EndpointPool::new((0..n).map(|i| (i, Budget::unlimited())).collect())
    }

    #[test]
    fn round_robin_among_equals() {
        let p = pool(3);
        let picks: Vec<usize> = (0..6).map(|_| p.pick().endpoint().data).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn least_in_flight_first() {
        let p = pool(3);
        let a = p.pick();
        let b = p.pick();
        assert_eq!((a.endpoint().data, b.endpoint().data), (0, 1));
        // 0 and 1 are busy: 2 is chosen whatever the rotation says.
        for _ in 0..3 {
            let c = p.pick();
            assert_eq!(c.endpoint().data, 2);
        }
        drop(a);
        // 0 and 2 are idle, 1 is busy: the next two calls take 0 and 2, in either order.
        let c = p.pick();
        let d = p.pick();
        let mut got = [c.endpoint().data, d.endpoint().data];
        got.sort_unstable();
        assert_eq!(got, [0, 2]);
        assert_eq!(p.endpoints().iter().map(|e| e.in_flight()).collect::<Vec<_>>(), [1, 1, 1]);
        drop((b, c, d));
        assert!(p.endpoints().iter().all(|e| e.in_flight() == 0));
    }

    /// Picks until endpoint `i` comes up (it must be up).
    fn lease_of(p: &EndpointPool<usize>, i: usize) -> Lease<usize> {
        loop {
            let l = p.pick();
            if l.endpoint().data == i {
                return l;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failing_endpoint_is_taken_out_and_retried_later() {
        let p = pool(2).with_health(3, Duration::from_secs(30));
        for _ in 0..2 {
            lease_of(&p, 0).failure();
        }
        assert!(!p.endpoints()[0].is_down(Instant::now()));
        lease_of(&p, 0).failure();
        assert!(p.endpoints()[0].is_down(Instant::now()));
        for _ in 0..5 {
            assert_eq!(p.pick().endpoint().data, 1);
        }
        tokio::time::advance(Duration::from_secs(31)).await;
        let back: Vec<usize> = (0..4).map(|_| p.pick().endpoint().data).collect();
        assert!(back.contains(&0), "{back:?}");
        // On probation: one more failure takes it out again; a success clears it.
        lease_of(&p, 0).failure();
        assert!(p.endpoints()[0].is_down(Instant::now()));
        tokio::time::advance(Duration::from_secs(31)).await;
        lease_of(&p, 0).success();
        assert_eq!(p.endpoints()[0].failures(), 0);
        assert!(!p.endpoints()[0].is_down(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn all_down_still_picks_the_one_back_soonest() {
        let p = pool(2).with_health(1, Duration::from_secs(30));
        // 1 goes out first (back at 30 s), then 0 (back at 35 s).
        lease_of(&p, 1).failure();
        tokio::time::advance(Duration::from_secs(5)).await;
        lease_of(&p, 0).failure();
        let now = Instant::now();
        assert!(p.endpoints().iter().all(|e| e.is_down(now)));
        // Whatever the rotation says, and also while 1 is busy.
        let picks: Vec<Lease<usize>> = (0..4).map(|_| p.pick()).collect();
        assert!(picks.iter().all(|l| l.endpoint().data == 1));
        drop(picks);
        // Out in the other order, the other one is used.
        tokio::time::advance(Duration::from_secs(31)).await;
        lease_of(&p, 0).success();
        lease_of(&p, 1).success();
        lease_of(&p, 0).failure();
        tokio::time::advance(Duration::from_secs(5)).await;
        lease_of(&p, 1).failure();
        assert!(p.endpoints().iter().all(|e| e.is_down(Instant::now())));
        assert!((0..4).all(|_| p.pick().endpoint().data == 0));
    }
}
