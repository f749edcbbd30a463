//! The terrain blob of a region info: the 256 × 256 heightmap as little-endian f32, compressed
//! with zstd (a standard frame format that every language can read), and back.

use world::{RegionId, Terrain};

use crate::error::ProtoError;
use crate::limits::{MAX_TERRAIN_BLOB_BYTES, TERRAIN_SAMPLES};
use crate::msg::RegionInfo;

/// Bytes of the raw heightmap.
const RAW_BYTES: usize = TERRAIN_SAMPLES * TERRAIN_SAMPLES * 4;
/// zstd level: a region info is sent once per region per client, so cheap compression wins.
const ZSTD_LEVEL: i32 = 3;

impl RegionInfo {
    /// Packs a heightmap (`heights[y * 256 + x]`, metres) for the wire.
    pub fn new(region: RegionId, heights: &[f32], water_level: f32) -> Result<RegionInfo, ProtoError> {
        if heights.len() != TERRAIN_SAMPLES * TERRAIN_SAMPLES {
            return Err(ProtoError::Terrain(format!(
                "{} heights given, a region has {}",
                heights.len(),
                TERRAIN_SAMPLES * TERRAIN_SAMPLES
            )));
        }
        let raw: Vec<u8> = heights.iter().flat_map(|h| h.to_le_bytes()).collect();
        let terrain = zstd::bulk::compress(&raw, ZSTD_LEVEL)
            .map_err(|e| ProtoError::Terrain(format!("zstd compression failed: {e}")))?;
        if terrain.len() > MAX_TERRAIN_BLOB_BYTES {
            return Err(ProtoError::Terrain(format!(
                "compressed terrain of {} bytes is too large",
                terrain.len()
            )));
        }
        Ok(RegionInfo { region, water_level, terrain })
    }

    /// Packs a region's terrain.
    pub fn from_terrain(region: RegionId, terrain: &Terrain) -> Result<RegionInfo, ProtoError> {
        RegionInfo::new(region, terrain.heights(), terrain.water_level)
    }

    /// Unpacks the heightmap: 65,536 finite heights in metres, `[y * 256 + x]`. Decompression
    /// is bounded by the raw size, so a hostile blob cannot make it allocate more.
    pub fn heights(&self) -> Result<Vec<f32>, ProtoError> {
        let raw = zstd::bulk::decompress(&self.terrain, RAW_BYTES).map_err(|e| {
            ProtoError::Terrain(format!("not a zstd frame of at most {RAW_BYTES} bytes: {e}"))
        })?;
        if raw.len() != RAW_BYTES {
            return Err(ProtoError::Terrain(format!(
                "heightmap of {} bytes, expected {RAW_BYTES}",
                raw.len()
            )));
        }
        let heights: Vec<f32> =
            raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        if heights.iter().any(|h| !h.is_finite()) {
            return Err(ProtoError::Terrain("heightmap holds a non-finite height".into()));
        }
        Ok(heights)
    }
}
