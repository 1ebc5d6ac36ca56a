//! HTTP health probes of one instance, as a load balancer's health checker
//! does them: a GET with a deadline, healthy on a 200.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What one round of probes saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probed {
    /// `/healthz` answered 200 in time: the process is alive.
    pub healthy: bool,
    /// `/readyz` answered 200 in time: it takes work.
    pub ready: bool,
}

/// Probes `/healthz` and `/readyz` at `addr`, each within `timeout`.
pub async fn probe(addr: SocketAddr, timeout: Duration) -> Probed {
    let healthy = get(addr, "/healthz", timeout).await == Some(200);
    let ready = healthy && get(addr, "/readyz", timeout).await == Some(200);
    Probed { healthy, ready }
}

/// The status code of `GET path`, or None when there is no answer in time.
pub async fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Option<u16> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.ok()?;
        // The status line is all we need: "HTTP/1.1 200 OK".
        let mut buf = [0u8; 64];
        let mut n = 0;
        while n < buf.len() && !buf[..n].contains(&b'\n') {
            match s.read(&mut buf[n..]).await.ok()? {
                0 => break,
                k => n += k,
            }
        }
        std::str::from_utf8(&buf[..n])
            .ok()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    tokio::time::timeout(timeout, exchange).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn server(reply: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn reads_the_status_code() {
        let ok = server(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        let down = server(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        let t = Duration::from_secs(2);
        assert_eq!(get(ok, "/healthz", t).await, Some(200));
        assert_eq!(
            probe(ok, t).await,
            Probed {
                healthy: true,
                ready: true
            }
        );
        assert_eq!(get(down, "/readyz", t).await, Some(503));
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        // Accepts (the kernel does) but never answers, like a paused container.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let started = std::time::Instant::now();
        assert_eq!(
            get(addr, "/healthz", Duration::from_millis(200)).await,
            None
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(l);
    }
}
