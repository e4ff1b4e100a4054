//! Ray Serve's autoscaling policy, as a pure function of the ongoing
//! requests it is shown: the desired replicas are the ongoing requests
//! (averaged over the look-back window) over the target per replica,
//! within the bounds; a change is made once it has been wanted, the same
//! way, for its delay (`upscale_delay_s`, `downscale_delay_s`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::app::Autoscaling;

/// One deployment's autoscaling state.
#[derive(Debug)]
pub struct Scaler {
    config: Autoscaling,
    /// (when, ongoing requests over all replicas), oldest first.
    samples: VecDeque<(Instant, f64)>,
    /// Since when a change in this direction (+1 up, -1 down) has been wanted.
    wanted: Option<(i8, Instant)>,
}

impl Scaler {
    pub fn new(config: Autoscaling) -> Self {
        Scaler {
            config,
            samples: VecDeque::new(),
            wanted: None,
        }
    }

    pub fn config(&self) -> &Autoscaling {
        &self.config
    }

    /// Record the deployment's ongoing requests (running and waiting) at `now`.
    pub fn record(&mut self, now: Instant, ongoing: f64) {
        self.samples.push_back((now, ongoing));
        while let Some(&(t, _)) = self.samples.front() {
            if now.duration_since(t) > self.config.look_back_period {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// The ongoing requests averaged over the look-back window.
    pub fn average(&self) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        self.samples.iter().map(|(_, v)| v).sum::<f64>() / self.samples.len() as f64
    }

    /// The replicas wanted from the average alone, within the bounds.
    pub fn desired(&self) -> u32 {
        let c = &self.config;
        let raw = (self.average() / c.target_ongoing_requests).ceil();
        (raw.clamp(0.0, f64::from(u32::MAX)) as u32).clamp(c.min_replicas, c.max_replicas)
    }

    /// The replicas to have at `now`, given `current`: `current` until a
    /// change has been wanted for its delay.
    pub fn decide(&mut self, now: Instant, current: u32) -> u32 {
        let desired = self.desired();
        let direction = match desired.cmp(&current) {
            std::cmp::Ordering::Greater => 1,
            std::cmp::Ordering::Less => -1,
            std::cmp::Ordering::Equal => {
                self.wanted = None;
                return current;
            }
        };
        let since = match self.wanted {
            Some((d, since)) if d == direction => since,
            _ => {
                self.wanted = Some((direction, now));
                now
            }
        };
        let delay: Duration = if direction > 0 {
            self.config.upscale_delay
        } else {
            self.config.downscale_delay
        };
        if now.duration_since(since) >= delay {
            self.wanted = None;
            desired
        } else {
            current
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Autoscaling {
        Autoscaling {
            min_replicas: 0,
            max_replicas: 4,
            initial_replicas: 1,
            target_ongoing_requests: 2.0,
            upscale_delay: Duration::from_secs(3),
            downscale_delay: Duration::from_secs(10),
            look_back_period: Duration::from_secs(2),
            metrics_interval: Duration::from_secs(1),
        }
    }

    #[test]
    fn scales_up_after_the_upscale_delay_and_down_after_the_downscale_delay() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut s = Scaler::new(config());
        // 7 ongoing for 1 replica: 4 wanted (ceil 7 / 2), not before 3 s.
        for i in 0..3 {
            s.record(at(i), 7.0);
            assert_eq!(s.decide(at(i), 1), 1, "at {i} s");
        }
        s.record(at(3), 7.0);
        assert_eq!(s.decide(at(3), 1), 4);
        // Past the maximum: still 4.
        s.record(at(4), 100.0);
        assert_eq!(s.desired(), 4);
        // Idle: the average falls as the window passes; zero wanted after 10 s.
        for i in 5..8 {
            s.record(at(i), 0.0);
        }
        assert_eq!(s.desired(), 0);
        assert_eq!(s.decide(at(7), 4), 4);
        assert_eq!(s.decide(at(16), 4), 4);
        assert_eq!(s.decide(at(17), 4), 0);
    }

    #[test]
    fn a_change_of_mind_restarts_the_delay() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut s = Scaler::new(config());
        s.record(at(0), 8.0);
        assert_eq!(s.decide(at(0), 2), 2);
        // Back to what it has: the wish is forgotten.
        s.record(at(3), 4.0);
        s.record(at(4), 4.0);
        s.record(at(5), 4.0);
        assert_eq!(s.decide(at(5), 2), 2);
        s.record(at(6), 8.0);
        s.record(at(7), 8.0);
        s.record(at(8), 8.0);
        assert_eq!(s.decide(at(8), 2), 2, "the delay starts again");
        assert_eq!(s.decide(at(11), 2), 4);
    }
}
