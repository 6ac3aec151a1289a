//! Each tamper class, in embedded files and in a JetStream stream that permits edits:
//! verification fails and names the right entry.

use std::path::Path;
use std::time::Duration;

use super::{config, need_nats, start_bridge, stop_bridge, submit_all, NatsServer};
use gatekeeper::audit::chain::{encode_entry, entry_hash, EntryView};
use gatekeeper::audit::message::{encode_batch, Cursor, Message};
use gatekeeper::audit::verify::{Audit, Failure};

/// One stored item: an entry's canonical bytes, or a whole checkpoint message.
#[derive(Clone)]
enum Item {
    Entry(Vec<u8>),
    Checkpoint(Vec<u8>, u64),
}

/// A chain of 25 entries with checkpoints at 10, 20 and a final one at 25.
fn make_chain(dir: &Path) -> Vec<Item> {
    let c = config(
        dir,
        ", checkpoint_every: 10, checkpoint_interval_ms: 600000, heartbeat_interval_ms: 600000, batch_entries_max: 3",
        None,
    );
    let bridge = start_bridge(&c, 1).expect("bridge");
    submit_all(&bridge, 1, 25, "t");
    let report = stop_bridge(&bridge, Duration::from_secs(10));
    assert!(report.drained);
    let files = super::file_messages(dir);
    assert_eq!(files.len(), 1);
    let mut items = Vec::new();
    for line in &files[0].1 {
        let m: Message = serde_json::from_slice(line).expect("message");
        for e in &m.entries {
            items.push(Item::Entry(e.get().as_bytes().to_vec()));
        }
        if let Some(cp) = &m.checkpoint {
            items.push(Item::Checkpoint(line.clone(), cp.size));
        }
    }
    let sizes: Vec<u64> =
        items.iter().filter_map(|i| if let Item::Checkpoint(_, s) = i { Some(*s) } else { None }).collect();
    assert_eq!(sizes, [10, 20, 25], "checkpoint layout");
    items
}

/// One message per item: grouping is not what the chain protects.
fn to_messages(items: &[Item]) -> Vec<Vec<u8>> {
    items
        .iter()
        .map(|i| match i {
            Item::Entry(e) => encode_batch("gw-test", inst_of(e).as_str(), &Cursor::new(), std::slice::from_ref(e)),
            Item::Checkpoint(m, _) => m.clone(),
        })
        .collect()
}

fn inst_of(entry: &[u8]) -> String {
    EntryView::parse(entry).expect("canonical").inst.to_string()
}

fn entry_index(items: &[Item], seq: u64) -> usize {
    let mut n = 0;
    for (i, item) in items.iter().enumerate() {
        if let Item::Entry(_) = item {
            n += 1;
            if n == seq {
                return i;
            }
        }
    }
    panic!("no entry {seq}")
}

fn entry(items: &[Item], seq: u64) -> Vec<u8> {
    match &items[entry_index(items, seq)] {
        Item::Entry(e) => e.clone(),
        Item::Checkpoint(..) => unreachable!(),
    }
}

/// The tamper classes: (name, tampered items, entry the failure must name).
fn tampered(items: &[Item]) -> Vec<(&'static str, Vec<Item>, u64)> {
    let mut out = Vec::new();

    let mut t = items.to_vec();
    let i = entry_index(&t, 7);
    let e = String::from_utf8(entry(&t, 7)).unwrap().replace("\"status\":200", "\"status\":201");
    t[i] = Item::Entry(e.into_bytes());
    out.push(("modification", t, 7));

    let mut t = items.to_vec();
    let i = entry_index(&t, 25);
    let e = String::from_utf8(entry(&t, 25)).unwrap().replace("\"tokens_out\":7", "\"tokens_out\":0");
    t[i] = Item::Entry(e.into_bytes());
    out.push(("modification of the newest entry", t, 25));

    let mut t = items.to_vec();
    t.remove(entry_index(&t, 7));
    out.push(("deletion", t, 7));

    let mut t = items.to_vec();
    let (a, b) = (entry_index(&t, 7), entry_index(&t, 8));
    t.swap(a, b);
    out.push(("reordering", t, 7));

    // A well-formed forgery linked to entry 7, slipped in before entry 8.
    let mut t = items.to_vec();
    let prev = entry_hash(&entry(&t, 7));
    let inst = inst_of(&entry(&t, 7));
    let mut forged = Vec::new();
    encode_entry(&mut forged, "gw-test", &inst, 8, &prev, 1, br#"{"request_id":"forged"}"#);
    t.insert(entry_index(&t, 8), Item::Entry(forged));
    out.push(("insertion", t, 8));

    // Entries 18..=20 cut away, the checkpoint over 20 kept.
    let mut t = items.to_vec();
    for _ in 18..=20 {
        t.remove(entry_index(&t, 18));
    }
    out.push(("truncation before a checkpoint", t, 18));
    out
}

fn verify(messages: &[Vec<u8>]) -> Result<(), Failure> {
    let mut audit = Audit::new(Vec::new());
    for (i, m) in messages.iter().enumerate() {
        audit.feed(m, None, &format!("item {i}"))?;
    }
    Ok(())
}

#[test]
fn every_tamper_class_is_named_in_files() {
    let dir = tempfile::tempdir().unwrap();
    let items = make_chain(dir.path());
    verify(&to_messages(&items)).expect("the untouched chain verifies");
    for (name, t, seq) in tampered(&items) {
        // Through the real CLI, on a chain file.
        let out_dir = tempfile::tempdir().unwrap();
        let audit_dir = out_dir.path().join("audit");
        std::fs::create_dir_all(&audit_dir).unwrap();
        let text: Vec<u8> = to_messages(&t)
            .into_iter()
            .flat_map(|mut m| {
                m.push(b'\n');
                m
            })
            .collect();
        std::fs::write(audit_dir.join(format!("gw-test.{}.jsonl", inst_of(&entry(&items, 1)))), text).unwrap();
        let (ok, out) = super::verify_cli(&["--dir", out_dir.path().to_str().unwrap()]);
        assert!(!ok, "{name}: verify passed:\n{out}");
        assert!(out.contains(&format!(" entry {seq}: ")), "{name}: expected entry {seq} named:\n{out}");
    }
}

#[test]
fn every_tamper_class_is_named_in_jetstream() {
    need_nats!();
    let dir = tempfile::tempdir().unwrap();
    let items = make_chain(dir.path());
    let inst = inst_of(&entry(&items, 1));
    let subject = format!("bh.audit.gw-test.{inst}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut cases = tampered(&items);
    cases.push(("none", items.clone(), 0));
    for (name, t, seq) in cases {
        // A fresh server whose audit stream permits edits, holding the tampered chain.
        let server = NatsServer::start();
        rt.block_on(async {
            let client = async_nats::connect(server.url()).await.unwrap();
            let js = async_nats::jetstream::new(client);
            js.create_stream(async_nats::jetstream::stream::Config {
                name: "BH_AUDIT".into(),
                subjects: vec!["bh.audit.>".into()],
                ..Default::default()
            })
            .await
            .unwrap();
            for m in to_messages(&t) {
                js.publish(subject.clone(), m.into()).await.unwrap().await.unwrap();
            }
            if name == "none" {
                // A real deletion in the stream: entry 3's message.
                let stream = js.get_stream("BH_AUDIT").await.unwrap();
                assert!(stream.delete_message(3).await.unwrap());
            }
        });
        let (ok, out) = super::verify_cli(&["--nats", &server.url()]);
        let seq = if name == "none" { 3 } else { seq };
        assert!(!ok, "{name}: verify passed:\n{out}");
        assert!(out.contains(&format!(" entry {seq}: ")), "{name}: expected entry {seq} named:\n{out}");
    }
}
