//! ActiveConnections' stream, filtered to the table's TTL deletions: a connection
//! whose `$disconnect` was lost and that no broadcast pruned (a quiet room) still
//! gets its departure announced, once (see [`depart`]), when its row expires.

use aws_lambda_events::dynamodb::{Event, EventRecord};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use chrono::{DateTime, Duration, Utc};

use crate::handlers::depart;
use crate::model::{Connection, SessionEnd};
use crate::ports::{ConnectionStore, MessageLog, SessionLog};

/// API Gateway closes every connection after 2 h: an expired row's socket was
/// gone by then at the latest.
const LONGEST_CONNECTION: Duration = Duration::hours(2);

/// Ends the session of every removed connection row in the batch. Records whose
/// session could not be ended (a store outage) are reported for retry; removals
/// that are not connections are logged and skipped.
pub async fn on_expired_connections(
    event: &Event,
    connections: &dyn ConnectionStore,
    sessions: &dyn SessionLog,
    log: &dyn MessageLog,
    now: DateTime<Utc>,
) -> DynamoDbEventResponse {
    let mut response = DynamoDbEventResponse::default();
    for record in &event.records {
        let Some(connection) = removed_connection(record) else { continue };
        let gone_at = now.min(connection.connected_at + LONGEST_CONNECTION);
        let end = SessionEnd::new(&connection.connection_id, connection.connected_at, gone_at);
        match depart(&end, Some(&connection), connections, sessions, log).await {
            Ok(left) => tracing::info!(
                connection_id = %connection.connection_id,
                rooms_left = left,
                "expired connection ended"
            ),
            Err(error) => {
                tracing::warn!(connection_id = %connection.connection_id, %error, "cannot end an expired connection");
                let mut failure = DynamoDbBatchItemFailure::default();
                failure.item_identifier = record.change.sequence_number.clone();
                response.batch_item_failures.push(failure);
            }
        }
    }
    response
}

fn removed_connection(record: &EventRecord) -> Option<Connection> {
    if record.event_name != "REMOVE" {
        return None;
    }
    serde_dynamo::from_item(record.change.old_image.clone())
        .map_err(
            |error| tracing::error!(event_id = %record.event_id, %error, "skipping a removal that is not a connection"),
        )
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryConnections, MemoryLog, MemorySessions};
    use crate::model::{EventKind, Session};
    use crate::time::parse_iso;

    fn removal(connection: &Connection, sequence: &str) -> serde_json::Value {
        serde_json::json!({
            "eventID": sequence, "eventName": "REMOVE", "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/ActiveConnections/stream/2026",
            "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
            "dynamodb": {
                "Keys": {"connection_id": {"S": connection.connection_id}},
                "OldImage": serde_dynamo::to_item::<_, serde_dynamo::Item>(connection).unwrap(),
                "SequenceNumber": sequence, "SizeBytes": 120, "StreamViewType": "OLD_IMAGE"
            }
        })
    }

    #[tokio::test]
    async fn an_expired_connection_is_announced_once_in_each_room() {
        let (connections, sessions, log) =
            (MemoryConnections::default(), MemorySessions::default(), MemoryLog::default());
        let at = parse_iso("2026-11-24T10:00:00Z").unwrap();
        let ada = crate::model::Identity::verified("Ada", "https://id.example|ada");
        let quiet = Connection::new("quiet", "ip", at).in_room("ops").also_in(["dev"]).of(Some(&ada));
        connections.put(&quiet).await.unwrap();
        sessions.open(&Session::opened(&quiet)).await.unwrap();
        // The TTL deleted the row; its memberships are still there.
        connections.delete("quiet").await.unwrap();
        let batch: Event = serde_json::from_value(serde_json::json!({"Records": [removal(&quiet, "1")]})).unwrap();
        let later = parse_iso("2026-11-24T13:00:00Z").unwrap();

        let reap = || on_expired_connections(&batch, &connections, &sessions, &log, later);
        assert!(reap().await.batch_item_failures.is_empty());
        reap().await; // redelivered: nothing more
        let events = log.events();
        assert_eq!(events.len(), 2);
        assert_eq!((events[0].kind, events[0].room.as_str()), (EventKind::Leave, "ops"));
        assert_eq!((events[1].kind, events[1].room.as_str()), (EventKind::Leave, "dev"));
        assert!(connections.memberships().is_empty());
        assert_eq!(events[0].user_id.as_deref(), Some("https://id.example|ada"), "whose, from the stored row");
        let session = sessions.get("quiet").unwrap();
        assert_eq!(session.disconnected_at, Some(at + LONGEST_CONNECTION), "gone by API Gateway's 2 h at the latest");
    }

    #[tokio::test]
    async fn an_outage_reports_the_record_for_retry() {
        let (connections, sessions, log) =
            (MemoryConnections::default(), MemorySessions::default(), MemoryLog::default());
        let connection = Connection::new("c", "ip", parse_iso("2026-11-24T10:00:00Z").unwrap());
        sessions.open(&Session::opened(&connection)).await.unwrap();
        sessions.outage.set(true);
        let batch: Event = serde_json::from_value(serde_json::json!({"Records": [removal(&connection, "7")]})).unwrap();
        let response = on_expired_connections(&batch, &connections, &sessions, &log, Utc::now()).await;
        assert_eq!(response.batch_item_failures[0].item_identifier.as_deref(), Some("7"));
    }
}
