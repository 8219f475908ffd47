//! The broadcaster's optional archive on S3.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use chat_core::LogEvent;
use chat_core::archive::from_jsonl;
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

    /// Every object key under `prefix`, in key order (by date, then first id).
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(unavailable)?;
            keys.extend(page.contents().iter().filter_map(|object| object.key().map(str::to_owned)));
        }
        keys.sort();
        Ok(keys)
    }

    /// The events of one archive object.
    pub async fn read(&self, key: &str) -> Result<Vec<LogEvent>, StoreError> {
        let object = self.client.get_object().bucket(&self.bucket).key(key).send().await.map_err(unavailable)?;
        let body = object.body.collect().await.map_err(unavailable)?.into_bytes();
        from_jsonl(&body).map_err(|error| StoreError::Malformed(format!("{key}: {error}")))
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
