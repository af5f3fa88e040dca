//! MXFP4 (OCP Microscaling, 4-bit E2M1 elements with a shared E8M0 scale per 32 values), as
//! gpt-oss checkpoints store their experts: `*_blocks` U8 `[E, R, G, 16]` (two codes per byte,
//! the low nibble first) and `*_scales` U8 `[E, R, G]` (2^(s − 127)). R runs over the
//! projection's output features, G·32 over its input features (transformers'
//! `convert_moe_packed_tensors`).

/// The 16 E2M1 values: bit 3 the sign, bits 2–0 the magnitude's index.
const FP4: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// Decodes `blocks` `[e, r, g, 16]` with `scales` `[e, r, g]` into the dense parameter
/// `[e, g·32, r]` (input features before output features, as gpt-oss multiplies `x @ W`).
/// Every value FP4 · 2^k is exact in f32.
pub(crate) fn dequantize(blocks: &[u8], scales: &[u8], e: usize, r: usize, g: usize) -> Vec<f32> {
    debug_assert_eq!(blocks.len(), e * r * g * 16);
    debug_assert_eq!(scales.len(), e * r * g);
    let inputs = g * 32;
    let mut dense = vec![0.0f32; e * inputs * r];
    for ei in 0..e {
        for ri in 0..r {
            for gi in 0..g {
                let at = (ei * r + ri) * g + gi;
                let scale = pow2(i32::from(scales[at]) - 127);
                for (b, &byte) in blocks[at * 16..at * 16 + 16].iter().enumerate() {
                    let i = gi * 32 + 2 * b; // input feature of the low nibble
                    dense[(ei * inputs + i) * r + ri] = FP4[usize::from(byte & 0x0F)] * scale;
                    dense[(ei * inputs + i + 1) * r + ri] = FP4[usize::from(byte >> 4)] * scale;
                }
            }
        }
    }
    dense
}

/// 2^k for k in −127..=128, exactly (subnormal at −127, infinite at 128, as in bf16).
fn pow2(k: i32) -> f32 {
    if k >= -126 {
        if k > 127 {
            f32::INFINITY
        } else {
            f32::from_bits(((k + 127) as u32) << 23)
        }
    } else {
        f32::from_bits(1 << (149 + k)) // 2^-127 = 2^22 · 2^-149
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_of_two_are_exact() {
        assert_eq!(pow2(0), 1.0);
        assert_eq!(pow2(-2), 0.25);
        assert_eq!(pow2(3), 8.0);
        assert_eq!(pow2(-127), 2f32.powi(-127));
        assert_eq!(pow2(127), 2f32.powi(127));
        assert_eq!(pow2(128), f32::INFINITY);
    }

    /// The worked example of the gpt-oss fixture (byte 0xA3 at block position 1, scale byte
    /// 125): +1.5 · ¼ at input 2, −1 · ¼ at input 3, by hand.
    #[test]
    fn low_nibble_first_scaled_by_the_group_exponent() {
        let mut blocks = vec![0u8; 16];
        blocks[1] = 0xA3;
        let dense = dequantize(&blocks, &[125], 1, 1, 1); // [1, 32, 1]
        assert_eq!(dense.len(), 32);
        assert_eq!(dense[2], 0.375);
        assert_eq!(dense[3], -0.25);
        assert!(
            dense
                .iter()
                .enumerate()
                .all(|(i, &v)| i == 2 || i == 3 || v == 0.0)
        );
        // Two output rows, two groups: row 1, group 1, byte 15 lands at input 62/63, column 1.
        let mut blocks = vec![0u8; 2 * 2 * 16];
        blocks[(2 + 1) * 16 + 15] = 0x7F; // hi 7 → +6, lo 15 → −6
        let dense = dequantize(&blocks, &[127, 127, 127, 128], 1, 2, 2); // [1, 64, 2]
        assert_eq!(dense[62 * 2 + 1], -12.0);
        assert_eq!(dense[63 * 2 + 1], 12.0);
        assert_eq!(dense.iter().filter(|v| **v != 0.0).count(), 2);
    }
}
