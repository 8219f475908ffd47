//! The broadcaster's optional archive on S3.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use chat_core::ports::{Archive, StoreError};

use crate::unavailable;

/// JSON Lines objects in one bucket.
#[derive(Clone, Debug)]
pub struct S3Archive {
    client: Client,
    bucket: String,
}

impl S3Archive {
    /// Path-style addressing keeps local S3 endpoints (moto) working.
    pub fn new(sdk: &aws_config::SdkConfig, bucket: impl Into<String>) -> Self {
        let config = aws_sdk_s3::config::Builder::from(sdk).force_path_style(true).build();
        Self { client: Client::from_conf(config), bucket: bucket.into() }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

#[async_trait]
impl Archive for S3Archive {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/x-ndjson")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
