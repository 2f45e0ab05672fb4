//! Accepting clients (admission against the connection limits) and the line protocol of
//! one connection; binding the socket is `socket.rs`, the methods `methods.rs`.

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::rpc::{encode_response, parse_request, RpcError};
use protocol::ErrorKind;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info, warn};

use super::methods;
use super::peer::PeerCredentials;
use super::state::State;

/// Accept clients until the future is dropped.
pub async fn accept_loop(state: Arc<State>, listener: UnixListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // identified and counted here, in accept order, so that the connection
                // over a limit is the one refused (a spawned task may run out of order)
                let admission = admit(&state, &stream);
                tokio::spawn(connection(state.clone(), stream, admission));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A counted connection: one of `max_connections`, and one of its uid's
/// (`max_connections_per_uid`, root: `max_connections_root`). Dropping it gives both
/// back.
struct Admission {
    state: Arc<State>,
    uid: Option<u32>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.state.connections.fetch_sub(1, Ordering::Relaxed);
        if let Some(uid) = self.uid {
            let mut m = self
                .state
                .connections_by_uid
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(n) = m.get_mut(&uid) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&uid);
                }
            }
        }
    }
}

/// Who the client is and whether it may have one more connection.
fn admit(
    state: &Arc<State>,
    stream: &UnixStream,
) -> Result<(PeerCredentials, Admission), Option<String>> {
    let peer = super::peer::of(stream.as_fd()).map_err(|e| {
        warn!("cannot identify client, dropping it: {e}");
        None
    })?;
    let open = state.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let mut admission = Admission {
        state: state.clone(),
        uid: None,
    };
    let config = state.config();
    let max = config.max_connections as u64;
    if open > max {
        warn!(
            client_uid = peer.uid,
            "refused a client: {max} connections open"
        );
        return Err(Some(format!(
            "too many connections ({max}); try again later"
        )));
    }
    // One user must not take every connection. Root has a cap of its own, larger
    // than a user's but below the global one, so that a runaway root script cannot
    // lock every user out either.
    let n = {
        let mut m = state
            .connections_by_uid
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let n = m.entry(peer.uid).or_insert(0);
        *n += 1;
        *n
    };
    admission.uid = Some(peer.uid);
    let (max, key) = if peer.uid == 0 {
        // never more than half of all, whatever the file says
        let half = (config.max_connections / 2).max(1);
        (
            config.max_connections_root.min(half),
            "max_connections_root",
        )
    } else {
        (config.max_connections_per_uid, "max_connections_per_uid")
    };
    if n > max {
        warn!(
            client_uid = peer.uid,
            "refused a client: uid {} has {max} connections open", peer.uid
        );
        return Err(Some(format!(
            "too many connections of uid {} ({max}, {key}); close some first",
            peer.uid
        )));
    }
    Ok((peer, admission))
}

async fn refuse(wr: &mut tokio::net::unix::OwnedWriteHalf, msg: String) {
    let line = encode_response(None, Err(&RpcError::of(ErrorKind::LimitReached, msg)));
    // a client that does not read even this is not waited for
    let _ = tokio::time::timeout(Duration::from_secs(1), wr.write_all(&line)).await;
}

async fn connection(
    state: Arc<State>,
    stream: UnixStream,
    admission: Result<(PeerCredentials, Admission), Option<String>>,
) {
    let (rd, mut wr) = stream.into_split();
    let (peer, _admission) = match admission {
        Ok(a) => a,
        Err(Some(msg)) => {
            // (its counts were given back when `admit` dropped its Admission)
            refuse(&mut wr, msg).await;
            return;
        }
        Err(None) => return,
    };
    debug!(
        client_uid = peer.uid,
        client_pid = peer.pid,
        privileged = peer.privileged,
        "client connected"
    );
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let mut line = Vec::new();
    loop {
        let config = state.config();
        let limit = config.max_request_bytes;
        // A client that sends nothing (or dribbles a line) for this long is dropped:
        // it would hold a connection slot forever.
        let idle = Duration::from_secs(config.idle_timeout_secs.max(1));
        let read = tokio::time::timeout(idle, read_line(&mut rd, &mut line, limit)).await;
        let Ok(read) = read else {
            debug!(client_uid = peer.uid, "idle for {idle:?}; closing");
            break;
        };
        let resp = match read {
            Err(e) => {
                debug!("client read: {e}");
                break;
            }
            Ok(Line::Eof) => break,
            Ok(Line::TooLong) => Some(Reply {
                id: None,
                result: Err(RpcError::of(
                    ErrorKind::RequestTooLarge,
                    format!("request line longer than {limit} bytes; discarded"),
                )),
            }),
            Ok(Line::Complete) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(Line::Complete) => handle_line(&state, peer, &line).await,
        };
        let Some(reply) = resp else { continue };
        state.count_request(peer.uid, reply.result.is_err());
        let out = match &reply.result {
            Ok(v) => encode_response(reply.id.as_deref(), Ok(v)),
            Err(e) => encode_response(reply.id.as_deref(), Err(e)),
        };
        // Writes are bounded too: a client that sends requests but does not read the
        // replies would otherwise hold its connection (and a reply in memory) forever.
        // One reply is written at a time, so nothing else queues up meanwhile.
        match tokio::time::timeout(idle, wr.write_all(&out)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!("client write: {e}");
                break;
            }
            Err(_) => {
                info!(
                    client_uid = peer.uid,
                    "client read no reply for {idle:?}; closing"
                );
                break;
            }
        }
    }
    debug!(client_uid = peer.uid, "client disconnected");
}

/// A reply: to `id` (`None`: `null`), a result or an error.
struct Reply {
    id: Option<Box<RawValue>>,
    result: Result<serde_json::Value, RpcError>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// `buf` holds a line (without its newline).
    Complete,
    /// The line was longer than the limit; it was read and thrown away.
    TooLong,
    Eof,
}

/// Read one line into `buf` holding at most `limit` bytes of it: a longer line is
/// consumed up to its newline without being stored, so the connection stays usable.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    rd: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    loop {
        let avail = rd.fill_buf().await?;
        if avail.is_empty() {
            return Ok(if too_long {
                Line::TooLong
            } else if buf.is_empty() {
                Line::Eof
            } else {
                Line::Complete
            });
        }
        let (chunk, used, done) = match memchr::memchr(b'\n', avail) {
            Some(i) => (&avail[..i], i + 1, true),
            None => (avail, avail.len(), false),
        };
        if !too_long {
            if buf.len() + chunk.len() > limit {
                too_long = true;
                buf.clear();
                buf.shrink_to(64 * 1024);
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        rd.consume(used);
        if done {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

/// Answer one request line; `None` for a notification (a request without id).
async fn handle_line(state: &Arc<State>, peer: PeerCredentials, line: &[u8]) -> Option<Reply> {
    let text = match std::str::from_utf8(line) {
        Ok(t) => t,
        Err(e) => {
            return Some(Reply {
                id: None,
                result: Err(RpcError::of(
                    ErrorKind::ParseError,
                    format!(
                        "request is not valid UTF-8 (bad byte at offset {})",
                        e.valid_up_to()
                    ),
                )),
            })
        }
    };
    let req = match parse_request(text) {
        Ok(r) => r,
        Err(bad) => {
            return Some(Reply {
                id: bad.id,
                result: Err(bad.error),
            })
        }
    };
    let t0 = Instant::now();
    let result = methods::dispatch(state, peer, &req.method, req.params).await;
    debug!(
        method = %req.method,
        client_uid = peer.uid,
        ok = result.is_ok(),
        micros = t0.elapsed().as_micros() as u64,
        "request"
    );
    // JSON-RPC 2.0: notifications get no answer, not even an error.
    let id = req.id?;
    Some(Reply {
        id: Some(id),
        result,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], limit: usize) -> Vec<(Line, Vec<u8>)> {
        // a tiny buffer so lines cross buffer refills
        let mut rd = BufReader::with_capacity(4, input);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        loop {
            let l = read_line(&mut rd, &mut buf, limit).await.unwrap();
            if l == Line::Eof {
                return out;
            }
            out.push((l, buf.clone()));
        }
    }

    #[tokio::test]
    async fn bounded_lines() {
        let got = lines(b"short\nthis one is too long\nok\nlast", 8).await;
        assert_eq!(
            got,
            vec![
                (Line::Complete, b"short".to_vec()),
                (Line::TooLong, vec![]),
                (Line::Complete, b"ok".to_vec()),
                (Line::Complete, b"last".to_vec()),
            ]
        );
        let got = lines(b"0123456789", 8).await;
        assert_eq!(got, vec![(Line::TooLong, vec![])]);
        let got = lines(b"01234567\n", 8).await;
        assert_eq!(got, vec![(Line::Complete, b"01234567".to_vec())]);
    }
}
