//! Links between hosts, and between hosts and gateways: length-prefixed postcard frames over
//! TCP, one [`LinkMsg`] per frame.
//!
//! A link carries migration messages, forwarded client inputs, and subscriptions to regions'
//! tick outputs. Each connection has a reader task and a writer task joined by bounded queues:
//! a peer that stops reading fills its queue and then loses messages (the protocols above
//! retransmit what matters) instead of stalling the host.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use world::{Input, RegionId, TickOutput};

/// Version of the link protocol; peers of different versions refuse each other at `Hello`.
pub const LINK_VERSION: u16 = 4;
/// Largest frame accepted (a migration chunk plus headers, or one tick's output).
pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;
/// Frames waiting to be written to one peer; beyond it new frames are dropped.
pub const SEND_QUEUE_FRAMES: usize = 4096;
/// Frames read from one peer and not yet handled.
pub const RECV_QUEUE_FRAMES: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Host,
    Gateway,
    Tool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LinkMsg {
    /// First frame each way. `name` is the sender's link address for hosts.
    Hello {
        version: u16,
        role: Role,
        name: String,
    },
    Migration {
        region: RegionId,
        msg: migrate::Msg,
    },
    /// A border-crossing message from region `from` to its neighbour `to` (lost ones are
    /// resent by the crossing protocol).
    Crossing {
        from: RegionId,
        to: RegionId,
        msg: crossing::Msg,
    },
    /// A client input for a region (from a gateway, or forwarded by its previous owner).
    Input {
        region: RegionId,
        input: Input,
    },
    /// Start sending the region's updates. `after`: the subscriber already holds the region's
    /// state up to that tick (it followed the region from its previous owner), so the host
    /// first replays the updates after it that it still holds. A region that just arrived by
    /// migration ticks before its subscribers find it; this is how they miss nothing.
    Subscribe {
        region: RegionId,
        after: Option<u64>,
    },
    Unsubscribe {
        region: RegionId,
    },
    /// One tick's output of a subscribed region.
    Update {
        region: RegionId,
        output: TickOutput,
    },
    /// The region is not (or no longer) here; `owner` is where it went, if known.
    NotHere {
        region: RegionId,
        owner: Option<String>,
    },
    /// After a migration: the new owner's first tick happened at this wall-clock time.
    FirstTick {
        region: RegionId,
        id: migrate::MigrationId,
        unix_us: u64,
    },
    Error {
        message: String,
    },
    /// A change made on purpose (create, edit, delete…) whose sender waits for its outcome:
    /// answered by `ChangeDone` with the same `request` once it is durable (or refused).
    Change {
        region: RegionId,
        request: u64,
        input: Input,
    },
    ChangeDone {
        request: u64,
        result: Result<ChangeAck, ChangeFailed>,
    },
}

/// A change applied by its region (and, when `durable`, committed to the region's log).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeAck {
    pub tick: u64,
    /// The object a create made.
    pub created: Option<world::EntityId>,
    pub durable: bool,
}

/// Why a change has no acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeFailed {
    /// The region refused it; nothing changed.
    Rejected(String),
    /// Not applied (moving, not here, busy): send it again.
    TryAgain(String),
    /// Applied or not, unknown (the store failed): it may be lost if the host dies.
    Unknown(String),
}

impl LinkMsg {
    pub fn encode(&self) -> Frame {
        let body = postcard::to_stdvec(self).expect("serializing to memory cannot fail");
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        Frame(Arc::new(out))
    }
}

/// An encoded frame, shared between the subscribers it goes to.
#[derive(Clone, Debug)]
pub struct Frame(pub Arc<Vec<u8>>);

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("link i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds MAX_FRAME_BYTES")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("peer speaks link version {0}, this build speaks {LINK_VERSION}")]
    Version(u16),
    #[error("peer did not start with Hello")]
    NoHello,
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub async fn read_msg(r: &mut (impl AsyncReadExt + Unpin)) -> Result<Option<LinkMsg>, LinkError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(LinkError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    postcard::from_bytes(&buf).map(Some).map_err(|e| LinkError::Malformed(e.to_string()))
}

/// The sending half of a link. Cheap to clone; sending never blocks.
#[derive(Clone, Debug)]
pub struct LinkTx {
    tx: mpsc::Sender<Frame>,
    pub peer: String,
}

impl LinkTx {
    /// Queues a frame; returns false if the peer is gone or its queue is full (dropped).
    pub fn send(&self, msg: &LinkMsg) -> bool {
        self.send_frame(msg.encode())
    }
    pub fn send_frame(&self, frame: Frame) -> bool {
        self.tx.try_send(frame).is_ok()
    }
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A running link: its sending half and the messages it receives.
pub struct Link {
    pub tx: LinkTx,
    pub rx: mpsc::Receiver<LinkMsg>,
    /// What the peer said in its Hello.
    pub peer_role: Role,
    pub peer_name: String,
}

/// Exchanges Hellos on a fresh stream and starts the reader and writer tasks.
pub async fn establish(stream: TcpStream, role: Role, name: &str) -> Result<Link, LinkError> {
    let _ = stream.set_nodelay(true);
    let peer_addr = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let (mut r, mut w) = stream.into_split();
    let hello = LinkMsg::Hello { version: LINK_VERSION, role, name: name.to_string() };
    w.write_all(&hello.encode().0).await?;
    let (peer_role, peer_name) = match read_msg(&mut r).await? {
        Some(LinkMsg::Hello { version, role, name }) => {
            if version != LINK_VERSION {
                return Err(LinkError::Version(version));
            }
            (role, if name.is_empty() { peer_addr } else { name })
        }
        _ => return Err(LinkError::NoHello),
    };
    let (out_tx, mut out_rx) = mpsc::channel::<Frame>(SEND_QUEUE_FRAMES);
    let (in_tx, in_rx) = mpsc::channel::<LinkMsg>(RECV_QUEUE_FRAMES);
    tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if w.write_all(&frame.0).await.is_err() {
                break;
            }
        }
    });
    let who = peer_name.clone();
    tokio::spawn(async move {
        loop {
            match read_msg(&mut r).await {
                Ok(Some(msg)) => {
                    if in_tx.send(msg).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(peer = %who, "link closed: {e}");
                    break;
                }
            }
        }
    });
    Ok(Link { tx: LinkTx { tx: out_tx, peer: peer_name.clone() }, rx: in_rx, peer_role, peer_name })
}

/// Connects to a peer's link address.
pub async fn connect(addr: &str, role: Role, name: &str) -> Result<Link, LinkError> {
    let addr: SocketAddr = tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("no address for {addr}")))?;
    let stream =
        tokio::time::timeout(std::time::Duration::from_secs(5), TcpStream::connect(addr)).await.map_err(
            |_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connecting to {addr} timed out")),
        )??;
    establish(stream, role, name).await
}

/// Microseconds since the Unix epoch: comparable between processes on one machine.
pub fn unix_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}
