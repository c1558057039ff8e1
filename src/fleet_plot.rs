//! The two charts of a fleet simulation, as SVG.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use vidflow_sched::sim::report::Report;
use vidflow_sched::Tier;

const COLOURS: [RGBColor; 5] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
];

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing chart: {e:?}")
}

/// The series legend both charts draw, boxed on white.
fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    at: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

/// p95 queue wait against load, one panel per tier, one line per policy,
/// the tier's target as a dashed line.
pub fn p95_vs_load(rep: &Report, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (1500, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((1, 3));
    let loads: Vec<f64> = rep.config.sweep.loads.clone();
    let (x0, x1) = (
        loads.iter().cloned().fold(f64::INFINITY, f64::min),
        loads.iter().cloned().fold(0.0, f64::max),
    );
    for (panel, tier) in panels
        .iter()
        .zip([Tier::Premium, Tier::Standard, Tier::Free])
    {
        let target = rep.config.scheduler.targets.of(tier);
        let ymax = rep
            .sweep
            .iter()
            .map(|r| r.tier(tier).p95_s)
            .fold(target * 1.5, f64::max)
            .max(1.0);
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!(
                    "{} p95 queue wait, {} GPUs",
                    tier.as_str(),
                    rep.config.fleet.gpus
                ),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, (0.1f64..ymax * 2.0).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("arrival rate / spec peak (350 jobs/s)")
            .y_desc("seconds (log)")
            .draw()
            .map_err(err)?;
        for (i, p) in rep.config.policies.iter().enumerate() {
            let c = COLOURS[i % COLOURS.len()];
            let pts: Vec<(f64, f64)> = rep
                .sweep
                .iter()
                .filter(|r| r.policy == p.name)
                .map(|r| (r.load, r.tier(tier).p95_s.max(0.1)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(err)?
                .label(p.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c));
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))
                .map_err(err)?;
        }
        chart
            .draw_series(DashedLineSeries::new(
                vec![(x0, target), (x1, target)],
                6,
                4,
                BLACK.stroke_width(1),
            ))
            .map_err(err)?
            .label(format!("target {target:.0} s"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK));
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// GPUs each policy needs to meet every tier's p95 at the peak, next to
/// the configured (spec) fleet.
pub fn gpus_needed(rep: &Report, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (760, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let n = rep.needed.len();
    let spec = rep.config.fleet.gpus as f64;
    let ymax = rep
        .needed
        .iter()
        .map(|x| x.gpus as f64)
        .fold(spec, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "GPUs needed to meet every tier's p95 target at the peak",
            ("sans-serif", 18),
        )
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..n as f64, 0f64..ymax)
        .map_err(err)?;
    let names: Vec<String> = rep.needed.iter().map(|x| x.policy.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.26 && i < names.len() {
                names[i].clone()
            } else {
                String::new()
            }
        })
        .y_desc("GPUs")
        .draw()
        .map_err(err)?;
    for (i, need) in rep.needed.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(i as f64 + 0.2, 0.0), (i as f64 + 0.8, need.gpus as f64)],
                c.filled(),
            )))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{}", need.gpus),
                (i as f64 + 0.35, need.gpus as f64 + ymax * 0.02),
                ("sans-serif", 15),
            )))
            .map_err(err)?;
    }
    chart
        .draw_series(DashedLineSeries::new(
            vec![(0.0, spec), (n as f64, spec)],
            8,
            5,
            BLACK.stroke_width(2),
        ))
        .map_err(err)?
        .label(format!("spec fleet: {spec:.0} GPUs"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK));
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(err)?;
    Ok(())
}
