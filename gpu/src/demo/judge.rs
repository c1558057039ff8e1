//! The automatic judge of the demo world: recovers each object's colour, shape
//! and motion from RGB8 frames with plain image processing, so tests and
//! `vidflow eval prompts` can check that a video shows what its prompt asked for.
//!
//! Method, per video: the background is the median of the frames' border pixels;
//! a pixel is foreground when it is far from the background colour, and belongs to
//! the palette colour nearest to it (the palette comes from the model's
//! `world.json`). Each colour with enough pixels is an object; its per-frame masks
//! give the shape (fill of the bounding box, and how much more of the mask lies in
//! the lower half: an upright triangle is bottom-heavy) and the motion (centroid
//! travel, or the change in area for growing and shrinking).

use std::collections::BTreeMap;

use super::{Motion, Shape, World};

/// RGB distance from the background beyond which a pixel is foreground.
const FG_DIST: f32 = 70.0;
/// An object needs at least this share of the largest object's pixels (drops the
/// mixed colours of blurred edges).
const MIN_SHARE: f64 = 0.2;
/// Area growing by this factor (or shrinking by its inverse) reads as
/// growing/shrinking rather than moving.
const AREA_CHANGE: f64 = 2.0;

/// What the judge saw of one object over the whole clip.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenObject {
    pub colour: String,
    pub shape: Shape,
    pub motion: Motion,
    /// Foreground pixels over all frames.
    pub pixels: usize,
    /// Centroid (x, y) in pixels over the first and last frames it appears in.
    pub start: (f64, f64),
    pub end: (f64, f64),
    /// Area in the last frames over area in the first.
    pub area_ratio: f64,
}

/// The judge's reading of a clip: objects largest first, and the background.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub background: String,
    pub objects: Vec<SeenObject>,
}

/// Frames as the pipeline returns them: `frames` x `height` x `width` x RGB8.
#[derive(Debug, Clone, Copy)]
pub struct Frames<'a> {
    pub width: usize,
    pub height: usize,
    pub frames: usize,
    pub rgb: &'a [u8],
}

fn dist(a: [f32; 3], b: [u8; 3]) -> f32 {
    let d: f32 = (0..3).map(|i| (a[i] - b[i] as f32).powi(2)).sum();
    d.sqrt()
}

fn nearest<'w>(c: [f32; 3], palette: &'w BTreeMap<String, [u8; 3]>) -> &'w str {
    palette
        .iter()
        .min_by(|a, b| dist(c, *a.1).total_cmp(&dist(c, *b.1)))
        .map(|(k, _)| k.as_str())
        .unwrap_or("")
}

/// Median of each channel of the pixels on the frames' borders.
fn background(f: Frames) -> [f32; 3] {
    let mut ch: [Vec<u8>; 3] = Default::default();
    let (w, h) = (f.width, f.height);
    for t in 0..f.frames {
        for y in 0..h {
            for x in 0..w {
                if x == 0 || y == 0 || x + 1 == w || y + 1 == h {
                    let p = ((t * h + y) * w + x) * 3;
                    for c in 0..3 {
                        ch[c].push(f.rgb[p + c]);
                    }
                }
            }
        }
    }
    let mut out = [0f32; 3];
    for c in 0..3 {
        ch[c].sort_unstable();
        out[c] = ch[c].get(ch[c].len() / 2).copied().unwrap_or(0) as f32;
    }
    out
}

/// One object's mask in one frame, summarised.
#[derive(Debug, Clone, Copy, Default)]
struct FrameStats {
    area: usize,
    cx: f64,
    cy: f64,
    fill: f64,
    bottom_heavy: f64,
}

fn frame_stats(mask: &[bool], w: usize, h: usize) -> FrameStats {
    let (mut n, mut sx, mut sy) = (0usize, 0f64, 0f64);
    let (mut x0, mut x1, mut y0, mut y1) = (usize::MAX, 0, usize::MAX, 0);
    for y in 0..h {
        for x in 0..w {
            if mask[y * w + x] {
                n += 1;
                sx += x as f64 + 0.5;
                sy += y as f64 + 0.5;
                x0 = x0.min(x);
                x1 = x1.max(x);
                y0 = y0.min(y);
                y1 = y1.max(y);
            }
        }
    }
    if n == 0 {
        return FrameStats::default();
    }
    let box_area = ((x1 - x0 + 1) * (y1 - y0 + 1)) as f64;
    // Share of the mask below the bounding box's middle, minus the share above.
    let mid = (y0 + y1 + 1) as f64 / 2.0;
    let mut lower = 0f64;
    for y in y0..=y1 {
        let row = (x0..=x1).filter(|&x| mask[y * w + x]).count() as f64;
        let yc = y as f64 + 0.5;
        if yc > mid {
            lower += row;
        } else if yc < mid {
            lower -= row;
        }
    }
    FrameStats {
        area: n,
        cx: sx / n as f64,
        cy: sy / n as f64,
        fill: n as f64 / box_area,
        bottom_heavy: lower / n as f64,
    }
}

/// Shape from a frame's mask statistics: an upright triangle has ~0.5 of its
/// area more in the lower half than the upper (circle and square ~0); a square
/// fills its box (~1.0), a circle ~0.79.
fn classify_shape(s: &FrameStats) -> Shape {
    if s.bottom_heavy > 0.2 {
        Shape::Triangle
    } else if s.fill > 0.88 {
        Shape::Square
    } else {
        Shape::Circle
    }
}

fn mean_of(v: &[FrameStats], f: impl Fn(&FrameStats) -> f64) -> f64 {
    v.iter().map(f).sum::<f64>() / v.len().max(1) as f64
}

/// Judges a clip against the world's palette.
pub fn judge(world: &World, f: Frames) -> Judgement {
    let bg = background(f);
    let bg_name = nearest(bg, &world.backgrounds).to_string();
    let (w, h) = (f.width, f.height);
    let names: Vec<&String> = world.colours.keys().collect();
    // Per pixel: index into `names`, or none for background.
    let mut label = vec![u8::MAX; f.frames * w * h];
    let mut counts = vec![0usize; names.len()];
    for (i, px) in f.rgb.chunks_exact(3).enumerate() {
        let c = [px[0] as f32, px[1] as f32, px[2] as f32];
        let d_bg = (0..3).map(|k| (c[k] - bg[k]).powi(2)).sum::<f32>().sqrt();
        if d_bg < FG_DIST {
            continue;
        }
        let name = nearest(c, &world.colours);
        if let Some(k) = names.iter().position(|n| n.as_str() == name) {
            label[i] = k as u8;
            counts[k] += 1;
        }
    }
    let largest = counts.iter().copied().max().unwrap_or(0);
    let mut objects = Vec::new();
    for (k, &count) in counts.iter().enumerate() {
        if count == 0 || (count as f64) < MIN_SHARE * largest as f64 {
            continue;
        }
        let stats: Vec<FrameStats> = (0..f.frames)
            .map(|t| {
                let m: Vec<bool> = label[t * w * h..(t + 1) * w * h]
                    .iter()
                    .map(|&l| l == k as u8)
                    .collect();
                frame_stats(&m, w, h)
            })
            .filter(|s| s.area > 0)
            .collect();
        if stats.is_empty() {
            continue;
        }
        let edge = (stats.len() / 4).max(1);
        let (first, last) = (&stats[..edge], &stats[stats.len() - edge..]);
        let start = (mean_of(first, |s| s.cx), mean_of(first, |s| s.cy));
        let end = (mean_of(last, |s| s.cx), mean_of(last, |s| s.cy));
        let area_ratio = mean_of(last, |s| s.area as f64) / mean_of(first, |s| s.area as f64);
        let motion = if area_ratio >= AREA_CHANGE {
            Motion::Growing
        } else if area_ratio <= 1.0 / AREA_CHANGE {
            Motion::Shrinking
        } else {
            let (dx, dy) = (end.0 - start.0, end.1 - start.1);
            match (dx.abs() >= dy.abs(), dx >= 0.0, dy >= 0.0) {
                (true, true, _) => Motion::Right,
                (true, false, _) => Motion::Left,
                (false, _, true) => Motion::Down,
                (false, _, false) => Motion::Up,
            }
        };
        // The shape is read where the object is largest (sharpest outline).
        let big = stats
            .iter()
            .max_by_key(|s| s.area)
            .copied()
            .unwrap_or_default();
        objects.push(SeenObject {
            colour: names[k].clone(),
            shape: classify_shape(&big),
            motion,
            pixels: count,
            start,
            end,
            area_ratio,
        });
    }
    objects.sort_by(|a, b| b.pixels.cmp(&a.pixels));
    Judgement {
        background: bg_name,
        objects,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped model's palette: the colours the judge must tell apart.
    fn world() -> World {
        World::load(crate::demo::default_dir()).expect("shipped world.json")
    }

    /// The demo world's geometry (scripts/demo_model/world.py), drawn without
    /// anti-aliasing, then blurred with a 3x3 box `blur` times, as a model's
    /// soft edges would be.
    fn clip(w: &World, objs: &[(&str, Shape, Motion)], bg: &str, blur: usize) -> Vec<u8> {
        let (s, n) = (96usize, 17usize);
        let sf = s as f64;
        let mut out = Vec::with_capacity(n * s * s * 3);
        for f in 0..n {
            let t = f as f64 / (n - 1) as f64;
            let mut img = vec![w.backgrounds[bg]; s * s];
            for (i, (col, shape, motion)) in objs.iter().enumerate() {
                let base = 0.3 + 0.4 * i as f64;
                let (mut cx, mut cy, mut r) = (base * sf, 0.5 * sf, 0.13 * sf);
                let d = 0.4 * sf * t;
                match motion {
                    Motion::Left => cx = 0.75 * sf - d,
                    Motion::Right => cx = 0.25 * sf + d,
                    Motion::Up => cy = 0.75 * sf - d,
                    Motion::Down => cy = 0.25 * sf + d,
                    Motion::Growing => r = (0.06 + 0.16 * t) * sf,
                    Motion::Shrinking => r = (0.22 - 0.16 * t) * sf,
                }
                for y in 0..s {
                    for x in 0..s {
                        let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
                        let inside = match shape {
                            Shape::Circle => dx * dx + dy * dy <= r * r,
                            Shape::Square => dx.abs() <= 0.886 * r && dy.abs() <= 0.886 * r,
                            Shape::Triangle => {
                                let h = 1.35 * r;
                                let tt = (dy + 0.6 * h) / h;
                                (0.0..=1.0).contains(&tt) && dx.abs() <= tt * h * 0.75
                            }
                        };
                        if inside {
                            img[y * s + x] = w.colours[*col];
                        }
                    }
                }
            }
            for _ in 0..blur {
                let src = img.clone();
                for y in 0..s {
                    for x in 0..s {
                        let mut acc = [0u32; 3];
                        let mut k = 0;
                        for yy in y.saturating_sub(1)..=(y + 1).min(s - 1) {
                            for xx in x.saturating_sub(1)..=(x + 1).min(s - 1) {
                                for c in 0..3 {
                                    acc[c] += src[yy * s + xx][c] as u32;
                                }
                                k += 1;
                            }
                        }
                        img[y * s + x] = acc.map(|a| (a / k) as u8);
                    }
                }
            }
            out.extend(img.iter().flatten());
        }
        out
    }

    fn frames(rgb: &[u8]) -> Frames<'_> {
        Frames {
            width: 96,
            height: 96,
            frames: 17,
            rgb,
        }
    }

    #[test]
    fn reads_every_colour_shape_motion_and_background() {
        let w = world();
        let shapes = [Shape::Circle, Shape::Square, Shape::Triangle];
        let motions = [
            Motion::Left,
            Motion::Right,
            Motion::Up,
            Motion::Down,
            Motion::Growing,
            Motion::Shrinking,
        ];
        let mut checked = 0;
        for (i, colour) in w.colours.keys().enumerate() {
            for (j, &shape) in shapes.iter().enumerate() {
                for (k, &motion) in motions.iter().enumerate() {
                    let bg = w
                        .backgrounds
                        .keys()
                        .filter(|b| *b != colour)
                        .nth((i + j + k) % 3)
                        .unwrap();
                    for blur in [0, 2] {
                        let rgb = clip(&w, &[(colour, shape, motion)], bg, blur);
                        let got = judge(&w, frames(&rgb));
                        let o = &got.objects[0];
                        let what = format!("{colour} {shape:?} {motion:?} on {bg}, blur {blur}");
                        assert_eq!(&got.background, bg, "{what}");
                        assert_eq!(&o.colour, colour, "{what}");
                        assert_eq!(o.shape, shape, "{what}: {o:?}");
                        assert_eq!(o.motion, motion, "{what}: {o:?}");
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 7 * 3 * 6 * 2);
    }

    #[test]
    fn two_objects_are_told_apart_by_colour() {
        let w = world();
        let rgb = clip(
            &w,
            &[
                ("red", Shape::Square, Motion::Down),
                ("blue", Shape::Triangle, Motion::Up),
            ],
            "black",
            1,
        );
        let got = judge(&w, frames(&rgb));
        let mut seen: Vec<_> = got
            .objects
            .iter()
            .map(|o| (o.colour.as_str(), o.shape, o.motion))
            .collect();
        seen.sort_by_key(|s| s.0);
        assert_eq!(
            seen,
            vec![
                ("blue", Shape::Triangle, Motion::Up),
                ("red", Shape::Square, Motion::Down)
            ]
        );
    }

    #[test]
    fn a_blank_clip_has_no_objects() {
        let w = world();
        let rgb = clip(&w, &[], "gray", 0);
        let got = judge(&w, frames(&rgb));
        assert_eq!(got.background, "gray");
        assert!(got.objects.is_empty());
    }
}
