//! Where the bridge stores messages: chain files under the data dir (the embedded
//! default) or JetStream. One attempt per call; the shipper retries.

use std::collections::HashMap;
use std::fs::File;
use std::io::{IoSlice, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, stream::LastRawMessageErrorKind};

use super::events::{AuxMessage, AuxStream};
use super::nats::{self, NatsError};
use super::BridgeError;
use crate::audit::message::{Cursor, Message};
use crate::audit::AuditError;
use crate::config::{FsyncPolicy, NatsConfig};

// `aux_lines` is indexed by `AuxStream as usize`.
const _: () = assert!(AuxStream::Sessions as usize + 1 == AuxStream::ALL.len());

/// Largest embedded aux file before it is rotated to `<name>.1` (the old `.1` is dropped).
const AUX_FILE_BYTES_MAX: u64 = 256 << 20;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BridgeError + '_ {
    move |source| BridgeError::Audit(AuditError::Io { path: path.to_path_buf(), source })
}

/// The chain file of one instance.
pub fn chain_file(data_dir: &Path, node: &str, inst: &str) -> PathBuf {
    data_dir.join("audit").join(format!("{node}.{inst}.jsonl"))
}

/// Writes `bytes` and a newline with one `writev(2)` (a batch is up to ~400 KiB: no
/// copy just to add the newline), looping on short writes like `write_all`.
fn write_line(file: &mut File, bytes: &[u8]) -> std::io::Result<()> {
    let total = bytes.len().saturating_add(1);
    let mut done = 0usize;
    while done < total {
        let written = match bytes.get(done..) {
            Some(rest) if !rest.is_empty() => file.write_vectored(&[IoSlice::new(rest), IoSlice::new(b"\n")]),
            _ => file.write(b"\n"),
        };
        match written {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => done = done.saturating_add(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Embedded storage: one append-only JSON-lines file per chain.
#[derive(Debug)]
pub struct FileSink {
    data_dir: PathBuf,
    path: PathBuf,
    file: File,
    fsync: FsyncPolicy,
    unsynced: bool,
    aux: HashMap<AuxStream, (File, u64)>,
    /// Lines of one `store_aux` call, per stream (indexed by `AuxStream as usize`).
    aux_lines: Box<[Vec<u8>; AuxStream::ALL.len()]>,
}

impl FileSink {
    /// Creates the chain file of a new instance.
    pub fn create(data_dir: &Path, node: &str, inst: &str, fsync: FsyncPolicy) -> Result<FileSink, BridgeError> {
        let path = chain_file(data_dir, node, inst);
        let dir = data_dir.join("audit");
        crate::audit::private::create_dir_all(&dir).map_err(io(&dir))?;
        let file = crate::audit::private::options().append(true).create_new(true).open(&path).map_err(io(&path))?;
        Ok(FileSink {
            data_dir: data_dir.to_path_buf(),
            path,
            file,
            fsync,
            unsynced: false,
            aux: HashMap::new(),
            aux_lines: Default::default(),
        })
    }

    /// Appends one message as one line, with one `writev(2)`.
    pub fn store(&mut self, bytes: &[u8]) -> Result<(), BridgeError> {
        write_line(&mut self.file, bytes).map_err(io(&self.path))?;
        match self.fsync {
            FsyncPolicy::Always => self.file.sync_data().map_err(io(&self.path))?,
            FsyncPolicy::Interval => self.unsynced = true,
            FsyncPolicy::Never => {}
        }
        Ok(())
    }

    /// Appends aux messages to `<data_dir>/streams/<stream>.jsonl`, `{"subject":…,"msg":…}`
    /// per line, with one `write(2)` per stream per call.
    pub fn store_aux(&mut self, msgs: &[AuxMessage]) -> Result<(), BridgeError> {
        for lines in self.aux_lines.iter_mut() {
            lines.clear();
        }
        for m in msgs {
            let line = &mut self.aux_lines[m.stream as usize];
            line.extend_from_slice(b"{\"subject\":\"");
            line.extend_from_slice(m.stream.prefix().as_bytes());
            line.push(b'.');
            line.extend_from_slice(m.suffix.as_bytes());
            line.extend_from_slice(b"\",\"msg\":");
            line.extend_from_slice(&m.body);
            line.extend_from_slice(b"}\n");
        }
        for stream in AuxStream::ALL {
            let lines = &self.aux_lines[stream as usize];
            if lines.is_empty() {
                continue;
            }
            let dir = self.data_dir.join("streams");
            let path = dir.join(stream.file_name());
            let (file, size) = match self.aux.entry(stream) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    crate::audit::private::create_dir_all(&dir).map_err(io(&dir))?;
                    let f =
                        crate::audit::private::options().append(true).create(true).open(&path).map_err(io(&path))?;
                    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                    v.insert((f, size))
                }
            };
            file.write_all(lines).map_err(io(&path))?;
            *size += lines.len() as u64;
            if *size > AUX_FILE_BYTES_MAX {
                let _ = std::fs::rename(&path, path.with_extension("jsonl.1"));
                self.aux.remove(&stream);
            }
        }
        Ok(())
    }

    /// `fsync: interval`: flushes what was written since the last call.
    pub fn sync(&mut self) -> Result<(), BridgeError> {
        if std::mem::take(&mut self.unsynced) {
            self.file.sync_data().map_err(io(&self.path))?;
        }
        Ok(())
    }

    /// The cursor stored last in an instance's chain file, cutting off a torn last
    /// line (a message whose write never completed was never stored). `None` when the
    /// file holds no complete message.
    pub fn recover_cursor(data_dir: &Path, node: &str, inst: &str) -> Result<Option<Cursor>, BridgeError> {
        let path = chain_file(data_dir, node, inst);
        let mut file = match std::fs::OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(io(&path))?;
        let complete = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if complete < text.len() {
            tracing::warn!(path = %path.display(), bytes = text.len() - complete, "cutting a torn last line off an audit chain file");
            file.set_len(complete as u64).map_err(io(&path))?;
            file.seek(SeekFrom::End(0)).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        let last = text[..complete].split(|b| *b == b'\n').rev().find(|l| !l.is_empty());
        match last {
            None => Ok(None),
            Some(line) => serde_json::from_slice::<Message>(line).map(|m| Some(m.cursor)).map_err(|e| {
                BridgeError::Audit(AuditError::State {
                    path: path.clone(),
                    message: format!("last line is not a message: {e}"),
                })
            }),
        }
    }
}

/// JetStream storage of one chain on subject `bh.audit.<node>.<inst>`.
#[derive(Debug)]
pub struct NatsSink {
    js: jetstream::Context,
    config: NatsConfig,
    provisioned: bool,
    subject: String,
    /// Stream sequence of this chain's last stored message (0: none yet). Every publish
    /// expects it, so no other writer can interleave with this chain.
    last_subject_seq: u64,
}

impl NatsSink {
    /// A sink for chain `node/inst` over an (auto-reconnecting) client.
    pub fn new(client: async_nats::Client, config: &NatsConfig, node: &str, inst: &str) -> NatsSink {
        let js = nats::context(client, Duration::from_millis(config.ack_timeout_ms));
        NatsSink {
            js,
            config: config.clone(),
            provisioned: false,
            subject: format!("bh.audit.{node}.{inst}"),
            last_subject_seq: 0,
        }
    }

    /// The JetStream context.
    pub fn context(&self) -> &jetstream::Context {
        &self.js
    }

    /// Provisions the streams once per process (retried by the caller until it works).
    pub async fn ensure_provisioned(&mut self) -> Result<(), BridgeError> {
        if !self.provisioned {
            nats::provision(&self.js, &self.config).await?;
            self.provisioned = true;
        }
        Ok(())
    }

    /// Publishes one chain message. A repeat of an already stored message (same
    /// `msg_id`) counts as stored: JetStream reports it as a duplicate within the
    /// duplicate window, and after it the expected-sequence check finds it as the
    /// subject's last message.
    pub async fn store(&mut self, msg_id: &str, bytes: &[u8]) -> Result<(), BridgeError> {
        self.ensure_provisioned().await?;
        let publish = nats::encoded_publish(bytes, msg_id, self.config.compression)
            .expected_last_subject_sequence(self.last_subject_seq);
        let fail = |message: String| BridgeError::Nats(NatsError::Publish { subject: self.subject.clone(), message });
        let ack = match self.js.send_publish(self.subject.clone(), publish).await {
            Ok(fut) => fut.await,
            Err(e) => Err(e),
        };
        match ack {
            Ok(ack) => {
                self.last_subject_seq = ack.sequence;
                Ok(())
            }
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                let last = self.last_on_subject().await?;
                match last {
                    Some((seq, id)) if id.as_deref() == Some(msg_id) => {
                        self.last_subject_seq = seq;
                        Ok(())
                    }
                    _ => Err(BridgeError::Nats(NatsError::Conflict {
                        subject: self.subject.clone(),
                        expected: self.last_subject_seq,
                    })),
                }
            }
            Err(e) => Err(fail(e.to_string())),
        }
    }

    /// `(stream seq, Nats-Msg-Id)` of the subject's last message.
    async fn last_on_subject(&self) -> Result<Option<(u64, Option<String>)>, BridgeError> {
        let m = self.last_message(&self.subject).await?;
        Ok(m.map(|m| (m.sequence, m.headers.get("Nats-Msg-Id").map(|v| v.to_string()))))
    }

    async fn last_message(&self, subject: &str) -> Result<Option<jetstream::message::StreamMessage>, BridgeError> {
        let read =
            |message: String| BridgeError::Nats(NatsError::Read { stream: self.config.audit_stream.clone(), message });
        let stream = self.js.get_stream_no_info(&self.config.audit_stream).await.map_err(|e| read(e.to_string()))?;
        match stream.get_last_raw_message_by_subject(subject).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(read(e.to_string())),
        }
    }

    /// Publishes aux messages, all in flight at once, then waits for every ack.
    pub async fn store_aux(&mut self, msgs: &[AuxMessage]) -> Result<(), BridgeError> {
        self.ensure_provisioned().await?;
        let mut acks = Vec::with_capacity(msgs.len());
        for m in msgs {
            let subject = format!("{}.{}", m.stream.prefix(), m.suffix);
            let compression = if m.bulk { self.config.compression } else { crate::config::Compression::None };
            let publish = nats::encoded_publish(&m.body, &m.msg_id, compression);
            let fail = |e: String| BridgeError::Nats(NatsError::Publish { subject: subject.clone(), message: e });
            acks.push(self.js.send_publish(subject.clone(), publish).await.map_err(|e| fail(e.to_string()))?);
        }
        for ack in acks {
            ack.await.map_err(|e| {
                BridgeError::Nats(NatsError::Publish { subject: "bh.*".into(), message: e.to_string() })
            })?;
        }
        Ok(())
    }

    /// The cursor stored last by chain `node/inst`; `None` if it stored nothing.
    pub async fn recover_cursor(&mut self, node: &str, inst: &str) -> Result<Option<Cursor>, BridgeError> {
        self.ensure_provisioned().await?;
        let subject = format!("bh.audit.{node}.{inst}");
        match self.last_message(&subject).await? {
            None => Ok(None),
            Some(m) => {
                let unreadable = |e: String| {
                    BridgeError::Nats(NatsError::Read {
                        stream: self.config.audit_stream.clone(),
                        message: format!("{subject}: last message unreadable: {e}"),
                    })
                };
                let payload = nats::decode_stored(&m).map_err(unreadable)?;
                serde_json::from_slice::<Message>(&payload)
                    .map(|m| Some(m.cursor))
                    .map_err(|e| unreadable(e.to_string()))
            }
        }
    }
}

/// Either store.
#[derive(Debug)]
pub enum Sink {
    /// Chain files under the data dir.
    File(FileSink),
    /// JetStream.
    Nats(Box<NatsSink>),
}

impl Sink {
    /// Stores one chain message (one attempt).
    pub async fn store(&mut self, msg_id: &str, bytes: &[u8]) -> Result<(), BridgeError> {
        match self {
            Sink::File(f) => f.store(bytes),
            Sink::Nats(n) => n.store(msg_id, bytes).await,
        }
    }

    /// Stores aux messages (one attempt).
    pub async fn store_aux(&mut self, msgs: &[AuxMessage]) -> Result<(), BridgeError> {
        if msgs.is_empty() {
            return Ok(());
        }
        match self {
            Sink::File(f) => f.store_aux(msgs),
            Sink::Nats(n) => n.store_aux(msgs).await,
        }
    }

    /// Periodic flush (`fsync: interval`).
    pub fn sync(&mut self) -> Result<(), BridgeError> {
        match self {
            Sink::File(f) => f.sync(),
            Sink::Nats(_) => Ok(()),
        }
    }

    /// `"file"` or `"nats"`, as recorded in the bridge state.
    pub fn kind(&self) -> &'static str {
        match self {
            Sink::File(_) => "file",
            Sink::Nats(_) => "nats",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_line_appends_bytes_and_one_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.jsonl");
        let mut f = File::create(&path).unwrap();
        let big = vec![b'x'; 512 * 1024];
        for bytes in [&b"{\"a\":1}"[..], b"", &big] {
            write_line(&mut f, bytes).unwrap();
        }
        let mut want = b"{\"a\":1}\n\n".to_vec();
        want.extend_from_slice(&big);
        want.push(b'\n');
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }
}
