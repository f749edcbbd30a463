//! Changes people make on purpose (create, edit, delete): forwarded to the region's host as
//! `LinkMsg::Change`, and answered to the client with `ack` only once the host reports the
//! change durable, or with `refused` naming the request.
//!
//! The gateway numbers the requests it forwards itself (a random start, then one more each),
//! so clients' request ids never meet on a host, and a create's tag (which the region echoes
//! with the new object's id) is unique even when many clients create in the same tick.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use link::{ChangeAck, ChangeFailed};
use parking_lot::Mutex;
use proto::limits::{CHANGE_TIMEOUT_SECS, MAX_PENDING_CHANGES};
use proto::{Refusal, ServerMsg};
use tokio::sync::oneshot;
use world::{EntityId, Input, RegionId};

use crate::feed::{Feeds, Mailbox, SessionEvent};
use crate::limits::MAX_PENDING_CHANGES_TOTAL;

type Outcome = Result<ChangeAck, ChangeFailed>;

struct Pending {
    host: String,
    done: oneshot::Sender<Outcome>,
}

/// The changes forwarded to hosts and not yet answered, by the gateway's request number.
pub(crate) struct Changes {
    next: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
}

impl Changes {
    pub fn new() -> Changes {
        // Below 2^62: room to count up for ever without wrapping.
        Changes { next: AtomicU64::new(rand::random::<u64>() >> 2), pending: Mutex::new(HashMap::new()) }
    }

    /// A request number for a change going to `host`, and where its outcome will arrive;
    /// `None` when `MAX_PENDING_CHANGES_TOTAL` are waiting already.
    pub fn register(&self, host: &str) -> Option<(u64, oneshot::Receiver<Outcome>)> {
        let mut pending = self.pending.lock();
        if pending.len() >= MAX_PENDING_CHANGES_TOTAL {
            return None;
        }
        let request = self.next.fetch_add(1, Ordering::Relaxed);
        let (done, rx) = oneshot::channel();
        pending.insert(request, Pending { host: host.to_string(), done });
        Some((request, rx))
    }

    /// A host's answer.
    pub fn on_done(&self, request: u64, result: Outcome) {
        if let Some(p) = self.pending.lock().remove(&request) {
            let _ = p.done.send(result);
        }
    }

    /// The link to `host` broke: nobody will answer what went there.
    pub fn fail_host(&self, host: &str) {
        let lost: Vec<Pending> = {
            let mut pending = self.pending.lock();
            let ids: Vec<u64> = pending.iter().filter(|(_, p)| p.host == host).map(|(id, _)| *id).collect();
            ids.into_iter().filter_map(|id| pending.remove(&id)).collect()
        };
        for p in lost {
            let _ = p.done.send(Err(ChangeFailed::Unknown(format!(
                "the link to host {host} broke before it answered"
            ))));
        }
    }

    pub fn forget(&self, request: u64) {
        self.pending.lock().remove(&request);
    }
}

/// One client request on its way: what to tell the client when the outcome is known.
pub(crate) struct ChangeRequest {
    pub request_id: u64,
    pub region: RegionId,
    /// The object edited or deleted (`None` for a create: the host names the new one).
    pub object: Option<EntityId>,
    /// Builds the region's input from the gateway's request number (a create's tag).
    pub input: Box<dyn FnOnce(u64) -> Input + Send>,
}

/// Forwards a change and answers the client from a task of its own, so the session goes on
/// meanwhile. `in_flight` counts the session's unanswered changes (at most
/// `MAX_PENDING_CHANGES`).
pub(crate) fn start(feeds: Arc<Feeds>, req: ChangeRequest, reply: Mailbox, in_flight: Arc<AtomicUsize>) {
    let request_id = req.request_id;
    if in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING_CHANGES {
        in_flight.fetch_sub(1, Ordering::AcqRel);
        reply.post(SessionEvent::Reply(refused(
            request_id,
            Refusal::TryAgain,
            format!("more than MAX_PENDING_CHANGES ({MAX_PENDING_CHANGES}) changes wait for an answer; send it again after one is answered"),
        )));
        return;
    }
    tokio::spawn(async move {
        let msg = outcome(&feeds, req).await;
        in_flight.fetch_sub(1, Ordering::AcqRel);
        reply.post(SessionEvent::Reply(msg));
    });
}

async fn outcome(feeds: &Feeds, req: ChangeRequest) -> ServerMsg {
    let request_id = req.request_id;
    let (request, rx) = match feeds.send_change(req.region, req.input).await {
        Ok(sent) => sent,
        Err(e) => return refused(request_id, Refusal::TryAgain, format!("not forwarded: {e}")),
    };
    let result = match tokio::time::timeout(Duration::from_secs(CHANGE_TIMEOUT_SECS), rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(ChangeFailed::Unknown("the gateway lost track of the change".into())),
        Err(_) => {
            feeds.changes.forget(request);
            Err(ChangeFailed::Unknown(format!(
                "no answer from the region's host within {CHANGE_TIMEOUT_SECS} s"
            )))
        }
    };
    match result {
        Ok(ack) => match ack.created.or(req.object) {
            Some(object) => ServerMsg::Ack { request_id, object, tick: ack.tick, durable: ack.durable },
            None => refused(
                request_id,
                Refusal::Unknown,
                "the region applied the create but named no object".into(),
            ),
        },
        Err(ChangeFailed::Rejected(m)) => refused(request_id, Refusal::Rejected, m),
        Err(ChangeFailed::TryAgain(m)) => refused(request_id, Refusal::TryAgain, m),
        Err(ChangeFailed::Unknown(m)) => refused(request_id, Refusal::Unknown, m),
    }
}

pub(crate) fn refused(request_id: u64, reason: Refusal, mut message: String) -> ServerMsg {
    let max = proto::limits::MAX_ERROR_MESSAGE_BYTES;
    if message.len() > max {
        let mut end = max;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    ServerMsg::Refused { request_id, reason, message }
}
