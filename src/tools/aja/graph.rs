//! The graph of an `aja` run, drawn with plotters as an SVG and a PNG beside
//! it: each frame's write and read time against its frame number, as AJA
//! System Test draws it, with the frame budgets an editor reads it against
//! (24, 30 and 60 fps, and the target rate, 600 MB/s unless told), the
//! frames that overlapped a machine stall marked, and the run's figures in
//! the title. It reads an [`AjaReport`] and nothing else.
//!
//! Text needs a TrueType font, read from the system (plotters' `ab_glyph`
//! renderer has no font of its own, and the font-kit one would make the
//! server's build need fontconfig): `MARKBASE_AJA_FONT`, else the first of
//! [`FONT_PATHS`] that exists.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, Context};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::{budget_at_mbps, AjaReport, Direction};

/// Sans-serif fonts where Debian (fonts-dejavu-core), Arch, Fedora and
/// macOS keep them.
pub const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// Pixels of both images.
const SIZE: (u32, u32) = (1280, 640);

/// Frame rates whose budget is drawn.
const FPS_LINES: &[f64] = &[24.0, 30.0, 60.0];

const WRITE: RGBColor = RGBColor(31, 119, 180);
const READ: RGBColor = RGBColor(44, 160, 44);
const STALL: RGBColor = RGBColor(214, 39, 40);
const FPS: RGBColor = RGBColor(120, 120, 120);
const TARGET: RGBColor = RGBColor(255, 127, 14);

/// Draws `r` into `svg` and into the PNG of the same name.
/// `target_mbps` is the rate whose frame budget is drawn (600 if None).
/// Returns the PNG's path.
pub fn write(r: &AjaReport, target_mbps: Option<f64>, svg: &Path) -> anyhow::Result<PathBuf> {
    font()?;
    let png = svg.with_extension("png");
    let plot = Plot::of(r, target_mbps.unwrap_or(600.0));
    plot.draw(SVGBackend::new(svg, SIZE).into_drawing_area())
        .map_err(|e| anyhow!("drawing {}: {e}", svg.display()))?;
    let area = BitMapBackend::new(&png, SIZE).into_drawing_area();
    plot.draw(area)
        .map_err(|e| anyhow!("drawing {}: {e}", png.display()))?;
    Ok(png)
}

/// Registers the font for "sans-serif", once per process.
fn font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let path = std::env::var_os("MARKBASE_AJA_FONT")
                .map(PathBuf::from)
                .or_else(|| {
                    FONT_PATHS
                        .iter()
                        .map(PathBuf::from)
                        .find(|p| p.exists())
                })
                .ok_or_else(|| {
                    format!(
                        "no font for the graph's text: set MARKBASE_AJA_FONT to a .ttf file or install one of {FONT_PATHS:?} (Debian: fonts-dejavu-core)"
                    )
                })?;
            let bytes = std::fs::read(&path)
                .with_context(|| format!("reading the font {}", path.display()))
                .map_err(|e| format!("{e:#}"))?;
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{} is not a TrueType font", path.display()))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// What is drawn, worked out once for both images.
struct Plot<'a> {
    title: String,
    write: &'a Direction,
    read: &'a Direction,
    frames: usize,
    /// Top of the frame-time axis, in ms: every budget line fits under it.
    top_ms: f64,
    /// (label, ms, colour) of each budget line.
    budgets: Vec<(String, f64, RGBColor)>,
    stalls: bool,
}

impl<'a> Plot<'a> {
    fn of(r: &'a AjaReport, target_mbps: f64) -> Plot<'a> {
        let target = budget_at_mbps(r.frame_bytes, target_mbps).as_secs_f64() * 1e3;
        let mut budgets: Vec<(String, f64, RGBColor)> = FPS_LINES
            .iter()
            .map(|fps| (format!("{fps:.0} fps"), 1e3 / fps, FPS))
            .collect();
        budgets.push((format!("{target_mbps:.0} MB/s"), target, TARGET));
        let highest_line = budgets.iter().map(|b| b.1).fold(0.0, f64::max);
        let p99 = r.write.percentile_ms(0.99).max(r.read.percentile_ms(0.99));
        let top_ms = (highest_line * 1.15).max(p99 * 1.25);
        let side = |name: &str, d: &Direction| {
            format!(
                "{name} {:.0} MB/s, p99 {:.1} ms, max {:.1} ms",
                d.mbps(),
                d.percentile_ms(0.99),
                d.max_ms()
            )
        };
        let title = format!(
            "{} frames of {:.2} MB: {}; {}",
            r.write.frames,
            r.frame_bytes as f64 / 1e6,
            side("write", &r.write),
            side("read", &r.read)
        );
        Plot {
            title,
            write: &r.write,
            read: &r.read,
            frames: r.write.times_us.len().max(r.read.times_us.len()).max(1),
            top_ms,
            budgets,
            stalls: r.stalls.is_some(),
        }
    }

    /// A frame's time in ms, held under the top so a spike shows at the
    /// edge instead of leaving the plot.
    fn ms(&self, us: u64) -> f64 {
        (us as f64 / 1e3).min(self.top_ms)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..self.frames as f64, 0.0..self.top_ms)?;
        chart
            .configure_mesh()
            .x_desc("frame")
            .x_label_formatter(&|frame| format!("{frame:.0}"))
            .y_label_formatter(&|ms| format!("{ms:.0}"))
            .y_desc("frame time (ms)")
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (label, ms, colour) in &self.budgets {
            let end = self.frames as f64;
            chart.draw_series(DashedLineSeries::new(
                [(0.0, *ms), (end, *ms)],
                8,
                6,
                colour.stroke_width(1),
            ))?;
            chart.draw_series(std::iter::once(Text::new(
                format!("{label} ({ms:.1} ms)"),
                // Just above its line.
                (end * 0.005, *ms + self.top_ms * 0.035),
                ("sans-serif", 13).into_font().color(colour),
            )))?;
        }
        for (name, d, colour) in [("write", self.write, WRITE), ("read", self.read, READ)] {
            let line = d
                .times_us
                .iter()
                .enumerate()
                .map(|(i, t)| (i as f64, self.ms(*t)));
            chart
                .draw_series(LineSeries::new(line, colour.stroke_width(1)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 24, y)], colour.stroke_width(3))
                });
        }
        if self.stalls {
            let stalled = [self.write, self.read].into_iter().flat_map(|d| {
                d.times_us
                    .iter()
                    .zip(&d.stalled_us)
                    .enumerate()
                    .filter(|(_, (_, st))| **st > 0)
                    .map(|(i, (t, _))| (i as f64, self.ms(*t)))
            });
            let marks: Vec<_> = stalled
                .map(|p| Cross::new(p, 5, STALL.stroke_width(2)))
                .collect();
            let label = format!("frames that overlapped a machine stall: {}", marks.len());
            chart
                .draw_series(marks)?
                .label(label)
                .legend(|(x, y)| Cross::new((x + 12, y), 5, STALL.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::stalls::{MachineStalls, Stall};
    use std::time::Duration;

    /// 300 frames of 5.89 MB: writes at ~8 ms with a 70 ms spike at frame
    /// 100 that a machine stall overlapped, reads at ~4 ms.
    fn report() -> AjaReport {
        let frames = 300;
        let direction = |base_us: u64, spike: Option<usize>| {
            let times_us: Vec<u64> = (0..frames)
                .map(|i| match spike {
                    Some(s) if s == i => 70_000,
                    _ => base_us + (i as u64 * 37) % 900,
                })
                .collect();
            let starts_us = times_us
                .iter()
                .scan(0, |at, t| {
                    let s = *at;
                    *at += t;
                    Some(s)
                })
                .collect();
            let stalled_us = (0..frames)
                .map(|i| if spike == Some(i) { 20_000 } else { 0 })
                .collect();
            Direction {
                frames: frames as u64,
                bytes: frames as u64 * 5_890_000,
                elapsed: Duration::from_micros(times_us.iter().sum()),
                times_us,
                starts_us,
                stalled_us,
                flush: Duration::ZERO,
            }
        };
        AjaReport {
            frame_bytes: 5_890_000,
            client: "test",
            write: direction(8_000, Some(100)),
            read: direction(4_000, None),
            baselines: Vec::new(),
            stalls: Some(MachineStalls {
                list: vec![Stall {
                    at: Duration::from_millis(800),
                    len: Duration::from_millis(20),
                }],
                realtime: true,
            }),
            file_sync_writes: 0,
        }
    }

    /// Every element opened is closed, in order (`<?xml …?>` and
    /// self-closed elements aside): the SVG is well-formed as far as its
    /// nesting goes.
    fn assert_nested(svg: &str) {
        let mut open = Vec::new();
        let mut rest = svg;
        while let Some(at) = rest.find('<') {
            let end = rest[at..].find('>').expect("an unclosed tag") + at;
            let tag = &rest[at + 1..end];
            rest = &rest[end + 1..];
            if tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/') {
                continue;
            }
            let name = |t: &str| t.split_whitespace().next().unwrap_or("").to_string();
            match tag.strip_prefix('/') {
                Some(closing) => assert_eq!(open.pop(), Some(name(closing)), "in {svg}"),
                None => open.push(name(tag)),
            }
        }
        assert!(open.is_empty(), "left open: {open:?}");
    }

    #[test]
    fn the_graph_has_axes_legend_budget_lines_and_stall_marks_in_svg_and_png() {
        // tests/run.sh installs fonts-dejavu-core; on a machine without a
        // font the message says what to install.
        font().unwrap_or_else(|e| panic!("{e:#}"));
        let dir = tempfile::tempdir().unwrap();
        let svg_path = dir.path().join("frames.svg");
        let r = report();
        let png_path = write(&r, None, &svg_path).unwrap();
        assert_eq!(png_path, dir.path().join("frames.png"));

        let svg = std::fs::read_to_string(&svg_path).unwrap();
        assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{svg}");
        assert_nested(&svg);
        // plotters writes a text's content on a line of its own.
        let flat = svg.replace('\n', "");
        let figures = format!(
            "write {:.0} MB/s, p99 {:.1} ms, max 70.0 ms; read {:.0} MB/s",
            r.write.mbps(),
            r.write.percentile_ms(0.99),
            r.read.mbps()
        );
        for text in [
            "frame time (ms)",
            ">frame<",
            "300 frames of 5.89 MB",
            &figures,
            "24 fps (41.7 ms)",
            "30 fps (33.3 ms)",
            "60 fps (16.7 ms)",
            "600 MB/s (9.8 ms)",
            "frames that overlapped a machine stall: 1",
            ">250<",
            ">40<",
        ] {
            assert!(flat.contains(text), "{text:?} missing from the SVG:\n{svg}");
        }

        let png = image::open(&png_path).unwrap().to_rgb8();
        assert_eq!(png.dimensions(), SIZE);
        let has = |c: RGBColor| png.pixels().any(|p| p.0 == [c.0, c.1, c.2]);
        for (name, colour) in [
            ("write", WRITE),
            ("read", READ),
            ("stall", STALL),
            ("24/30/60 fps", FPS),
            ("600 MB/s", TARGET),
        ] {
            assert!(has(colour), "no {name} pixels in the PNG");
        }
        // Anti-aliased text leaves grey pixels: the labels were drawn.
        let grey = png
            .pixels()
            .filter(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2] && (40..200).contains(&p.0[0]))
            .count();
        assert!(grey > 500, "only {grey} grey pixels: no text?");
    }

    #[test]
    fn without_stalls_there_is_no_stall_legend() {
        let mut r = report();
        r.stalls = None;
        let dir = tempfile::tempdir().unwrap();
        let svg_path = dir.path().join("quiet.svg");
        write(&r, Some(800.0), &svg_path).unwrap();
        let svg = std::fs::read_to_string(&svg_path).unwrap();
        assert!(!svg.contains("machine stall"), "{svg}");
        assert!(svg.contains("800 MB/s (7.4 ms)"), "{svg}");
    }
}
