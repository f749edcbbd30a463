//! A minimal protocol client over tokio-tungstenite: connect, hello, welcome, then typed
//! messages both ways. The bots use it, and so can tests and tools.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use proto::{
    check_welcome, decode_server, encode_client, ClientMsg, Encoding, ErrorCode, Hello, ServerMsg, Welcome,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::limits::{CONNECT_TIMEOUT_MS, MAX_SERVER_FRAME_BYTES, READ_BUFFER_BYTES};
use crate::BotError;

/// One session with a gateway, past its welcome.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    encoding: Encoding,
    pub welcome: Welcome,
    /// The close code the gateway sent, once it closed.
    pub close_code: Option<u16>,
}

impl Client {
    /// Connects to `url` (`ws://HOST:PORT/ws`), says hello with `token` and waits for the
    /// welcome. A refusal comes back as [`BotError::Refused`] with the gateway's code.
    pub async fn connect(url: &str, token: &str, encoding: Encoding) -> Result<Client, BotError> {
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_SERVER_FRAME_BYTES))
            .max_frame_size(Some(MAX_SERVER_FRAME_BYTES))
            .read_buffer_size(READ_BUFFER_BYTES);
        let limit = Duration::from_millis(CONNECT_TIMEOUT_MS);
        let (ws, _) = tokio::time::timeout(
            limit,
            tokio_tungstenite::connect_async_with_config(url, Some(config), true),
        )
        .await
        .map_err(|_| BotError::Timeout(format!("connecting to {url}")))?
        .map_err(|e| BotError::Connect { url: url.to_string(), error: e.to_string() })?;
        let mut client = Client {
            ws,
            encoding,
            welcome: Welcome {
                version: 0,
                agent: world::EntityId(0),
                region: world::RegionId::new(0, 0),
                tick_hz: 1,
                draw_distance: 0.0,
            },
            close_code: None,
        };
        client.send(&ClientMsg::Hello(Hello::new(token))).await?;
        let first = tokio::time::timeout(limit, client.recv())
            .await
            .map_err(|_| BotError::Timeout("waiting for the welcome".into()))??;
        let first = first.ok_or_else(|| BotError::Closed("the gateway closed before the welcome".into()))?;
        client.welcome = check_welcome(first).map_err(|e| match e {
            proto::ProtoError::Refused { code, message } => BotError::Refused { code, message },
            other => BotError::Protocol(other.to_string()),
        })?;
        Ok(client)
    }

    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    pub async fn send(&mut self, msg: &ClientMsg) -> Result<(), BotError> {
        let message = match encode_client(msg, self.encoding) {
            proto::Frame::Text(s) => Message::text(s),
            proto::Frame::Binary(b) => Message::binary(b),
        };
        self.ws.send(message).await.map_err(|e| BotError::Closed(e.to_string()))
    }

    /// The next protocol message; `None` once the gateway closed the session.
    pub async fn recv(&mut self) -> Result<Option<ServerMsg>, BotError> {
        loop {
            let bytes = match self.ws.next().await {
                Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
                Some(Ok(Message::Binary(b))) => b.to_vec(),
                Some(Ok(Message::Close(frame))) => {
                    self.close_code = frame.map(|f| u16::from(f.code));
                    return Ok(None);
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(BotError::Closed(e.to_string())),
                None => return Ok(None),
            };
            return decode_server(&bytes, self.encoding)
                .map(Some)
                .map_err(|e| BotError::Protocol(format!("the gateway sent a bad frame: {e}")));
        }
    }

    /// Closes the session politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Whether an error message from the gateway ends the session.
pub fn is_fatal(msg: &ServerMsg) -> Option<ErrorCode> {
    match msg {
        ServerMsg::Error { code, .. } if code.closes_session() => Some(*code),
        _ => None,
    }
}
