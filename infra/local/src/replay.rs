//! Reading the log back from wherever it lives — the local store, a DynamoDB
//! table, the S3 archive — and re-publishing it into a log. Re-publishing keeps
//! every id, and a log skips ids it already has, so replay is idempotent.

use std::path::PathBuf;
use std::str::FromStr;

use chat_aws::{DynamoLog, S3Archive};
use chat_core::{LogEvent, MessageLog, StoreError};
use indicatif::{ProgressBar, ProgressStyle};

use crate::store::SqliteStore;

/// Where a log lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// `sqlite:PATH`: the local stack's database.
    Sqlite(PathBuf),
    /// `dynamodb:TABLE`: a MessageHistory table.
    DynamoDb { table: String },
    /// `s3:BUCKET[/PREFIX]`: the broadcaster's archive (default prefix `messages/`).
    S3 { bucket: String, prefix: String },
}

impl FromStr for Location {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = text.split_once(':').ok_or_else(|| format!("{text:?}: expected KIND:WHERE"))?;
        let rest = rest.trim_start_matches("//");
        if rest.is_empty() {
            return Err(format!("{text:?}: nothing after {scheme}:"));
        }
        match scheme {
            "sqlite" => Ok(Location::Sqlite(rest.into())),
            "dynamodb" => Ok(Location::DynamoDb { table: rest.into() }),
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, chat_core::archive::PREFIX));
                Ok(Location::S3 { bucket: bucket.into(), prefix: prefix.into() })
            }
            _ => Err(format!("{text:?}: the kind is one of sqlite:, dynamodb:, s3:")),
        }
    }
}

/// Endpoint overrides for the AWS locations (moto, DynamoDB Local, MinIO).
#[derive(Clone, Debug, Default)]
pub struct Endpoints {
    pub dynamodb: Option<String>,
    pub s3: Option<String>,
}

async fn dynamo_log(table: &str, endpoints: &Endpoints) -> DynamoLog {
    DynamoLog::new(aws_sdk_dynamodb::Client::new(&chat_aws::sdk_config_for(endpoints.dynamodb.as_deref()).await), table)
}

/// A bar on stderr when it is a terminal; invisible otherwise.
fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta})").expect("a valid template");
    bar.set_style(style.progress_chars("=> "));
    bar.set_message(what.to_owned());
    bar
}

/// Every event at `location`, as stored (unsorted; [`chat_core::replay::ReplayFilter`] orders them).
pub async fn read(location: &Location, endpoints: &Endpoints) -> Result<Vec<LogEvent>, StoreError> {
    match location {
        Location::Sqlite(path) => {
            if !path.exists() {
                return Err(StoreError::Unavailable(format!("{} does not exist", path.display())));
            }
            let rows = SqliteStore::open(path)?.stream_after(0, i64::MAX as usize)?;
            let mut events = Vec::with_capacity(rows.len());
            for (seq, row) in rows {
                match row {
                    Ok(event) => events.push(event),
                    Err(error) => tracing::warn!(seq, %error, "skipping unreadable row"),
                }
            }
            Ok(events)
        }
        Location::DynamoDb { table } => dynamo_log(table, endpoints).await.scan_all().await,
        Location::S3 { bucket, prefix } => {
            let archive = S3Archive::new(&chat_aws::sdk_config_for(endpoints.s3.as_deref()).await, bucket);
            let keys = archive.keys(prefix).await?;
            let bar = progress(keys.len() as u64, "reading archive objects");
            let mut events = Vec::new();
            for key in &keys {
                events.extend(archive.read(key).await?);
                bar.inc(1);
            }
            bar.finish_and_clear();
            Ok(events)
        }
    }
}

/// What re-publishing did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Published {
    pub appended: usize,
    pub already_present: usize,
}

/// Appends `events`, in order, to the log at `target`.
pub async fn publish(target: &Location, events: &[LogEvent], endpoints: &Endpoints) -> Result<Published, StoreError> {
    let log: Box<dyn MessageLog> = match target {
        Location::Sqlite(path) => Box::new(SqliteStore::open(path)?),
        Location::DynamoDb { table } => Box::new(dynamo_log(table, endpoints).await),
        Location::S3 { .. } => {
            return Err(StoreError::Malformed("the archive is written by the broadcaster; publish to a log".into()));
        }
    };
    let bar = progress(events.len() as u64, "publishing");
    let mut published = Published::default();
    for event in events {
        if log.append(event).await? {
            published.appended += 1;
        } else {
            published.already_present += 1;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(published)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_from_kind_and_place() {
        assert_eq!("sqlite:chat.db".parse(), Ok(Location::Sqlite("chat.db".into())));
        assert_eq!("dynamodb:MessageHistory".parse(), Ok(Location::DynamoDb { table: "MessageHistory".into() }));
        assert_eq!("s3://archive".parse(), Ok(Location::S3 { bucket: "archive".into(), prefix: "messages/".into() }));
        assert_eq!(
            "s3:archive/messages/2026/11/".parse(),
            Ok(Location::S3 { bucket: "archive".into(), prefix: "messages/2026/11/".into() })
        );
        for bad in ["chat.db", "ftp:x", "s3:", "dynamodb:"] {
            assert!(bad.parse::<Location>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn publishing_twice_appends_once() {
        let dir = std::env::temp_dir().join(format!("replay-publish-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = Location::Sqlite(dir.join("chat.db"));
        let at = chat_core::time::parse_iso("2026-11-24T10:00:00Z").unwrap();
        let events = vec![LogEvent::chat("a", "one", at), LogEvent::chat("b", "two", at)];
        let endpoints = Endpoints::default();
        let first = publish(&target, &events, &endpoints).await.unwrap();
        assert_eq!(first, Published { appended: 2, already_present: 0 });
        let again = publish(&target, &events, &endpoints).await.unwrap();
        assert_eq!(again, Published { appended: 0, already_present: 2 });
        let mut back = read(&target, &endpoints).await.unwrap();
        back.sort_by(|a, b| a.message_id.cmp(&b.message_id));
        let mut expected = events;
        expected.sort_by(|a, b| a.message_id.cmp(&b.message_id));
        assert_eq!(back, expected);
        std::fs::remove_dir_all(dir).ok();
    }
}
