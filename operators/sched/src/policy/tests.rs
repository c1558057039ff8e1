use super::*;

fn info(tier: Tier, submitted_s: f64, predicted_s: f64) -> JobInfo {
    JobInfo {
        tier,
        class: 0,
        submitted_s,
        units: 1,
        predicted_s,
        batch: None,
    }
}

fn sched(policy: Policy, slots: u32) -> Scheduler {
    Scheduler::new(
        SchedConfig {
            policy,
            ..SchedConfig::default()
        },
        &[PoolSpec {
            name: "p".into(),
            capacity: slots,
        }],
        vec![0],
    )
}

fn started(d: &[Decision]) -> Vec<JobId> {
    d.iter()
        .filter_map(|d| match d {
            Decision::Start { job, .. } => Some(*job),
            _ => None,
        })
        .collect()
}

fn preempted(d: &[Decision]) -> Vec<JobId> {
    d.iter()
        .filter_map(|d| match d {
            Decision::Preempt { job, .. } => Some(*job),
            _ => None,
        })
        .collect()
}

/// Runs one job on the only slot, queues the rest, then frees the slot
/// one job at a time and returns the start order.
fn order_after_busy(policy: Policy, jobs: &[(JobId, Tier, f64)], now: f64) -> Vec<JobId> {
    let mut s = sched(policy, 1);
    s.submit(99, info(Tier::Premium, 0.0, 1e6), 0.0).unwrap();
    assert_eq!(started(&s.decide(0.0)), vec![99]);
    for &(id, tier, at) in jobs {
        s.submit(id, info(tier, at, 10.0), at).unwrap();
    }
    let mut order = Vec::new();
    let mut running = 99;
    for _ in 0..jobs.len() {
        s.finished(running, now).unwrap();
        let st = started(&s.decide(now));
        assert_eq!(st.len(), 1);
        running = st[0];
        order.push(running);
    }
    order
}

#[test]
fn slack_runs_the_earliest_deadline_first_across_tiers() {
    // Deadlines: free 0+900, standard 50+300, premium 100+30.
    let jobs = [
        (1, Tier::Free, 0.0),
        (2, Tier::Standard, 50.0),
        (3, Tier::Premium, 100.0),
    ];
    assert_eq!(order_after_busy(Policy::Slack, &jobs, 120.0), vec![3, 2, 1]);
    // A free job that has waited almost its whole target goes ahead of a
    // premium job that just came (deadline 900 < 880 + 30): aging.
    let jobs = [(1, Tier::Free, 0.0), (2, Tier::Premium, 880.0)];
    assert_eq!(order_after_busy(Policy::Slack, &jobs, 881.0), vec![1, 2]);
    // Strict priority never lets it: tier first.
    assert_eq!(
        order_after_busy(Policy::StrictPriority, &jobs, 881.0),
        vec![2, 1]
    );
    // FIFO ignores tiers.
    let jobs = [(1, Tier::Free, 0.0), (2, Tier::Premium, 100.0)];
    assert_eq!(order_after_busy(Policy::Fifo, &jobs, 120.0), vec![1, 2]);
}

#[test]
fn a_premium_arrival_preempts_the_lower_tier_job_with_most_slack() {
    let mut s = sched(Policy::Slack, 3);
    // Three free jobs (target 900 s) that waited 10, 500 and 200 s, and
    // one standard job is not running: the victim is the one that waited
    // least (slack 890 s).
    for (id, sub) in [(1, 90.0), (2, -400.0), (3, -100.0)] {
        s.submit(id, info(Tier::Free, sub, 1000.0), 100.0).unwrap();
    }
    assert_eq!(started(&s.decide(100.0)).len(), 3);
    s.submit(7, info(Tier::Premium, 101.0, 5.0), 101.0).unwrap();
    let d = s.decide(101.0);
    assert_eq!(preempted(&d), vec![1]);
    assert!(started(&d).is_empty());
    assert_eq!(s.preemptions(), 1);
    // Nothing more is preempted while the victim is on its way out.
    s.touch();
    assert!(s.decide(101.5).is_empty());
    // At the step boundary the victim hands its slot back: the premium job
    // takes it, and the victim waits with what is left of its work.
    s.yielded(1, 102.0, 900.0).unwrap();
    assert_eq!(started(&s.decide(102.0)), vec![7]);
    s.finished(7, 107.0).unwrap();
    let d = s.decide(107.0);
    assert_eq!(d.len(), 1);
    let Decision::Start { job, waited_s, .. } = d[0] else {
        panic!("{d:?}")
    };
    assert_eq!(job, 1);
    // Waited 10 s before its first run and 5 s while preempted.
    assert!((waited_s - 15.0).abs() < 1e-9, "{waited_s}");
}

#[test]
fn the_victim_may_be_of_any_lower_tier_and_never_of_the_same_or_higher() {
    let mut s = sched(Policy::Slack, 2);
    s.submit(1, info(Tier::Standard, 0.0, 1000.0), 0.0).unwrap();
    s.submit(2, info(Tier::Free, 0.0, 1000.0), 0.0).unwrap();
    assert_eq!(started(&s.decide(0.0)).len(), 2);
    // Premium: free has 900 s of slack, standard 300 s → free yields.
    s.submit(3, info(Tier::Premium, 1.0, 5.0), 1.0).unwrap();
    assert_eq!(preempted(&s.decide(1.0)), vec![2]);

    // Only premium jobs running: a premium arrival preempts nobody.
    let mut s = sched(Policy::Slack, 1);
    s.submit(1, info(Tier::Premium, 0.0, 1000.0), 0.0).unwrap();
    s.decide(0.0);
    s.submit(2, info(Tier::Premium, 1.0, 5.0), 1.0).unwrap();
    assert!(s.decide(1.0).is_empty());
}

#[test]
fn a_corrected_prediction_moves_the_predicted_end() {
    let mut s = sched(Policy::Slack, 1);
    // Predicted to end within preempt_wait_s: no preemption.
    s.submit(1, info(Tier::Free, 0.0, 2.0), 0.0).unwrap();
    s.decide(0.0);
    s.submit(2, info(Tier::Premium, 1.0, 5.0), 1.0).unwrap();
    assert!(s.decide(1.0).is_empty());
    // Measured steps say it has 500 s left: now the premium job preempts.
    s.progress(1, 1.5, 500.0).unwrap();
    s.touch();
    assert_eq!(preempted(&s.decide(1.5)), vec![1]);
}

#[test]
fn no_preemption_when_a_slot_frees_soon_or_under_the_baselines() {
    let mut s = sched(Policy::Slack, 1);
    s.submit(1, info(Tier::Free, 0.0, 3.0), 0.0).unwrap();
    s.decide(0.0);
    // The free job is predicted to end at 3 s, within preempt_wait_s (5 s).
    s.submit(2, info(Tier::Premium, 1.0, 5.0), 1.0).unwrap();
    assert!(s.decide(1.0).is_empty());
    for policy in [Policy::Fifo, Policy::StrictPriority] {
        let mut s = sched(policy, 1);
        s.submit(1, info(Tier::Free, 0.0, 1000.0), 0.0).unwrap();
        s.decide(0.0);
        s.submit(2, info(Tier::Premium, 1.0, 5.0), 1.0).unwrap();
        assert!(s.decide(1.0).is_empty(), "{policy:?}");
    }
}

#[test]
fn a_standard_job_near_its_target_may_preempt_a_free_one() {
    let mut s = sched(Policy::Slack, 1);
    s.submit(1, info(Tier::Free, 0.0, 1000.0), 0.0).unwrap();
    s.submit(2, info(Tier::Standard, 0.0, 10.0), 0.0).unwrap();
    // Equal submission: standard's deadline (300) is first, it starts.
    assert_eq!(started(&s.decide(0.0)), vec![2]);
    s.finished(2, 1.0).unwrap();
    assert_eq!(started(&s.decide(1.0)), vec![1]);
    s.submit(3, info(Tier::Standard, 2.0, 10.0), 2.0).unwrap();
    // 300 s of slack: more than preempt_below_s, it waits.
    assert!(s.decide(2.0).is_empty());
    // At 250 s its slack is 52 s; the free job's is 899 s.
    s.touch();
    assert_eq!(preempted(&s.decide(250.0)), vec![1]);
}

#[test]
fn baselines_dispatch_in_order_and_slack_backfills() {
    let pools = [PoolSpec {
        name: "p".into(),
        capacity: 4,
    }];
    for (policy, expect) in [(Policy::StrictPriority, vec![]), (Policy::Slack, vec![3])] {
        let mut s = Scheduler::new(
            SchedConfig {
                policy,
                ..SchedConfig::default()
            },
            &pools,
            vec![0],
        );
        let big = |tier, at| JobInfo {
            units: 4,
            ..info(tier, at, 100.0)
        };
        s.submit(
            1,
            JobInfo {
                units: 2,
                ..info(Tier::Free, 0.0, 100.0)
            },
            0.0,
        )
        .unwrap();
        assert_eq!(started(&s.decide(0.0)), vec![1]);
        s.submit(2, big(Tier::Standard, 1.0), 1.0).unwrap();
        s.submit(
            3,
            JobInfo {
                units: 2,
                ..info(Tier::Free, 2.0, 100.0)
            },
            2.0,
        )
        .unwrap();
        // Job 2 needs the whole pool: strict waits for it, slack lets job
        // 3 use the free half meanwhile.
        assert_eq!(started(&s.decide(2.0)), expect, "{policy:?}");
    }
}

#[test]
fn a_job_that_can_join_a_running_batch_goes_a_little_ahead() {
    let mut s = sched(Policy::Slack, 2);
    let b = |tier, at, batch| JobInfo {
        batch: Some(batch),
        ..info(tier, at, 100.0)
    };
    s.submit(1, b(Tier::Standard, 0.0, 7), 0.0).unwrap();
    assert_eq!(started(&s.decide(0.0)), vec![1]);
    s.submit(9, info(Tier::Standard, 0.0, 1e6), 0.0).unwrap();
    assert_eq!(started(&s.decide(0.0)), vec![9]);
    // Deadlines 301 (other shape) and 302 (same shape as job 1): the
    // 2 s credit puts job 3 first.
    s.submit(2, b(Tier::Standard, 1.0, 8), 1.0).unwrap();
    s.submit(3, b(Tier::Standard, 2.0, 7), 2.0).unwrap();
    s.finished(9, 3.0).unwrap();
    assert_eq!(started(&s.decide(3.0)), vec![3]);
    // Not past a much earlier deadline.
    s.submit(4, b(Tier::Premium, 4.0, 7), 4.0).unwrap();
    s.submit(5, b(Tier::Premium, 10.0, 7), 10.0).unwrap();
    s.submit(6, b(Tier::Premium, 5.0, 8), 5.0).unwrap();
    s.finished(3, 11.0).unwrap();
    assert_eq!(started(&s.decide(11.0)), vec![4]);
}

#[test]
fn equal_inputs_give_equal_decisions() {
    let run = || {
        let mut s = sched(Policy::Slack, 3);
        let mut log = Vec::new();
        let mut x: u64 = 42;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut running: Vec<JobId> = Vec::new();
        for i in 0..400u64 {
            let now = i as f64 * 0.5;
            let tier = [Tier::Premium, Tier::Standard, Tier::Free][(next() % 3) as usize];
            s.submit(i, info(tier, now, (next() % 20) as f64), now)
                .unwrap();
            if next() % 2 == 0 && !running.is_empty() {
                let k = (next() as usize) % running.len();
                s.finished(running.swap_remove(k), now).unwrap();
            }
            for d in s.decide(now) {
                match d {
                    Decision::Start { job, .. } => running.push(job),
                    Decision::Preempt { job, .. } => {
                        s.yielded(job, now, 1.0).unwrap();
                        running.retain(|&r| r != job);
                    }
                }
                log.push(format!("{d:?}"));
            }
        }
        log
    };
    let a = run();
    assert!(a.len() > 150, "{}", a.len());
    assert!(a.iter().any(|d| d.starts_with("Preempt")));
    assert_eq!(a, run());
}

#[test]
fn bad_calls_are_errors_not_panics() {
    let mut s = sched(Policy::Slack, 1);
    s.submit(1, info(Tier::Free, 0.0, 1.0), 0.0).unwrap();
    assert_eq!(
        s.submit(1, info(Tier::Free, 0.0, 1.0), 0.0),
        Err(SchedError::Duplicate(1))
    );
    assert_eq!(s.finished(5, 0.0), Err(SchedError::Unknown(5)));
    assert!(matches!(
        s.yielded(1, 0.0, 0.0),
        Err(SchedError::WrongState { .. })
    ));
    let too_big = JobInfo {
        units: 2,
        ..info(Tier::Free, 0.0, 1.0)
    };
    assert!(matches!(
        s.submit(2, too_big, 0.0),
        Err(SchedError::TooBig { .. })
    ));
    let unrouted = JobInfo {
        class: 3,
        ..info(Tier::Free, 0.0, 1.0)
    };
    assert!(matches!(
        s.submit(3, unrouted, 0.0),
        Err(SchedError::NoRoute { .. })
    ));
    // A waiting job can leave (cancelled before it ran).
    s.finished(1, 0.0).unwrap();
    assert!(s.decide(0.0).is_empty());
}
