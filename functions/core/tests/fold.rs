//! The fold ([`chat_core::fold`]) against a simple reference model: random
//! send / edit / delete / react sequences, including what the handlers refuse
//! but a racing writer could still append (an edit by someone else, an edit or
//! a reaction after a delete), folded in any order.

use std::collections::{BTreeMap, BTreeSet};

use chat_core::fold::fold;
use chat_core::model::{Identity, LogEvent};
use chat_core::reaction::decided;
use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Send(usize),
    Edit(usize, usize),
    Delete(usize, usize),
    React(usize, usize, usize),
}

const EMOJI: [&str; 3] = ["👍", "🎉", "❤️"];

/// Six connections: c0–c2 verified accounts, c3 and c4 anonymous, c5 the same account as c0.
fn identity(user: usize) -> Option<Identity> {
    match user {
        0..=2 => Some(Identity::verified(&format!("u{user}"), &format!("iss|u{user}"))),
        5 => Some(Identity::verified("u0", "iss|u0")),
        _ => None,
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..6usize).prop_map(Op::Send),
        2 => (0..6usize, 0..8usize).prop_map(|(u, l)| Op::Edit(u, l)),
        1 => (0..6usize, 0..8usize).prop_map(|(u, l)| Op::Delete(u, l)),
        3 => (0..6usize, 0..8usize, 0..3usize).prop_map(|(u, l, e)| Op::React(u, l, e)),
    ]
}

/// What a line shows in the reference model.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Shown {
    id: String,
    text: Option<String>,
    edited_at: Option<DateTime<Utc>>,
    reactions: BTreeMap<String, BTreeSet<String>>,
}

struct ModelLine {
    shown: Shown,
    author_account: Option<String>,
    author_connection: String,
}

/// Runs `ops` through the model; the events a log would hold and the view expected.
fn run(ops: &[Op]) -> (Vec<LogEvent>, Vec<Shown>) {
    let base = Utc.timestamp_opt(1_795_515_330, 0).unwrap();
    let (mut events, mut lines): (Vec<LogEvent>, Vec<ModelLine>) = (Vec::new(), Vec::new());
    let mut counts: Vec<BTreeMap<String, u32>> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let at = base + Duration::seconds(i as i64);
        let stamp = |mut event: LogEvent, user: usize| {
            event.message_id = uuid::Uuid::from_u128(i as u128 + 1).to_string();
            event.by(identity(user).as_ref())
        };
        match *op {
            Op::Send(user) => {
                let connection = format!("c{user}");
                let event = stamp(LogEvent::chat(&connection, &format!("line {i}"), at), user);
                lines.push(ModelLine {
                    shown: Shown {
                        id: event.message_id.clone(),
                        text: Some(event.message.clone()),
                        edited_at: None,
                        reactions: BTreeMap::new(),
                    },
                    author_account: identity(user).and_then(|id| id.user_id),
                    author_connection: connection,
                });
                counts.push(BTreeMap::new());
                events.push(event);
            }
            Op::Edit(user, l) if l < lines.len() => {
                let line = &mut lines[l];
                let text = format!("edit {i}");
                events.push(stamp(LogEvent::edit(&format!("c{user}"), &line.shown.id, &text, at), user));
                let account = identity(user).and_then(|id| id.user_id);
                let author = match &line.author_account {
                    Some(author) => account.as_ref() == Some(author),
                    None => account.is_none() && line.author_connection == format!("c{user}"),
                };
                if author && line.shown.text.is_some() {
                    (line.shown.text, line.shown.edited_at) = (Some(text), Some(at));
                }
            }
            Op::Delete(user, l) if l < lines.len() => {
                events.push(stamp(LogEvent::delete(&format!("c{user}"), &lines[l].shown.id, at), user));
                (lines[l].shown.text, lines[l].shown.reactions) = (None, BTreeMap::new());
            }
            Op::React(user, l, e) if l < lines.len() => {
                let reactor = identity(user).and_then(|id| id.user_id).unwrap_or(format!("c{user}"));
                let reaction = stamp(LogEvent::reaction(&format!("c{user}"), &lines[l].shown.id, EMOJI[e], at), user);
                let line = &mut lines[l];
                let has = line.shown.reactions.get(EMOJI[e]).is_some_and(|users| users.contains(&reactor));
                let event = decided(reaction, has, counts[l].clone());
                if line.shown.text.is_some() {
                    // As the store decides it: counts and the reactor's state move together.
                    counts[l] = event.counts.clone().unwrap();
                    let users = line.shown.reactions.entry(EMOJI[e].to_owned()).or_default();
                    if has {
                        users.remove(&reactor);
                    } else {
                        users.insert(reactor);
                    }
                    line.shown.reactions.retain(|_, users| !users.is_empty());
                }
                events.push(event);
            }
            _ => {}
        }
    }
    (events, lines.into_iter().map(|line| line.shown).collect())
}

fn folded(events: &[LogEvent]) -> Vec<Shown> {
    fold(events)
        .into_iter()
        .map(|line| Shown {
            id: line.sent.message_id,
            text: line.text,
            edited_at: line.edited_at,
            reactions: line.reactions,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_fold_equals_the_reference_model(ops in prop::collection::vec(op(), 0..60)) {
        let (events, expected) = run(&ops);
        prop_assert_eq!(folded(&events), expected);
    }

    #[test]
    fn any_order_folds_the_same(ops in prop::collection::vec(op(), 0..60), keys in prop::collection::vec(any::<u64>(), 60)) {
        let (events, expected) = run(&ops);
        let mut shuffled: Vec<(u64, LogEvent)> = events.into_iter().zip(keys).map(|(e, k)| (k, e)).collect();
        shuffled.sort_by_key(|(k, _)| *k);
        let mut shuffled: Vec<LogEvent> = shuffled.into_iter().map(|(_, e)| e).collect();
        // A redelivered event (at-least-once) folds once.
        if let Some(first) = shuffled.first().cloned() {
            shuffled.push(first);
        }
        prop_assert_eq!(folded(&shuffled), expected);
    }
}
