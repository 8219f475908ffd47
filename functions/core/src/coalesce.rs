//! Coalesced delivery: a connection that asks for it (`?batch=1` on connect)
//! receives all of one broadcaster invocation's events for it in as few frames as
//! possible, `{"events":[<event frame>,…]}` in log order, each frame at most
//! [`COALESCED_FRAME_BYTES`] — API Gateway bills a message per 32 KB, so one
//! frame of 30 events costs what one event costs today. Other connections get one
//! frame per event, exactly as the seed's.

use crate::ports::Bytes;

/// API Gateway's billing unit: a coalesced frame never exceeds it.
pub const COALESCED_FRAME_BYTES: usize = 32 * 1024;

const OPEN: &[u8] = br#"{"events":["#;
const CLOSE: &[u8] = b"]}";

/// Why a `batch` query parameter was refused (answered 400 on `$connect`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("batch must be 1 or 0.")]
pub struct BadBatch;

/// Reads the `batch` query parameter: `1` (or `true`) asks for coalesced
/// delivery; absent, `0` or `false` does not.
///
/// ```
/// use chat_core::coalesce::batch_requested;
/// assert_eq!(batch_requested(Some("1")), Ok(true));
/// assert_eq!(batch_requested(None), Ok(false));
/// assert!(batch_requested(Some("yes please")).is_err());
/// ```
pub fn batch_requested(value: Option<&str>) -> Result<bool, BadBatch> {
    match value {
        None | Some("0" | "false") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(_) => Err(BadBatch),
    }
}

/// One frame to post and how many of the events it carries (in order), so a
/// failed post can be traced back to its events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoalescedFrame {
    pub bytes: Bytes,
    pub events: usize,
}

/// Packs event frames, in order, into `{"events":[…]}` frames of at most
/// [`COALESCED_FRAME_BYTES`]. An event too large to fit even alone is sent as it
/// is (its own frame, unwrapped), between the packs before and after it.
///
/// ```
/// use chat_core::coalesce::coalesce;
/// use chat_core::ports::Bytes;
/// let frames = coalesce(&[Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"{\"b\":2}")]);
/// assert_eq!(frames.len(), 1);
/// assert_eq!(&frames[0].bytes[..], br#"{"events":[{"a":1},{"b":2}]}"#);
/// ```
pub fn coalesce(events: &[Bytes]) -> Vec<CoalescedFrame> {
    let mut frames = Vec::new();
    let mut pack: Vec<u8> = Vec::new();
    let mut packed = 0;
    let close = |pack: &mut Vec<u8>, packed: &mut usize, frames: &mut Vec<CoalescedFrame>| {
        if *packed > 0 {
            pack.extend_from_slice(CLOSE);
            frames.push(CoalescedFrame { bytes: Bytes::from(std::mem::take(pack)), events: *packed });
            *packed = 0;
        }
    };
    for event in events {
        if OPEN.len() + event.len() + CLOSE.len() > COALESCED_FRAME_BYTES {
            close(&mut pack, &mut packed, &mut frames);
            frames.push(CoalescedFrame { bytes: event.clone(), events: 1 });
            continue;
        }
        // The comma before it and the closing brackets must still fit.
        if packed > 0 && pack.len() + 1 + event.len() + CLOSE.len() > COALESCED_FRAME_BYTES {
            close(&mut pack, &mut packed, &mut frames);
        }
        if packed == 0 {
            pack.extend_from_slice(OPEN);
        } else {
            pack.push(b',');
        }
        pack.extend_from_slice(event);
        packed += 1;
    }
    close(&mut pack, &mut packed, &mut frames);
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: usize, text_bytes: usize) -> Bytes {
        Bytes::from(serde_json::json!({ "id": i, "text": "x".repeat(text_bytes) }).to_string())
    }

    fn ids(frame: &CoalescedFrame) -> Vec<u64> {
        let value: serde_json::Value = serde_json::from_slice(&frame.bytes).unwrap();
        match value.get("events") {
            Some(events) => events.as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()).collect(),
            None => vec![value["id"].as_u64().unwrap()],
        }
    }

    #[test]
    fn packs_in_order_and_splits_above_32_kb() {
        let events: Vec<Bytes> = (0..200).map(|i| event(i, 300 + i * 7)).collect();
        let frames = coalesce(&events);
        assert!(frames.len() > 1, "{} frames", frames.len());
        let mut seen = Vec::new();
        for frame in &frames {
            assert!(frame.bytes.len() <= COALESCED_FRAME_BYTES, "{} bytes", frame.bytes.len());
            assert_eq!(ids(frame).len(), frame.events);
            seen.extend(ids(frame));
        }
        assert_eq!(seen, (0..200).collect::<Vec<u64>>(), "every event once, in log order");
        // Greedy: each frame but the last could not have taken the next event.
        for pair in frames.windows(2) {
            let next_event_len =
                serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(&pair[1].bytes).unwrap()["events"][0])
                    .unwrap()
                    .len();
            assert!(pair[0].bytes.len() + 1 + next_event_len > COALESCED_FRAME_BYTES);
        }
    }

    #[test]
    fn a_frame_of_exactly_32_kb_is_allowed() {
        let overhead = OPEN.len() + CLOSE.len() + r#"{"id":0,"text":""}"#.len();
        let frames = coalesce(&[event(0, COALESCED_FRAME_BYTES - overhead)]);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].bytes.len(), COALESCED_FRAME_BYTES);
        assert!(frames[0].bytes.starts_with(OPEN));
    }

    #[test]
    fn an_event_too_large_to_wrap_goes_alone_as_it_is() {
        let events = [event(0, 10), event(1, COALESCED_FRAME_BYTES), event(2, 10)];
        let frames = coalesce(&events);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[1].bytes, events[1], "today's frame, unwrapped");
        assert_eq!(frames.iter().flat_map(ids).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(coalesce(&[]).is_empty());
    }

    #[test]
    fn only_1_and_0_are_batch_values() {
        assert_eq!(batch_requested(Some("true")), Ok(true));
        for off in [None, Some("0"), Some("false")] {
            assert_eq!(batch_requested(off), Ok(false));
        }
        for bad in ["", "2", "yes", "1 "] {
            assert_eq!(batch_requested(Some(bad)), Err(BadBatch), "{bad:?}");
        }
    }
}
