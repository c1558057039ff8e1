//! Prometheus metrics of `vidflow serve` (`GET /metrics`, text format
//! 0.0.4): queue depths, jobs by state, stage latency histograms,
//! accelerator busy time and utilisation.
//!
//! The HTTP side is a few lines on a tokio listener rather than a web
//! framework: one fixed read-only endpoint needs no router, and the
//! exposition format is plain text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use vidflow_operators::{JobStatus, Stage};

/// How a job left this process, as counted by `vidflow_jobs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Committed with this status.
    Job(JobStatus),
    /// Dead-lettered before it became a job (undecodable or invalid).
    Rejected,
}

impl Finished {
    pub fn as_str(self) -> &'static str {
        match self {
            Finished::Job(s) => s.as_str(),
            Finished::Rejected => "rejected",
        }
    }
}

/// Upper bounds (seconds) of the stage latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

pub struct Metrics {
    started: Instant,
    queue_ready: Mutex<BTreeMap<String, i64>>,
    in_flight: AtomicI64,
    finished: Mutex<BTreeMap<&'static str, u64>>,
    stages: Mutex<BTreeMap<&'static str, Histogram>>,
    accel_busy_us: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            queue_ready: Mutex::new(BTreeMap::new()),
            in_flight: AtomicI64::new(0),
            finished: Mutex::new(BTreeMap::new()),
            stages: Mutex::new(BTreeMap::new()),
            accel_busy_us: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn set_queue(&self, queue: &str, ready: i64) {
        if let Ok(mut q) = self.queue_ready.lock() {
            q.insert(queue.to_string(), ready);
        }
    }

    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.store(n as i64, Ordering::Relaxed);
    }

    /// A job's terminal outcome (completed, failed, cancelled, rejected).
    pub fn finished(&self, outcome: Finished) {
        if let Ok(mut f) = self.finished.lock() {
            *f.entry(outcome.as_str()).or_insert(0) += 1;
        }
    }

    pub fn stage(&self, stage: Stage, seconds: f64) {
        if let Ok(mut s) = self.stages.lock() {
            let h = s.entry(stage.as_str()).or_default();
            for (i, b) in BUCKETS.iter().enumerate() {
                if seconds <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += seconds;
            h.count += 1;
        }
    }

    pub fn accelerator(&self, seconds: f64) {
        self.accel_busy_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        o.push_str("# HELP vidflow_queue_ready_messages Messages ready in a queue (not yet delivered).\n# TYPE vidflow_queue_ready_messages gauge\n");
        for (q, n) in self
            .queue_ready
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
        {
            let _ = writeln!(o, "vidflow_queue_ready_messages{{queue=\"{q}\"}} {n}");
        }
        o.push_str("# HELP vidflow_jobs_in_flight Jobs this process holds (taken, not yet acked).\n# TYPE vidflow_jobs_in_flight gauge\n");
        let _ = writeln!(
            o,
            "vidflow_jobs_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        o.push_str("# HELP vidflow_jobs_total Jobs finished, by status.\n# TYPE vidflow_jobs_total counter\n");
        for (s, n) in self.finished.lock().map(|g| g.clone()).unwrap_or_default() {
            let _ = writeln!(o, "vidflow_jobs_total{{status=\"{s}\"}} {n}");
        }
        o.push_str("# HELP vidflow_stage_seconds Time per pipeline stage per job.\n# TYPE vidflow_stage_seconds histogram\n");
        if let Ok(stages) = self.stages.lock() {
            for (st, h) in stages.iter() {
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        o,
                        "vidflow_stage_seconds_bucket{{stage=\"{st}\",le=\"{b}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    o,
                    "vidflow_stage_seconds_bucket{{stage=\"{st}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(o, "vidflow_stage_seconds_sum{{stage=\"{st}\"}} {}", h.sum);
                let _ = writeln!(
                    o,
                    "vidflow_stage_seconds_count{{stage=\"{st}\"}} {}",
                    h.count
                );
            }
        }
        let busy = self.accel_busy_us.load(Ordering::Relaxed) as f64 / 1e6;
        let up = self.started.elapsed().as_secs_f64().max(1e-9);
        o.push_str("# HELP vidflow_accelerator_busy_seconds_total Accelerator-seconds spent on jobs (encode, decode, shares of batched steps).\n# TYPE vidflow_accelerator_busy_seconds_total counter\n");
        let _ = writeln!(o, "vidflow_accelerator_busy_seconds_total {busy}");
        o.push_str("# HELP vidflow_accelerator_utilization Busy fraction since start (use rate() of the counter for windows).\n# TYPE vidflow_accelerator_utilization gauge\n");
        let _ = writeln!(
            o,
            "vidflow_accelerator_utilization {}",
            (busy / up).min(1.0)
        );
        o
    }
}

/// Serves `GET /metrics` until `stop` is set.
pub async fn serve_metrics(listener: TcpListener, m: Arc<Metrics>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        let Ok(Ok((mut sock, _))) = accepted else {
            continue;
        };
        let m = m.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let req = String::from_utf8_lossy(&buf[..n]);
            let ok = req.starts_with("GET /metrics ") || req.starts_with("GET /metrics?");
            let (status, body) = if ok {
                ("200 OK", m.render())
            } else {
                (
                    "404 Not Found",
                    "only GET /metrics is served here\n".to_string(),
                )
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.set_queue("vidflow.jobs", 3);
        m.finished(Finished::Job(JobStatus::Completed));
        m.finished(Finished::Job(JobStatus::Completed));
        m.stage(Stage::Denoise, 0.3);
        m.accelerator(1.5);
        let t = m.render();
        assert!(
            t.contains("vidflow_queue_ready_messages{queue=\"vidflow.jobs\"} 3"),
            "{t}"
        );
        assert!(
            t.contains("vidflow_jobs_total{status=\"completed\"} 2"),
            "{t}"
        );
        assert!(
            t.contains("vidflow_stage_seconds_bucket{stage=\"denoise\",le=\"0.5\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("vidflow_stage_seconds_bucket{stage=\"denoise\",le=\"0.25\"} 0"),
            "{t}"
        );
        assert!(
            t.contains("vidflow_accelerator_busy_seconds_total 1.5"),
            "{t}"
        );
    }
}

/// Peak resident memory (VmHWM) of process `pid` (`"self"`: this one),
/// 0 where unknown (not Linux, process gone). Job records carry it; the
/// security tests read a serve process's with it.
pub fn peak_rss_bytes(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}
