//! TURN over TCP and TLS (RFC 5766 §2.1, RFC 6062 framing of the client connection): the
//! byte stream carries STUN messages (20-byte header, length in bytes 2..4) and
//! ChannelData messages (4-byte header, padded to a multiple of four over streams). This
//! adapter cuts the stream into those messages so the TURN server sees datagrams, and pads
//! outgoing ChannelData.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{Mutex, Notify};
use webrtc_util::Conn;

/// The largest message accepted from a stream (the server reads 1500-byte datagrams).
const MAX_FRAME: usize = 1500;

/// Why a frame header is not acceptable.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// Neither STUN nor ChannelData.
    NotTurn,
    /// Longer than the server accepts.
    TooLong(usize),
}

/// The length of the frame starting with `header` (4 bytes) and how many padding bytes
/// follow it on the stream.
pub(crate) fn frame_len(header: [u8; 4]) -> Result<(usize, usize), FrameError> {
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let (total, pad) = match header[0] >> 6 {
        0b00 => (20 + len, 0),                // STUN: length excludes the header
        0b01 => (4 + len, (4 - len % 4) % 4), // ChannelData 0x4000-0x7FFF
        _ => return Err(FrameError::NotTurn),
    };
    if total > MAX_FRAME {
        return Err(FrameError::TooLong(total));
    }
    Ok((total, pad))
}

/// One TCP or TLS client connection seen as a datagram `Conn`.
pub(crate) struct StreamConn<S> {
    reader: Mutex<ReadHalf<S>>,
    writer: Mutex<WriteHalf<S>>,
    local: SocketAddr,
    peer: SocketAddr,
    closed: AtomicBool,
    pub(crate) gone: Notify,
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> StreamConn<S> {
    pub fn new(stream: S, local: SocketAddr, peer: SocketAddr) -> Self {
        let (r, w) = tokio::io::split(stream);
        Self {
            reader: Mutex::new(r),
            writer: Mutex::new(w),
            local,
            peer,
            closed: AtomicBool::new(false),
            gone: Notify::new(),
        }
    }

    fn finish(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            self.gone.notify_waiters();
            self.gone.notify_one();
        }
    }
}

fn io_err(kind: std::io::ErrorKind, msg: &str) -> webrtc_util::Error {
    webrtc_util::Error::from(std::io::Error::new(kind, msg.to_string()))
}

#[async_trait]
impl<S: AsyncRead + AsyncWrite + Send + Sync + 'static> Conn for StreamConn<S> {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(())
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let mut r = self.reader.lock().await;
        let result = async {
            let mut header = [0u8; 4];
            r.read_exact(&mut header).await?;
            let (total, pad) = frame_len(header).map_err(|e| {
                io_err(
                    std::io::ErrorKind::InvalidData,
                    &format!("bad TURN frame: {e:?}"),
                )
            })?;
            if total > buf.len() {
                return Err(io_err(std::io::ErrorKind::InvalidData, "frame too long"));
            }
            buf[..4].copy_from_slice(&header);
            r.read_exact(&mut buf[4..total]).await?;
            let mut skip = [0u8; 3];
            r.read_exact(&mut skip[..pad]).await?;
            Ok::<_, webrtc_util::Error>(total)
        }
        .await;
        match result {
            Ok(n) => Ok((n, self.peer)),
            Err(e) => {
                // EOF or garbage: the connection (and its allocation) ends.
                self.finish();
                Err(e)
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.send_to(buf, self.peer).await
    }

    async fn send_to(&self, buf: &[u8], _target: SocketAddr) -> webrtc_util::Result<usize> {
        let mut w = self.writer.lock().await;
        let pad = if !buf.is_empty() && buf[0] >> 6 == 0b01 {
            (4 - buf.len() % 4) % 4
        } else {
            0
        };
        let r = async {
            w.write_all(buf).await?;
            if pad > 0 {
                w.write_all(&[0u8; 3][..pad]).await?;
            }
            w.flush().await
        }
        .await;
        if let Err(e) = r {
            self.finish();
            return Err(e.into());
        }
        Ok(buf.len())
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        let mut w = self.writer.lock().await;
        let _ = w.shutdown().await;
        self.finish();
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_by_their_headers() {
        assert_eq!(frame_len([0x00, 0x01, 0x00, 0x08]), Ok((28, 0)));
        assert_eq!(frame_len([0x40, 0x00, 0x00, 0x05]), Ok((9, 3)));
        assert_eq!(frame_len([0x40, 0x00, 0x00, 0x04]), Ok((8, 0)));
        assert_eq!(frame_len([0x80, 0, 0, 0]), Err(FrameError::NotTurn));
        assert_eq!(
            frame_len([0x00, 0x01, 0x10, 0x00]),
            Err(FrameError::TooLong(4116))
        );
    }

    #[tokio::test]
    async fn a_stream_reads_back_as_messages() {
        let (a, b) = tokio::io::duplex(4096);
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let server = StreamConn::new(a, addr, addr);
        let client = StreamConn::new(b, addr, addr);
        let stun = [
            0u8, 1, 0, 4, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 9, 9, 9, 9,
        ];
        let chan = [0x40u8, 0, 0, 3, 7, 7, 7];
        client.send_to(&chan, addr).await.expect("send");
        client.send_to(&stun, addr).await.expect("send");
        let mut buf = [0u8; 1500];
        let (n, _) = server.recv_from(&mut buf).await.expect("channel data");
        assert_eq!(&buf[..n], &chan);
        let (n, _) = server.recv_from(&mut buf).await.expect("stun");
        assert_eq!(&buf[..n], &stun);
        drop(client);
        assert!(
            server.recv_from(&mut buf).await.is_err(),
            "EOF ends the connection"
        );
    }
}
