//! Fault injection in calls and sessions, for tests only (the `testing`
//! feature; a release build has none of it). As Ray's
//! `RAY_testing_rpc_failure`:
//!
//! - `FERRAY_TESTING_RPC_FAILURE="METHOD=REQ:RESP:INFLIGHT,..."`: the
//!   probability that a call fails before it reaches its server (REQ),
//!   after the server handled it (RESP: the answer is lost), or either at
//!   random (INFLIGHT). METHOD is a call, `Head.Locate`, `Objects.Pull`,
//!   `Uploads.Push`, `Head.SubmitJob`, ... (`Service.*` for all of a
//!   service), or a session message of either direction, `Session.Submit`,
//!   `Session.Done`, `Session.Assign`, `Session.Resolved`, ...
//!   (`Session.*`), or `*` for everything. The most specific rule applies.
//!   For a session message a failure breaks the session's stream, with the
//!   message lost or just after it got through. Hellos, acks and goodbyes
//!   are spared, and so is opening a session (a session is resumed by
//!   opening one).
//! - `FERRAY_TESTING_RPC_DELAY_MS=N`: each call, and each batch of a
//!   session's upward messages, waits up to N ms, at random.
//!
//! Clients apply it to what they send (the `Faulty` layer of every channel
//! and `ferray`'s session); callers retry with backoff, and a session
//! resumes on a new stream, sending again what was lost.

use std::time::Duration;

use crate::v1::{self, down, up};
use futures::{Stream, StreamExt};
use std::sync::Mutex;

/// What happens to a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The connection breaks with the message lost.
    Request,
    /// The message gets through, then the connection breaks.
    Response,
}

pub struct Faults {
    /// (method, [request, response, in-flight]).
    rules: Vec<(String, [f64; 3])>,
    max_delay_ms: u64,
    rng: Mutex<u64>,
}

impl Faults {
    /// The rules of `FERRAY_TESTING_RPC_FAILURE`, if set (a malformed rule
    /// is reported and skipped).
    pub fn from_env() -> Option<Faults> {
        let spec = std::env::var("FERRAY_TESTING_RPC_FAILURE").unwrap_or_default();
        let mut f = Faults::parse(&spec, seed());
        f.max_delay_ms = max_delay_ms();
        (!f.rules.is_empty() || f.max_delay_ms > 0).then_some(f)
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
            max_delay_ms: 0,
            rng: Mutex::new(seed | 1),
        }
    }

    fn probs(&self, service: &str, method: &str) -> Option<[f64; 3]> {
        let exact = format!("{service}.{method}");
        let all = format!("{service}.*");
        [exact.as_str(), all.as_str(), "*"]
            .iter()
            .find_map(|m| self.rules.iter().find(|(r, _)| r == m).map(|(_, p)| *p))
    }

    /// What happens to a call of `service.method`.
    pub fn on_call(&self, service: &str, method: &str) -> Option<Fault> {
        self.decide_for(service, method)
    }

    /// A random wait of up to `FERRAY_TESTING_RPC_DELAY_MS`.
    pub fn delay(&self) -> Duration {
        if self.max_delay_ms == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis((self.roll() * self.max_delay_ms as f64) as u64)
    }

    fn roll(&self) -> f64 {
        let mut s = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        // xorshift64*
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn decide(&self, kind: &str) -> Option<Fault> {
        self.decide_for("Session", kind)
    }

    fn decide_for(&self, service: &str, method: &str) -> Option<Fault> {
        let [req, resp, inflight] = self.probs(service, method)?;
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

    pub fn on_up(&self, msg: &up::Msg) -> Option<Fault> {
        let kind = match msg {
            up::Msg::Hello(_) | up::Msg::Ack(_) | up::Msg::Bye(_) | up::Msg::Rejoin(_) => {
                return None;
            }
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
            up::Msg::DirectLost(_) => "DirectLost",
            up::Msg::Release(_) => "Release",
        };
        self.decide(kind)
    }

    pub fn on_down(&self, msg: &v1::Down) -> Option<Fault> {
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
            down::Msg::ActorAt(_) => "ActorAt",
            down::Msg::CheckCalls(_) => "CheckCalls",
        };
        self.decide(kind)
    }
}

fn max_delay_ms() -> u64 {
    std::env::var("FERRAY_TESTING_RPC_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    t ^ u64::from(std::process::id()).rotate_left(32)
}

/// Batches of upward messages, each held up to `FERRAY_TESTING_RPC_DELAY_MS`.
pub fn delayed(
    s: std::pin::Pin<Box<dyn Stream<Item = v1::UpBatch> + Send + Sync>>,
) -> std::pin::Pin<Box<dyn Stream<Item = v1::UpBatch> + Send + Sync>> {
    let max = max_delay_ms();
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
        let calls = Faults::parse("Head.*=1:0:0,Head.Locate=0:1:0", 7);
        assert_eq!(calls.on_call("Head", "Locate"), Some(Fault::Response));
        assert_eq!(calls.on_call("Head", "SubmitJob"), Some(Fault::Request));
        assert_eq!(calls.on_call("Objects", "Pull"), None);
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
