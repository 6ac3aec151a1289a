//! The HTTP/1.1 client side of `gk-load run` (tokio engine): URL parsing, and one
//! request/answer exchange over a keep-alive `TcpStream`; the answer is framed and timed by
//! [`super::answer::AnswerReader`], which the io_uring engine shares. Body bytes are
//! counted, never kept.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::answer::{AnswerReader, Progress};
use super::stats::ErrorClass;

/// Initial capacity of a worker's read buffer; heads and SSE events fit easily.
pub const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Where requests go, from `--url http://HOST[:PORT][/PATH]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// `HOST[:PORT]` as given, for the Host header.
    pub authority: String,
    /// Host name or address.
    pub host: String,
    /// Port (80 when absent).
    pub port: u16,
    /// Path and query; `/v1/chat/completions` when the URL has none.
    pub path: String,
}

impl Url {
    /// Parses an `http://` URL. `https` is refused: TLS is out of scope for this tool.
    pub fn parse(text: &str) -> Result<Url, String> {
        let rest = text.strip_prefix("http://").ok_or_else(|| format!("{text:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/v1/chat/completions"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("{text:?}: bad host"));
        }
        // Bracketed IPv6 literals keep their colons inside the brackets.
        let (host, port) = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => {
                let port = authority[i + 1..].parse::<u16>().map_err(|_| format!("{text:?}: bad port"))?;
                (&authority[..i], port)
            }
            _ => (authority, 80),
        };
        if path.bytes().any(|c| c <= b' ' || c == 0x7f) {
            return Err(format!("{text:?}: path holds spaces or control bytes"));
        }
        Ok(Url {
            authority: authority.to_string(),
            host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// Resolves the host once, before the run.
    pub async fn resolve(&self) -> io::Result<SocketAddr> {
        tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "host has no address"))
    }
}

/// Opens a connection with Nagle off (requests are written in one piece).
pub async fn connect(addr: SocketAddr) -> Result<TcpStream, ErrorClass> {
    let stream = TcpStream::connect(addr).await.map_err(|_| ErrorClass::Connect)?;
    stream.set_nodelay(true).map_err(|_| ErrorClass::Connect)?;
    Ok(stream)
}

pub use super::answer::{Answer, Failure};

/// Writes `request` and reads one full answer. `rbuf` is the worker's scratch buffer.
pub async fn exchange(stream: &mut TcpStream, request: &[u8], rbuf: &mut Vec<u8>) -> Result<Answer, Failure> {
    let mut reader = AnswerReader::new();
    stream.write_all(request).await.map_err(|_| reader.read_failed())?;
    rbuf.clear();
    // Bounded: the reader fails the answer after READS_PER_ANSWER_MAX reads.
    loop {
        let n = stream.read_buf(rbuf).await.map_err(|_| reader.read_failed())?;
        if n == 0 {
            return reader.end_of_stream();
        }
        if let Progress::Done(answer) = reader.feed(rbuf, n, Instant::now())? {
            return Ok(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = Url::parse("http://127.0.0.1:8080/v1/chat/completions?x=1").expect("valid");
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, 8080);
        assert_eq!(u.authority, "127.0.0.1:8080");
        assert_eq!(u.path, "/v1/chat/completions?x=1");
        let d = Url::parse("http://example.com").expect("valid");
        assert_eq!((d.port, d.path.as_str()), (80, "/v1/chat/completions"));
        let v6 = Url::parse("http://[::1]:9000/").expect("valid");
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 9000));
        assert!(Url::parse("https://x/").is_err());
        assert!(Url::parse("http://x:99999/").is_err());
        assert!(Url::parse("http:///").is_err());
        assert!(Url::parse("http://x/a b").is_err());
    }
}
