//! The outlier state of one endpoint: failures in a row of each kind, and its ejection. All
//! relaxed atomics: counting an outcome never takes a lock, and a count that is off by one
//! under a race between two concurrent answers changes nothing that matters.

use super::{Millis, OutlierPolicy};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// Which threshold an endpoint crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TripKind {
    Consecutive5xx,
    ConsecutiveGateway,
    ConsecutiveLocalOrigin,
}

impl TripKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TripKind::Consecutive5xx => "consecutive_5xx",
            TripKind::ConsecutiveGateway => "consecutive_gateway_failure",
            TripKind::ConsecutiveLocalOrigin => "consecutive_local_origin_failure",
        }
    }
}

/// A threshold crossed: the kind and the count that crossed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trip {
    pub kind: TripKind,
    pub count: u32,
}

#[derive(Debug, Default)]
pub struct EndpointHealth {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local_origin: AtomicU32,
    /// Until when (proxy clock) the endpoint is ejected; 0 when it is not.
    ejected_until: AtomicU64,
    /// When the last ejection ended (or ends), for the multiplier's decay.
    last_ejection_end: AtomicU64,
    /// The next ejection's multiplier minus one: grows with each ejection, decays by one per
    /// interval spent healthy.
    multiplier: AtomicU32,
    /// Ejections ever, for `/clusters`.
    ejections: AtomicU64,
}

/// What `/clusters` shows of an endpoint's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthView {
    pub consecutive_5xx: u32,
    pub consecutive_gateway: u32,
    pub consecutive_local_origin: u32,
    /// `None` when not ejected now.
    pub ejected_until: Option<Millis>,
    pub ejections: u64,
}

impl EndpointHealth {
    /// Ejected at `now`. An ejection whose time is up counts as over, even before anyone
    /// clears it.
    pub fn is_ejected(&self, now: Millis) -> bool {
        let until = self.ejected_until.load(Relaxed);
        until != 0 && now < until
    }

    /// Ejected, without reading the clock when it plainly is not (the common case).
    pub fn maybe_ejected(&self) -> bool {
        self.ejected_until.load(Relaxed) != 0
    }

    /// Clears an ejection whose time is up; true for the one caller that cleared it (who
    /// logs the return).
    pub fn take_back(&self, now: Millis) -> bool {
        let until = self.ejected_until.load(Relaxed);
        until != 0 && now >= until && self.ejected_until.compare_exchange(until, 0, Relaxed, Relaxed).is_ok()
    }

    pub(super) fn response(&self, status: u16, five_xx: Option<u32>, gateway: Option<u32>) -> Option<Trip> {
        if !(500..600).contains(&status) {
            self.consecutive_5xx.store(0, Relaxed);
            self.consecutive_gateway.store(0, Relaxed);
            return None;
        }
        let mut trip = None;
        if matches!(status, 502..=504) {
            let count = self.consecutive_gateway.fetch_add(1, Relaxed) + 1;
            if gateway == Some(count) {
                trip = Some(Trip { kind: TripKind::ConsecutiveGateway, count });
            }
        } else {
            self.consecutive_gateway.store(0, Relaxed);
        }
        let count = self.consecutive_5xx.fetch_add(1, Relaxed) + 1;
        if five_xx == Some(count) {
            trip = trip.or(Some(Trip { kind: TripKind::Consecutive5xx, count }));
        }
        trip
    }

    pub(super) fn local_failure(&self, threshold: Option<u32>) -> Option<Trip> {
        let count = self.consecutive_local_origin.fetch_add(1, Relaxed) + 1;
        (threshold == Some(count)).then_some(Trip { kind: TripKind::ConsecutiveLocalOrigin, count })
    }

    pub(super) fn local_success(&self) {
        if self.consecutive_local_origin.load(Relaxed) != 0 {
            self.consecutive_local_origin.store(0, Relaxed);
        }
    }

    /// Resets the count that tripped, ejected or not, so the next run of failures is counted
    /// afresh (Envoy does the same).
    pub fn reset(&self, kind: TripKind) {
        let counter = match kind {
            TripKind::Consecutive5xx => &self.consecutive_5xx,
            TripKind::ConsecutiveGateway => &self.consecutive_gateway,
            TripKind::ConsecutiveLocalOrigin => &self.consecutive_local_origin,
        };
        counter.store(0, Relaxed);
    }

    /// Ejects the endpoint from `now`; returns until when. The multiplier first decays by one
    /// per `interval` since the last ejection ended, then grows by one.
    pub fn eject(&self, policy: &OutlierPolicy, now: Millis) -> Millis {
        let interval = u64::try_from(policy.interval.as_millis()).unwrap_or(u64::MAX).max(1);
        let last_end = self.last_ejection_end.load(Relaxed);
        let healthy_intervals = if last_end == 0 { 0 } else { now.saturating_sub(last_end) / interval };
        let decayed = u64::from(self.multiplier.load(Relaxed)).saturating_sub(healthy_intervals);
        let multiplier = u32::try_from(decayed).unwrap_or(u32::MAX).saturating_add(1);
        self.multiplier.store(multiplier, Relaxed);
        let length = u64::try_from(policy.ejection_time(multiplier).as_millis()).unwrap_or(u64::MAX);
        let until = now.saturating_add(length.max(1));
        self.last_ejection_end.store(until, Relaxed);
        self.ejections.fetch_add(1, Relaxed);
        self.consecutive_5xx.store(0, Relaxed);
        self.consecutive_gateway.store(0, Relaxed);
        self.consecutive_local_origin.store(0, Relaxed);
        self.ejected_until.store(until, Relaxed);
        until
    }

    pub fn view(&self, now: Millis) -> HealthView {
        HealthView {
            consecutive_5xx: self.consecutive_5xx.load(Relaxed),
            consecutive_gateway: self.consecutive_gateway.load(Relaxed),
            consecutive_local_origin: self.consecutive_local_origin.load(Relaxed),
            ejected_until: Some(self.ejected_until.load(Relaxed)).filter(|until| *until != 0 && now < *until),
            ejections: self.ejections.load(Relaxed),
        }
    }
}
