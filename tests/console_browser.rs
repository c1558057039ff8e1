//! The web console in a real browser: headless Chromium from Debian's
//! packages, driven through chromedriver (`scripts/setup-system.sh`
//! installs both; nothing is downloaded at test time). One tenant signs
//! in, submits through the page, watches the progress bar advance, and
//! plays the finished video in the gallery (readyState >= 2, duration equal
//! to the job's); the usage page charts the charge; a second tenant sees
//! none of it. Screenshots are kept under the test's output directory
//! (`target/console-screenshots/`).

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use support::http::Http;
use support::*;

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn browser(profile: &std::path::Path) -> (Driver, Client) {
    // The WebDriver client's rustls needs a provider; ours is ring.
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let port = free_port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "chromedriver ({e}): run `bash scripts/setup-system.sh` (Debian's chromium-driver)"
            )
        });
    let driver = Driver(driver);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let mut b = ClientBuilder::rustls().expect("rustls client");
        match b.capabilities(caps.clone()).connect(&url).await {
            Ok(c) => return (driver, c),
            Err(e) if Instant::now() < until => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("chromedriver at {url}: {e}"),
        }
    }
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

/// Waits for `script` (a JS expression) to be truthy; returns its value.
async fn until(c: &Client, what: &str, limit: Duration, script: &str) -> Value {
    let end = Instant::now() + limit;
    loop {
        let v = js(c, &format!("return ({script});")).await;
        if !(v.is_null() || v == json!(false) || v == json!(0) || v == json!("")) {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn screenshot(c: &Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    println!("screenshot: {}", dir.join(format!("{name}.png")).display());
}

async fn sign_in(c: &Client, base: &str, key: &str) {
    c.goto(&format!("{base}/console/#/signin")).await.unwrap();
    until(
        c,
        "the sign-in form",
        Duration::from_secs(10),
        "!document.getElementById('page-signin').hidden",
    )
    .await;
    c.find(Locator::Id("signin-key"))
        .await
        .unwrap()
        .send_keys(key)
        .await
        .unwrap();
    c.find(Locator::Id("signin-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        c,
        "the new-video page",
        Duration::from_secs(10),
        "!document.getElementById('page-new').hidden",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_submits_shows_progress_and_plays_the_video() {
    let setup = Setup::new("console", "max_batch = 2");
    let serve = setup.start("serve");
    let base = serve.http.clone().expect("HTTP address");
    let (_driver, c) = browser(&setup.tmp.path().join("chromium")).await;

    sign_in(&c, &base, KEY_A).await;
    let set = |id: &'static str, v: &'static str| {
        let c = c.clone();
        async move {
            let e = c.find(Locator::Id(id)).await.unwrap();
            e.clear().await.unwrap();
            e.send_keys(v).await.unwrap();
        }
    };
    set("prompt", "a lighthouse at dusk, waves rolling in").await;
    set("model", "ltx-tiny").await;
    set("size", "256x256").await;
    set("seconds", "2").await;
    set("steps", "60").await;
    c.find(Locator::Id("submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // The jobs page: the progress bar of the new job advances.
    until(
        &c,
        "the jobs page",
        Duration::from_secs(10),
        "!document.getElementById('page-jobs').hidden",
    )
    .await;
    let id = until(
        &c,
        "the job's row",
        Duration::from_secs(20),
        "sessionStorage.getItem('vidflow_last')",
    )
    .await;
    let id = id.as_str().unwrap().to_string();
    let bar = format!("document.querySelector('progress[data-job-id=\"{id}\"]')");
    until(&c, "the progress bar", Duration::from_secs(20), &bar).await;
    let mut seen = Vec::new();
    let end = Instant::now() + Duration::from_secs(300);
    let mut shot = false;
    loop {
        let v = js(&c, &format!("return {bar}.value;"))
            .await
            .as_f64()
            .unwrap_or(0.0);
        if seen.last() != Some(&v) {
            seen.push(v);
        }
        if !shot && v > 0.0 && v < 100.0 {
            screenshot(&c, "console-progress").await;
            shot = true;
        }
        if v >= 100.0 {
            break;
        }
        assert!(Instant::now() < end, "the bar stopped at {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("progress bar values seen: {seen:?}");
    assert!(
        seen.iter().any(|v| *v > 0.0 && *v < 100.0),
        "the bar jumped: {seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "the bar went back: {seen:?}"
    );
    let status = until(
        &c,
        "the completed badge",
        Duration::from_secs(30),
        &format!("(document.querySelector('tr[data-job-id=\"{id}\"] [data-status]') || {{}}).dataset?.status === 'completed' && 'completed'"),
    )
    .await;
    assert_eq!(status, "completed");

    // The gallery plays it: decoded frames, the job's duration.
    let http = Http::new(&base);
    let v = http.get(&format!("/v1/videos/{id}"), KEY_A).await.json();
    let want_s: f64 = v["seconds"].as_str().unwrap().parse().unwrap();
    c.goto(&format!("{base}/console/#/gallery")).await.unwrap();
    let video = format!("document.querySelector('video[data-job-id=\"{id}\"]')");
    until(&c, "the gallery's video", Duration::from_secs(20), &video).await;
    let ready = until(
        &c,
        "readyState >= 2",
        Duration::from_secs(60),
        &format!("{video}.readyState >= 2 && {video}.readyState"),
    )
    .await;
    assert!(ready.as_u64().unwrap() >= 2);
    let duration = js(&c, &format!("return {video}.duration;"))
        .await
        .as_f64()
        .unwrap();
    println!("video element: readyState {ready}, duration {duration} s, job {want_s} s");
    assert!(
        (duration - want_s).abs() <= 1.0 / 24.0 + 1e-3,
        "duration {duration} vs {want_s}"
    );
    js(&c, &format!("{video}.play(); return true;")).await;
    until(
        &c,
        "playback",
        Duration::from_secs(20),
        &format!("!{video}.paused && {video}.currentTime > 0"),
    )
    .await;
    let label = js(
        &c,
        &format!("return {video}.parentElement.querySelector('[data-untrained]') !== null;"),
    )
    .await;
    assert_eq!(label, json!(true), "untrained output is labelled");
    screenshot(&c, "console-gallery").await;

    // The details page names the safety decision and the cost.
    c.goto(&format!("{base}/console/#/job/{id}")).await.unwrap();
    let text = until(&c, "the details", Duration::from_secs(20), "document.getElementById('job-view').innerText.includes('Safety') && document.getElementById('job-view').innerText").await;
    let text = text.as_str().unwrap();
    assert!(text.contains("Cost") && text.contains("allow"), "{text}");

    // The usage page charts the day's charge.
    c.goto(&format!("{base}/console/#/usage")).await.unwrap();
    let bars = until(
        &c,
        "the usage chart",
        Duration::from_secs(20),
        "document.querySelectorAll('#chart-spend rect[data-tier]').length",
    )
    .await;
    assert!(bars.as_u64().unwrap() >= 1);
    let total = js(
        &c,
        "return document.getElementById('usage-total').innerText;",
    )
    .await;
    let usage = http.get("/v1/usage", KEY_A).await.json();
    assert!(
        total
            .as_str()
            .unwrap()
            .contains(usage["total_usd"].as_str().unwrap()),
        "{total}"
    );
    screenshot(&c, "console-usage").await;

    // Another tenant sees nothing of it.
    c.find(Locator::Id("sign-out"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    sign_in(&c, &base, KEY_B).await;
    c.goto(&format!("{base}/console/#/jobs")).await.unwrap();
    until(
        &c,
        "the other tenant's empty list",
        Duration::from_secs(20),
        "!document.getElementById('jobs-empty').hidden",
    )
    .await;
    let rows = js(
        &c,
        &format!("return document.querySelectorAll('[data-job-id=\"{id}\"]').length;"),
    )
    .await;
    assert_eq!(rows, json!(0));
    c.goto(&format!("{base}/console/#/job/{id}")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = js(
        &c,
        &format!("return fetch('/v1/videos/{id}/content').then(r => r.status);"),
    )
    .await;
    assert_eq!(
        status,
        json!(404),
        "the other tenant's cookie opens no content"
    );
    c.close().await.unwrap();
    serve.terminate();
}
