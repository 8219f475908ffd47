//! Benchmarks of the chat: how fast the local stack fans messages out compared
//! with the least any server speaking the protocol must do, how the broadcaster
//! scales with the room, and what the deployed design costs.
//!
//! - [`channels`]: fan-out with every client in one room, then in several; subscribe latency (`loadgen channels`)
//! - [`load`]: the load generator's measurement (`loadgen run`, `loadgen compare`)
//! - [`reference`]: the in-memory reference server (the `reference` binary)
//! - [`target`]: starting and stopping those servers as child processes
//! - [`soak`]: hundreds of clients churning for minutes, RSS and descriptors over time (`loadgen soak`)
//! - [`chart`]: the soak's picture (SVG)
//! - [`flood`]: 50 users' delivery p99 without and with one flooding client, same run (`loadgen flood`)
//! - [`fanout`]: the broadcaster at 1k–100k connections (`loadgen fanout`)
//! - [`split`]: the same event split across parallel workers (`loadgen fanout --split`)
//! - [`idle`]: memory per idle connection, and the connect rate (`loadgen idle`)
//! - [`cost`]: the price of a million messages (`loadgen cost`)
//! - [`presence`]: join notices against occupancy frames as a room fills (`loadgen presence-cost`)
//! - [`envelope`]: calls/s, delivery time and price per room size × rate, coalesced or not (`loadgen envelope`)
//! - [`coldstart`]: the Lambda binaries' init time against a Runtime API emulator (`loadgen coldstart`)
//! - [`coalescing`]: frames and API Gateway messages per 1000 lines, coalesced or not (`loadgen coalescing`)
//! - [`counters`]: the local stack's own counters, from its `/metrics`
//! - [`procstat`], [`stats`], [`report`]: RSS/CPU from `/proc`, histograms, tables

pub mod channels;
pub mod chart;
pub mod coalescing;
pub mod coldstart;
pub mod cost;
pub mod counters;
pub mod envelope;
pub mod fanout;
pub mod flood;
pub mod idle;
pub mod load;
pub mod presence;
pub mod procstat;
pub mod reference;
pub mod report;
pub mod soak;
pub mod split;
pub mod stats;
pub mod target;
