use super::config::{Class, FleetConfig, ServiceDist, Workload};
use super::*;
use crate::policy::Policy;

/// One class, one pool, Poisson arrivals at a flat rate, exponential
/// service: an M/M/c queue.
fn mmc(c: u32, rho: f64, hours: f64) -> (FleetConfig, Vec<TraceJob>) {
    let mean_s = 1.0;
    let cfg = FleetConfig {
        workload: Workload {
            peak_jobs_per_s: rho * c as f64 / mean_s,
            trough_fraction: 1.0,
            hours,
            warmup_s: 200.0,
            classes: vec![Class {
                name: "x".into(),
                service_s: Some(mean_s),
                service_dist: ServiceDist::Exponential,
                ..Class::default()
            }],
            ..Workload::default()
        },
        ..FleetConfig::default()
    };
    let tr = trace::synthetic(&cfg, hours, 1.0);
    (cfg, tr)
}

#[test]
fn mean_wait_matches_erlang_c_at_50_80_and_95_percent_load() {
    let fifo = PolicyRun::new("fifo", Policy::Fifo, false, false);
    let c = 10;
    for (rho, hours) in [(0.5, 40.0), (0.8, 40.0), (0.95, 100.0)] {
        let (cfg, tr) = mmc(c, rho, hours);
        let r = simulate(&cfg, &fifo, c, &tr, 1.0).unwrap();
        // One tier holds every job here? No: tiers are drawn, FIFO ignores them.
        let n = (r.premium.jobs + r.standard.jobs + r.free.jobs) as f64;
        let mean = (r.premium.mean_s * r.premium.jobs as f64
            + r.standard.mean_s * r.standard.jobs as f64
            + r.free.mean_s * r.free.jobs as f64)
            / n;
        let theory = erlang::mean_wait(c, rho * c as f64, 1.0);
        let err = (mean - theory).abs() / theory;
        eprintln!(
            "rho {rho}: sim {mean:.4} s, Erlang C {theory:.4} s, error {:.2}% ({n} jobs, {:.2} s)",
            err * 100.0,
            r.wall_s
        );
        assert!(err < 0.05, "rho {rho}: sim {mean} vs theory {theory}");
        assert!((r.utilisation - rho).abs() < 0.02, "{}", r.utilisation);
    }
}

#[test]
fn no_free_job_waits_past_its_target_while_load_is_under_capacity() {
    // Two slots with a mix of tiers and lengths (5 s and 80 s jobs).
    for load in [0.7, 0.8] {
        let mut cfg = FleetConfig {
            workload: Workload {
                peak_jobs_per_s: load * 2.0 / 20.0,
                trough_fraction: 1.0,
                hours: 200.0,
                warmup_s: 0.0,
                classes: vec![
                    Class {
                        name: "short".into(),
                        share: 0.8,
                        service_s: Some(5.0),
                        ..Class::default()
                    },
                    Class {
                        name: "long".into(),
                        share: 0.2,
                        service_s: Some(80.0),
                        ..Class::default()
                    },
                ],
                ..Workload::default()
            },
            ..FleetConfig::default()
        };
        cfg.fleet.pools = vec![];
        let tr = trace::synthetic(&cfg, 200.0, 1.0);
        let ours = PolicyRun::new("slack", Policy::Slack, false, true);
        let r = simulate(&cfg, &ours, 2, &tr, 1.0).unwrap();
        let strict = PolicyRun::new("strict", Policy::StrictPriority, false, false);
        let s = simulate(&cfg, &strict, 2, &tr, 1.0).unwrap();
        eprintln!(
            "load {load}: free max wait {:.0} s (strict {:.0} s), premium p95 {:.1} s (strict {:.1} s), {} preemptions",
            r.free.max_s, s.free.max_s, r.premium.p95_s, s.premium.p95_s, r.preemptions
        );
        assert!(r.free.jobs > 10_000);
        assert!(r.free.max_s <= r.free.target_s, "{:?}", r.free);
        assert!(r.premium.p95_s <= r.premium.target_s, "{:?}", r.premium);
        // Strict priority on the same trace cannot preempt: premium jobs
        // wait behind 80 s jobs.
        assert!(
            s.premium.p95_s > r.premium.p95_s * 2.0,
            "{:?} vs {:?}",
            s.premium,
            r.premium
        );
    }
}

#[test]
fn the_same_config_gives_the_same_report() {
    let mut cfg = FleetConfig::default();
    cfg.workload.peak_jobs_per_s = 20.0;
    cfg.workload.hours = 0.1;
    cfg.workload.warmup_s = 60.0;
    cfg.fleet.gpus = 1200;
    let tr = trace::synthetic(&cfg, 0.1, 1.0);
    let ours = cfg.policies.last().unwrap().clone();
    let mut a = simulate(&cfg, &ours, 1200, &tr, 1.0).unwrap();
    let mut b = simulate(&cfg, &ours, 1200, &tr, 1.0).unwrap();
    a.wall_s = 0.0;
    b.wall_s = 0.0;
    assert_eq!(a, b);
    assert!(a.jobs > 5000);
}

#[test]
fn routed_pools_split_the_fleet_by_offered_work() {
    let cfg = FleetConfig::default();
    let ours = cfg.policies.last().unwrap().clone();
    let (pools, route) = pools_for(&cfg, &ours, 19_000).unwrap();
    assert_eq!(pools.iter().map(|p| p.capacity).sum::<u32>(), 19_000);
    assert_eq!(route, vec![0, 0, 1, 2]);
    assert!(pools[2].capacity >= 96);
    let (shared, route) = pools_for(&cfg, &cfg.policies[0], 19_000).unwrap();
    assert_eq!(shared.len(), 1);
    assert_eq!(route, vec![0; 4]);
}

#[test]
fn a_batched_pool_slows_each_job_by_its_batch_and_seats_the_next_when_one_ends() {
    // Two slots stepping together, 0.1 s per job per step: A (10 steps)
    // and B (30) share steps of 0.2 s, so A ends at 2.0 s; C, which found
    // both slots taken, starts then; B has 20 steps left and C 10, both at
    // 0.2 s a step: C ends at 4.0 s, B alone at 4.0 + 10 × 0.1 = 5.0 s.
    let mut cfg = FleetConfig::default();
    cfg.workload.warmup_s = 0.0;
    cfg.fleet.pools = vec![];
    cfg.fleet.batched_step = Some(config::BatchedStep {
        by_size_s: vec![0.1, 0.2],
    });
    let job = |t: f64, tier: Tier, steps: u32| TraceJob {
        t,
        submitted: t,
        tier,
        class: 0,
        service_s: 0.0,
        steps,
        units: 1,
        measured: true,
    };
    let tr = vec![
        job(0.0, Tier::Premium, 10),
        job(0.0, Tier::Standard, 30),
        job(0.001, Tier::Free, 10),
    ];
    let run = PolicyRun::new("slack", Policy::Slack, false, false);
    let r = simulate(&cfg, &run, 2, &tr, 1.0).unwrap();
    assert_eq!((r.premium.mean_s, r.standard.mean_s), (0.0, 0.0));
    assert!((r.free.mean_s - 1.999).abs() < 1e-3, "{}", r.free.mean_s);
    assert_eq!(r.unfinished, 0);
    // Busy slot-seconds: A 2 + B 5 + C 2, over the hour's two slots.
    assert!(
        (r.utilisation * 2.0 * 3600.0 - 9.0).abs() < 1e-2,
        "{}",
        r.utilisation
    );
    let with_preemption = PolicyRun::new("slack", Policy::Slack, false, true);
    assert!(simulate(&cfg, &with_preemption, 2, &tr, 1.0).is_err());
}
