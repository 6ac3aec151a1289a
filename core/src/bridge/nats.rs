//! NATS JetStream: connection, idempotent provisioning, reading the audit stream back,
//! and the `BH_CONFIG` bucket.
//!
//! Works with nats-server 2.9 (Debian's) and current servers. 2.9 cannot answer
//! async-nats' `create_key_value` (it fails parsing the account-info reply), so the
//! bucket's backing stream `KV_BH_CONFIG` is created here like any other stream and
//! then opened with `get_key_value`.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use async_nats::jetstream::{self, stream};

use super::events::AuxStream;
use crate::config::{Compression, NatsConfig};

/// The KV bucket of hot configuration.
pub const CONFIG_BUCKET: &str = "BH_CONFIG";
/// Revisions kept per `BH_CONFIG` key.
const CONFIG_HISTORY: i64 = 16;

/// Why a NATS operation failed. Each variant says which step; the bridge retries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// Connecting failed.
    #[error("connecting to NATS at {url}: {message}")]
    Connect {
        /// Server URL(s).
        url: String,
        /// What the client said.
        message: String,
    },
    /// Creating or updating a stream failed.
    #[error("provisioning stream {stream}: {message}")]
    Provision {
        /// Stream name.
        stream: String,
        /// What the server said.
        message: String,
    },
    /// A publish was not acknowledged.
    #[error("publishing to {subject}: {message}")]
    Publish {
        /// Subject.
        subject: String,
        /// What the client or server said.
        message: String,
    },
    /// Another writer appended to this chain's subject: the chain cannot continue.
    #[error("{subject}: another writer appended to this chain (expected last sequence {expected})")]
    Conflict {
        /// Subject.
        subject: String,
        /// The subject sequence this bridge expected to follow.
        expected: u64,
    },
    /// Reading the stream back failed.
    #[error("reading {stream}: {message}")]
    Read {
        /// Stream name.
        stream: String,
        /// What went wrong.
        message: String,
    },
}

/// Connects; the client keeps reconnecting on its own afterwards.
pub async fn connect(url: &str, connect_timeout: Duration, name: &str) -> Result<async_nats::Client, NatsError> {
    let delay = connect_timeout.min(Duration::from_secs(1));
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(connect_timeout)
        .request_timeout(Some(connect_timeout.max(Duration::from_secs(2))))
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempts| delay.min(Duration::from_millis(50 * attempts.max(1) as u64)))
        // A comma-separated list names a cluster's servers; the client picks among them.
        .connect(url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect::<Vec<&str>>())
        .await
        .map_err(|e| NatsError::Connect { url: url.to_string(), message: e.to_string() })
}

/// A JetStream context with the bridge's ack timeout.
pub fn context(client: async_nats::Client, ack_timeout: Duration) -> jetstream::Context {
    jetstream::ContextBuilder::new().timeout(ack_timeout).build(client)
}

/// The stream configs the bridge provisions, audit first.
pub fn stream_configs(n: &NatsConfig) -> Vec<stream::Config> {
    let secs = Duration::from_secs;
    let dup = Duration::from_millis(n.duplicate_window_ms);
    let mut out = vec![stream::Config {
        name: n.audit_stream.clone(),
        description: Some("Gatekeeper audit chains and signed checkpoints".into()),
        subjects: vec!["bh.audit.>".into()],
        storage: stream::StorageType::File,
        num_replicas: n.replicas,
        deny_delete: true,
        deny_purge: true,
        max_age: secs(n.audit_max_age_s),
        duplicate_window: dup,
        allow_direct: true,
        ..Default::default()
    }];
    for aux in AuxStream::ALL {
        let (max_age, per_subject) = match aux {
            AuxStream::Events => (n.events_max_age_s, -1),
            AuxStream::Health => (n.health_max_age_s, -1),
            AuxStream::Alerts => (n.alerts_max_age_s, -1),
            AuxStream::Sessions => (n.sessions_max_age_s, 1),
        };
        out.push(stream::Config {
            name: aux.stream().into(),
            subjects: vec![format!("{}.>", aux.prefix())],
            storage: stream::StorageType::File,
            num_replicas: n.replicas,
            max_age: secs(max_age),
            max_bytes: n.stream_bytes_max,
            max_messages_per_subject: per_subject,
            discard: stream::DiscardPolicy::Old,
            duplicate_window: dup,
            allow_direct: true,
            ..Default::default()
        });
    }
    out.push(config_bucket_stream(n));
    out
}

/// The stream backing the `BH_CONFIG` bucket.
pub fn config_bucket_stream(n: &NatsConfig) -> stream::Config {
    stream::Config {
        name: format!("KV_{CONFIG_BUCKET}"),
        description: Some("Gatekeeper hot configuration (routing, capabilities, revocations)".into()),
        subjects: vec![format!("$KV.{CONFIG_BUCKET}.>")],
        storage: stream::StorageType::File,
        num_replicas: n.replicas,
        max_messages_per_subject: CONFIG_HISTORY,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        duplicate_window: Duration::from_millis(n.duplicate_window_ms),
        ..Default::default()
    }
}

/// Creates each stream, or brings an existing one to the settings the bridge manages.
/// Safe to run on every start and from every node.
pub async fn provision(js: &jetstream::Context, n: &NatsConfig) -> Result<(), NatsError> {
    for want in stream_configs(n) {
        provision_stream(js, want).await?;
    }
    Ok(())
}

/// Provisions only the `BH_CONFIG` bucket's stream (see [`provision`]).
pub async fn provision_config_bucket(js: &jetstream::Context, n: &NatsConfig) -> Result<(), NatsError> {
    provision_stream(js, config_bucket_stream(n)).await
}

/// Creates one stream, or brings an existing one to the managed settings.
async fn provision_stream(js: &jetstream::Context, want: stream::Config) -> Result<(), NatsError> {
    let name = want.name.clone();
    let err = |message: String| NatsError::Provision { stream: name.clone(), message };
    match js.get_stream(&name).await {
        Ok(mut s) => {
            let have = s.info().await.map_err(|e| err(e.to_string()))?.config.clone();
            let differs = have.subjects != want.subjects
                || have.num_replicas != want.num_replicas
                || have.max_age != want.max_age
                || have.max_bytes != want.max_bytes
                || have.max_messages_per_subject != want.max_messages_per_subject
                || have.deny_delete != want.deny_delete
                || have.deny_purge != want.deny_purge
                || have.duplicate_window != want.duplicate_window;
            if differs {
                // Keep what the server chose for fields we do not manage.
                let update = stream::Config {
                    subjects: want.subjects.clone(),
                    num_replicas: want.num_replicas,
                    max_age: want.max_age,
                    max_bytes: want.max_bytes,
                    max_messages_per_subject: want.max_messages_per_subject,
                    deny_delete: want.deny_delete,
                    deny_purge: want.deny_purge,
                    duplicate_window: want.duplicate_window,
                    ..have
                };
                if let Err(e) = js.update_stream(update).await {
                    tracing::warn!(stream = %name, error = %e, "could not bring the stream to the configured settings; using it as it is");
                }
            }
        }
        Err(_) => {
            if let Err(e) = js.create_stream(want).await {
                // Another node may have created it meanwhile.
                if js.get_stream(&name).await.is_err() {
                    return Err(err(e.to_string()));
                }
            }
        }
    }
    Ok(())
}

/// Opens the `BH_CONFIG` bucket (its stream must exist: see [`provision`]).
pub async fn config_bucket(js: &jetstream::Context) -> Result<jetstream::kv::Store, NatsError> {
    js.get_key_value(CONFIG_BUCKET)
        .await
        .map_err(|e| NatsError::Provision { stream: format!("KV_{CONFIG_BUCKET}"), message: e.to_string() })
}

/// Header naming a stored message's encoding (absent: plain JSON).
pub const ENCODING_HEADER: &str = "Content-Encoding";
/// [`ENCODING_HEADER`] value of an LZ4 frame.
pub const ENCODING_LZ4: &str = "lz4";
/// Largest decoded audit message accepted: a batch is at most ~1 MiB of JSON, so
/// anything far beyond it is not ours (and must not exhaust memory).
pub const DECODED_BYTES_MAX: u64 = 16 << 20;

/// Encodes a batch message for storing as `compression` says; returns the bytes and
/// the [`ENCODING_HEADER`] value to send with them (none for plain JSON).
pub fn encode_payload(bytes: &[u8], compression: Compression) -> (Vec<u8>, Option<&'static str>) {
    if compression == Compression::None {
        return (bytes.to_vec(), None);
    }
    // With a content checksum: a damaged frame fails to decode instead of decoding wrong.
    let info = lz4_flex::frame::FrameInfo::new().content_checksum(true);
    let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::with_capacity(bytes.len() / 3 + 64));
    // Writing into a Vec cannot fail; should the encoder still refuse, store plain JSON.
    match enc.write_all(bytes).map_err(|e| e.to_string()).and_then(|()| enc.finish().map_err(|e| e.to_string())) {
        Ok(out) => (out, Some(ENCODING_LZ4)),
        Err(_) => (bytes.to_vec(), None),
    }
}

/// Decodes a stored message by its [`ENCODING_HEADER`] value (`None`: plain JSON).
/// An unknown encoding, a corrupt frame or one decoding past [`DECODED_BYTES_MAX`]
/// is an error naming what is wrong.
pub fn decode_payload(encoding: Option<&str>, payload: &[u8]) -> Result<Vec<u8>, String> {
    match encoding {
        None | Some("") | Some("identity") => Ok(payload.to_vec()),
        Some(ENCODING_LZ4) => {
            let mut out = Vec::with_capacity(payload.len().saturating_mul(4).min(DECODED_BYTES_MAX as usize));
            let mut dec = lz4_flex::frame::FrameDecoder::new(payload).take(DECODED_BYTES_MAX + 1);
            dec.read_to_end(&mut out).map_err(|e| format!("corrupt lz4 payload: {e}"))?;
            if out.len() as u64 > DECODED_BYTES_MAX {
                return Err(format!("lz4 payload decodes to more than {DECODED_BYTES_MAX} bytes"));
            }
            Ok(out)
        }
        Some(other) => Err(format!("unknown {ENCODING_HEADER} `{other}`")),
    }
}

/// A publish of `body` with `msg_id`, encoded as `compression` says and marked with
/// [`ENCODING_HEADER`] when it is not plain JSON.
pub fn encoded_publish(body: &[u8], msg_id: &str, compression: Compression) -> jetstream::message::PublishMessage {
    let (payload, encoding) = encode_payload(body, compression);
    let publish = jetstream::message::PublishMessage::build().payload(payload.into()).message_id(msg_id);
    match encoding {
        Some(encoding) => publish.header(ENCODING_HEADER, encoding),
        None => publish,
    }
}

/// A stored message's body, decoded by its [`ENCODING_HEADER`] (see [`decode_payload`]).
pub fn decode_stored(m: &jetstream::message::StreamMessage) -> Result<Vec<u8>, String> {
    decode_payload(m.headers.get(ENCODING_HEADER).map(|v| v.as_str()), &m.payload)
}

/// One stored audit message read back.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// Stream sequence.
    pub seq: u64,
    /// Subject (`bh.audit.<node>.<inst>`).
    pub subject: String,
    /// Body, decoded (see [`decode_payload`]).
    pub payload: Vec<u8>,
}

/// Every message of the audit stream `stream_name`, in stream order. Deleted
/// sequences are skipped (the chain check then reports what is missing).
pub async fn read_audit(js: &jetstream::Context, stream_name: &str) -> Result<Vec<StoredMessage>, NatsError> {
    let err = |message: String| NatsError::Read { stream: stream_name.to_string(), message };
    let mut s = js.get_stream(stream_name).await.map_err(|e| err(e.to_string()))?;
    let state = s.info().await.map_err(|e| err(e.to_string()))?.state.clone();
    let mut out = Vec::with_capacity(state.messages as usize);
    if state.messages == 0 {
        return Ok(out);
    }
    for seq in state.first_sequence..=state.last_sequence {
        match s.get_raw_message(seq).await {
            Ok(m) => {
                let payload = decode_stored(&m).map_err(|e| err(format!("seq {seq}: {e}")))?;
                out.push(StoredMessage { seq, subject: m.subject.to_string(), payload })
            }
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => {}
            Err(e) => return Err(err(format!("seq {seq}: {e}"))),
        }
    }
    Ok(out)
}

/// The KV bucket of spent credit nullifiers (anonymous credits across nodes).
pub const CREDITS_BUCKET: &str = "BH_CREDITS";

/// The stream backing `BH_CREDITS`: one revision per key, kept `max_age` (two epochs:
/// a nullifier matters only while its epoch's spends are accepted).
pub fn credits_bucket_stream(n: &NatsConfig, max_age: Duration) -> stream::Config {
    stream::Config {
        name: format!("KV_{CREDITS_BUCKET}"),
        description: Some("Gatekeeper spent credit nullifiers".into()),
        subjects: vec![format!("$KV.{CREDITS_BUCKET}.>")],
        storage: stream::StorageType::File,
        num_replicas: n.replicas,
        max_messages_per_subject: 1,
        max_age,
        discard: stream::DiscardPolicy::New,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        duplicate_window: Duration::from_millis(n.duplicate_window_ms),
        ..Default::default()
    }
}

/// Provisions and opens `BH_CREDITS`.
pub async fn credits_bucket(
    js: &jetstream::Context,
    n: &NatsConfig,
    max_age: Duration,
) -> Result<jetstream::kv::Store, NatsError> {
    provision_stream(js, credits_bucket_stream(n, max_age)).await?;
    js.get_key_value(CREDITS_BUCKET)
        .await
        .map_err(|e| NatsError::Provision { stream: format!("KV_{CREDITS_BUCKET}"), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lz4_payloads_round_trip_and_shrink() {
        let line = br#"{"node":"n","inst":"i","seq":1,"prev":"00","ts":1,"record":{"request_id":"r","status":200}}"#;
        let batch: Vec<u8> = line.iter().copied().cycle().take(line.len() * 200).collect();
        let (packed, encoding) = encode_payload(&batch, Compression::Lz4);
        assert_eq!(encoding, Some(ENCODING_LZ4));
        assert!(packed.len() * 4 < batch.len(), "{} of {}", packed.len(), batch.len());
        assert_eq!(decode_payload(encoding, &packed).unwrap(), batch);
        let (plain, none) = encode_payload(&batch, Compression::None);
        assert_eq!((plain.as_slice(), none), (batch.as_slice(), None));
        assert_eq!(decode_payload(None, &plain).unwrap(), batch);
    }

    #[test]
    fn bad_payloads_are_errors_not_panics() {
        let (packed, _) = encode_payload(&[b'x'; 4096], Compression::Lz4);
        let mut flipped = packed.clone();
        let last = flipped.len() - 6;
        flipped[last] ^= 0x55;
        assert!(decode_payload(Some(ENCODING_LZ4), &flipped).is_err());
        assert!(decode_payload(Some(ENCODING_LZ4), &packed[..packed.len() / 2]).is_err());
        assert!(decode_payload(Some(ENCODING_LZ4), b"not lz4").is_err());
        assert!(decode_payload(Some("zstd"), &packed).unwrap_err().contains("unknown"));
        // A bomb: far more zeros than any batch holds.
        let (bomb, _) = encode_payload(&vec![0u8; DECODED_BYTES_MAX as usize + 10], Compression::Lz4);
        assert!(decode_payload(Some(ENCODING_LZ4), &bomb).unwrap_err().contains("more than"));
    }
}
