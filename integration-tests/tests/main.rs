//! Every integration test, in one test binary: one link of the stack, the SDKs and
//! the test code instead of one per file. Each file is a module (its tests are
//! `FILE::name`): `cargo test -p integration-tests --test integration rooms::`.

mod common;

mod acks;
mod browser;
mod channels;
mod coalescing;
mod connections_api;
mod departures;
mod deploy_template;
mod docs;
mod dynamodb_mode;
mod events_bridge;
mod fanout_queue;
mod hardening;
mod history_and_replay;
mod identity;
mod lifecycle;
mod local_stack;
mod moderation;
mod names;
mod newcomer;
mod operations;
mod origin_and_host;
mod presence;
mod publish;
mod rate_limits;
mod rights;
mod rooms;
mod throttling;
mod typing;
mod webhooks;
mod wscat;
