//! A node's side of collective groups on a cluster: joining a group at
//! the head (`Head.JoinGroup`), and the parts of all-reduces sent straight
//! between nodes (`Collective.Part`). The all-reduce itself is
//! [`crate::collective`]'s.

use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use ferray_core::{Error, GroupMember};
use ferray_proto::{Token, v1};
use futures::future::BoxFuture;
use tonic::{Request, Response, Status, Streaming};

use crate::collective::{Collectives, Part, PartKey, Transport};

/// How a node reaches the head and the other nodes of its groups.
pub(crate) struct NodeTransport {
    /// This node's object server (how the head names it).
    pub(crate) address: String,
    pub(crate) head: String,
    pub(crate) token: Token,
    /// A connection per node (and the head), made once.
    channels: Arc<DashMap<String, tonic::transport::Channel>>,
}

impl NodeTransport {
    pub(crate) fn new(address: String, head: String, token: Token) -> NodeTransport {
        NodeTransport {
            address,
            head,
            token,
            channels: Default::default(),
        }
    }
}

impl NodeTransport {
    /// `Head.JoinGroup` for `m`: a join, or (`broken`) word that the group
    /// broke and why; `what` names it in errors.
    fn join_group(
        &self,
        job: u64,
        m: &GroupMember,
        broken: Option<String>,
        what: &'static str,
    ) -> BoxFuture<'static, Result<Vec<String>, Error>> {
        let (channels, head, token) =
            (self.channels.clone(), self.head.clone(), self.token.clone());
        let mut reason = broken.clone().unwrap_or_default();
        ferray_core::cut_text(&mut reason, ferray_proto::MAX_ERROR_MESSAGE);
        let req = v1::GroupJoin {
            job,
            group: m.group.clone(),
            rank: m.rank,
            world_size: m.world_size,
            address: self.address.clone(),
            broken: broken.is_some(),
            reason,
        };
        Box::pin(async move {
            let ch = channel(&channels, &head).await?;
            let plan = ferray_proto::head_client(ch, &token)
                .join_group(req)
                .await
                .map_err(|s| ferray_proto::from_status(what, s))?;
            Ok(plan.into_inner().addresses)
        })
    }
}

async fn channel(
    channels: &DashMap<String, tonic::transport::Channel>,
    addr: &str,
) -> Result<tonic::transport::Channel, Error> {
    if let Some(c) = channels.get(addr) {
        return Ok(c.clone());
    }
    let c = ferray_proto::connect(addr).await?;
    channels.insert(addr.to_string(), c.clone());
    Ok(c)
}

impl Transport for NodeTransport {
    fn address(&self) -> &str {
        &self.address
    }

    fn join(&self, job: u64, m: &GroupMember) -> BoxFuture<'static, Result<Vec<String>, Error>> {
        self.join_group(job, m, None, "joining a group")
    }

    fn abandon(
        &self,
        job: u64,
        m: &GroupMember,
        why: String,
    ) -> BoxFuture<'static, Result<(), Error>> {
        let told = self.join_group(job, m, Some(why), "telling the head a group broke");
        Box::pin(async move { told.await.map(|_| ()) })
    }

    fn send(&self, to: &str, key: PartKey, data: Bytes) -> BoxFuture<'static, Result<(), Error>> {
        let (channels, token, to) = (self.channels.clone(), self.token.clone(), to.to_string());
        Box::pin(async move {
            let size = data.len() as u64;
            let n = data.len().div_ceil(ferray_proto::CHUNK_BYTES).max(1);
            // Each frame is a slice of the one buffer (no copy).
            let frames = (0..n).map(move |i| {
                let a = i * ferray_proto::CHUNK_BYTES;
                let b = (a + ferray_proto::CHUNK_BYTES).min(data.len());
                v1::GroupPart {
                    job: key.job,
                    group: key.group.clone(),
                    round: key.round,
                    step: key.step,
                    data: data.slice(a..b),
                    last: i + 1 == n,
                    size,
                }
            });
            let ch = channel(&channels, &to).await?;
            let r = ferray_proto::collective_client(ch, &token)
                .part(futures::stream::iter(frames))
                .await;
            if r.is_err() {
                // A broken connection is made again for the next part.
                channels.remove(&to);
            }
            r.map(|_| ())
                .map_err(|s| ferray_proto::from_status(&format!("sending a part to {to}"), s))
        })
    }
}

/// The `Collective` service: parts from other nodes into this node's
/// mailbox.
pub(crate) struct NodeCollective(pub(crate) Arc<Collectives>);

#[tonic::async_trait]
impl v1::collective_server::Collective for NodeCollective {
    async fn part(
        &self,
        req: Request<Streaming<v1::GroupPart>>,
    ) -> Result<Response<v1::PartTaken>, Status> {
        let mut frames = req.into_inner();
        let mut key: Option<PartKey> = None;
        let mut part = Part::default();
        while let Some(f) = frames.message().await? {
            let k = PartKey {
                job: f.job,
                group: f.group,
                round: f.round,
                step: f.step,
            };
            let size = usize::try_from(f.size).unwrap_or(usize::MAX);
            if size > crate::collective::MAX_PART_BYTES || part.len() + f.data.len() > size {
                return Err(Status::invalid_argument(
                    "an all-reduce part is too large, or larger than it said",
                ));
            }
            match &key {
                Some(old) if *old != k => {
                    return Err(Status::invalid_argument(
                        "the frames of a part name two parts",
                    ));
                }
                Some(_) => {}
                None => key = Some(k),
            }
            // Kept as it came: the frame's bytes are not copied.
            part.push(f.data).map_err(|e| ferray_proto::to_status(&e))?;
            if f.last {
                if part.len() != size {
                    return Err(Status::invalid_argument("an all-reduce part ended short"));
                }
                let key = key
                    .take()
                    .ok_or_else(|| Status::invalid_argument("no part"))?;
                self.0
                    .deliver(key, std::mem::take(&mut part))
                    .map_err(|e| ferray_proto::to_status(&e))?;
                return Ok(Response::new(v1::PartTaken {}));
            }
        }
        Err(Status::invalid_argument(
            "a part ended before its last frame",
        ))
    }
}
