//! The etcd anchor: three `etcd` 3.4 members (Debian's etcd-server) on
//! loopback with their default fsync, and a put client over etcd's JSON
//! gateway (HTTP/1.1 keep-alive; etcd 3.4 ships no benchmark tool in Debian).
//! The gateway adds JSON work to etcd's side, which the README states.

use super::procs::{free_tcp, Proc};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub struct EtcdCluster {
    _members: Vec<Proc>,
    pub clients: Vec<SocketAddr>,
}

impl EtcdCluster {
    pub async fn start(dir: &Path) -> Result<EtcdCluster> {
        let peers: Vec<SocketAddr> = (0..3).map(|_| free_tcp()).collect();
        let clients: Vec<SocketAddr> = (0..3).map(|_| free_tcp()).collect();
        let initial: Vec<String> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("e{i}=http://{p}"))
            .collect();
        let mut members = Vec::new();
        for i in 0..3 {
            let command = vec![
                "etcd".to_string(),
                format!("--name=e{i}"),
                format!("--data-dir={}", dir.join(format!("etcd{i}")).display()),
                format!("--listen-peer-urls=http://{}", peers[i]),
                format!("--initial-advertise-peer-urls=http://{}", peers[i]),
                format!("--listen-client-urls=http://{}", clients[i]),
                format!("--advertise-client-urls=http://{}", clients[i]),
                format!("--initial-cluster={}", initial.join(",")),
                "--initial-cluster-state=new".to_string(),
                "--initial-cluster-token=flocker-bench".to_string(),
                "--log-level=error".to_string(),
            ];
            members.push(Proc::spawn(command, dir.join(format!("etcd{i}.log")))?);
        }
        let cluster = EtcdCluster {
            _members: members,
            clients,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while cluster.leader().await.is_err() {
            if Instant::now() > deadline {
                bail!(
                    "etcd did not elect a leader within 30s (see {}/etcd*.log)",
                    dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(cluster)
    }

    /// The client address of the current leader.
    pub async fn leader(&self) -> Result<SocketAddr> {
        for addr in &self.clients {
            let Ok(mut conn) = EtcdConn::connect(*addr).await else {
                continue;
            };
            let Ok(status) = conn.post("/v3/maintenance/status", &json!({})).await else {
                continue;
            };
            let me = &status["header"]["member_id"];
            if !me.is_null() && status["leader"] == *me {
                return Ok(*addr);
            }
        }
        bail!("no etcd leader")
    }
}

/// One keep-alive HTTP/1.1 connection to an etcd member.
pub struct EtcdConn {
    reader: BufReader<TcpStream>,
}

impl EtcdConn {
    pub async fn connect(addr: SocketAddr) -> Result<EtcdConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(EtcdConn {
            reader: BufReader::new(stream),
        })
    }

    pub async fn put(&mut self, key: &str, value: &str) -> Result<()> {
        let reply = self
            .post(
                "/v3/kv/put",
                &json!({"key": b64(key.as_bytes()), "value": b64(value.as_bytes())}),
            )
            .await?;
        if reply["header"]["revision"].is_null() {
            bail!("etcd put failed: {reply}");
        }
        Ok(())
    }

    async fn post(&mut self, path: &str, body: &Value) -> Result<Value> {
        let body = body.to_string();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: etcd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.reader.get_mut().write_all(request.as_bytes()).await?;
        let mut content_length = None;
        let mut chunked = false;
        let mut line = String::new();
        self.reader.read_line(&mut line).await?;
        if !line.starts_with("HTTP/1.1 200") {
            bail!("etcd answered {}", line.trim());
        }
        loop {
            line.clear();
            if self.reader.read_line(&mut line).await? == 0 {
                bail!("etcd closed the connection");
            }
            let header = line.trim().to_ascii_lowercase();
            if header.is_empty() {
                break;
            }
            if let Some(v) = header.strip_prefix("content-length:") {
                content_length = Some(v.trim().parse::<usize>()?);
            }
            if header.starts_with("transfer-encoding:") && header.contains("chunked") {
                chunked = true;
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim(), 16).context("chunk size")?;
                let mut chunk = vec![0u8; size + 2];
                self.reader.read_exact(&mut chunk).await?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            let len = content_length.context("etcd reply without a length")?;
            body.resize(len, 0);
            self.reader.read_exact(&mut body).await?;
        }
        Ok(serde_json::from_slice(&body)?)
    }
}

fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64() {
        assert_eq!(super::b64(b"k"), "aw==");
        assert_eq!(super::b64(b"ke"), "a2U=");
        assert_eq!(super::b64(b"key"), "a2V5");
    }
}
