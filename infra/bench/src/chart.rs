//! The soak's picture: the server's RSS (left axis) and its open descriptors
//! and connected clients (right axis) over time, as an SVG that BENCHMARKS.md
//! embeds. A leak is a line that keeps climbing after the warm-up mark.

use std::path::Path;

use plotters::prelude::*;

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
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(labels)
        .draw()?;
    root.present()?;
    Ok(())
}
