//! A client connection, plain TCP or TLS, behind one type.

use std::io;

use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

/// A TLS-terminated client connection.
pub type TlsClientStream = monoio_rustls::ServerTlsStream<TcpStream>;

/// A client connection as the server reads and writes it.
pub enum ClientStream {
    /// Plain HTTP.
    Plain(TcpStream),
    /// HTTPS, terminated here.
    Tls(Box<TlsClientStream>),
}

impl ClientStream {
    /// Reads what is available, appending to `buf` (which must have spare capacity).
    /// `Ok(0)` means the peer closed.
    pub async fn read_append(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        debug_assert!(buf.capacity() > buf.len(), "read_append needs spare capacity");
        let len = buf.len();
        let slice = buf.slice_mut(len..);
        let (res, slice) = match self {
            ClientStream::Plain(s) => s.read(slice).await,
            ClientStream::Tls(s) => s.read(slice).await,
        };
        (res, slice.into_inner())
    }

    /// Writes all of `buf`.
    pub async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let (res, buf) = match self {
            ClientStream::Plain(s) => s.write_all(buf).await,
            ClientStream::Tls(s) => s.write_all(buf).await,
        };
        (res.map(|_| ()), buf)
    }

    /// Closes the write side politely (TLS close_notify, TCP FIN).
    pub async fn shutdown(&mut self) {
        let _ = match self {
            ClientStream::Plain(s) => s.shutdown().await,
            ClientStream::Tls(s) => s.shutdown().await,
        };
    }
}
