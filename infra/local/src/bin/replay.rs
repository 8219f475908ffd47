//! `replay`: read the chat log back from the local store, a DynamoDB table or
//! the S3 archive; print it, or re-publish it into a log so that a running
//! stack's clients see it again.

use std::io::Write;

use chat_core::ports::LogCursor;
use chat_core::protocol::line_frame;
use chat_core::protocol::parse_cursor;
use chat_core::replay::{ReplayFilter, folded_text_line, json_line, text_line};
use chat_local::replay::{Endpoints, Location, publish, read};
use clap::{Parser, ValueEnum};

/// Replays the chat's MessageHistory log.
///
/// Examples:
///   replay --from sqlite:chat-local.db
///   replay --from dynamodb:MessageHistory --dynamodb-endpoint http://127.0.0.1:5000 --format json
///   replay --from s3:my-archive --since 2026-11-24T10:00:00Z --until 2026-11-24T11:00:00Z
///   replay --from s3:my-archive --publish sqlite:chat-local.db
///   replay --from sqlite:chat-local.db --room rust-users
///   replay --from sqlite:chat-local.db --room rust-users --fold
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// Where to read: sqlite:PATH, dynamodb:TABLE, or s3:BUCKET[/PREFIX].
    #[arg(long, value_name = "LOCATION")]
    from: Location,
    /// Only events after this message id or ISO time (exclusive).
    #[arg(long, value_name = "ID|TIME", value_parser = cursor)]
    since: Option<LogCursor>,
    /// Only events up to this message id or ISO time (inclusive).
    #[arg(long, value_name = "ID|TIME", value_parser = cursor)]
    until: Option<LogCursor>,
    /// Only events of this connection.
    #[arg(long, value_name = "CONNECTION_ID")]
    connection: Option<String>,
    /// Only events said in this room (rows from before rooms are in `lobby`).
    #[arg(long, value_name = "ROOM")]
    room: Option<String>,
    /// How to print: one line per event, or the JSON Lines archive format.
    /// Either way no control or bidirectional character reaches the terminal
    /// raw: text lines show them as `\u{1b}`, JSON as `\u001b`.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Print the final conversation instead of the events: each chat line once,
    /// with its current text (or `(deleted)`), `(edited …)`, its reply quote
    /// and reaction counts (the fold of the selected events; JSON: the
    /// `{"kind":"line"}` frames `history` with `fold:true` answers).
    #[arg(long, conflicts_with = "publish")]
    fold: bool,
    /// Instead of printing, append the events (ids kept) to this log:
    /// sqlite:PATH or dynamodb:TABLE. Ids already there are skipped.
    #[arg(long, value_name = "LOCATION")]
    publish: Option<Location>,
    /// DynamoDB API for dynamodb: locations (moto, DynamoDB Local).
    #[arg(long, env = "CHAT_DYNAMODB_ENDPOINT", value_name = "URL")]
    dynamodb_endpoint: Option<String>,
    /// S3 API for s3: locations (moto, MinIO).
    #[arg(long, env = "CHAT_S3_ENDPOINT", value_name = "URL")]
    s3_endpoint: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn cursor(text: &str) -> Result<LogCursor, String> {
    parse_cursor(text)
        .ok_or_else(|| format!("{text:?} is neither a message id nor an ISO time like 2026-11-24T10:00:00Z"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let endpoints = Endpoints { dynamodb: args.dynamodb_endpoint.clone(), s3: args.s3_endpoint.clone() };
    let filter = ReplayFilter {
        after: args.since.clone(),
        until: args.until.clone(),
        connection: args.connection.clone(),
        room: args.room.clone(),
    };

    let events = filter.apply(read(&args.from, &endpoints).await?);
    if let Some(target) = &args.publish {
        let published = publish(target, &events, &endpoints).await?;
        println!(
            "replayed {} events: {} appended, {} already in the log",
            events.len(),
            published.appended,
            published.already_present
        );
        return Ok(());
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.fold {
        for line in chat_core::fold::fold(&events) {
            match args.format {
                Format::Text => writeln!(out, "{}", folded_text_line(&line))?,
                Format::Json => writeln!(out, "{}", String::from_utf8_lossy(&line_frame(&line)))?,
            }
        }
        out.flush()?;
        return Ok(());
    }
    for event in &events {
        match args.format {
            Format::Text => writeln!(out, "{}", text_line(event))?,
            Format::Json => writeln!(out, "{}", json_line(event)?)?,
        }
    }
    out.flush()?;
    Ok(())
}
