//! Line plots for the report's figures (Fig. 5, Fig. 9, the training curves): a grid of
//! panels, each with a title, axis titles, tick labels and a legend, drawn by `plotters` on an
//! RGB bitmap with DejaVu Sans embedded (no system fonts needed, so a figure renders the same
//! everywhere) and saved as PNG. Figures are data: a [`Figure`] of [`Panel`]s of [`Series`].

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

const FONT: &str = "sans-serif";
static REGISTER: Once = Once::new();

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("drawing {path}: {message}")]
    Draw { path: String, message: String },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: image::ImageError,
    },
}

/// One line: points in data coordinates, optionally with a ± bar at each.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub label: String,
    pub colour: [u8; 3],
    pub points: Vec<(f64, f64)>,
    /// Half-heights of error bars, one per point.
    pub error_bars: Option<Vec<f64>>,
}

/// One panel of a figure.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    pub title: String,
    pub x_title: String,
    pub y_title: String,
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
    pub series: Vec<Series>,
    /// Ticks on the x axis at whole numbers only (epochs, counts): no `1.5` epoch.
    pub x_integer: bool,
}

/// A grid of panels with one legend (the series labels of the first panel) below.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    pub panels: Vec<Panel>,
    pub columns: usize,
    pub panel_size: (u32, u32),
}

/// Distinct colours for lines (Tableau 10).
pub const PALETTE: [[u8; 3]; 6] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
];

fn register_font() {
    REGISTER.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../fonts/DejaVuSans.ttf");
        plotters::style::register_font(FONT, FontStyle::Normal, bytes)
            .unwrap_or_else(|_| panic!("the embedded DejaVu Sans is a valid font"));
    });
}

/// A range that shows `values` with a margin, never empty.
pub fn padded_range(values: impl IntoIterator<Item = f64>, from_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if from_zero {
        lo = lo.min(0.0);
    }
    if hi - lo < 1e-12 {
        hi = lo + 1.0;
    }
    let margin = 0.05 * (hi - lo);
    (
        if from_zero && lo >= 0.0 {
            lo
        } else {
            lo - margin
        },
        hi + margin,
    )
}

/// Writes `text` onto an RGB image with its top-left corner at `(x, y)`, in DejaVu Sans of
/// `size` pixels: labels for figures drawn pixel by pixel (panel letters, colour-bar ends).
pub fn draw_text(
    image: &mut image::RgbImage,
    text: &str,
    (x, y): (i32, i32),
    size: u32,
    colour: [u8; 3],
) -> Result<(), String> {
    register_font();
    let (width, height) = image.dimensions();
    let buffer: &mut [u8] = image.as_mut();
    let root = BitMapBackend::with_buffer(buffer, (width, height)).into_drawing_area();
    let style = (FONT, size as f64)
        .into_font()
        .color(&RGBColor(colour[0], colour[1], colour[2]));
    root.draw(&Text::new(text.to_owned(), (x, y), style))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

impl Figure {
    /// Draws the figure and writes it as a PNG.
    pub fn save_png(&self, path: &Path) -> Result<(), PlotError> {
        let image = self.render().map_err(|message| PlotError::Draw {
            path: path.display().to_string(),
            message,
        })?;
        image.save(path).map_err(|source| PlotError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    /// Draws the figure into an RGB image.
    pub fn render(&self) -> Result<image::RgbImage, String> {
        register_font();
        let columns = self.columns.max(1);
        let rows = self.panels.len().div_ceil(columns).max(1);
        let legend: Vec<(String, [u8; 3])> = self
            .panels
            .first()
            .map(|p| {
                p.series
                    .iter()
                    .map(|s| (s.label.clone(), s.colour))
                    .collect()
            })
            .unwrap_or_default();
        let legend_height = if legend.is_empty() { 0 } else { 34 };
        let (pw, ph) = self.panel_size;
        let (width, height) = (pw * columns as u32, ph * rows as u32 + legend_height);
        let mut buffer = vec![255u8; (width * height * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| e.to_string())?;
            let (grid, bottom) = root.split_vertically(ph * rows as u32);
            let areas = grid.split_evenly((rows, columns));
            for (panel, area) in self.panels.iter().zip(areas) {
                draw_panel(panel, &area).map_err(|e| e.to_string())?;
            }
            if !legend.is_empty() {
                let font = (FONT, 15).into_font().color(&BLACK);
                let mut x = 12i32;
                for (label, colour) in &legend {
                    let c = RGBColor(colour[0], colour[1], colour[2]);
                    bottom
                        .draw(&Rectangle::new([(x, 14), (x + 26, 18)], c.filled()))
                        .map_err(|e| e.to_string())?;
                    bottom
                        .draw(&Text::new(label.clone(), (x + 32, 8), font.clone()))
                        .map_err(|e| e.to_string())?;
                    x += 44 + 8 * label.chars().count() as i32;
                }
            }
            root.present().map_err(|e| e.to_string())?;
        }
        image::RgbImage::from_raw(width, height, buffer)
            .ok_or_else(|| "the bitmap has the wrong size".to_owned())
    }
}

fn draw_panel<DB: DrawingBackend>(
    panel: &Panel,
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FONT, 16))
        .margin(8)
        .x_label_area_size(38)
        .y_label_area_size(52)
        .build_cartesian_2d(
            panel.x_range.0..panel.x_range.1,
            panel.y_range.0..panel.y_range.1,
        )?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(panel.x_title.as_str())
        .y_desc(panel.y_title.as_str())
        .axis_desc_style((FONT, 14))
        .label_style((FONT, 12))
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(210, 210, 210));
    let number = |v: &f64| {
        if (v - v.round()).abs() < 1e-9 {
            format!("{}", v.round() as i64)
        } else if v.abs() >= 10.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_owned()
        }
    };
    let whole = |v: &f64| {
        if (v - v.round()).abs() < 1e-9 {
            format!("{}", v.round() as i64)
        } else {
            String::new()
        }
    };
    if panel.x_integer {
        // As many ticks as whole numbers in the range (plotters then steps by 1), at most 12.
        let whole_numbers =
            (panel.x_range.1.floor() - panel.x_range.0.ceil()).max(0.0) as usize + 1;
        mesh.x_labels(whole_numbers.clamp(2, 12))
            .x_label_formatter(&whole);
    } else {
        mesh.x_label_formatter(&number);
    }
    mesh.y_label_formatter(&number).draw()?;
    for series in &panel.series {
        let colour = RGBColor(series.colour[0], series.colour[1], series.colour[2]);
        chart.draw_series(LineSeries::new(
            series.points.iter().copied(),
            colour.stroke_width(2),
        ))?;
        chart.draw_series(
            series
                .points
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 3, colour.filled())),
        )?;
        if let Some(bars) = &series.error_bars {
            for (&(x, y), &e) in series.points.iter().zip(bars) {
                chart.draw_series(std::iter::once(ErrorBar::new_vertical(
                    x,
                    y - e,
                    y,
                    y + e,
                    colour.stroke_width(1),
                    8,
                )))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panel(title: &str) -> Panel {
        Panel {
            title: title.to_owned(),
            x_title: "training images per class".to_owned(),
            y_title: "accuracy (%)".to_owned(),
            x_range: (0.0, 21.0),
            y_range: (0.0, 100.0),
            series: vec![
                Series {
                    label: "pretrained".to_owned(),
                    colour: PALETTE[0],
                    points: vec![(1.0, 60.0), (5.0, 71.0), (20.0, 77.0)],
                    error_bars: Some(vec![7.0, 2.5, 1.5]),
                },
                Series {
                    label: "from scratch".to_owned(),
                    colour: PALETTE[1],
                    points: vec![(1.0, 43.0), (5.0, 69.0), (20.0, 81.0)],
                    error_bars: None,
                },
            ],
            x_integer: false,
        }
    }

    #[test]
    fn a_figure_draws_its_lines_text_and_legend_and_is_deterministic() {
        let figure = Figure {
            panels: vec![panel("a"), panel("b")],
            columns: 2,
            panel_size: (360, 260),
        };
        let image = figure.render().unwrap();
        assert_eq!(image.dimensions(), (720, 260 + 34));
        let count = |colour: [u8; 3]| image.pixels().filter(|p| p.0 == colour).count();
        // Both series' lines are there, and text (dark grey anti-aliased glyphs) too.
        assert!(count(PALETTE[0]) > 200 && count(PALETTE[1]) > 200);
        assert!(
            image
                .pixels()
                .filter(|p| p.0[0] < 100 && p.0 == [p.0[0]; 3])
                .count()
                > 500
        );
        assert_eq!(
            image,
            figure.render().unwrap(),
            "the same figure, the same pixels"
        );
        let dir = tempfile::tempdir().unwrap();
        figure.save_png(&dir.path().join("f.png")).unwrap();
        if let Ok(path) = std::env::var("PLOTS_SAMPLE") {
            figure.save_png(Path::new(&path)).unwrap();
        }
        assert!(dir.path().join("f.png").metadata().unwrap().len() > 1000);
    }

    #[test]
    fn text_lands_where_it_is_asked_to() {
        let mut image = image::RgbImage::from_pixel(120, 40, image::Rgb([255, 255, 255]));
        draw_text(&mut image, "(a) input", (4, 10), 14, [0, 0, 0]).unwrap();
        let dark: Vec<(u32, u32)> = image
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0[0] < 128)
            .map(|(x, y, _)| (x, y))
            .collect();
        assert!(dark.len() > 50, "{}", dark.len());
        assert!(
            dark.iter().all(|&(x, y)| x >= 4 && (8..30).contains(&y)),
            "{dark:?}"
        );
    }

    #[test]
    fn ranges_pad_the_data_and_never_collapse() {
        assert_eq!(padded_range([], true), (0.0, 1.0));
        let (lo, hi) = padded_range([0.2, 0.8], true);
        assert_eq!(lo, 0.0);
        assert!((hi - 0.84).abs() < 1e-12);
        let (lo, hi) = padded_range([5.0, 5.0], false);
        assert!(lo < 5.0 && hi > 5.0);
    }
}
