//! A client connection, plain TCP or TLS, behind one type, whose writes fail once they
//! stop making progress.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;

use crate::timers::{deadline_in, CoarseTimers};

/// A TLS-terminated client connection.
pub type TlsClientStream = monoio_rustls::ServerTlsStream<TcpStream>;

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsClientStream>),
}

/// A client connection as the server reads and writes it.
///
/// Every write carries a progress deadline: a write call that moves no byte for
/// `write_timeout` (within one tick of the shard's coarse timers) fails with
/// [`io::ErrorKind::TimedOut`], so a client that stops reading cannot hold its connection
/// (or the upstream connection relaying to it) forever.
pub struct ClientStream {
    io: Io,
    write_timeout: Duration,
    timers: CoarseTimers,
    write_timed_out: bool,
}

impl ClientStream {
    /// A plain HTTP connection.
    pub(crate) fn plain(tcp: TcpStream, write_timeout: Duration, timers: CoarseTimers) -> Self {
        ClientStream { io: Io::Plain(tcp), write_timeout, timers, write_timed_out: false }
    }

    /// An HTTPS connection whose handshake is done.
    pub(crate) fn tls(tls: TlsClientStream, write_timeout: Duration, timers: CoarseTimers) -> Self {
        ClientStream { io: Io::Tls(Box::new(tls)), write_timeout, timers, write_timed_out: false }
    }

    /// Whether this is an HTTPS connection.
    pub fn is_tls(&self) -> bool {
        matches!(self.io, Io::Tls(_))
    }

    /// Waits until a plain connection has something to read (or is closed), holding no
    /// buffer meanwhile. A TLS connection returns at once: only its record layer can tell
    /// whether plaintext arrived, so it has to read.
    pub async fn readable(&mut self) -> io::Result<()> {
        match &self.io {
            Io::Plain(s) => s.readable(false).await,
            Io::Tls(_) => Ok(()),
        }
    }

    /// Reads what is available, appending to `buf` (which must have spare capacity).
    /// `Ok(0)` means the peer closed.
    pub async fn read_append(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        debug_assert!(buf.capacity() > buf.len(), "read_append needs spare capacity");
        let len = buf.len();
        let slice = buf.slice_mut(len..);
        let (res, slice) = match &mut self.io {
            Io::Plain(s) => s.read(slice).await,
            Io::Tls(s) => s.read(slice).await,
        };
        (res, slice.into_inner())
    }

    /// Writes all of `buf`, failing when one write call moves nothing for the write timeout.
    ///
    /// On a timeout the buffer went with the cancelled write and an empty one comes back; the
    /// connection must close. Over TLS one call flushes up to a record batch, so progress is
    /// measured per batch rather than per byte.
    pub async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let total = buf.len();
        let mut buf = buf;
        let mut written = 0;
        while written < total {
            let slice = buf.slice(written..);
            let call = async {
                match &mut self.io {
                    Io::Plain(s) => s.write(slice).await,
                    Io::Tls(s) => s.write(slice).await,
                }
            };
            let deadline = self.timers.sleep_until(deadline_in(self.write_timeout));
            // Biased: the write first, so one that completes at once never arms the deadline.
            let done = monoio::select! {
                biased;
                done = call => Some(done),
                _ = deadline => None,
            };
            let Some((res, slice)) = done else {
                self.write_timed_out = true;
                return (Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading")), Vec::new());
            };
            buf = slice.into_inner();
            match res {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                Ok(n) => written += n,
                Err(e) => {
                    // ETIMEDOUT: the kernel's TCP_USER_TIMEOUT (set to the same deadline)
                    // gave up on a peer whose window stayed shut; the same stall, seen first.
                    self.write_timed_out |= e.kind() == io::ErrorKind::TimedOut;
                    return (Err(e), buf);
                }
            }
        }
        (Ok(()), buf)
    }

    /// Whether a write failed for making no progress within the write timeout.
    pub fn write_timed_out(&self) -> bool {
        self.write_timed_out
    }

    /// Closes the write side politely (TLS close_notify, TCP FIN). A TLS close_notify is a
    /// write like any other, bounded by the write timeout; after a write timed out there is
    /// nobody reading to be polite to.
    pub async fn shutdown(&mut self) {
        if self.write_timed_out {
            return;
        }
        let _ = match &mut self.io {
            Io::Plain(s) => s.shutdown().await,
            Io::Tls(s) => monoio::time::timeout(self.write_timeout, s.shutdown()).await.unwrap_or(Ok(())),
        };
    }
}
