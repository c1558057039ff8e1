//! `vidflow fleet simulate` as a user runs it: a config file in, a JSON
//! summary (which repeats the config it ran) and two SVG charts out.

use std::process::Command;

#[test]
fn fleet_simulate_writes_a_rerunnable_summary_and_two_charts() {
    let dir = tempfile::tempdir().unwrap();
    // The shipped config at a tenth of the peak and fleet, for a few minutes.
    let cfg = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/fleet.toml"))
        .unwrap()
        .replace("peak_jobs_per_s = 350.0", "peak_jobs_per_s = 35.0")
        .replace("gpus = 19000", "gpus = 1900")
        .replace("hours = 1.0", "hours = 0.05")
        .replace("warmup_s = 900.0", "warmup_s = 120.0")
        .replace("hours = 0.25", "hours = 0.05");
    let cfg_path = dir.path().join("fleet.toml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let out = dir.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_vidflow"))
        .args(["fleet", "simulate", "--config"])
        .arg(&cfg_path)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["config"]["workload"]["peak_jobs_per_s"], 35.0);
    assert_eq!(s["config"]["fleet"]["gpus"], 1900);
    assert_eq!(s["at_configured"].as_array().unwrap().len(), 4, "{s}");
    assert_eq!(s["needed"].as_array().unwrap().len(), 4, "{s}");
    assert!(s["ours_over_strict"].as_f64().unwrap() > 0.0);
    let sweep = s["config"]["sweep"]["loads"].as_array().unwrap().len();
    assert_eq!(s["sweep"].as_array().unwrap().len(), 4 * sweep);
    for chart in ["p95_wait_vs_load.svg", "gpus_needed.svg"] {
        let svg = std::fs::read_to_string(out.join(chart)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{chart}");
    }
    // The same config runs again to the same results (only wall times
    // differ).
    let o = Command::new(env!("CARGO_BIN_EXE_vidflow"))
        .args(["fleet", "simulate", "--no-search", "--no-sweep", "--config"])
        .arg(&cfg_path)
        .arg("--out")
        .arg(dir.path().join("out2"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out2/summary.json")).unwrap())
            .unwrap();
    let without_wall = |v: &serde_json::Value| {
        let mut v = v.clone();
        for r in v.as_array_mut().unwrap() {
            r.as_object_mut().unwrap().remove("wall_s");
        }
        v
    };
    assert_eq!(
        without_wall(&s2["at_configured"]),
        without_wall(&s["at_configured"])
    );
}
