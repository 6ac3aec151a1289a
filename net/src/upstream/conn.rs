//! One upstream connection: plain TCP or TLS over TCP, plus its reusable read buffer.

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsRawFd, BorrowedFd, RawFd},
};

use bytes::BytesMut;
use monoio::{
    buf::IoBufMut,
    io::{AsyncReadRent, AsyncWriteRentExt},
    net::TcpStream,
};
use monoio_rustls::{ClientTlsStream, TlsConnector, TlsError};
use rustls::pki_types::ServerName;

use super::error::UpstreamError;

/// Bytes asked for per read. Big enough for a typical JSON reply or a burst of SSE events in
/// one syscall, small enough that a thousand idle connections stay cheap.
pub(crate) const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Below this much free space the buffer is grown by [`READ_CHUNK_BYTES`] before a read.
const READ_SPARE_BYTES_MIN: usize = 2 * 1024;
/// A read buffer that grew past this (a large head) is replaced before pooling the connection,
/// so idle connections do not pin big allocations.
const READ_BUF_KEEP_BYTES_MAX: usize = 64 * 1024;
/// Most resolved addresses tried per connect; the whole attempt is under one timeout anyway.
pub(crate) const ADDRS_TRIED_MAX: usize = 4;

/// The byte stream under a connection.
enum Stream {
    Plain(TcpStream),
    // Boxed: the TLS state is ~1 KiB and would bloat every plain connection otherwise.
    Tls(Box<ClientTlsStream<TcpStream>>),
}

/// An open connection to the origin. Owned by exactly one request at a time, or by the idle
/// list of its pool.
pub(crate) struct Conn {
    stream: Stream,
    /// The TCP socket under `stream` (TLS hides it), for [`Conn::is_idle_open`]. Valid for as
    /// long as `stream` lives, which is as long as `self`.
    fd: RawFd,
    /// Bytes read from the socket and not yet consumed by the head parser or body decoder.
    pub(crate) read_buf: BytesMut,
}

impl Conn {
    /// Connects to the first address that accepts (at most [`ADDRS_TRIED_MAX`]) and, when
    /// `tls` is given, completes the TLS handshake. The caller bounds the whole call in time.
    pub(crate) async fn connect(
        addrs: &[SocketAddr],
        tls: Option<&(TlsConnector, ServerName<'static>)>,
    ) -> Result<Conn, UpstreamError> {
        let mut last_error = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
        let mut tcp = None;
        for addr in addrs.iter().take(ADDRS_TRIED_MAX) {
            match TcpStream::connect_addr(*addr).await {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(e) => last_error = e,
            }
        }
        let tcp = tcp.ok_or(UpstreamError::Connect(last_error))?;
        // Requests are written in one piece; Nagle would only delay the next small request.
        tcp.set_nodelay(true).map_err(UpstreamError::Connect)?;
        let fd = tcp.as_raw_fd();
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some((connector, name)) => {
                Stream::Tls(Box::new(connector.connect(name.clone(), tcp).await.map_err(tls_error)?))
            }
        };
        Ok(Conn { stream, fd, read_buf: BytesMut::with_capacity(READ_CHUNK_BYTES) })
    }

    /// Writes all of `buf`; hands the buffer back (for reuse or a retry) whatever happens.
    pub(crate) async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let (result, buf) = match &mut self.stream {
            Stream::Plain(s) => s.write_all(buf).await,
            Stream::Tls(s) => s.write_all(buf).await,
        };
        (result.map(drop), buf)
    }

    /// Appends what the socket has (one read) to `read_buf`. `Ok(0)` means end of stream.
    /// If this future is dropped mid-read (a timeout), the buffer goes with it and the
    /// connection must be discarded, which every caller does.
    pub(crate) async fn read_more(&mut self) -> io::Result<usize> {
        let mut buf = std::mem::take(&mut self.read_buf);
        if buf.capacity() - buf.len() < READ_SPARE_BYTES_MIN {
            buf.reserve(READ_CHUNK_BYTES);
        }
        let (start, end) = (buf.len(), buf.capacity());
        let slice = buf.slice_mut(start..end);
        let (result, slice) = match &mut self.stream {
            Stream::Plain(s) => s.read(slice).await,
            Stream::Tls(s) => s.read(slice).await,
        };
        self.read_buf = slice.into_inner();
        result
    }

    /// Prepares a connection for the idle list: drops an oversized read buffer.
    pub(crate) fn trim_for_idle(&mut self) {
        if self.read_buf.capacity() > READ_BUF_KEEP_BYTES_MAX {
            self.read_buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
        }
    }

    /// Whether a pooled connection may carry a request: the peer has sent nothing since the
    /// last response, neither an end of stream (it closed the idle connection) nor stray bytes
    /// (a `408`, a TLS alert). One non-blocking `MSG_PEEK` of the socket; consumes nothing.
    #[allow(unsafe_code)]
    pub(crate) fn is_idle_open(&self) -> bool {
        if !self.read_buf.is_empty() {
            return false;
        }
        // SAFETY: `self.fd` is the descriptor of the TcpStream owned by `self.stream`, which
        // keeps it open for as long as `self` lives; the borrow ends with this function.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let mut byte = [0u8; 1];
        let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
        match rustix::net::recv(fd, &mut byte, flags) {
            // Nothing to read: still open and quiet.
            Err(rustix::io::Errno::AGAIN) => true,
            // Ok(0): closed by the peer; Ok(_): bytes nobody asked for; Err: reset or worse.
            Ok(_) | Err(_) => false,
        }
    }

    /// True for TLS connections, where a peer close without `close_notify` is a truncation.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }
}

/// monoio-rustls reports handshake failures as `Io(InvalidData(rustls::Error))`; unwrap those
/// so certificate problems surface as [`UpstreamError::Tls`], not as a connect error.
fn tls_error(e: TlsError) -> UpstreamError {
    match e {
        TlsError::Rustls(e) => UpstreamError::Tls(e),
        TlsError::Io(e) => match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(inner) => UpstreamError::Tls(inner.clone()),
            None => UpstreamError::Connect(e),
        },
    }
}

/// Errors that mean "the peer had already closed this connection" when they happen before any
/// response byte: the signature of a keep-alive connection the server timed out.
pub(crate) fn is_peer_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::NotConnected
    )
}
