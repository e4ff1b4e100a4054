//! Collective groups meet here (`Head.JoinGroup`): each member's node
//! names the member's rank and its own address, and every member is
//! answered once all `world_size` have joined, with the node of each rank.
//! The parts of all-reduces then go straight between the nodes; the head
//! holds only the groups still forming (not in the state: a head started
//! again forgets them, and their members' waits fail, so their groups
//! break and are made again).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferray_core::GroupMember;
use ferray_proto::v1;
use parking_lot::Mutex;
use tokio::sync::watch;
use tonic::Status;

/// The most groups forming at once.
const MAX_FORMING: usize = 10_000;
/// A group that has not formed in this long is forgotten.
const FORMING_FOR: Duration = Duration::from_secs(3600);
/// The longest node address.
const MAX_ADDRESS: usize = 1024;

type Plan = Arc<Vec<String>>;

#[derive(Default)]
pub(crate) struct Groups {
    forming: Mutex<HashMap<(u64, String), Forming>>,
}

struct Forming {
    world: u32,
    addresses: Vec<Option<String>>,
    since: Instant,
    /// The plan once all joined, or why the group broke.
    done: watch::Sender<Option<Result<Plan, String>>>,
    /// Broken: every join fails with this.
    broken: Option<String>,
}

impl Groups {
    /// Join `j`'s group; the node of each rank once all have joined.
    pub(crate) async fn join(&self, j: v1::GroupJoin) -> Result<Plan, Status> {
        let m = GroupMember::new(j.group, j.rank, j.world_size)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let broken_msg =
            |why: &str| Status::aborted(format!("the group `{}` broke: {why}", m.group));
        if j.address.is_empty() || j.address.len() > MAX_ADDRESS {
            return Err(Status::invalid_argument(
                "a member's address must be 1 to 1024 bytes",
            ));
        }
        let mut rx = {
            let mut forming = self.forming.lock();
            forming.retain(|_, f| f.since.elapsed() < FORMING_FOR);
            let key = (j.job, m.group.clone());
            if !forming.contains_key(&key) && forming.len() >= MAX_FORMING {
                return Err(Status::resource_exhausted(format!(
                    "{MAX_FORMING} groups are forming already"
                )));
            }
            let f = forming.entry(key.clone()).or_insert_with(|| Forming {
                world: m.world_size,
                addresses: vec![None; m.world_size as usize],
                since: Instant::now(),
                done: watch::channel(None).0,
                broken: None,
            });
            if let Some(why) = &f.broken {
                return Err(broken_msg(why));
            }
            if j.broken {
                // Kept (until it is forgotten with the others) so that
                // later joins fail too.
                let why = if j.reason.is_empty() {
                    "a member stopped".to_string()
                } else {
                    j.reason
                };
                f.done.send_replace(Some(Err(why.clone())));
                f.broken = Some(why);
                return Ok(Arc::new(Vec::new()));
            }
            if f.world != m.world_size {
                return Err(Status::invalid_argument(format!(
                    "the group `{}` has {} members, not {}",
                    m.group, f.world, m.world_size
                )));
            }
            match &f.addresses[m.rank as usize] {
                Some(a) if *a != j.address => {
                    return Err(Status::invalid_argument(format!(
                        "rank {} of the group `{}` joined from {a} already",
                        m.rank, m.group
                    )));
                }
                _ => f.addresses[m.rank as usize] = Some(j.address),
            }
            if f.addresses.iter().all(Option::is_some) {
                let plan: Plan = Arc::new(f.addresses.iter().flatten().cloned().collect());
                f.done.send_replace(Some(Ok(plan.clone())));
                forming.remove(&key);
                return Ok(plan);
            }
            f.done.subscribe()
        };
        let done = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Status::aborted("the group was forgotten before it formed"))?;
        match done.clone() {
            Some(Ok(plan)) => Ok(plan),
            Some(Err(why)) => Err(broken_msg(&why)),
            None => Err(Status::internal("a group formed without a plan")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(group: &str, rank: u32, world: u32, address: &str) -> v1::GroupJoin {
        v1::GroupJoin {
            job: 1,
            group: group.into(),
            rank,
            world_size: world,
            address: address.into(),
            broken: false,
            reason: String::new(),
        }
    }

    #[tokio::test]
    async fn a_broken_group_fails_its_joins_now_and_later() {
        let g = Arc::new(Groups::default());
        let g2 = g.clone();
        let waiting = tokio::spawn(async move { g2.join(join("g", 0, 3, "a")).await });
        tokio::task::yield_now().await;
        let mut brk = join("g", 1, 3, "b");
        brk.broken = true;
        brk.reason = "rank 1 died".into();
        g.join(brk).await.unwrap();
        let e = waiting.await.unwrap().unwrap_err();
        assert!(e.message().contains("broke: rank 1 died"), "{e}");
        let e = g.join(join("g", 2, 3, "c")).await.unwrap_err();
        assert!(e.message().contains("broke"), "{e}");
    }

    #[tokio::test]
    async fn members_are_answered_once_all_have_joined() {
        let g = Arc::new(Groups::default());
        let mut waiting = Vec::new();
        for (rank, addr) in [(2, "c"), (0, "a")] {
            let g = g.clone();
            waiting.push(tokio::spawn(async move {
                g.join(join("g", rank, 3, addr)).await
            }));
        }
        tokio::task::yield_now().await;
        assert!(waiting.iter().all(|h| !h.is_finished()));
        let last = g.join(join("g", 1, 3, "b")).await.unwrap();
        assert_eq!(*last, ["a", "b", "c"]);
        for h in waiting {
            assert_eq!(*h.await.unwrap().unwrap(), ["a", "b", "c"]);
        }
        assert!(g.forming.lock().is_empty(), "a formed group is forgotten");
    }

    #[tokio::test]
    async fn a_bad_join_is_refused() {
        let g = Groups::default();
        let e = g.join(join("g", 3, 3, "a")).await.unwrap_err();
        assert!(e.message().contains("rank 3"), "{e}");
        let e = g.join(join("g", 0, 2, "")).await.unwrap_err();
        assert!(e.message().contains("address"), "{e}");
        let g = Arc::new(g);
        let g2 = g.clone();
        let _first = tokio::spawn(async move { g2.join(join("h", 0, 2, "a")).await });
        tokio::task::yield_now().await;
        let e = g.join(join("h", 1, 3, "b")).await.unwrap_err();
        assert!(e.message().contains("has 2 members"), "{e}");
        let e = g.join(join("h", 0, 2, "b")).await.unwrap_err();
        assert!(e.message().contains("joined from a"), "{e}");
    }
}
