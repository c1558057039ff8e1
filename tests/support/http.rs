//! A small client for the HTTP API tests (reqwest, plain HTTP on loopback).

use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
}

/// Status, headers and body of one answer.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }

    /// The `param` of an error body.
    pub fn param(&self) -> String {
        self.json()["error"]["param"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

impl Http {
    pub fn new(base: &str) -> Http {
        // Already installed (another client of this process) is fine.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        Http {
            base: base.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let r = req.send().await.expect("HTTP request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.expect("HTTP body").to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str, key: &str) -> Answer {
        self.send(self.client.get(self.url(path)).bearer_auth(key))
            .await
    }

    pub async fn post_json(&self, path: &str, key: &str, body: &Value) -> Answer {
        self.send(
            self.client
                .post(self.url(path))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    /// Polls a video until `done` holds (panics after `limit`).
    pub async fn wait_video(
        &self,
        id: &str,
        key: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let until = Instant::now() + limit;
        loop {
            let v = self.get(&format!("/v1/videos/{id}"), key).await.json();
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < until, "video {id} never got there: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn is_finished(v: &Value) -> bool {
    matches!(
        v["status"].as_str(),
        Some("completed" | "failed" | "cancelled")
    )
}
