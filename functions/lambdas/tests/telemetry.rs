//! What the Lambdas tell CloudWatch: log lines in Lambda's JSON format with the
//! request and connection ids, and the broadcaster's EMF line, checked against
//! the Embedded Metric Format's published JSON schema and its other rules.

use std::io::Write;
use std::sync::{Arc, Mutex};

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use aws_lambda_events::dynamodb::{Event, EventRecord};
use chat_core::broadcaster::{Broadcaster, FanoutConfig, RetryPolicy};
use chat_core::memory::{FixedClock, MemoryConnections, MemoryLog, MemorySessions, RecordingPoster};
use chat_core::ports::{ConnectionStore, PostError};
use chat_core::{Connection, LogEvent};
use chat_lambdas::emf::{self, CountingPoster, PostCounts};
use serde_json::{Value, json};
use tracing_subscriber::fmt::MakeWriter;

/// Captures what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> MakeWriter<'w> for Captured {
    type Writer = Captured;

    fn make_writer(&'w self) -> Self::Writer {
        self.clone()
    }
}

fn websocket_event(connection_id: &str, route: &str) -> ApiGatewayWebsocketProxyRequest {
    let mut event = ApiGatewayWebsocketProxyRequest::default();
    event.request_context.connection_id = Some(connection_id.into());
    event.request_context.route_key = Some(route.into());
    event
}

#[test]
fn log_lines_are_lambda_json_with_request_and_connection_ids() {
    let captured = Captured::default();
    let subscriber = chat_lambdas::logs::subscriber(captured.clone(), "info".parse().unwrap());
    tracing::subscriber::with_default(subscriber, || {
        // The span the runtime opens around every invocation, as it opens it.
        let mut context = lambda_runtime::Context::default();
        context.request_id = "8f5e7a2c-request".into();
        context.xray_trace_id = Some("Root=1-abc".into());
        let _invocation = lambda_runtime::layers::trace::request_span(&context).entered();
        let _socket = chat_lambdas::websocket_span(&websocket_event("CXzQ2cJjoAMCJ6g=", "sendmessage")).entered();
        tracing::info!(message_id = "0193-m", delivered = 3_u64, ok = true, "appended \"quoted\"");
        tracing::warn!(error = %PostError::Gone, "post failed");
        tracing::debug!("below the level: not written");
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> =
        text.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("JSON: {line}"))).collect();
    assert_eq!(lines.len(), 2, "{text}");
    for line in &lines {
        let timestamp = line["timestamp"].as_str().expect("a timestamp");
        assert!(chrono::DateTime::parse_from_rfc3339(timestamp).is_ok() && timestamp.ends_with('Z'), "{timestamp}");
        assert_eq!(line["requestId"], "8f5e7a2c-request");
        assert_eq!(line["xrayTraceId"], "Root=1-abc");
        assert_eq!(line["connectionId"], "CXzQ2cJjoAMCJ6g=");
        assert_eq!(line["routeKey"], "sendmessage");
    }
    assert_eq!(lines[0]["level"], "INFO");
    assert_eq!(lines[0]["message"], "appended \"quoted\"");
    assert_eq!(
        (&lines[0]["message_id"], &lines[0]["delivered"], &lines[0]["ok"]),
        (&json!("0193-m"), &json!(3), &json!(true))
    );
    assert_eq!((&lines[1]["level"], &lines[1]["error"]), (&json!("WARN"), &json!("connection is gone")));
}

/// The EMF specification's JSON schema (CloudWatch User Guide, "Specification:
/// Embedded metric format"), as published (draft-07).
const EMF_SCHEMA: &str = r##"{
  "$schema": "http://json-schema.org/draft-07/schema#",
  "type": "object",
  "title": "Root Node",
  "required": ["_aws"],
  "properties": {
    "_aws": {
      "$id": "#/properties/_aws",
      "type": "object",
      "title": "Metadata",
      "required": ["Timestamp", "CloudWatchMetrics"],
      "properties": {
        "Timestamp": { "$id": "#/properties/_aws/properties/Timestamp", "type": "integer", "title": "The Timestamp Schema", "examples": [1565375354953] },
        "CloudWatchMetrics": {
          "$id": "#/properties/_aws/properties/CloudWatchMetrics",
          "type": "array",
          "title": "MetricDirectives",
          "items": {
            "$id": "#/properties/_aws/properties/CloudWatchMetrics/items",
            "type": "object",
            "title": "MetricDirective",
            "required": ["Namespace", "Dimensions", "Metrics"],
            "properties": {
              "Namespace": { "type": "string", "title": "CloudWatch Metrics Namespace", "examples": ["MyApp"], "pattern": "^(.*)$", "minLength": 1, "maxLength": 1024 },
              "Dimensions": {
                "type": "array", "title": "The Dimensions Schema", "minItems": 1,
                "items": {
                  "type": "array", "title": "DimensionSet", "minItems": 0, "maxItems": 30,
                  "items": { "type": "string", "title": "DimensionReference", "examples": ["Operation"], "pattern": "^(.*)$", "minLength": 1, "maxLength": 250 }
                }
              },
              "Metrics": {
                "type": "array", "title": "MetricDefinitions", "minItems": 1, "maxItems": 100,
                "items": {
                  "type": "object", "title": "MetricDefinition", "required": ["Name"],
                  "properties": {
                    "Name": { "type": "string", "title": "MetricName", "examples": ["ProcessingLatency"], "pattern": "^(.*)$", "minLength": 1, "maxLength": 1024 },
                    "Unit": { "type": "string", "title": "MetricUnit", "examples": ["Milliseconds"], "pattern": "^(Seconds|Microseconds|Milliseconds|Bytes|Kilobytes|Megabytes|Gigabytes|Terabytes|Bits|Kilobits|Megabits|Gigabits|Terabits|Percent|Count|Bytes\\/Second|Kilobytes\\/Second|Megabytes\\/Second|Gigabytes\\/Second|Terabytes\\/Second|Bits\\/Second|Kilobits\\/Second|Megabits\\/Second|Gigabits\\/Second|Terabits\\/Second|Count\\/Second|None)$" },
                    "StorageResolution": { "type": "integer", "title": "StorageResolution", "examples": [60] }
                  }
                }
              }
            }
          }
        }
      }
    }
  }
}"##;

/// The schema, then the rules the specification states in prose: every
/// dimension and metric a directive names is a root member, a dimension's value
/// a string, a metric's value a number (or up to 100 numbers); the document is
/// one line under 1 MB.
fn assert_valid_emf(line: &str) {
    assert!(!line.contains('\n') && line.len() < 1024 * 1024, "one line under 1 MB");
    let document: Value = serde_json::from_str(line).expect("a JSON object");
    let schema = serde_json::from_str(EMF_SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the EMF schema compiles");
    let errors: Vec<String> = validator.iter_errors(&document).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?} in {document}");
    for directive in document["_aws"]["CloudWatchMetrics"].as_array().unwrap() {
        for dimension in directive["Dimensions"].as_array().unwrap().iter().flat_map(|set| set.as_array().unwrap()) {
            let name = dimension.as_str().unwrap();
            assert!(document[name].is_string(), "dimension {name} is a root string member");
        }
        for metric in directive["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            let value = &document[name];
            let numbers =
                value.as_array().map_or(value.is_number(), |v| v.len() <= 100 && v.iter().all(Value::is_number));
            assert!(numbers, "metric {name} is a root number member: {value}");
        }
    }
}

#[test]
fn the_emf_validator_refuses_what_cloudwatch_would_refuse() {
    let refused = |document: Value| std::panic::catch_unwind(|| assert_valid_emf(&document.to_string())).is_err();
    let directive = |metrics: Value| json!({"Namespace": "N", "Dimensions": [["F"]], "Metrics": metrics});
    assert!(refused(json!({"F": "f", "M": 1})), "no _aws");
    assert!(refused(
        json!({"_aws": {"Timestamp": "now", "CloudWatchMetrics": [directive(json!([{"Name": "M"}]))]}, "F": "f", "M": 1})
    ));
    assert!(refused(
        json!({"_aws": {"Timestamp": 1, "CloudWatchMetrics": [directive(json!([{"Name": "M", "Unit": "Parsecs"}]))]}, "F": "f", "M": 1})
    ));
    assert!(
        refused(json!({"_aws": {"Timestamp": 1, "CloudWatchMetrics": [directive(json!([{"Name": "M"}]))]}, "F": "f"})),
        "metric value missing"
    );
    assert!(
        refused(json!({"_aws": {"Timestamp": 1, "CloudWatchMetrics": [directive(json!([{"Name": "M"}]))]}, "M": 1})),
        "dimension missing"
    );
    assert!(!refused(
        json!({"_aws": {"Timestamp": 1, "CloudWatchMetrics": [directive(json!([{"Name": "M", "Unit": "Count"}]))]}, "F": "f", "M": 1})
    ));
}

fn record(sequence: u64, event: &LogEvent) -> EventRecord {
    let mut record = EventRecord::default();
    record.event_name = "INSERT".into();
    record.change.sequence_number = Some(format!("{sequence:028}"));
    record.change.approximate_creation_date_time = event.timestamp;
    record.change.new_image = serde_dynamo::to_item(event).unwrap();
    record
}

#[tokio::test]
async fn one_broadcast_gives_one_valid_emf_document_with_its_counters() {
    let at = chrono::Utc::now();
    let connections = Arc::new(MemoryConnections::default());
    for id in ["reader-a", "reader-b", "left-already"] {
        connections.put(&Connection::new(id, "198.51.100.1", at)).await.unwrap();
    }
    let poster = RecordingPoster::default();
    poster.mark_gone("left-already");
    poster.fail_next("reader-b", [PostError::Throttled]);
    let counts = Arc::new(PostCounts::default());
    let retry = RetryPolicy { max_attempts: 3, base_delay: std::time::Duration::ZERO, ..RetryPolicy::default() };
    let broadcaster = Broadcaster {
        connections,
        sessions: Arc::new(MemorySessions::default()),
        log: Arc::new(MemoryLog::default()),
        poster: Arc::new(CountingPoster { inner: poster, counts: counts.clone() }),
        archive: None,
        clock: Arc::new(FixedClock::at(at)),
        config: FanoutConfig { retry, ..FanoutConfig::default() },
        occupancy: Default::default(),
    };
    let mut event = Event::default();
    event.records =
        vec![record(1, &LogEvent::chat("writer", "hello", at)), record(2, &LogEvent::chat("writer", "again", at))];

    let (response, metrics) = chat_lambdas::measured_broadcast(&event, &broadcaster, &counts).await;
    assert!(response.batch_item_failures.is_empty());
    let line = emf::document("chat-broadcaster", &metrics, at.timestamp_millis()).to_string();
    assert_valid_emf(&line);

    let document: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(document["_aws"]["CloudWatchMetrics"][0]["Namespace"], emf::NAMESPACE);
    assert_eq!(document["FunctionName"], "chat-broadcaster");
    // 2 events × 2 readers; the gone one is pruned on the first event; one throttled retry.
    assert_eq!(document["StreamRecords"], 2);
    assert_eq!(document["Deliveries"], 4);
    assert_eq!(
        (&document["PostsOk"], &document["PostsGone"], &document["PostsThrottled"]),
        (&json!(4), &json!(1), &json!(1))
    );
    assert_eq!(
        (&document["Pruned"], &document["PostsFailed"], &document["RecordsToRetry"]),
        (&json!(1), &json!(0), &json!(0))
    );
    assert!(document["FanoutDuration"].as_f64().unwrap() >= 0.0);
    assert!(document["StreamLag"].as_f64().unwrap() < 60.0);
    assert_eq!(counts.take(), emf::PostTally::default(), "the tally starts again for the next invocation");
}
