//! Latent packing (transformer token order) and decoder output to frames.

use candle_core::{DType, Tensor};

use crate::error::Result;

/// `[B,C,F,H,W]` -> `[B,F*H*W,C]` (frame-major, then height, then width).
pub fn pack_latents(z: &Tensor) -> Result<Tensor> {
    let (b, c, f, h, w) = z.dims5()?;
    Ok(z.permute((0, 2, 3, 4, 1))?.reshape((b, f * h * w, c))?)
}

/// Inverse of `pack_latents`.
pub fn unpack_latents(x: &Tensor, f: usize, h: usize, w: usize) -> Result<Tensor> {
    let (b, _s, c) = x.dims3()?;
    Ok(x.reshape((b, f, h, w, c))?
        .permute((0, 4, 1, 2, 3))?
        .contiguous()?)
}

/// Decoder output `[B,3,F,H,W]` in [-1,1] -> frames `[B,F,3,H,W]` in [0,1].
pub fn postprocess(video: &Tensor) -> Result<Tensor> {
    Ok(video
        .affine(0.5, 0.5)?
        .clamp(0f32, 1f32)?
        .permute((0, 2, 1, 3, 4))?
        .contiguous()?)
}

/// Frames `[1,F,3,H,W]` in [0,1] -> RGB8 bytes, frame by frame, HWC.
pub fn to_rgb8(frames: &Tensor) -> Result<Vec<u8>> {
    let x = frames
        .squeeze(0)?
        .permute((0, 2, 3, 1))?
        .affine(255.0, 0.0)?
        .round()?
        .clamp(0f32, 255f32)?
        .to_dtype(DType::U8)?;
    Ok(x.flatten_all()?.to_vec1::<u8>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn pack_unpack_roundtrip_and_order() {
        let z = Tensor::arange(0f32, 72.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 2, 3, 2, 3))
            .unwrap();
        let p = pack_latents(&z).unwrap();
        assert_eq!(p.dims(), &[2, 18, 2]);
        // token 1 is (f0,h0,w1): channel 0 value = w index 1.
        let v: Vec<Vec<f32>> = p.get(0).unwrap().to_vec2().unwrap();
        assert_eq!(v[1][0], 1.0);
        assert_eq!(v[3][0], 3.0); // (f0,h1,w0)
        assert_eq!(v[6][0], 6.0); // (f1,h0,w0)
        assert_eq!(v[6][1], 24.0); // channel 1 of the same token
        let u = unpack_latents(&p, 3, 2, 3).unwrap();
        let d = (u - &z)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(d, 0.0);
    }
}
