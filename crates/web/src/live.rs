//! The dashboard's live feed (`GET /api/live`, a WebSocket): the cluster view about once a
//! second and every migration change as soon as it is seen. One poller serves every client, and
//! polls only while someone watches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::limits::*;
use crate::view::{Cluster, ClusterView, MigrationView};

/// One message of the live feed, as JSON: `{"cluster": {...}}`, `{"migration": {...}}` or
/// `{"error": "..."}` (the view could not be read; the feed goes on).
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveMsg<'a> {
    Cluster(&'a Cluster),
    Migration(&'a MigrationView),
    Error(String),
}

impl LiveMsg<'_> {
    fn json(&self) -> Arc<str> {
        serde_json::to_string(self)
            .map(Arc::from)
            .unwrap_or_else(|e| Arc::from(format!("{{\"error\":\"{e}\"}}")))
    }
}

pub(crate) struct Live {
    /// The latest cluster message, for clients that just arrived and for the periodic push.
    latest: watch::Sender<Option<Arc<str>>>,
    events: broadcast::Sender<Arc<str>>,
}

impl Live {
    /// Starts the poller (on the current tokio runtime).
    pub(crate) fn start(view: Arc<dyn ClusterView>) -> Arc<Live> {
        let (latest, _) = watch::channel(None);
        let (events, _) = broadcast::channel(LIVE_EVENT_QUEUE);
        let live = Arc::new(Live { latest, events });
        let weak = Arc::downgrade(&live);
        tokio::spawn(async move {
            let mut seen: HashMap<String, MigrationView> = HashMap::new();
            let mut every = tokio::time::interval(Duration::from_millis(LIVE_MIGRATIONS_EVERY_MS));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let per_cluster = (LIVE_CLUSTER_EVERY_MS / LIVE_MIGRATIONS_EVERY_MS).max(1);
            let mut n: u64 = 0;
            // A migration that just settled moved a region: push the cluster on the next pass.
            let mut refresh = false;
            loop {
                every.tick().await;
                let Some(live) = weak.upgrade() else { break };
                if live.latest.receiver_count() == 0 {
                    // Nobody watches: look again as soon as someone does.
                    n = 0;
                    continue;
                }
                let migrations = if n.is_multiple_of(per_cluster) || std::mem::take(&mut refresh) {
                    match view.cluster().await {
                        Ok(c) => {
                            live.latest.send_replace(Some(LiveMsg::Cluster(&c).json()));
                            Ok(c.migrations)
                        }
                        Err(e) => Err(e),
                    }
                } else {
                    view.migrations().await
                };
                n += 1;
                match migrations {
                    Ok(list) => {
                        // Forget what the view no longer lists, so memory stays bounded.
                        seen.retain(|id, _| list.iter().any(|m| &m.id == id));
                        for m in list {
                            if seen.get(&m.id) != Some(&m) {
                                let _ = live.events.send(LiveMsg::Migration(&m).json());
                                refresh |= m.done && seen.get(&m.id).is_none_or(|was| !was.done);
                                seen.insert(m.id.clone(), m);
                            }
                        }
                    }
                    Err(e) => {
                        let _ =
                            live.events.send(LiveMsg::Error(format!("cannot read the cluster: {e}")).json());
                    }
                }
            }
        });
        live
    }

    pub(crate) fn clients(&self) -> usize {
        self.latest.receiver_count()
    }

    /// Serves one client until it leaves.
    pub(crate) async fn serve(self: Arc<Live>, mut socket: WebSocket) {
        let mut latest = self.latest.subscribe();
        let mut events = self.events.subscribe();
        // What is known now, at once.
        let first = latest.borrow_and_update().clone();
        if let Some(msg) = first {
            if socket.send(Message::Text(msg.as_ref().into())).await.is_err() {
                return;
            }
        }
        loop {
            let out: Arc<str> = tokio::select! {
                changed = latest.changed() => {
                    if changed.is_err() { return; }
                    let Some(msg) = latest.borrow_and_update().clone() else { continue };
                    msg
                }
                ev = events.recv() => match ev {
                    Ok(msg) => msg,
                    // A slow client skips the events it missed; the next cluster push catches it up.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(Message::Text(t))) if t.len() > MAX_LIVE_CLIENT_FRAME_BYTES => return,
                    Some(Ok(Message::Binary(b))) if b.len() > MAX_LIVE_CLIENT_FRAME_BYTES => return,
                    Some(Ok(_)) => continue,
                },
            };
            if socket.send(Message::Text(out.as_ref().into())).await.is_err() {
                return;
            }
        }
    }
}
