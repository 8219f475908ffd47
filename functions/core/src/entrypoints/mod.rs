//! The edges shared by the Lambda binaries and the local stack: each takes the
//! exact `aws_lambda_events` type AWS delivers and returns what AWS expects back.

pub mod authorizer;
pub mod events;
pub mod expiry;
pub mod fanout;
pub mod publish;
pub mod stream;
pub mod websocket;
