//! A watch response on the wire, written by hand so that a response can
//! carry events the hub already encoded (`WireEvent`).
//!
//! tonic's generated code would take a `WatchResponse` and encode every
//! event again for every watcher: with a thousand watchers on a key, a put
//! was encoded a thousand times, the largest single cost of the fan-out.
//! Here a response is `WatchOut`: the response's other fields, encoded per
//! watcher (a few dozen bytes), followed by the shared event bytes, copied
//! as they are. On the wire it is exactly etcd's `WatchResponse`. The
//! service (`watch`) produces them, gRPC (`grpc`) sends them, and the JSON
//! gateway decodes them again.

use bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType};
use prost::Message;
use secretd_store::watch::{WireEvent, WATCH_RESPONSE_EVENTS_FIELD};
use tonic::Status;

use crate::pb::etcdserverpb::WatchResponse;

/// A response's fields other than events fit here in practice (a header
/// and a few scalars; a cancel reason is short); longer ones are encoded
/// straight into the output.
const HEAD_STACK_BYTES_MAX: usize = 256;

/// A `WatchResponse` whose events are already encoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WatchOut {
    /// Every field but `events` (which stays empty here).
    pub head: WatchResponse,
    pub events: Vec<WireEvent>,
}

impl WatchOut {
    pub fn new(head: WatchResponse) -> WatchOut {
        debug_assert!(head.events.is_empty(), "events go in `events`");
        WatchOut {
            head,
            events: Vec::new(),
        }
    }

    /// The response as etcd's type, events decoded (the JSON gateway).
    pub fn into_response(self) -> Result<WatchResponse, Status> {
        let mut r = self.head;
        r.events.reserve(self.events.len());
        for e in &self.events {
            r.events.push(
                e.decode()
                    .ok_or_else(|| Status::internal("a watch event did not decode"))?,
            );
        }
        Ok(r)
    }
}

impl Message for WatchOut {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        // prost writes varints a byte at a time; into tonic's buffer each
        // byte is a bounds-checked call. The head goes through a stack
        // buffer and lands in one copy.
        let head_len = self.head.encoded_len();
        if head_len <= HEAD_STACK_BYTES_MAX {
            let mut tmp = [0u8; HEAD_STACK_BYTES_MAX];
            let mut w = &mut tmp[..];
            self.head.encode_raw(&mut w);
            buf.put_slice(&tmp[..head_len]);
        } else {
            self.head.encode_raw(buf);
        }
        for e in &self.events {
            buf.put_slice(e.field_bytes());
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if tag == WATCH_RESPONSE_EVENTS_FIELD {
            let mut event = Vec::new();
            prost::encoding::bytes::merge(wire_type, &mut event, buf, ctx)?;
            self.events.push(WireEvent::from_event_bytes(&event));
            Ok(())
        } else {
            self.head.merge_field(tag, wire_type, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        self.head.encoded_len()
            + self
                .events
                .iter()
                .map(|e| e.field_bytes().len())
                .sum::<usize>()
    }

    fn clear(&mut self) {
        self.head.clear();
        self.events.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb::ResponseHeader;
    use secretd_store::pb::mvccpb::{event::EventType, Event, KeyValue};

    fn event(key: &str, value: &str, rev: i64, prev: bool) -> Event {
        let kv = |v: &str, r: i64| KeyValue {
            key: key.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
            create_revision: 2,
            mod_revision: r,
            version: r - 1,
            lease: 0,
        };
        Event {
            r#type: EventType::Put as i32,
            kv: Some(kv(value, rev)),
            prev_kv: prev.then(|| kv("old", rev - 1)),
        }
    }

    fn head(cancel_reason: &str) -> WatchResponse {
        WatchResponse {
            header: Some(ResponseHeader {
                cluster_id: 0x1234_5678_9abc,
                member_id: 42,
                revision: 1 << 40,
                raft_term: 7,
            }),
            watch_id: 300,
            canceled: !cancel_reason.is_empty(),
            cancel_reason: cancel_reason.to_string(),
            ..Default::default()
        }
    }

    /// The hand encoding is byte for byte what prost makes of the same
    /// `WatchResponse`, and decodes back to it, for short and long heads
    /// and zero, one or several events.
    #[test]
    fn the_wire_is_etcds_watch_response() {
        let big_value = "v".repeat(70_000);
        let cases = [
            (head(""), vec![]),
            (head(""), vec![event("a", "1", 5, false)]),
            (
                head(""),
                vec![event("a", "1", 5, true), event("b", &big_value, 6, true)],
            ),
            (head(&"r".repeat(HEAD_STACK_BYTES_MAX * 2)), vec![]),
            (WatchResponse::default(), vec![event("", "", 1, false)]),
        ];
        for (h, events) in cases {
            let mut want = h.clone();
            want.events = events.clone();
            let out = WatchOut {
                head: h,
                events: events.iter().map(WireEvent::encode).collect(),
            };
            let bytes = out.encode_to_vec();
            assert_eq!(bytes, want.encode_to_vec());
            assert_eq!(out.encoded_len(), bytes.len());
            assert_eq!(WatchResponse::decode(&bytes[..]).unwrap(), want);
            let back = WatchOut::decode(&bytes[..]).unwrap();
            assert_eq!(back, out);
            assert_eq!(back.into_response().unwrap(), want);
        }
    }
}
