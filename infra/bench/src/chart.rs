//! The pictures BENCHMARKS.md embeds, as SVG: the soak's RSS (left axis) and
//! open descriptors and connected clients (right axis) over time — a leak is a
//! line that keeps climbing after the warm-up mark; the latency CDF of the local
//! stack against the reference; and the deployment's envelope.

use std::path::Path;

use plotters::prelude::*;

use crate::envelope::{ACCOUNT_BUDGET_PER_S, Envelope};
use crate::report::Comparison;
use crate::soak::SoakReport;

const SIZE: (u32, u32) = (960, 480);

/// Draws `report`'s samples into an SVG file at `path`.
pub fn soak_svg(report: &SoakReport, path: &Path) -> anyhow::Result<()> {
    let minutes = |t_s: f64| t_s / 60.0;
    let x_end = minutes(report.duration_s).max(1.0 / 60.0);
    let rss_top = (report.rss_mib.max * 1.2).max(1.0);
    let count_top = report.samples.iter().map(|s| s.fds.max(s.clients_connected) as f64).fold(1.0, f64::max) * 1.2;
    let config = &report.config;

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Soak: {} clients churning in {} rooms for {:.0} min — chat-local",
                config.clients,
                config.rooms,
                minutes(config.duration.as_secs_f64())
            ),
            ("sans-serif", 24),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .right_y_label_area_size(64)
        .build_cartesian_2d(0.0..x_end, 0.0..rss_top)?
        .set_secondary_coord(0.0..x_end, 0.0..count_top);
    let (labels, descriptions) = (("sans-serif", 15), ("sans-serif", 17));
    chart
        .configure_mesh()
        .x_desc("minutes")
        .y_desc("RSS (MiB)")
        .label_style(labels)
        .axis_desc_style(descriptions)
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("open fds / connected clients")
        .label_style(labels)
        .axis_desc_style(descriptions)
        .draw()?;

    let warmup = minutes(config.warmup.as_secs_f64());
    let grey = BLACK.mix(0.35);
    chart
        .draw_series(DashedLineSeries::new([(warmup, 0.0), (warmup, rss_top)], 4, 4, grey.stroke_width(1)))?
        .label("end of warm-up (slopes start here)")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], grey));
    let rss = report.samples.iter().map(|s| (minutes(s.t_s), s.rss_mib));
    chart
        .draw_series(LineSeries::new(rss, BLUE.stroke_width(2)))?
        .label("RSS MiB (left)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    let fds = report.samples.iter().map(|s| (minutes(s.t_s), s.fds as f64));
    chart
        .draw_secondary_series(LineSeries::new(fds, RED.stroke_width(2)))?
        .label("open fds (right)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
    let connected = report.samples.iter().map(|s| (minutes(s.t_s), s.clients_connected as f64));
    let green = RGBColor(0, 140, 60);
    chart
        .draw_secondary_series(LineSeries::new(connected, green.stroke_width(1)))?
        .label("clients connected (right)")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], green));
    draw_legend(chart.configure_series_labels(), SeriesLabelPosition::LowerRight, labels)?;
    root.present()?;
    Ok(())
}

/// The latency distribution of both servers under the same load: the share of
/// deliveries (y) that took at most x ms, from `loadgen compare`'s CDF points.
pub fn latency_cdf_svg(comparison: &Comparison, path: &Path) -> anyhow::Result<()> {
    let runs = [(&comparison.stack, BLUE, "local stack"), (&comparison.reference, RED, "reference (in memory)")];
    let x_end =
        runs.iter().flat_map(|(run, _, _)| run.latency_cdf.iter().map(|(_, ms)| *ms)).fold(1.0, f64::max) * 1.05;
    let config = &comparison.stack.config;
    let load = config.rate.map_or("saturating".to_owned(), |r| format!("{r} msg/s"));
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Send → deliver latency: {} clients, {} senders, {load}", config.clients, config.senders),
            ("sans-serif", 24),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_end, 0.0..1.0)?;
    let (labels, descriptions) = (("sans-serif", 15), ("sans-serif", 17));
    chart
        .configure_mesh()
        .x_desc("latency (ms)")
        .y_desc("share of deliveries")
        .label_style(labels)
        .axis_desc_style(descriptions)
        .draw()?;
    for (run, color, name) in runs {
        let points = run.latency_cdf.iter().map(|&(quantile, ms)| (ms, quantile));
        let label = format!("{name}: p50 {:.0} ms, p99 {:.0} ms", run.latency_ms.p50, run.latency_ms.p99);
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    draw_legend(chart.configure_series_labels(), SeriesLabelPosition::LowerRight, labels)?;
    root.present()?;
    Ok(())
}

/// The envelope: @connections (+ inbound) calls per second against room size,
/// one line per rate and delivery, and the account's 10 000/s budget.
pub fn envelope_svg(envelope: &Envelope, path: &Path) -> anyhow::Result<()> {
    let rooms: Vec<f64> = envelope.cells.iter().map(|c| c.room as f64).collect();
    let x_range = rooms.iter().copied().fold(f64::MAX, f64::min)..rooms.iter().copied().fold(1.0, f64::max);
    let y_top = envelope.cells.iter().map(|c| c.calls_per_s).fold(ACCOUNT_BUDGET_PER_S, f64::max) * 2.0;
    let y_bottom = envelope.cells.iter().map(|c| c.calls_per_s).fold(f64::MAX, f64::min).max(0.1) / 2.0;
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Deployment envelope: @connections + inbound calls/s by room size", ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(72)
        .build_cartesian_2d(x_range.clone().log_scale(), (y_bottom..y_top).log_scale())?;
    let (labels, descriptions) = (("sans-serif", 15), ("sans-serif", 17));
    chart
        .configure_mesh()
        .x_desc("room size (connections)")
        .y_desc("calls per second")
        .label_style(labels)
        .axis_desc_style(descriptions)
        .draw()?;
    let grey = BLACK.mix(0.6);
    chart
        .draw_series(DashedLineSeries::new(
            [(x_range.start, ACCOUNT_BUDGET_PER_S), (x_range.end, ACCOUNT_BUDGET_PER_S)],
            6,
            4,
            grey.stroke_width(2),
        ))?
        .label("account budget: 10 000 calls/s")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], grey.stroke_width(2)));
    let rate_colors = [RED, BLUE, RGBColor(0, 140, 60), MAGENTA, CYAN];
    let mut rates: Vec<f64> = envelope.cells.iter().map(|c| c.rate).collect();
    rates.dedup();
    let mut windows: Vec<Option<u64>> = envelope.cells.iter().map(|c| c.window_ms).collect();
    windows.sort();
    windows.dedup();
    for (r, &rate) in rates.iter().enumerate() {
        let color = rate_colors[r % rate_colors.len()];
        for (w, &window) in windows.iter().enumerate() {
            let points: Vec<(f64, f64)> = envelope
                .cells
                .iter()
                .filter(|c| c.rate == rate && c.window_ms == window)
                .map(|c| (c.room as f64, c.calls_per_s))
                .collect();
            let name = window.map_or("one frame per event".to_owned(), |w| format!("coalesced, {w} ms"));
            // Thickest: one frame per event; thinner with each longer window.
            let style = color.mix(1.0 - 0.18 * w as f64).stroke_width((4 - w.min(3)) as u32);
            chart
                .draw_series(LineSeries::new(points, style))?
                .label(format!("{rate} msg/s, {name}"))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        }
    }
    draw_legend(chart.configure_series_labels(), SeriesLabelPosition::UpperLeft, ("sans-serif", 13))?;
    root.present()?;
    Ok(())
}

/// Every chart's legend: a box of translucent white with a light border.
fn draw_legend<'a, 'b, CT: CoordTranslate>(
    mut legend: plotters::chart::SeriesLabelStyle<'a, 'b, SVGBackend<'a>, CT>,
    position: SeriesLabelPosition,
    font: (&'b str, u32),
) -> anyhow::Result<()> {
    legend.position(position).background_style(WHITE.mix(0.85)).border_style(BLACK.mix(0.3)).label_font(font).draw()?;
    Ok(())
}
