//! The terrain: a 256×256 heightmap generated from a seed, editable, tracked in patches.
//!
//! The generator samples world coordinates, so neighbouring regions with the same seed meet
//! without a seam. Each 16×16 patch carries the generation of its last edit; deltas carry
//! only the patches edited since the base generation.

use noise::{Fbm, MultiFractal, NoiseFn, Perlin};
use serde::{Deserialize, Serialize};

use crate::limits::{
    MAX_TERRAIN_BRUSH, REGION_SIZE, TERRAIN_MAX_HEIGHT, TERRAIN_MIN_HEIGHT, TERRAIN_PATCH,
    TERRAIN_PATCHES_PER_SIDE, TERRAIN_SAMPLES,
};
use crate::RegionId;

/// Default sea level, in metres.
pub const DEFAULT_WATER_LEVEL: f32 = 20.0;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Terrain {
    pub seed: u32,
    pub water_level: f32,
    #[serde(with = "f32_bytes")]
    heights: Vec<f32>,
    patch_gen: Vec<u64>,
}

/// One edited patch, as carried by a delta.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TerrainPatch {
    pub index: u16,
    pub gen: u64,
    #[serde(with = "f32_bytes")]
    pub heights: Vec<f32>,
}

impl Terrain {
    /// Hills, valleys and some flat shore around the water level, continuous across regions.
    pub fn generate(seed: u32, region: RegionId) -> Terrain {
        let hills = Fbm::<Perlin>::new(seed).set_octaves(5).set_frequency(1.0 / 380.0);
        let detail = Fbm::<Perlin>::new(seed.wrapping_add(1)).set_octaves(3).set_frequency(1.0 / 60.0);
        let mut heights = Vec::with_capacity(TERRAIN_SAMPLES * TERRAIN_SAMPLES);
        let ox = f64::from(region.x) * f64::from(REGION_SIZE);
        let oy = f64::from(region.y) * f64::from(REGION_SIZE);
        for j in 0..TERRAIN_SAMPLES {
            for i in 0..TERRAIN_SAMPLES {
                let p = [ox + i as f64, oy + j as f64];
                let h = 24.0 + 22.0 * hills.get(p) + 2.5 * detail.get(p);
                heights.push((h as f32).clamp(TERRAIN_MIN_HEIGHT, TERRAIN_MAX_HEIGHT));
            }
        }
        Terrain {
            seed,
            water_level: DEFAULT_WATER_LEVEL,
            heights,
            patch_gen: vec![0; TERRAIN_PATCHES_PER_SIDE * TERRAIN_PATCHES_PER_SIDE],
        }
    }

    /// Flat ground at `height`: handy for tests and benchmarks.
    pub fn flat(height: f32) -> Terrain {
        Terrain {
            seed: 0,
            water_level: DEFAULT_WATER_LEVEL,
            heights: vec![height; TERRAIN_SAMPLES * TERRAIN_SAMPLES],
            patch_gen: vec![0; TERRAIN_PATCHES_PER_SIDE * TERRAIN_PATCHES_PER_SIDE],
        }
    }

    /// The stamp of the most recent edit (0 if never edited).
    pub(crate) fn newest_patch_gen(&self) -> u64 {
        self.patch_gen.iter().copied().max().unwrap_or(0)
    }

    pub fn heights(&self) -> &[f32] {
        &self.heights
    }

    /// Sample height at integer grid coordinates (clamped to the map).
    pub fn sample(&self, i: usize, j: usize) -> f32 {
        let i = i.min(TERRAIN_SAMPLES - 1);
        let j = j.min(TERRAIN_SAMPLES - 1);
        self.heights[j * TERRAIN_SAMPLES + i]
    }

    /// Ground height at a position in region metres, bilinearly interpolated.
    pub fn height_at(&self, x: f32, y: f32) -> f32 {
        let max = (TERRAIN_SAMPLES - 1) as f32;
        let x = x.clamp(0.0, max);
        let y = y.clamp(0.0, max);
        let (i, j) = (x as usize, y as usize);
        let (fx, fy) = (x - i as f32, y - j as f32);
        let h00 = self.sample(i, j);
        let h10 = self.sample(i + 1, j);
        let h01 = self.sample(i, j + 1);
        let h11 = self.sample(i + 1, j + 1);
        let a = h00 + (h10 - h00) * fx;
        let b = h01 + (h11 - h01) * fx;
        a + (b - a) * fy
    }

    /// Raise (positive `delta`) or lower the ground with a smooth round brush.
    /// Returns whether any sample changed. Callers validate the arguments.
    pub(crate) fn edit(&mut self, cx: f32, cy: f32, radius: f32, delta: f32, gen: u64) -> bool {
        let radius = radius.clamp(0.5, MAX_TERRAIN_BRUSH);
        let lo_i = (cx - radius).floor().max(0.0) as usize;
        let hi_i = ((cx + radius).ceil().max(0.0) as usize).min(TERRAIN_SAMPLES - 1);
        let lo_j = (cy - radius).floor().max(0.0) as usize;
        let hi_j = ((cy + radius).ceil().max(0.0) as usize).min(TERRAIN_SAMPLES - 1);
        let mut changed = false;
        for j in lo_j..=hi_j {
            for i in lo_i..=hi_i {
                let d = ((i as f32 - cx).powi(2) + (j as f32 - cy).powi(2)).sqrt();
                if d > radius {
                    continue;
                }
                let w = 0.5 + 0.5 * (std::f32::consts::PI * d / radius).cos();
                let h = &mut self.heights[j * TERRAIN_SAMPLES + i];
                let new = (*h + delta * w).clamp(TERRAIN_MIN_HEIGHT, TERRAIN_MAX_HEIGHT);
                if new != *h {
                    *h = new;
                    changed = true;
                    let p = (j / TERRAIN_PATCH) * TERRAIN_PATCHES_PER_SIDE + i / TERRAIN_PATCH;
                    self.patch_gen[p] = gen;
                }
            }
        }
        changed
    }

    /// The patches edited after generation `base`.
    pub(crate) fn patches_since(&self, base: u64) -> Vec<TerrainPatch> {
        let mut out = Vec::new();
        for (index, &gen) in self.patch_gen.iter().enumerate() {
            if gen <= base {
                continue;
            }
            let (pi, pj) = (index % TERRAIN_PATCHES_PER_SIDE, index / TERRAIN_PATCHES_PER_SIDE);
            let mut heights = Vec::with_capacity(TERRAIN_PATCH * TERRAIN_PATCH);
            for j in 0..TERRAIN_PATCH {
                let row = (pj * TERRAIN_PATCH + j) * TERRAIN_SAMPLES + pi * TERRAIN_PATCH;
                heights.extend_from_slice(&self.heights[row..row + TERRAIN_PATCH]);
            }
            out.push(TerrainPatch { index: index as u16, gen, heights });
        }
        out
    }

    pub(crate) fn apply_patch(&mut self, patch: &TerrainPatch) {
        let index = usize::from(patch.index);
        let (pi, pj) = (index % TERRAIN_PATCHES_PER_SIDE, index / TERRAIN_PATCHES_PER_SIDE);
        for j in 0..TERRAIN_PATCH {
            let row = (pj * TERRAIN_PATCH + j) * TERRAIN_SAMPLES + pi * TERRAIN_PATCH;
            self.heights[row..row + TERRAIN_PATCH]
                .copy_from_slice(&patch.heights[j * TERRAIN_PATCH..(j + 1) * TERRAIN_PATCH]);
        }
        self.patch_gen[index] = patch.gen;
    }

    /// Checks what a decoder cannot: sizes and value ranges.
    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        if self.heights.len() != TERRAIN_SAMPLES * TERRAIN_SAMPLES {
            return Err("terrain has the wrong number of samples");
        }
        if self.patch_gen.len() != TERRAIN_PATCHES_PER_SIDE * TERRAIN_PATCHES_PER_SIDE {
            return Err("terrain has the wrong number of patches");
        }
        if !valid_heights(&self.heights) {
            return Err("terrain height out of range");
        }
        if !self.water_level.is_finite() {
            return Err("water level is not a number");
        }
        Ok(())
    }
}

impl TerrainPatch {
    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        if usize::from(self.index) >= TERRAIN_PATCHES_PER_SIDE * TERRAIN_PATCHES_PER_SIDE {
            return Err("terrain patch index out of range");
        }
        if self.heights.len() != TERRAIN_PATCH * TERRAIN_PATCH {
            return Err("terrain patch has the wrong number of samples");
        }
        if !valid_heights(&self.heights) {
            return Err("terrain patch height out of range");
        }
        Ok(())
    }
}

fn valid_heights(h: &[f32]) -> bool {
    h.iter().all(|v| (TERRAIN_MIN_HEIGHT..=TERRAIN_MAX_HEIGHT).contains(v))
}

/// Heights travel as raw little-endian bytes: one copy instead of 65,536 serializer calls.
mod f32_bytes {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(v.len() * 4);
        for x in v {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        s.serialize_bytes(&bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<f32>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("little-endian f32 bytes")
            }
            fn visit_bytes<E: Error>(self, b: &[u8]) -> Result<Vec<f32>, E> {
                if b.len() % 4 != 0 {
                    return Err(E::custom("f32 byte length is not a multiple of 4"));
                }
                Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
            }
        }
        d.deserialize_bytes(V)
    }
}
