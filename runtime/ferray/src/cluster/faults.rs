//! Fault injection in sessions, for tests only (the `testing` feature; a
//! release build has none of it). As Ray's `RAY_testing_rpc_failure`:
//!
//! - `FERRAY_TESTING_RPC_FAILURE="METHOD=REQ:RESP:INFLIGHT,..."`: for each
//!   session message of kind METHOD (`Session.Submit`, `Session.Done`,
//!   `Session.Assign`, `Session.Resolved`, ... in either direction;
//!   `Session.*`, or `*` for all), the probability that the connection
//!   breaks with the message lost (REQ), just after the message got
//!   through (RESP), or with it in flight (INFLIGHT: either, at random).
//!   The most specific rule applies. Hellos, acks and goodbyes are spared.
//! - `FERRAY_TESTING_RPC_DELAY_MS=N`: each batch of a session's upward
//!   messages waits up to N ms, at random.
//!
//! A broken stream is what a network fault does: the session resumes on a
//! new one, and what was lost is sent again (`session.rs`).

use std::time::Duration;

use ferray_proto::v1::{self, down, up};
use futures::{Stream, StreamExt};
use parking_lot::Mutex;

/// What happens to a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The connection breaks with the message lost.
    Request,
    /// The message gets through, then the connection breaks.
    Response,
}

pub(crate) struct Faults {
    /// (method, [request, response, in-flight]).
    rules: Vec<(String, [f64; 3])>,
    rng: Mutex<u64>,
}

impl Faults {
    /// The rules of `FERRAY_TESTING_RPC_FAILURE`, if set (a malformed rule
    /// is reported and skipped).
    pub(crate) fn from_env() -> Option<Faults> {
        let spec = std::env::var("FERRAY_TESTING_RPC_FAILURE").ok()?;
        let f = Faults::parse(&spec, seed());
        (!f.rules.is_empty()).then_some(f)
    }

    fn parse(spec: &str, seed: u64) -> Faults {
        let mut rules = Vec::new();
        for rule in spec.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let parsed = rule.split_once('=').and_then(|(m, p)| {
                let p: Vec<f64> = p
                    .split(':')
                    .map(|x| x.trim().parse().ok())
                    .collect::<Option<_>>()?;
                let p: [f64; 3] = p.try_into().ok()?;
                p.iter()
                    .all(|x| (0.0..=1.0).contains(x))
                    .then(|| (m.trim().to_string(), p))
            });
            match parsed {
                Some(r) => rules.push(r),
                None => tracing::warn!(
                    "FERRAY_TESTING_RPC_FAILURE: `{rule}` is not METHOD=REQ:RESP:INFLIGHT"
                ),
            }
        }
        Faults {
            rules,
            rng: Mutex::new(seed | 1),
        }
    }

    fn probs(&self, kind: &str) -> Option<[f64; 3]> {
        let exact = format!("Session.{kind}");
        [exact.as_str(), "Session.*", "*"]
            .iter()
            .find_map(|m| self.rules.iter().find(|(r, _)| r == m).map(|(_, p)| *p))
    }

    fn roll(&self) -> f64 {
        let mut s = self.rng.lock();
        // xorshift64*
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn decide(&self, kind: &str) -> Option<Fault> {
        let [req, resp, inflight] = self.probs(kind)?;
        let r = self.roll();
        if r < req {
            Some(Fault::Request)
        } else if r < req + resp {
            Some(Fault::Response)
        } else if r < req + resp + inflight {
            Some(if self.roll() < 0.5 {
                Fault::Request
            } else {
                Fault::Response
            })
        } else {
            None
        }
    }

    pub(crate) fn on_up(&self, msg: &up::Msg) -> Option<Fault> {
        let kind = match msg {
            up::Msg::Hello(_) | up::Msg::Ack(_) | up::Msg::Bye(_) => return None,
            up::Msg::Heartbeat(_) => "Heartbeat",
            up::Msg::Submit(_) => "Submit",
            up::Msg::CreateActor(_) => "CreateActor",
            up::Msg::CallActor(_) => "CallActor",
            up::Msg::KillActor(_) => "KillActor",
            up::Msg::Cancel(_) => "Cancel",
            up::Msg::Put(_) => "Put",
            up::Msg::Blocked(_) => "Blocked",
            up::Msg::Done(_) => "Done",
            up::Msg::Located(_) => "Located",
            up::Msg::ActorDied(_) => "ActorDied",
            up::Msg::Started(_) => "Started",
            up::Msg::Output(_) => "TaskOutput",
        };
        self.decide(kind)
    }

    pub(crate) fn on_down(&self, msg: &v1::Down) -> Option<Fault> {
        let kind = match msg.msg.as_ref()? {
            down::Msg::Welcome(_) | down::Msg::Ack(_) => return None,
            down::Msg::Resolved(_) => "Resolved",
            down::Msg::Assign(_) => "Assign",
            down::Msg::StartActor(_) => "StartActor",
            down::Msg::ActorCall(_) => "ActorCall",
            down::Msg::StopActor(_) => "StopActor",
            down::Msg::Cancel(_) => "Cancel",
            down::Msg::Free(_) => "Free",
            down::Msg::Output(_) => "Output",
        };
        self.decide(kind)
    }
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    t ^ u64::from(std::process::id()).rotate_left(32)
}

/// Batches of upward messages, each held up to `FERRAY_TESTING_RPC_DELAY_MS`.
pub(crate) fn delayed(
    s: std::pin::Pin<Box<dyn Stream<Item = v1::UpBatch> + Send + Sync>>,
) -> std::pin::Pin<Box<dyn Stream<Item = v1::UpBatch> + Send + Sync>> {
    let max = std::env::var("FERRAY_TESTING_RPC_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if max == 0 {
        return s;
    }
    let f = Faults::parse("", seed());
    Box::pin(s.then(move |item| {
        let ms = (f.roll() * max as f64) as u64;
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            item
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_rule_applies_and_bad_rules_are_skipped() {
        let f = Faults::parse(
            "*=0:0:0, Session.Done=1:0:0, Session.*=0:1:0, bad, X=2:0:0",
            7,
        );
        assert_eq!(f.rules.len(), 3);
        assert_eq!(f.decide("Done"), Some(Fault::Request));
        assert_eq!(f.decide("Submit"), Some(Fault::Response));
        let none = Faults::parse("Session.Done=0:0:0", 7);
        assert_eq!(none.decide("Done"), None);
        assert_eq!(none.decide("Submit"), None);
        // About the given share of messages fail.
        let some = Faults::parse("*=0.1:0.1:0", 11);
        let n = (0..10_000)
            .filter(|_| some.decide("Done").is_some())
            .count();
        assert!((1_700..2_300).contains(&n), "{n}");
    }
}
