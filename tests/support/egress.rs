//! An HTTP CONNECT egress proxy on loopback, as platform networks run (squid, an envoy
//! egress): it reads a `CONNECT host:port` head, then answers `200` and relays bytes both ways,
//! or refuses with a status. It records every CONNECT head it read and every byte it relayed
//! in each direction, so a test can say what such a proxy could see.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy answers to CONNECT.
#[derive(Debug, Clone, Copy)]
pub enum ProxyAnswer {
    /// `200 Connection established`, then relay.
    Tunnel,
    /// This status (407 with `Proxy-Authenticate`), and close.
    Refuse(u16),
    /// Nothing: the CONNECT head is read and the connection held open, unanswered.
    Silent,
}

#[derive(Default)]
struct Seen {
    heads: Mutex<Vec<String>>,
    /// Bytes relayed from the gateway to the upstream.
    up: Mutex<Vec<u8>>,
    /// Bytes relayed from the upstream to the gateway.
    down: Mutex<Vec<u8>>,
}

/// The proxy, running until dropped.
pub struct ConnectProxy {
    pub addr: SocketAddr,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl ConnectProxy {
    /// A proxy on an OS-chosen loopback port that answers every CONNECT with `answer`.
    pub async fn start(answer: ProxyAnswer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream, answer, seen.clone()));
                }
            }
        });
        Self { addr, seen, task }
    }

    /// `http://127.0.0.1:PORT`, for `upstream.proxy` or `HTTPS_PROXY`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every CONNECT request head read so far, as text, without its final blank line.
    pub fn heads(&self) -> Vec<String> {
        self.seen.heads.lock().unwrap().clone()
    }

    /// Every byte relayed so far, each direction: (gateway → upstream, upstream → gateway).
    pub fn relayed(&self) -> (Vec<u8>, Vec<u8>) {
        (
            self.seen.up.lock().unwrap().clone(),
            self.seen.down.lock().unwrap().clone(),
        )
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut client: TcpStream, answer: ProxyAnswer, seen: Arc<Seen>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte: nothing past the head may be read here, it belongs to the tunnel.
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head[..head.len() - 4]).into_owned();
    let target = head
        .strip_prefix("CONNECT ")
        .and_then(|rest| rest.split(' ').next())
        .map(str::to_owned);
    seen.heads.lock().unwrap().push(head);
    let status = match answer {
        ProxyAnswer::Silent => {
            // Until the gateway gives up and closes.
            let _ = client.read(&mut byte).await;
            return;
        }
        ProxyAnswer::Refuse(status) => status,
        ProxyAnswer::Tunnel => match target {
            None => 405,
            Some(target) => match TcpStream::connect(target.as_str()).await {
                Err(_) => 502,
                Ok(upstream) => {
                    let ok = b"HTTP/1.1 200 Connection established\r\n\r\n";
                    if client.write_all(ok).await.is_err() {
                        return;
                    }
                    let (client_read, client_write) = client.into_split();
                    let (upstream_read, upstream_write) = upstream.into_split();
                    let up = relay(client_read, upstream_write, seen.clone(), true);
                    let down = relay(upstream_read, client_write, seen, false);
                    tokio::join!(up, down);
                    return;
                }
            },
        },
    };
    let authenticate = if status == 407 {
        "Proxy-Authenticate: Basic realm=\"egress\"\r\n"
    } else {
        ""
    };
    let refusal = format!(
        "HTTP/1.1 {status} Refused\r\n{authenticate}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let _ = client.write_all(refusal.as_bytes()).await;
}

/// Copies `from` to `to`, recording each chunk before it is passed on; ends at EOF or error.
async fn relay(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, seen: Arc<Seen>, up: bool) {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let record = if up { &seen.up } else { &seen.down };
        record.lock().unwrap().extend_from_slice(&chunk[..n]);
        if to.write_all(&chunk[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
