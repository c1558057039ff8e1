//! The HTTP API of `vidflow serve` (real binary, real RabbitMQ, the tiny
//! model): the /v1/videos convention end to end (create as JSON and as
//! multipart with a first frame, poll, progress as server-sent events,
//! download with ranges and a thumbnail, list with cursors, cancel,
//! delete), our usage endpoint against the ledger, keys, tenant isolation,
//! idempotency, and every documented error status.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use support::http::{is_finished, Http};
use support::*;

fn job(prompt: &str, steps: u32) -> Value {
    json!({
        "prompt": prompt,
        "model": "ltx-tiny",
        "seconds": "1",
        "size": "256x256",
        "mode": "realtime",
        "steps": steps,
        "seed": 3,
    })
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Reads server-sent events until the video has finished; returns every
/// video object seen.
async fn follow(http: &Http, id: &str, key: &str) -> Vec<Value> {
    let r = http
        .client
        .get(http.url(&format!("/v1/videos/{id}/events")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = r.bytes_stream();
    let (mut buf, mut seen) = (String::new(), Vec::new());
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(120), body.next())
        .await
        .expect("an event at least every second")
    {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(i) = buf.find("\n\n") {
            let block: String = buf.drain(..i + 2).collect();
            let data: String = block
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            if data.is_empty() {
                continue;
            }
            assert!(block.contains("event: video"), "{block}");
            let v: Value = serde_json::from_str(&data).unwrap();
            let end = is_finished(&v);
            seen.push(v);
            if end {
                return seen;
            }
        }
    }
    panic!("the event stream ended before the video finished: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v1_videos_api_end_to_end() {
    // A small body limit, so the 413 needs no large upload.
    let setup = Setup::new("http", "max_batch = 2");
    let cfg = std::fs::read_to_string(&setup.config).unwrap().replace(
        "[http]\nlisten = \"127.0.0.1:0\"\n",
        "[http]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 262144\n",
    );
    std::fs::write(&setup.config, cfg).unwrap();
    let serve = setup.start("serve");
    let http = Http::new(serve.http.as_deref().expect("HTTP address"));

    // The OpenAPI document lists every route, without a key.
    let doc = http.send(http.client.get(http.url("/openapi.json"))).await;
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    for p in [
        "/v1/videos",
        "/v1/videos/{id}",
        "/v1/videos/{id}/content",
        "/v1/videos/{id}/cancel",
        "/v1/videos/{id}/events",
        "/v1/usage",
    ] {
        assert!(doc["paths"][p].is_object(), "openapi.json lacks {p}");
    }

    // Keys.
    let r = http.send(http.client.get(http.url("/v1/videos"))).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), "Bearer");
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    assert_eq!(http.get("/v1/videos", "vf_nope").await.status, 401);
    let r = http
        .send(
            http.client
                .get(http.url("/v1/videos"))
                .header("x-api-key", KEY_A),
        )
        .await;
    assert_eq!(r.status, 200);

    // Bad requests, each naming its field.
    let bad = |body: Value| {
        let http = &http;
        async move { http.post_json("/v1/videos", KEY_A, &body).await }
    };
    let r = bad(json!({"prompt": "a fox", "colour": "red"})).await;
    assert_eq!(
        (r.status, r.param()),
        (400, "colour".into()),
        "{}",
        r.json()
    );
    let r = bad(json!({"prompt": "a fox", "seed": "seven"})).await;
    assert_eq!((r.status, r.param()), (400, "seed".into()), "{}", r.json());
    let r = bad(json!({"prompt": 5})).await;
    assert_eq!((r.status, r.param()), (400, "prompt".into()));
    let r = bad(json!({"prompt": "a fox", "size": "100x77", "model": "ltx-tiny"})).await;
    assert_eq!((r.status, r.param()), (400, "size".into()), "{}", r.json());
    let r = bad(json!({"prompt": "a fox", "model": "nope"})).await;
    assert_eq!((r.status, r.param()), (400, "model".into()));
    let r = bad(json!({"prompt": "a fox", "tier": "gold"})).await;
    assert_eq!((r.status, r.param()), (400, "tier".into()));
    let r = http
        .send(
            http.client
                .post(http.url("/v1/videos"))
                .bearer_auth(KEY_A)
                .header("content-type", "application/json")
                .body("{\"prompt\": "),
        )
        .await;
    assert_eq!((r.status, r.param()), (400, "(body)".into()));
    let r = http
        .send(
            http.client
                .post(http.url("/v1/videos"))
                .bearer_auth(KEY_A)
                .header("content-type", "text/plain")
                .body("a fox"),
        )
        .await;
    assert_eq!(r.status, 415);
    let huge = json!({"prompt": "x".repeat(300_000)});
    assert_eq!(bad(huge).await.status, 413);
    let r = http
        .send(
            http.client
                .post(http.url("/v1/videos"))
                .bearer_auth(KEY_A)
                .multipart(
                    reqwest::multipart::Form::new()
                        .text("prompt", "a fox")
                        .part(
                            "input_reference",
                            reqwest::multipart::Part::bytes(vec![0u8; 300_000]),
                        ),
                ),
        )
        .await;
    assert_eq!(r.status, 413);
    let r = http.get("/v1/videos?limit=0", KEY_A).await;
    assert_eq!((r.status, r.param()), (400, "limit".into()));
    let r = http.get("/v1/videos?order=sideways", KEY_A).await;
    assert_eq!((r.status, r.param()), (400, "order".into()));
    let r = http.get("/v1/videos?page=2", KEY_A).await;
    assert_eq!((r.status, r.param()), (400, "page".into()));

    // Create, with an idempotency key: the retry names the same job.
    let send_keyed = |key: &'static str| {
        let http = &http;
        async move {
            http.send(
                http.client
                    .post(http.url("/v1/videos"))
                    .bearer_auth(KEY_A)
                    .header("idempotency-key", key)
                    .header("content-type", "application/json")
                    .body(job("a red fox in snow", 4).to_string()),
            )
            .await
        }
    };
    let first = send_keyed("order-1").await;
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let v = first.json();
    assert_eq!(v["object"], "video");
    assert_eq!(v["model"], "ltx-tiny");
    assert_eq!(v["size"], "256x256");
    assert_eq!(v["tier"], "standard");
    assert!(
        matches!(v["status"].as_str(), Some("queued" | "in_progress")),
        "{v}"
    );
    let id = v["id"].as_str().unwrap().to_string();
    let again = send_keyed("order-1").await.json();
    assert_eq!(again["id"], id.as_str());

    // Progress as server-sent events: it only goes up, ends completed at 100.
    let seen = follow(&http, &id, KEY_A).await;
    let progress: Vec<u64> = seen
        .iter()
        .map(|v| v["progress"].as_u64().unwrap())
        .collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    let done = seen.last().unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"], 100);
    println!("SSE progress of a 4-step job: {progress:?}");

    let v = http
        .get(&format!("/v1/videos/{id}?include=details"), KEY_A)
        .await
        .json();
    assert_eq!(v["status"], "completed");
    assert!(v["completed_at"].as_u64().unwrap() >= v["created_at"].as_u64().unwrap());
    assert_eq!(v["seconds"], "1.042", "25 frames at 24 fps");
    assert_eq!(v["untrained"], true);
    assert!(v["cost"]["amount_usd"].as_str().unwrap().contains('.'));
    assert_eq!(v["details"]["safety"][0]["stage"], "prompt", "{v}");
    assert_eq!(v["details"]["safety"][0]["decision"], "allow");

    // Content: whole, ranges, past the end, thumbnail.
    let whole = http.get(&format!("/v1/videos/{id}/content"), KEY_A).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-type"), "video/mp4");
    assert_eq!(whole.header("accept-ranges"), "bytes");
    assert_eq!(whole.body.len() as u64, v["bytes"].as_u64().unwrap());
    assert_eq!(
        vidflow_connectors::store::sha256_hex(&whole.body),
        v["sha256"].as_str().unwrap()
    );
    let mp4 = setup.tmp.path().join("download.mp4");
    std::fs::write(&mp4, &whole.body).unwrap();
    assert_eq!(
        ffprobe_stream(&mp4, "codec_name,width,height,nb_read_frames"),
        "h264,256,256,25"
    );
    let size = whole.body.len();
    let ranged = |range: String| {
        let http = &http;
        let id = id.clone();
        async move {
            http.send(
                http.client
                    .get(http.url(&format!("/v1/videos/{id}/content")))
                    .bearer_auth(KEY_A)
                    .header("range", range),
            )
            .await
        }
    };
    let r = ranged("bytes=0-99".into()).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), format!("bytes 0-99/{size}"));
    assert_eq!(r.body, whole.body[..100]);
    let r = ranged("bytes=-10".into()).await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (206, &whole.body[size - 10..])
    );
    let r = ranged(format!("bytes=100-{}", size + 50)).await;
    assert_eq!((r.status, r.body.as_slice()), (206, &whole.body[100..]));
    let r = ranged(format!("bytes={size}-")).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), format!("bytes */{size}"));
    let t = http
        .get(&format!("/v1/videos/{id}/content?variant=thumbnail"), KEY_A)
        .await;
    assert_eq!(
        (t.status, t.header("content-type").as_str()),
        (200, "image/png")
    );
    let thumb = image::load_from_memory(&t.body).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (256, 256));
    let r = http
        .get(&format!("/v1/videos/{id}/content?variant=gif"), KEY_A)
        .await;
    assert_eq!((r.status, r.param()), (400, "variant".into()));

    // The console's cookie opens content (GET) and nothing else.
    let r = http
        .send(
            http.client
                .post(http.url("/console/session"))
                .header("content-type", "application/json")
                .body(json!({"key": KEY_A}).to_string()),
        )
        .await;
    assert_eq!(r.status, 200);
    let cookie = r.header("set-cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let r = http
        .send(
            http.client
                .get(http.url(&format!("/v1/videos/{id}/content")))
                .header("cookie", &pair),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = http
        .send(
            http.client
                .get(http.url(&format!("/v1/videos/{id}")))
                .header("cookie", &pair),
        )
        .await;
    assert_eq!(r.status, 401, "the cookie is for media only");
    let r = http
        .send(
            http.client
                .post(http.url("/console/session"))
                .header("content-type", "application/json")
                .body(json!({"key": "vf_nope"}).to_string()),
        )
        .await;
    assert_eq!(r.status, 401);

    // Multipart with a first frame: an image-to-video job.
    let form = reqwest::multipart::Form::new()
        .text("prompt", "the same scene, moving")
        .text("model", "ltx-tiny")
        .text("seconds", "1")
        .text("size", "256x256")
        .text("steps", "2")
        .part(
            "input_reference",
            reqwest::multipart::Part::bytes(png(256, 256)).file_name("first.png"),
        );
    let r = http
        .send(
            http.client
                .post(http.url("/v1/videos"))
                .bearer_auth(KEY_A)
                .multipart(form),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let i2v = r.json()["id"].as_str().unwrap().to_string();

    // Another tenant sees none of it.
    for (method, path) in [
        ("GET", format!("/v1/videos/{id}")),
        ("GET", format!("/v1/videos/{id}/content")),
        ("GET", format!("/v1/videos/{id}/events")),
        ("POST", format!("/v1/videos/{id}/cancel")),
        ("DELETE", format!("/v1/videos/{id}")),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = http
            .send(http.client.request(m, http.url(&path)).bearer_auth(KEY_B))
            .await;
        assert_eq!(r.status, 404, "{method} {path} as another tenant");
    }
    let theirs = http.get("/v1/videos", KEY_B).await.json();
    assert_eq!(theirs["data"].as_array().unwrap().len(), 0);

    // Cancel stops a long job; a finished job cannot be cancelled.
    let mut long = job("a very long fox", 200);
    long["size"] = json!("512x512");
    let long = http.post_json("/v1/videos", KEY_A, &long).await.json();
    let long_id = long["id"].as_str().unwrap().to_string();
    http.wait_video(&long_id, KEY_A, Duration::from_secs(120), |v| {
        v["status"] == "in_progress" && v["stage"] == "denoise"
    })
    .await;
    let r = http
        .send(
            http.client
                .delete(http.url(&format!("/v1/videos/{long_id}")))
                .bearer_auth(KEY_A),
        )
        .await;
    assert_eq!(r.status, 409, "a running video's content cannot be deleted");
    let r = http
        .send(
            http.client
                .post(http.url(&format!("/v1/videos/{long_id}/cancel")))
                .bearer_auth(KEY_A),
        )
        .await;
    assert_eq!(r.status, 200);
    let v = http
        .wait_video(&long_id, KEY_A, Duration::from_secs(60), is_finished)
        .await;
    assert_eq!(v["status"], "cancelled", "{v}");
    assert_eq!(v["error"]["code"], "cancelled");
    let r = http
        .send(
            http.client
                .post(http.url(&format!("/v1/videos/{long_id}/cancel")))
                .bearer_auth(KEY_A),
        )
        .await;
    assert_eq!(r.status, 409);

    // List: newest first, cursors, ascending order.
    let v = http
        .wait_video(&i2v, KEY_A, Duration::from_secs(120), is_finished)
        .await;
    assert_eq!(v["status"], "completed", "{v}");
    let page = http.get("/v1/videos?limit=2", KEY_A).await.json();
    assert_eq!(page["object"], "list");
    let ids: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [long_id.as_str(), i2v.as_str()]);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["first_id"], long_id.as_str());
    let next = http
        .get(
            &format!(
                "/v1/videos?limit=2&after={}",
                page["last_id"].as_str().unwrap()
            ),
            KEY_A,
        )
        .await
        .json();
    let ids: Vec<&str> = next["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    assert_eq!(next["has_more"], false);
    let asc = http.get("/v1/videos?order=asc&limit=1", KEY_A).await.json();
    assert_eq!(asc["data"][0]["id"], id.as_str());
    let r = http.get("/v1/videos?after=nope", KEY_A).await;
    assert_eq!((r.status, r.param()), (400, "after".into()));

    // Usage adds up to the charges of the delivered videos, exactly.
    let usage = http.get("/v1/usage", KEY_A).await.json();
    let mut charged = 0i64;
    for job_id in [&id, &i2v] {
        let rec = setup.out.join(format!("jobs/acme/{job_id}.json"));
        let rec: Value = serde_json::from_slice(&std::fs::read(rec).unwrap()).unwrap();
        charged += rec["billing"]["amount_micro"].as_i64().unwrap();
    }
    assert_eq!(usage["total_micro"].as_i64().unwrap(), charged, "{usage}");
    let rows = usage["data"].as_array().unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| r["jobs"].as_u64().unwrap())
            .sum::<u64>(),
        2,
        "{usage}"
    );
    assert_eq!(http.get("/v1/usage?days=0", KEY_A).await.param(), "days");

    // Delete: the content goes, the record (and its charge) stay.
    let r = http
        .send(
            http.client
                .delete(http.url(&format!("/v1/videos/{id}")))
                .bearer_auth(KEY_A),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"id": id, "object": "video.deleted", "deleted": true})
    );
    assert_eq!(
        http.get(&format!("/v1/videos/{id}/content"), KEY_A)
            .await
            .status,
        404
    );
    let v = http.get(&format!("/v1/videos/{id}"), KEY_A).await.json();
    assert_eq!(
        (v["status"].as_str(), v["content_deleted"].as_bool()),
        (Some("completed"), Some(true))
    );
    assert_eq!(
        http.get("/v1/usage", KEY_A).await.json()["total_micro"].as_i64(),
        Some(charged)
    );

    // Unknown routes are JSON 404s.
    let r = http.get("/v2/nothing", KEY_A).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    serve.terminate();
}
